"""Progress bars that read right in a saved notebook (training in 01, BPE merges, the engine in 06).

tqdm's notebook bar is a widget: a saved notebook keeps only its first frame ("0%| | 0/800"), which is
what GitHub and nbviewer show, and a loop that stops early turns it red like an error. So inside a
notebook the bar is tqdm's plain text line, written into one display area that each refresh replaces:
the saved output is the bar's last state. In a terminal it is ordinary tqdm on stderr.
"""
from __future__ import annotations

import sys

from tqdm.std import tqdm as _tqdm


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _DisplayLine:
    """A file-like object for tqdm that keeps one text output up to date instead of appending lines."""

    def __init__(self):
        from IPython.display import display
        self._handle = display({"text/plain": ""}, raw=True, display_id=True)
        self._text = ""

    def write(self, s: str) -> None:
        line = s.replace("\r", "").strip()
        if line and line != self._text:
            self._text = line
            self._handle.update({"text/plain": line}, raw=True)

    def flush(self) -> None:
        pass


def progress(iterable=None, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True):
    """A tqdm bar: ``for merge in progress(range(800), desc="BPE merges"): ...``, or ``progress(total=800)``
    with ``bar.update(1)`` per step when the loop may stop early.

    Call ``bar.close()`` (or let the loop end) to store the final line; ``stopped_early(bar, why)`` marks
    a loop that ended on purpose before ``total`` (a time budget), in words rather than in red.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    if not enabled:
        return _tqdm(iterable, total=total, disable=True)
    file = _DisplayLine() if _in_notebook() else sys.stderr
    return _tqdm(iterable, total=total, desc=desc, unit=unit, file=file, ascii=False, dynamic_ncols=False,
                 ncols=100 if file is not sys.stderr else None, mininterval=0.25)


def stopped_early(bar, why: str) -> None:
    """Say why a loop ended before its total (for example a time budget), then store the final line."""
    bar.set_postfix_str(why, refresh=False)
    bar.close()
