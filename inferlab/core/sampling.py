"""From logits to the next token: temperature, top-k, top-p and greedy (notebook 02).

The same function picks every token in ``generate``, the engine and speculative decoding, so the
controls mean the same thing everywhere.
"""
from __future__ import annotations

import numbers

import torch

# Below this temperature a draw is the argmax anyway, and dividing the logits by it overflows to inf (then NaN
# probabilities, and the draw fails): vLLM treats temperatures below 1e-5 as greedy (its ``_SAMPLING_EPS``,
# https://github.com/vllm-project/vllm/blob/main/vllm/sampling_params.py), and so do we.
GREEDY_BELOW = 1e-5


def check_sampling_args(temperature=0.0, top_k=None, top_p=None) -> None:
    """Raise a clear error for any control outside what is allowed.

    "Off" is ``None`` for both filters; ``top_p=1.0`` keeps every token too. ``top_k=0`` is refused
    rather than read as off (Hugging Face and vLLM read it as off), so a typo never silently disables it.
    """
    if not isinstance(temperature, numbers.Real) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a number >= 0, got {type(temperature).__name__}")
    if not temperature >= 0 or temperature == float("inf"):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None:
        if not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool):
            raise TypeError(f"top_k must be an int >= 1 or None, got {type(top_k).__name__}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, or None to keep every token (what top_k=0 means in "
                             f"Hugging Face's generate), got {top_k}")
    if top_p is not None:
        if not isinstance(top_p, numbers.Real) or isinstance(top_p, bool):
            raise TypeError(f"top_p must be a number in (0, 1] or None, got {type(top_p).__name__}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (or None to keep every token), got {top_p}")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits (exactly k, ties broken by index), set the rest to -inf."""
    k = min(int(k), logits.shape[-1])
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.topk(k, dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability adds up to at least p."""
    if p >= 1.0:
        return logits
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    keep_sorted = mass_before < p  # the first token is always kept (mass before it is 0)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def filtered_logits(logits: torch.Tensor, temperature: float = 1.0, top_k=None, top_p=None) -> torch.Tensor:
    """Logits after temperature, then top-k, then top-p (the order Hugging Face and vLLM use)."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k=None, top_p=None) -> torch.Tensor:
    """The distribution the next token is drawn from. Temperature 0 (or below ``GREEDY_BELOW``) puts all
    mass on the argmax."""
    check_sampling_args(temperature, top_k, top_p)
    if temperature < GREEDY_BELOW:
        return torch.zeros_like(logits, dtype=torch.float32).scatter(-1, logits.argmax(-1, keepdim=True), 1.0)
    return torch.softmax(filtered_logits(logits, temperature, top_k, top_p), dim=-1)


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k=None, top_p=None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Token ids ``[...]`` for logits ``[..., vocab]``: argmax at temperature 0 (or below ``GREEDY_BELOW``),
    else a draw."""
    if temperature < GREEDY_BELOW:
        return logits.argmax(-1)
    probs = torch.softmax(filtered_logits(logits, temperature, top_k, top_p), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def make_generator(seed, device) -> torch.Generator | None:
    """A seeded generator for reproducible draws, or None (use torch's global RNG)."""
    if seed is None:
        return None
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    return torch.Generator(device=device).manual_seed(int(seed))
