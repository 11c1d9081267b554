"""What the engine is measured against, with the same model (notebook 06 and benchmarks/engine.py).

* ``one_at_a_time``: each request alone through ``il.generate``, in arrival order.
* ``static_batching``: requests in fixed batches through ``il.generate_batch``; a batch starts when the
  previous one is done and all its members have arrived, runs until its longest member is done, and
  hands its answers back together.
* ``mixed_workload``: a seeded mix of prompt and output lengths cut from the bundled corpus, optionally
  with a shared prefix (a system prompt), the same for every run.

Both baselines return ``RequestOutput`` objects with the same per-request metrics as the engine, on a
clock that jumps over idle waits for arrivals, plus ``RunStats``.
"""
from __future__ import annotations

import random
import time
from functools import lru_cache

from ..generate import generate, generate_batch
from .metrics import run_stats
from .request import RequestMetrics, RequestOutput, SamplingParams


@lru_cache(maxsize=4)
def _corpus_ids(tok, chars: int = 60000) -> tuple:
    from ..corpus import load_corpus
    return tuple(tok.encode(load_corpus()[:chars]))


def mixed_workload(tok, num_requests: int = 64, prompt_len=(16, 256), output_len=(16, 128), seed: int = 0,
                   shared_prefix_frac: float = 0.0):
    """(prompts as token-id lists, one ``SamplingParams`` per prompt): lengths drawn uniformly in the ranges.
    ``shared_prefix_frac``: that fraction of every prompt is the same opening text (a shared system prompt)."""
    rng = random.Random(seed)
    ids = _corpus_ids(tok)
    prefix = list(ids[:prompt_len[1]])
    prompts, params = [], []
    for _ in range(num_requests):
        n = rng.randint(*prompt_len)
        shared = int(round(n * shared_prefix_frac))
        start = rng.randrange(prompt_len[1], len(ids) - n)
        prompts.append(prefix[:shared] + list(ids[start:start + n - shared]))
        params.append(SamplingParams(max_tokens=rng.randint(*output_len)))
    return prompts, params


def _as_lists(prompts, params, arrival_times):
    params = list(params) if isinstance(params, (list, tuple)) else [params or SamplingParams()] * len(prompts)
    arrival_times = list(arrival_times) if arrival_times is not None else [0.0] * len(prompts)
    if not (len(prompts) == len(params) == len(arrival_times)):
        raise ValueError("give one SamplingParams and one arrival time per prompt")
    return params, arrival_times


def one_at_a_time(model, tok, prompts, params=None, arrival_times=None):
    """Serve requests one after the other with ``il.generate``. Returns (outputs in prompt order, RunStats)."""
    params, arrival_times = _as_lists(prompts, params, arrival_times)
    outputs = [None] * len(prompts)
    clock = 0.0
    for i in sorted(range(len(prompts)), key=lambda i: arrival_times[i]):
        p = params[i]
        start = max(clock, arrival_times[i])
        res = generate(model, tok, prompts[i], max_new_tokens=p.max_tokens, temperature=p.temperature, top_k=p.top_k,
                       top_p=p.top_p, seed=p.seed, stop=list(p.stop) if p.stop else None)
        times, t = [], start
        for dt in res.step_times_s:
            t += dt
            times.append(t)
        clock = start + res.total_s
        m = RequestMetrics(arrival=arrival_times[i], first_scheduled=start, first_token=times[0], finished=clock,
                           token_times=times)
        outputs[i] = RequestOutput(i, prompts[i], res.prompt_tokens, res.text, res.tokens, res.finish_reason, m)
    return outputs, run_stats(outputs, [], clock - min(arrival_times), 0, 0, 0)


def static_batching(model, tok, prompts, params=None, batch_size: int = 16, arrival_times=None):
    """Serve requests in fixed batches of ``batch_size`` (in arrival order) with ``il.generate_batch``.

    Every member of a batch decodes until the longest ``max_tokens`` of the batch, then is cut to its own;
    answers are handed back when the batch ends. Sampling controls come from the first request of each
    batch (``generate_batch`` takes one set). Returns (outputs in prompt order, RunStats)."""
    params, arrival_times = _as_lists(prompts, params, arrival_times)
    order = sorted(range(len(prompts)), key=lambda i: arrival_times[i])
    outputs = [None] * len(prompts)
    clock = 0.0
    for b in range(0, len(order), batch_size):
        batch = order[b:b + batch_size]
        p0 = params[batch[0]]
        longest = max(params[i].max_tokens for i in batch)
        start = max([clock] + [arrival_times[i] for i in batch])
        t0 = time.perf_counter()
        results = generate_batch(model, tok, [prompts[i] for i in batch], max_new_tokens=longest,
                                 temperature=p0.temperature, top_k=p0.top_k, top_p=p0.top_p, seed=p0.seed)
        clock = start + (time.perf_counter() - t0)
        for i, res in zip(batch, results):
            n = params[i].max_tokens
            tokens = res.tokens[:n]
            times = [start + res.ttft_s + k * res.tpot_s for k in range(n)]
            m = RequestMetrics(arrival=arrival_times[i], first_scheduled=start, first_token=times[0], finished=clock,
                               token_times=times)
            outputs[i] = RequestOutput(i, prompts[i], res.prompt_tokens, tok.decode(tokens), tokens, "length", m)
    return outputs, run_stats(outputs, [], clock - min(arrival_times), 0, 0, 0)
