"""Measuring each technique the same way: speed, memory and quality beside a baseline (notebook 05).

* ``decode_step_time``: one decode step at a given context length through a ``KVCache`` (the step
  that runs once per generated token).
* ``heldout_loss``: next-token loss on the held-out text, logits in float32 whatever the model's dtype.
* ``greedy_agreement``: how much of a greedy answer stays the same.
* ``inference_mode_cost``: a training-mode forward against ``eval()`` + ``torch.inference_mode()``.
* ``batching_sweep``: throughput and per-request latency of ``il.generate_batch`` against batch size.
* ``gqa_sweep``: KV cache bytes and decode step time of one shape with fewer and fewer key/value heads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..counting import kv_cache_bytes
from ..generate import generate_batch
from ..kvcache import KVCache
from ..model import GPT, rope_tables
from ..timing import measure


def decode_step_time(model, context: int = 32, batch_size: int = 1, warmup: int = 2, repeats: int = 10,
                     min_time_s: float = 0.0):
    """``timing.Timing`` of one decode step (one new token per sequence) after ``context`` cached tokens."""
    cfg = model.config
    if not 1 <= context < cfg.max_seq_len:
        raise ValueError(f"context must be in [1, {cfg.max_seq_len - 1}], got {context}")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (batch_size, context + 1), generator=gen).to(model.device)
    cache = KVCache(cfg, batch_size, context + 1, dtype=model.dtype, device=model.device)
    with torch.inference_mode():
        model(ids[:, :context], cache=cache)
        step_in = ids[:, context:]

        def step():
            model(step_in, cache=cache)
            cache.truncate(context)  # rewind, so every timed step sees the same context

        return measure(step, warmup=warmup, repeats=repeats, device=model.device, min_time_s=min_time_s)


@torch.no_grad()
def heldout_loss(model, data: torch.Tensor, seq_len: int = 256, batch_size: int = 8, max_windows=None) -> float:
    """Mean next-token cross-entropy over consecutive windows of ``data`` (logits cast to float32)."""
    n = (len(data) - 1) // seq_len
    n = n if max_windows is None else min(n, max_windows)
    if n < 1:
        raise ValueError(f"data has {len(data)} tokens, need more than seq_len = {seq_len}")
    total = 0.0
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            rows = range(i, min(n, i + batch_size))
            x = torch.stack([data[r * seq_len:(r + 1) * seq_len] for r in rows]).to(model.device)
            y = torch.stack([data[r * seq_len + 1:(r + 1) * seq_len + 1] for r in rows]).to(model.device)
            logits = model(x).float()
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
    return total / (n * seq_len)


def greedy_agreement(reference: list[int], other: list[int]) -> tuple[float, int]:
    """(share of positions with the same token, length of the common prefix)."""
    n = min(len(reference), len(other))
    if n == 0:
        return float("nan"), 0
    same = sum(a == b for a, b in zip(reference, other))
    prefix = next((i for i in range(n) if reference[i] != other[i]), n)
    return same / n, prefix


def _saved_bytes(fn) -> int:
    """Bytes autograd keeps alive for the backward pass while ``fn`` runs (each storage counted once)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@dataclass
class ModeCost:
    train_s: float          # median forward time, training mode with autograd recording
    inference_s: float      # median forward time, eval() + torch.inference_mode()
    train_saved_bytes: int  # activations autograd keeps for a backward pass that inference never runs
    inference_saved_bytes: int


def inference_mode_cost(model, batch_size: int = 4, seq_len: int = 128, repeats: int = 5) -> ModeCost:
    """A forward pass as training runs it (train mode, gradients recorded) against inference."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (batch_size, seq_len), generator=gen).to(model.device)
    was_training = model.training

    def train_forward():
        model.train()
        with torch.enable_grad():
            return model(x)

    def inference_forward():
        model.eval()
        with torch.inference_mode():
            return model(x)

    try:
        t_train = measure(train_forward, warmup=1, repeats=repeats, device=model.device)
        t_inf = measure(inference_forward, warmup=1, repeats=repeats, device=model.device)
        saved_train = _saved_bytes(train_forward)
        saved_inf = _saved_bytes(inference_forward)
    finally:
        model.train(was_training)
    return ModeCost(t_train.median_s, t_inf.median_s, saved_train, saved_inf)


@dataclass
class BatchPoint:
    batch_size: int
    tokens_per_s: float   # generated tokens of the whole batch / wall time
    latency_s: float      # wall time until each request has its answer (they finish together)
    tpot_s: float         # time per decode step of the batch


def batching_sweep(model, tok, prompts: list, batch_sizes=(1, 2, 4, 8, 16), max_new_tokens: int = 32,
                   repeats: int = 2) -> list[BatchPoint]:
    """``il.generate_batch`` on the first ``b`` prompts (cycled) for each batch size ``b``."""
    if not prompts:
        raise ValueError("prompts must be a non-empty list")
    points = []
    generate_batch(model, tok, prompts[:1], max_new_tokens=2)  # warm-up
    for b in batch_sizes:
        batch = [prompts[i % len(prompts)] for i in range(b)]
        best = None
        for _ in range(repeats):
            res = generate_batch(model, tok, batch, max_new_tokens=max_new_tokens)
            if best is None or res[0].total_s < best[0].total_s:
                best = res
        total = best[0].total_s
        points.append(BatchPoint(b, b * max_new_tokens / total, total, best[0].tpot_s))
    return points


@dataclass
class GQAPoint:
    n_kv_head: int
    cache_bytes: int      # KV cache of the batch at ``context`` tokens (model's dtype)
    weight_bytes: int
    step_s: float         # median decode step at that context
    kind: str             # multi-head / grouped-query / multi-query


def _random_gpt(cfg, dtype, weights: dict) -> GPT:
    """``GPT(cfg)`` with random weights, built fast: ``GPT(cfg)`` draws every weight twice (``nn.Linear``'s
    init, then ours), seconds per model at a 7B layer's shape. A tensor already in ``weights`` (by name, same
    shape) is reused, so models that differ only in their key/value heads share the rest; new ones are added.
    Within one model every weight has memory of its own, and a step's time does not depend on the values."""
    with torch.device("meta"):
        model = GPT(cfg)
    state = {}
    for name, p in model.named_parameters():   # a tied weight is listed once
        w = weights.get(name)
        if w is None or w.shape != p.shape:
            w = torch.randn(p.shape).mul_(0.02) if p.dim() > 1 else torch.ones(p.shape)   # norms' weights: ones
            w = weights[name] = w.to(dtype)
        state[name] = w
    model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    if cfg.arch == "llama":   # buffers, not in the state dict
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        model.rope_cos, model.rope_sin = cos.to(dtype), sin.to(dtype)
    return model.eval()


def gqa_sweep(config, kv_heads=(None, 8, 1), n_layer: int = 1, context: int = 2048, batch_size: int = 8,
              vocab_size: int | None = 2048, repeats: int = 3, dtype=torch.float32) -> list[GQAPoint]:
    """Random-weight models of ``config``'s layer shape with each number of key/value heads (None = as
    many as query heads): KV cache bytes and decode step time at ``context`` tokens per sequence.

    ``n_layer`` layers and a ``vocab_size``-row embedding keep it fast (per layer, every number is the real
    shape's). The cache is filled with random keys/values instead of a prefill: a step reads them the same.
    """
    points, weights = [], {}
    torch.manual_seed(0)
    for kv in kv_heads:
        kv = config.n_head if kv is None else kv
        cfg = config.with_(n_kv_head=kv, n_layer=n_layer, max_seq_len=context + 1,
                           vocab_size=vocab_size or config.vocab_size, name=f"{config.name}-kv{kv}")
        model = _random_gpt(cfg, dtype, weights)
        cache = KVCache(cfg, batch_size, context + 1, dtype=dtype)
        cache.k.normal_()
        cache.v.normal_()
        cache.valid[:, :context] = True
        cache.length = context
        step_in = torch.zeros(batch_size, 1, dtype=torch.long)
        with torch.inference_mode():
            def step():
                model(step_in, cache=cache)
                cache.truncate(context)
            t = measure(step, warmup=1, repeats=repeats)
        kind = "multi-head" if kv == cfg.n_head else "multi-query" if kv == 1 else "grouped-query"
        points.append(GQAPoint(kv, kv_cache_bytes(cfg, context, batch_size, dtype), model.weight_bytes(),
                               t.median_s, kind))
        del model, cache
    return points
