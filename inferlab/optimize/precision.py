"""Lower precision: bfloat16 and float16 against float32 (notebook 05).

Half the bytes per number halves the weights to read per decode step (the memory bottleneck) and,
where the hardware has 16-bit matrix units (AVX512-BF16, AMX on recent x86 CPUs; tensor cores on
GPUs), doubles the arithmetic rate (the compute bottleneck). Where it has none, the CPU converts
every number before multiplying and 16 bits can be *slower* than 32: measure, do not assume.
bfloat16 keeps float32's range with fewer digits; float16 has more digits but overflows past 65,504.

The kernel matters as much as the bytes. A decode step multiplies one row by each matrix (a
matrix-vector product); on x86 CPUs PyTorch hands 16-bit products to oneDNN, whose kernels are built for
matrices and, for a single row, can be slower than PyTorch's own matrix-vector kernel. So the copies
``to_precision`` makes hold ``Linear16`` layers: for one row they take the faster of the two paths
(``GEMV_PATHS``), measured once per device, dtype and matrix shape (``fastest_gemv_path``); more rows take
PyTorch's default. Off the CPU (or without oneDNN) there is one path.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..measure.timing import cpu_flags

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# CPU feature flags (Linux /proc/cpuinfo) that give native 16-bit arithmetic
CPU_FLAGS = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}


def native_support(dtype, device="cpu") -> list[str]:
    """The hardware features that run ``dtype`` natively (empty: it is emulated by conversions)."""
    dtype = get_dtype(dtype)
    if dtype == torch.float32:
        return ["float32"]
    if torch.device(device).type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return ["tensor cores"] if (dtype == torch.float16 and major >= 7) or major >= 8 else []
    flags = cpu_flags()
    return [f for f in CPU_FLAGS[dtype] if f in flags]


def get_dtype(name):
    if isinstance(name, torch.dtype) and name in PRECISIONS.values():
        return name
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of {list(PRECISIONS)}")
    return PRECISIONS[name]


GEMV_PATHS = ("default", "no-onednn")   # PyTorch's dispatch as is, or with oneDNN switched off for the call


def linear16(x: torch.Tensor, weight: torch.Tensor, bias, path: str) -> torch.Tensor:
    """``F.linear`` by one of ``GEMV_PATHS``."""
    if path not in GEMV_PATHS:
        raise ValueError(f"unknown path {path!r}; choose one of {GEMV_PATHS}")
    if path == "default":
        return F.linear(x, weight, bias)
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        return F.linear(x, weight, bias)
    finally:
        torch.backends.mkldnn.enabled = before


_FASTEST: dict = {}   # (device type, dtype, out, in) -> (path, {path: seconds}), filled by fastest_gemv_path


def gemv_path_times(device="cpu", dtype=torch.bfloat16, out_features: int = 4096, in_features: int = 4096,
                    repeats: int = 5) -> dict:
    """Seconds per one-row product with an ``[out, in]`` matrix by each path that runs on ``device`` and gives
    the right result, timed in alternation (each sample repeats small products, so a fixed cost per call counts)."""
    from ..measure.timing import compare
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(out_features, in_features, generator=g) * 0.02).to(device, dtype)
    x = torch.randn(1, in_features, generator=g).to(device, dtype)
    want = F.linear(x.float(), w.float())
    calls = max(1, (1 << 21) // (out_features * in_features))
    paths = GEMV_PATHS if device.type == "cpu" and torch.backends.mkldnn.is_available() else ("default",)
    runs = {}
    for path in paths:
        got = linear16(x, w, None, path).float()
        if (got - want).norm() <= 0.02 * want.norm():
            runs[path] = lambda path=path: [linear16(x, w, None, path) for _ in range(calls)]
    if not runs:
        raise RuntimeError(f"no matrix-vector path gives the right product on {device} with {dtype}")
    timings = compare(runs, repeats=repeats, warmup=1, device=device)
    return {path: t.median_s / calls for path, t in timings.items()}


def fastest_gemv_path(device="cpu", dtype=torch.bfloat16, out_features: int = 4096, in_features: int = 4096) -> str:
    """The faster path for one row times an ``[out, in]`` matrix of ``dtype`` on this device (measured on first
    use for each shape, then remembered: a fixed cost per call matters most for small matrices)."""
    key = (torch.device(device).type, dtype, out_features, in_features)
    if key not in _FASTEST:
        times = gemv_path_times(device, dtype, out_features, in_features)
        _FASTEST[key] = (min(times, key=times.get), times)
    return _FASTEST[key][0]


def gemv_paths_chosen(dtype=torch.bfloat16, device="cpu") -> dict:
    """``{(out, in): path}`` for every shape measured so far on this device with ``dtype``."""
    kind = torch.device(device).type
    return {(o, i): v[0] for (d, t, o, i), v in _FASTEST.items() if d == kind and t == dtype}


class Linear16(nn.Linear):
    """``nn.Linear`` whose one-row products (a decode step of one sequence) take the fastest matrix-vector path
    for its 16-bit weights; ``path``: one of ``GEMV_PATHS``, or "auto" (``fastest_gemv_path``)."""

    path = "auto"

    @classmethod
    def from_linear(cls, linear: nn.Linear, path: str = "auto") -> "Linear16":
        if path not in GEMV_PATHS + ("auto",):
            raise ValueError(f"unknown path {path!r}; choose one of {GEMV_PATHS + ('auto',)}")
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight, new.bias = linear.weight, linear.bias   # the same parameters (a tied weight stays tied)
        new.path = path
        return new

    def forward(self, x):
        if x.numel() != x.shape[-1] or self.weight.dtype not in (torch.bfloat16, torch.float16):
            return F.linear(x, self.weight, self.bias)   # more than one row: a matrix product, the default path
        path = (fastest_gemv_path(x.device, x.dtype, self.out_features, self.in_features) if self.path == "auto"
                else self.path)
        return linear16(x, self.weight, self.bias, path)


def to_precision(model, dtype, path: str = "auto"):
    """A copy of ``model`` with every weight in ``dtype`` ("float32", "bfloat16", "float16" or a torch dtype);
    the original is unchanged. In 16 bits its ``nn.Linear`` layers become ``Linear16``, whose one-row products
    take ``path`` (one of ``GEMV_PATHS``, or "auto": the fastest on the input's device)."""
    dtype = get_dtype(dtype)
    if path not in GEMV_PATHS + ("auto",):
        raise ValueError(f"unknown path {path!r}; choose one of {GEMV_PATHS + ('auto',)}")
    # each weight converted once, straight into the copy (no float32 copy first; tied weights stay tied)
    converted = {id(p): nn.Parameter(p.detach().to(dtype), requires_grad=p.requires_grad) for p in model.parameters()}
    new = copy.deepcopy(model, memo=converted).to(dtype).eval()
    if dtype in (torch.bfloat16, torch.float16):
        for module in list(new.modules()):
            for name, child in list(module.named_children()):
                if type(child) is nn.Linear:
                    setattr(module, name, Linear16.from_linear(child, path))
    return new
