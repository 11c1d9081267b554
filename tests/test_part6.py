"""Notebook 06's widget callback, plots and exercises: called with values, right answers pass, wrong ones don't."""
from types import SimpleNamespace

import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

import inferlab as il
from inferlab import exercises as ex
from inferlab.engine.baselines import mixed_workload, static_batching
from inferlab.engine.metrics import StepRecord
from inferlab.timing import Ratio
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


@pytest.mark.parametrize("key", sorted(RIGHT) + ["6.5"])
def test_solutions_bind_only_their_answer(key):
    namespace = {"il": il, "table": [7, 2, 9], "engine": None,   # names notebooks 06 and 06a have
                 "batching_gain": Ratio(2.4, 2.1, 2.8)}
    assert ex.run_solution(key, namespace) == []


def test_prediction_65_is_judged_against_the_learners_measurement():
    quiet = Ratio(2.4, 2.1, 2.8)
    for right in (2, 3, 4.5, 7):
        assert ex.verdict("6.5", right, quiet)[0] is True, right
    hints = set()
    for wrong in (1, 0.5, 9, 20, 0.7):       # the wrong side of 1, or more than the 8 seats allow
        ok, message = ex.verdict("6.5", wrong, quiet)
        assert ok is False, wrong
        hints.add(message)
    assert len(hints) == 2
    assert ex.verdict("6.5", 8, Ratio(1.5, 1.3, 1.7))[0] is False        # too optimistic for that machine
    assert ex.verdict("6.5", 1.2, Ratio(6.0, 5.5, 6.5))[0] is False      # too pessimistic for a GPU-like gain
    assert ex.verdict("6.5", 6, Ratio(1.1, 0.8, 1.6))[0] is True         # unclear measurement: reasoning accepted
    assert ex.verdict("6.5", 3, Ratio(11.0, 4.0, 12.0))[0] is True       # more than 8 seats can give: disturbed
    assert ex.run_solution("6.5", {"batching_gain": Ratio(11.0, 4.0, 12.0)}) == []
    assert ex.run_solution("6.5", {"batching_gain": Ratio(1.05, 1.01, 1.1)}) == []
    assert ex.verdict("6.5", 3, 2.5)[0] is True                          # a plain number works too
    assert ex.verdict("6.5", 3)[0] is False                              # no measurement: asks for it
    assert ex.verdict("6.5", "three", quiet)[0] is False


def test_kv_memory_widget_follows_block_size_and_answer_length():
    small, large = viz.kv_memory_view(4, 512), viz.kv_memory_view(256, 512)
    assert small.result["mean"]["paging"] > large.result["mean"]["paging"]     # bigger blocks waste more
    assert small.result["mean"]["reserve the context"] == large.result["mean"]["reserve the context"]
    short, long_ = viz.kv_memory_view(16, 64), viz.kv_memory_view(16, 1536)
    assert short.result["mean"]["reserve prompt + max_tokens"] > long_.result["mean"]["reserve prompt + max_tokens"]
    assert "blocks of 256 tokens" in large._suptitle.get_text() and large.dpi == 150
    for bad in ({"block_size": 0}, {"max_tokens": 2000}, {"block_size": 16.0}):
        with pytest.raises(ValueError):
            viz.kv_memory_view(**{"block_size": 16, "max_tokens": 512, **bad})
    for value in viz.BLOCK_SIZES:               # every slider position draws
        viz.kv_memory_view(value, viz.MAX_TOKENS[-1])


def test_widgets_carry_their_picture_and_words():
    for made in (viz.kv_memory_widget(), viz.serving_widget(arrival_rate=100.0, kv_tokens=512, block_size=8)):
        bundle = made._repr_mimebundle_()
        assert bundle["image/png"] and bundle["text/plain"].startswith("Live widget: sliders for")
        assert "children=" not in bundle["text/plain"]


def test_load_sweep_serves_every_rate_and_latency_grows_with_load(draft):
    model, tok = draft
    result = viz.load_sweep([3000, 5], model=model, tok=tok, num_requests=8, rounds=1)
    assert result["rates"] == [5.0, 3000.0] and len(result["stats"]) == len(result["timings"]) == 2
    slow, fast = result["stats"]
    assert slow.num_requests == fast.num_requests == 8
    assert fast.throughput > slow.throughput          # a burst is served faster than arrivals 0.2 s apart
    fig = viz.plot_load_sweep(result)
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    for bad in ([], [0], "10"):
        with pytest.raises(ValueError, match="rates"):
            viz.load_sweep(bad, model=model, tok=tok)


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
