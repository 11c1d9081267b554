"""Serving a stream of requests and measuring it, outside the engine (notebook 06, benchmarks/engine.py).

* ``chat_workload``: prompts cut from the bundled corpus, 16-256 tokens, and long-tailed output lengths
  (lognormal, median 64, 4-256 tokens, as chat traffic is: most answers short, a few very long; ShareGPT's
  answers average 338 tokens, https://arxiv.org/abs/2309.06180 table 1), seeded.
* ``poisson_arrivals``: arrival times of requests at a mean rate, the way serving papers load a system.
* ``serve``: feed an engine its requests at their arrival times and step it until all are done. The
  clock is wall time, but idle gaps while waiting for the next arrival are skipped instead of slept.
* ``serving_stats``: throughput, TTFT percentiles, TPOT, normalised latency and KV-memory waste, the
  measures of the vLLM paper (https://arxiv.org/abs/2309.06180).
* ``snapshot``: the KV pool's blocks and block tables now, for pictures.
* ``rate_sweep`` / ``sustained_rate``: the same requests at rising arrival rates, every way in turn; the highest
  rate whose p99 time to first token stays within a limit (the vLLM paper's figure 12 method).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..validate import positive_int, positive_number
from .outputs import RequestOutput
from .request import SamplingParams


@lru_cache(maxsize=4)
def _corpus_ids(tok, chars: int = 60000) -> tuple:
    from ..core.corpus import load_corpus
    return tuple(tok.encode(load_corpus()[:chars]))


def chat_workload(tok, num_requests: int = 64, prompt_len=(16, 256), median_output: int = 64,
                  output_len=(4, 256), sigma: float = 1.0, shared_prefix_frac: float = 0.0, seed: int = 0):
    """(prompts as token-id lists, one greedy ``SamplingParams`` per prompt). Prompt lengths are uniform in
    ``prompt_len``; output lengths lognormal with median ``median_output`` and shape ``sigma``, clipped to
    ``output_len``. ``shared_prefix_frac``: that share of every prompt is the same opening (a system prompt)."""
    rng = random.Random(seed)
    ids = _corpus_ids(tok)
    prefix = list(ids[:prompt_len[1]])
    prompts, params = [], []
    for _ in range(num_requests):
        n = rng.randint(*prompt_len)
        shared = int(round(n * shared_prefix_frac))
        start = rng.randrange(prompt_len[1], len(ids) - n)
        prompts.append(prefix[:shared] + list(ids[start:start + n - shared]))
        out = round(math.exp(rng.gauss(math.log(median_output), sigma)))
        params.append(SamplingParams(max_tokens=min(max(out, output_len[0]), output_len[1])))
    return prompts, params


def poisson_arrivals(num_requests: int, rate: float, seed: int = 0) -> list[float]:
    """Arrival times (s) of a Poisson process with ``rate`` requests per second; the first arrives at 0."""
    positive_int("num_requests", num_requests)
    positive_number("rate", rate)
    rng, t, times = random.Random(seed), 0.0, []
    for _ in range(num_requests):
        times.append(t)
        t += rng.expovariate(rate)
    return times


class SimulatedClock:
    """Seconds since creation, plus the idle gaps skipped with ``skip_to`` instead of slept."""

    def __init__(self):
        self._t0, self._skipped = time.perf_counter(), 0.0

    def __call__(self) -> float:
        return time.perf_counter() - self._t0 + self._skipped

    def skip_to(self, t: float) -> None:
        self._skipped += max(0.0, t - self())


@dataclass
class Served:
    """One serving run: outputs in prompt order, its wall time, and ``memory``: per step (or batch),
    ``(seconds, KV slots reserved, KV slots holding a token)`` out of ``budget_slots``."""
    outputs: list
    wall_s: float
    budget_slots: int
    memory: list = field(default_factory=list)
    steps: list = field(default_factory=list)   # per step: dict of what ran (only with record=True)
    num_preemptions: int = 0
    prefix_hit_rate: float = 0.0


def kv_slots(engine) -> tuple[int, int]:
    """(slots in blocks in use, distinct tokens stored in them): a shared block counts once."""
    blocks, computed, held = set(), 0, 0
    for req in engine.scheduler.running:
        blocks.update(req.block_table)
        computed += req.num_computed_tokens
        held += len(req.block_table)
    # only full blocks are shared, so each extra table holding one counted block_size tokens twice
    used_blocks = engine.num_blocks - engine.block_manager.num_free
    return used_blocks * engine.block_size, computed - engine.block_size * (held - len(blocks))


def per_prompt(prompts, sampling_params, arrival_times) -> tuple[list, list]:
    """(one SamplingParams per prompt, one arrival time per prompt): ``sampling_params`` may be one for all
    (None: the defaults), ``arrival_times`` None (all at 0); anything else is a clear error."""
    n = len(prompts)
    params = (list(sampling_params) if isinstance(sampling_params, (list, tuple))
              else [sampling_params or SamplingParams()] * n)
    arrivals = [0.0] * n if arrival_times is None else [float(t) for t in arrival_times]
    if not (len(params) == len(arrivals) == n) or any(not math.isfinite(t) or t < 0 for t in arrivals):
        raise ValueError("give one SamplingParams and one finite arrival time >= 0 per prompt")
    return params, arrivals


def serve(engine, prompts, sampling_params, arrival_times=None, record: bool = False) -> Served:
    """Serve ``prompts`` (one ``SamplingParams`` each, or one for all) arriving at ``arrival_times`` (s after
    the start; default all at 0). Each request is added when its time comes, with that arrival time."""
    n = len(prompts)
    params, arrivals = per_prompt(prompts, sampling_params, arrival_times)
    if engine.has_unfinished_requests():
        raise RuntimeError("serve() needs an engine with no unfinished requests")
    clock, saved_clock = SimulatedClock(), engine.clock
    engine.clock = clock
    bm, p0 = engine.block_manager, engine.scheduler.num_preemptions
    q0, h0 = bm.prefix_queried_tokens, bm.prefix_hit_tokens
    order = sorted(range(n), key=arrivals.__getitem__)
    ids, done, nxt = {}, {}, 0
    run = Served([], 0.0, engine.num_blocks * engine.block_size)
    try:
        while nxt < n or engine.has_unfinished_requests():
            while nxt < n and arrivals[order[nxt]] <= clock():
                i = order[nxt]
                ids[engine.add_request(prompts[i], params[i], arrival_time=arrivals[i])] = i
                nxt += 1
            if not engine.has_unfinished_requests():
                clock.skip_to(arrivals[order[nxt]])
                continue
            for out in engine.step():
                if out.finished:
                    done[ids.pop(out.request_id)] = out
            step = engine.last_step
            run.memory.append((step.duration, *kv_slots(engine)))
            if record:
                run.steps.append(step_summary(engine))
    finally:
        engine.clock = saved_clock
    run.outputs, run.wall_s = [done[i] for i in range(n)], clock()
    run.num_preemptions = engine.scheduler.num_preemptions - p0
    queried = bm.prefix_queried_tokens - q0
    run.prefix_hit_rate = (bm.prefix_hit_tokens - h0) / queried if queried else 0.0
    return run


def step_summary(engine) -> dict:
    """The last step, by request id: what each row computed, who was preempted, blocks in use."""
    s = engine.last_step
    return {"start": s.start, "duration": s.duration,
            "rows": [(r.request_id, "decode", n) for r, n in s.decode] +
                    [(r.request_id, "prefill", n) for r, n in s.prefill],
            "preempted": [r.request_id for r in s.preempted],
            "budget": engine.max_num_batched_tokens, "blocks_used": engine.num_blocks - engine.block_manager.num_free,
            "num_blocks": engine.num_blocks}


@dataclass
class ServingStats:
    """The measures of one serving run (per request: TTFT, TPOT, end-to-end; per run: throughput, memory)."""
    num_requests: int
    output_tokens: int
    wall_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_mean_s: float
    normalized_latency_s: float   # mean over requests of end-to-end latency / output tokens (vLLM paper)
    kv_reserved_share: float      # time-averaged share of the KV budget reserved by requests
    kv_waste: float               # time-averaged share of reserved slots that hold no token
    num_preemptions: int = 0
    prefix_hit_rate: float = 0.0

    @property
    def throughput(self) -> float:
        """Generated tokens per second of wall time."""
        return self.output_tokens / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def request_rate(self) -> float:
        return self.num_requests / self.wall_s if self.wall_s > 0 else float("inf")


def serving_stats(run: Served) -> ServingStats:
    outs: list[RequestOutput] = run.outputs
    ttft = np.array([o.metrics.ttft for o in outs])
    seconds = sum(d for d, _, _ in run.memory) or 1.0
    reserved = sum(d * r for d, r, _ in run.memory) / seconds
    used = sum(d * u for d, _, u in run.memory) / seconds
    return ServingStats(
        len(outs), sum(len(o.outputs[0].token_ids) for o in outs), run.wall_s,
        float(np.percentile(ttft, 50)), float(np.percentile(ttft, 99)),
        float(np.mean([o.metrics.tpot for o in outs])),
        float(np.mean([o.metrics.e2e / len(o.outputs[0].token_ids) for o in outs])),
        reserved / run.budget_slots if run.budget_slots else float("nan"), 1 - used / reserved if reserved else 0.0,
        run.num_preemptions, run.prefix_hit_rate)


def snapshot(engine) -> dict:
    """The KV pool now: per physical block its reference count, whether it holds a cached prefix, which
    running requests use it and how many tokens it holds; and every running request's block table."""
    bs, bm = engine.block_size, engine.block_manager
    owners, fill, tables = {b: [] for b in range(engine.num_blocks)}, [0] * engine.num_blocks, {}
    for req in engine.scheduler.running:
        tables[req.request_id] = list(req.block_table)
        for i, b in enumerate(req.block_table):
            owners[b].append(req.request_id)
            fill[b] = max(fill[b], min(bs, req.num_computed_tokens - i * bs))
    blocks = [{"block": b.block_id, "ref_count": b.ref_count, "cached": b.hash is not None,
               "owners": owners[b.block_id], "tokens": fill[b.block_id] if b.ref_count else
               (bs if b.hash is not None else 0)} for b in bm.blocks]
    return {"block_size": bs, "num_blocks": engine.num_blocks, "blocks": blocks, "tables": tables}


def serve_in_turn(ways: dict, rounds: int = 3) -> dict:
    """Run several ways of serving the same workload ``rounds`` times, alternating (each round runs every way
    once, as ``timing.compare`` does), so a machine that slows down for a while slows every way alike.
    ``ways``: label -> function returning a ``Served``. Returns label -> list of ``Served``, in round order."""
    if not isinstance(ways, dict) or not ways or not all(callable(f) for f in ways.values()):
        raise TypeError("ways must be a non-empty dict of label -> function returning a Served")
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    runs = {label: [] for label in ways}
    for _ in range(rounds):
        for label, fn in ways.items():
            runs[label].append(fn())
    return runs


# --- latency against the request rate (notebook 06 and benchmarks/engine.py) ------------------------------

def rate_sweep(ways: dict, rates, num_requests: int, seed: int = 1) -> dict:
    """Serve the same requests arriving as a Poisson process (``poisson_arrivals``) at each rate
    (requests per second), every way in turn at each rate. ``ways``: label -> function(arrival_times) returning a
    ``Served``. Returns ``{"rates": [...], "stats": {label: [ServingStats per rate]}}``."""
    if not isinstance(rates, (list, tuple)) or not rates:
        raise ValueError(f"rates must be a non-empty list of positive numbers, got {rates!r}")
    for i, r in enumerate(rates):
        positive_number(f"rates[{i}]", r)
    if not isinstance(ways, dict) or not ways or not all(callable(f) for f in ways.values()):
        raise TypeError("ways must be a non-empty dict of label -> function(arrival_times) returning a Served")
    rates = sorted(float(r) for r in rates)
    stats = {label: [] for label in ways}
    for rate in rates:
        arrivals = poisson_arrivals(num_requests, rate, seed)
        for label, fn in ways.items():
            stats[label].append(serving_stats(fn(arrivals)))
    return {"rates": rates, "stats": stats}


def sustained_rate(result: dict, label: str, ttft_limit_s: float) -> float:
    """The highest rate of the sweep at which ``label``'s p99 time to first token stayed within the limit
    (0.0 if none did)."""
    return max((r for r, s in zip(result["rates"], result["stats"][label]) if s.ttft_p99_s <= ttft_limit_s),
               default=0.0)
