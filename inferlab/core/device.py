"""Which device the lessons run on: ``DEVICE = il.best_device()`` in every lesson's first cell (issue 17).

CUDA when torch sees an NVIDIA (or ROCm) GPU, then Apple's MPS, else the CPU. A learner can override it
(``DEVICE = "cpu"``) to compare; everything the lessons measure then measures that device.
"""
from __future__ import annotations

import torch


def best_device() -> torch.device:
    """The fastest device torch can use here: ``cuda``, then ``mps``, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def as_device(device) -> torch.device:
    """``device`` (a ``torch.device``, a string such as ``"cuda"``, or None for the CPU) as a ``torch.device``
    that exists here; anything else is a clear error."""
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str such as 'cpu' or 'cuda', or a torch.device, got {type(device).__name__}")
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device {device!r} is not a device torch knows: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU here; use il.best_device()")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' asked for, but this machine has no MPS; use il.best_device()")
    return device
