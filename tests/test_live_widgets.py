"""inferlab.viz.live: one output carries the widget, its picture and a sentence."""
import ipywidgets as widgets
import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from inferlab.viz.live import live  # noqa: E402


def test_live_bundle_has_widget_picture_and_words():
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    bundle = live(widgets.IntSlider(value=3), fig, "the number of layers")._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["image/png"] and bundle["text/plain"].startswith("Live widget: the number of layers")
    assert not plt.get_fignums(), "the picture's figure is closed, so it is not drawn twice"


def test_live_rejects_bad_input():
    with pytest.raises(TypeError, match="widget"):
        live("not a widget", None, "x")
    with pytest.raises(ValueError, match="what"):
        live(widgets.IntSlider(), None, " ")


def test_a_widget_shows_the_figure_its_view_returns():
    """Regression: plain widgets.interactive never displays a Figure that pyplot does not manage, so every
    lesson's widget showed its sliders and no picture until a slider moved. live() now refuses such a widget,
    and viz.live.interactive builds one that displays what the view returns."""
    from matplotlib.figure import Figure

    from inferlab.viz.live import interactive

    def view(a):
        fig = Figure()
        fig.add_subplot().plot([0, a])
        return fig

    with pytest.raises(ValueError, match="viz.live.interactive"):
        live(widgets.interactive(view, a=widgets.IntSlider(3)), None, "a line")
    widget = interactive(view, a=widgets.IntSlider(3))
    assert widget.auto_display and isinstance(widget.result, Figure)
    assert live(widget, view(3), "a line")._repr_mimebundle_()["image/png"]
