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
    that exists here; anything else is a clear error (``il.load_pretrained``, ``il.load_hf``, ``measure.machine``)."""
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str such as 'cpu' or 'cuda', or a torch.device, got {type(device).__name__}")
    try:
        torch.empty(0, device=device)   # a device this machine lacks fails here, not half-way through loading
    except (RuntimeError, AssertionError) as error:
        why = str(error).splitlines()[0][:160]
        raise ValueError(f"device {device!r} is not one torch can use here ({why}); il.best_device() picks one "
                         "that is") from None
    return torch.device(device)
