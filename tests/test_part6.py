"""Notebook 06's widget callback, plots and exercises: called with values, right answers pass, wrong ones don't."""
from types import SimpleNamespace

import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

import inferlab as il
from inferlab import exercises as ex
from inferlab.engine.baselines import mixed_workload, static_batching
from inferlab.engine.metrics import StepRecord
from inferlab.viz import engine as viz


@pytest.fixture(scope="module")
def draft():
    return il.load_pretrained("draft")


def test_widget_callback_shows_throughput_latency_and_preemptions(draft):
    model, tok = draft
    roomy = viz.engine_view(arrival_rate=50.0, kv_tokens=4096, block_size=16, model=model, tok=tok)
    tight = viz.engine_view(arrival_rate=1e6, kv_tokens=256, block_size=8, model=model, tok=tok)
    for fig in (roomy, tight):
        text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        assert "tokens/s" in text and "TTFT" in text and "preemptions" in text
        assert fig.stats.num_requests == 24 and fig.stats.generated_tokens > 0
    assert roomy.stats.num_preemptions == 0 and roomy.stats.num_rejected == 0
    assert tight.stats.num_preemptions > 0     # 32 blocks of 8 tokens cannot hold a burst of 24 requests
    with pytest.raises(ValueError, match="kv_tokens"):
        viz.engine_view(10.0, 0, 16, model=model, tok=tok)


def test_widget_rejects_requests_a_tiny_pool_can_never_hold(draft):
    model, tok = draft
    outputs, stats, engine = viz.serve_workload(100.0, kv_tokens=64, block_size=16, model=model, tok=tok)
    assert stats.num_rejected > 0
    assert all(o.finish_reason in ("length", "rejected") for o in outputs)
    assert all(o.error for o in outputs if o.finish_reason == "rejected")


def _step(step, start, entries, preempted=()):
    return StepRecord(step, start, 1.0, list(entries), 48, 4, 8, 16, 32, list(preempted))


def test_request_segments_draw_a_requeued_request_as_waiting():
    """Request 1 prefills in step 0, is preempted in step 1, waits through step 2, recomputes in step 3 and
    decodes in step 4: the steps it sat out are waiting, not prefill."""
    trace = [_step(0, 0.0, [(1, "prefill", 40), (2, "prefill", 8)]), _step(1, 1.0, [(2, "prefill", 40)], [1]),
             _step(2, 2.0, [(2, "decode", 1)]), _step(3, 3.0, [(2, "decode", 1), (1, "prefill", 40)]),
             _step(4, 4.0, [(1, "decode", 1)])]
    m = SimpleNamespace(arrival=0.0)
    assert viz.request_segments(m, 1, trace) == [(0.0, 1.0, "prefill"), (1.0, 3.0, "waiting"), (3.0, 4.0, "prefill"),
                                                 (4.0, 5.0, "decode")]
    late = SimpleNamespace(arrival=0.5)   # arrived during step 0, first ran in step 1
    assert viz.request_segments(late, 2, trace[1:]) == [(0.5, 1.0, "waiting"), (1.0, 2.0, "prefill"),
                                                        (2.0, 4.0, "decode")]
    assert viz.request_segments(m, 9, trace) == []


def test_time_requeued_before_the_first_token_is_drawn_as_waiting(draft):
    """A chunked prompt preempted before its first token waits in the queue, then recomputes: the widget's rows
    must show that wait in grey, not as one long prefill from first scheduled to first token."""
    model, tok = draft
    prompts, params = mixed_workload(tok, 8, prompt_len=(16, 64), output_len=(8, 24), seed=0)
    engine = il.Engine(model, tok, block_size=8, num_blocks=16, max_num_seqs=8, max_num_batched_tokens=32)
    outputs = engine.generate(prompts, params)
    early = {rid for rec in engine.trace for rid in rec.preempted
             if rec.start < engine.requests[rid].metrics.first_token}   # preempted before its first token
    assert early, "a small budget (chunked prompts) and a tight pool were meant to preempt before a first token"
    fig = Figure()
    ax = fig.add_subplot()
    viz.draw_requests(ax, outputs, engine.trace)
    for rid in early:
        m = engine.requests[rid].metrics
        segments = viz.request_segments(m, rid, engine.trace)
        assert segments[0][0] == m.arrival and segments[-1][1] == pytest.approx(m.finished)
        assert all(b == c for (_, b, _), (c, _, _) in zip(segments, segments[1:]))   # no gaps, no overlaps
        before = [phase for a, b, phase in segments if b <= m.first_token + 1e-9]
        assert "waiting" in before[before.index("prefill"):]     # queued again between two prefills
        prefill = sum(b - a for a, b, phase in segments if phase == "prefill" and b <= m.first_token + 1e-9)
        assert prefill < m.first_token - m.first_scheduled     # the old drawing called all of it prefill
        row = [p for p in ax.patches if abs(p.get_y() + p.get_height() / 2 - rid) < 1e-9]
        grey = [p for p in row if to_rgb(p.get_facecolor()) == to_rgb(viz.WAIT)]
        assert any(m.first_scheduled < p.get_x() < m.first_token for p in grey)


def test_step_trace_shows_every_step_and_says_how_many(draft):
    model, tok = draft
    prompts, params = mixed_workload(tok, 6, prompt_len=(8, 40), output_len=(4, 12), seed=3)
    engine = il.Engine(model, tok, block_size=4, max_num_seqs=4, max_num_batched_tokens=32)
    engine.generate(prompts, params)
    n = len(engine.trace)
    title = viz.plot_step_trace(engine.trace).axes[0].get_title(loc="left")
    assert f"all {n} steps" in title
    cut = viz.plot_step_trace(engine.trace, max_steps=5).axes[0].get_title(loc="left")
    assert f"first 5 of the run's {n} steps" in cut
    with pytest.raises(ValueError, match="max_steps"):
        viz.plot_step_trace(engine.trace, max_steps=0)


def test_plots_draw_from_a_fixed_scenario(draft):
    model, tok = draft
    prompts, params = mixed_workload(tok, 6, prompt_len=(8, 40), output_len=(4, 12), seed=3, shared_prefix_frac=0.5)
    engine = il.Engine(model, tok, block_size=4, num_blocks=48, max_num_seqs=4, max_num_batched_tokens=32)
    for p, sp in zip(prompts, params):
        engine.add_request(p, sp)
    for _ in range(4):
        engine.step()
    snap = engine.snapshot()
    assert len(snap["blocks"]) == 48 and snap["tables"]
    assert any(len(b["owners"]) > 1 and b["ref_count"] == len(b["owners"]) for b in snap["blocks"])
    viz.plot_block_table(snap)
    while engine.has_unfinished_requests():
        engine.step()
    viz.plot_step_trace(engine.trace)
    outs = engine.generate(prompts, params)
    static = static_batching(model, tok, prompts, params, batch_size=3)
    fig = viz.plot_timeline({"static batching": static, "engine": (outs, engine.last_stats)})
    assert len(fig.axes) == 2


def test_fragmentation_simulation_is_seeded_and_paging_wastes_little():
    a, b = viz.fragmentation_sim(num_steps=300, seed=1), viz.fragmentation_sim(num_steps=300, seed=1)
    assert a["mean"] == b["mean"]
    m = a["mean"]
    assert m["reserve the context"] < 0.4 < m["reserve prompt + max_tokens"] < m["paging"]
    assert m["paging"] > 0.96
    viz.plot_fragmentation(a)


RIGHT = {"6.1": [9, 9.0], "6.2": [149], "6.3": [48],
         "6.4": [il.SamplingParams(temperature=0.0, max_tokens=20, stop="\n\n"),
                 il.SamplingParams(max_tokens=20, stop=["\n\n"]),
                 il.SamplingParams(max_tokens=20, stop="\n\n", top_k=1, top_p=0.9, seed=3)]}   # greedy ignores them
WRONG = {"6.1": [8, 129, 130, 144, 7, 2, 32, 3, 9.5, "9"], "6.2": [37, 5, 9, 2, 144, 181, 148, 150, 117, 133, 0],
         "6.3": [50, 3, 4, 64, 0, 32, 16, 47],
         "6.4": [il.SamplingParams(max_tokens=20), il.SamplingParams(max_tokens=16, stop="\n\n"),
                 il.SamplingParams(temperature=0.7, max_tokens=20, stop="\n\n"), {"max_tokens": 20},
                 il.SamplingParams(max_tokens=20, stop="\n"), il.SamplingParams(max_tokens=20, stop=["\n\n", "."])]}


@pytest.mark.parametrize("key", sorted(RIGHT))
def test_exercise_checks_accept_right_and_reject_wrong(key, capsys):
    for right in RIGHT[key]:
        assert ex.verdict(key, right)[0] is True, right
    hints = set()
    for wrong in WRONG[key]:
        ok, message = ex.verdict(key, wrong)
        assert ok is False, wrong
        hints.add(message)
        if isinstance(RIGHT[key][0], int):   # a hint says what is wrong, never the answer
            assert str(RIGHT[key][0]) not in message.split("Exercise")[1].split(":", 1)[1], message
    assert len(hints) >= len(WRONG[key]) // 2, "wrong answers should get hints that say what is wrong"
    assert ex.verdict(key, None)[0] is False        # not answered yet: a verdict, never an exception
    ex.solution(key)
    assert "answer" in capsys.readouterr().out


@pytest.mark.parametrize("key", sorted(RIGHT))
def test_solutions_bind_only_their_answer(key):
    namespace = {"il": il, "table": [7, 2, 9], "engine": None}   # names notebook 06 has
    assert ex.run_solution(key, namespace) == []


def test_exercise_answers_agree_with_the_engine(draft):
    """6.1 and 6.3 asked about the engine's arithmetic: the engine itself agrees."""
    model, tok = draft
    engine = il.Engine(model, tok, block_size=16, num_blocks=64)
    assert engine.block_manager.blocks_needed(100 + 30 - 1) == RIGHT["6.1"][0]
    shared = list(range(300, 350))
    a = engine.add_request(shared + [1, 2, 3], il.SamplingParams(max_tokens=2))
    while engine.has_unfinished_requests():
        engine.step()
    b = engine.add_request(shared + [4, 5, 6, 7], il.SamplingParams(max_tokens=2))
    engine.step()
    assert engine.requests[b].metrics.num_prefix_cached_tokens == RIGHT["6.3"][0]
    assert a != b
