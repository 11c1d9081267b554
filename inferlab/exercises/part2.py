"""Exercises of notebook 02 (how inference works): tokens, sampling controls, the greedy choice, and a
prediction of where one step's time goes (2.6, checked against the learner's own measurement).

Every check recomputes the right answer with the package's own code (``inferlab.sampling``, and the
tokenizer and model: the lesson's when the notebook passes them, ``tok=`` and ``model=``, else the
bundled ones), so it stays right if the bundled checkpoint is retrained or the lesson runs a real model.
"""
from __future__ import annotations

import numbers
from functools import lru_cache

import torch

from . import compare_guess, exercise

# Inputs the notebook shows for the exercises.
EX21_TEXT = "Grüße 🙂"
EX22_LOGITS = [1.5, -0.3, 4.0, 2.2, 3.1, 0.0, 2.9, -2.0]
EX22_K = 3
EX23_LOGITS = [2.0, 1.0, 0.0]
EX23_TEMPERATURE = 0.5
EX24_LOGITS = [3.0, 2.5, 1.0, 0.2, 2.0, -1.0]
EX24_P = 0.8
PROMPT_OF_THE_NOTEBOOK = "The return value of a function is"
EX25_PROMPT = "This module provides"   # not the notebook's prompt: its pick is printed in section 4


@lru_cache(maxsize=1)
def _tokenizer():
    from ..core.pretrained import load_tokenizer
    return load_tokenizer()


@lru_cache(maxsize=1)
def _model_and_tokenizer():
    from ..core.pretrained import load_pretrained
    return load_pretrained()


def _as_int(answer) -> int:
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, numbers.Integral):
        raise TypeError(f"expected an int, got {type(answer).__name__}")
    return int(answer)


class NotIds(ValueError):
    """An answer of numbers that are not token ids (logit values or probabilities)."""


def _as_id_set(answer) -> set[int]:
    if isinstance(answer, torch.Tensor):
        answer = answer.flatten().tolist()
    if isinstance(answer, (str, bytes)) or not hasattr(answer, "__iter__"):
        raise TypeError(f"expected a list or set of token ids, got {type(answer).__name__}")
    answer = list(answer)
    if any(isinstance(a, float) and not a.is_integer() for a in answer):
        raise NotIds()
    return {_as_int(int(a)) if isinstance(a, float) else _as_int(a) for a in answer}


IDS_NOT_VALUES = "Give token ids (positions in the logits list, counted from 0), not logit values or probabilities."


def _survivors(logits, **controls) -> set[int]:
    from ..core.sampling import next_token_probs
    probs = next_token_probs(torch.tensor(logits), **controls)
    return set(torch.nonzero(probs > 0).flatten().tolist())


def tokens_in(text: str, tok=None) -> int:
    """How many tokens ``tok`` (default: the bundled tokenizer) makes of ``text``."""
    return len((tok if tok is not None else _tokenizer()).encode(text))


def _model_pair(model=None, tok=None):
    """The lesson's (model, tok) when both are given, else the bundled pair."""
    if (model is None) != (tok is None):
        raise TypeError("give both model= and tok= (the lesson's model and its tokenizer), or neither (the bundled ones)")
    return (model, tok) if model is not None else _model_and_tokenizer()


def _last_logits(prompt: str, model=None, tok=None) -> torch.Tensor:
    model, tok = _model_pair(model, tok)
    with torch.inference_mode():
        return model(torch.tensor([tok.encode(prompt)], device=model.device))[0]


def greedy_picks(prompt: str, model=None, tok=None) -> list[int]:
    """The argmax of the model's logits (default: the bundled model's) at every position of ``prompt``; the
    last is the greedy pick."""
    return _last_logits(prompt, model, tok).argmax(-1).tolist()


def greedy_next_token(prompt: str, model=None, tok=None) -> int:
    """The id the model (default: the bundled one) picks after ``prompt`` at temperature 0 (the argmax of the
    last logits)."""
    return greedy_picks(prompt, model, tok)[-1]


def likely_next_tokens(prompt: str, n: int = 10, model=None, tok=None) -> list[int]:
    """The ``n`` most likely next token ids after ``prompt``, most likely first."""
    return _last_logits(prompt, model, tok)[-1].topk(n).indices.tolist()


@exercise("2.1", f"How many tokens does the lesson's tokenizer make of {EX21_TEXT!r}? Answer with an int.",
          f"""
Count with the tokenizer, not by eye:

    answer = len(tok.encode({EX21_TEXT!r}))

Letters the training text rarely saw (ü, ß) and the emoji have no token of their own in the bundled
tokenizer, so they fall back to their UTF-8 bytes: 'ü' is 2 bytes, 'ß' 2, '🙂' 4.""", uses=("tok",))
def _check_21(answer, tok=None):
    right = tokens_in(EX21_TEXT, tok)
    n = _as_int(answer)
    if n == right:
        return True, (f"{len(EX21_TEXT)} characters, {len(EX21_TEXT.encode('utf-8'))} bytes, {right} tokens: "
                      "rare characters cost several tokens each.")
    if n == len(EX21_TEXT):
        return False, "That is the number of characters; the model never sees characters, only token ids."
    if n == len(EX21_TEXT.encode("utf-8")):
        return False, ("That is the number of UTF-8 bytes; some bytes were merged into longer tokens, so count "
                       "the ids that tok.encode returns.")
    return False, "Count the ids that tok.encode returns."


@exercise("2.2", f"Which token ids survive top-k={EX22_K} on the logits {EX22_LOGITS}? Answer with a list or set of ids.",
          f"""
Top-k keeps the k largest logits (here 4.0, 3.1, 2.9 at ids 2, 4, 6) and sets the rest to -inf, so
softmax gives them probability 0:

    import torch
    sol_logits = torch.tensor({EX22_LOGITS})
    answer = set(sol_logits.topk({EX22_K}).indices.tolist())   # -> {{2, 4, 6}}

The same with the package: set(torch.nonzero(il.next_token_probs(sol_logits, top_k={EX22_K})).flatten().tolist())""")
def _check_22(answer):
    right = _survivors(EX22_LOGITS, top_k=EX22_K)
    try:
        got = _as_id_set(answer)
    except NotIds:
        return False, IDS_NOT_VALUES
    if got == right:
        return True, "Exactly the k largest logits survive; every other token gets probability 0."
    if len(got) != EX22_K:
        return False, f"Top-k={EX22_K} keeps exactly {EX22_K} tokens; you gave {len(got)}."
    if got == {i + 1 for i in right}:
        return False, "Right tokens, but counted from 1: token ids are positions counted from 0."
    if got <= set(range(len(EX22_LOGITS))):
        return False, ("Those are not the positions of the largest logits: a token's id is its position "
                       "(from 0) in the logits list, and top-k keeps the k positions holding the largest values.")
    return False, IDS_NOT_VALUES


@exercise("2.3", f"With logits {EX23_LOGITS} and temperature {EX23_TEMPERATURE}, what is the probability of "
                 "token 0? Answer with a float (3 decimals are enough).",
          f"""
Divide the logits by the temperature, then take the softmax:

    import torch
    sol_logits = torch.tensor({EX23_LOGITS})
    answer = torch.softmax(sol_logits / {EX23_TEMPERATURE}, dim=-1)[0].item()   # about 0.867

Dividing by a temperature below 1 stretches the gaps between logits (2, 1, 0 -> 4, 2, 0), so the
top token takes more of the mass than at temperature 1 (0.665).""")
def _check_23(answer):
    from ..core.sampling import next_token_probs
    right = float(next_token_probs(torch.tensor(EX23_LOGITS), EX23_TEMPERATURE)[0])
    if isinstance(answer, torch.Tensor):
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        raise TypeError(f"expected a float, got {type(answer).__name__}")
    got = float(answer)
    if abs(got / 100 - right) <= 1e-3:
        return False, "That looks like a percentage: give the probability as a number between 0 and 1."
    if abs(got - right) <= 1e-3:
        return True, f"p = {right:.4f}: a lower temperature sharpens the distribution."
    plain = float(torch.softmax(torch.tensor(EX23_LOGITS), -1)[0])
    if abs(got - plain) <= 1e-3:
        return False, "That is the probability at temperature 1: divide the logits by the temperature first."
    if abs(got - float(torch.softmax(torch.tensor(EX23_LOGITS) * EX23_TEMPERATURE, -1)[0])) <= 1e-3:
        return False, "You multiplied by the temperature; divide by it."
    return False, "softmax(logits / temperature), then read entry 0."


@exercise("2.4", f"Which token ids survive top-p={EX24_P} on the logits {EX24_LOGITS}? Answer with a list or set of ids.",
          f"""
Sorted by probability: id 0 (0.46), id 1 (0.28), id 4 (0.17), id 2 (0.06), ...; the running total
0.46, 0.73, 0.90 first reaches {EX24_P} at id 4, so ids 0, 1 and 4 survive:

    import torch
    sol_probs = torch.softmax(torch.tensor({EX24_LOGITS}), dim=-1)
    sol_sorted, sol_order = sol_probs.sort(descending=True)
    sol_mass_before = sol_sorted.cumsum(0) - sol_sorted      # mass of the tokens ranked above each one
    answer = set(sol_order[sol_mass_before < {EX24_P}].tolist())   # -> {{0, 1, 4}}

Top-p (nucleus) keeps the fewest most-likely tokens whose probabilities add up to at least p;
how many that is depends on how peaked the distribution is, unlike top-k.""")
def _check_24(answer):
    right = _survivors(EX24_LOGITS, top_p=EX24_P)
    try:
        got = _as_id_set(answer)
    except NotIds:
        return False, IDS_NOT_VALUES
    if got == right:
        return True, "The smallest set of most likely tokens whose mass reaches p."
    probs = torch.softmax(torch.tensor(EX24_LOGITS), -1)
    if got < right:
        return False, (f"Those hold only {float(probs[list(got)].sum()):.2f} of the mass; keep adding the next most "
                       f"likely token until the total reaches {EX24_P}.")
    if got > right:
        return False, ("You kept more than needed: stop adding as soon as the running total reaches p "
                       "(the token that takes it to p or past it is the last one kept).")
    return False, "Sort by probability, add them up from the top, stop as soon as the total reaches p."


@exercise("2.5", f"Which token id does the lesson's model pick greedily (temperature 0) right after "
                 f"{EX25_PROMPT!r}? Answer with the id (an int).",
          f"""
One forward pass over the prompt; the logits at the last position score the next token:

    import torch
    sol_ids = tok.encode({EX25_PROMPT!r})
    with torch.inference_mode():
        sol_logits = model(torch.tensor([sol_ids], device=model.device))[0, -1]   # the next token's scores only
    answer = int(sol_logits.argmax())

The same: il.generate(model, tok, {EX25_PROMPT!r}, max_new_tokens=1).tokens[0]. Greedy takes the
single most likely token: no randomness, so every run gives the same id.""", uses=("model", "tok"))
def _check_25(answer, model=None, tok=None):
    from ..core.generate import token_text
    model, tok = _model_pair(model, tok)
    right = greedy_next_token(EX25_PROMPT, model, tok)
    if isinstance(answer, str):
        return False, "Give the token id (an int), not its text: tok.encode(text) turns text into ids."
    got = _as_int(answer)
    if got == right:
        return True, f"id {right} = {token_text(tok, right)!r}, the argmax of the last position's logits."
    vocab = model.config.vocab_size
    if not 0 <= got < vocab:
        return False, f"Token ids lie in [0, {vocab}): take the argmax's index, not a logit or a count."
    if got in tok.encode(EX25_PROMPT):
        return False, "That id is part of the prompt; the answer is the id of the *next* token."
    if got == greedy_next_token(PROMPT_OF_THE_NOTEBOOK, model, tok):
        return False, (f"That is the pick after the notebook's prompt; this exercise asks about {EX25_PROMPT!r}, "
                       "so run the model on it.")
    if got in greedy_picks(EX25_PROMPT, model, tok)[:-1]:
        return False, "That is the model's pick at an earlier position: use the logits at the last one ([0, -1])."
    if got in likely_next_tokens(EX25_PROMPT, model=model, tok=tok):
        return False, ("That token is likely here but not the most likely: greedy takes the single highest "
                       "score (argmax), with no random draw.")
    return False, "Take the logits at the last position ([0, -1]) and their argmax."


def _layer_share(measured) -> tuple[float, bool]:
    """(the layers' share of the stages' time, was the machine busy?) from ``lessons.part2.time_step``'s result
    (or a plain share, for tests)."""
    if hasattr(measured, "layers_s") and hasattr(measured, "sum_of_stages_s"):
        return measured.layers_s / measured.sum_of_stages_s, bool(measured.busy_note())
    share = float(measured)
    if not 0 <= share <= 1:
        raise ValueError(f"measured must be a share in [0, 1] or a StepTiming, got {measured!r}")
    return share, False


NEAR, SAME_SIDE = 0.15, 0.25   # a guess this close is right; one on the right side of one half may be this far


@exercise("2.6", "Predict, before measuring: what share of one generation step's time (the sum of its timed "
                 "stages: tokenize, embed, the layers, head, sampling) will the model's layers take on your "
                 "machine? Answer with a number between 0 and 1.",
          """
Reason from what each stage does. The layers hold all the matrix multiplications but the head's, and
the same block of work runs once per layer; each layer also launches a dozen or more torch operations,
each paying a fixed cost. Tokenizing a short prompt, looking up a few rows, one head multiplication and
a sort of the vocabulary's scores are each far less work. So the layers should take most of the step: a guess
well above one half. A prediction has no single right number; the checker accepts a guess within
0.15 of your measurement, or on the same side of one half and within 0.25. What you measured:

    answer_26 = breakdown.layers_s / breakdown.sum_of_stages_s   # the share measured in section 7

If yours came out below one half, the fixed costs outside the layers (Python calls, the sampler's sort)
weighed more on your machine: the notebook's sentences under the table say so.""", measured="breakdown")
def _check_26(answer, measured):
    share, busy = _layer_share(measured)
    if isinstance(answer, str):
        return False, "Give a number between 0 and 1 (for example 0.4), not text."
    from . import as_number
    guess = as_number(answer)
    if 1 < guess <= 100:
        return False, "That looks like a percentage: give the share as a number between 0 and 1."
    if not 0 <= guess <= 1:
        return False, "A share of the step's time lies between 0 and 1."
    noisy = (" Your measurement was taken on a busy machine (the sentences under the table say so): close other "
             "programs and run the measuring cell again before trusting the comparison.") if busy else ""
    said = f"You predicted {guess:.2f}; the layers took {share:.2f} of the stages' time in your measurement."
    if abs(guess - share) <= NEAR or ((guess > 0.5) == (share > 0.5) and abs(guess - share) <= SAME_SIDE):
        why = ("most of the step, as the arithmetic suggests: the same block of work runs once per layer."
               if share > 0.5 else "less than half: on this machine the fixed costs outside the layers weighed more.")
        return True, f"{said} The layers took {why}"
    if (guess > 0.5) != (share > 0.5):
        return False, (f"{said} You expected {'most' if guess > 0.5 else 'less than half'} of the step and it went "
                       "the other way: compare the work each stage does (how many matrix multiplications, how "
                       "many torch operations) with what the sentences under the table report." + noisy)
    return False, (f"{said} Right side of one half, but further off than {SAME_SIDE}: look at how the other "
                   "stages compare with one layer in the table." + noisy)




__all__ = ["EX21_TEXT", "EX22_LOGITS", "EX22_K", "EX23_LOGITS", "EX23_TEMPERATURE", "EX24_LOGITS", "EX24_P",
           "EX25_PROMPT", "tokens_in", "greedy_picks", "greedy_next_token", "likely_next_tokens", "compare_guess"]
