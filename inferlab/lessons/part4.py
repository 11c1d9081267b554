"""Lesson 4's helpers: reading a measured batch sweep, and requests waiting in line (notebook 04 and 04b).

* ``batch_regimes`` reads the regimes off a measured decode batch sweep (where extra sequences stop being
  nearly free, where the step grows in proportion to the batch), with no model of the machine.
* Scheduling: ``simulate`` runs a first-come-first-served server over given arrival times
  (``engine.serving.poisson_arrivals``), one request or one batch at a time; ``latency_sweep`` against the request rate;
  ``md1_latency`` is the textbook M/D/1 queue it is checked against.

Service times are given, e.g. measured generation times, so the simulation is exact and repeatable: the same
arrivals and service times give the same latencies on every machine.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..engine.serving import poisson_arrivals
from ..validate import positive_int, positive_number


@dataclass
class BatchRegimes:
    """What a measured decode batch sweep shows (``batch_regimes``), read from the points themselves.

    ``near_free_until``: the largest batch up to which every step took at most ``1 + slack`` times the first
    batch's step, so throughput grew nearly in proportion to the batch (memory-bound: the weights are read
    once whatever the batch). ``compute_bound_from``: the batch from which every further step of the sweep
    grew the step time nearly in proportion to the batch (each doubling at least ``2 ** slope`` times
    longer), so throughput levelled off; ``None`` when the sweep's last step did not, i.e. the sweep did not
    reach that regime."""
    batch_sizes: list
    step_s: list
    near_free_until: int
    compute_bound_from: int | None
    slack: float
    slope: float

    @property
    def tokens_per_s(self) -> list:
        return [b / t for b, t in zip(self.batch_sizes, self.step_s)]

    @property
    def doubling_factors(self) -> list:
        """For each step of the sweep: how many times longer the step took per doubling of the batch
        (1 = free, 2 = in proportion to the batch)."""
        b, t = self.batch_sizes, self.step_s
        return [(t[i + 1] / t[i]) ** (1 / math.log2(b[i + 1] / b[i])) for i in range(len(b) - 1)]

    def sentences(self, predicted: int | None = None, ridge: float | None = None) -> list:
        """What the sweep shows, in words that hold whatever the numbers (notebook 04 prints them): where
        extra sequences stopped being nearly free, where the step grew in proportion (or that the sweep did
        not get there), and how that compares with the roofline's ``predicted`` critical batch."""
        b, tps, factors = self.batch_sizes, self.tokens_per_s, self.doubling_factors
        free, grows = self.near_free_until, self.compute_bound_from
        out = []
        if free == b[0]:
            out.append(f"Already batch {b[1]} took more than {1 + self.slack:.2f}x the batch-{b[0]} step: extra "
                       "sequences were not nearly free even in small numbers.")
        else:
            i = b.index(free)
            out.append(f"Up to batch {free} a step took at most {1 + self.slack:.2f}x as long as at batch {b[0]}: "
                       f"batch {free} gave {tps[i] / tps[0]:.1f}x the tokens/s of batch {b[0]}, nearly in proportion "
                       "(memory-bound: the weights are read once per step, however many sequences share them).")
        if grows is None:
            out.append(f"The step time never grew in proportion to the batch: the last doubling ({b[-2]} -> {b[-1]}) "
                       f"made it {factors[-1]:.2f}x as long as before (2x = in proportion), so this sweep did not "
                       "reach the compute-bound regime.")
        else:
            j = b.index(grows)
            span = (f"doubling the batch to {b[-1]} made the step {factors[j]:.2f}x longer" if j == len(factors) - 1
                    else f"each doubling made the step {min(factors[j:]):.2f}x-{max(factors[j:]):.2f}x longer")
            out.append(f"From batch {grows} on, {span} (2x = in proportion to the batch): compute-bound; tokens/s "
                       f"grew at most {2 / min(factors[j:]):.2f}x per doubling there, levelling off at "
                       f"{tps[-1]:,.0f}.")
        if predicted is not None:
            where = f" (where the step's intensity reaches the ridge, {ridge:.1f} FLOP/B)" if ridge else ""
            if free < predicted / 2:
                out.append(f"The roofline predicts the change at batch {predicted}{where}; the measured step left "
                           "its plateau earlier. The prediction assumes every matmul runs at the square matmul's "
                           "peak and streams its weights at the best DRAM speed; matmuls of a few rows usually run "
                           "slower than that, so real steps grow before the ridge.")
            else:
                out.append(f"The roofline predicts the change at batch {predicted}{where}.")
        return out


def batch_regimes(batch_sizes, step_seconds, slack: float = 0.25, slope: float = 0.7) -> BatchRegimes:
    """Read the regimes off a measured decode batch sweep (notebook 04), with no model of the machine:
    see ``BatchRegimes``. Batch sizes must grow; times are seconds per step."""
    b, t = list(batch_sizes), list(step_seconds)
    if len(b) != len(t) or len(b) < 3:
        raise ValueError("batch_sizes and step_seconds must be lists of the same length, at least 3")
    for x in b:
        positive_int("batch_sizes", x)
    for x in t:
        positive_number("step_seconds", x)
    if any(y <= x for x, y in zip(b, b[1:])):
        raise ValueError("batch_sizes must grow from one measurement to the next")
    positive_number("slack", slack)
    if not 0 < slope <= 1:
        raise ValueError(f"slope must be in (0, 1], got {slope!r}")
    near_free = b[0]
    for x, y in zip(b[1:], t[1:]):
        if y > (1 + slack) * t[0]:
            break
        near_free = x
    result = BatchRegimes(b, t, near_free, None, slack, slope)
    factors = result.doubling_factors
    start = len(factors)
    while start > 0 and factors[start - 1] >= 2 ** slope:
        start -= 1
    result.compute_bound_from = b[start] if start < len(factors) else None
    return result


# --- requests in line in front of a server (notebook 04b) ----------------------------------------

def _service(service_time, batch: int) -> float:
    if callable(service_time):
        s = service_time(batch)
    elif isinstance(service_time, dict):
        if batch not in service_time:  # the next larger measured batch
            larger = [b for b in service_time if b >= batch]
            if not larger:
                raise ValueError(f"service_time has no entry for a batch of {batch}; max is {max(service_time)}")
            batch = min(larger)
        s = service_time[batch]
    else:
        s = service_time
    if not isinstance(s, numbers.Real) or not s > 0:
        raise ValueError(f"service_time must give a positive number of seconds, got {s!r}")
    return float(s)


@dataclass
class QueueResult:
    arrival_s: list
    start_s: list
    finish_s: list
    batches: list        # size of the batch each request was served in

    @property
    def latency_s(self) -> list:
        return [f - a for a, f in zip(self.arrival_s, self.finish_s)]

    @property
    def wait_s(self) -> list:
        return [s - a for a, s in zip(self.arrival_s, self.start_s)]

    def percentile(self, q: float) -> float:
        """q-th percentile of the latency (nearest rank)."""
        xs = sorted(self.latency_s)
        return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]

    @property
    def mean_latency_s(self) -> float:
        return sum(self.latency_s) / len(self.latency_s)

    @property
    def busy_fraction(self) -> float:
        """Share of the time from the first arrival to the last finish that the server was working."""
        busy, last = 0.0, -math.inf
        for s, f in sorted(set(zip(self.start_s, self.finish_s))):
            busy += f - max(s, last) if f > last else 0.0
            last = max(last, f)
        return busy / (max(self.finish_s) - min(self.arrival_s))


def simulate(arrival_s, service_time, max_batch: int = 1) -> QueueResult:
    """First come, first served. When the server is free it takes up to ``max_batch`` waiting requests and
    serves them together for ``service_time`` seconds: a number, a ``{batch: seconds}`` dict (measured) or
    a function of the batch size. ``max_batch=1`` is the one-at-a-time server."""
    arrivals = list(arrival_s)
    if not arrivals:
        raise ValueError("arrival_s must be a non-empty list of arrival times")
    if any(b < a for a, b in zip(arrivals, arrivals[1:])):
        raise ValueError("arrival_s must be sorted (first come, first served)")
    if not isinstance(max_batch, numbers.Integral) or isinstance(max_batch, bool) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
    n = len(arrivals)
    start, finish, batches = [0.0] * n, [0.0] * n, [0] * n
    free_at, i = 0.0, 0
    while i < n:
        t = max(free_at, arrivals[i])
        j = i
        while j < n and j - i < max_batch and arrivals[j] <= t:
            j += 1
        done = t + _service(service_time, j - i)
        for r in range(i, j):
            start[r], finish[r], batches[r] = t, done, j - i
        free_at, i = done, j
    return QueueResult(arrivals, start, finish, batches)


def latency_sweep(rates, service_time, n_requests: int = 2000, seed: int = 0, max_batch: int = 1) -> list[dict]:
    """For each arrival rate: utilisation (rate x one-request service time), mean, median and p95 latency."""
    rows = []
    for rate in rates:
        res = simulate(poisson_arrivals(n_requests, rate, seed), service_time, max_batch)
        lat = sorted(res.latency_s)
        rows.append({"rate": rate, "utilisation": rate * _service(service_time, 1), "mean_s": res.mean_latency_s,
                     "p50_s": res.percentile(50), "p95_s": res.percentile(95), "max_batch": max_batch,
                     "max_s": lat[-1]})
    return rows


def md1_latency(rate: float, service_s: float) -> float:
    """Mean latency of random (Poisson) arrivals at a one-at-a-time server with a fixed service time
    (the M/D/1 queue): service + waiting, where waiting = rho x service / (2 (1 - rho)), rho = rate x service.
    Infinite once rho >= 1: requests arrive faster than they are served and the line grows without end."""
    positive_number("rate", rate)
    positive_number("service_s", service_s)
    rho = rate * service_s
    if rho >= 1:
        return math.inf
    return service_s + rho * service_s / (2 * (1 - rho))
