"""Notebook 01: its widget callbacks (called with values as the sliders send them) and its exercises."""
import copy

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import inferlab as il  # noqa: E402
from inferlab import exercises as ex  # noqa: E402
from inferlab.core.train import TrainHistory  # noqa: E402
from inferlab.exercises import part1  # noqa: E402
from inferlab.exercises.part1 import adamw_state_bytes  # noqa: E402
from inferlab.lessons.part1 import cost_per_million_tokens, measure_inference_pass, measure_training_step  # noqa: E402
from inferlab.viz import training as viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def history():
    h = TrainHistory()
    h.steps = list(range(101))
    h.train_loss = [7.6 - 0.03 * s for s in h.steps]
    h.eval_steps = [0, 50, 100]
    h.eval_loss = [7.6, 6.1, 4.6]
    h.samples = [(0, "xq#@!"), (50, "the the of"), (100, "The function returns\nNone.")]
    return h


# --- slider over the training history -------------------------------------------------------------------

def test_sample_at_picks_the_last_sample_at_or_before_the_step(history):
    assert viz.sample_at(history, 0) == (0, "xq#@!")
    assert viz.sample_at(history, 49) == (0, "xq#@!")
    assert viz.sample_at(history, 50) == (50, "the the of")
    assert viz.sample_at(history, 100)[0] == 100
    assert viz.sample_at(history, 10_000)[0] == 100  # past the end: the last one
    assert viz.sample_at(history, -5)[0] == 0        # before the start: the first one


def test_sample_at_needs_samples():
    with pytest.raises(ValueError, match="sample_fn"):
        viz.sample_at(TrainHistory(), 0)


@pytest.mark.parametrize("step", [0, 37, 50, 100])
def test_training_snapshot_draws_the_curve_up_to_the_slider_step(history, step):
    fig = viz.training_snapshot(history, step)  # IntSlider sends an int
    ax_loss = fig.axes[0]
    train_line = ax_loss.get_lines()[0]
    assert max(train_line.get_xdata()) == step and len(train_line.get_xdata()) == step + 1
    assert ax_loss.get_xlim() == (0, 100)  # fixed axes while the slider moves
    texts = " ".join(t.get_text() for t in fig.axes[1].texts)
    s, sample = viz.sample_at(history, step)
    assert f"step {s}" in texts and sample.split("\n")[0].split()[0] in texts


def test_plot_loss_curve_full_history(history):
    fig = viz.plot_loss_curve(history)
    lines = fig.axes[0].get_lines()
    assert len(lines[0].get_xdata()) == 101 and list(lines[1].get_xdata()) == [0, 50, 100]


# --- cost calculator --------------------------------------------------------------------------------------

def test_cost_breakdown_adds_up_to_the_package_formula():
    parts = viz.cost_breakdown(100.0, 30.0, 0.3, 0.5)
    assert parts["total"] == pytest.approx(cost_per_million_tokens(100.0, 30.0, 0.3, 0.5))
    assert parts["energy"] == pytest.approx(1e6 / 100 / 3600 * 0.030 * 0.3)
    assert parts["hardware"] == pytest.approx(1e6 / 100 / 3600 * 0.5)


@pytest.mark.parametrize("watts,price,hardware", [(30, 0.30, 0.0), (5, 0.05, 0.0), (700, 0.5, 4.0), (250.0, 0.2, 1.5)])
def test_cost_calculator_bars_follow_the_sliders(watts, price, hardware):
    throughputs = {1: 80.0, 4: 250.0, 16: 600.0}
    fig = viz.cost_calculator(throughputs, watts, price, hardware)  # FloatSliders send floats or ints
    ax = fig.axes[0]
    heights = {}
    for patch in ax.patches:
        x = round(patch.get_x() + patch.get_width() / 2)
        heights[x] = heights.get(x, 0.0) + patch.get_height()
    for i, tps in enumerate(throughputs.values()):
        assert heights[i] == pytest.approx(cost_per_million_tokens(tps, watts, price, hardware))
    best = cost_per_million_tokens(600.0, watts, price, hardware)
    assert f"{best:.3g}" in ax.get_title()


def test_cost_calculator_rejects_no_throughput():
    with pytest.raises(ValueError):
        viz.cost_calculator({}, 30, 0.3, 0.0)


# --- static plots of measured results ----------------------------------------------------------------------

def test_step_comparison_and_latency_plots_on_a_tiny_model(byte_tokenizer):
    torch.manual_seed(0)
    cfg = il.ModelConfig(vocab_size=256, d_model=32, n_layer=2, n_head=4, n_kv_head=2, arch="llama", max_seq_len=64)
    model = il.GPT(cfg)
    x = torch.randint(0, 256, (2, 16))
    y = torch.randint(0, 256, (2, 16))
    train_cost = measure_training_step(copy.deepcopy(model), x, y, repeats=1)
    infer_cost = measure_inference_pass(model, x, repeats=1)
    fig = viz.plot_step_comparison(train_cost, infer_cost)
    ax_t, ax_m = fig.axes
    assert len(ax_t.patches) == 4  # forward/backward/optimizer + forward
    assert sum(p.get_height() for p in ax_m.patches) == pytest.approx(
        (train_cost.memory.total + infer_cost.memory.total) / 1e6)
    res = il.generate(model, byte_tokenizer, "abc", max_new_tokens=6)
    fig = viz.plot_token_times(res)
    assert len(fig.axes[0].patches) == 6
    fig = viz.plot_throughput_vs_batch([1, 2, 4], [10.0, 18.0, 30.0], [0.1, 0.11, 0.13])
    assert list(fig.axes[0].get_lines()[0].get_ydata()) == [10.0, 18.0, 30.0]


def test_one_forward_pass_per_generated_token(byte_tokenizer):
    """The notebook's correction of the post: a forward hook counts one call per new token."""
    torch.manual_seed(0)
    model = il.GPT(il.ModelConfig(vocab_size=256, d_model=32, n_layer=1, n_head=2, arch="llama", max_seq_len=64))
    calls = []
    handle = model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[1]))
    try:
        for use_cache in (True, False):
            calls.clear()
            res = il.generate(model, byte_tokenizer, "hello", max_new_tokens=7, use_cache=use_cache)
            assert len(calls) == len(res.tokens) == 7
    finally:
        handle.remove()


# --- exercises: each check accepts a right answer and rejects wrong ones, and never raises ----------------------

def _notebook_cells():
    import json
    from pathlib import Path

    path = Path(__file__).parent.parent / "notebooks" / "01_training_vs_inference.ipynb"
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]


def test_exercise_1_1_config_is_the_notebooks_small_model():
    """Exercise 1.1 asks about the model trained live in section 2: its checker must use the same shape."""
    import re
    from types import SimpleNamespace

    source = next(s for s in _notebook_cells() if "small_cfg = il.ModelConfig(" in s)
    call = re.search(r"il\.ModelConfig\((.*?)\)\n", source, re.S).group(1)
    notebook_cfg = eval(f"il.ModelConfig({call})", {"il": il, "tok": SimpleNamespace(vocab_size=2048), "train_tok": SimpleNamespace(vocab_size=2048)})
    assert notebook_cfg == part1.live_model_config()


def test_exercise_1_1_adamw_state_bytes():
    small = il.GPT(part1.live_model_config())
    weight_bytes = small.weight_bytes()
    assert adamw_state_bytes() == 2 * weight_bytes
    # the ground truth: what torch's AdamW really keeps after one step
    opt = torch.optim.AdamW(small.parameters())
    small(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    state = sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values() if v.dim() > 0)
    assert state == 2 * weight_bytes
    assert ex.verdict("1.1", 2 * weight_bytes)[0]
    assert ex.verdict("1.1", float(2 * weight_bytes))[0]
    for wrong in (weight_bytes, 4 * weight_bytes, weight_bytes // 2, 2 * weight_bytes + 2048 * 96 * 8, 12345):
        assert not ex.verdict("1.1", wrong)[0]
    assert "once" in ex.verdict("1.1", weight_bytes)[1]


def test_exercise_1_1_rejects_the_bundled_models_table_value():
    ok, message = ex.verdict("1.1", adamw_state_bytes("inferlab-main"))
    assert not ok and "bundled" in message and "small" in message


def test_exercise_1_2_tokens_per_second_from_tpot():
    assert ex.verdict("1.2", lambda res: 1.0 / res.tpot_s)[0]
    ok, message = ex.verdict("1.2", lambda res: len(res.tokens) / res.total_s)
    assert not ok and "first token" in message
    assert not ex.verdict("1.2", lambda res: res.tpot_s)[0]
    assert not ex.verdict("1.2", 50.0)[0]  # a number, not a function
    assert not ex.verdict("1.2", lambda res: "fast")[0]


def test_exercise_1_3_cost_per_million_tokens():
    right = cost_per_million_tokens(2500, 700, 0.15, 2.5)
    assert right == pytest.approx(0.2894, abs=1e-4)
    assert ex.verdict("1.3", right)[0]
    assert ex.verdict("1.3", round(right, 3))[0]
    ok, message = ex.verdict("1.3", cost_per_million_tokens(2500, 700, 0.15, 0.0))
    assert not ok and "rent" in message
    assert not ex.verdict("1.3", cost_per_million_tokens(2500, 0, 0, 2.5))[0]
    assert not ex.verdict("1.3", right * 3600)[0]


def test_exercise_1_4_forward_passes():
    assert ex.verdict("1.4", 150)[0]
    ok, message = ex.verdict("1.4", 3)
    assert not ok and "simplification" in message
    for wrong in (50, 153, 147, 0):
        assert not ex.verdict("1.4", wrong)[0]


@pytest.mark.parametrize("key", ["1.1", "1.2", "1.3", "1.4"])
def test_checks_never_raise_and_print_a_verdict(key, capsys):
    assert ex.check(key, None) is None
    assert "waiting for your answer" in capsys.readouterr().out
    for junk in ("a string", [1, 2], float("nan"), True):
        ex.check(key, junk)
        assert ex.verdict(key, junk)[0] is False
    assert "❌" in capsys.readouterr().out


@pytest.mark.parametrize("key", ["1.1", "1.2", "1.3", "1.4"])
def test_every_exercise_has_a_solution(key, capsys):
    ex.solution(key)
    assert "answer" in capsys.readouterr().out


def test_exercise_1_3_says_when_the_unit_is_wrong():
    hours = 1e6 / 2500 / 3600
    in_watts = hours * (700 * 0.15 + 2.5)          # 700 W used as if it were kW
    ok, message = ex.verdict("1.3", in_watts)
    assert not ok and "kW" in message and "1000" in message
    ok, message = ex.verdict("1.3", hours * 700 * 0.15)  # energy only, also in watts
    assert not ok and "kW" in message
    ok, message = ex.verdict("1.3", 1e6 / 2500 * (0.7 * 0.15 + 2.5))  # seconds, not hours
    assert not ok and "3600" in message


@pytest.mark.parametrize("key", ["1.1", "1.2", "1.3", "1.4"])
def test_wrong_answers_never_reveal_the_answer(key):
    right = {"1.1": adamw_state_bytes(), "1.3": cost_per_million_tokens(2500, 700, 0.15, 2.5), "1.4": 150}
    wrongs = {"1.1": [1, 1673088, 27805696, 836544], "1.2": [lambda r: r.tpot_s, lambda r: 3.0, lambda r: 2 / r.tpot_s],
              "1.3": [11.94, 1042.0, 0.0117, 0.278, 1.0], "1.4": [3, 50, 153, 7]}[key]
    for wrong in wrongs:
        ok, message = ex.verdict(key, wrong)
        assert not ok
        if key in right:
            for shown in (f"{right[key]:,}", f"{right[key]:.3f}", f"{right[key]:.3g}", str(right[key])):
                assert shown not in message, (wrong, message)
        else:  # 1.2: the decode speed of the checker's own cases (1 / tpot)
            for speed in ("50", "200", "expected"):
                assert speed not in message.split("gave")[-1].split(":")[-1], message


def test_solutions_run_in_the_notebooks_namespace_and_change_nothing():
    """As check_solutions does at the end of the notebook: only `answer` may be (re)bound."""
    small = il.GPT(part1.live_model_config())
    namespace = {"il": il, "ex": ex, "small": small, "model": il.GPT(il.MODEL_CONFIGS["inferlab-draft"]),
                 "cfg": il.MODEL_CONFIGS["inferlab-draft"], "answer": None, "math": __import__("math")}
    for key in ("1.1", "1.2", "1.3", "1.4"):
        assert ex.run_solution(key, namespace) == [], key
    assert namespace["answer"] is None and namespace["small"] is small


def test_step_comparison_title_uses_the_ratio_the_notebook_prints():
    torch.manual_seed(0)
    cfg = il.ModelConfig(vocab_size=256, d_model=32, n_layer=1, n_head=2, arch="llama", max_seq_len=64)
    model = il.GPT(cfg)
    x, y = torch.randint(0, 256, (2, 8)), torch.randint(0, 256, (2, 8))
    train_cost = measure_training_step(copy.deepcopy(model), x, y, repeats=1)
    infer_cost = measure_inference_pass(model, x, repeats=1)
    fig = viz.plot_step_comparison(train_cost, infer_cost, time_ratio=3.14)
    assert "3.1x" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="time_ratio"):
        viz.plot_step_comparison(train_cost, infer_cost, time_ratio=-1)


# --- issue 14: live widgets and the prediction of the step's cost -----------------------------------------

def test_training_widget_carries_its_picture_and_moves(history):
    shown = viz.training_widget(history)
    bundle = shown._repr_mimebundle_()
    assert "image/png" in bundle and "slider" in bundle["text/plain"]
    slider = shown.widget.children[0]
    assert slider.value == 100 // 3 and slider.max == 100
    for step in (0, 55, 100):   # what a learner can set: the callback draws without error
        slider.value = step
    with pytest.raises(ValueError, match="step"):
        viz.training_widget(history, step="late")


def test_cost_widget_carries_its_picture_and_follows_the_sliders():
    shown = viz.cost_widget({1: 300.0, 32: 1800.0}, 30.0, 0.3, 0.0)
    assert "image/png" in shown._repr_mimebundle_()
    watts, price, hardware = shown.widget.children[:3]
    for w, p, h in ((5, 0.0, 0.0), (1000, 1.0, 5.0), (350, 0.15, 2.5)):
        watts.value, price.value, hardware.value = w, p, h
    with pytest.raises(ValueError, match="throughputs"):
        viz.cost_widget({}, 30.0, 0.3)


def test_exercise_1_5_prediction_is_judged_against_the_measurement():
    assert ex.get_exercise("1.5").measured == "step_ratio"
    assert not ex.verdict("1.5", 3.0)[0]                     # no measurement given
    for measured in (2.5, 3.4, 5.3, 7.0):                    # quiet and busy machines
        assert ex.verdict("1.5", 3.0, measured=measured)[0], measured
    ok, message = ex.verdict("1.5", 1.0, measured=3.4)
    assert not ok and "forward pass" in message
    ok, message = ex.verdict("1.5", 0.3, measured=3.4)
    assert not ok
    ok, message = ex.verdict("1.5", 30.0, measured=3.4)
    assert not ok and "high" in message
    assert not ex.verdict("1.5", 1.5, measured=2.0)[0]      # near, but below what the backward pass alone adds
    for wrong in (1.0, 30.0, 1.5):
        assert "3.4" not in ex.verdict("1.5", wrong, measured=3.4)[1]
    assert ex.run_solution("1.5", {"ex": ex, "step_ratio": 3.4}) == []


def test_compare_guess_waits_then_compares():
    assert "no guess" in part1.compare_guess(None, 2.0, "gain")
    assert part1.compare_guess(4, 6.123, "gain") == "gain: you guessed 4, measured 6.12 (within 2x: a good guess)."
