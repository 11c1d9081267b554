"""One output for a live widget and its picture (every notebook's widgets).

A saved notebook is read in three kinds of viewer: JupyterLab with a kernel (draws the widget), a
viewer that draws saved widget state but runs nothing (nbviewer), and one that draws no widget at all
(GitHub). ``live`` puts the widget, a PNG of its default state and a sentence in ONE output: each
viewer shows the richest kind it can, so the picture is there without a kernel and never twice.
"""
from __future__ import annotations

import base64
import io

PNG_DPI = 150   # legible at GitHub's width


def figure_png(fig, dpi: int = PNG_DPI) -> bytes:
    """The figure as PNG bytes (and closed, so the notebook does not draw it a second time)."""
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


class Live:
    """A widget shown with a picture of its default state and a plain sentence as fallbacks."""

    def __init__(self, widget, png: bytes | None, what: str):
        self.widget, self.png, self.what = widget, png, what

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = dict(self.widget._repr_mimebundle_())
        picture = "its default state is drawn here" if self.png else "run the notebook to use it"
        bundle["text/plain"] = f"Live widget: {self.what} ({picture}; it moves when the notebook runs)."
        if self.png:
            bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        return bundle


def interactive(view, **controls):
    """``ipywidgets.interactive`` that shows the Figure ``view`` returns below its controls, from the start and
    after every change. Plain ``widgets.interactive`` displays only figures pyplot manages, so a view that
    returns a ``matplotlib.figure.Figure`` would show its sliders and no picture until one was moved."""
    import ipywidgets as widgets
    return widgets.interactive(view, {"auto_display": True}, **controls)


def live(widget, figure=None, what: str = "") -> Live:
    """Show ``widget`` with ``figure`` (a matplotlib Figure of its default state) as the picture that
    viewers without a kernel show; ``what`` says in words what the widget does."""
    if not hasattr(widget, "_repr_mimebundle_"):
        raise TypeError(f"widget must be an ipywidgets widget, got {type(widget).__name__}")
    if getattr(widget, "auto_display", True) is False:   # an ipywidgets.interactive made without it
        raise ValueError("build the widget with inferlab.viz.live.interactive: plain widgets.interactive does not "
                         "display the Figure its view returns")
    if not isinstance(what, str) or not what.strip():
        raise ValueError("what must say in words what the widget does (a non-empty string)")
    return Live(widget, figure_png(figure) if figure is not None else None, what.strip())
