"""Notebook 06's widget callbacks, plots, rate sweep and exercises: called with values, right answers pass,
wrong ones don't."""
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

import inferlab as il
from inferlab import exercises as ex
from inferlab.engine.baselines import decode_step_pair, one_at_a_time, static_batching
from inferlab.engine import serving
from inferlab.engine.serving import chat_workload, serve, serving_stats, snapshot
from inferlab.measure import timing
from inferlab.measure.timing import Ratio
from inferlab.viz import engine as viz


@pytest.fixture(scope="module")
def draft():
    return il.load_pretrained("draft")


def test_serving_widget_shows_the_engine_and_static_batching_at_the_same_memory(draft):
    model, tok = draft
    roomy = viz.engine_view(arrival_rate=20.0, kv_tokens=4096, block_size=16, model=model, tok=tok)
    tight = viz.engine_view(arrival_rate=1e4, kv_tokens=160, block_size=8, model=model, tok=tok)
    for fig in (roomy, tight):
        text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        assert "tokens/s" in text and "TTFT" in text and "preemptions" in text and "refused" in text
        assert fig.dpi == 150
        engine, static = fig.runs["engine"], fig.runs["static batching"]
        assert len(engine.outputs) == len(static.outputs) == 24 - fig.runs["refused"]
        assert [o.outputs[0].token_ids for o in engine.outputs] == [o.outputs[0].token_ids for o in static.outputs]
        assert all(r <= engine.budget_slots for _, r, _ in engine.memory)
        assert all(r <= static.budget_slots for _, r, _ in static.memory)
    assert roomy.runs["refused"] == 0 and serving_stats(roomy.runs["engine"]).num_preemptions == 0
    assert tight.runs["refused"] > 0                          # the longest requests need more than 160 slots
    assert serving_stats(tight.runs["engine"]).num_preemptions > 0   # a burst into 20 blocks of 8 tokens
    with pytest.raises(ValueError, match="kv_tokens"):
        viz.engine_view(10.0, 0, 16, model=model, tok=tok)
    with pytest.raises(ValueError, match="arrival_rate"):
        viz.engine_view(float("inf"), 512, 16, model=model, tok=tok)


def test_request_segments_draw_a_requeued_request_as_waiting():
    """Request 1 prefills in step 0, is preempted in step 1, waits through step 2, recomputes in step 3 and
    decodes in step 4: the steps it sat out are waiting, not prefill."""
    def step(start, rows, preempted=()):
        return {"start": start, "duration": 1.0, "rows": list(rows), "preempted": list(preempted), "budget": 48}
    steps = [step(0.0, [(1, "prefill", 40), (2, "prefill", 8)]), step(1.0, [(2, "prefill", 40)], [1]),
             step(2.0, [(2, "decode", 1)]), step(3.0, [(2, "decode", 1), (1, "prefill", 40)]),
             step(4.0, [(1, "decode", 1)])]

    class M:
        arrival_time = 0.0
    assert viz.request_segments(M, 1, steps) == [(0.0, 1.0, "prefill"), (1.0, 3.0, "waiting"), (3.0, 4.0, "prefill"),
                                                 (4.0, 5.0, "decode")]
    M.arrival_time = 0.5   # arrived during step 0, first ran in step 1
    assert viz.request_segments(M, 2, steps[1:]) == [(0.5, 1.0, "waiting"), (1.0, 2.0, "prefill"), (2.0, 4.0, "decode")]
    assert viz.request_segments(M, 9, steps) == []


def test_time_requeued_before_the_first_token_is_drawn_as_waiting(draft):
    """A chunked prompt preempted before its first token waits in the queue, then recomputes: the widget's rows
    must show that wait in grey, not as one long prefill from first scheduled to first token."""
    model, tok = draft
    prompts, params = chat_workload(tok, 8, prompt_len=(16, 64), median_output=16, output_len=(8, 24), seed=0)
    engine = il.Engine(model, tok, block_size=8, num_blocks=16, max_num_seqs=8, max_num_batched_tokens=32)
    run = serve(engine, prompts, params, record=True)
    by_id = {o.request_id: o for o in run.outputs}
    early = {rid for s in run.steps for rid in s["preempted"] if s["start"] < by_id[rid].metrics.first_token_time}
    assert early, "a small budget (chunked prompts) and a tight pool were meant to preempt before a first token"
    fig = Figure()
    ax = fig.add_subplot()
    viz.draw_requests(ax, run.outputs, run.steps)
    for row, o in enumerate(run.outputs):
        if o.request_id not in early:
            continue
        m = o.metrics
        segments = viz.request_segments(m, o.request_id, run.steps)
        assert segments[0][0] == m.arrival_time and segments[-1][1] == pytest.approx(m.finished_time)
        assert all(b == c for (_, b, _), (c, _, _) in zip(segments, segments[1:]))   # no gaps, no overlaps
        before = [phase for a, b, phase in segments if b <= m.first_token_time + 1e-9]
        assert "waiting" in before[before.index("prefill"):]     # queued again between two prefills
        bars = [p for p in ax.patches if abs(p.get_y() + p.get_height() / 2 - row) < 1e-9]
        grey = [p for p in bars if to_rgb(p.get_facecolor()) == to_rgb(viz.WAIT)]
        assert any(m.first_scheduled_time < p.get_x() < m.first_token_time for p in grey)


def test_step_trace_shows_every_step_and_says_how_many(draft):
    model, tok = draft
    prompts, params = chat_workload(tok, 6, prompt_len=(8, 40), median_output=8, output_len=(4, 12), seed=3)
    run = serve(il.Engine(model, tok, block_size=4, max_num_seqs=4, max_num_batched_tokens=32), prompts, params,
                record=True)
    n = len(run.steps)
    assert f"all {n} steps" in viz.plot_step_trace(run.steps).axes[0].get_title(loc="left")
    assert f"first 5 of the run's {n} steps" in viz.plot_step_trace(run.steps, max_steps=5).axes[0].get_title(loc="left")
    with pytest.raises(ValueError, match="max_steps"):
        viz.plot_step_trace(run.steps, max_steps=0)


def test_plots_draw_from_a_fixed_scenario(draft):
    model, tok = draft
    prompts, params = chat_workload(tok, 6, prompt_len=(8, 40), median_output=8, output_len=(4, 12), seed=3,
                                    shared_prefix_frac=0.5)
    engine = il.Engine(model, tok, block_size=4, num_blocks=48, max_num_seqs=4, max_num_batched_tokens=32)
    for p, sp in zip(prompts, params):
        engine.add_request(p, sp)
    for _ in range(4):
        engine.step()
    snap = snapshot(engine)
    assert len(snap["blocks"]) == 48 and snap["tables"]
    assert any(len(b["owners"]) > 1 and b["ref_count"] == len(b["owners"]) for b in snap["blocks"])
    viz.plot_block_table(snap)
    budget = 512 * 4 * model.config.n_layer * model.config.kv_dim * 2
    runs = {"one at a time": one_at_a_time(model, tok, prompts, params, kv_cache_memory_bytes=budget),
            "static batching": static_batching(model, tok, prompts, params, kv_cache_memory_bytes=budget),
            "engine": serve(il.Engine(model, tok, kv_cache_memory_bytes=budget), prompts, params)}
    assert len(viz.plot_timeline(runs).axes) == 3
    fig = viz.plot_kv_memory(runs)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert all("held no token" in t for t in titles) and fig.dpi == 150


def test_rate_sweep_serves_every_rate_and_finds_the_sustained_rate(draft):
    model, tok = draft
    prompts, params = chat_workload(tok, 8, prompt_len=(16, 64), median_output=16, output_len=(4, 32), seed=1)
    ways = {"engine": lambda t: serve(il.Engine(model, tok), prompts, params, t),
            "static batching": lambda t: static_batching(model, tok, prompts, params, t)}
    result = serving.rate_sweep(ways, [1e4, 1.0], num_requests=8)
    assert result["rates"] == [1.0, 1e4] and all(len(v) == 2 for v in result["stats"].values())
    slow, fast = result["stats"]["engine"]
    assert slow.num_requests == fast.num_requests == 8
    assert fast.throughput > slow.throughput          # a burst is served faster than arrivals a second apart
    assert serving.sustained_rate(result, "engine", ttft_limit_s=1e9) == 1e4
    assert serving.sustained_rate(result, "engine", ttft_limit_s=0.0) == 0.0
    fig = viz.plot_latency_vs_rate(result, ttft_limit_s=1.0)
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    for bad in ([], [0], "10"):
        with pytest.raises(ValueError, match="rates"):
            serving.rate_sweep(ways, bad, num_requests=8)
    with pytest.raises(TypeError, match="ways"):
        serving.rate_sweep({}, [1.0], num_requests=8)


def test_wall_timing_reads_the_spread_of_served_runs(draft):
    model, tok = draft
    prompts, params = chat_workload(tok, 3, prompt_len=(8, 16), median_output=4, output_len=(2, 6), seed=0)
    runs = [serve(il.Engine(model, tok), prompts, params) for _ in range(3)]
    t = viz.wall_timing(runs)
    assert t.repeats == 3 and t.min_s <= t.median_s and t.spread >= 0
    assert isinstance(timing.busy_note(t), str)


def test_decode_step_pair_runs_both_caches_and_checks_its_input(draft):
    model, _ = draft
    fns = decode_step_pair(model, [30, 70, 5], block_size=16)
    assert set(fns) == {"paged cache", "contiguous cache"}
    assert fns["paged cache"]().shape[:2] == (3, 1)
    fns["contiguous cache"]()
    for bad in ([], [0], [model.config.max_seq_len], "12"):
        with pytest.raises(ValueError, match="contexts"):
            decode_step_pair(model, bad)
    with pytest.raises(ValueError, match="block_size"):
        decode_step_pair(model, [4], block_size=0)


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
                 "vs_static": Ratio(1.6, 1.4, 1.8)}
    assert ex.run_solution(key, namespace) == []


def test_prediction_65_is_judged_against_the_learners_measurement():
    quiet = Ratio(1.6, 1.4, 1.8)
    for right in (1.2, 1.5, 2, 4.5):
        assert ex.verdict("6.5", right, quiet)[0] is True, right
    hints = set()
    for wrong in (1, 0.5, 0.9, 5, 20):       # the wrong side of 1, or more than 3x the measurement
        ok, message = ex.verdict("6.5", wrong, quiet)
        assert ok is False, wrong
        hints.add(message)
    assert len(hints) == 2
    assert ex.verdict("6.5", 1.1, Ratio(4.0, 3.5, 4.5))[0] is False      # too pessimistic for a GPU-like gain
    assert ex.verdict("6.5", 1.5, Ratio(1.05, 0.9, 1.2))[0] is True      # unclear measurement: reasoning accepted
    assert ex.verdict("6.5", 1.5, Ratio(4.4, 2.2, 12.6))[0] is True      # rounds that disagree: a busy machine
    assert ex.run_solution("6.5", {"vs_static": Ratio(4.4, 2.2, 12.6)}) == []
    assert ex.verdict("6.5", 0.8, Ratio(0.8, 0.7, 0.9))[0] is True       # clearly slower here, and predicted so
    assert ex.verdict("6.5", 1.5, Ratio(0.8, 0.7, 0.9))[0] is True       # the lesson's reasoning, a contrary machine
    for measured in (quiet, Ratio(0.8, 0.7, 0.9), Ratio(4.0, 3.5, 4.5)):
        assert ex.run_solution("6.5", {"vs_static": measured}) == []
    assert ex.verdict("6.5", 1.5, 1.6)[0] is True                        # a plain number works too
    assert ex.verdict("6.5", 1.5)[0] is False                            # no measurement: asks for it
    assert ex.verdict("6.5", "three", quiet)[0] is False
    for wrong in (0.5, 5):   # a hint never gives the measured ratio's reasoning away as a number to copy
        assert "answer_65" not in ex.verdict("6.5", wrong, quiet)[1]


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


def test_exercise_answers_agree_with_the_engine(draft):
    """6.1 and 6.3 asked about the engine's arithmetic: the engine itself agrees."""
    model, tok = draft
    engine = il.Engine(model, tok, block_size=16, num_blocks=64)
    assert engine.block_manager.blocks_needed(100 + 30 - 1) == RIGHT["6.1"][0]
    shared = list(range(300, 350))
    first, second = engine.generate([shared + [1, 2, 3], shared + [4, 5, 6, 7]], il.SamplingParams(max_tokens=2))
    assert first.num_cached_tokens == 0     # the first one, served alone in the first step, found nothing
    later = engine.generate([shared + [8, 9, 10, 11]], il.SamplingParams(max_tokens=2))[0]
    assert later.num_cached_tokens == RIGHT["6.3"][0]
