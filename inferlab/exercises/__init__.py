"""Exercises with automatic checks, for every notebook.

Each notebook part registers its exercises in ``inferlab/exercises/partN.py``. In a notebook:

    from inferlab import exercises as ex
    answer = None            # <- the learner's work
    ex.check("1.1", answer)  # prints a verdict (never raises, so Run All always finishes)
    ex.solution("1.1")       # prints a worked solution, for when you are stuck

The verdict functions return True/False so tests can drive them with right and wrong answers.
"""
from __future__ import annotations

import importlib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Exercise:
    key: str                                  # "1.2" = part 1, exercise 2
    question: str
    verify: Callable[[Any], tuple[bool, str]]  # answer -> (correct?, message shown to the learner)
    solution: str                             # worked solution (code and a sentence why)


REGISTRY: dict[str, Exercise] = {}


def as_number(answer) -> float:
    """A learner's numeric answer as a float (a one-element tensor counts); a clear error otherwise."""
    if hasattr(answer, "numel") and hasattr(answer, "item") and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        raise TypeError(f"expected a number, got {type(answer).__name__}")
    if not math.isfinite(answer):
        raise ValueError(f"expected a finite number, got {answer}")
    return float(answer)


def is_close(a: float, b: float, rel: float = 0.01) -> bool:
    """Within ``rel`` (relative) of the right answer ``b``."""
    return abs(a - b) <= rel * abs(b)


def exercise(key: str, question: str, solution: str):
    """Decorator: register ``verify(answer) -> (ok, message)`` as exercise ``key``."""
    def register(verify):
        REGISTRY[key] = Exercise(key, question, verify, solution.strip("\n"))
        return verify
    return register


def _load(key: str) -> Exercise:
    if not isinstance(key, str) or "." not in key:
        raise ValueError(f"exercise key must look like '1.2', got {key!r}")
    part = key.split(".")[0]
    try:
        importlib.import_module(f"{__name__}.part{part}")
    except ModuleNotFoundError:
        pass
    if key not in REGISTRY:
        known = ", ".join(sorted(REGISTRY)) or "none loaded"
        raise ValueError(f"unknown exercise {key!r}; known: {known}")
    return REGISTRY[key]


def verdict(key: str, answer) -> tuple[bool, str]:
    """(correct?, message) without printing; ``None`` means not answered yet."""
    ex = _load(key)
    if answer is None or answer is ...:
        return False, f"Exercise {key}: not answered yet. {ex.question}"
    try:
        ok, message = ex.verify(answer)
    except Exception as e:  # a wrong type of answer is a wrong answer, not a crash
        return False, f"Exercise {key}: that answer could not be checked ({type(e).__name__}: {e})."
    return ok, f"Exercise {key}: {'correct' if ok else 'not yet'}. {message}"


def check(key: str, answer) -> bool:
    ok, message = verdict(key, answer)
    print(("✅ " if ok else "❌ ") + message)
    return ok


def solution(key: str) -> None:
    print(_load(key).solution)
