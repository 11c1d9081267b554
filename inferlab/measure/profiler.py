"""torch's profiler, quiet in a notebook (notebook 04)."""
from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def cpu_profile():
    """``torch.profiler.profile`` over CPU activities (notebook 04), without the two log lines its C++ side
    writes straight to the process's stderr as it starts and stops (they would land in the notebook)."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    with _stderr_silenced():
        prof.__enter__()
    try:
        yield prof
    finally:
        with _stderr_silenced():
            prof.__exit__(None, None, None)


@contextlib.contextmanager
def _stderr_silenced():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
