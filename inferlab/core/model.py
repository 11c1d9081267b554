"""The one GPT: a decoder-only transformer that serves every inference path.

Notebook 01 trains it, 02 opens it up layer by layer, 03 runs it with and without a KV cache,
04/05 time it, 06 drives it from the engine's paged cache. Whatever the path, the model sees the
same three things: token ids, an explicit position for every token, and (optionally) a cache
object that stores keys/values and says which of them each query may look at.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig, RopeScaling


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def make_norm(config: ModelConfig) -> nn.Module:
    if config.arch == "llama":
        return RMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps)


def rope_tables(head_dim: int, max_seq_len: int, theta: float, scaling: RopeScaling | None = None):
    """cos/sin of every (position, frequency) pair, shape [max_seq_len, head_dim // 2]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling is not None:
        inv_freq = llama3_frequencies(inv_freq, scaling)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def llama3_frequencies(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    """Llama 3.1's long-context frequencies (``RopeScaling``): slow ones divided by ``s.factor``, fast ones
    kept, and a linear blend, in "how many wavelengths fit the original context", between the two."""
    wavelengths_in_context = s.original_max_seq_len * inv_freq / (2 * math.pi)
    keep = ((wavelengths_in_context - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)).clamp(0, 1)
    return keep * inv_freq + (1 - keep) * inv_freq / s.factor


def apply_rope(x, cos, sin):
    """Rotate pairs (x[..., i], x[..., i + d/2]) by each token's angle. x: [B, heads, T, d]; cos/sin: [B, 1, T, d/2]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)


def causal_mask(T: int, attention_mask: torch.Tensor | None, device) -> torch.Tensor:
    """[B or 1, 1, T, T] bool: query i may see key j when j <= i and key j is a real token."""
    mask = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask[:, None, None, :]
    return mask


def attend(q, k, v, mask):
    """Plain scaled dot-product attention with grouped-query support.

    q: [B, H, T, d]; k, v: [B, KV, S, d] with H a multiple of KV; mask: [B|1, 1, T, S] bool, or None when
    every query may see every key (one new token over a cache without padding).
    A query with no visible key (a padding slot) gets zeros instead of NaN.
    """
    B, H, T, d = q.shape
    kv_heads = k.shape[1]
    q = q.reshape(B, kv_heads, H // kv_heads * T, d)  # the query heads that share one K/V head, stacked
    # in place: the scores of a long batched prefill are megabytes, and a second and third copy of them
    # cost more than the arithmetic (autograd allows it: neither step's backward needs the scores)
    scores = (q @ k.transpose(-2, -1)).div_(math.sqrt(d))
    scores = scores.view(B, kv_heads, H // kv_heads, T, -1)
    if mask is not None:
        scores.masked_fill_(~mask[:, :, None], float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0).to(q.dtype)
    out = weights.view(B, kv_heads, H // kv_heads * T, -1) @ v
    return out.view(B, H, T, d)


def sdpa_attend(q, k, v, mask):
    """The same attention through PyTorch's fused kernel, ``F.scaled_dot_product_attention``: what the model
    runs by default (``attend`` above is the readable reference it is tested against on every path).
    A query with no visible key gets zeros, as in ``attend``."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
    return out if mask is None else out.nan_to_num(0.0)   # (some kernels give NaN there)


ATTENTION = {"sdpa": sdpa_attend, "reference": attend}   # GPT.attention picks one


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.impl = "sdpa"
        bias = config.arch == "gpt2"
        qkv_bias = bias or config.qkv_bias
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=qkv_bias)
        self.k_proj = nn.Linear(config.d_model, config.kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(config.d_model, config.kv_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(config.d_model, config.d_model, bias=bias)

    def forward(self, x, rope, mask, cache=None, layer: int = 0):
        cfg = self.config
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, cfg.n_head, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        fn = ATTENTION[self.impl]
        if getattr(cache, "attend", None) is not None:   # a cache that runs attention itself (the engine's prefill)
            out = cache.attend(layer, q, k, v, fn)
        else:
            if cache is not None:
                k, v = cache.update(layer, k, v)  # now every key/value this sequence may attend to
            out = fn(q, k, v, mask)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, cfg.d_model))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gated = config.arch == "llama"
        bias = not self.gated
        self.up = nn.Linear(config.d_model, config.d_ff, bias=bias)
        self.gate = nn.Linear(config.d_model, config.d_ff, bias=False) if self.gated else None
        self.down = nn.Linear(config.d_ff, config.d_model, bias=bias)

    def forward(self, x):
        if self.gated:  # SwiGLU
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attn_norm = make_norm(config)
        self.attn = Attention(config)
        self.mlp_norm = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, rope, mask, cache=None, layer: int = 0):
        x = x + self.attn(self.attn_norm(x), rope, mask, cache, layer)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    """Decoder-only transformer. ``GPT(config)`` has random weights; ``il.load_pretrained()`` trained ones."""

    def __init__(self, config: ModelConfig, init_std: float = 0.02):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig (e.g. il.MODEL_CONFIGS['gpt2']), got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_seq_len, config.d_model) if config.arch == "gpt2" else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if config.arch == "llama":
            cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta, config.rope_scaling)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if self.tok_emb.weight.device.type != "meta":   # on meta there is nothing to fill (from_state_dict)
            self.init_weights(init_std)

    @classmethod
    def from_state_dict(cls, config: ModelConfig, state_dict: dict) -> "GPT":
        """A GPT whose weights are the tensors of ``state_dict`` (our parameter names), in their dtype and
        device: the module is made on the meta device, so no weight is initialised and then overwritten, and
        each tensor is used as it is, not copied (``profiling.random_model``, ``il.load_hf``). A tied model
        needs no ``lm_head.weight``."""
        with torch.device("meta"):
            model = cls(config)
        missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
        missing = set(missing) - ({"lm_head.weight"} if config.tie_embeddings else set())
        if missing or unexpected:
            raise ValueError(f"state_dict does not fit the config: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        if config.tie_embeddings:   # assign=True gave the two names separate parameters: one again
            model.lm_head.weight = model.tok_emb.weight
        if config.arch == "llama":  # buffers, not in the state dict
            cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta, config.rope_scaling)
            model.rope_cos, model.rope_sin = (t.to(model.tok_emb.weight) for t in (cos, sin))
        return model.eval()

    @torch.no_grad()
    def init_weights(self, std: float = 0.02):
        """GPT-2 style: normal(0, std), residual projections scaled down by sqrt(2 * n_layer)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 1:
                p.fill_(1.0)
            elif name.endswith(("o_proj.weight", "down.weight")):
                p.normal_(0.0, std / math.sqrt(2 * self.config.n_layer))
            else:
                p.normal_(0.0, std)

    @property
    def attention(self) -> str:
        """Which attention the layers run: ``"sdpa"`` (PyTorch's fused kernel, the default) or ``"reference"``
        (``attend``, the plain version the lessons read). Both give the same numbers to float rounding."""
        return self.blocks[0].attn.impl

    @attention.setter
    def attention(self, name: str):
        if name not in ATTENTION:
            raise ValueError(f"attention must be one of {sorted(ATTENTION)}, got {name!r}")
        for block in self.blocks:
            block.attn.impl = name

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_emb.weight.dtype

    def num_params(self, include_embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            n -= self.tok_emb.weight.numel() + (self.pos_emb.weight.numel() if self.pos_emb is not None else 0)
        return n

    def weight_bytes(self) -> int:
        """Bytes the weights occupy: every parameter and persistent buffer (a quantized layer keeps its int8
        weights and scales as buffers, notebook 05), each tensor once even when shared (tied embeddings)."""
        seen, total = set(), 0
        for module in self.modules():
            tensors = list(module._parameters.values())
            tensors += [b for n, b in module._buffers.items() if n not in module._non_persistent_buffers_set]
            for t in tensors:
                if t is not None and t.data_ptr() not in seen:
                    seen.add(t.data_ptr())
                    total += t.numel() * t.element_size()
        return total

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None, cache=None,
                attention_mask: torch.Tensor | None = None, last_only: bool = False,
                logits_to_keep: torch.Tensor | None = None, check_inputs: bool = True) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` for token ids ``idx [B, T]``.

        positions: ``[B, T]`` position of every token in its sequence (default: counted from the
            cache's length and ``attention_mask``).
        cache: any object with three calls, made in this order: ``reserve(T, attention_mask) -> (mask or None,
            positions)`` (room for the T new tokens, which keys each may see, and their positions),
            ``update(layer, k, v) -> (keys, values)`` (store this layer's new keys/values, return all of them,
            as Hugging Face's ``Cache.update``) and ``commit(T)`` (the new tokens now count as cached); see
            ``kvcache.KVCache`` and the engine's paged cache. A cache may instead compute attention itself
            with ``attend(layer, q, k, v, fn)``. None: plain causal attention over ``idx``.
        attention_mask: ``[B, T]`` bool, True for a real token and False for padding that nothing may attend
            to (as Hugging Face's ``attention_mask``).
        last_only: return logits ``[B, 1, vocab]`` for the last position only; generation needs no
            more, and the head over every prompt position is wasted work (Hugging Face: ``logits_to_keep=1``).
        logits_to_keep: 1-D tensor of the positions whose logits to return, ``[B, len, vocab]`` (Hugging
            Face's name): the engine's packed prefill keeps the last token of each sequence.
        check_inputs: check that ids and positions are in range (a pass over them, and a wait for the device);
            ``generate`` and the engine check their inputs once at the door and pass False for every step.
        """
        idx = self._check_idx(idx, check_inputs)
        B, T = idx.shape
        if attention_mask is not None:
            attention_mask = attention_mask.to(device=idx.device, dtype=torch.bool)
            if attention_mask.shape != idx.shape:
                raise ValueError(f"attention_mask must have the shape of idx {tuple(idx.shape)}, got {tuple(attention_mask.shape)}")
        if cache is None:
            mask = causal_mask(T, attention_mask, idx.device)
            default_pos = _count_positions(attention_mask, B, T, idx.device)
        else:
            mask, default_pos = cache.reserve(T, attention_mask)
        positions = default_pos if positions is None else positions.to(idx.device)
        if positions.shape != idx.shape:
            raise ValueError(f"positions must have the shape of idx {tuple(idx.shape)}, got {tuple(positions.shape)}")
        if check_inputs:
            lo, hi = _min_max(positions)
            if lo < 0 or hi >= self.config.max_seq_len:
                raise ValueError(f"positions must lie in [0, max_seq_len={self.config.max_seq_len}), got {lo}..{hi}")
        x, rope = self.embed(idx, positions)
        for layer, block in enumerate(self.blocks):
            x = block(x, rope, mask, cache, layer)
        if cache is not None:
            cache.commit(T)
        if logits_to_keep is not None:
            x = x[:, logits_to_keep]
        return self.head(x[:, -1:] if last_only else x)

    def embed(self, idx: torch.Tensor, positions: torch.Tensor):
        """Token embeddings (+ learned positions for gpt2), and the rotary tables for these positions (llama)."""
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            return x + self.pos_emb(positions), None
        return x, (self.rope_cos[positions][:, None], self.rope_sin[positions][:, None])

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm, then one logit per vocabulary entry."""
        return self.lm_head(self.norm(x))

    def _check_idx(self, idx, check_values: bool = True):
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.dim() == 1:
            idx = idx[None]
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must be integer token ids of shape [batch, time], got {idx.dtype} {tuple(idx.shape)}")
        if idx.shape[1] == 0:
            raise ValueError("idx is empty: give at least one token")
        lo, hi = _min_max(idx) if check_values else (0, 0)
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, vocab_size={self.config.vocab_size}), got {lo}..{hi}")
        return idx.long()


def _min_max(t: torch.Tensor) -> tuple[int, int]:
    """Smallest and largest entry in one pass (these checks run before every forward, the draft's included)."""
    if t.numel() == 0:
        return 0, 0
    lo, hi = torch.aminmax(t)
    return int(lo), int(hi)


def _count_positions(attention_mask, B, T, device):
    """Position of each token = how many real tokens precede it (padding gets position 0)."""
    if attention_mask is None:
        return torch.arange(T, device=device).expand(B, T)
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
