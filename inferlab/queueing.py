"""Scheduling: requests waiting in line in front of a server (notebook 04).

Even when every part is fast, a request can spend most of its time waiting for the ones before it.
``simulate`` runs a first-come-first-served server over given arrival times: one request at a time
(``max_batch=1``), or several together, as a batching server does (notebook 06 builds a real one).
Service times are given, e.g. measured generation times, so the simulation is exact and repeatable:
the same arrivals and service times give the same latencies on every machine.
"""
from __future__ import annotations

import math
import numbers
import random
from dataclasses import dataclass


def _check_rate(rate):
    if not isinstance(rate, numbers.Real) or isinstance(rate, bool):
        raise TypeError(f"rate must be a number (requests per second), got {type(rate).__name__}")
    if not rate > 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be a positive number of requests per second, got {rate}")


def poisson_arrivals(rate: float, n: int, seed: int = 0) -> list[float]:
    """Arrival times (s) of ``n`` requests arriving at random, ``rate`` per second on average (exponential
    gaps, seeded: the same list everywhere)."""
    _check_rate(rate)
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += -math.log(1.0 - rng.random()) / rate
        out.append(t)
    return out


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
        res = simulate(poisson_arrivals(rate, n_requests, seed), service_time, max_batch)
        lat = sorted(res.latency_s)
        rows.append({"rate": rate, "utilisation": rate * _service(service_time, 1), "mean_s": res.mean_latency_s,
                     "p50_s": res.percentile(50), "p95_s": res.percentile(95), "max_batch": max_batch,
                     "max_s": lat[-1]})
    return rows


def md1_latency(rate: float, service_s: float) -> float:
    """Mean latency of random (Poisson) arrivals at a one-at-a-time server with a fixed service time
    (the M/D/1 queue): service + waiting, where waiting = rho x service / (2 (1 - rho)), rho = rate x service.
    Infinite once rho >= 1: requests arrive faster than they are served and the line grows without end."""
    _check_rate(rate)
    if not isinstance(service_s, numbers.Real) or not service_s > 0:
        raise ValueError(f"service_s must be a positive number of seconds, got {service_s!r}")
    rho = rate * service_s
    if rho >= 1:
        return math.inf
    return service_s + rho * service_s / (2 * (1 - rho))
