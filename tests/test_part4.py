"""Notebook 04: the roofline explorer's callback, the plots, and the exercises' checks."""
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import inferlab as il  # noqa: E402
from inferlab import exercises as ex
from inferlab.lessons import part4
from inferlab.measure import counting  # noqa: E402
from inferlab.measure import machine, roofline
from inferlab.viz import roofline as viz  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "04_bottlenecks.ipynb"
MACHINE = roofline.Roof("this machine", 100e9, 10e9, "measured")


# --- the roofline explorer -----------------------------------------------------------------------------

def test_explorer_moves_the_point_between_regimes():
    one = viz.roofline_prediction("h100", "llama-3-8b", 1, 1, "bfloat16")
    many = viz.roofline_prediction("h100", "llama-3-8b", 1024, 1, "bfloat16")
    assert one["regime"] == "memory-bound" and many["regime"] == "compute-bound"
    assert one["critical_batch"] == many["critical_batch"] == 297
    # memory-bound at batch 1: time = bytes / bandwidth, tokens/s = bandwidth / bytes
    c = counting.step_count(il.MODEL_CONFIGS["llama-3-8b"], 1, 1, 1, torch.bfloat16)
    assert one["step_s"] == pytest.approx(c.bytes / 3.35e12)
    assert one["tokens_per_s"] == pytest.approx(3.35e12 / c.bytes)
    assert many["tokens_per_s"] > 100 * one["tokens_per_s"]
    # a longer context reads more cache per step: fewer tokens/s, and no batch makes it compute-bound
    long = viz.roofline_prediction("h100", "llama-3-8b", 64, 32768, "bfloat16")
    assert long["tokens_per_s"] < viz.roofline_prediction("h100", "llama-3-8b", 64, 1, "bfloat16")["tokens_per_s"]
    assert long["critical_batch"] is None


def test_explorer_with_the_measured_machine_and_each_preset():
    p = viz.roofline_prediction(viz.MACHINE, "gpt2", 1, 16, "float32", machine=MACHINE)
    assert p["hardware"] == "this machine" and p["ridge"] == 10.0 and p["regime"] == "memory-bound"
    assert viz.hardware_options(MACHINE)[0] == viz.MACHINE and viz.hardware_options() == list(roofline.HARDWARE)
    for hw in roofline.HARDWARE:
        fig = viz.roofline_view(hw, "qwen2.5-0.5b", 8, 1024, "float16")
        assert isinstance(fig, Figure)
    labels = viz.roofline_view(viz.MACHINE, "inferlab-main", 256, 1, "float32",
                               machine=MACHINE).axes[0].get_legend_handles_labels()[1]
    assert any("decode, batch 256" in label and "compute-bound" in label for label in labels)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(hardware="tpu"), ValueError, "unknown hardware preset 'tpu'; known: a100"),
    (dict(hardware=viz.MACHINE), ValueError, "needs the measured roof"),
    (dict(config_name="gpt5"), ValueError, "unknown config name 'gpt5'"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(context_len=0), ValueError, "context_len must be a positive int"),
    (dict(dtype_name="int3"), ValueError, "dtype_name must be one of"),
])
def test_explorer_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        viz.roofline_prediction(**kwargs)


def test_plots_return_figures():
    sweep = machine.bandwidth_sweep([64 * 1024, 1024 * 1024], min_time_s=0.0, repeats=1)
    assert isinstance(viz.plot_bandwidth_sweep(sweep, {"L2": 2 ** 21}, threads=1), Figure)
    fig = viz.plot_roofline([MACHINE, roofline.hardware_roof("laptop-m2")], [("decode", 0.5, 4e9)])
    assert isinstance(fig, Figure)
    assert isinstance(viz.plot_batch_sweep([1, 2, 4], [0.1, 0.1, 0.15], [0.1, 0.1, 0.1], {"measured": 3}), Figure)
    rows = part4.latency_sweep([0.5, 1.0], 0.5, n_requests=50)
    assert isinstance(viz.plot_queue({"one at a time": rows}, ([0.5, 1.0], [0.6, 0.8])), Figure)


# --- exercises -----------------------------------------------------------------------------------------

def answer_41():
    c = counting.step_count(il.MODEL_CONFIGS["llama-2-7b"], 1, 1024, 8, torch.float16)
    return c.flops / c.bytes


RIGHT = {
    "4.1": answer_41,
    "4.2": lambda: roofline.critical_batch(il.MODEL_CONFIGS["llama-3-8b"], 1, roofline.hardware_roof("h100"),
                                            torch.bfloat16),
    "4.3": lambda: 2.039e12 / counting.step_count(il.MODEL_CONFIGS["llama-2-7b"], 1, 1, 1, torch.float16).bytes,
    "4.4": lambda: 0.5 + 0.75 * 0.5 / (2 * (1 - 0.75)),
}
WRONG = {
    "4.1": [8.0, 2 * answer_41(), answer_41() / 2, 1.0, 1 / answer_41(), 3.0, "six"],
    "4.2": [295.3, 594, 1, 10_000, 290],
    "4.3": [77.0, 23610.0, 1000.0, 2.039e12 / 14e9, 120.0],
    "4.4": [0.5, 0.75, 3.0, 2.0, None],
}
# other answers the lessons' own rules justify
ALSO_RIGHT = {
    "4.1": [answer_41() * 0.985],   # the whole embedding table counted as read (it is looked up, 8 rows)
    "4.2": [296],                   # the rule of thumb: intensity ~ 2B / 2 bytes = B, ridge 295.3
    "4.3": [2.039e12 / counting.param_bytes(il.MODEL_CONFIGS["llama-2-7b"], torch.float16)],  # whole table
}


@pytest.mark.parametrize("key", sorted(RIGHT))
def test_exercise_accepts_the_right_answer(key, capsys):
    ok, message = ex.verdict(key, RIGHT[key]())
    assert ok, message
    assert ex.verdict(key, RIGHT[key]())[0] is True
    ex.solution(key)
    assert "answer" in capsys.readouterr().out


@pytest.mark.parametrize("key", sorted(WRONG))
def test_exercise_rejects_wrong_answers_without_raising(key):
    for wrong in WRONG[key]:
        ok, message = ex.verdict(key, wrong)
        assert not ok and message.startswith(f"Exercise {key}")


@pytest.mark.parametrize("key", sorted(ALSO_RIGHT))
def test_exercise_accepts_each_convention_the_lessons_justify(key):
    for answer in ALSO_RIGHT[key]:
        ok, message = ex.verdict(key, answer)
        assert ok, message


def test_exercise_hints_name_the_mistake():
    c = counting.step_count(il.MODEL_CONFIGS["llama-2-7b"], 1, 1024, 8, torch.float16)
    assert "caches" in ex.verdict("4.1", c.flops / (c.weight_bytes + c.kv_write_bytes))[1]
    assert "bytes per FLOP" in ex.verdict("4.1", 1 / answer_41())[1]
    assert "ridge point itself" in ex.verdict("4.2", 295.34)[1]
    assert "2 bytes each" in ex.verdict("4.2", 594)[1]
    assert "compute limit" in ex.verdict("4.3", 23610.1)[1]
    assert "7 billion" in ex.verdict("4.3", 2.039e12 / 14e9)[1]
    assert "waiting alone" in ex.verdict("4.4", 0.75)[1]
    assert "M/M/1" in ex.verdict("4.4", 2.0)[1]


@pytest.mark.parametrize("key", sorted(WRONG))
def test_exercise_feedback_never_gives_the_answer(key):
    right = float(RIGHT[key]())
    shown = {f"{right:.0f}", f"{right:.1f}", f"{right:.2f}", f"{right:.3g}"} - {"0", "1", "2", "6"}
    for wrong in WRONG[key]:
        message = ex.verdict(key, wrong)[1]
        assert not any(s in message for s in shown), (wrong, message)


def test_solutions_run_in_a_notebook_namespace_without_touching_it():
    # names the notebook has: a solution must not rebind them (cfg, c, roof, ...), and must import what it uses
    namespace = {"cfg": il.MODEL_CONFIGS["inferlab-main"], "c": object(), "roof": MACHINE, "model": object(),
                 "answer_41": None, "answer_42": None, "answer_43": None, "answer_44": None, "answer_45": None,
                 "regime_change": {"roofline": roofline.critical_batch(il.MODEL_CONFIGS["gpt2"], 16, MACHINE),
                                   "sweep": None, "ridge": MACHINE.ridge}}
    for key in list(RIGHT) + ["4.5"]:
        assert ex.run_solution(key, namespace) == [], key


# --- 4.5: a prediction checked against the learner's own measurement --------------------------------------

def _measured(roof, sweep=None):
    return {"roofline": roofline.critical_batch(il.MODEL_CONFIGS["gpt2"], 16, roof), "sweep": sweep,
            "ridge": roof.ridge}


@pytest.mark.parametrize("bandwidth, peak", [(10e9, 30e9), (50e9, 1e12), (100e9, 100e9)])
def test_prediction_45_judged_against_the_measured_roofs(bandwidth, peak):
    roof = roofline.machine_roof(bandwidth, peak)
    m = _measured(roof)
    twice_ridge = max(1, math.ceil(2 * roof.ridge))
    assert ex.verdict("4.5", twice_ridge, m)[0], ex.verdict("4.5", twice_ridge, m)
    assert ex.verdict("4.5", m["roofline"], m)[0]
    assert not ex.verdict("4.5", 8 * twice_ridge, m)[0]
    assert not ex.verdict("4.5", 1024, m)[0]
    assert "waiting" in ex.verdict("4.5", None, m)[1]
    assert "checked against your measurement" in ex.verdict("4.5", 5, None)[1]
    assert not ex.verdict("4.5", "six", m)[0]


def test_prediction_45_accepts_the_sweeps_own_change_and_names_the_mistakes():
    roof = roofline.machine_roof(10e9, 60e9)      # ridge 6: the roofline says about batch 12
    m = _measured(roof, sweep=64)                  # a machine whose sweep left the plateau later
    assert ex.verdict("4.5", 40, m)[0]             # within 2x of what this machine did
    assert not ex.verdict("4.5", 2, m)[0]
    assert "Too high" in ex.verdict("4.5", 1000, m)[1]
    assert "Too low" in ex.verdict("4.5", 1, m)[1]
    m = _measured(roofline.machine_roof(10e9, 300e9))   # ridge 30: the change near batch 60
    assert "ridge itself" in ex.verdict("4.5", 30, m)[1]
    assert "2x" in ex.verdict("4.5", 200, m)[1]
    for wrong in (30, 200, 1, 5000):
        assert str(m["roofline"]) not in ex.verdict("4.5", wrong, m)[1]


def test_compare_guess_lines():
    from inferlab.exercises.part4 import compare_guess
    assert compare_guess(None, 3.0, "bandwidth").startswith("… no guess")
    assert "within 2x" in compare_guess(4.0, 3.0, "bandwidth")
    assert "too high" in compare_guess(30.0, 3.0, "bandwidth") and "too low" in compare_guess(0.3, 3.0, "x")
    assert "write a number" in compare_guess("fast", 3.0, "x")


def test_overhead_model_and_widgets():
    base = il.MODEL_CONFIGS["inferlab-main"]
    p = viz.overhead_prediction(base, MACHINE, fixed_ms=20.0)
    assert p["crossover"] in p["widths"] and p["total_s"][0] > p["fixed_s"]
    assert viz.overhead_prediction(base, MACHINE, fixed_ms=0.0)["crossover"] == p["widths"][0]
    assert viz.overhead_prediction(base, MACHINE, fixed_ms=1e6)["crossover"] is None
    bigger_batch = viz.overhead_prediction(base, MACHINE, fixed_ms=20.0, batch_size=256)
    assert bigger_batch["crossover"] <= p["crossover"]      # more work per step leaves the overhead regime sooner
    for fixed, batch in ((0.01, 1), (100.0, 256), (3.0, 16)):   # values a learner can set with the sliders
        assert isinstance(viz.overhead_view(fixed, batch, base, MACHINE, {64: 0.01, 256: 0.02}), Figure)
    with pytest.raises(ValueError, match="fixed_ms"):
        viz.overhead_prediction(base, MACHINE, fixed_ms=-1)
    with pytest.raises(ValueError, match="d_model"):
        viz.scaled_config(base, 100)
    with pytest.raises(TypeError, match="roof"):
        viz.overhead_prediction(base, "fast", 1.0)
    assert viz.widths_for(base) == viz.WIDTHS                  # the bundled shape: powers of two
    smollm = il.ModelConfig(vocab_size=49152, d_model=576, n_layer=30, n_head=9, n_kv_head=3, d_ff=1536)
    widths = viz.widths_for(smollm)                            # 9 heads: widths that 9 even-sized heads split
    assert all(w % 18 == 0 for w in widths) and widths[0] <= 72 and widths[-1] >= 8000
    assert isinstance(viz.overhead_view(1.0, 1, smollm, MACHINE, {576: 0.05, 144: 0.01}), Figure)
    assert viz.scaled_config(smollm, 576 // 4).d_ff == 1536 // 4
    text = viz.overhead_widget(base, MACHINE, 17.3)._repr_mimebundle_()["text/plain"]
    assert text.startswith("Live widget:") and "fixed cost" in text
    bundle = viz.roofline_widget(MACHINE, hardware=viz.MACHINE, config_name="gpt2", dtype_name="float32")._repr_mimebundle_()
    assert "image/png" in bundle and "Live widget:" in bundle["text/plain"]


# --- the committed notebook ----------------------------------------------------------------------------

@pytest.mark.skipif(not NOTEBOOK.exists(), reason="notebook 04 not written yet")
def test_notebook_is_committed_clean():
    nb = json.loads(NOTEBOOK.read_text())
    sources = ["".join(c["source"]) for c in nb["cells"]]
    for key in ("4.1", "4.2", "4.3", "4.5"):
        assert any(f'ex.check("{key}"' in s for s in sources), key
    assert not any("ex.solution(" in s and not s.lstrip().startswith("#") for s in sources if "answer" in s)
    assert "FULL_RUN = False" in sources[1]
    if "widgets" in nb["metadata"]:
        assert "state" in nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_single_operations_are_timed_on_the_device_asked_for():
    t = machine.time_linear(4, 64, 128, repeats=2, min_time_s=0.0, device="cpu")
    a = machine.time_attention(4, 2, 16, 1, 32, repeats=2, min_time_s=0.0, device="cpu")
    assert t.median_s > 0 and a.median_s > 0
    with pytest.raises(ValueError, match="device"):
        machine.time_linear(4, 64, 128, device="no-such-device")
