"""One decode step, timed again and again at the same position (notebooks 04-05 and the benchmarks).

``filled_cache`` writes stand-in keys and values through the cache's own calls; ``decode_stepper`` prepares
one and returns a function that runs one step and rewinds the cache through
its public ``truncate``; ``time_decode_step`` times it and counts its FLOPs and bytes; ``time_decode_batches``
times several batch sizes in alternating rounds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.kvcache import KVCache
from ..core.model import GPT
from ..validate import positive_int
from .counting import StepCount
from .roofline import decode_count
from .timing import Timing, compare, from_samples, measure


@dataclass
class DecodeMeasurement:
    batch_size: int
    n_context: int
    count: StepCount
    timing: Timing

    @property
    def tokens_per_s(self) -> float:
        return self.batch_size / self.timing.median_s

    @property
    def bytes_per_s(self) -> float:
        return self.count.bytes / self.timing.median_s

    @property
    def flops_per_s(self) -> float:
        return self.count.flops / self.timing.median_s


def filled_cache(model, batch_size: int, length: int, capacity: int | None = None) -> KVCache:
    """A ``KVCache`` holding ``length`` tokens for each of ``batch_size`` sequences, written through the
    cache's own calls with stand-in keys and values (a prefill of that many tokens would take far longer;
    a step reads the same bytes whatever their values)."""
    positive_int("batch_size", batch_size)
    positive_int("length", length)
    cfg = model.config
    capacity = length + 1 if capacity is None else capacity
    if not length < capacity <= cfg.max_seq_len:
        raise ValueError(f"length must be below capacity and capacity at most max_seq_len={cfg.max_seq_len}, "
                         f"got length {length}, capacity {capacity}")
    cache = KVCache(cfg, batch_size, capacity, dtype=model.dtype, device=model.device)
    cache.reserve(length, None)
    block = torch.full((batch_size, cfg.n_kv_head, length, cfg.head_dim), 0.01, dtype=model.dtype,
                       device=model.device)  # written, so every page is real memory
    for layer in range(cfg.n_layer):
        cache.update(layer, block, block)
    cache.commit(length)
    return cache



def decode_stepper(model: GPT, batch_size: int = 1, n_context: int = 16, seed: int = 0):
    """A function that runs one decode step of ``batch_size`` sequences with ``n_context - 1`` tokens
    already cached (``filled_cache``), again and again at the same position: the cache is rewound with its
    own ``truncate`` before each step. Each row's new token is its own (random, seeded)."""
    positive_int("batch_size", batch_size)
    positive_int("n_context", n_context)
    if n_context > model.config.max_seq_len:
        raise ValueError(f"n_context must be <= max_seq_len={model.config.max_seq_len}, got {n_context}")
    g = torch.Generator().manual_seed(seed)
    new = torch.randint(0, model.config.vocab_size, (batch_size, 1), generator=g).to(model.device)
    if n_context > 1:
        cache = filled_cache(model, batch_size, n_context - 1, capacity=n_context)
    else:
        cache = KVCache(model.config, batch_size, 1, dtype=model.dtype, device=model.device)
    filled = cache.length

    def step():
        cache.truncate(filled)   # rewind, so every timed step sees the same context
        with torch.inference_mode():
            return model(new, cache=cache)

    step.cache = cache   # for a look inside (tests, notebook 04)
    return step


def time_decode_step(model: GPT, batch_size: int = 1, n_context: int = 16, warmup: int = 1, repeats: int = 5,
                     min_time_s: float = 0.0) -> DecodeMeasurement:
    """Measure one decode step (``decode_stepper``) and count its FLOPs and bytes."""
    step = decode_stepper(model, batch_size, n_context)
    t = measure(step, warmup, repeats, device=model.device, min_time_s=min_time_s)
    return DecodeMeasurement(batch_size, n_context, decode_count(model.config, batch_size, n_context, model.dtype), t)


def time_decode_batches(model: GPT, batch_sizes, n_context: int = 16, repeats: int = 3, warmup: int = 1,
                        progress=None) -> list[DecodeMeasurement]:
    """One decode step at each batch size, timed in alternating rounds (batch 1, 2, 4, ..., then again), so
    a machine that slows down half-way slows every batch alike (notebook 04's batch sweep). ``progress``:
    a wrapper such as ``inferlab.progress.progress``, shown over the rounds."""
    sizes = list(batch_sizes)
    if not sizes:
        raise ValueError("batch_sizes must be a non-empty list of batch sizes")
    for b in sizes:
        positive_int("batch_sizes", b)
    positive_int("repeats", repeats)
    steppers = {b: decode_stepper(model, b, n_context) for b in sizes}
    samples = {b: [] for b in sizes}
    rounds = range(repeats)
    for i in (progress(rounds, desc="rounds over all batch sizes", unit="round") if progress else rounds):
        for b, t in compare(steppers, repeats=1, warmup=warmup if i == 0 else 0, device=model.device).items():
            samples[b] += t.samples_s
    return [DecodeMeasurement(b, n_context, decode_count(model.config, b, n_context, model.dtype),
                              from_samples(samples[b])) for b in sizes]
