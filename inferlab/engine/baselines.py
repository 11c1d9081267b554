"""What the engine is measured against, same model, same KV-cache memory (notebook 06, benchmarks/engine.py).

The comparison of the vLLM paper (https://arxiv.org/abs/2309.06180, section 6): every system gets the same
bytes for keys and values. A contiguous cache cannot grow in place, so it must reserve, when a request
starts, room for the longest output it may produce; the engine's paged pool takes a block only when a
sequence needs one.

* ``one_at_a_time``: each request alone through ``il.generate``, in arrival order.
* ``static_batching``: requests in batches through ``il.generate_batch`` (one contiguous cache per batch).
  A batch starts when the previous one is done, takes the requests that have arrived, in arrival order,
  while the cache fits: every row reserves the batch's longest prompt plus its longest allowed output.
  It decodes until its longest member is done and hands every answer back together.

Both return a ``serving.Served`` with ``RequestOutput`` objects whose tokens and finish reasons are
decided by the same rules as the engine's (``Request.append_token``), on a clock that skips idle waits.
"""
from __future__ import annotations

import itertools
import math
import time

from ..core.generate import encode_prompt, generate, generate_batch
from .paged_cache import KVPool
from .request import Request, RequestState
from .serving import Served, per_prompt


def _requests(model, tok, prompts, sampling_params, arrival_times):
    params, arrivals = per_prompt(prompts, sampling_params, arrival_times)
    cfg = model.config
    return [Request(i, p, encode_prompt(tok, p, cfg.max_seq_len, cfg.vocab_size), sp, tok, t)
            for i, (p, sp, t) in enumerate(zip(prompts, params, arrivals))]


def _slots(model, kv_cache_memory_bytes):
    """KV token slots that fit in the budget (None: no limit)."""
    if kv_cache_memory_bytes is None:
        return None
    return kv_cache_memory_bytes // KVPool.bytes_per_block(model.config, 1, model.dtype)


def _finish(req, tokens, token_times, end):
    """Feed the tokens a baseline produced through the engine's own rules (stop ids, stop strings, length)."""
    req.state = RequestState.RUNNING
    for token, t in zip(tokens, token_times):
        req.append_token(token, t)
        if req.finish_reason is not None:
            break
    req.state, req.metrics.finished_time = RequestState.FINISHED, end
    return req.output()


def one_at_a_time(model, tok, prompts, sampling_params=None, arrival_times=None, kv_cache_memory_bytes=None) -> Served:
    """Serve requests one after the other with ``il.generate`` (a contiguous cache of prompt + max_tokens)."""
    reqs = _requests(model, tok, prompts, sampling_params, arrival_times)
    budget = _slots(model, kv_cache_memory_bytes)
    outputs, memory, clock = [None] * len(reqs), [], 0.0
    for req in sorted(reqs, key=lambda r: r.metrics.arrival_time):
        p, reserved = req.params, req.num_prompt_tokens + req.params.max_tokens
        if budget is not None and reserved > budget:
            raise ValueError(f"request {req.request_id} needs {reserved} KV slots; the budget holds {budget}")
        start = req.metrics.first_scheduled_time = max(clock, req.metrics.arrival_time)
        res = generate(model, tok, req.token_ids, max_new_tokens=p.max_tokens, temperature=p.temperature,
                       top_k=p.top_k, top_p=p.top_p, seed=p.seed, stop=list(p.stop or ()) or None)
        times = [start + s for s in itertools.accumulate(res.step_times_s)]
        clock = start + res.total_s
        outputs[req.request_id] = out = _finish(req, res.tokens, times, clock)
        used = req.num_prompt_tokens + len(out.outputs[0].token_ids) / 2   # the cache fills as it decodes
        memory.append((res.total_s, reserved, used))
    return Served(outputs, clock - min(r.metrics.arrival_time for r in reqs), budget or 0, memory)


def static_batching(model, tok, prompts, sampling_params=None, arrival_times=None, kv_cache_memory_bytes=None,
                    max_batch_size: int | None = None) -> Served:
    """Serve requests in batches through ``il.generate_batch``, each batch in one contiguous cache that fits
    ``kv_cache_memory_bytes`` (asserted). Greedy requests only: a batch shares one set of sampling controls."""
    reqs = _requests(model, tok, prompts, sampling_params, arrival_times)
    if any(r.params.temperature != 0 for r in reqs):
        raise ValueError("static_batching serves greedy requests only (temperature=0): a batch shares one sampler")
    budget = _slots(model, kv_cache_memory_bytes)
    queue = sorted(reqs, key=lambda r: r.metrics.arrival_time)
    outputs, memory, clock = [None] * len(reqs), [], 0.0
    while queue:
        start = max(clock, queue[0].metrics.arrival_time)
        batch = [queue.pop(0)]
        while queue and queue[0].metrics.arrival_time <= start and (max_batch_size is None or len(batch) < max_batch_size):
            if budget is not None and _reserved(batch + queue[:1]) > budget:
                break
            batch.append(queue.pop(0))
        reserved = _reserved(batch)
        if budget is not None and reserved > budget:
            raise ValueError(f"request {batch[0].request_id} alone needs {reserved} KV slots; the budget holds {budget}")
        longest = max(r.params.max_tokens for r in batch)
        t0 = time.perf_counter()
        results = generate_batch(model, tok, [r.token_ids for r in batch], max_new_tokens=longest)
        clock = start + (time.perf_counter() - t0)
        assert reserved * KVPool.bytes_per_block(model.config, 1, model.dtype) <= (kv_cache_memory_bytes or math.inf)
        for req, res in zip(batch, results):
            req.metrics.first_scheduled_time = start
            times = [start + res.ttft_s + k * res.tpot_s for k in range(longest)]
            outputs[req.request_id] = _finish(req, res.tokens, times, clock)
        width = max(r.num_prompt_tokens for r in batch)
        lengths = [len(outputs[r.request_id].outputs[0].token_ids) for r in batch]
        used = sum(r.num_prompt_tokens for r in batch) + sum(min(k, n) for k in range(longest) for n in lengths) / longest
        memory.append((clock - start, len(batch) * (width + longest), used))
    return Served(outputs, clock - min(r.metrics.arrival_time for r in reqs), budget or 0, memory)


def _reserved(batch) -> int:
    """KV slots a contiguous batch cache reserves: every row holds the longest prompt plus the longest output."""
    return len(batch) * (max(r.num_prompt_tokens for r in batch) + max(r.params.max_tokens for r in batch))


def decode_step_pair(model, contexts: list[int], block_size: int = 16, seed: int = 0) -> dict:
    """Two functions that each run one decode step of ``len(contexts)`` rows (row b has ``contexts[b]`` tokens
    cached), for ``timing.compare`` (deep dive 06a): ``"paged cache"`` through the engine's ``PagedBatch`` (blocks
    scattered over the pool, gathered through block tables as the engine does) and ``"contiguous cache"``
    through notebook 03's ``KVCache``. Both pad every row to the longest context, so they attend over the same
    keys: the difference is what paging costs without a kernel that reads blocks in place."""
    import torch

    from ..measure.decode_step import decode_stepper
    from .paged_cache import PagedBatch
    if not isinstance(contexts, (list, tuple)) or not contexts or any(
            not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in contexts):
        raise ValueError(f"contexts must be a non-empty list of ints >= 1 (tokens cached per row), got {contexts!r}")
    if max(contexts) + 1 > model.config.max_seq_len:
        raise ValueError(f"contexts must leave room for one new token within max_seq_len={model.config.max_seq_len}")
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
    blocks = [-(-(c + 1) // block_size) for c in contexts]   # room for each context and its new token
    pool = KVPool(model.config, sum(blocks), block_size, model.dtype, model.device)
    g = torch.Generator().manual_seed(seed)
    pool.k.copy_(torch.randn(pool.k.shape, generator=g))   # real values: untouched zero pages time differently
    pool.v.copy_(torch.randn(pool.v.shape, generator=g))
    order = torch.randperm(pool.num_blocks, generator=g).tolist()   # scattered, as in a busy pool
    tables = [order[sum(blocks[:b]):sum(blocks[:b + 1])] for b in range(len(blocks))]
    x = torch.zeros(len(contexts), 1, dtype=torch.long, device=model.device)

    def paged():
        with torch.inference_mode():
            cache = PagedBatch(pool, tables, list(contexts), [1] * len(contexts))
            return model(x, positions=cache.positions, cache=cache, last_only=True)

    return {"paged cache": paged, "contiguous cache": decode_stepper(model, len(contexts), max(contexts) + 1, seed=seed)}
