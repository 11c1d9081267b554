"""Lower precision: bfloat16 and float16 against float32 (notebook 05).

Half the bytes per number halves the weights to read per decode step (the memory bottleneck) and,
where the hardware has 16-bit matrix units (AVX512-BF16, AMX on recent x86 CPUs; tensor cores on
GPUs), doubles the arithmetic rate (the compute bottleneck). Where it has none, the CPU converts
every number before multiplying and 16 bits can be *slower* than 32: measure, do not assume.
bfloat16 keeps float32's range with fewer digits; float16 has more digits but overflows past 65,504.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# CPU feature flags (Linux /proc/cpuinfo) that give native 16-bit arithmetic
CPU_FLAGS = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


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


def to_precision(model, dtype):
    """A copy of ``model`` with every weight in ``dtype`` ("float32", "bfloat16", "float16" or a torch dtype);
    the original is unchanged."""
    dtype = get_dtype(dtype)
    # each weight converted once, straight into the copy (no float32 copy first; tied weights stay tied)
    converted = {id(p): nn.Parameter(p.detach().to(dtype), requires_grad=p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo=converted).to(dtype).eval()
