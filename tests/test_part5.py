"""Notebook 05: the trade-off widget's callback, its plots, and the exercises' checks."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from inferlab import exercises as ex  # noqa: E402
from inferlab.lessons.part5 import BatchPoint  # noqa: E402
from inferlab.optimize import expected_speedup, quantize_tensor, residual  # noqa: E402
from inferlab.viz import optimize as viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def fake_measurements():
    formats = {}
    for name, size, speed, big in (("float32", 4.0, 1.0, 1.0), ("bfloat16", 2.0, 0.9, 1.9), ("int8", 1.0, 1.1, 3.6),
                                   ("q4_0", 0.5625, 0.6, None)):
        formats[name] = {"speedup": speed, "weight_bytes": int(1000 * size), "kl": 0.0 if name == "float32" else 1e-3,
                         "loss_change": 0.1 if name == "q4_0" else 0.0, "agreement": 1.0, "big_speedup": big}
    batch = {1: {"tokens_per_s": 100.0, "latency_s": 1.0}, 4: {"tokens_per_s": 300.0, "latency_s": 1.3}}
    return {"formats": formats, "batch": batch, "speculative": {"speedup": 1.5, "draft_bytes": 100}}


def test_combine_baseline_is_one():
    r = viz.combine(fake_measurements())
    assert r["speed_ratio"] == r["memory_ratio"] == r["latency_ratio"] == 1.0 and r["loss_change"] == 0.0


def test_combine_multiplies_measured_factors():
    m = fake_measurements()
    r = viz.combine(m, "int8", 4, False)
    assert r["speed_ratio"] == pytest.approx(1.1 * 3.0)  # the format's step, then 3x from batching
    assert r["latency_ratio"] == pytest.approx(1.3 / 1.1)
    assert r["memory_ratio"] == pytest.approx(0.25) and r["big_speedup"] == 3.6
    assert r["notes"] == ["estimate: measured factors multiplied"]
    s = viz.combine(m, "float32", 1, True)
    assert s["speed_ratio"] == pytest.approx(1.5) and s["memory_ratio"] == pytest.approx(1.025)
    assert s["loss_change"] == 0.0
    b = viz.combine(m, "float32", 4, True)
    assert b["speed_ratio"] == pytest.approx(3.0) and "batch size 1 only" in b["notes"][0]
    assert viz.combine(m, "q4_0")["loss_change"] == pytest.approx(0.1)
    assert viz.combine(m, "q4_0")["big_speedup"] is None


@pytest.mark.parametrize("args, match", [(("int4", 1, False), "no measurement for weights"),
                                         (("float32", 3, False), "batch size 3")])
def test_combine_bad_values(args, match):
    with pytest.raises(ValueError, match=match):
        viz.combine(fake_measurements(), *args)


@pytest.mark.parametrize("weights, batch, spec", [("float32", 1, False), ("int8", 4, True), ("q4_0", 1, True)])
def test_tradeoff_view_draws_every_widget_state(weights, batch, spec):
    fig = viz.tradeoff_view(fake_measurements(), weights, batch, spec)
    assert len(fig.axes) == 2  # ratios, both models' formats
    assert weights in fig.axes[0].get_title()
    # both models' points: four formats on the bundled model, three measured on the memory-bound one
    offsets = [len(c.get_offsets()) for c in fig.axes[1].collections]
    assert offsets[:2] == [4, 3]


def test_plot_weight_formats_marks_both_regimes():
    fig = viz.plot_weight_formats(fake_measurements()["formats"])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("memory-bound model" in t for t in labels) and any("bundled" in t for t in labels)


def test_other_plots():
    assert viz.plot_attention_memory([64, 128], [1e4, 4e4], [1e3, 2e3], [1e3, 2e3]).axes
    points = [BatchPoint(1, 100.0, 1.0, 0.01), BatchPoint(4, 300.0, 1.3, 0.013)]
    assert len(viz.plot_batching(points).axes) == 2
    assert viz.plot_speculative([1, 2], [1.1, 1.2], [1.15, 1.25]).axes
    assert viz.plot_speculative([1, 2], [1.1, 1.2], [1.15, 1.25], [1.0, 1.1], [1.2, 1.3]).axes


# --- exercises: right answers pass, wrong ones fail with a useful message, none raises ------------------

def test_exercise_5_1():
    assert ex.verdict("5.1", 4096 * 4096 // 2 + 4096 * 128 * 2)[0]
    ok, msg = ex.verdict("5.1", 4096 * 4096 // 2)
    assert not ok and "scale" in msg
    ok, msg = ex.verdict("5.1", 12345)
    assert not ok and "9,437,184" not in msg and "9437184" not in msg   # a hint, never the answer
    assert not ex.verdict("5.1", "many")[0]


def test_exercise_5_2():
    assert ex.verdict("5.2", expected_speedup(0.8, 4, 0.1))[0]
    assert ex.verdict("5.2", 2.4)[0]
    ok, msg = ex.verdict("5.2", (1 - 0.8 ** 5) / 0.2)
    assert not ok and "draft steps" in msg


def test_exercise_5_3():
    assert ex.verdict("5.3", residual)[0]
    assert ex.verdict("5.3", lambda p, q: (p - q).clamp(min=0) / (p - q).clamp(min=0).sum())[0]
    ok, msg = ex.verdict("5.3", lambda p, q: p - q)
    assert not ok and "negative" in msg
    ok, msg = ex.verdict("5.3", lambda p, q: (p - q).clamp(min=0))
    assert not ok and "sum" in msg
    assert not ex.verdict("5.3", lambda p, q: 1 / 0)[0]  # a crashing answer is wrong, not an error


def test_exercise_5_4():
    assert ex.verdict("5.4", lambda w: quantize_tensor(w, "int8"))[0]
    ok, msg = ex.verdict("5.4", lambda w: (torch.trunc(w / (w.abs().amax(1, keepdim=True) / 127)).to(torch.int8),
                                           w.abs().amax(1) / 127))
    assert not ok and "round" in msg
    assert not ex.verdict("5.4", lambda w: (w, w))[0]


def test_exercise_5_4_names_the_clipping():
    """A scale of max|w| / 128 (the asymmetric int8 range) sends the largest weights past 127: the hint says
    they are clipped, instead of a generic 'round to the nearest'."""
    def clipped(w):
        scale = w.abs().amax(1) / 128
        return (w / scale[:, None]).round().clamp(-128, 127).to(torch.int8), scale
    ok, msg = ex.verdict("5.4", clipped)
    assert not ok and "clipped" in msg and "[-127, 127]" in msg

    # clamping to [-128, 127] with the right scale never reaches -128: correct
    assert ex.verdict("5.4", lambda w: ((w / (w.abs().amax(1, keepdim=True) / 127)).round().clamp(-128, 127)
                                        .to(torch.int8), w.abs().amax(1) / 127))[0]


INT8_MEASURED = {"memory_bound": 3.7, "bundled": 1.5, "fewer_bytes": 3.93, "float32_bytes": 393, "int8_bytes": 100}


def test_exercise_5_5_prediction_against_the_measurement():
    """Right: near the measurement, or the bytes-ratio reasoning of a memory-bound step even where this
    machine's kernel fell short. Wrong: no gain (the overhead-bound model's answer), the memory ratio, more
    than the bytes allow."""
    m = INT8_MEASURED
    assert ex.verdict("5.5", 3.0, m)[0] and ex.verdict("5.5", 3.9, m)[0]
    slow_kernel = dict(m, memory_bound=1.6)   # a machine whose int8 kernel streams slowly
    ok, msg = ex.verdict("5.5", 3.9, slow_kernel)
    assert ok and "reasoned from the bytes" in msg
    for wrong, word in ((1.0, "overhead-bound"), (1 / 3.93, "memory ratio"), (16, "More than the bytes")):
        ok, msg = ex.verdict("5.5", wrong, m)
        assert not ok and word in msg, (wrong, msg)
    assert not ex.verdict("5.5", -2, m)[0]
    ok, msg = ex.verdict("5.5", 3.9)   # no measurement passed: a reminder, not a verdict
    assert not ok and "int8_measured" in msg


def test_exercise_5_6():
    assert ex.verdict("5.6", 131072)[0]
    for wrong, word in ((524288, "QUERY"), (65536, "both"), (262144, "float32"), (4096, "one layer"),
                        (131072 * 8, "bits")):
        ok, msg = ex.verdict("5.6", wrong)
        assert not ok and word in msg and "131,072" not in msg
    assert not ex.verdict("5.6", 7)[0]


def test_solutions_bind_only_fresh_names():
    """check_solutions runs each solution in the notebook's namespace: none may rebind a notebook name."""
    namespace = {"c": 0.3, "alpha": 0.7, "gamma": 4, "n": 5, "torch": torch, "int8_measured": dict(INT8_MEASURED)}
    for key in ("5.1", "5.2", "5.3", "5.4", "5.5", "5.6"):
        assert ex.run_solution(key, namespace) == [], key
    assert namespace["c"] == 0.3 and namespace["n"] == 5


@pytest.mark.parametrize("key", ["5.1", "5.2", "5.3", "5.4", "5.5", "5.6"])
def test_unanswered_exercises_never_raise(key, capsys):
    ex.check(key, None)
    assert ex.verdict(key, None)[0] is False
    assert "waiting for your answer" in capsys.readouterr().out
    ex.solution(key)
    assert "answer" in capsys.readouterr().out


def test_speculative_view_widget_states():
    fig = viz.speculative_view(0.8, 0.1, 8, {1: 1.2, 2: 1.3})
    assert "best gamma" in fig.axes[0].get_title()
    assert len(fig.axes[0].lines) >= 2
    assert viz.speculative_view(0.0, 0.0, 1).axes
    for bad in (dict(alpha=1.0), dict(c=-0.1), dict(max_gamma=0)):
        with pytest.raises(ValueError):
            viz.speculative_view(**bad)


# --- the live widgets: built by inferlab, driven here with values a learner could set -------------------

WIDGET = "application/vnd.jupyter.widget-view+json"


def test_speculative_widget_carries_its_picture_and_follows_the_sliders():
    live = viz.speculative_widget(0.71, 0.23, {4: 1.1})
    bundle = live._repr_mimebundle_()
    assert WIDGET in bundle and bundle["image/png"] and bundle["text/plain"].startswith("Live widget: sliders")
    alpha, c = live.widget.children[:2]
    assert (alpha.value, c.value) == (0.71, 0.23)
    alpha.value, c.value = 0.9, 0.02       # a learner moves the sliders: a GPU-like draft
    assert "best gamma 8" in live.widget.result.axes[0].get_title()
    c.value = 1.0
    assert "best gamma 1" in live.widget.result.axes[0].get_title()
    assert viz.speculative_widget(0.5, 3.0).widget.children[1].value == 1.0   # c clipped to the slider's range
    with pytest.raises(ValueError):
        viz.speculative_widget(1.2, 0.1)


def test_tradeoff_widget_offers_what_was_measured():
    live = viz.tradeoff_widget(fake_measurements(), "int8", 1, False)
    assert "image/png" in live._repr_mimebundle_()
    weights, batch, spec = live.widget.children[:3]
    assert list(weights.options) == ["float32", "bfloat16", "int8", "q4_0"] and list(batch.options) == [1, 4]
    weights.value, batch.value, spec.value = "q4_0", 4, True
    assert "q4_0" in live.widget.result.axes[0].get_title()
    with pytest.raises(ValueError, match="batch size 3"):
        viz.tradeoff_widget(fake_measurements(), "int8", 3)


def _label_boxes(fig, ax):
    """The labels' text boxes in pixels (without the thin lines that join a moved label to its point)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text
    canvas = FigureCanvasAgg(fig) if not hasattr(fig.canvas, "get_renderer") else fig.canvas
    canvas.draw()
    return [Text.get_window_extent(t, canvas.get_renderer()) for t in ax.texts]


def test_scatter_labels_never_overlap():
    """bfloat16 and float16 store the same bytes and ran at nearly the same speed: their labels must not
    overlap (issue: the trade-off scatter's labels)."""
    m = fake_measurements()
    for name, speed, big in (("float16", 0.92, 1.95), ("q8_0", 1.08, 3.55)):
        m["formats"][name] = dict(m["formats"]["bfloat16" if name == "float16" else "int8"], speedup=speed,
                                  big_speedup=big)
    for fig in (viz.plot_weight_formats(m["formats"]), viz.tradeoff_view(m, "int8", 4, True)):
        ax = fig.axes[-1]
        boxes = _label_boxes(fig, ax)
        assert len(boxes) == 2 * len(m["formats"]) - 2   # both models, float32 once, q4_0 only on the bundled
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), "two labels overlap"


def test_place_labels_moves_colliding_labels_apart():
    fig, ax = plt.subplots(dpi=150)
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    points = [(5, 5, "bfloat16"), (5, 5.05, "float16"), (5, 4.95, "int8")]
    texts = viz.place_labels(ax, points)
    assert [t.get_text() for t in texts] == ["int8", "bfloat16", "float16"]
    boxes = _label_boxes(fig, ax)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_plot_error_vs_bits():
    fig = viz.plot_error_vs_bits([("int8", 8.1, 7e-3), ("q4_0", 4.5, 0.1), ("float16", 16, 0.0)])
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "float16 (exact)" in labels and len(labels) == 3
    with pytest.raises(ValueError):
        viz.plot_error_vs_bits([])
