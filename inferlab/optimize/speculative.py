"""Speculative decoding: a small draft model guesses, the big model checks (notebook 05).

Decoding is sequential and memory-bound: each step reads all the target's weights to produce one
token. Checking several tokens in one forward pass costs about the same as producing one, so a
cheap draft model proposes ``gamma`` tokens and the target verifies them all at once.

The acceptance rule (Leviathan et al. 2023; Chen et al. 2023): the draft proposes ``x ~ q``; keep it
with probability ``min(1, p(x) / q(x))``, where ``p`` is the target's distribution; at the first
rejection, draw instead from ``normalize(max(0, p - q))`` and end the round. If all ``gamma`` are kept,
draw one bonus token from the target's next distribution. Every token then follows ``p`` exactly, so the
output has the target's distribution, and at temperature 0 it is the target's greedy output token for
token. Both models keep a KV cache; rejected tokens are rolled back with ``KVCache.truncate``.

With acceptance rate ``alpha`` and the draft's step costing ``c`` target steps, the expected speedup is
``(1 - alpha**(gamma + 1)) / ((1 - alpha) * (gamma * c + 1))`` (Leviathan et al. 2023, Theorem 3.8).

A fixed ``gamma`` wastes draft steps where the draft is unsure and stops early where it is sure. With
``min_confidence`` the draft length adapts (Hugging Face's assisted generation does the same with
``assistant_confidence_threshold``): the draft ends the round's proposals after a token it gave less than
that probability, and ``gamma`` is the most it proposes. The rule only looks at the draft's own
distribution over the prefix, so every token still follows the target's distribution.
"""
from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field

import torch

from ..core.generate import check_max_new_tokens, encode_prompt, token_bytes
from ..core.kvcache import KVCache
from ..core.sampling import check_sampling_args, make_generator, next_token_probs


@dataclass
class SpeculativeResult:
    text: str
    tokens: list[int]            # generated ids (prompt excluded)
    prompt_tokens: list[int]
    rounds: int                  # target forward passes
    draft_steps: int             # draft forward passes
    proposed: int                # draft tokens proposed
    judged: int                  # draft tokens the rule looked at (proposals after a rejection are not)
    accepted: int                # draft tokens kept
    total_s: float
    accepted_per_round: list[int] = field(default_factory=list)
    draft_s: float = 0.0         # wall time inside the draft's forward passes
    target_s: float = 0.0        # wall time inside the target's forward passes

    @property
    def acceptance_rate(self) -> float:
        """alpha: the share of judged draft tokens that were kept."""
        return self.accepted / self.judged if self.judged else float("nan")

    @property
    def tokens_per_round(self) -> float:
        return len(self.tokens) / self.rounds if self.rounds else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.total_s if self.total_s > 0 else float("inf")


def expected_speedup(alpha: float, gamma: int, c: float) -> float:
    """Leviathan et al. 2023: expected tokens per round / cost of a round in target steps."""
    return expected_tokens_per_round(alpha, gamma) / (gamma * c + 1)


def expected_tokens_per_round(alpha: float, gamma: int) -> float:
    """(1 - alpha^(gamma+1)) / (1 - alpha): the accepted drafts plus the one token the target adds."""
    if alpha >= 1:
        return gamma + 1.0
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """normalize(max(0, p - q)): what to draw from after a rejection (p itself where p == q)."""
    r = (p - q).clamp(min=0)
    total = r.sum(-1, keepdim=True)
    return torch.where(total > 0, r / total.clamp(min=1e-30), p)


def accept_or_resample(p: torch.Tensor, q: torch.Tensor, x: int, generator=None) -> tuple[bool, int]:
    """One draft token ``x ~ q`` judged against the target's ``p``: (kept?, token to emit)."""
    u = torch.rand((), generator=generator, device=p.device)
    if u * q[x] < p[x]:  # u < p(x) / q(x), without dividing by zero
        return True, x
    return False, int(torch.multinomial(residual(p, q), 1, generator=generator).item())


def draft_confidence(logits: torch.Tensor, x: int, qs: list) -> float:
    """The probability the draft gave its token ``x``: from the distribution it drew from if it sampled
    (``qs[-1]``), else from its plain softmax (greedy)."""
    if qs:
        return float(qs[-1][x])
    return float(torch.softmax(logits.float(), -1)[x])


def _check_gamma(gamma):
    if not isinstance(gamma, numbers.Integral) or isinstance(gamma, bool):
        raise TypeError(f"gamma must be an int >= 1, got {type(gamma).__name__}")
    if gamma < 1:
        raise ValueError(f"gamma (draft tokens per round) must be >= 1, got {gamma}")


def _check_min_confidence(min_confidence):
    if min_confidence is None:
        return
    if not isinstance(min_confidence, numbers.Real) or isinstance(min_confidence, bool):
        raise TypeError(f"min_confidence must be a probability in [0, 1] or None, got {type(min_confidence).__name__}")
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence must be a probability in [0, 1] (or None for a fixed gamma), "
                         f"got {min_confidence}")


def speculative_generate(target, draft, tok, prompt, max_new_tokens: int = 50, gamma: int = 4,
                         temperature: float = 0.0, top_k=None, top_p=None, seed=None,
                         min_confidence: float | None = None) -> SpeculativeResult:
    """Generate like ``il.generate(target, ...)``, with ``draft`` proposing ``gamma`` tokens per round.

    ``prompt`` is text or a list of ids (``tok`` may be None for ids). Both models must share the vocabulary.
    Temperature 0 gives exactly the target's greedy tokens; otherwise the tokens follow the target's
    distribution (after the same temperature / top-k / top-p). ``min_confidence``: end a round's drafts
    after one the draft gave less probability than this (at most ``gamma`` still); None: always ``gamma``.
    """
    start = time.perf_counter()
    _check_gamma(gamma)
    _check_min_confidence(min_confidence)
    check_sampling_args(temperature, top_k, top_p)
    if target.config.vocab_size != draft.config.vocab_size:
        raise ValueError(f"target and draft must share the vocabulary: {target.config.vocab_size} != "
                         f"{draft.config.vocab_size}")
    max_len = min(target.config.max_seq_len, draft.config.max_seq_len)
    ids = encode_prompt(tok, prompt, max_len)
    check_max_new_tokens(max_new_tokens, len(ids), max_len)
    device = target.device
    generator = make_generator(seed, device)
    capacity = len(ids) + max_new_tokens
    tcache = KVCache(target.config, 1, capacity, dtype=target.dtype, device=device)
    dcache = KVCache(draft.config, 1, capacity, dtype=draft.dtype, device=device)
    seq = list(ids)
    rounds = draft_steps = proposed = judged = accepted = 0
    draft_s = target_s = 0.0
    per_round = []

    def probs(logits):
        return next_token_probs(logits.float(), temperature, top_k, top_p)

    def pick(dist):
        if temperature == 0:
            return int(dist.argmax())
        return int(torch.multinomial(dist, 1, generator=generator).item())

    modes = (target.training, draft.training)
    target.eval(), draft.eval()
    try:
        with torch.inference_mode():
            while len(seq) - len(ids) < max_new_tokens:
                remaining = max_new_tokens - (len(seq) - len(ids))
                g = min(gamma, remaining - 1)  # never propose past the last token asked for
                # 1. the draft proposes g tokens, one forward pass each (fed whatever it has not seen yet)
                drafts, qs = [], []
                step_in = seq[dcache.length:]
                for _ in range(g):
                    t0 = time.perf_counter()
                    logits = draft(torch.tensor([step_in], device=device), cache=dcache, last_only=True)[0, -1]
                    draft_s += time.perf_counter() - t0
                    if temperature == 0:  # greedy: the draft's pick is its argmax, no distribution needed
                        x = int(logits.argmax())
                    else:
                        qs.append(probs(logits))
                        x = pick(qs[-1])
                    drafts.append(x)
                    step_in = [x]
                    if min_confidence is not None and draft_confidence(logits, x, qs) < min_confidence:
                        break   # unsure: a later draft would likely be rejected, let the target check these
                g = len(drafts)
                draft_steps += g
                proposed += g
                # 2. the target scores all of them in one forward pass: g + 1 distributions
                fed = seq[tcache.length:] + drafts
                t0 = time.perf_counter()
                logits = target(torch.tensor([fed], device=device), cache=tcache)[0, -(g + 1):]
                target_s += time.perf_counter() - t0
                # 3. keep drafts while the rule accepts; the first rejection is replaced and ends the round.
                # Greedy: p and q are one-hot, so the rule keeps x exactly when it is the target's argmax.
                if temperature == 0:
                    best = logits.argmax(-1).tolist()
                else:
                    ps = probs(logits)
                n_ok, new = 0, None
                for i, x in enumerate(drafts):
                    judged += 1
                    if temperature == 0:
                        ok, y = x == best[i], best[i]
                    else:
                        ok, y = accept_or_resample(ps[i], qs[i], x, generator)
                    if not ok:
                        new = y
                        break
                    n_ok += 1
                if new is None:  # every draft kept: the target's next distribution gives a bonus token
                    new = best[g] if temperature == 0 else pick(ps[g])
                seq += drafts[:n_ok] + [new]
                accepted += n_ok
                per_round.append(n_ok)
                rounds += 1
                # 4. roll back: caches keep only committed tokens (the newest is fed next round)
                tcache.truncate(len(seq) - 1)
                dcache.truncate(min(dcache.length, len(seq) - 1))
    finally:
        target.train(modes[0]), draft.train(modes[1])
    out = seq[len(ids):len(ids) + max_new_tokens]
    text = b"".join(token_bytes(tok, t) for t in out).decode("utf-8", errors="replace")
    return SpeculativeResult(text, out, ids, rounds, draft_steps, proposed, judged, accepted,
                             time.perf_counter() - start, per_round, draft_s, target_s)
