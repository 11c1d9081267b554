"""The engine (notebook 06): same greedy tokens as il.generate on every workload, no request lost, the
block manager's books always balance, and bad input is a clear error or a rejection with a reason."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import inferlab as il
from conftest import random_model, small_configs
from inferlab.engine.baselines import one_at_a_time, static_batching
from inferlab.engine.block_manager import BlockManager
from inferlab.engine.paged_cache import KVPool, PagedBatch, index_tensor, slot_of
from inferlab.engine.request import Request, RequestState

TOK = il.BPETokenizer()  # bytes only: vocab 256, fits every small config (vocab 260-400)


def reference(model, prompt, max_tokens):
    return il.generate(model, TOK, prompt, max_new_tokens=max_tokens).tokens


def drive(engine, arrivals, check=True):
    """Add each (step, prompt, params) when its step comes, step until done; check the books every step.
    Returns the request ids in the order of ``arrivals``."""
    ids, step = [None] * len(arrivals), 0
    pending = sorted(range(len(arrivals)), key=lambda i: arrivals[i][0])
    while pending or engine.has_unfinished_requests():
        while pending and arrivals[pending[0]][0] <= step:
            i = pending.pop(0)
            ids[i] = engine.add_request(arrivals[i][1], arrivals[i][2])
        engine.step()
        step += 1
        if check:
            engine.block_manager.check_invariants(engine.scheduler.running)
            assert engine._tokens_stored() == tokens_stored_block_by_block(engine)
        assert step < 5000, "the engine stopped making progress"
    return ids


def tokens_stored_block_by_block(engine):
    """What the step trace's ``tokens_stored`` must be: per distinct block, the most tokens any holder has in it."""
    fill, bs = {}, engine.block_size
    for req in engine.scheduler.running:
        for i, b in enumerate(req.block_table):
            fill[b] = max(fill.get(b, 0), min(bs, req.num_computed - i * bs))
    return sum(fill.values())


def assert_all_blocks_free(engine):
    bm = engine.block_manager
    bm.check_invariants([])
    assert all(b.ref_count == 0 for b in bm.blocks) and bm.num_free == bm.num_blocks


workloads = st.lists(st.tuples(st.integers(0, 6), st.integers(1, 24), st.integers(1, 12)), min_size=1, max_size=5)


# --- the central test: the engine changes no greedy token ------------------------------------------------

@settings(max_examples=25)
@given(config=small_configs(), seed=st.integers(0, 10**6), work=workloads, block_size=st.sampled_from([1, 2, 4, 8]),
       budget=st.integers(1, 40), seats=st.integers(1, 4), tight=st.booleans(), prefix=st.booleans())
def test_engine_greedy_equals_generate_with_arrivals_between_steps(config, seed, work, block_size, budget, seats,
                                                                   tight, prefix):
    model = random_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    arrivals = [(step, torch.randint(0, 256, (n,), generator=g).tolist(), il.SamplingParams(max_tokens=m))
                for step, n, m in work]
    # tight: the pool holds just the largest request, so requests queue for blocks or get preempted
    need = max(-(-(len(p) + sp.max_tokens - 1) // block_size) for _, p, sp in arrivals)
    engine = il.Engine(model, TOK, block_size=block_size, num_blocks=need if tight else need * len(arrivals),
                       max_num_seqs=seats, max_num_batched_tokens=budget, enable_prefix_caching=prefix)
    ids = drive(engine, arrivals)
    for rid, (_, prompt, params) in zip(ids, arrivals):
        out = engine.output(rid)
        assert out.finish_reason == "length"
        assert out.tokens == reference(model, prompt, params.max_tokens)
    assert_all_blocks_free(engine)
    for rec in engine.trace:  # the step trace respects the budget and the seats
        assert rec.tokens <= budget and len(rec.entries) <= seats


@settings(max_examples=10)
@given(config=small_configs(), seed=st.integers(0, 10**6), block_size=st.sampled_from([2, 4]))
def test_preemption_happens_when_blocks_run_out_and_changes_no_token(config, seed, block_size):
    model = random_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 256, (int(n),), generator=g).tolist() for n in torch.randint(4, 12, (4,), generator=g)]
    params = il.SamplingParams(max_tokens=16)
    need = max(-(-(len(p) + 15) // block_size) for p in prompts)
    engine = il.Engine(model, TOK, block_size=block_size, num_blocks=need + 2, max_num_seqs=4,
                       max_num_batched_tokens=64)
    outs = engine.generate(prompts, params)
    assert engine.last_stats.num_preemptions > 0, "the pool was meant to be too small for all four at once"
    assert any(rec.preempted for rec in engine.trace)
    assert sum(o.metrics.num_preemptions for o in outs) == engine.last_stats.num_preemptions
    for p, o in zip(prompts, outs):
        assert o.tokens == reference(model, p, 16)
    assert_all_blocks_free(engine)


@settings(max_examples=10)
@given(config=small_configs(), seed=st.integers(0, 10**6), block_size=st.sampled_from([2, 4, 8]),
       budget=st.sampled_from([8, 64]), staggered=st.booleans())
def test_prefix_caching_changes_no_token_and_hits_when_prefixes_are_shared(config, seed, block_size, budget, staggered):
    model = random_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(0, 256, (20,), generator=g).tolist()
    prompts = [prefix + torch.randint(0, 256, (int(n),), generator=g).tolist() for n in (1, 3, 5, 7)] + [prefix]
    params = il.SamplingParams(max_tokens=6)
    arrivals = [(2 * i if staggered else 0, p, params) for i, p in enumerate(prompts)]
    runs = {}
    for on in (True, False):
        engine = il.Engine(model, TOK, block_size=block_size, num_blocks=64, max_num_seqs=8,
                           max_num_batched_tokens=budget, enable_prefix_caching=on)
        ids = drive(engine, arrivals)
        runs[on] = [engine.output(i).tokens for i in ids]
        hits = engine.block_manager.prefix_hits
        assert (hits > 0) if on else (hits == 0)
        assert_all_blocks_free(engine)
    assert runs[True] == runs[False] == [reference(model, p, 6) for p in prompts]


def test_prefix_blocks_are_shared_and_reference_counted():
    model = random_model(il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=2, max_seq_len=64))
    engine = il.Engine(model, TOK, block_size=4, num_blocks=32)
    prefix = list(range(40, 52))                       # 3 full blocks
    a = engine.add_request(prefix + [1, 2], il.SamplingParams(max_tokens=8))
    engine.step()                                      # a's prefill: its 3 prefix blocks are now cached
    b = engine.add_request(prefix + [3], il.SamplingParams(max_tokens=8))
    engine.step()
    ta, tb = engine.requests[a].block_table, engine.requests[b].block_table
    assert ta[:3] == tb[:3] and set(ta[3:]).isdisjoint(tb[3:])
    assert [engine.block_manager.blocks[i].ref_count for i in ta[:3]] == [2, 2, 2]
    assert engine.requests[b].metrics.num_prefix_cached_tokens == 12
    snap = engine.snapshot()
    assert [blk["ref_count"] for blk in snap["blocks"] if len(blk["owners"]) == 2] == [2, 2, 2]
    while engine.has_unfinished_requests():
        engine.step()
    assert_all_blocks_free(engine)
    # freed, but still cached: a third request with the prefix reuses them without computing
    c = engine.add_request(prefix + [4], il.SamplingParams(max_tokens=2))
    engine.step()
    assert engine.requests[c].block_table[:3] == ta[:3]


# --- the block manager on its own ------------------------------------------------------------------------

def _req(tokens, rid=0):
    return Request(rid, tokens, tokens, il.SamplingParams(max_tokens=4), TOK)


def test_block_manager_allocates_frees_and_evicts_cached_blocks_last_freed_last():
    bm = BlockManager(num_blocks=4, block_size=2)
    r = _req([1, 2, 3, 4, 5])
    assert bm.can_allocate(r, 5)
    bm.allocate(r, 5)
    assert len(r.block_table) == 3 and bm.num_free == 1
    r.num_computed = 5
    bm.register_full_blocks(r, 5)
    assert len(bm.hash_to_block) == 2                  # two full blocks; the half-full third is not cached
    assert not bm.can_allocate(_req([9] * 6, 1), 6)    # 3 blocks wanted, 1 free
    bm.free(r)
    bm.check_invariants([])
    assert bm.lookup([1, 2, 3, 4, 5]) == r.block_table[:2] if r.block_table else True
    hits = bm.lookup([1, 2, 3, 4, 9])
    assert len(hits) == 2
    assert bm.lookup([1, 2, 3, 4]) == hits[:1]         # one token is always left to compute
    assert bm.lookup([7, 2, 3, 4, 9]) == []            # the chain: block 2 matches only after block 1
    other = _req([8] * 8, 2)
    bm.allocate(other, 8)                              # needs every block: evicts the cached prefix
    assert bm.hash_to_block == {} and bm.lookup([1, 2, 3, 4, 9]) == []
    bm.check_invariants([other])


def test_invariant_check_catches_broken_books():
    bm = BlockManager(num_blocks=3, block_size=2)
    r = _req([1, 2, 3])
    bm.allocate(r, 3)
    bm.blocks[r.block_table[0]].ref_count += 1
    with pytest.raises(AssertionError):
        bm.check_invariants([r])


@given(rows_in=st.lists(st.tuples(st.integers(2, 300), st.integers(0, 200)), min_size=1, max_size=8))
def test_prefill_passes_keep_order_and_are_the_cheapest_split(rows_in):
    import itertools
    from types import SimpleNamespace
    from inferlab.engine.runner import ModelRunner
    runner = ModelRunner(None, None)
    rows = [SimpleNamespace(num_new=n, request=SimpleNamespace(num_computed=c)) for n, c in rows_in]

    def cost(passes):   # the cost model, written out: fixed cost + rows x longest x (1 + widest / A)
        return sum(runner.prefill_pass_cost_tokens + len(p) * max(r.num_new for r in p) *
                   (1 + max(r.num_new + r.request.num_computed for r in p) / runner.attention_context_tokens)
                   for p in passes)

    passes = runner.prefill_passes(rows)
    assert [r for p in passes for r in p] == rows   # every row once, in the given order
    cheapest = min(cost([rows[a:b] for a, b in zip((0,) + cuts, cuts + (len(rows),))])
                   for k in range(len(rows)) for cuts in itertools.combinations(range(1, len(rows)), k))
    assert cost(passes) == pytest.approx(cheapest)
    if len(set(rows_in)) == 1:
        assert len(passes) == 1   # rows alike need no padding: one pass


def test_prefill_order_sorts_by_length_but_keeps_readers_after_writers():
    from types import SimpleNamespace
    from inferlab.engine.runner import ModelRunner
    runner = ModelRunner(None, SimpleNamespace(block_size=4))

    def row(name, table, computed, new):
        request = SimpleNamespace(block_table=table, num_computed=computed)
        return SimpleNamespace(name=name, num_new=new, request=request)

    owner = row("owner", [1, 2, 3], 0, 12)          # computes blocks 1-3 this step
    reader = row("reader", [1, 2, 4], 8, 3)         # found blocks 1-2 in the prefix cache: written by owner now
    chained = row("chained", [1, 2, 4, 5], 11, 2)   # reads block 4, which reader writes this step
    loner = row("loner", [6, 7], 0, 5)
    short = row("short", [8], 0, 2)
    got = [r.name for r in runner.prefill_order([owner, reader, chained, loner, short])]
    assert got == ["short", "loner", "owner", "reader", "chained"]
    # with no reader, plain sort by new tokens, ties kept in schedule order
    same = [row(str(i), [10 + i], 0, n) for i, n in enumerate([9, 3, 9, 2])]
    assert [r.name for r in runner.prefill_order(same)] == ["3", "1", "0", "2"]


def test_slot_mapping_and_paged_attention_equal_contiguous_attention():
    cfg = il.ModelConfig(vocab_size=300, d_model=32, n_layer=2, n_head=4, n_kv_head=2, max_seq_len=64, arch="llama")
    model = random_model(cfg, 3)
    assert slot_of([7, 2, 9], 37, 16) == 9 * 16 + 5
    pool = KVPool(cfg, num_blocks=10, block_size=4)
    x = torch.randint(0, 300, (1, 11))
    tables = [[5, 0, 8]]
    with torch.no_grad():
        full = model(x)
        first = PagedBatch(pool, tables, [0], [7])
        a = model(x[:, :7], positions=first.positions, cache=first, pad_mask=first.pad_mask)
        second = PagedBatch(pool, tables, [7], [4])
        b = model(x[:, 7:], positions=second.positions, cache=second, pad_mask=second.pad_mask)
    torch.testing.assert_close(torch.cat([a, b], 1), full, atol=1e-4, rtol=1e-4)
    assert pool.k[:, [1, 2, 3, 4, 6, 7, 9]].abs().sum() == 0   # only blocks 5, 0, 8 were written


# --- requests are never lost; bad input is clear ----------------------------------------------------------

def test_no_request_is_lost_each_finishes_or_is_rejected_with_a_reason():
    model = random_model(il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=2, max_seq_len=64))
    engine = il.Engine(model, TOK, block_size=4, num_blocks=6, max_num_seqs=2, max_num_batched_tokens=8)
    prompts = [[1] * 5, [2] * 30, [3] * 3, [4] * 20, [5] * 2]
    params = [il.SamplingParams(max_tokens=m) for m in (4, 4, 20, 1, 3)]
    outs = engine.generate(prompts, params)
    assert [o.finish_reason for o in outs] == ["length", "rejected", "length", "length", "length"]
    assert "needs 9 KV blocks" in outs[1].error and "only 6" in outs[1].error
    assert [len(o.tokens) for o in outs] == [4, 0, 20, 1, 3]
    assert all(r.state is RequestState.FINISHED for r in engine.requests.values())
    assert engine.last_stats.num_rejected == 1
    assert_all_blocks_free(engine)


@pytest.mark.parametrize("kwargs, error", [
    (dict(max_tokens=0), ValueError), (dict(max_tokens=2.5), TypeError), (dict(temperature=-1.0), ValueError),
    (dict(top_p=0.0), ValueError), (dict(top_p=1.5), ValueError), (dict(top_k=0), ValueError),
    (dict(seed="7"), TypeError), (dict(stop=""), ValueError), (dict(stop=[3]), ValueError)])
def test_bad_sampling_params_are_clear_errors(kwargs, error):
    with pytest.raises(error, match="|".join(kwargs)):
        il.SamplingParams(**kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(block_size=0), ValueError, "block_size"), (dict(num_blocks=0), ValueError, "num_blocks"),
    (dict(max_num_seqs=0), ValueError, "max_num_seqs"), (dict(max_num_batched_tokens=0), ValueError, "max_num"),
    (dict(kv_cache_memory_bytes=100), ValueError, "smaller than one KV block"),
    (dict(num_blocks=4, kv_cache_memory_bytes=10**6), ValueError, "not both"),
    (dict(block_size="16"), TypeError, "block_size")])
def test_bad_engine_arguments_are_clear_errors(kwargs, error, match):
    model = random_model(il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=2, max_seq_len=64))
    with pytest.raises(error, match=match):
        il.Engine(model, TOK, **kwargs)


def test_bad_requests_are_clear_errors_and_nothing_is_queued():
    model = random_model(il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=2, max_seq_len=64))
    engine = il.Engine(model, TOK, num_blocks=8)
    sp = il.SamplingParams(max_tokens=4)
    with pytest.raises(ValueError, match="max_seq_len"):
        engine.generate([[1] * 64], sp)                          # longer than the context
    with pytest.raises(ValueError, match="exceeds the model's context"):
        engine.generate([[1] * 60], il.SamplingParams(max_tokens=8))
    with pytest.raises(ValueError, match="empty"):
        engine.generate(["ok", ""], sp)
    with pytest.raises(ValueError, match="non-empty list"):
        engine.generate([], sp)
    with pytest.raises(TypeError, match="SamplingParams"):
        engine.generate(["ok"], {"max_tokens": 4})
    with pytest.raises(ValueError, match="one per prompt"):
        engine.generate(["a", "b"], [sp])
    with pytest.raises(ValueError, match="arrival_times"):
        engine.generate(["a", "b"], sp, arrival_times=[0.0, -1.0])
    with pytest.raises(ValueError, match="empty"):
        engine.stream(["ok", ""], sp)                            # checked before anything runs
    with pytest.raises(TypeError, match="prompt"):
        engine.add_request(42, sp)
    with pytest.raises(ValueError, match="vocab_size"):
        engine.add_request([299, 300], sp)
    with pytest.raises(TypeError, match="il.GPT"):
        il.Engine("model", TOK)
    assert not engine.has_unfinished_requests() and engine.requests == {}


def test_kv_pool_is_sized_from_a_memory_budget():
    model = random_model(il.ModelConfig(vocab_size=300, d_model=32, n_layer=2, n_head=4, n_kv_head=2, max_seq_len=64))
    per_block = 2 * 2 * 16 * 16 * 4          # K and V x layers x tokens x kv_dim x float32
    engine = il.Engine(model, TOK, block_size=16, kv_cache_memory_bytes=10 * per_block + 5)
    assert engine.num_blocks == 10 and engine.pool.bytes_allocated == 10 * per_block


# --- streaming, sampling, stop strings, baselines ---------------------------------------------------------

def test_streaming_gives_every_token_once_in_order(pretrained):
    model, tok = pretrained
    prompts = ["The list", "A dictionary is", "import"]
    engine = il.Engine(model, tok, max_num_seqs=2)
    events = list(engine.stream(prompts, il.SamplingParams(max_tokens=10)))
    outs = il.Engine(model, tok, max_num_seqs=2).generate(prompts, il.SamplingParams(max_tokens=10))
    by_req = {}
    for e in events:
        by_req.setdefault(e.request_id, []).append(e)
    assert len(by_req) == 3
    for evs, out in zip(by_req.values(), outs):
        assert [e.token_id for e in evs] == out.tokens
        assert "".join(e.text for e in evs) == out.text
        assert [e.finished for e in evs] == [False] * 9 + [True]


def test_stop_strings_and_seeded_sampling_match_generate(pretrained):
    model, tok = pretrained
    prompt = "The return value of a function is"
    engine = il.Engine(model, tok)
    out = engine.generate([prompt], il.SamplingParams(max_tokens=40, stop="."))[0]
    ref = il.generate(model, tok, prompt, max_new_tokens=40, stop=".")
    assert (out.text, out.finish_reason) == (ref.text, ref.finish_reason) == (ref.text, "stop")
    sp = il.SamplingParams(temperature=0.8, top_k=50, max_tokens=12, seed=7)
    a, b = engine.generate([prompt, prompt], sp)
    assert a.tokens == b.tokens                               # each request draws from its own seeded generator
    assert a.tokens == il.generate(model, tok, prompt, max_new_tokens=12, temperature=0.8, top_k=50, seed=7).tokens


def test_metrics_and_baselines(pretrained):
    model, tok = pretrained
    prompts = ["The list", "A dictionary is a mapping", "import os"]
    params = [il.SamplingParams(max_tokens=m) for m in (3, 9, 5)]
    engine = il.Engine(model, tok)
    outs = engine.generate(prompts, params, arrival_times=[0.0, 0.0, 0.05])
    one, one_stats = one_at_a_time(model, tok, prompts, params)
    static, static_stats = static_batching(model, tok, prompts, params, batch_size=2)
    for e, o, s in zip(outs, one, static):
        assert e.tokens == o.tokens == s.tokens
        for m in (e.metrics, o.metrics, s.metrics):
            assert m.arrival <= m.first_scheduled <= m.first_token <= m.finished
            assert m.ttft_s > 0 and m.e2e_s >= m.ttft_s and m.itl_s >= 0 and len(m.token_times) == len(e.tokens)
    assert outs[2].metrics.arrival >= 0.05 - 1e-9                # arrived late, on the engine clock
    stats = engine.last_stats
    assert stats.generated_tokens == one_stats.generated_tokens == static_stats.generated_tokens == 17
    assert stats.throughput > 0 and 0 < stats.block_utilisation <= 1 and 0 < stats.slot_utilisation <= 1
    kinds = [k for rec in engine.trace for _, k, _ in rec.entries]
    assert kinds.count("prefill") >= 3 and kinds.count("decode") == 17 - 3
    assert "tokens/s" in str(stats)


def test_blocks_are_gathered_into_one_reused_buffer():
    """A fresh multi-megabyte tensor per layer and step costs thousands of page faults; the pool reuses one."""
    config = il.ModelConfig(vocab_size=300, d_model=32, n_layer=2, n_head=2, max_seq_len=64)
    pool = KVPool(config, num_blocks=8, block_size=4)
    first = pool.gather_buffer("k", 6)
    assert pool.gather_buffer("k", 4).data_ptr() == first.data_ptr() and pool.gather_buffer("k", 4).shape[0] == 4
    assert pool.gather_buffer("v", 6).data_ptr() != first.data_ptr()   # keys and values need one each
    assert pool.gather_buffer("k", 12).shape == (12, 4, config.head_dim)  # grows when a larger batch needs it


@given(rows=st.lists(st.lists(st.integers(0, 2**40), min_size=3, max_size=3), min_size=1, max_size=6))
def test_index_tensor_equals_torch_tensor(rows):
    for value in (rows, rows[0]):
        got = index_tensor(value)
        assert got.dtype == torch.int64 and torch.equal(got, torch.tensor(value, dtype=torch.int64))


# --- measuring the engine (notebook 06) -------------------------------------------------------------------

def test_serve_alternating_runs_the_ways_in_turn_and_keeps_the_median_run():
    from types import SimpleNamespace
    from inferlab.engine.baselines import serve_alternating
    calls, walls = [], {"a": iter([3.0, 1.0, 2.0]), "b": iter([5.0, 6.0, 4.0])}

    def way(label):
        def serve():
            calls.append(label)
            return [label], SimpleNamespace(wall_s=next(walls[label]))
        return serve

    served = serve_alternating({"a": way("a"), "b": way("b")}, rounds=3)
    assert calls == ["a", "b"] * 3                          # alternating, round after round
    typical = served.typical
    assert typical["a"][1].wall_s == 2.0 and typical["b"][1].wall_s == 5.0   # the median run of each
    assert served.timings["a"].repeats == served.timings["b"].repeats == 3
    ratio = served.ratio("b", "a")                          # paired by round: 5/3, 6/1, 4/2
    assert ratio.median == pytest.approx(2.0) and ratio.low == pytest.approx(5 / 3) and ratio.high == 6.0
    assert ratio.clear
    assert served.ratio("a", "a").median == 1.0 and not served.ratio("a", "a").clear
    with pytest.raises(ValueError, match="no runs labelled"):
        served.ratio("a", "c")
    with pytest.raises(ValueError, match="rounds"):
        serve_alternating({"a": way("a")}, rounds=0)
    with pytest.raises(TypeError, match="ways"):
        serve_alternating({})


def test_decode_step_pair_runs_the_same_step_through_both_caches():
    from inferlab.engine.baselines import decode_step_pair
    cfg = il.ModelConfig(vocab_size=300, d_model=32, n_layer=2, n_head=4, n_kv_head=2, max_seq_len=64, arch="llama")
    model = random_model(cfg, 1)
    fns = decode_step_pair(model, [5, 17, 30], block_size=4)
    assert set(fns) == {"paged cache", "contiguous cache"}
    paged, contiguous = fns["paged cache"](), fns["contiguous cache"]()
    assert paged.shape[0] == contiguous.shape[0] == 3 and paged.shape[-1] == contiguous.shape[-1] == 300
    for bad in ([], [0, 4], [64], "16"):
        with pytest.raises(ValueError, match="contexts"):
            decode_step_pair(model, bad)
    with pytest.raises(ValueError, match="block_size"):
        decode_step_pair(model, [4], block_size=0)
