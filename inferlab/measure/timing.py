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

    @property
    def spread(self) -> float:
        """The interquartile range as a share of the median: 0.05 on a quiet machine, 0.3+ on a busy one."""
        return self.iqr_s / self.median_s if self.median_s > 0 else 0.0


def synchronize(device=None):
    """Wait for queued GPU work (CUDA or Apple's MPS), so the clock measures the work and not just its launch."""
    kind = None if device is None else torch.device(device).type
    if torch.cuda.is_available() and kind in (None, "cuda"):
        torch.cuda.synchronize()
    if kind == "mps":
        torch.mps.synchronize()


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
    return from_samples(samples)


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


def cpuinfo(field: str) -> str | None:
    """The first ``field`` of Linux's /proc/cpuinfo ("model name", "flags"), or None elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's name, for the machine line every benchmark prints."""
    return cpuinfo("model name") or platform.processor() or platform.machine()


def print_results(results: dict) -> None:
    """The benchmarks' last lines: the machine, then one ``name: value`` line per measured result."""
    print(f"machine: {cpu_model()}")
    for name, value in results.items():
        print(f"{name}: {value:.3f}")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist)."""
    return set((cpuinfo("flags") or "").split())


def from_samples(samples: list) -> Timing:
    """A ``Timing`` (median, quartile spread) from seconds measured elsewhere, e.g. round by round."""
    q = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) >= 2 else [samples[0]] * 3
    return Timing(statistics.median(samples), min(samples), q[2] - q[0], len(samples), torch.get_num_threads(),
                  list(samples))


def compare(fns: dict, repeats: int = 5, warmup: int = 1, device=None) -> dict:
    """Time several functions in alternation (a, b, a, b, ...): a machine that slows down half-way slows
    every contender alike, which timing one after the other would not. Returns ``{name: Timing}``, with
    the i-th sample of each taken in the same round (so ``paired_ratio`` can pair them)."""
    if not isinstance(fns, dict) or not fns or not all(callable(f) for f in fns.values()):
        raise TypeError("fns must be a non-empty dict of name -> callable")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append(time.perf_counter() - t0)
    return {name: from_samples(s) for name, s in samples.items()}


@dataclass
class Ratio:
    """How many times longer one thing took than another, from paired repeats: the median ratio and
    the middle half of the ratios (the quartiles), so a reader sees how sure the figure is."""
    median: float
    low: float
    high: float

    @property
    def clear(self) -> bool:
        """True when the middle half of the paired ratios lies on one side of 1 (a real difference)."""
        return self.low > 1.0 or self.high < 1.0

    def __str__(self):
        return f"{self.median:.2f}x (middle half of the paired runs: {self.low:.2f}-{self.high:.2f}x)"


def paired_ratio(slow: Timing, fast: Timing) -> Ratio:
    """``slow`` time / ``fast`` time, round by round (use the Timings of one ``compare`` call)."""
    ratios = [a / b for a, b in zip(slow.samples_s, fast.samples_s) if b > 0]
    if not ratios:
        raise ValueError("the timings have no paired samples")
    return ratio_of(ratios)


def ratio_of(ratios: list) -> Ratio:
    """A ``Ratio`` (median and quartiles) from paired ratios computed elsewhere (e.g. served runs)."""
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) >= 2 else [ratios[0]] * 3
    return Ratio(statistics.median(ratios), q[0], q[2])


BUSY_SPREAD = 0.25   # repeats whose middle half spans more than a quarter of the median: too noisy to compare


def busy_note(*timings: Timing, threshold: float = BUSY_SPREAD) -> str:
    """An empty string when every timing's repeats agree; otherwise a sentence a notebook prints
    instead of (or beside) its conclusion, saying this machine was too busy for the comparison."""
    worst = max((t.spread for t in timings), default=0.0)
    if worst <= threshold:
        return ""
    return (f"⚠ This machine looks busy: repeats of the same measurement differed by {worst:.0%} "
            f"(middle half of the repeats, against the median). The comparison above may not hold here; "
            f"close other programs (browser tabs, video calls) and run the cell again.")


@dataclass
class Calibration:
    """A fixed small workload timed twice (``calibrate``): a quiet machine gives the same time both times."""
    first_s: float
    repeat_s: float
    threshold: float = BUSY_SPREAD
    spread: float = 0.0   # the larger relative IQR of the two halves: steady contention shows here

    @property
    def drift(self) -> float:
        return abs(self.first_s - self.repeat_s) / min(self.first_s, self.repeat_s)

    @property
    def busy(self) -> bool:
        return self.drift > self.threshold or self.spread > self.threshold

    def __str__(self):
        verdict = ("the machine looks busy: timings in this lesson may mislead; close other programs"
                   if self.busy else "quiet enough to measure")
        return (f"calibration: {self.first_s * 1e3:.1f} ms, then {self.repeat_s * 1e3:.1f} ms on a repeat "
                f"({self.drift:.0%} apart, repeats within {self.spread:.0%}): {verdict}")


def calibrate(repeats: int = 5) -> Calibration:
    """Time a fixed mix of one matrix product and many small operations, ``repeats`` times, twice
    (median of each half). Each lesson runs it first, so a learner knows whether to trust its timings."""
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    a = torch.randn(384, 384, generator=torch.Generator().manual_seed(0))
    v = torch.randn(64, generator=torch.Generator().manual_seed(1))

    def work():
        a @ a
        for _ in range(200):
            v.mul(1.0001).add_(0.5)

    work()
    first, repeat = measure(work, warmup=0, repeats=repeats), measure(work, warmup=0, repeats=repeats)
    return Calibration(first.median_s, repeat.median_s, spread=max(first.spread, repeat.spread))


IMPOSSIBLE = "PHYSICALLY IMPOSSIBLE"   # no stored notebook may contain this (tests/test_notebook_outputs.py)


def impossible_results(utilisation: dict | None = None, batch_throughput: tuple | None = None) -> list:
    """Results a measurement cannot have, as sentences (empty when all is possible):
    ``utilisation``: name -> achieved share of a roof (above 1.0 is impossible: the roof was not the peak);
    ``batch_throughput``: (batch sizes, throughputs) -- throughput can grow at most in proportion to the
    batch (10% slack for timing noise)."""
    problems = []
    for name, share in (utilisation or {}).items():
        if share > 1.0:
            problems.append(f"{name} is {share:.0%} of its roof, above the most the hardware can do")
    if batch_throughput is not None:
        sizes, rates = batch_throughput
        if len(sizes) != len(rates):
            raise ValueError("batch_throughput needs as many throughputs as batch sizes")
        base_b, base_r = sizes[0], rates[0]
        for b, r in zip(sizes[1:], rates[1:]):
            if base_r > 0 and r / base_r > 1.1 * b / base_b:
                problems.append(f"batch {b} gave {r / base_r:.1f}x the throughput of batch {base_b}, "
                                f"more than the {b / base_b:g}x that {b / base_b:g}x the rows can give")
    return problems


def report_impossible(problems: list) -> str:
    """One message for a notebook to print when ``impossible_results`` found something; '' otherwise."""
    if not problems:
        return ""
    return (f"⚠ {IMPOSSIBLE}: " + "; ".join(problems) + ". The machine was too busy for this measurement "
            "(or the baseline run was disturbed): close other programs and run the cell again before "
            "reading a conclusion from it.")
