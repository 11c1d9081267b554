"""Exercises of notebook 02 (how inference works): tokens, sampling controls, the greedy choice.

Every check recomputes the right answer with the package's own code (the bundled tokenizer and
model, ``inferlab.sampling``), so it stays right if the bundled checkpoint is retrained.
"""
from __future__ import annotations

import numbers
from functools import lru_cache

import torch

from . import exercise

# Inputs the notebook shows for the exercises.
EX21_TEXT = "Grüße 🙂"
EX22_LOGITS = [1.5, -0.3, 4.0, 2.2, 3.1, 0.0, 2.9, -2.0]
EX22_K = 3
EX23_LOGITS = [2.0, 1.0, 0.0]
EX23_TEMPERATURE = 0.5
EX24_LOGITS = [3.0, 2.5, 1.0, 0.2, 2.0, -1.0]
EX24_P = 0.8
EX25_PROMPT = "The return value of a function is"


@lru_cache(maxsize=1)
def _tokenizer():
    from ..pretrained import load_tokenizer
    return load_tokenizer()


@lru_cache(maxsize=1)
def _model_and_tokenizer():
    from ..pretrained import load_pretrained
    return load_pretrained()


def _as_int(answer) -> int:
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, numbers.Integral):
        raise TypeError(f"expected an int, got {type(answer).__name__}")
    return int(answer)


def _as_id_set(answer) -> set[int]:
    if isinstance(answer, torch.Tensor):
        answer = answer.flatten().tolist()
    if isinstance(answer, (str, bytes)) or not hasattr(answer, "__iter__"):
        raise TypeError(f"expected a list or set of token ids, got {type(answer).__name__}")
    return {_as_int(a) for a in answer}


def _survivors(logits, **controls) -> set[int]:
    from ..sampling import next_token_probs
    probs = next_token_probs(torch.tensor(logits), **controls)
    return set(torch.nonzero(probs > 0).flatten().tolist())


def tokens_in(text: str) -> int:
    """How many tokens the bundled tokenizer makes of ``text``."""
    return len(_tokenizer().encode(text))


def greedy_next_token(prompt: str) -> int:
    """The id the bundled model picks after ``prompt`` at temperature 0 (the argmax of the last logits)."""
    model, tok = _model_and_tokenizer()
    with torch.inference_mode():
        logits = model(torch.tensor([tok.encode(prompt)]))[0, -1]
    return int(logits.argmax())


@exercise("2.1", f"How many tokens does the bundled tokenizer make of {EX21_TEXT!r}? Answer with an int.",
          f"""answer = len(tok.encode({EX21_TEXT!r}))
Letters the training text rarely saw (ü, ß) and the emoji have no token of their own, so they fall
back to their UTF-8 bytes: 'ü' is 2 bytes, 'ß' 2, '🙂' 4. Count with the tokenizer, not by eye.""")
def _check_21(answer):
    right = tokens_in(EX21_TEXT)
    n = _as_int(answer)
    if n == right:
        return True, (f"{len(EX21_TEXT)} characters, {len(EX21_TEXT.encode('utf-8'))} bytes, {right} tokens: "
                      "rare characters cost several tokens each.")
    if n == len(EX21_TEXT):
        return False, "That is the number of characters; the model never sees characters, only token ids."
    return False, "Count the ids that tok.encode returns."


@exercise("2.2", f"Which token ids survive top-k={EX22_K} on the logits {EX22_LOGITS}? Answer with a list or set of ids.",
          f"""logits = torch.tensor({EX22_LOGITS})
answer = set(logits.topk({EX22_K}).indices.tolist())   # -> {{2, 4, 6}}
Top-k keeps the k largest logits (here 4.0, 3.1, 2.9 at ids 2, 4, 6) and sets the rest to -inf, so
softmax gives them probability 0. The same check with the package:
set(torch.nonzero(il.next_token_probs(logits, top_k={EX22_K})).flatten().tolist())""")
def _check_22(answer):
    right = _survivors(EX22_LOGITS, top_k=EX22_K)
    got = _as_id_set(answer)
    if got == right:
        return True, "Exactly the k largest logits survive; every other token gets probability 0."
    if len(got) != EX22_K:
        return False, f"Top-k={EX22_K} keeps exactly {EX22_K} tokens; you gave {len(got)}."
    values = sorted(EX22_LOGITS, reverse=True)[:EX22_K]
    return False, f"Token ids are positions in the logits vector; look for the positions of {values}."


@exercise("2.3", f"With logits {EX23_LOGITS} and temperature {EX23_TEMPERATURE}, what is the probability of "
                 "token 0? Answer with a float (3 decimals are enough).",
          f"""logits = torch.tensor({EX23_LOGITS})
answer = torch.softmax(logits / {EX23_TEMPERATURE}, dim=-1)[0].item()   # about 0.867
Dividing by a temperature below 1 stretches the gaps between logits (2, 1, 0 -> 4, 2, 0), so the
top token takes more of the mass than at temperature 1 (0.665).""")
def _check_23(answer):
    from ..sampling import next_token_probs
    right = float(next_token_probs(torch.tensor(EX23_LOGITS), EX23_TEMPERATURE)[0])
    if isinstance(answer, torch.Tensor):
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        raise TypeError(f"expected a float, got {type(answer).__name__}")
    got = float(answer)
    if abs(got - right) <= 1e-3:
        return True, f"p = {right:.4f}: a lower temperature sharpens the distribution."
    plain = float(torch.softmax(torch.tensor(EX23_LOGITS), -1)[0])
    if abs(got - plain) <= 1e-3:
        return False, "That is the probability at temperature 1: divide the logits by the temperature first."
    if abs(got - float(torch.softmax(torch.tensor(EX23_LOGITS) * EX23_TEMPERATURE, -1)[0])) <= 1e-3:
        return False, "You multiplied by the temperature; divide by it."
    return False, "softmax(logits / temperature), then read entry 0."


@exercise("2.4", f"Which token ids survive top-p={EX24_P} on the logits {EX24_LOGITS}? Answer with a list or set of ids.",
          f"""probs = torch.softmax(torch.tensor({EX24_LOGITS}), dim=-1)
# sorted: id 0 (0.46), id 1 (0.28), id 4 (0.17), id 2 (0.06), ...; running total 0.46, 0.73, 0.90 >= {EX24_P}
answer = {{0, 1, 4}}
Top-p (nucleus) keeps the fewest most-likely tokens whose probabilities add up to at least p;
how many that is depends on how peaked the distribution is, unlike top-k.""")
def _check_24(answer):
    right = _survivors(EX24_LOGITS, top_p=EX24_P)
    got = _as_id_set(answer)
    if got == right:
        return True, "The smallest set of most likely tokens whose mass reaches p."
    probs = torch.softmax(torch.tensor(EX24_LOGITS), -1)
    if got < right:
        return False, (f"Those hold only {float(probs[list(got)].sum()):.2f} of the mass; keep adding the next most "
                       f"likely token until the total reaches {EX24_P}.")
    return False, "Sort by probability, add them up from the top, stop as soon as the total reaches p."


@exercise("2.5", f"Which token id does the bundled model pick greedily (temperature 0) right after "
                 f"{EX25_PROMPT!r}? Answer with the id (an int).",
          f"""ids = tok.encode({EX25_PROMPT!r})
with torch.inference_mode():
    logits = model(torch.tensor([ids]))[0, -1]      # the scores for the next token only
answer = int(logits.argmax())
# the same: il.generate(model, tok, {EX25_PROMPT!r}, max_new_tokens=1).tokens[0]
Greedy takes the single most likely token: no randomness, so every run gives the same id.""")
def _check_25(answer):
    right = greedy_next_token(EX25_PROMPT)
    tok = _model_and_tokenizer()[1]
    if isinstance(answer, str):
        return False, "Give the token id (an int), not its text: tok.encode(text) turns text into ids."
    got = _as_int(answer)
    if got == right:
        return True, f"id {right} = {tok.decode([right])!r}, the argmax of the last position's logits."
    if got in tok.encode(EX25_PROMPT):
        return False, "That id is part of the prompt; the answer is the id of the *next* token."
    return False, "Take the logits at the last position ([0, -1]) and their argmax."


__all__ = ["EX21_TEXT", "EX22_LOGITS", "EX22_K", "EX23_LOGITS", "EX23_TEMPERATURE", "EX24_LOGITS", "EX24_P",
           "EX25_PROMPT", "tokens_in", "greedy_next_token"]
