"""What the engine is measured against, with the same model (notebook 06 and benchmarks/engine.py).

* ``one_at_a_time``: each request alone through ``il.generate``, in arrival order.
* ``static_batching``: requests in fixed batches through ``il.generate_batch``; a batch starts when the
  previous one is done and all its members have arrived, runs until its longest member is done, and
  hands its answers back together.
* ``mixed_workload``: a seeded mix of prompt and output lengths cut from the bundled corpus, optionally
  with a shared prefix (a system prompt), the same for every run.
* ``serve_alternating``: serve one workload several ways, round after round (``timing.compare``): each way's
  typical run, the spread of its rounds, and paired ratios between ways.
* ``decode_step_pair``: one decode step through the paged cache and the same step through a contiguous
  ``KVCache``, to time what reading blocks through block tables costs.

Both baselines return ``RequestOutput`` objects with the same per-request metrics as the engine, on a
clock that jumps over idle waits for arrivals, plus ``RunStats``.
"""
from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..generate import generate, generate_batch
from ..timing import Ratio, compare
from .metrics import run_stats
from .paged_cache import KVPool, PagedBatch
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


@dataclass
class ServedRuns:
    """Every run of ``serve_alternating``: ``runs[label]`` is a list of ``(outputs, RunStats)`` in round order,
    ``timings[label]`` the ``timing.Timing`` of their wall times (for ``spread`` and ``busy_note``)."""
    runs: dict
    timings: dict

    @property
    def typical(self) -> dict:
        """Per label, the run whose wall time is the median of its rounds (the lower middle one for an even count)."""
        out = {}
        for label, runs in self.runs.items():
            order = sorted(range(len(runs)), key=lambda i: runs[i][1].wall_s)
            out[label] = runs[order[(len(runs) - 1) // 2]]
        return out

    def ratio(self, slow: str, fast: str, metric=None) -> Ratio:
        """``metric(slow's stats) / metric(fast's stats)`` round by round (default: wall time), as a
        ``timing.Ratio``: the median and the quartiles of the paired ratios."""
        for label in (slow, fast):
            if label not in self.runs:
                raise ValueError(f"no runs labelled {label!r}; labels: {list(self.runs)}")
        metric = metric or (lambda stats: stats.wall_s)
        ratios = [metric(a[1]) / metric(b[1]) for a, b in zip(self.runs[slow], self.runs[fast]) if metric(b[1]) > 0]
        if not ratios:
            raise ValueError("the runs have no paired values to divide")
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        return Ratio(statistics.median(ratios), q[0], q[2])


def serve_alternating(ways: dict, rounds: int = 3) -> ServedRuns:
    """Serve the same workload several ways, ``rounds`` times each, alternating (one round runs every way once,
    as ``timing.compare`` does), so a machine that slows down for a while slows every way alike.

    ``ways``: label -> a function returning ``(outputs, RunStats)``. Returns a ``ServedRuns``: every run, the
    timings of the rounds, the typical (median) run of each way and paired ratios between ways."""
    if not isinstance(ways, dict) or not ways or not all(callable(f) for f in ways.values()):
        raise TypeError("ways must be a non-empty dict of label -> function returning (outputs, RunStats)")
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    runs = {label: [] for label in ways}
    timings = compare({label: (lambda label=label: runs[label].append(ways[label]())) for label in ways},
                      repeats=rounds, warmup=0)
    return ServedRuns(runs, timings)


def decode_step_pair(model, contexts: list[int], block_size: int = 8, seed: int = 0) -> dict:
    """Two functions that each run one decode step of ``len(contexts)`` rows (row b has ``contexts[b]`` tokens
    cached): ``"paged cache"`` through the engine's ``PagedBatch`` (blocks scattered over the pool, block
    tables and slot mapping built for the step, blocks gathered as the engine does), ``"contiguous cache"``
    through notebook 03's ``KVCache``. Both pad every row to the longest context, so they attend over the same
    keys; the difference is what paging costs without a kernel that reads blocks in place. For
    ``timing.compare``."""
    from ..profiling import decode_stepper
    if not isinstance(contexts, (list, tuple)) or not contexts or any(
            not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in contexts):
        raise ValueError(f"contexts must be a non-empty list of ints >= 1 (tokens cached per row), got {contexts!r}")
    if max(contexts) + 1 > model.config.max_seq_len:
        raise ValueError(f"contexts must leave room for one new token within max_seq_len={model.config.max_seq_len}")
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
    B = len(contexts)
    blocks = [-(-(c + 1) // block_size) for c in contexts]   # room for each context and its new token
    pool = KVPool(model.config, sum(blocks) + 1, block_size, model.dtype, model.device)
    g = torch.Generator().manual_seed(seed)
    pool.k.copy_(torch.randn(pool.k.shape, generator=g))   # real values: untouched zero pages time differently
    pool.v.copy_(torch.randn(pool.v.shape, generator=g))
    order = (torch.randperm(pool.num_blocks - 1, generator=g) + 1).tolist()   # scattered, as in a busy pool
    tables, taken = [], 0
    for n in blocks:
        tables.append(order[taken:taken + n])
        taken += n
    x = torch.zeros(B, 1, dtype=torch.long, device=model.device)

    def paged():
        with torch.inference_mode():
            cache = PagedBatch(pool, tables, list(contexts), [1] * B)
            return model(x, positions=cache.positions, cache=cache, pad_mask=cache.pad_mask, last_only=True)

    contiguous = decode_stepper(model, B, max(contexts) + 1, seed=seed)
    return {"paged cache": paged, "contiguous cache": contiguous}
