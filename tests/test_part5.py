"""Notebook 05: the trade-off widget's callback, its plots, and the exercises' checks."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from inferlab import exercises as ex  # noqa: E402
from inferlab.optimize import expected_speedup, quantize_tensor, residual  # noqa: E402
from inferlab.optimize.measure import BatchPoint  # noqa: E402
from inferlab.viz import optimize as viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def fake_measurements():
    combos = {}
    for scheme, size in (("none", 4.0), ("int8", 1.0), ("q4_0", 0.5625)):
        for precision, speed in (("float32", 1.0), ("bfloat16", 1.5)):
            combos[(scheme, precision)] = {"step_s": 0.01 / speed / (2 if scheme != "none" else 1),
                                           "weight_bytes": int(1000 * size / (2 if precision != "float32" and scheme == "none" else 1)),
                                           "loss": 4.0 + (0.1 if scheme == "q4_0" else 0.0), "agreement": 1.0}
    batch = {1: {"tokens_per_s": 100.0, "latency_s": 1.0}, 4: {"tokens_per_s": 300.0, "latency_s": 1.3}}
    return {"combos": combos, "batch": batch, "speculative": {"speedup": 1.5, "draft_bytes": 100}}


def test_combine_baseline_is_one():
    r = viz.combine(fake_measurements())
    assert r["speed_ratio"] == r["memory_ratio"] == r["latency_ratio"] == 1.0 and r["loss_change"] == 0.0


def test_combine_multiplies_measured_factors():
    m = fake_measurements()
    r = viz.combine(m, "int8", "bfloat16", 4, False)
    assert r["speed_ratio"] == pytest.approx(3.0 * 3.0)  # 3x from the step, 3x from batching
    assert r["memory_ratio"] == pytest.approx(0.25)
    assert r["notes"] == ["estimate: measured factors multiplied"]
    s = viz.combine(m, "none", "float32", 1, True)
    assert s["speed_ratio"] == pytest.approx(1.5) and s["memory_ratio"] == pytest.approx(1.025)
    assert s["loss_change"] == 0.0
    b = viz.combine(m, "none", "float32", 4, True)
    assert b["speed_ratio"] == pytest.approx(3.0) and "batch size 1 only" in b["notes"][0]
    assert viz.combine(m, "q4_0", "float32")["loss_change"] == pytest.approx(0.1)


@pytest.mark.parametrize("args, match", [(("int4", "float32", 1, False), "no measurement for scheme"),
                                         (("none", "float32", 3, False), "batch size 3")])
def test_combine_bad_values(args, match):
    with pytest.raises(ValueError, match=match):
        viz.combine(fake_measurements(), *args)


@pytest.mark.parametrize("scheme, precision, batch, spec", [("none", "float32", 1, False), ("int8", "bfloat16", 4, True),
                                                            ("q4_0", "float32", 1, True)])
def test_tradeoff_view_draws_every_widget_state(scheme, precision, batch, spec):
    fig = viz.tradeoff_view(fake_measurements(), scheme, precision, batch, spec)
    assert len(fig.axes) == 3  # ratios, scatter, colorbar
    assert scheme in fig.axes[0].get_title()


def test_other_plots():
    assert viz.plot_attention_memory([64, 128], [1e4, 4e4], [1e3, 2e3], [1e3, 2e3]).axes
    points = [BatchPoint(1, 100.0, 1.0, 0.01), BatchPoint(4, 300.0, 1.3, 0.013)]
    assert len(viz.plot_batching(points).axes) == 2
    assert viz.plot_speculative([1, 2], [1.1, 1.2], [1.15, 1.25]).axes


# --- exercises: right answers pass, wrong ones fail with a useful message, none raises ------------------

def test_exercise_5_1():
    assert ex.verdict("5.1", 4096 * 4096 // 2 + 4096 * 128 * 2)[0]
    ok, msg = ex.verdict("5.1", 4096 * 4096 // 2)
    assert not ok and "scale" in msg
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


@pytest.mark.parametrize("key", ["5.1", "5.2", "5.3", "5.4"])
def test_unanswered_exercises_never_raise(key, capsys):
    ex.check(key, None)
    assert ex.verdict(key, None)[0] is False
    assert "waiting for your answer" in capsys.readouterr().out
    ex.solution(key)
    assert "answer" in capsys.readouterr().out
