"""Tiled attention with an online softmax: the FlashAttention idea in plain PyTorch (notebook 05).

Plain attention builds the whole ``[T, S]`` score matrix, softmaxes it and multiplies by V: memory
grows with the square of the length, and the matrix travels to memory and back. Tiled attention walks
over blocks of keys, keeping for every query only a running maximum ``m``, a running sum of
exponentials ``l`` and a running weighted sum of values ``acc``. When a new block raises the maximum,
the old sums are rescaled by ``exp(m_old - m_new)``: the result is exactly softmax(QK^T/sqrt(d)) V, but the
largest intermediate is one ``[block_q, block_k]`` tile, so memory grows linearly with the length.
(FlashAttention also fuses it into one GPU kernel so tiles stay in fast on-chip memory; in Python
the loop costs time instead.)

``largest_intermediate_bytes(fn)`` measures the claim: it records every tensor any torch operation
returns while ``fn`` runs and reports the largest.
"""
from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def tiled_attention(q, k, v, causal: bool = False, block_q: int = 64, block_k: int = 64) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, computed tile by tile.

    q: ``[B, H, T, d]``; k, v: ``[B, KV, S, d]`` with H a multiple of KV (grouped-query attention).
    causal: query i (the last T of S positions) sees keys up to its own position, ``j <= S - T + i``.
    """
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"expected q [B, H, T, d] and k, v [B, KV, S, d], got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    B, H, T, d = q.shape
    KV, S = k.shape[1], k.shape[2]
    if H % KV or k.shape[0] != B or k.shape[3] != d:
        raise ValueError(f"k/v must be [B={B}, KV, S, d={d}] with KV dividing H={H}, got {tuple(k.shape)}")
    if causal and S < T:
        raise ValueError(f"causal attention needs at least as many keys as queries, got T={T}, S={S}")
    for name, b in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(b, int) or b < 1:
            raise ValueError(f"{name} must be a positive int, got {b!r}")
    group = H // KV
    qg = q.reshape(B, KV, group, T, d) / math.sqrt(d)  # query heads that share a K/V head, side by side
    out = torch.empty_like(q).view(B, KV, group, T, d)
    offset = S - T
    for i0 in range(0, T, block_q):
        i1 = min(T, i0 + block_q)
        qi = qg[:, :, :, i0:i1]
        m = torch.full(qi.shape[:-1], float("-inf"), dtype=torch.float32, device=q.device)  # running max
        l = torch.zeros_like(m)                                                            # running sum of exp
        acc = torch.zeros(qi.shape, dtype=torch.float32, device=q.device)                  # running sum of exp * v
        last_key = offset + i1 if causal else S  # keys past the block's last query are all masked
        for j0 in range(0, last_key, block_k):
            j1 = min(last_key, j0 + block_k)
            s = (qi @ k[:, :, None, j0:j1].transpose(-2, -1)).float()  # one [block_q, block_k] tile of scores
            if causal and j1 - 1 > offset + i0:  # the tile crosses the diagonal
                rows = torch.arange(offset + i0, offset + i1, device=q.device)[:, None]
                cols = torch.arange(j0, j1, device=q.device)[None, :]
                s = s.masked_fill(cols > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(-1))
            rescale = torch.exp(m - m_new)  # shrink what was summed under the old maximum
            p = torch.exp(s - m_new[..., None])
            l = l * rescale + p.sum(-1)
            acc = acc * rescale[..., None] + p.to(v.dtype) @ v[:, :, None, j0:j1]
            m = m_new
        out[:, :, :, i0:i1] = (acc / l[..., None]).to(q.dtype)
    return out.view(B, H, T, d)


def standard_attention(q, k, v, causal: bool = False) -> torch.Tensor:
    """The textbook version: the whole score matrix at once (what ``tiled_attention`` avoids)."""
    B, H, T, d = q.shape
    KV, S = k.shape[1], k.shape[2]
    k = k.repeat_interleave(H // KV, dim=1)
    v = v.repeat_interleave(H // KV, dim=1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(d)
    if causal:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0
        self.op = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() * t.element_size() > self.largest:
                self.largest, self.op = t.numel() * t.element_size(), str(func)
        return out


def largest_intermediate_bytes(fn, *args, **kwargs) -> tuple[int, str]:
    """(bytes, op) of the largest tensor any torch operation returns while ``fn(*args, **kwargs)`` runs
    (the output included, views counted at their size). A lower bound on the peak memory the call needs."""
    mode = _LargestTensor()
    with mode:
        fn(*args, **kwargs)
    return mode.largest, mode.op
