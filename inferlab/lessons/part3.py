"""Prefill and decode, measured and counted; the KV cache seen from inside and sized (notebook 03).

Prefill reads the whole prompt in one forward pass and yields the first token; decoding then feeds
one token per step. With a KV cache a decode step computes keys and values for its one new token and
reads the earlier ones back; without, it recomputes the whole sequence.

* ``time_prefill`` (the prompt lengths in alternation, ``timing.compare``) / ``time_decode``
  (``timing.measure``): time both phases for each kind of cache, and ``time_decode_kinds`` the kinds in
  alternation; ``prefill_flops`` / ``decode_flops`` count the matmul FLOPs of the same steps (``counting``).
* ``step_budget``: what a one-token step spends its time on, against this machine's measured memory
  bandwidth (reading the weights, or fixed per-step overhead).
* ``context_sweep``: one decode step of a batch against context length, in alternation, beside the bytes
  it reads (weights once, every sequence's cache): where reading the cache overtakes reading the weights.
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

from ..core.config import ModelConfig
from ..core.generate import check_max_new_tokens, encode_prompt
from ..core.kvcache import ConcatKVCache, KVCache
from ..core.model import apply_rope
from ..core.tokenizer import BPETokenizer
from ..measure.counting import (dtype_bytes, forward_flops, kv_cache_bytes, max_concurrent_sequences, param_bytes,
                                step_count)
from ..measure.decode_step import filled_cache
from ..measure.timing import Timing, busy_note, compare, measure

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
    cache unless ``kind="none"``) and the greedy pick of the first new token (notebook 03). The lengths
    are timed in alternation (``timing.compare``), so a machine that slows down slows them alike."""
    lengths = _check_lengths(model, lengths, "lengths", 1)
    if kind not in CACHE_KINDS:
        raise ValueError(f"kind must be one of {CACHE_KINDS}, got {kind!r}")
    ids = random_ids(model, max(lengths), seed)

    def first_token(T):
        def run(prompt=ids[:, :T]):
            cache = make_cache(model, kind, capacity=T + 1)
            return int(model(prompt, cache=cache)[0, -1].argmax())
        return run

    with torch.inference_mode():
        timings = compare({T: first_token(T) for T in sorted(set(lengths))}, repeats=repeats, warmup=warmup,
                          device=model.device)
    return PhaseTimes(kind, lengths, [timings[T] for T in lengths])


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
                    cache.truncate(p)
                    return int(model(token, cache=cache)[0, -1].argmax())
            timings[p] = measure(step, warmup, repeats, device=model.device)
    return PhaseTimes(kind, positions, [timings[p] for p in positions])


def time_decode_kinds(model, positions, kinds=CACHE_KINDS, warmup: int = 1, repeats: int = 5, seed: int = 0,
                      progress=None) -> list[PhaseTimes]:
    """``time_decode`` for several kinds of cache, timed in alternation at each position (``timing.compare``:
    kind a, kind b, kind c, a, b, c, ...), so a machine that slows down slows every kind alike (notebook 03).
    ``progress``: optional wrapper for the loop over positions (e.g. ``inferlab.progress.progress``)."""
    positions = _check_lengths(model, positions, "positions", 0)
    kinds = list(kinds)
    if not kinds or any(k not in CACHE_KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty list drawn from {CACHE_KINDS}, got {kinds!r}")
    n = max(positions) + 1
    ids = random_ids(model, n, seed)
    timings = {kind: {} for kind in kinds}
    with torch.inference_mode():
        caches = {kind: make_cache(model, kind, capacity=n) for kind in kinds}
        for cache in caches.values():
            if cache is not None and n > 1:
                model(ids[:, : n - 1], cache=cache)  # fill once; each step rewinds to its position
        order = sorted(set(positions), reverse=True)  # latest first: rewinding only ever drops rows
        for p in (progress(order) if progress else order):
            steps = {}
            for kind, cache in caches.items():
                if cache is None:
                    steps[kind] = lambda seq=ids[:, : p + 1]: int(model(seq)[0, -1].argmax())
                else:
                    def step(token=ids[:, p: p + 1], p=p, cache=cache):
                        cache.truncate(p)
                        return int(model(token, cache=cache)[0, -1].argmax())
                    steps[kind] = step
            for kind, t in compare(steps, repeats=repeats, warmup=warmup, device=model.device).items():
                timings[kind][p] = t
    return [PhaseTimes(kind, positions, [timings[kind][p] for p in positions]) for kind in kinds]


def prefill_flops(config: ModelConfig, lengths) -> list[int]:
    """Matmul FLOPs of the prefill of each prompt length: every token attends to the ones before it."""
    return [forward_flops(config, int(T)) for T in lengths]


def decode_flops(config: ModelConfig, positions, use_cache: bool = True) -> list[int]:
    """Matmul FLOPs of the decode step at each position: with the cache one new token over p + 1 keys,
    without it all p + 1 tokens again (notebook 03)."""
    return [forward_flops(config, 1, int(p) + 1) if use_cache else forward_flops(config, int(p) + 1)
            for p in positions]


# --- what a one-token step spends its time on ------------------------------------------------------------

@dataclass
class StepBudget:
    """One decode step (measured) against the time its weights take to read at a measured bandwidth."""
    name: str
    step_s: float         # measured time of one decode step (median)
    weight_bytes: int     # weights the step reads (counting.step_count: the input embedding is only looked up)
    bandwidth: float      # bytes/s this machine read in a plain probe (measure.machine.read_bandwidth)

    @property
    def read_s(self) -> float:
        """Time to read the weights once at the probe's bandwidth."""
        return self.weight_bytes / self.bandwidth

    @property
    def read_share(self) -> float:
        """The share of the step that reading the weights accounts for (above 1: the step read faster
        than the probe did; the probe is not this machine's peak)."""
        return self.read_s / self.step_s

    @property
    def streamed(self) -> float:
        """Bytes/s at which the step went through its weights."""
        return self.weight_bytes / self.step_s

    @property
    def verdict(self) -> str:
        if self.read_share >= 0.5:
            return "mostly reading its weights (memory-bound)"
        if self.read_share < 0.3:
            return "mostly fixed per-step overhead (Python, dispatch, hundreds of small operations), not reading weights"
        return "split between reading its weights and fixed per-step overhead"


def step_budget(name: str, model_or_config, step_s: float, bandwidth: float, n_context: int = 1) -> StepBudget:
    """What one decode step of batch 1 spends its time on (notebook 03): the bytes of weights it must read
    (``counting.step_count``, as notebook 04 counts them) against ``step_s`` measured and ``bandwidth``
    (bytes/s) measured by a plain read. A step far slower than its read is overhead-bound."""
    config = getattr(model_or_config, "config", model_or_config)
    dtype = getattr(model_or_config, "dtype", torch.float32)
    for arg, value in (("step_s", step_s), ("bandwidth", bandwidth)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"{arg} must be a positive number, got {value!r}")
    count = step_count(config, 1, n_context, 1, dtype)
    return StepBudget(name, float(step_s), count.weight_bytes, float(bandwidth))


# --- long context: when reading the cache overtakes reading the weights ------------------------------------

@dataclass
class ContextSweep:
    """One decode step of a batch against context length (``context_sweep``)."""
    name: str
    batch_size: int
    contexts: list[int]       # tokens each sequence attends to, the new one included
    timings: list[Timing]
    weight_bytes: int         # weights read per step (the whole batch shares one read)
    cache_bytes: list[int]    # cached keys/values read per step, all sequences together
    crossover: int            # context at which the cache bytes equal the weight bytes

    @property
    def median_s(self) -> list[float]:
        return [t.median_s for t in self.timings]

    @property
    def bytes(self) -> list[int]:
        return [self.weight_bytes + c for c in self.cache_bytes]

    @property
    def predicted_s(self) -> list[float]:
        """If a step's time follows the bytes it reads: the shortest context's time, scaled by bytes."""
        t0, b0 = self.median_s[0], self.bytes[0]
        return [t0 * b / b0 for b in self.bytes]

    @property
    def growth(self) -> float:
        """Measured time of the longest context's step over the shortest's."""
        return self.median_s[-1] / self.median_s[0]

    @property
    def predicted_growth(self) -> float:
        return self.bytes[-1] / self.bytes[0]

    def fit(self) -> tuple[float, float]:
        """Least-squares line time = fixed + per_byte x cache bytes: (fixed seconds, seconds per cache byte).
        ``fixed`` is what the step costs besides the cache (the weights, overhead)."""
        x, y = torch.tensor(self.cache_bytes, dtype=torch.float64), torch.tensor(self.median_s, dtype=torch.float64)
        xm, ym = x.mean(), y.mean()
        slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
        return float(ym - slope * xm), slope

    @property
    def measured_crossover(self) -> float | None:
        """Context at which the fitted time of reading the cache equals the rest of the step (None when the
        time did not grow with the cache)."""
        fixed, per_byte = self.fit()
        if per_byte <= 0 or fixed <= 0:
            return None
        per_token = self.cache_bytes[-1] / (self.contexts[-1] - 1)  # cache bytes per token of context
        return 1 + fixed / (per_byte * per_token)

    def conclusion(self) -> str:
        """What happened on this machine, in words, as a check against the prediction from bytes."""
        note = busy_note(*self.timings)
        fixed, per_byte = self.fit()
        lines = [f"bytes predicted: the step at {self.contexts[-1]:,} tokens reads {self.predicted_growth:.1f}x the "
                 f"bytes of the step at {self.contexts[0]:,}; measured: it took {self.growth:.1f}x the time."]
        if note:  # too noisy to carry a conclusion: say so instead of drawing one
            return "\n".join(lines + [note])
        measured = self.measured_crossover
        if measured is None:
            lines.append("Here the time did not grow with the context, so this run cannot show the cache's cost: "
                         "the machine was probably busy (or the step is dominated by something else); run it again.")
        else:
            where = (f"at about {measured:,.0f} tokens" if measured <= self.contexts[-1] * 4
                     else "far beyond this context")
            lines.append(f"A straight line through the points says reading the cache costs as much time as the rest "
                         f"of the step {where} (by bytes: {self.crossover:,}).")
            if measured <= self.contexts[-1]:
                lines.append(f"On this machine the cache became the bigger part of the step within the model's "
                             f"context: past about {measured:,.0f} tokens, each step spends more time reading the "
                             f"{self.batch_size} caches than everything else.")
            else:
                lines.append("On this machine the cache's share of the step grew with the context but did not "
                             "overtake the rest within this context. It would cross near the bytes' crossover if "
                             "reading memory were all a step did; here the rest of the step (arithmetic for "
                             f"{self.batch_size} sequences, fixed overhead) costs more than its bytes say, or the "
                             "machine was busy.")
            if measured < self.crossover:
                lines.append("It came sooner than the bytes say: each cached byte cost more time than a weight byte "
                             "(attention runs as many small products, which stream memory less efficiently than the "
                             "large weight matrices).")
        return "\n".join(lines)


def context_sweep(model, batch_size: int, contexts, warmup: int = 1, repeats: int = 5, name: str = "") -> ContextSweep:
    """Time one decode step of ``batch_size`` sequences at each context length (tokens attended, the new one
    included), all contexts in alternation (``timing.compare``), each through its own ``filled_cache``, rewound
    after every step; beside the bytes each step reads (notebook 03)."""
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    contexts = sorted(set(_check_lengths(model, contexts, "contexts", 1)))
    if len(contexts) < 2:
        raise ValueError(f"contexts must hold at least two different lengths, got {contexts!r}")
    cfg = model.config
    token = torch.randint(0, cfg.vocab_size, (batch_size, 1), generator=torch.Generator().manual_seed(0))
    token = token.to(model.device)

    def stepper(n):
        cache = filled_cache(model, batch_size, n - 1, capacity=n)   # n - 1 cached tokens, then the new one

        def step():
            cache.truncate(n - 1)   # rewind: every timed step sees the same context
            with torch.inference_mode():
                return model(token, cache=cache, last_only=True)
        return step

    timings = compare({n: stepper(n) for n in contexts}, repeats=repeats, warmup=warmup, device=model.device)
    counts = [step_count(cfg, 1, n, batch_size, model.dtype) for n in contexts]
    weights = counts[0].weight_bytes
    per_token = kv_cache_bytes(cfg, 1, batch_size, model.dtype)
    return ContextSweep(name or cfg.name, batch_size, contexts, [timings[n] for n in contexts], weights,
                        [c.kv_read_bytes for c in counts], -(-weights // per_token))


# --- looking inside: which rows are new, where the new token looks ---------------------------------------

class _Recorder:
    """Passes the model's cache calls through and keeps what each layer's attention read."""

    def __init__(self, cache):
        self.cache = cache
        self.kv = {}

    def reserve(self, T, attention_mask):
        return self.cache.reserve(T, attention_mask)

    def update(self, layer, k, v):
        k_all, v_all = self.cache.update(layer, k, v)
        self.kv[layer] = (k_all, v_all)
        return k_all, v_all

    def commit(self, T):
        self.cache.commit(T)


def attention_weights(model, idx: torch.Tensor, cache=None, attention_mask=None):
    """Run ``model(idx, cache=cache, attention_mask=attention_mask)``; return ``(logits, weights)`` with every layer's
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
            logits = model(idx, cache=recorder, attention_mask=attention_mask)
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
            if mask is not None:   # (None: the new token sees every cached one)
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
    check_max_new_tokens(max_new_tokens, len(ids), cfg.max_seq_len)
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


def format_bytes_binary(n: float) -> str:
    """Binary units, as per-token cache sizes are quoted: 128 KiB = 131,072 bytes; small counts stay in bytes."""
    if not isinstance(n, numbers.Real) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a number of bytes >= 0, got {n!r}")
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            value = n / size
            return f"{value:,.0f} {unit}" if value == int(value) or value >= 100 else f"{value:.1f} {unit}"
    return f"{n:,.0f} bytes" if n != 1 else "1 byte"


def weights_read_per_step(config: ModelConfig, batch_size: int = 1, dtype=torch.float16) -> int:
    """Bytes of weights one decode step reads, as notebook 04 counts them (``counting.step_count``): every
    matrix once, but of the input embedding table only the rows of the tokens fed (the whole table when it
    is tied to the output head, which multiplies by all of it)."""
    return step_count(config, 1, 1, batch_size, dtype).weight_bytes


def cache_equals_weights_read(config: ModelConfig, batch_size: int = 1, dtype=torch.float16) -> int:
    """Tokens of context at which reading ``batch_size`` caches costs a decode step as many bytes as
    reading its weights (``weights_read_per_step``), rounded up (notebook 03)."""
    per_token = kv_cache_bytes(config, 1, batch_size, dtype)
    return -(-weights_read_per_step(config, batch_size, dtype) // per_token)


def kv_cache_rows(configs, seq_lens=SEQ_LENS, dtype=torch.float16) -> list[dict]:
    """One row per model: its attention kind, bytes per token and bytes per sequence at each length."""
    rows = []
    for cfg in configs:
        rows.append({"name": cfg.name, "attention": attention_kind(cfg), "n_layer": cfg.n_layer,
                     "n_head": cfg.n_head, "n_kv_head": cfg.n_kv_head, "head_dim": cfg.head_dim,
                     "context": cfg.max_seq_len, "bytes_per_token": kv_cache_bytes(cfg, 1, 1, dtype),
                     "bytes_per_sequence": {n: kv_cache_bytes(cfg, n, 1, dtype) for n in seq_lens},
                     "weight_bytes": param_bytes(cfg, dtype),
                     "crossover": cache_equals_weights_read(cfg, 1, dtype)})
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
    return [{"name": cfg.name, "weight_bytes": param_bytes(cfg, dtype),
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
    (the calculator widget of notebook 03). Bytes, GB = 10^9 bytes. ``exceeds_context``: the model was
    built to read at most ``context`` tokens, so a longer sequence is out of its reach whatever the memory."""
    weights = param_bytes(config, dtype)
    cache = kv_cache_bytes(config, seq_len, batch_size, dtype)
    memory = memory_gb * 1e9
    return {"weights": weights, "cache": cache, "total": weights + cache, "memory": memory,
            "fits": weights + cache <= memory, "bytes_per_number": dtype_bytes(dtype),
            "bytes_per_token": kv_cache_bytes(config, 1, 1, dtype),
            "context": config.max_seq_len, "exceeds_context": seq_len > config.max_seq_len,
            "max_sequences": max_concurrent_sequences(config, seq_len, memory_gb, dtype)}
