"""The roofline: two ceilings, where an operation sits under them, and the published roofs of real chips (notebook 04).

``Roof`` (peak FLOP/s and bandwidth: ``ridge``, ``attainable``, ``step_time``, ``at_least``), ``HARDWARE`` presets
and ``hardware_roof(name, dtype)``; ``mbu`` / ``mfu`` from a measured time; a decode step's counts
(``decode_count``), its predicted time (``predict_decode``) and ``critical_batch``; single operations
(``linear_count``, ``attention_count``) and ``memory_level`` for the hierarchical roofline. The roofs measured
on this machine come from ``machine``.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from ..core.config import ModelConfig
from ..validate import positive_int, positive_number
from .counting import StepCount, attention_matmul_flops, dtype_bytes, matmul_flops, step_count

# --- the roofline ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Roof:
    """Two ceilings: ``peak_flops`` (FLOP/s) and ``bandwidth`` (bytes/s of main memory)."""

    name: str
    peak_flops: float
    bandwidth: float
    note: str = ""

    def __post_init__(self):
        positive_number("peak_flops", self.peak_flops)
        positive_number("bandwidth", self.bandwidth)

    @property
    def ridge(self) -> float:
        """Ridge point (FLOP/byte): below it an operation is memory-bound, above it compute-bound."""
        return self.peak_flops / self.bandwidth

    def attainable(self, intensity: float) -> float:
        """The roofline: min(peak, intensity x bandwidth), in FLOP/s."""
        positive_number("intensity", intensity)
        return min(self.peak_flops, intensity * self.bandwidth)

    def step_time(self, flops: float, nbytes: float) -> float:
        """Shortest time an operation can take: the slower of computing and moving its bytes."""
        return max(flops / self.peak_flops, nbytes / self.bandwidth)

    def regime(self, intensity: float) -> str:
        return "memory-bound" if intensity < self.ridge else "compute-bound"

    def at_least(self, peak_flops: float = 0.0, bandwidth: float = 0.0) -> "Roof":
        """This roof raised to a faster measurement, if one was made: a measured roof is the best
        measurement so far, so nothing measured later may sit above it (notebook 04)."""
        for name, v in (("peak_flops", peak_flops), ("bandwidth", bandwidth)):
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or v < 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        return Roof(self.name, max(self.peak_flops, peak_flops), max(self.bandwidth, bandwidth), self.note)


@dataclass(frozen=True)
class Hardware:
    """Published peak numbers of one chip (dense math, no sparsity)."""

    name: str
    bandwidth: float  # bytes/s
    flops: dict       # dtype name -> FLOP/s
    source: str

    def roof(self, dtype="bfloat16") -> Roof:
        key = _dtype_name(dtype)
        if key not in self.flops:
            raise ValueError(f"{self.name} has no published peak for {key}; known: {', '.join(self.flops)}")
        return Roof(self.name, self.flops[key], self.bandwidth, self.source)


HARDWARE: dict[str, Hardware] = {
    "a100": Hardware("NVIDIA A100 SXM 80GB", 2.039e12,
                     {"float32": 19.5e12, "tf32": 156e12, "bfloat16": 312e12, "float16": 312e12},
                     "NVIDIA A100 datasheet: 2,039 GB/s HBM2e; 19.5 TFLOPS FP32, 312 TFLOPS BF16/FP16 tensor (dense)"),
    "h100": Hardware("NVIDIA H100 SXM", 3.35e12,
                     {"float32": 67e12, "tf32": 494.7e12, "bfloat16": 989.4e12, "float16": 989.4e12},
                     "NVIDIA H100 datasheet: 3.35 TB/s HBM3; 67 TFLOPS FP32, 989 TFLOPS BF16/FP16 tensor (dense)"),
    "h200": Hardware("NVIDIA H200 SXM", 4.8e12,
                     {"float32": 67e12, "tf32": 494.7e12, "bfloat16": 989.4e12, "float16": 989.4e12},
                     "NVIDIA H200 datasheet: 4.8 TB/s HBM3e; the H100's compute (989 TFLOPS BF16 dense)"),
    "laptop-m2": Hardware("Apple M2 laptop (10-core GPU)", 100e9,
                          {"float32": 3.6e12, "bfloat16": 3.6e12, "float16": 3.6e12},
                          "Apple M2 announcement: 100 GB/s unified memory, 3.6 TFLOPS GPU"),
}


def _dtype_name(dtype) -> str:
    if isinstance(dtype, torch.dtype):
        return str(dtype).replace("torch.", "")
    if isinstance(dtype, str):
        return dtype
    raise TypeError(f"dtype must be a torch.dtype or its name, got {type(dtype).__name__}")


def hardware_roof(name: str, dtype="bfloat16") -> Roof:
    """The published roof of a preset, e.g. ``hardware_roof("h100", torch.bfloat16)``."""
    if not isinstance(name, str):
        raise TypeError(f"hardware name must be a str, got {type(name).__name__}")
    key = name.lower()
    if key not in HARDWARE:
        raise ValueError(f"unknown hardware preset {name!r}; known: {', '.join(HARDWARE)}")
    return HARDWARE[key].roof(dtype)


def mbu(nbytes: float, seconds: float, bandwidth: float) -> float:
    """Memory-bandwidth utilisation: bytes the step must move / time, as a fraction of the bandwidth."""
    for name, v in (("nbytes", nbytes), ("seconds", seconds), ("bandwidth", bandwidth)):
        positive_number(name, v)
    return nbytes / seconds / bandwidth


def mfu(flops: float, seconds: float, peak_flops: float) -> float:
    """Model FLOP/s utilisation: FLOPs the step must do / time, as a fraction of the peak."""
    for name, v in (("flops", flops), ("seconds", seconds), ("peak_flops", peak_flops)):
        positive_number(name, v)
    return flops / seconds / peak_flops


def decode_count(config: ModelConfig, batch_size: int, n_context: int, dtype=torch.float32) -> StepCount:
    """FLOPs and bytes of one decode step: ``batch_size`` sequences, one new token each, ``n_context`` tokens
    seen (the new one included)."""
    positive_int("batch_size", batch_size)
    positive_int("n_context", n_context)
    return step_count(config, 1, n_context, batch_size, dtype)


def critical_batch(config: ModelConfig, n_context: int, roof: Roof, dtype=torch.float32, max_batch: int = 1 << 20):
    """Smallest batch whose decode step reaches the ridge point (becomes compute-bound), or None if none
    up to ``max_batch`` does (at long contexts each sequence's KV cache keeps the step memory-bound)."""
    if not isinstance(roof, Roof):
        raise TypeError(f"roof must be a Roof, got {type(roof).__name__}")
    if decode_count(config, max_batch, n_context, dtype).intensity < roof.ridge:
        return None
    lo, hi = 1, max_batch  # intensity grows with the batch: bisect for the first batch at the ridge
    while lo < hi:
        mid = (lo + hi) // 2
        if decode_count(config, mid, n_context, dtype).intensity >= roof.ridge:
            hi = mid
        else:
            lo = mid + 1
    return lo


def predict_decode(config: ModelConfig, batch_size: int, n_context: int, roof: Roof, dtype=torch.float32) -> dict:
    """What the roofline predicts for one decode step: its counts, time, regime and tokens/s."""
    c = decode_count(config, batch_size, n_context, dtype)
    t = roof.step_time(c.flops, c.bytes)
    return {"flops": c.flops, "bytes": c.bytes, "intensity": c.intensity, "ridge": roof.ridge,
            "regime": roof.regime(c.intensity), "step_s": t, "tokens_per_s": batch_size / t,
            "attainable_flops": roof.attainable(c.intensity)}


# --- counting single operations --------------------------------------------------------------------------

@dataclass(frozen=True)
class OpCount:
    name: str
    flops: int
    bytes: int

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes


def linear_count(m: int, k: int, n: int, dtype=torch.float32, name: str = "") -> OpCount:
    """``x [m, k] @ W^T`` with ``W [n, k]``: 2mkn FLOPs; reads x and W, writes the [m, n] output."""
    b = dtype_bytes(dtype)
    return OpCount(name or f"linear {m}x{k} @ {k}x{n}", matmul_flops(m, k, n), int((m * k + k * n + m * n) * b))


def attention_count(n_head: int, n_kv_head: int, head_dim: int, n_new: int, n_context: int, batch_size: int = 1,
                    dtype=torch.float32, name: str = "") -> OpCount:
    """One layer's attention: q @ K^T and weights @ V (4 FLOPs per query, key and dimension); reads the
    queries and the cached keys and values, writes the output (the scores stay in cache when small)."""
    positive_int("n_kv_head", n_kv_head)
    flops = attention_matmul_flops(n_head, head_dim, n_new, n_context, batch_size)
    nbytes = batch_size * (2 * n_head * n_new + 2 * n_kv_head * n_context) * head_dim * dtype_bytes(dtype)
    return OpCount(name or f"attention {n_new} queries x {n_context} keys", flops, int(nbytes))


def machine_roof(bandwidth: float, peak_flops: float, name: str = "this machine") -> Roof:
    return Roof(name, peak_flops, bandwidth, "measured")
