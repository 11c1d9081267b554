"""Notebook 06's widget callback, plots and exercises: called with values, right answers pass, wrong ones don't."""
import pytest

import inferlab as il
from inferlab import exercises as ex
from inferlab.engine.baselines import mixed_workload, static_batching
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


RIGHT = {"6.1": 9, "6.2": 149, "6.3": 48, "6.4": il.SamplingParams(temperature=0.0, max_tokens=20, stop="\n\n")}
WRONG = {"6.1": [8, 129, 130, 9.5, "9"], "6.2": [37, 5, 9, 133, 150],
         "6.3": [50, 3, 64, 0],
         "6.4": [il.SamplingParams(max_tokens=20), il.SamplingParams(max_tokens=16, stop="\n\n"),
                 il.SamplingParams(temperature=0.7, max_tokens=20, stop="\n\n"), {"max_tokens": 20}]}


@pytest.mark.parametrize("key", sorted(RIGHT))
def test_exercise_checks_accept_right_and_reject_wrong(key, capsys):
    assert ex.verdict(key, RIGHT[key])[0] is True
    for wrong in WRONG[key]:
        assert ex.verdict(key, wrong)[0] is False
    assert ex.verdict(key, None)[0] is False        # not answered yet: a verdict, never an exception
    ex.solution(key)
    assert "answer" in capsys.readouterr().out


def test_exercise_answers_agree_with_the_engine(draft):
    """6.1 and 6.3 asked about the engine's arithmetic: the engine itself agrees."""
    model, tok = draft
    engine = il.Engine(model, tok, block_size=16, num_blocks=64)
    assert engine.block_manager.blocks_needed(100 + 30 - 1) == RIGHT["6.1"]
    shared = list(range(300, 350))
    a = engine.add_request(shared + [1, 2, 3], il.SamplingParams(max_tokens=2))
    while engine.has_unfinished_requests():
        engine.step()
    b = engine.add_request(shared + [4, 5, 6, 7], il.SamplingParams(max_tokens=2))
    engine.step()
    assert engine.requests[b].metrics.num_prefix_cached_tokens == RIGHT["6.3"]
    assert a != b
