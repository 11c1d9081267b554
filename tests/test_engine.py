"""The engine (notebook 06): the same greedy tokens as il.generate on every workload, no request lost, the
block manager's books always balance, vLLM's output shapes, and bad input a clear error at the door."""
import gc
import tracemalloc

import pytest
import torch
from hypothesis import given, settings, strategies as st

import inferlab as il
from conftest import DEVICES, random_model, small_configs
from inferlab.engine import block_manager as bm_module
from inferlab.engine.block_manager import BlockManager
from inferlab.engine.paged_cache import KVPool, PagedBatch, index_tensor, slot_of
from inferlab.engine.request import Request
from inferlab.engine.serving import kv_slots

TOK = il.BPETokenizer()  # bytes only: vocab 256, fits every small config (vocab 260-400)
TINY = il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=2, max_seq_len=64)


def reference(model, prompt, max_tokens):
    return il.generate(model, TOK, prompt, max_new_tokens=max_tokens).tokens


def drive(engine, arrivals, check=True):
    """Add each (step, prompt, params) when its step comes, step until done, checking the books every step.
    Returns the outputs in the order of ``arrivals``."""
    ids, done, step = {}, {}, 0
    pending = sorted(range(len(arrivals)), key=lambda i: arrivals[i][0])
    while pending or engine.has_unfinished_requests():
        while pending and arrivals[pending[0]][0] <= step:
            i = pending.pop(0)
            ids[engine.add_request(arrivals[i][1], arrivals[i][2])] = i
        for out in engine.step():
            if out.finished:
                done[ids[out.request_id]] = out
        step += 1
        if check:
            check_invariants(engine.block_manager, engine.scheduler.running)
            assert kv_slots(engine)[1] == tokens_stored_block_by_block(engine)
            rows = engine.last_step.rows
            assert sum(n for _, n in rows) <= engine.max_num_batched_tokens and len(rows) <= engine.max_num_seqs
        assert step < 5000, "the engine stopped making progress"
    return [done[i] for i in range(len(arrivals))]


def check_invariants(bm, requests):
    """The block manager's books: each reference count equals the number of block tables holding the block,
    no table holds a block twice, each table's cached blocks come first (what ``cache_full_blocks`` relies
    on), the free list holds exactly the unused blocks, and the prefix cache maps each hash to its block."""
    counts = [0] * bm.num_blocks
    for req in requests:
        assert len(set(req.block_table)) == len(req.block_table), f"{req} holds a block twice"
        cached = [bm.blocks[b].hash is not None for b in req.block_table]
        assert cached == sorted(cached, reverse=True), f"{req}: cached blocks are not a prefix of its table"
        for b in req.block_table:
            counts[b] += 1
    for block, n in zip(bm.blocks, counts):
        assert block.ref_count == n, f"{block}: ref_count {block.ref_count}, but {n} block tables hold it"
    assert len(set(bm.free_ids)) == len(bm.free_ids), "a block is in the free list twice"
    assert set(bm.free_ids) == {b.block_id for b in bm.blocks if b.ref_count == 0}, "free list is wrong"
    for h, b in bm.hash_to_block.items():
        assert bm.blocks[b].hash == h, f"prefix cache maps a hash to block {b}, which holds something else"


def tokens_stored_block_by_block(engine):
    """Per distinct block, the most tokens any holder has in it."""
    fill, bs = {}, engine.block_size
    for req in engine.scheduler.running:
        for i, b in enumerate(req.block_table):
            fill[b] = max(fill.get(b, 0), min(bs, req.num_computed_tokens - i * bs))
    return sum(fill.values())


def assert_all_blocks_free(engine):
    bm = engine.block_manager
    check_invariants(bm, [])
    assert all(b.ref_count == 0 for b in bm.blocks) and bm.num_free == bm.num_blocks
    assert engine.requests == {} and not engine.scheduler.running and not engine.scheduler.waiting


def tokens(out):
    return out.outputs[0].token_ids


workloads = st.lists(st.tuples(st.integers(0, 6), st.integers(1, 24), st.integers(1, 12)), min_size=1, max_size=5)


# --- the central test: the engine changes no greedy token ------------------------------------------------

@settings(max_examples=25)
@given(config=small_configs(), seed=st.integers(0, 10**6), work=workloads, block_size=st.sampled_from([1, 2, 4, 16]),
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
    for out, (_, prompt, params) in zip(drive(engine, arrivals), arrivals):
        assert out.finished and out.outputs[0].finish_reason == "length"
        assert tokens(out) == reference(model, prompt, params.max_tokens)
    assert_all_blocks_free(engine)


@settings(max_examples=10)
@given(config=small_configs(), seed=st.integers(0, 10**6), block_size=st.sampled_from([2, 4]))
def test_preemption_happens_when_blocks_run_out_and_changes_no_token(config, seed, block_size):
    model = random_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 256, (int(n),), generator=g).tolist() for n in torch.randint(4, 12, (4,), generator=g)]
    need = max(-(-(len(p) + 15) // block_size) for p in prompts)
    engine = il.Engine(model, TOK, block_size=block_size, num_blocks=need + 2, max_num_seqs=4,
                       max_num_batched_tokens=64)
    outs = engine.generate(prompts, il.SamplingParams(max_tokens=16))
    assert engine.scheduler.num_preemptions > 0, "the pool was meant to be too small for all four at once"
    assert sum(o.metrics.num_preemptions for o in outs) == engine.scheduler.num_preemptions
    assert [tokens(o) for o in outs] == [reference(model, p, 16) for p in prompts]
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
        runs[on] = [tokens(o) for o in drive(engine, arrivals)]
        hits = engine.block_manager.prefix_hit_tokens
        assert (hits > 0) if on else (hits == 0)
        assert_all_blocks_free(engine)
    assert runs[True] == runs[False] == [reference(model, p, 6) for p in prompts]


def test_prefix_blocks_are_shared_and_reference_counted():
    from inferlab.engine.serving import snapshot
    engine = il.Engine(random_model(TINY), TOK, block_size=4, num_blocks=32)
    prefix = list(range(40, 52))                       # 3 full blocks
    a = engine.add_request(prefix + [1, 2], il.SamplingParams(max_tokens=8))
    engine.step()                                      # a's prefill: its 3 prefix blocks are now cached
    b = engine.add_request(prefix + [3], il.SamplingParams(max_tokens=8))
    engine.step()
    ta, tb = engine.requests[a].block_table, engine.requests[b].block_table
    assert ta[:3] == tb[:3] and set(ta[3:]).isdisjoint(tb[3:])
    assert [engine.block_manager.blocks[i].ref_count for i in ta[:3]] == [2, 2, 2]
    assert engine.requests[b].num_cached_tokens == 12
    snap = snapshot(engine)
    assert [blk["ref_count"] for blk in snap["blocks"] if len(blk["owners"]) == 2] == [2, 2, 2]
    outs = {}
    while engine.has_unfinished_requests():
        outs.update((o.request_id, o) for o in engine.step() if o.finished)
    assert outs[b].num_cached_tokens == 12 and outs[a].num_cached_tokens == 0
    assert_all_blocks_free(engine)
    # freed, but still cached: a third request with the prefix reuses them without computing
    c = engine.add_request(prefix + [4], il.SamplingParams(max_tokens=2))
    engine.step()
    assert engine.requests[c].block_table[:3] == ta[:3]


def test_a_hash_collision_never_shares_keys_and_values(monkeypatch):
    """Regression (fuzzing found it): a hit used to compare only the block's own tokens, so two prompts whose
    chained hashes collided would share a block computed after a different prefix. Force every hash to collide:
    the prefix check must still refuse every wrong hit, and the answers stay those of il.generate."""
    monkeypatch.setattr(bm_module, "block_hash", lambda token_ids, prev_hash=None: 0)
    model = random_model(TINY, 5)
    shared = [7, 8, 9, 10]                          # the same second block after two different first blocks
    prompts = [[1, 2, 3, 4] + shared + [11], [5, 6, 7, 8] + shared + [12], [1, 2, 3, 4] + shared + [13]]
    engine = il.Engine(model, TOK, block_size=4, num_blocks=32, max_num_seqs=1)
    outs = engine.generate(prompts, il.SamplingParams(max_tokens=5))
    assert [tokens(o) for o in outs] == [reference(model, p, 5) for p in prompts]
    assert outs[1].num_cached_tokens == 0           # its first block differs: no hit at all
    bm = BlockManager(num_blocks=4, block_size=2)
    r = _req([1, 2, 3, 4, 5])
    bm.allocate(r, 5)
    bm.cache_full_blocks(r, 5)
    assert bm.cached_prefix([1, 2, 3, 4, 9]) == r.block_table[:1]   # 0 collides with everything; tokens checked
    assert bm.cached_prefix([9, 9, 3, 4, 9]) == []                    # block 2's tokens match, its prefix does not


# --- the block manager on its own ------------------------------------------------------------------------

def _req(token_ids, rid=0):
    return Request(rid, token_ids, token_ids, il.SamplingParams(max_tokens=4), TOK, 0.0)


def test_block_manager_allocates_frees_and_evicts_cached_blocks_last():
    bm = BlockManager(num_blocks=4, block_size=2)
    r = _req([1, 2, 3, 4, 5])
    assert bm.can_allocate(r, 5)
    assert bm.allocate(r, 5) == 0
    assert len(r.block_table) == 3 and bm.num_free == 1
    bm.cache_full_blocks(r, 5)
    assert len(bm.hash_to_block) == 2                  # two full blocks; the half-full third is not cached
    assert not bm.can_allocate(_req([9] * 6, 1), 6)    # 3 blocks wanted, 1 free
    table = list(r.block_table)
    bm.free(r)
    check_invariants(bm, [])
    hits = bm.cached_prefix([1, 2, 3, 4, 9])
    assert hits == table[:2]
    assert bm.cached_prefix([1, 2, 3, 4]) == hits[:1]  # one token is always left to compute
    assert bm.cached_prefix([7, 2, 3, 4, 9]) == []     # the chain: block 2 matches only after block 1
    s = _req([1, 2, 3, 4, 9], 3)
    assert bm.can_allocate(s, 1, hits) and bm.allocate(s, 1, hits) == 4
    assert s.block_table[:2] == hits and bm.prefix_hit_tokens == 4 and bm.prefix_queried_tokens == 5 + 5
    bm.free(s)
    other = _req([8] * 8, 2)
    bm.allocate(other, 8)                              # needs every block: evicts the cached prefix
    assert bm.hash_to_block == {} and bm.cached_prefix([1, 2, 3, 4, 9]) == []
    check_invariants(bm, [other])


def test_invariant_check_catches_broken_books():
    bm = BlockManager(num_blocks=3, block_size=2)
    r = _req([1, 2, 3])
    bm.allocate(r, 3)
    bm.blocks[r.block_table[0]].ref_count += 1
    with pytest.raises(AssertionError):
        check_invariants(bm, [r])


def test_slot_mapping_and_paged_attention_equal_contiguous_attention():
    cfg = il.ModelConfig(vocab_size=300, d_model=32, n_layer=2, n_head=4, n_kv_head=2, max_seq_len=64, arch="llama")
    model = random_model(cfg, 3)
    assert slot_of([7, 2, 9], 37, 16) == 9 * 16 + 5
    pool = KVPool(cfg, num_blocks=10, block_size=4)
    x = torch.randint(0, 300, (1, 11))
    tables = [[5, 0, 8]]
    with torch.no_grad():
        full = model(x)
        first = PagedBatch(pool, tables, [0], [7], packed=True)
        a = model(x[:, :7], positions=first.positions, cache=first)
        second = PagedBatch(pool, tables, [7], [3], packed=True)
        b = model(x[:, 7:10], positions=second.positions, cache=second)
        third = PagedBatch(pool, tables, [10], [1])                      # a decode step
        c = model(x[:, 10:], positions=third.positions, cache=third)
    torch.testing.assert_close(torch.cat([a, b, c], 1), full, atol=1e-4, rtol=1e-4)
    assert pool.k[:, [1, 2, 3, 4, 6, 7, 9]].abs().sum() == 0   # only blocks 5, 0, 8 were written


def test_blocks_are_gathered_into_one_reused_buffer():
    pool = KVPool(TINY, num_blocks=8, block_size=4)
    first = pool.gather_buffer("k", 6)
    assert pool.gather_buffer("k", 4).data_ptr() == first.data_ptr() and pool.gather_buffer("k", 4).shape[0] == 4
    assert pool.gather_buffer("v", 6).data_ptr() != first.data_ptr()   # keys and values need one each
    assert pool.gather_buffer("k", 12).shape == (12, 4, TINY.head_dim)  # grows when a larger batch needs it


@given(rows=st.lists(st.lists(st.integers(0, 2**40), min_size=3, max_size=3), min_size=1, max_size=6))
def test_index_tensor_equals_torch_tensor(rows):
    for value in (rows, rows[0]):
        got = index_tensor(value)
        assert got.dtype == torch.int64 and torch.equal(got, torch.tensor(value, dtype=torch.int64))


# --- vLLM's shapes; stop strings, stop tokens, sampling -------------------------------------------------

def test_outputs_have_vllms_fields_and_step_streams_every_token_once(pretrained):
    model, tok = pretrained
    engine = il.Engine(model, tok, max_num_seqs=2)
    rid = engine.add_request("The list", il.SamplingParams(max_tokens=10))
    seen = []
    while engine.has_unfinished_requests():
        seen += [o for o in engine.step() if o.request_id == rid]
    out = seen[-1]
    assert isinstance(out, il.RequestOutput) and (out.request_id, out.prompt) == (rid, "The list")
    assert out.prompt_token_ids == tok.encode("The list") and out.finished
    c = out.outputs[0]
    assert isinstance(c, il.CompletionOutput) and c.index == 0 and c.finish_reason == "length" and len(c.token_ids) == 10
    assert [len(o.outputs[0].token_ids) for o in seen] == list(range(1, 11))   # one token per step, none twice
    assert [o.finished for o in seen] == [False] * 9 + [True]
    assert all(seen[-1].outputs[0].text.startswith(o.outputs[0].text) for o in seen)   # text only grows
    ref = il.generate(model, tok, "The list", max_new_tokens=10)
    assert (c.text, c.token_ids) == (ref.text, ref.tokens)
    m = out.metrics
    assert m.arrival_time <= m.first_scheduled_time <= m.first_token_time <= m.last_token_time == m.finished_time
    assert m.ttft > 0 and m.e2e >= m.ttft and m.tpot > 0 and m.num_output_tokens == 10
    assert engine.requests == {}   # a finished request leaves the engine once its output is returned


def test_stop_strings_stop_token_ids_and_seeded_sampling_match_generate(pretrained):
    model, tok = pretrained
    prompt = "The return value of a function is"
    engine = il.Engine(model, tok)
    out = engine.generate([prompt], il.SamplingParams(max_tokens=40, stop="."))[0].outputs[0]
    ref = il.generate(model, tok, prompt, max_new_tokens=40, stop=".")
    assert (out.text, out.finish_reason, out.stop_reason) == (ref.text, ref.finish_reason, ".") and ref.finish_reason == "stop"
    free = il.generate(model, tok, prompt, max_new_tokens=12).tokens
    stop_id = free[5]
    out = engine.generate([prompt], il.SamplingParams(max_tokens=12, stop_token_ids=[stop_id]))[0].outputs[0]
    cut = free[:free.index(stop_id) + 1]
    assert out.token_ids == cut and out.finish_reason == "stop" and out.stop_reason == stop_id
    assert out.text == tok.decode(cut[:-1])              # the stop token is kept in the ids, not shown as text
    sp = il.SamplingParams(temperature=0.8, top_k=50, max_tokens=12, seed=7)
    a, b = engine.generate([prompt, prompt], sp)
    assert tokens(a) == tokens(b)                        # each request draws from its own seeded generator
    assert tokens(a) == il.generate(model, tok, prompt, max_new_tokens=12, temperature=0.8, top_k=50, seed=7).tokens
    assert tokens(a) == tokens(il.Engine(model, tok).generate([prompt], sp)[0])   # and again on a fresh engine


@pytest.mark.parametrize("device", DEVICES)
def test_engine_runs_on_the_models_device_with_seeded_sampling(device):
    model = random_model(TINY, 2).to(device)
    engine = il.Engine(model, TOK, block_size=4, num_blocks=40)
    assert engine.pool.k.device.type == device
    sp = il.SamplingParams(temperature=1.0, max_tokens=8, seed=3)
    a = engine.generate([[5, 6, 7], [9, 10]], sp)
    b = engine.generate([[5, 6, 7], [9, 10]], sp)
    assert [tokens(o) for o in a] == [tokens(o) for o in b]
    assert tokens(a[0]) == il.generate(model, TOK, [5, 6, 7], max_new_tokens=8, temperature=1.0, seed=3).tokens
    greedy = engine.generate([[5, 6, 7]], il.SamplingParams(max_tokens=8))
    assert tokens(greedy[0]) == reference(model, [5, 6, 7], 8)


# --- no request lost; failures end one request, never the others (fuzzing found each) --------------------

def test_a_tiny_temperature_is_greedy_not_an_overflow():
    """Regression: temperature=1e-40 overflowed the logits to inf, sampling raised inside step(), and the
    request stayed 'running' forever. Below 1e-5 a temperature is greedy, as in vLLM."""
    model = random_model(TINY, 4)
    sp = il.SamplingParams(temperature=1e-40, max_tokens=6, seed=1)
    outs = il.Engine(model, TOK, block_size=4, num_blocks=20).generate([[3, 4, 5]], sp)
    assert tokens(outs[0]) == reference(model, [3, 4, 5], 6)
    assert il.generate(model, TOK, [3, 4, 5], max_new_tokens=6, temperature=1e-40).tokens == reference(model, [3, 4, 5], 6)


def test_a_failure_while_picking_a_token_ends_that_request_and_frees_its_blocks(monkeypatch):
    from inferlab.engine import model_runner
    real = model_runner.sample_next

    def flaky(logits, temperature, top_k, top_p, generator):
        if temperature == 0.5:
            raise RuntimeError("probability tensor contains inf")
        return real(logits, temperature, top_k, top_p, generator)

    monkeypatch.setattr(model_runner, "sample_next", flaky)
    model = random_model(TINY, 6)
    engine = il.Engine(model, TOK, block_size=4, num_blocks=20)
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8]]
    params = [il.SamplingParams(max_tokens=5), il.SamplingParams(temperature=0.5, max_tokens=5),
              il.SamplingParams(max_tokens=5)]
    outs = engine.generate(prompts, params)   # returns: no spinning on a request that can never progress
    assert [o.outputs[0].finish_reason for o in outs] == ["length", "abort", "length"]
    assert "inf" in outs[1].error and outs[1].finished
    assert tokens(outs[0]) == reference(model, prompts[0], 5) and tokens(outs[2]) == reference(model, prompts[2], 5)
    assert_all_blocks_free(engine)


def test_a_failed_forward_pass_ends_the_steps_requests_and_forgets_the_prefix_cache(monkeypatch):
    model = random_model(TINY, 6)
    engine = il.Engine(model, TOK, block_size=4, num_blocks=20)
    a = engine.add_request([1, 2, 3, 4, 5, 6, 7, 8, 9], il.SamplingParams(max_tokens=3))
    real, calls = engine.runner.last_logits, []

    def broken_once(rows, packed):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return real(rows, packed)

    monkeypatch.setattr(engine.runner, "last_logits", broken_once)
    outs = engine.step()
    assert [(o.request_id, o.outputs[0].finish_reason) for o in outs] == [(a, "abort")] and "out of memory" in outs[0].error
    assert engine.block_manager.hash_to_block == {}      # blocks registered for that step were never written
    assert_all_blocks_free(engine)
    out = engine.generate([[1, 2, 3, 4, 5, 6, 7, 8, 9]], il.SamplingParams(max_tokens=3))[0]
    assert tokens(out) == reference(model, [1, 2, 3, 4, 5, 6, 7, 8, 9], 3)


def test_abort_request_ends_it_with_its_output(pretrained):
    model = random_model(TINY)
    engine = il.Engine(model, TOK, block_size=4, num_blocks=20)
    a, b = engine.add_request([1, 2], il.SamplingParams(max_tokens=8)), engine.add_request([3], il.SamplingParams(max_tokens=8))
    engine.step()
    aborted = engine.abort_request(a)
    assert aborted.finished and aborted.outputs[0].finish_reason == "abort" and a not in engine.requests
    outs = {o.request_id: o for o in engine.step()}
    assert a not in outs and not outs[b].finished
    while engine.has_unfinished_requests():
        engine.step()
    assert_all_blocks_free(engine)


def test_automatic_request_ids_never_collide_with_the_callers():
    """Regression: add_request(..., request_id=1) then generate() used to fail on an id already in use."""
    engine = il.Engine(random_model(TINY), TOK, block_size=4, num_blocks=40)
    mine = [engine.add_request([1, 2], request_id=i) for i in ("0", "1", "3", 7)]
    auto = [engine.add_request([3]) for _ in range(3)]
    assert len(set(mine + auto)) == 7 and not set(auto) & set(mine)
    with pytest.raises(ValueError, match="already in use"):
        engine.add_request([4], request_id="0")
    with pytest.raises(RuntimeError, match="unfinished"):
        engine.generate([[5]])                           # nothing the caller added by hand is lost
    while engine.has_unfinished_requests():
        engine.step()
    assert len(engine.generate([[5], [6]])) == 2


def test_finished_requests_are_released_so_memory_stays_flat():
    """Regression: every request and step record used to be kept forever (about 3 MiB per 500 requests)."""
    engine = il.Engine(random_model(TINY), TOK, block_size=4, num_blocks=64, max_num_seqs=64)

    def serve(n):   # a long stream: 50 requests arrive, are served, the next 50 arrive, ...
        for start in range(0, n, 50):
            for i in range(start, start + 50):
                engine.add_request([1 + i % 200, 2], il.SamplingParams(max_tokens=2))
            while engine.has_unfinished_requests():
                engine.step()

    serve(200)   # warm-up: buffers and caches reach their size
    gc.collect()
    tracemalloc.start()
    serve(200)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    serve(1000)   # the leak this guards against kept ~6 KB a request: ~6 MB here, 90x the bound
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert engine.requests == {}
    assert grown < 64 * 1024, f"memory grew by {grown} bytes over 1000 requests"


# --- bad input: a clear error at the door, and nothing queued ----------------------------------------------

@pytest.mark.parametrize("kwargs, error", [
    (dict(max_tokens=0), ValueError), (dict(max_tokens=2.5), TypeError), (dict(temperature=-1.0), ValueError),
    (dict(top_p=0.0), ValueError), (dict(top_p=1.5), ValueError), (dict(top_k=0), ValueError),
    (dict(seed="7"), TypeError), (dict(stop=""), ValueError), (dict(stop=[3]), ValueError), (dict(stop=5), TypeError),
    (dict(stop_token_ids=[-1]), ValueError), (dict(stop_token_ids=7), ValueError)])
def test_bad_sampling_params_are_clear_errors(kwargs, error):
    with pytest.raises(error, match="|".join(kwargs)):
        il.SamplingParams(**kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(block_size=0), ValueError, "block_size"), (dict(num_blocks=0), ValueError, "num_blocks"),
    (dict(max_num_seqs=0), ValueError, "max_num_seqs"), (dict(max_num_batched_tokens=0), ValueError, "max_num"),
    (dict(kv_cache_memory_bytes=100), ValueError, "smaller than one KV block"),
    (dict(num_blocks=4, kv_cache_memory_bytes=10**6), ValueError, "not both"),
    (dict(block_size="16"), TypeError, "block_size"), (dict(clock=3), TypeError, "clock")])
def test_bad_engine_arguments_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        il.Engine(random_model(TINY), TOK, **kwargs)


def test_bad_requests_are_clear_errors_and_nothing_is_queued():
    engine = il.Engine(random_model(TINY), TOK, block_size=4, num_blocks=8)
    sp = il.SamplingParams(max_tokens=4)
    cases = [
        (lambda: engine.generate([[1] * 64], sp), ValueError, "max_seq_len"),   # longer than the context
        (lambda: engine.generate([[1] * 60], il.SamplingParams(max_tokens=8)), ValueError, "exceeds the model's context"),
        (lambda: engine.generate([[1] * 30], sp), ValueError, "needs 9 KV blocks"),   # more than the whole pool
        (lambda: engine.generate(["ok", ""], sp), ValueError, "empty"),
        (lambda: engine.generate([], sp), ValueError, "non-empty list"),
        (lambda: engine.generate(["ok"], {"max_tokens": 4}), TypeError, "SamplingParams"),
        (lambda: engine.generate(["a", "b"], [sp]), ValueError, "one per prompt"),
        (lambda: engine.add_request(42, sp), TypeError, "prompt"),
        (lambda: engine.add_request([299, 300], sp), ValueError, "vocab_size"),
        (lambda: engine.add_request([5, -1, 7], sp), ValueError, "vocab_size"),   # regression: negative ids passed
        (lambda: engine.add_request([5], il.SamplingParams(stop_token_ids=[300])), ValueError, "stop_token_ids"),
        (lambda: engine.add_request([5], sp, arrival_time=float("inf")), ValueError, "finite"),   # regression
        (lambda: engine.add_request([5], sp, arrival_time=float("nan")), ValueError, "finite"),
        (lambda: engine.add_request([5], sp, request_id=[1]), TypeError, "request_id"),
        (lambda: engine.add_request([5], sp, request_id=True), TypeError, "request_id"),
        (lambda: il.Engine("model", TOK), TypeError, "il.GPT"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    assert not engine.has_unfinished_requests() and engine.requests == {} and not engine.scheduler.waiting


def test_a_bad_request_never_poisons_the_others():
    """Regression: a prompt with a negative id was accepted, and every later step() raised."""
    model = random_model(TINY, 8)
    engine = il.Engine(model, TOK, block_size=4, num_blocks=20)
    good = engine.add_request([1, 2, 3], il.SamplingParams(max_tokens=4))
    with pytest.raises(ValueError):
        engine.add_request([1, -2, 3], il.SamplingParams(max_tokens=4))
    outs = []
    while engine.has_unfinished_requests():
        outs += engine.step()
    assert outs[-1].request_id == good and tokens(outs[-1]) == reference(model, [1, 2, 3], 4)


def test_kv_pool_is_sized_from_a_memory_budget_and_block_size_defaults_to_vllms():
    model = random_model(il.ModelConfig(vocab_size=300, d_model=32, n_layer=2, n_head=4, n_kv_head=2, max_seq_len=64))
    per_block = 2 * 2 * 16 * 16 * 4          # K and V x layers x tokens x kv_dim x float32
    engine = il.Engine(model, TOK, kv_cache_memory_bytes=10 * per_block + 5)
    assert engine.block_size == 16 and engine.num_blocks == 10 and engine.pool.bytes_allocated == 10 * per_block
