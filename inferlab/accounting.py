"""Training vs inference, measured on the same batch (notebook 01).

A training step is forward + backward + optimizer update and must keep every activation the
backward pass needs, plus gradients and optimizer state. An inference pass is the forward alone,
with nothing kept. These functions time both and count the bytes of each kind of memory, and
take a checksum of the weights before and after so a learner sees which one changes them.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def weight_checksum(model: torch.nn.Module) -> str:
    """A short fingerprint of every weight's exact bits: changes if any single weight changes."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return total


@dataclass
class MemoryBreakdown:
    weights: int = 0
    gradients: int = 0
    optimizer_state: int = 0
    activations: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer_state + self.activations

    def as_dict(self) -> dict:
        return {"weights": self.weights, "gradients": self.gradients, "optimizer state": self.optimizer_state,
                "activations": self.activations}


@dataclass
class StepCost:
    kind: str                 # "training step" or "inference pass"
    seconds: float            # median wall time over the repeats
    parts_s: dict             # forward / backward / optimizer seconds (inference: forward only)
    memory: MemoryBreakdown
    checksum_before: str
    checksum_after: str

    @property
    def weights_changed(self) -> bool:
        return self.checksum_before != self.checksum_after


def _check_batch(model, x, y=None):
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError("x must be a [batch, time] tensor of token ids")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != x.shape):
        raise ValueError(f"y must be a tensor with the shape of x {tuple(x.shape)}")
    if x.shape[1] > model.config.max_seq_len:
        raise ValueError(f"x has {x.shape[1]} tokens per row; the model's context is {model.config.max_seq_len}")


def measure_training_step(model, x, y, optimizer=None, repeats: int = 3) -> StepCost:
    """Time ``repeats`` full training steps (median) and count the memory one step needs.

    Activations = bytes of the tensors autograd saves for the backward pass (counted by a
    ``saved_tensors_hooks`` hook). The weights *do* change: pass a copy if you want to keep them.
    """
    _check_batch(model, x, y)
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = weight_checksum(model)
    model.train()
    times, parts = [], []
    saved = []
    for _ in range(max(1, repeats)):
        saved.clear()
        t0 = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: (saved.append(t), t)[1], lambda t: t):
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        activation_bytes = _tensor_bytes(saved)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        times.append(t3 - t0)
        parts.append({"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2})
        saved.clear()
    model.eval()
    params = list(model.parameters())
    memory = MemoryBreakdown(
        weights=_tensor_bytes(params),
        gradients=_tensor_bytes(p.grad for p in params),
        optimizer_state=_tensor_bytes(v for state in optimizer.state.values() for v in state.values()
                                      if isinstance(v, torch.Tensor) and v.dim() > 0),
        activations=activation_bytes,
    )
    mid = sorted(range(len(times)), key=times.__getitem__)[len(times) // 2]
    return StepCost("training step", times[mid], parts[mid], memory, before, weight_checksum(model))


def measure_inference_pass(model, x, repeats: int = 3) -> StepCost:
    """Time ``repeats`` forward passes in inference mode (median); nothing is saved, no weight moves.

    Activations = the largest set alive at once: the residual stream plus the biggest
    intermediate any single layer produces (each is freed as soon as the next layer has it).
    """
    _check_batch(model, x)
    before = weight_checksum(model)
    model.eval()
    largest = [0]

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    times = []
    try:
        with torch.inference_mode():
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        for h in handles:
            h.remove()
    residual = x.numel() * model.config.d_model * model.dtype.itemsize
    memory = MemoryBreakdown(weights=_tensor_bytes(model.parameters()), activations=residual + largest[0])
    t = sorted(times)[len(times) // 2]
    return StepCost("inference pass", t, {"forward": t}, memory, before, weight_checksum(model))


def cost_per_million_tokens(tokens_per_s: float, watts: float, price_per_kwh: float,
                            hardware_per_hour: float = 0.0) -> float:
    """Money per million generated tokens: energy (watts x time x price) plus hardware rent per hour."""
    for name, value in (("tokens_per_s", tokens_per_s), ("watts", watts), ("price_per_kwh", price_per_kwh),
                        ("hardware_per_hour", hardware_per_hour)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if tokens_per_s <= 0:
        raise ValueError(f"tokens_per_s must be > 0, got {tokens_per_s}")
    hours = 1e6 / tokens_per_s / 3600
    return hours * (watts / 1000 * price_per_kwh + hardware_per_hour)
