"""Exercises with automatic checks, for every notebook.

Each notebook part registers its exercises in ``inferlab/exercises/partN.py``. In a notebook:

    from inferlab import exercises as ex
    answer = None            # <- the learner's work
    ex.check("1.1", answer)  # prints a verdict (never raises, so Run All always finishes)
    ex.solution("1.1")       # prints a worked solution, for when you are stuck
    ex.progress()            # which exercises of which lesson you have solved so far

An exercise whose answer depends on the model (the greedy pick of lesson 02, say) is checked on the model the
lesson runs when the notebook passes it: ``ex.check("2.5", answer, model=model, tok=tok)``; without them, on
the bundled model.

A teacher turns solutions off with the environment variable ``INFERLAB_SOLUTIONS=off`` (set before
starting JupyterLab). Verdicts are remembered in ``~/.inferlab/progress.json`` (or the file named by
``INFERLAB_PROGRESS``; ``INFERLAB_PROGRESS=off`` remembers nothing).

The verdict functions return True/False so tests can drive them with right and wrong answers.
"""
from __future__ import annotations

import importlib
import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class Exercise:
    key: str                                  # "1.2" = part 1, exercise 2
    question: str
    verify: Callable[..., tuple[bool, str]]   # answer [, measured] -> (correct?, message shown to the learner)
    solution: str                             # worked solution (code and a sentence why)
    measured: str | None = None               # a prediction: the notebook's name for the measurement it is checked against
    uses: tuple[str, ...] = ()                # notebook names the check may be given (the lesson's model, tok), by keyword


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


def compare_guess(guess, measured, what: str, fmt: str | None = None) -> str:
    """The line every predict-then-measure cell prints: a neutral reminder while ``guess`` is None, else the
    guess beside the measurement and, for numbers, how far apart they are. ``fmt``: e.g. ``"{:.1f}"``."""
    if guess is None or guess is ...:
        return f"… no guess written yet ({what}): write one in the cell above, then run both cells again."

    def show(v):
        return fmt.format(v) if fmt else f"{v:,}" if isinstance(v, int) else f"{v:.3g}" if isinstance(v, float) else str(v)
    try:
        g, m = float(guess), float(measured)
    except (TypeError, ValueError):
        return f"{what}: you guessed {guess!r}, measured {show(measured)} (write a number to compare them)."
    if g > 0 and m > 0:
        factor = max(g / m, m / g)
        near = "within 2x: a good guess" if factor <= 2 else f"{factor:.0f}x {'too high' if g > m else 'too low'}"
        return f"{what}: you guessed {show(guess)}, measured {show(measured)} ({near})."
    return f"{what}: you guessed {show(guess)}, measured {show(measured)}."


def exercise(key: str, question: str, solution: str, measured: str | None = None, uses: tuple[str, ...] = ()):
    """Decorator: register ``verify(answer) -> (ok, message)`` as exercise ``key``.

    A *prediction* names, in ``measured``, the notebook variable holding the learner's own measurement;
    its ``verify(answer, measured)`` judges the guess against it, and the notebook calls
    ``ex.check(key, answer, measured=<that variable>)`` after the measuring cell. ``uses`` names the
    notebook variables ``verify`` also accepts as keyword arguments (``("model", "tok")``: the lesson's model
    and tokenizer, so the right answer is recomputed on the model the lesson runs; the bundled one when they
    are not given)."""
    def register(verify):
        REGISTRY[key] = Exercise(key, question, verify, solution.strip("\n"), measured, tuple(uses))
        return verify
    return register


def get_exercise(key: str) -> Exercise:
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


def verdict(key: str, answer, measured=None, **given) -> tuple[bool, str]:
    """(correct?, message) without printing; ``None`` means not answered yet. A prediction also needs
    ``measured``, the learner's own measurement; ``given``: the names the exercise ``uses`` (the lesson's
    ``model=`` and ``tok=``)."""
    ex = get_exercise(key)
    unknown = sorted(set(given) - set(ex.uses))
    if unknown:
        allowed = ", ".join(f"{n}=" for n in ex.uses) or "nothing"
        raise TypeError(f"exercise {key} takes no {', '.join(unknown)} (it takes {allowed} besides the answer)")
    given = {name: value for name, value in given.items() if value is not None}
    if answer is None or answer is ...:
        return False, f"Exercise {key}: waiting for your answer."
    if ex.measured is not None and measured is None:
        return False, (f"Exercise {key}: this prediction is checked against your measurement: run the measuring "
                       f"cell, then ex.check({key!r}, answer, measured={ex.measured}).")
    try:
        ok, message = ex.verify(answer, **given) if ex.measured is None else ex.verify(answer, measured, **given)
    except Exception as e:  # a wrong type of answer is a wrong answer, not a crash
        return False, f"Exercise {key}: that answer could not be checked ({type(e).__name__}: {e})."
    return ok, f"Exercise {key}: {'correct' if ok else 'not yet'}. {message}"


def _progress_file() -> Path | None:
    setting = os.environ.get("INFERLAB_PROGRESS", "")
    if setting.lower() == "off":
        return None
    return Path(setting) if setting else Path.home() / ".inferlab" / "progress.json"


def _recorded() -> dict:
    path = _progress_file()
    try:
        data = json.loads(path.read_text()) if path is not None and path.exists() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(key: str, ok: bool) -> None:
    path = _progress_file()
    if path is None:
        return
    data = _recorded()
    data[key] = bool(ok) or bool(data.get(key))   # once solved, stays solved
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        pass   # a read-only home must not break a lesson


def check(key: str, answer, measured=None, **given) -> None:
    """Print the verdict (a neutral line while the answer is still ``None``) and remember it for
    ``progress()``. Returns nothing, so a check cell shows no ``Out:``; tests use ``verdict``. ``given``: the
    lesson's ``model=`` and ``tok=`` for an exercise that uses them."""
    ok, message = verdict(key, answer, measured, **given)
    waiting = answer is None or answer is ...
    if not waiting:
        _record(key, ok)
    print(("… " if waiting else "✅ " if ok else "❌ ") + message)


def progress() -> dict:
    """Print, lesson by lesson, which exercises you have solved (✅), tried (❌) or not tried (·).
    Returns ``{key: True/False}`` for the ones tried."""
    for part in range(1, 7):
        try:
            importlib.import_module(f"{__name__}.part{part}")
        except ModuleNotFoundError:
            pass
    done = _recorded()
    keys = sorted(REGISTRY, key=lambda k: tuple(int(x) for x in k.split(".")))
    for part in sorted({k.split(".")[0] for k in keys}, key=int):
        marks = [f"{k} {'✅' if done.get(k) else '❌' if k in done else '·'}" for k in keys if k.split(".")[0] == part]
        solved = sum(1 for k in keys if k.split(".")[0] == part and done.get(k))
        print(f"lesson {part}: {solved}/{len(marks)} solved   " + "   ".join(marks))
    return {k: v for k, v in done.items() if k in REGISTRY}


def graded(key: str, answer, measured=None, **given) -> None:
    """The graded cell of a class copy (``inferlab.classroom``): silent while a learner runs the lesson,
    an AssertionError with the verdict when nbgrader grades it (it sets ``NBGRADER_EXECUTION``)."""
    if os.environ.get("NBGRADER_EXECUTION"):
        ok, message = verdict(key, answer, measured, **given)
        if not ok:
            raise AssertionError(message)


def solutions_allowed() -> bool:
    """False when the teacher set ``INFERLAB_SOLUTIONS=off``."""
    return os.environ.get("INFERLAB_SOLUTIONS", "on").lower() not in ("off", "0", "false", "no")


def solution(key: str) -> None:
    ex = get_exercise(key)
    if not solutions_allowed():
        print(f"Solutions are turned off for this class (INFERLAB_SOLUTIONS=off): ask your teacher about {key}.")
        return
    print(ex.solution)


def solution_code(key: str) -> str:
    """The code of a worked solution: its lines indented by four spaces, as a learner would paste them."""
    lines = []
    for line in get_exercise(key).solution.splitlines():
        if line.startswith("    ") or (not line.strip() and lines):
            lines.append(line[4:])
    return "\n".join(lines).strip("\n") + "\n"


ANSWER_NAMES = ("answer",)   # names a solution may (re)bind: ``answer`` and ``answer_<digits>``


def _fingerprint(value):
    """A cheap summary of a model's or tensor's contents, to notice a solution that changes them in place."""
    import torch
    if isinstance(value, torch.nn.Module):
        return tuple(float(p.detach().double().sum()) for p in value.state_dict().values()
                     if isinstance(p, torch.Tensor) and p.is_floating_point())
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), float(value.detach().double().sum()) if value.numel() else 0.0)
    return None


def _may_bind(name: str) -> bool:
    return name in ANSWER_NAMES or (name.startswith("answer_") and name[7:].isdigit())


def run_solution(key: str, namespace: dict) -> list:
    """Run exercise ``key``'s solution code in a copy of a notebook's ``namespace`` (its ``globals()``),
    as a learner pasting it would. Returns the problems found (empty = fine): it raised, it rebound or
    changed a name the notebook already had, or its answer does not pass the check. The notebook's
    own namespace is left as it was."""
    import copy as _copy
    before = {k: v for k, v in namespace.items() if not k.startswith("_")}
    marks = {k: _fingerprint(v) for k, v in before.items()}
    scratch = dict(namespace)
    problems = []
    try:
        exec(compile(solution_code(key), f"<solution {key}>", "exec"), scratch)
    except Exception as e:  # noqa: BLE001 -- reported, not raised: every solution is checked
        return [f"{key}: the solution raised {type(e).__name__}: {e}"]
    for name, value in before.items():
        if _may_bind(name):
            continue
        if scratch.get(name, _copy) is not value:
            problems.append(f"{key}: the solution rebinds the notebook's name {name!r}")
        elif marks[name] is not None and _fingerprint(value) != marks[name]:
            problems.append(f"{key}: the solution changes the contents of {name!r}")
    bound = [n for n in scratch if _may_bind(n) and scratch[n] is not namespace.get(n, _copy)]
    digits = "answer_" + key.replace(".", "")
    name = digits if digits in bound else "answer" if "answer" in bound else None
    if name is None:
        problems.append(f"{key}: the solution sets no answer variable")
    else:
        ex = get_exercise(key)
        measured = namespace.get(ex.measured) if ex.measured is not None else None
        if ex.measured is not None and measured is None:
            problems.append(f"{key}: the notebook has no measurement named {ex.measured!r}")
        given = {n: namespace[n] for n in ex.uses if n in namespace}   # the lesson's model, as its cell passes it
        ok, message = verdict(key, scratch[name], measured, **given)
        if not ok:
            problems.append(f"{key}: the solution's answer fails its own check: {message}")
    return problems


def check_solutions(part: int, namespace: dict) -> None:
    """Run every solution of notebook ``part`` in (a copy of) the notebook's namespace; raise
    AssertionError listing every problem. The test suite calls this at the end of each notebook."""
    get_exercise(f"{part}.1")
    keys = sorted((k for k in REGISTRY if k.split(".")[0] == str(part)), key=lambda k: int(k.split(".")[1]))
    problems = [p for k in keys for p in run_solution(k, namespace)]
    if problems:
        raise AssertionError("\n".join(problems))
    print(f"all {len(keys)} solutions of part {part} run in the notebook and pass their checks")
