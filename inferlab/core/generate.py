"""Generation: the token-by-token loop (notebooks 01-03).

``generate`` prefills the prompt, then decodes one token per forward pass, with or without the
KV cache, greedy or sampled, and times itself: time to first token (prefill + first pick) and
time per output token after that. ``stream`` yields the text as it is produced.
``generate_batch`` runs several prompts in lockstep (left-padded) through one cache.
"""
from __future__ import annotations

import codecs
import numbers
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..validate import boolean
from .kvcache import KVCache
from .sampling import check_sampling_args, make_generator, next_token_probs, sample_next


@dataclass
class Candidate:
    token_id: int
    text: str
    prob: float


@dataclass
class StepTrace:
    """One step of the loop: which token was picked, among which top candidates."""
    step: int
    position: int
    token_id: int
    text: str
    candidates: list[Candidate]


@dataclass
class GenerationResult:
    text: str                      # generated text (prompt excluded; cut before a stop string)
    tokens: list[int]              # generated token ids (prompt excluded)
    prompt_tokens: list[int]
    ttft_s: float                  # time to first token: tokenize + prefill + first pick
    tpot_s: float                  # mean time per output token after the first
    total_s: float
    finish_reason: str             # "length" or "stop"
    trace: list[StepTrace] | None = None
    step_times_s: list[float] = field(default_factory=list)  # wall time of each token's step

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.total_s if self.total_s > 0 else float("inf")


@dataclass
class StreamEvent:
    token_id: int
    text: str  # new text this token completes ("" mid UTF-8 character, or while it could start a stop string)


def token_bytes(tok, token_id: int) -> bytes:
    """The bytes of one token. A model with a larger vocabulary than the tokenizer (a real shape with
    random weights, say) can emit ids the tokenizer lacks: they show as ``<id>``. Without a tokenizer
    (``tok=None``, prompts given as ids) there is no text: empty bytes."""
    if tok is None:
        return b""
    return tok.vocab[token_id] if token_id < tok.vocab_size else f"<{token_id}>".encode()


def token_text(tok, token_id: int) -> str:
    return token_bytes(tok, token_id).decode("utf-8", errors="replace")


def encode_prompt(tok, prompt, max_seq_len: int, vocab_size: int | None = None) -> list[int]:
    """Prompt text (or ids) -> ids, with the bad-input checks every entry point shares. With ``vocab_size``,
    ids outside ``[0, vocab_size)`` are refused here, at the door, not deep inside the model."""
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError("prompt is empty: give at least one character")
        if tok is None:
            raise ValueError("a text prompt needs the tokenizer: pass tok, or give the prompt as a list of token ids")
        ids = tok.encode(prompt)
    elif isinstance(prompt, (list, tuple)) and all(isinstance(i, numbers.Integral) and not isinstance(i, bool)
                                                   for i in prompt):
        ids = [int(i) for i in prompt]
        if not ids:
            raise ValueError("prompt is empty: give at least one token id")
    else:
        raise TypeError(f"prompt must be a str or a list of token ids, got {type(prompt).__name__}")
    if vocab_size is not None and not all(0 <= i < vocab_size for i in ids):
        bad = next(i for i in ids if not 0 <= i < vocab_size)
        raise ValueError(f"prompt token ids must lie in [0, vocab_size={vocab_size}), got {bad}")
    if len(ids) >= max_seq_len:
        raise ValueError(f"prompt is {len(ids)} tokens long; the model's context (max_seq_len) is {max_seq_len}, "
                         f"so a prompt may have at most {max_seq_len - 1} tokens")
    return ids


def check_max_new_tokens(max_new_tokens, prompt_len, max_seq_len):
    if not isinstance(max_new_tokens, numbers.Integral) or isinstance(max_new_tokens, bool):
        raise TypeError(f"max_new_tokens must be an int >= 1, got {type(max_new_tokens).__name__}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt_len + max_new_tokens > max_seq_len:
        raise ValueError(f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"context max_seq_len={max_seq_len}; ask for at most {max_seq_len - prompt_len} new tokens")


def check_stop(stop) -> list[str]:
    """``stop`` (None, a string or a list of strings) as a list; anything else is a clear error."""
    if stop is None:
        return []
    if not isinstance(stop, (str, list, tuple)):
        raise TypeError(f"stop must be a str or a list of str, got {type(stop).__name__}")
    stops = [stop] if isinstance(stop, str) else list(stop)
    if not all(isinstance(s, str) and s for s in stops):
        raise ValueError(f"stop must be a non-empty str or a list of non-empty str, got {stop!r}")
    return stops


class TextAssembler:
    """Generated token ids -> text, the way ``generate`` and the engine both show it: whole characters only,
    cut before the first stop string, and held back while its end could still become one (so a stream never
    shows text that a stop string later removes)."""

    def __init__(self, tok, stop=None):
        self.tok, self.stops = tok, check_stop(stop)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._holdback = max((len(s) for s in self.stops), default=1) - 1
        self.text, self.shown, self.stopped, self.stop_string = "", 0, False, None

    def add(self, token_id: int, last: bool = False) -> str:
        """Append one token (``last``: no more will come); return the new text that is safe to show."""
        self.text += self._decoder.decode(token_bytes(self.tok, token_id), final=last)
        hits = [(self.text.find(s), s) for s in self.stops if s in self.text]
        if hits:
            at, self.stop_string = min(hits)
            self.text, self.stopped, last = self.text[:at], True, True
        ready = len(self.text) if last else max(self.shown, len(self.text) - self._holdback)
        new, self.shown = self.text[self.shown:ready], ready
        return new


def _token_loop(model, ids, max_new_tokens, temperature, top_k, top_p, seed, use_cache, on_logits=None):
    """Yield (token id, last-position logits) for each new token; the heart of every generate call."""
    device = model.device
    generator = make_generator(seed, device)
    cache = KVCache(model.config, 1, len(ids) + max_new_tokens, dtype=model.dtype, device=device) if use_cache else None
    seq = torch.tensor([ids], dtype=torch.long, device=device)
    step_input = seq
    for _ in range(max_new_tokens):
        # ids were checked at the door (encode_prompt), so no step re-checks them
        logits = (model(step_input, cache=cache, last_only=True, check_inputs=False) if use_cache
                  else model(seq, last_only=True, check_inputs=False))[:, -1]
        next_id = sample_next(logits, temperature, top_k, top_p, generator)
        token = int(next_id.item())  # .item() also waits for the device, so timings are honest
        yield token, logits[0]
        step_input = next_id.view(1, 1)
        if not use_cache:
            seq = torch.cat([seq, step_input], dim=1)


def stream(model, tok, prompt, max_new_tokens: int = 50, temperature: float = 0.0, top_k=None, top_p=None,
           seed=None, use_cache: bool = True, stop=None) -> Iterator[StreamEvent]:
    """Yield a ``StreamEvent`` per generated token, text decoded incrementally (whole characters only)."""
    result = None
    for event in _run(model, tok, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache, stop,
                      trace=False, trace_top=0):
        if isinstance(event, GenerationResult):
            result = event
        else:
            yield event
    return result


def generate(model, tok, prompt, max_new_tokens: int = 50, temperature: float = 0.0, top_k=None, top_p=None,
             seed=None, use_cache: bool = True, stop=None, trace: bool = False, trace_top: int = 5
             ) -> GenerationResult:
    """Generate up to ``max_new_tokens`` after ``prompt``. Temperature 0 is greedy.

    ``stop``: a string (or list) that ends generation; the text is cut before it.
    ``trace=True`` records each step's ``trace_top`` most likely candidates with their probabilities.
    """
    for event in _run(model, tok, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache, stop,
                      trace, trace_top):
        if isinstance(event, GenerationResult):
            return event
    raise AssertionError("unreachable")


def _run(model, tok, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache, stop, trace, trace_top):
    start = time.perf_counter()
    check_sampling_args(temperature, top_k, top_p)
    boolean("use_cache", use_cache), boolean("trace", trace)
    if trace and (not isinstance(trace_top, int) or isinstance(trace_top, bool) or trace_top < 1):
        raise ValueError(f"trace_top must be an int >= 1 (candidates recorded per step), got {trace_top!r}")
    text = TextAssembler(tok, stop)
    max_seq_len = model.config.max_seq_len
    ids = encode_prompt(tok, prompt, max_seq_len, model.config.vocab_size)
    check_max_new_tokens(max_new_tokens, len(ids), max_seq_len)
    tokens, steps, step_times = [], [], []
    finish = "length"
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            t_prev = start
            for token, logits in _token_loop(model, ids, max_new_tokens, temperature, top_k, top_p, seed, use_cache):
                now = time.perf_counter()
                step_times.append(now - t_prev)
                t_prev = now
                tokens.append(token)
                new_text = text.add(token, last=len(tokens) == max_new_tokens)
                if trace:
                    probs = next_token_probs(logits, temperature if temperature > 0 else 1.0, top_k, top_p)
                    top = probs.topk(min(trace_top, probs.numel()))
                    steps.append(StepTrace(len(tokens) - 1, len(ids) + len(tokens) - 1, token, token_text(tok, token),
                                           [Candidate(int(i), token_text(tok, int(i)), float(p))
                                            for p, i in zip(top.values, top.indices)]))
                yield StreamEvent(token, new_text)
                if text.stopped:
                    finish = "stop"
                    break
    finally:
        model.train(was_training)
    total = time.perf_counter() - start
    ttft = step_times[0]
    tpot = (total - ttft) / (len(tokens) - 1) if len(tokens) > 1 else 0.0
    yield GenerationResult(text.text, tokens, ids, ttft, tpot, total, finish, steps if trace else None, step_times)


def generate_batch(model, tok, prompts, max_new_tokens: int = 50, temperature: float = 0.0, top_k=None,
                   top_p=None, seed=None, pad_id: int = 0) -> list[GenerationResult]:
    """Several prompts at once through one KV cache, left-padded to a common length (notebook 05).

    Each sequence runs for ``max_new_tokens``; results keep the prompts' order. Timings are the
    batch's (every sequence waits for the whole batch).
    """
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompts")
    check_sampling_args(temperature, top_k, top_p)
    start = time.perf_counter()
    cfg = model.config
    all_ids = [encode_prompt(tok, p, cfg.max_seq_len, cfg.vocab_size) for p in prompts]
    width = max(len(i) for i in all_ids)
    if not isinstance(pad_id, numbers.Integral) or isinstance(pad_id, bool) or not 0 <= pad_id < cfg.vocab_size:
        raise ValueError(f"pad_id must be a token id, an int in [0, vocab_size={cfg.vocab_size}), got {pad_id!r}")
    check_max_new_tokens(max_new_tokens, width, cfg.max_seq_len)
    device = model.device
    B = len(all_ids)
    idx = torch.full((B, width), pad_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros(B, width, dtype=torch.bool, device=device)
    for b, ids in enumerate(all_ids):
        idx[b, width - len(ids):] = torch.tensor(ids, device=device)
        attention_mask[b, width - len(ids):] = True
    generator = make_generator(seed, device)
    cache = KVCache(cfg, B, width + max_new_tokens, dtype=model.dtype, device=device)
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            step_input, step_mask = idx, attention_mask
            for step in range(max_new_tokens):
                logits = model(step_input, cache=cache, attention_mask=step_mask, last_only=True, check_inputs=False)[:, -1]
                step_input = sample_next(logits, temperature, top_k, top_p, generator).view(B, 1)
                out.append(step_input[:, 0].tolist())
                if step == 0:
                    ttft = time.perf_counter() - start
                step_mask = None
    finally:
        model.train(was_training)
    total = time.perf_counter() - start
    tpot = (total - ttft) / (max_new_tokens - 1) if max_new_tokens > 1 else 0.0
    results = []
    for b, ids in enumerate(all_ids):
        toks = [step[b] for step in out]
        results.append(GenerationResult(b"".join(token_bytes(tok, t) for t in toks).decode("utf-8", errors="replace"), toks, ids, ttft, tpot, total, "length"))
    return results
