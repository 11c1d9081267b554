"""This machine's roofs, measured: read and copy bandwidth, the cache levels, the matmul peak (notebook 04, the
benchmarks and ``inferlab.check``).

``read_bandwidth`` (sum a large tensor), ``copy_bandwidth`` (STREAM-style copy, read + write counted),
``bandwidth_sweep`` (read bandwidth against working-set size: the cache levels show as steps),
``cache_bandwidth`` (the last-level cache's roof), ``matmul_peak`` (FLOP/s of a large square matmul), and
``time_linear`` / ``time_attention`` for single operations.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.device import as_device
from ..core.model import attend
from ..validate import positive_int, positive_number
from .counting import matmul_flops
from .timing import Timing, cpu_flags, measure, num_threads

GB = 1e9
MiB = 2 ** 20


def time_linear(m: int, k: int, n: int, dtype=torch.float32, warmup: int = 2, repeats: int = 5,
                min_time_s: float = 0.05, device=None) -> Timing:
    """Time ``F.linear`` on random [m, k] input and [n, k] weight, on ``device`` (default the CPU)."""
    device = as_device(device)
    x, w = torch.randn(m, k, device=device).to(dtype), torch.randn(n, k, device=device).to(dtype)
    with torch.inference_mode():
        return measure(lambda: torch.nn.functional.linear(x, w), warmup, repeats, device=device, min_time_s=min_time_s)


def time_attention(n_head: int, n_kv_head: int, head_dim: int, n_new: int, n_context: int, batch_size: int = 1,
                   dtype=torch.float32, warmup: int = 2, repeats: int = 5, min_time_s: float = 0.05,
                   device=None) -> Timing:
    """Time the model's own ``attend`` (grouped-query, masked) for new queries over a context, on ``device``
    (default the CPU)."""
    device = as_device(device)
    q = torch.randn(batch_size, n_head, n_new, head_dim, device=device).to(dtype)
    k = torch.randn(batch_size, n_kv_head, n_context, head_dim, device=device).to(dtype)
    v = torch.randn_like(k)
    mask = torch.ones(n_context, n_context, dtype=torch.bool, device=device).tril()[None, None, -n_new:]
    with torch.inference_mode():
        return measure(lambda: attend(q, k, v, mask), warmup, repeats, device=device, min_time_s=min_time_s)


def seconds_per_small_op(repeats: int = 7, calls: int = 500) -> float:
    """The wall time of one torch operation on a handful of numbers: almost pure fixed cost (Python,
    dispatch, launching the kernel), the price every operation pays whatever its size."""
    positive_int("repeats", repeats)
    positive_int("calls", calls)
    v = torch.zeros(64)
    t = measure(lambda: [v.add(1.0) for _ in range(calls)], warmup=1, repeats=repeats)
    return t.median_s / calls


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


def _filled(nbytes: int, device=None) -> torch.Tensor:
    n = max(1, int(nbytes) // 4)
    return torch.full((n,), 1.0, device=device)  # written, so every page is real memory (a fresh zero page reads "fast")


def read_bandwidth(nbytes: int = 512 * MiB, warmup: int = 2, repeats: int = 7, min_time_s: float = 0.0,
                   device=None) -> Bandwidth:
    """Bytes/s of reading a float32 tensor of ``nbytes`` (``x.sum()``) in ``device``'s memory (default the CPU's)."""
    positive_int("nbytes", nbytes)
    x = _filled(nbytes, as_device(device))
    t = measure(x.sum, warmup, repeats, device=x.device, min_time_s=min_time_s)
    return Bandwidth(x.numel() * 4, x.numel() * 4, t)


def copy_bandwidth(nbytes: int = 512 * MiB, warmup: int = 2, repeats: int = 7, min_time_s: float = 0.0,
                   device=None) -> Bandwidth:
    """Bytes/s of copying ``nbytes`` into another buffer on ``device``; counts read + write, as STREAM's copy does."""
    positive_int("nbytes", nbytes)
    src = _filled(nbytes, as_device(device))
    dst = torch.empty_like(src).fill_(0.0)
    t = measure(lambda: dst.copy_(src), warmup, repeats, device=src.device, min_time_s=min_time_s)
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
                min_time_s: float = 0.2, device=None) -> MatmulPeak:
    """FLOP/s of an n x n by n x n matmul on ``device`` (default the CPU): about the most arithmetic it does per
    second."""
    positive_int("n", n)
    device = as_device(device)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    t = measure(lambda: a @ b, warmup, repeats, device=device, min_time_s=min_time_s)
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


