"""Training: how the model learns (notebook 01, and scripts/train_bundled.py for the checkpoints).

Plain next-token prediction with AdamW, a warm-up + cosine learning-rate schedule, gradient
clipping, evaluation on a held-out slice and a progress bar that reads right in a saved notebook.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..progress import progress as progress_bar, stopped_early


@dataclass
class TrainHistory:
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    samples: list[tuple[int, str]] = field(default_factory=list)  # (step, generated text) along the way
    tokens_seen: int = 0
    seconds: float = 0.0
    stopped_by_budget: bool = False   # True when max_seconds ended training before ``steps``


def token_tensor(tok, text: str) -> torch.Tensor:
    return torch.tensor(tok.encode(text), dtype=torch.long)


def get_batch(data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator | None = None):
    """Random windows of ``seq_len + 1`` tokens: inputs x and targets y (x shifted by one)."""
    if len(data) <= seq_len + 1:
        raise ValueError(f"data has {len(data)} tokens, need more than seq_len + 1 = {seq_len + 1}")
    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + seq_len] for s in starts.tolist()])
    y = torch.stack([data[s + 1:s + seq_len + 1] for s in starts.tolist()])
    return x, y


def lm_loss(model, x, y) -> torch.Tensor:
    logits = model(x).float()   # a bfloat16 model's loss is still summed in float32 (notebook 05)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def heldout_loss(model, data: torch.Tensor, seq_len: int = 256, batch_size: int = 16, max_windows=None) -> float:
    """Mean next-token loss over consecutive, non-overlapping windows of ``data``: deterministic."""
    n = (len(data) - 1) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ValueError(f"data has {len(data)} tokens, need more than seq_len = {seq_len}")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = model.device
    for i in range(0, n, batch_size):
        rows = range(i, min(n, i + batch_size))
        x = torch.stack([data[r * seq_len:(r + 1) * seq_len] for r in rows]).to(device)
        y = torch.stack([data[r * seq_len + 1:(r + 1) * seq_len + 1] for r in rows]).to(device)
        total += lm_loss(model, x, y).item() * len(rows)
        count += len(rows)
    model.train(was_training)
    return total / count


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, train_data: torch.Tensor, eval_data: torch.Tensor | None = None, steps: int = 1000,
          batch_size: int = 16, seq_len: int = 128, lr: float = 3e-3, warmup: int = 50, weight_decay: float = 0.1,
          eval_every: int = 100, eval_windows: int = 32, seed: int = 0, max_seconds: float | None = None,
          sample_fn=None, progress: bool = True, loss_fn=None) -> TrainHistory:
    """Train ``model`` in place for ``steps`` steps (or until ``max_seconds``); return the loss history.

    ``sample_fn(model) -> str`` is called at each evaluation to record how samples improve.
    ``loss_fn(model, x, y) -> loss`` replaces next-token cross-entropy (``lm_loss``) for training steps;
    distilling a draft model uses it (``optimize.distill``). Evaluation is always held-out ``lm_loss``.
    """
    loss_fn = lm_loss if loss_fn is None else loss_fn
    for name, value in (("steps", steps), ("batch_size", batch_size), ("seq_len", seq_len), ("eval_every", eval_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if seq_len > model.config.max_seq_len:
        raise ValueError(f"seq_len {seq_len} exceeds the model's max_seq_len {model.config.max_seq_len}")
    if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float))
                                    or not max_seconds > 0):
        raise ValueError(f"max_seconds must be a number of seconds > 0 or None, got {max_seconds!r}")
    generator = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    history = TrainHistory()
    device = model.device
    model.train()
    start = time.perf_counter()
    bar = progress_bar(total=steps, desc="training", unit="step", enabled=progress)

    def evaluate(step):
        if eval_data is not None:
            history.eval_steps.append(step)
            history.eval_loss.append(heldout_loss(model, eval_data, seq_len, max_windows=eval_windows))
        if sample_fn is not None:
            history.samples.append((step, sample_fn(model)))
        model.train()

    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        x, y = get_batch(train_data, batch_size, seq_len, generator)
        loss = loss_fn(model, x.to(device), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.steps.append(step)
        history.train_loss.append(loss.item())
        history.tokens_seen += x.numel()
        if step % eval_every == 0:
            evaluate(step)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.update(1)
        if max_seconds is not None and time.perf_counter() - start > max_seconds and step + 1 < steps:
            history.stopped_by_budget = True
            stopped_early(bar, f"loss={loss.item():.3f}, stopped: {max_seconds:g} s time budget")
            break
    if not history.eval_steps or history.eval_steps[-1] != history.steps[-1]:
        evaluate(history.steps[-1])
    history.seconds = time.perf_counter() - start
    bar.close()
    model.eval()
    return history
