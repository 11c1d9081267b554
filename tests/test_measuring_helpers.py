"""The helpers every lesson measures with: alternating comparisons, busy-machine notes, impossible
results, and progress bars that store their final state."""
import pytest

from inferlab.measure import timing
from inferlab.progress import progress, stopped_early


def _timing(samples):
    return timing.from_samples(samples)


def test_compare_alternates_and_pairs_samples():
    calls = []
    result = timing.compare({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert result["a"].repeats == result["b"].repeats == 3


def test_paired_ratio_and_its_spread():
    slow, fast = _timing([2.0, 2.2, 1.8, 2.0]), _timing([1.0, 1.0, 1.0, 1.0])
    ratio = timing.paired_ratio(slow, fast)
    assert ratio.median == pytest.approx(2.0) and ratio.clear
    noisy = timing.paired_ratio(_timing([0.8, 1.3, 0.9, 1.2]), _timing([1.0] * 4))
    assert not noisy.clear


def test_busy_note_speaks_only_when_repeats_disagree():
    assert timing.busy_note(_timing([1.0, 1.01, 0.99, 1.0])) == ""
    note = timing.busy_note(_timing([1.0, 2.0, 1.0, 2.5]))
    assert "busy" in note


def test_calibration_flags_a_drift():
    assert not timing.Calibration(0.010, 0.0105).busy
    assert timing.Calibration(0.010, 0.016).busy
    assert timing.Calibration(0.010, 0.010, spread=0.6).busy   # steady contention: medians agree, repeats do not
    assert "calibration" in str(timing.calibrate(repeats=2))
    with pytest.raises(ValueError, match="repeats"):
        timing.calibrate(repeats=0)


def test_impossible_results_are_named():
    assert timing.impossible_results({"MBU": 0.8}, ([1, 2, 4], [10, 19, 35])) == []
    problems = timing.impossible_results({"MBU": 1.6}, ([1, 2], [10, 33]))
    assert len(problems) == 2
    assert timing.IMPOSSIBLE in timing.report_impossible(problems)
    assert timing.report_impossible([]) == ""
    with pytest.raises(ValueError):
        timing.impossible_results(batch_throughput=([1, 2], [1.0]))


def test_compare_rejects_bad_input():
    with pytest.raises(TypeError):
        timing.compare({})
    with pytest.raises(ValueError, match="repeats"):
        timing.compare({"a": lambda: None}, repeats=0)


def test_progress_outside_a_notebook_and_stopped_early(capsys):
    bar = progress(total=10, desc="work", unit="step")
    for i in range(10):
        bar.update(1)
        if i == 4:
            stopped_early(bar, "stopped by the time budget")
            break
    err = capsys.readouterr().err
    assert "stopped by the time budget" in err and "5/10" in err
    assert list(progress(range(3), enabled=False)) == [0, 1, 2]
    with pytest.raises(TypeError):
        progress(range(3), enabled="yes")


def test_progress_remembers_verdicts_and_solutions_can_be_turned_off(tmp_path, monkeypatch, capsys):
    from inferlab import exercises as ex
    monkeypatch.setenv("INFERLAB_PROGRESS", str(tmp_path / "progress.json"))
    ex.check("2.1", None)                 # not answered: not recorded
    assert ex.progress() == {}
    ex.check("2.1", -5)                    # a wrong answer is recorded as tried
    assert ex.progress() == {"2.1": False}
    assert "lesson 2: 0/" in capsys.readouterr().out
    monkeypatch.setenv("INFERLAB_SOLUTIONS", "off")
    ex.solution("2.1")
    assert "turned off" in capsys.readouterr().out
    monkeypatch.setenv("INFERLAB_SOLUTIONS", "on")
    ex.solution("2.1")
    assert "turned off" not in capsys.readouterr().out


def test_setup_check_reports_versions_and_the_bundled_model():
    from inferlab import check
    report = check.run(calibrate=False)
    text = str(report)
    assert "torch" in text and "bundled model" in text and "loads and answers offline" in text
    assert not report.warnings
    with pytest.raises(TypeError, match="calibrate"):
        check.run(calibrate="yes")


def test_a_prediction_is_checked_against_the_learners_measurement(capsys):
    from inferlab import exercises as ex

    @ex.exercise("9.1", question="Will B be faster than A?", solution="    answer = 'B'", measured="sol_measured")
    def _verify(answer, measured):
        right = "B" if measured > 1 else "A"
        return answer == right, f"this machine measured B at {measured:.1f}x A"

    try:
        assert "measured=sol_measured" in ex.verdict("9.1", "B")[1]     # no measurement: says how to pass it
        assert ex.verdict("9.1", "B", measured=2.0)[0]
        assert not ex.verdict("9.1", "B", measured=0.5)[0]
        assert ex.run_solution("9.1", {"sol_measured": 2.0}) == []
        assert ex.run_solution("9.1", {}) != []
    finally:
        del ex.REGISTRY["9.1"]
