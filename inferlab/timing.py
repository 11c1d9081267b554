"""Timing done right (notebooks 02-06 and the benchmarks).

Warm up first (the first calls allocate memory, pick kernels and fill caches), repeat, report the
median and the spread, and say how many threads ran. ``torch.utils.benchmark.Timer`` is a fine
alternative, but note it runs on one thread unless told otherwise.
"""
from __future__ import annotations

import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Timing:
    median_s: float
    min_s: float
    iqr_s: float        # spread: interquartile range of the repeats
    repeats: int
    threads: int
    samples_s: list

    def __str__(self):
        return f"{self.median_s * 1e3:.3f} ms (median of {self.repeats}, IQR {self.iqr_s * 1e3:.3f} ms, {self.threads} threads)"


def synchronize(device=None):
    """Wait for queued GPU work, so the clock measures the work and not just its launch."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def measure(fn, warmup: int = 1, repeats: int = 5, device=None, min_time_s: float = 0.0) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``repeats`` timed ones (more while the
    total is under ``min_time_s``)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    start = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - t0)
    q = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
    return Timing(statistics.median(samples), min(samples), q[2] - q[0], len(samples), torch.get_num_threads(),
                  samples)


@contextmanager
def num_threads(n: int):
    """Run a block with ``n`` torch threads, then restore the previous count (notebook 04 compares them)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def first_calls(fn, calls: int = 5, device=None) -> list:
    """Seconds taken by each of the first ``calls`` calls of ``fn``, none of them warmed up: the first is
    usually the slowest (memory allocated, kernels chosen, caches cold), which is why ``measure`` warms up."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(calls, int) or isinstance(calls, bool) or calls < 1:
        raise ValueError(f"calls must be an int >= 1, got {calls!r}")
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        out.append(time.perf_counter() - t0)
    return out


def cpu_model() -> str:
    """The CPU's name (from /proc/cpuinfo on Linux), for the machine line every benchmark prints."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
