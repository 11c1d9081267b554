"""Bottlenecks: this machine's roofs, published hardware roofs, and the model's steps on a roofline (notebook 04).

* Roofs measured here: ``read_bandwidth`` (sum a large tensor), ``copy_bandwidth`` (STREAM-style copy,
  read + write counted), ``matmul_peak`` (FLOP/s of a large square matmul, fp32 or bf16), and
  ``bandwidth_sweep`` (read bandwidth against working-set size: the cache levels show as steps).
* Roofs published: ``HARDWARE`` presets (A100, H100, H200, a laptop) and ``hardware_roof(name, dtype)``.
* Roofline math: ``Roof.attainable(intensity)``, ``Roof.ridge``, ``Roof.step_time(flops, bytes)``,
  ``mbu`` / ``mfu`` from a measured time, ``critical_batch`` of a decode step; ``Roof.at_least`` keeps a
  measured roof at the best measurement made, ``cache_bandwidth`` and ``memory_level`` add the
  last-level cache's roof (a hierarchical roofline); ``batch_regimes`` reads a measured batch sweep.
* The model's operations: ``linear_count`` / ``attention_count`` (FLOPs and bytes of one operation),
  ``time_linear`` / ``time_attention`` and ``time_decode_step`` (one decode step of any batch size at a
  fixed context, replayed through a rewound ``KVCache``), and ``random_model`` which builds a real-shape
  model with random weights in about a second instead of ten; ``cpu_profile`` wraps torch's profiler.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ModelConfig
from .counting import StepCount, dtype_bytes, matmul_flops, step_count
from .kvcache import KVCache
from .model import GPT, attend, rope_tables
from .timing import Timing, compare, cpu_flags, from_samples, measure, num_threads
from .validate import positive_int, positive_number

GB = 1e9
MiB = 2 ** 20


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
    for arg, v in (("n_head", n_head), ("n_kv_head", n_kv_head), ("head_dim", head_dim), ("n_new", n_new),
                   ("n_context", n_context), ("batch_size", batch_size)):
        positive_int(arg, v)
    flops = 4 * batch_size * n_head * n_new * n_context * head_dim
    nbytes = batch_size * (2 * n_head * n_new + 2 * n_kv_head * n_context) * head_dim * dtype_bytes(dtype)
    return OpCount(name or f"attention {n_new} queries x {n_context} keys", flops, int(nbytes))


def time_linear(m: int, k: int, n: int, dtype=torch.float32, warmup: int = 2, repeats: int = 5,
                min_time_s: float = 0.05) -> Timing:
    """Time ``F.linear`` on random [m, k] input and [n, k] weight."""
    x, w = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    with torch.inference_mode():
        return measure(lambda: torch.nn.functional.linear(x, w), warmup, repeats, min_time_s=min_time_s)


def time_attention(n_head: int, n_kv_head: int, head_dim: int, n_new: int, n_context: int, batch_size: int = 1,
                   dtype=torch.float32, warmup: int = 2, repeats: int = 5, min_time_s: float = 0.05) -> Timing:
    """Time the model's own ``attend`` (grouped-query, masked) for new queries over a context."""
    q = torch.randn(batch_size, n_head, n_new, head_dim).to(dtype)
    k = torch.randn(batch_size, n_kv_head, n_context, head_dim).to(dtype)
    v = torch.randn_like(k)
    mask = torch.ones(n_context, n_context, dtype=torch.bool).tril()[None, None, -n_new:]
    with torch.inference_mode():
        return measure(lambda: attend(q, k, v, mask), warmup, repeats, min_time_s=min_time_s)


# --- this machine's roofs ---------------------------------------------------------------------------------

@dataclass
class Bandwidth:
    nbytes: int          # working set
    moved_bytes: int     # bytes moved per call (copy: read + write)
    timing: Timing

    @property
    def bytes_per_s(self) -> float:
        """From the median time: the typical speed."""
        return self.moved_bytes / self.timing.median_s

    @property
    def best_bytes_per_s(self) -> float:
        """From the fastest repeat: what the memory can do, the number a roof is made of."""
        return self.moved_bytes / self.timing.min_s


def _filled(nbytes: int) -> torch.Tensor:
    n = max(1, int(nbytes) // 4)
    return torch.full((n,), 1.0)  # written, so every page is real memory (a fresh zero page reads "fast")


def read_bandwidth(nbytes: int = 512 * MiB, warmup: int = 2, repeats: int = 7, min_time_s: float = 0.0) -> Bandwidth:
    """Bytes/s of reading a float32 tensor of ``nbytes`` (``x.sum()``)."""
    positive_int("nbytes", nbytes)
    x = _filled(nbytes)
    t = measure(x.sum, warmup, repeats, min_time_s=min_time_s)
    return Bandwidth(x.numel() * 4, x.numel() * 4, t)


def copy_bandwidth(nbytes: int = 512 * MiB, warmup: int = 2, repeats: int = 7, min_time_s: float = 0.0) -> Bandwidth:
    """Bytes/s of copying ``nbytes`` into another buffer; counts read + write, as STREAM's copy does."""
    positive_int("nbytes", nbytes)
    src = _filled(nbytes)
    dst = torch.empty_like(src).fill_(0.0)
    t = measure(lambda: dst.copy_(src), warmup, repeats, min_time_s=min_time_s)
    return Bandwidth(src.numel() * 4, 2 * src.numel() * 4, t)


def bandwidth_sweep(sizes, min_time_s: float = 0.02, repeats: int = 5, threads: int = 1,
                    progress=None) -> list[Bandwidth]:
    """Read bandwidth for each working-set size in bytes, on ``threads`` threads (default one core: its own
    L1 and L2, then the shared L3, then DRAM). A small set is read many times within one call (a sum over
    each row of ``x`` repeated as rows of a stride-0 view), so the fixed cost of calling an operator, a few
    microseconds, does not hide how fast the cache is. ``progress``: a wrapper such as
    ``inferlab.progress.progress``."""
    sizes = list(sizes)
    if not sizes:
        raise ValueError("sizes must be a non-empty list of byte counts")
    for s in sizes:
        positive_int("sizes", s)
    positive_int("threads", threads)
    out = []
    with num_threads(threads):
        for s in (progress(sizes) if progress else sizes):
            out.append(_read_repeated(s, min_time_s, repeats, in_one_call=threads == 1))
    return out


READ_PER_CALL = 32 * MiB   # bytes read per timed call when a working set is read repeatedly


def _read_repeated(nbytes: int, min_time_s: float, repeats: int, in_one_call: bool = True) -> Bandwidth:
    x = _filled(nbytes)
    reps = max(1, READ_PER_CALL // (x.numel() * 4))
    if in_one_call:  # one operator call: row sums of a [reps, n] view whose rows all are x
        rows = x.expand(reps, -1)
        run = lambda: rows.sum(dim=1)  # noqa: E731
    else:  # several threads split one sum between them; the view above would not split well
        def run():
            for _ in range(reps):
                x.sum()
    t = measure(run, warmup=2, repeats=repeats, min_time_s=min_time_s)
    return Bandwidth(x.numel() * 4, x.numel() * 4 * reps, t)


def cache_bandwidth(threads: int | None = None, repeats: int = 7, min_time_s: float = 0.03) -> Bandwidth:
    """The last-level cache's roof: the fastest read of a working set too large for the cores' own L2
    caches together but small enough for the L3. A few sizes are tried, each read repeatedly for at least
    ``min_time_s``, on one thread and on all ``threads``, and the fastest repeat is kept. (One thread as
    well, because on a busy machine a thread of a parallel read that loses its core stalls every call,
    while an operation that runs on one thread does not: the roof must be the best either way.) Points
    of a roofline that sit above the DRAM roof read their bytes from here (notebook 04's hierarchical
    roofline). Costs a fraction of a second."""
    threads = torch.get_num_threads() if threads is None else threads
    positive_int("threads", threads)
    positive_int("repeats", repeats)
    if not isinstance(min_time_s, numbers.Real) or isinstance(min_time_s, bool) or min_time_s < 0:
        raise ValueError(f"min_time_s must be a number of seconds >= 0, got {min_time_s!r}")
    caches = cache_sizes()
    high = caches["L3"] // 2 if "L3" in caches else 16 * MiB
    found = []
    for n in sorted({1, threads}):
        low = 2 * caches.get("L2", MiB) * n
        sizes = [s for s in (low, 2 * low, 4 * low) if s <= high] or [high]
        with num_threads(n):
            found += [_read_repeated(s, min_time_s, repeats, in_one_call=n == 1) for s in sizes]
    return max(found, key=lambda b: b.best_bytes_per_s)


def memory_level(nbytes: float, bytes_per_s: float, dram_bandwidth: float, cache_bytes: int | None = None) -> str:
    """Where an operation's bytes come from, for the hierarchical roofline: "L3" when its working set fits
    in the last-level cache (``cache_bytes``) or when it read faster than DRAM can deliver (only a cache
    can); "DRAM" otherwise."""
    for name, v in (("nbytes", nbytes), ("bytes_per_s", bytes_per_s), ("dram_bandwidth", dram_bandwidth)):
        positive_number(name, v)
    fits = cache_bytes is not None and nbytes <= cache_bytes
    return "L3" if fits or bytes_per_s > dram_bandwidth else "DRAM"


@dataclass
class MatmulPeak:
    n: int
    dtype: torch.dtype
    timing: Timing

    @property
    def flops_per_s(self) -> float:
        """From the median time: the typical speed."""
        return matmul_flops(self.n, self.n, self.n) / self.timing.median_s

    @property
    def best_flops_per_s(self) -> float:
        """From the fastest repeat: the peak, the number a roof is made of."""
        return matmul_flops(self.n, self.n, self.n) / self.timing.min_s


def matmul_peak(n: int = 2048, dtype=torch.float32, warmup: int = 2, repeats: int = 5,
                min_time_s: float = 0.2) -> MatmulPeak:
    """FLOP/s of an n x n by n x n matmul: about the most arithmetic this machine does per second."""
    positive_int("n", n)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    t = measure(lambda: a @ b, warmup, repeats, min_time_s=min_time_s)
    return MatmulPeak(n, dtype, t)


def has_bf16_matmul() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX); else bf16 is emulated."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def cache_sizes() -> dict:
    """Cache levels of CPU 0 in bytes, from Linux sysfs (empty elsewhere), e.g. {"L1d": 49152, "L2": ...}."""
    out = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1024, "M": MiB, "G": 2 ** 30}.get(size[-1], 1)
        out[f"L{level}" + ("d" if kind == "Data" else "")] = int(size.rstrip("KMG")) * mult
    return out


def machine_roof(bandwidth: float, peak_flops: float, name: str = "this machine") -> Roof:
    return Roof(name, peak_flops, bandwidth, "measured")


# --- real-shape models, fast --------------------------------------------------------------------------

def random_tensor(shape, dtype=torch.float32, seed: int = 0, block: int = 65537) -> torch.Tensor:
    """Normal(0, 0.02) numbers for a weight of ``shape``: one random block tiled over the tensor (drawing
    hundreds of millions of numbers takes seconds; copying a block a fraction of one). Times like any weight.
    The block's length is prime, so no two rows are the same numbers: with 2**16, a multiple of 256 rows of
    768, gpt2's 50257-row embedding (the tied head) held 257 distinct rows, and every greedy pick was a tie
    that rounding decided (cached and uncached decoding then disagreed)."""
    numel = math.prod(shape)
    pattern = torch.randn(min(block, numel), generator=torch.Generator().manual_seed(seed)).mul_(0.02).to(dtype)
    out = torch.empty(numel, dtype=dtype)
    full = numel // pattern.numel() * pattern.numel()
    out[:full].view(-1, pattern.numel()).copy_(pattern.expand(full // pattern.numel(), -1))
    out[full:].copy_(pattern[:numel - full])
    return out.view(shape)


def random_model(config: ModelConfig, dtype=torch.float32, seed: int = 0, weights: dict | None = None) -> GPT:
    """``GPT(config)`` with random weights, built in about a second even for billions of bytes: the module is
    made on the meta device (no memory, no init) and each weight is a ``random_tensor``. ``weights``: a dict
    of tensors by parameter name, reused where the shape matches and filled with the new ones, so models that
    differ in one part share the rest (notebook 05's grouped-query sweep). Free it with ``del model; gc.collect()``."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    weights = {} if weights is None else weights
    with torch.device("meta"):
        model = GPT(config)
    state = {}
    for name, p in model.named_parameters():   # a tied weight is listed once
        w = weights.get(name)
        if w is None or w.shape != p.shape or w.dtype != dtype:
            w = weights[name] = (random_tensor(p.shape, dtype, seed) if p.dim() > 1 and not name.endswith("bias")
                                 else torch.zeros(p.shape, dtype=dtype) if name.endswith("bias")
                                 else torch.ones(p.shape, dtype=dtype))
        state[name] = w
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    if config.arch == "llama":   # buffers, not in the state dict
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        model.rope_cos, model.rope_sin = cos.to(dtype), sin.to(dtype)
    return model.eval()


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


def decode_stepper(model: GPT, batch_size: int = 1, n_context: int = 16, seed: int = 0):
    """A function that runs one decode step of ``batch_size`` sequences with ``n_context - 1`` tokens
    already cached, again and again at the same position (the cache is rewound after each). The cached
    tokens are one sequence's prefill copied to every row (a large batch's prefill would take longer than
    the steps it prepares); each row's new token is its own."""
    positive_int("batch_size", batch_size)
    positive_int("n_context", n_context)
    if n_context > model.config.max_seq_len:
        raise ValueError(f"n_context must be <= max_seq_len={model.config.max_seq_len}, got {n_context}")
    g = torch.Generator().manual_seed(seed)
    cache = KVCache(model.config, batch_size, n_context, dtype=model.dtype, device=model.device)
    ids = torch.randint(0, model.config.vocab_size, (batch_size, n_context), generator=g).to(model.device)
    if n_context > 1:  # the prefill, once, of one sequence, copied to every row: a step reads the same bytes
        one = KVCache(model.config, 1, n_context, dtype=model.dtype, device=model.device)
        with torch.inference_mode():
            model(ids[:1, :-1], cache=one)
        cache.k.copy_(one.k.expand_as(cache.k))
        cache.v.copy_(one.v.expand_as(cache.v))
        cache.valid.copy_(one.valid.expand_as(cache.valid))
        cache.length = one.length
    filled = cache.length
    new = ids[:, -1:]

    def step():
        cache.truncate(filled)   # rewind, so every timed step sees the same context
        with torch.inference_mode():
            return model(new, cache=cache)

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


def measured_critical_batch(batch_sizes, step_seconds) -> float:
    """Where the memory-bound plateau (the fastest step measured) meets the line through the origin and the
    largest batch. A formula that returns a number whatever the curve: notebook 04 now reads the curve with
    ``batch_regimes``, which says when the sweep did not reach a regime."""
    b, t = list(batch_sizes), list(step_seconds)
    if len(b) != len(t) or len(b) < 3:
        raise ValueError("batch_sizes and step_seconds must be lists of the same length, at least 3")
    if any(x <= 0 for x in t) or any(x < 1 for x in b):
        raise ValueError("batch sizes must be >= 1 and step times positive")
    per_sequence = t[-1] / b[-1]  # seconds per sequence once compute-bound
    return max(1.0, min(t) / per_sequence)


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


@contextlib.contextmanager
def cpu_profile():
    """``torch.profiler.profile`` over CPU activities (notebook 04), without the two log lines its C++ side
    writes straight to the process's stderr as it starts and stops (they would land in the notebook)."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    with _stderr_silenced():
        prof.__enter__()
    try:
        yield prof
    finally:
        with _stderr_silenced():
            prof.__exit__(None, None, None)


@contextlib.contextmanager
def _stderr_silenced():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
