"""Prefill and decode, measured and counted; the KV cache seen from inside and sized (notebook 03).

Prefill reads the whole prompt in one forward pass and yields the first token; decoding then feeds
one token per step. With a KV cache a decode step computes keys and values for its one new token and
reads the earlier ones back; without, it recomputes the whole sequence.

* ``time_prefill`` / ``time_decode``: time both phases (``timing.measure``) for each kind of cache;
  ``prefill_flops`` / ``decode_flops`` count the matmul FLOPs of the same steps (``counting``).
* ``attention_weights`` / ``trace_cache``: the attention of the newest token over the cached positions,
  recomputed from the model's own modules on inputs captured by forward hooks (the widget of notebook 03).
* ``kv_cache_rows`` / ``concurrency_rows``: the cache of published model shapes, per token and per
  sequence, and how many sequences fit beside the weights on an accelerator.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from .config import ModelConfig
from .counting import (cache_equals_weights_context, dtype_bytes, forward_flops, kv_cache_bytes,
                       max_concurrent_sequences, weight_bytes)
from .generate import _check_max_new, encode_prompt
from .kvcache import ConcatKVCache, KVCache
from .model import apply_rope
from .timing import Timing, measure
from .tokenizer import BPETokenizer

CACHE_KINDS = ("contiguous", "concat", "none")
SEQ_LENS = (4096, 8192, 32768, 131072)
ACCELERATOR_GB = (24, 80, 141)  # e.g. a 24 GB consumer card, an 80 GB A100/H100, a 141 GB H200


# --- caches --------------------------------------------------------------------------------------------

def make_cache(model, kind: str = "contiguous", capacity: int | None = None, batch_size: int = 1):
    """A fresh cache for ``model``: ``"contiguous"`` (``KVCache``, preallocated), ``"concat"``
    (``ConcatKVCache``, grows by torch.cat) or ``"none"`` (no cache: returns None)."""
    if kind == "contiguous":
        return KVCache(model.config, batch_size, capacity, dtype=model.dtype, device=model.device)
    if kind == "concat":
        return ConcatKVCache(model.config, batch_size, dtype=model.dtype, device=model.device)
    if kind == "none":
        return None
    raise ValueError(f"kind must be one of {CACHE_KINDS}, got {kind!r}")


def rewind(cache, length: int) -> None:
    """Forget every cached token after the first ``length``, so one decode step can be timed again and
    again at the same position (notebook 03). The rows kept are untouched."""
    if not isinstance(cache, (KVCache, ConcatKVCache)):
        raise TypeError(f"cache must be a KVCache or ConcatKVCache, got {type(cache).__name__}")
    cache.truncate(length)


def wide_tokenizer(tok: BPETokenizer, vocab_size: int) -> BPETokenizer:
    """``tok`` stretched to a real model's vocabulary, so ``il.generate`` can run a random-weight model of
    that shape (e.g. GPT-2's 50,257 tokens): encoding is unchanged, ids ``tok`` lacks decode as ``<id>``."""
    if vocab_size < tok.vocab_size:
        raise ValueError(f"vocab_size must be at least the tokenizer's {tok.vocab_size}, got {vocab_size}")
    wide = BPETokenizer(tok.merges)
    wide.vocab += [f"<{i}>".encode() for i in range(tok.vocab_size, vocab_size)]
    return wide


def random_ids(model, n: int, seed: int = 0) -> torch.Tensor:
    """``[1, n]`` random token ids (timing does not depend on which tokens they are)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (1, n), generator=g).to(model.device)


# --- prefill and decode, timed --------------------------------------------------------------------------

@dataclass
class PhaseTimes:
    """Timings of one phase against a length: prompt lengths (prefill) or positions (decode)."""
    kind: str             # "contiguous", "concat" or "none"
    x: list[int]
    timings: list[Timing]

    @property
    def median_ms(self) -> list[float]:
        return [t.median_s * 1e3 for t in self.timings]

    @property
    def iqr_ms(self) -> list[float]:
        return [t.iqr_s * 1e3 for t in self.timings]


def _check_lengths(model, values, name, low):
    values = list(values)
    top = model.config.max_seq_len - 1 + low
    if not values or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and low <= v <= top
                             for v in values):
        raise ValueError(f"{name} must be a non-empty list of ints in [{low}, {top}] (max_seq_len="
                         f"{model.config.max_seq_len}), got {values!r}")
    return [int(v) for v in values]


def time_prefill(model, lengths, kind: str = "contiguous", warmup: int = 1, repeats: int = 5,
                 seed: int = 0) -> PhaseTimes:
    """Time to first token against prompt length: one forward pass over the whole prompt (into a fresh
    cache unless ``kind="none"``) and the greedy pick of the first new token (notebook 03)."""
    lengths = _check_lengths(model, lengths, "lengths", 1)
    ids = random_ids(model, max(lengths), seed)
    timings = []
    with torch.inference_mode():
        for T in lengths:
            def first_token(prompt=ids[:, :T], T=T):
                cache = make_cache(model, kind, capacity=T + 1)
                return int(model(prompt, cache=cache)[0, -1].argmax())
            timings.append(measure(first_token, warmup, repeats, device=model.device))
    return PhaseTimes(kind, lengths, timings)


def time_decode(model, positions, kind: str = "contiguous", warmup: int = 1, repeats: int = 5,
                seed: int = 0) -> PhaseTimes:
    """Time of one decode step against its position (notebook 03). The token at position p follows p
    earlier tokens: with a cache ("contiguous" or "concat") the step feeds that one token and reads the
    p earlier keys/values from the cache; without one ("none") it recomputes all p + 1 tokens, as the
    loop without a cache does. Each step ends with the greedy pick of the next token."""
    positions = _check_lengths(model, positions, "positions", 0)
    n = max(positions) + 1
    ids = random_ids(model, n, seed)
    timings = {}
    with torch.inference_mode():
        cache = make_cache(model, kind, capacity=n)
        if cache is not None and n > 1:
            model(ids[:, : n - 1], cache=cache)  # fill the cache once; each step rewinds to its position
        for p in sorted(set(positions), reverse=True):  # latest first: rewinding only ever drops rows
            if cache is None:
                def step(seq=ids[:, : p + 1]):
                    return int(model(seq)[0, -1].argmax())
            else:
                def step(token=ids[:, p: p + 1], p=p):
                    rewind(cache, p)
                    return int(model(token, cache=cache)[0, -1].argmax())
            timings[p] = measure(step, warmup, repeats, device=model.device)
    return PhaseTimes(kind, positions, [timings[p] for p in positions])


def prefill_flops(config: ModelConfig, lengths) -> list[int]:
    """Matmul FLOPs of the prefill of each prompt length: every token attends to the ones before it."""
    return [forward_flops(config, int(T)) for T in lengths]


def decode_flops(config: ModelConfig, positions, use_cache: bool = True) -> list[int]:
    """Matmul FLOPs of the decode step at each position: with the cache one new token over p + 1 keys,
    without it all p + 1 tokens again (notebook 03)."""
    return [forward_flops(config, 1, int(p) + 1) if use_cache else forward_flops(config, int(p) + 1)
            for p in positions]


# --- looking inside: which rows are new, where the new token looks ---------------------------------------

class _Recorder:
    """Passes the model's cache calls through and keeps what each layer's attention read."""

    def __init__(self, cache):
        self.cache = cache
        self.kv = {}

    def attention_mask(self, T, pad_mask):
        return self.cache.attention_mask(T, pad_mask)

    def append(self, layer, k, v):
        k_all, v_all = self.cache.append(layer, k, v)
        self.kv[layer] = (k_all, v_all)
        return k_all, v_all

    def advance(self, T):
        self.cache.advance(T)


def attention_weights(model, idx: torch.Tensor, cache=None, pad_mask=None):
    """Run ``model(idx, cache=cache, pad_mask=pad_mask)``; return ``(logits, weights)`` with every layer's
    attention weights ``[n_layer, B, n_head, T, S]`` (T new queries over all S keys they may see).

    A forward pre-hook captures each attention module's input; the weights are then recomputed with the
    module's own ``q_proj``/``k_proj`` and rotary positions, against the keys the cache handed back
    (notebook 03's widget). Query head h shares key/value head ``h // (n_head // n_kv_head)``.
    """
    cfg = model.config
    inputs = {}
    recorder = None if cache is None else _Recorder(cache)

    def capture(layer):
        def hook(module, args):
            inputs[layer] = args[:3]  # (x after the norm, rope tables, mask)
        return hook

    hooks = [block.attn.register_forward_pre_hook(capture(i)) for i, block in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            logits = model(idx, cache=recorder, pad_mask=pad_mask)
    finally:
        for h in hooks:
            h.remove()
    weights = []
    with torch.no_grad():
        for layer, block in enumerate(model.blocks):
            x, rope, mask = inputs[layer]
            B, T, _ = x.shape
            q = block.attn.q_proj(x).view(B, T, cfg.n_head, cfg.head_dim).transpose(1, 2)
            if recorder is None:
                k = block.attn.k_proj(x).view(B, T, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
                k = apply_rope(k, *rope) if rope is not None else k
            else:
                k = recorder.kv[layer][0]
            if rope is not None:
                q = apply_rope(q, *rope)
            k = k.repeat_interleave(cfg.n_head // cfg.n_kv_head, dim=1)
            scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(cfg.head_dim)
            scores = scores.masked_fill(~mask, float("-inf"))
            weights.append(torch.softmax(scores, dim=-1).nan_to_num(0.0))
    return logits, torch.stack(weights)


@dataclass
class CacheStep:
    """One step of generation as the cache sees it."""
    step: int
    start: int                # rows already cached before this step (reused, not recomputed)
    end: int                  # rows cached after it: rows start..end-1 were written now
    token_id: int             # the token this step picked
    attention: torch.Tensor   # [n_layer, n_head, end]: the newest token's attention over every cached row

    @property
    def new_rows(self) -> list[int]:
        return list(range(self.start, self.end))


@dataclass
class CacheTrace:
    tokens: list[int]         # prompt + generated ids
    prompt_len: int
    steps: list[CacheStep]
    keys: torch.Tensor        # [n_layer, n_kv_head, rows, head_dim]: the cache's keys at the end
    values: torch.Tensor
    capacity: int
    config: ModelConfig


def trace_cache(model, tok, prompt, max_new_tokens: int = 10) -> CacheTrace:
    """Greedy generation through a ``KVCache``, recording at every step which cache rows are new and which
    are reused, and the newest token's attention over all cached rows in every layer (notebook 03)."""
    cfg = model.config
    ids = encode_prompt(tok, prompt, cfg.max_seq_len)
    _check_max_new(max_new_tokens, len(ids), cfg.max_seq_len)
    cache = KVCache(cfg, 1, len(ids) + max_new_tokens, dtype=model.dtype, device=model.device)
    tokens, steps = list(ids), []
    step_input = torch.tensor([ids], device=model.device)
    for step in range(max_new_tokens):
        start = cache.length
        logits, weights = attention_weights(model, step_input, cache)
        token = int(logits[0, -1].argmax())
        steps.append(CacheStep(step, start, cache.length, token, weights[:, 0, :, -1].cpu()))
        tokens.append(token)
        step_input = torch.tensor([[token]], device=model.device)
    n = cache.length
    return CacheTrace(tokens, len(ids), steps, cache.k[:, 0, :, :n].cpu(), cache.v[:, 0, :, :n].cpu(),
                      cache.capacity, cfg)


# --- sizing the cache of real models ----------------------------------------------------------------------

def attention_kind(config: ModelConfig) -> str:
    """"multi-head", "grouped-query" or "multi-query", from how many key/value heads serve the query heads."""
    if config.n_kv_head == config.n_head:
        return "multi-head"
    if config.n_kv_head == 1:
        return "multi-query"
    return "grouped-query"


def format_bytes(n: float) -> str:
    """Decimal units, as accelerator memory is sold: 6.71 GB = 6.71e9 bytes."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def kv_cache_rows(configs, seq_lens=SEQ_LENS, dtype=torch.float16) -> list[dict]:
    """One row per model: its attention kind, bytes per token and bytes per sequence at each length."""
    rows = []
    for cfg in configs:
        rows.append({"name": cfg.name, "attention": attention_kind(cfg), "n_layer": cfg.n_layer,
                     "n_head": cfg.n_head, "n_kv_head": cfg.n_kv_head, "head_dim": cfg.head_dim,
                     "context": cfg.max_seq_len, "bytes_per_token": kv_cache_bytes(cfg, 1, 1, dtype),
                     "bytes_per_sequence": {n: kv_cache_bytes(cfg, n, 1, dtype) for n in seq_lens},
                     "weight_bytes": weight_bytes(cfg, dtype),
                     "crossover": cache_equals_weights_context(cfg, 1, dtype)})
    return rows


def format_kv_cache_table(rows) -> str:
    """``kv_cache_rows`` as a text table: KiB per token (1 KiB = 1,024 bytes), GB per sequence (10^9 bytes)."""
    lens = list(rows[0]["bytes_per_sequence"])
    head = (f"{'model':<18} {'attention':<13} {'layers':>6} {'q/kv heads':>10} {'KiB/token':>10} "
            + " ".join(f"{f'GB @ {n // 1024}k':>9}" for n in lens) + f" {'context':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        heads = f"{r['n_head']}/{r['n_kv_head']}"
        lines.append(f"{r['name']:<18} {r['attention']:<13} {r['n_layer']:>6} {heads:>10} "
                     f"{r['bytes_per_token'] / 1024:>10.1f} "
                     + " ".join(f"{r['bytes_per_sequence'][n] / 1e9:>9.2f}" for n in lens)
                     + f" {r['context']:>8,}")
    return "\n".join(lines)


def concurrency_rows(configs, seq_len: int = 8192, memory_gbs=ACCELERATOR_GB, dtype=torch.float16) -> list[dict]:
    """How many sequences of ``seq_len`` tokens fit beside the weights on each accelerator (0: the weights
    alone do not fit)."""
    return [{"name": cfg.name, "weight_bytes": weight_bytes(cfg, dtype),
             "sequence_bytes": kv_cache_bytes(cfg, seq_len, 1, dtype),
             "fit": {gb: max_concurrent_sequences(cfg, seq_len, gb, dtype) for gb in memory_gbs}}
            for cfg in configs]


def format_concurrency_table(rows, seq_len: int = 8192) -> str:
    gbs = list(rows[0]["fit"])
    head = (f"{'model':<18} {'weights':>9} {f'cache/seq @ {seq_len:,}':>18} "
            + " ".join(f"{f'{gb} GB':>7}" for gb in gbs))
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name']:<18} {format_bytes(r['weight_bytes']):>9} {format_bytes(r['sequence_bytes']):>18} "
                     + " ".join(f"{r['fit'][gb]:>7}" for gb in gbs))
    return "\n".join(lines)


def memory_budget(config: ModelConfig, seq_len: int, batch_size: int, memory_gb: float, dtype=torch.float16) -> dict:
    """Weights + KV cache of ``batch_size`` sequences of ``seq_len`` tokens against an accelerator's memory
    (the calculator widget of notebook 03). Bytes, GB = 10^9 bytes."""
    weights = weight_bytes(config, dtype)
    cache = kv_cache_bytes(config, seq_len, batch_size, dtype)
    memory = memory_gb * 1e9
    return {"weights": weights, "cache": cache, "total": weights + cache, "memory": memory,
            "fits": weights + cache <= memory, "bytes_per_number": dtype_bytes(dtype),
            "max_sequences": max_concurrent_sequences(config, seq_len, memory_gb, dtype)}
