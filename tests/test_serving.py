"""Serving a workload and the baselines at equal KV memory (notebook 06, benchmarks/engine.py): the same
tokens every way, arrivals on a clock that skips idle gaps, memory budgets never exceeded, honest statistics."""
import math
import time

import pytest

import inferlab as il
from conftest import random_model
from inferlab.engine.baselines import one_at_a_time, static_batching
from inferlab.engine.paged_cache import KVPool
from inferlab.engine.serving import SimulatedClock, chat_workload, poisson_arrivals, serve, serve_in_turn, serving_stats

TOK = il.BPETokenizer()
CFG = il.ModelConfig(vocab_size=300, d_model=32, n_layer=2, n_head=2, max_seq_len=128)
PER_TOKEN = KVPool.bytes_per_block(CFG, 1)


def workload():
    prompts = [[(7 * i + j) % 256 for j in range(n)] for i, n in enumerate([5, 17, 9, 30, 3, 12])]
    params = [il.SamplingParams(max_tokens=m) for m in (4, 40, 2, 9, 25, 6)]
    return prompts, params


def tokens(run):
    return [o.outputs[0].token_ids for o in run.outputs]


def test_chat_workload_is_seeded_long_tailed_and_shares_a_prefix_when_asked(pretrained):
    model, tok = pretrained
    prompts, params = chat_workload(tok, 200, prompt_len=(16, 256), median_output=32, output_len=(4, 240), seed=3)
    assert (prompts, params) == chat_workload(tok, 200, prompt_len=(16, 256), median_output=32, output_len=(4, 240), seed=3)
    assert all(16 <= len(p) <= 256 for p in prompts)
    outs = sorted(p.max_tokens for p in params)
    assert 4 <= outs[0] and outs[-1] <= 240 and 20 <= outs[100] <= 50   # median near 32
    assert outs[-10] > 3 * outs[100]                                     # a long tail: the top 5% far above it
    shared, _ = chat_workload(tok, 20, shared_prefix_frac=0.8, seed=1)
    longest = max(shared, key=len)
    for p in shared:   # each opens with 80% of its own length of one common text
        k = int(round(len(p) * 0.8))
        assert p[:k] == longest[:k]


def test_poisson_arrivals_start_at_zero_and_have_the_mean_gap_of_the_rate():
    times = poisson_arrivals(4000, rate=5.0, seed=0)
    assert times[0] == 0 and all(a < b for a, b in zip(times, times[1:]))
    assert times[-1] / (len(times) - 1) == pytest.approx(1 / 5.0, rel=0.08)
    for bad in (0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="rate"):
            poisson_arrivals(3, bad)


def test_the_simulated_clock_skips_idle_gaps_and_never_goes_back():
    clock = SimulatedClock()
    clock.skip_to(100.0)
    assert 100.0 <= clock() < 100.5
    clock.skip_to(50.0)
    assert clock() >= 100.0


def test_serve_gives_the_engines_tokens_in_prompt_order_with_arrivals_on_the_clock():
    model = random_model(CFG, 1)
    prompts, params = workload()
    arrivals = [0.0, 0.0, 30.0, 30.0, 60.0, 0.5]
    t0 = time.perf_counter()
    run = serve(il.Engine(model, TOK, block_size=4, num_blocks=64), prompts, params, arrivals, record=True)
    assert time.perf_counter() - t0 < 30       # the idle gaps were skipped, not slept
    assert tokens(run) == [il.generate(model, TOK, p, max_new_tokens=sp.max_tokens).tokens for p, sp in zip(prompts, params)]
    for o, t in zip(run.outputs, arrivals):
        m = o.metrics
        assert m.arrival_time == t and t <= m.first_scheduled_time <= m.first_token_time <= m.finished_time
    assert run.wall_s >= 60 and run.steps and all(s["blocks_used"] <= 64 for s in run.steps)
    assert all(reserved <= run.budget_slots for _, reserved, _ in run.memory)
    with pytest.raises(ValueError, match="arrival"):
        serve(il.Engine(model, TOK), prompts, params, [0.0] * 5 + [math.inf])


def test_serving_stats_are_the_vllm_papers_measures():
    model = random_model(CFG, 2)
    prompts, params = workload()
    run = serve(il.Engine(model, TOK, block_size=4, num_blocks=64), prompts, params)
    s = serving_stats(run)
    assert s.num_requests == 6 and s.output_tokens == sum(sp.max_tokens for sp in params)
    assert s.throughput == pytest.approx(s.output_tokens / run.wall_s)
    e2e_per_token = [o.metrics.e2e / len(o.outputs[0].token_ids) for o in run.outputs]
    assert s.normalized_latency_s == pytest.approx(sum(e2e_per_token) / 6)
    assert s.ttft_p50_s <= s.ttft_p99_s and s.tpot_mean_s > 0
    assert 0 < s.kv_reserved_share <= 1 and 0 <= s.kv_waste < 1


def test_baselines_give_the_same_tokens_and_never_exceed_the_kv_budget():
    model = random_model(CFG, 3)
    prompts, params = workload()
    budget = 100 * PER_TOKEN                   # two of the smaller requests, never the two largest at once
    engine = serve(il.Engine(model, TOK, block_size=4, kv_cache_memory_bytes=budget), prompts, params)
    static = static_batching(model, TOK, prompts, params, kv_cache_memory_bytes=budget)
    one = one_at_a_time(model, TOK, prompts, params, kv_cache_memory_bytes=budget)
    assert tokens(engine) == tokens(static) == tokens(one)
    for run in (engine, static, one):
        assert run.budget_slots == 100 and all(reserved <= 100 for _, reserved, _ in run.memory)
        assert all(o.outputs[0].finish_reason == "length" for o in run.outputs)
    # static batching reserves, per row, the batch's longest prompt + longest output, in arrival order
    # batch 1: (5, 4) alone, since adding (17, 40) would reserve 2 x 57 > 100; then (17, 40) alone;
    # then (9, 2) + (30, 9) = 2 x 39; then (3, 25) + (12, 6) = 2 x 37
    assert [r for _, r, _ in static.memory] == [9, 57, 78, 74]
    waste = serving_stats(static).kv_waste
    assert waste > serving_stats(engine).kv_waste   # reserving for the longest output wastes more than paging


def test_static_batches_take_only_requests_that_have_arrived():
    model = random_model(CFG, 4)
    prompts, params = workload()
    run = static_batching(model, TOK, prompts, params, [0.0, 0.0, 100.0, 100.0, 100.0, 200.0])
    starts = sorted({o.metrics.first_scheduled_time for o in run.outputs})
    assert len(starts) == 3 and starts[1] >= 100.0 and starts[2] >= 200.0
    firsts = [o.metrics.finished_time for o in run.outputs]
    assert firsts[0] == firsts[1] and firsts[2] == firsts[3] == firsts[4]   # a batch hands answers back together


def test_baselines_refuse_what_they_cannot_serve():
    model = random_model(CFG, 5)
    prompts, params = workload()
    with pytest.raises(ValueError, match="budget holds"):
        one_at_a_time(model, TOK, prompts, params, kv_cache_memory_bytes=40 * PER_TOKEN)
    with pytest.raises(ValueError, match="budget holds"):
        static_batching(model, TOK, prompts, params, kv_cache_memory_bytes=40 * PER_TOKEN)
    with pytest.raises(ValueError, match="greedy"):
        static_batching(model, TOK, prompts, il.SamplingParams(temperature=0.7))
    with pytest.raises(ValueError, match="arrival"):
        static_batching(model, TOK, prompts, params, [0.0] * 6 + [1.0])


def test_serve_in_turn_alternates_the_ways():
    calls = []
    runs = serve_in_turn({"a": lambda: calls.append("a") or "A", "b": lambda: calls.append("b") or "B"}, rounds=3)
    assert calls == ["a", "b"] * 3 and runs == {"a": ["A"] * 3, "b": ["B"] * 3}
    with pytest.raises(ValueError, match="rounds"):
        serve_in_turn({"a": lambda: 1}, rounds=0)
    with pytest.raises(TypeError, match="ways"):
        serve_in_turn({})
