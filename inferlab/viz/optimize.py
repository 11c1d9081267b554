"""Plots and the two live widgets of notebook 05 (inference optimization) and its deep dives 05a-05c.

Widgets (``inferlab.viz.live``): ``speculative_widget`` (Leviathan et al.'s expected speedup for an
acceptance rate and a draft cost a learner sets; callback ``speculative_view``) and ``tradeoff_widget``
(a weight format, a batch size and speculation combined; callback ``tradeoff_view``). ``combine`` does the
trade-off's arithmetic on measurements taken earlier in the notebook:

* ``measurements["formats"][name]`` for each weight format (float32, bfloat16, int8, q4_0, ...), measured on
  the bundled model: ``speedup`` (decode step, float32 time / this time), ``weight_bytes``, ``kl`` (KL
  divergence to the float32 model per token), ``loss_change`` (held-out), ``agreement`` (share of greedy
  tokens equal to float32's); and ``big_speedup``, the same format's speedup on the memory-bound model
  (None where not measured);
* ``measurements["batch"][b]``: tokens/s of ``il.generate_batch`` at batch size ``b`` and ``latency_s``;
* ``measurements["speculative"]``: ``speedup`` (greedy, batch 1) and ``draft_bytes``.

Combinations of a weight format with batching or speculation are estimates: the measured factors
multiplied, which assumes they do not interact (each factor is measured, the product is not).
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

DPI = 150   # legible at GitHub's width
BASELINE = "float32"


def combine(measurements: dict, weights: str = "float32", batch_size: int = 1, speculative: bool = False) -> dict:
    """Speed, memory and quality of one combination on the bundled model, relative to float32 at batch 1."""
    formats = measurements["formats"]
    if weights not in formats:
        raise ValueError(f"no measurement for weights {weights!r}; measured: {sorted(formats)}")
    if batch_size not in measurements["batch"]:
        raise ValueError(f"no measurement for batch size {batch_size}; measured: {sorted(measurements['batch'])}")
    base, fmt = formats[BASELINE], formats[weights]
    batch = measurements["batch"]
    speed = fmt["speedup"] * batch[batch_size]["tokens_per_s"] / batch[1]["tokens_per_s"]
    latency = batch[batch_size]["latency_s"] / batch[1]["latency_s"] / fmt["speedup"]
    notes = []
    memory = fmt["weight_bytes"]
    if speculative:
        spec = measurements["speculative"]
        memory += spec["draft_bytes"]
        if batch_size == 1:
            speed *= spec["speedup"]
            latency /= spec["speedup"]
        else:
            notes.append("speculative decoding was measured at batch size 1 only: its speedup is left out")
    if weights != BASELINE and (batch_size > 1 or speculative):
        notes.append("estimate: measured factors multiplied")
    return {"speed_ratio": speed, "latency_ratio": latency, "memory_ratio": memory / base["weight_bytes"],
            "kl": fmt["kl"], "loss_change": fmt["loss_change"], "agreement": fmt["agreement"],
            "big_speedup": fmt.get("big_speedup"), "weight_bytes": memory, "notes": notes}


def place_labels(ax, points, fontsize: float = 7, gap_pt: float = 2.0):
    """Write ``points`` = [(x, y, text), ...] beside their markers so that no two labels overlap: each label
    sits right of its point, and a label that would collide with one already placed moves up (a thin line
    then joins it to its point). Call after the axes' limits are final. Returns the label Text objects."""
    fig = ax.figure
    to_pt = 72 / fig.dpi
    line_h = fontsize * 1.25
    placed, texts = [], []   # boxes (x0, x1, y0, y1) in points
    for x, y, text in sorted(points, key=lambda p: (p[1], p[0])):
        px, py = (v * to_pt for v in ax.transData.transform((x, y)))
        width = 0.62 * fontsize * len(text)
        x0, x1 = px + 9, px + 9 + width
        y0 = py - line_h / 2
        moved = True
        while moved:
            moved = False
            for bx0, bx1, by0, by1 in placed:
                if x0 < bx1 and bx0 < x1 and y0 < by1 + gap_pt and by0 < y0 + line_h + gap_pt:
                    y0 = by1 + gap_pt
                    moved = True
        placed.append((x0, x1, y0, y0 + line_h))
        dy = y0 + line_h / 2 - py
        texts.append(ax.annotate(text, (x, y), xytext=(9, dy), textcoords="offset points", fontsize=fontsize,
                                 va="center", arrowprops=(dict(arrowstyle="-", lw=0.5, color="#777777")
                                                          if abs(dy) > line_h / 2 else None)))
    return texts


def _speed_scatter(ax, formats: dict, selected: str | None = None):
    """Every format: fewer bytes (x) against decode speedup (y), on both models, with the line where time
    follows bytes (a memory-bound step) and the line of no gain. Labels never overlap (``place_labels``)."""
    base = formats[BASELINE]["weight_bytes"]
    fewer = {name: base / f["weight_bytes"] for name, f in formats.items()}
    top = max(fewer.values()) * 1.15
    ax.plot([1, top], [1, top], ":", color="#888888", lw=1, label="speedup = fewer bytes (time follows bytes)")
    ax.axhline(1.0, color="k", lw=0.8)
    labels = []
    for key, marker, color, label in (("speedup", "o", "#3b75af", "bundled model"),
                                      ("big_speedup", "s", "#c03d3e", "memory-bound model (real-size layers)")):
        names = [n for n, f in formats.items() if f.get(key) is not None]
        ax.scatter([fewer[n] for n in names], [formats[n][key] for n in names], marker=marker, color=color, s=45,
                   label=label, zorder=3)
        labels += [(fewer[n], formats[n][key], n) for n in names
                   if not (n == BASELINE and key != "speedup")]   # both models' float32 sit at (1, 1): label it once
    if selected is not None:
        for key in ("speedup", "big_speedup"):
            if formats[selected].get(key) is not None:
                ax.scatter([fewer[selected]], [formats[selected][key]], s=220, facecolors="none",
                           edgecolors="#222222", lw=1.5, zorder=4)
    ax.set_xlabel("fewer bytes per step than float32 (ratio)")
    ax.set_ylabel("decode step speedup over float32")
    ax.set_xlim(0, top * 1.12)   # room for the labels right of the last points
    ax.set_ylim(0, max(top, max(f.get(k) or 0 for f in formats.values() for k in ("speedup", "big_speedup")) * 1.2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return labels


def plot_weight_formats(formats: dict) -> Figure:
    """Decode speedup of each weight format against the bytes it saves, on the bundled and the memory-bound
    model (``formats`` as in ``measurements["formats"]``)."""
    fig = Figure(figsize=(6, 3.8), dpi=DPI)
    ax = fig.add_subplot()
    labels = _speed_scatter(ax, formats)
    fig.tight_layout()   # now, not when drawn: place_labels needs the axes where they will be
    place_labels(ax, labels)
    return fig


def tradeoff_view(measurements: dict, weights: str = "float32", batch_size: int = 1, speculative: bool = False) -> Figure:
    """The widget: the chosen combination's ratios on the bundled model (left) among every measured weight
    format on both models (right)."""
    r = combine(measurements, weights, batch_size, speculative)
    fig = Figure(figsize=(10, 3.8), dpi=DPI)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.2]})
    labels = ["throughput\n(tokens/s)", "latency per\nrequest", "weight\nmemory"]
    values = [r["speed_ratio"], r["latency_ratio"], r["memory_ratio"]]
    colors = ["#55a868" if values[0] >= 1 else "#c03d3e"] + ["#55a868" if v <= 1 else "#c03d3e" for v in values[1:]]
    bars = ax1.bar(labels, values, color=colors)
    for bar, v in zip(bars, values):
        ax1.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.2f}x", ha="center", va="bottom", fontsize=9)
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set_ylabel("ratio to float32 at batch 1")
    ax1.set_ylim(0, max(values) * 1.25)
    title = f"{weights} · batch {batch_size}" + (" · speculative" if speculative else "")
    big = "" if r["big_speedup"] is None else f"\nits decode step on the memory-bound model: {r['big_speedup']:.2f}x"
    ax1.set_title(f"bundled model: {title}\nKL {r['kl']:.1e} nats/token, greedy tokens {r['agreement']:.0%} equal{big}",
                  fontsize=8)
    labels = _speed_scatter(ax2, measurements["formats"], weights)
    ax2.set_title("every measured weight format", fontsize=9)
    if r["notes"]:
        fig.text(0.01, 0.01, "; ".join(r["notes"]), fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.04 if r["notes"] else 0, 1, 1))   # now: place_labels needs the final axes
    place_labels(ax2, labels)
    return fig


def tradeoff_widget(measurements: dict, weights: str = "int8", batch_size: int = 1, speculative: bool = False):
    """Notebook 05's trade-off explorer as a live widget: a weight format, a batch size (of those measured)
    and speculation on or off (``tradeoff_view``), shown with its default state's picture."""
    import ipywidgets as widgets

    from .live import interactive, live
    combine(measurements, weights, batch_size, speculative)   # a clear error for a default never measured
    controls = {"weights": widgets.Dropdown(options=list(measurements["formats"]), value=weights,
                                            description="weights"),
                "batch_size": widgets.SelectionSlider(options=sorted(measurements["batch"]), value=batch_size,
                                                      description="batch", continuous_update=False),
                "speculative": widgets.Checkbox(value=speculative, description="speculative")}
    widget = interactive(lambda weights, batch_size, speculative:
                                 tradeoff_view(measurements, weights, batch_size, speculative), **controls)
    return live(widget, tradeoff_view(measurements, weights, batch_size, speculative),
                "pick a weight format, a batch size and speculation on or off; the bars show the combination's "
                "throughput, latency and weight memory against float32 at batch 1, from this notebook's "
                "measurements")


def plot_error_vs_bits(rows) -> Figure:
    """Deep dive 05a: each weight format's rounding error against the bits it stores per weight.
    ``rows`` = [(name, bits_per_weight, relative mean |error|), ...]; a zero error is drawn on the floor."""
    if not rows:
        raise ValueError("rows must hold at least one (name, bits, error)")
    errors = [e for _, _, e in rows if e > 0]
    floor = min(errors) / 4 if errors else 1e-6
    fig = Figure(figsize=(6, 3.6), dpi=DPI)
    ax = fig.add_subplot()
    xs, ys = [b for _, b, _ in rows], [max(e, floor) for _, _, e in rows]
    ax.scatter(xs, ys, color="#3b75af", s=40, zorder=3)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("bits stored per weight (scales included)")
    ax.set_ylabel("mean |error| / mean |weight|")
    ax.set_xlim(0, max(xs) * 1.35)
    ax.set_ylim(floor / 2, max(ys) * 3)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()   # now, not when drawn: place_labels needs the axes where they will be
    place_labels(ax, [(b, y, name + (" (exact)" if e == 0 else "")) for (name, b, e), y in zip(rows, ys)])
    return fig


def _plain_log_ticks(ax, x=None, y: bool = True):
    """Plain numbers on log axes (1,024, not 2^10 or 1e3): ticks at ``x`` on the x axis, plain labels on y."""
    if x is not None:
        ax.set_xticks(list(x))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    if y:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))


def plot_attention_memory(lengths, standard_bytes, tiled_bytes, sdpa_bytes=None) -> Figure:
    """Largest intermediate tensor of standard vs tiled attention against sequence length (log-log)."""
    fig = Figure(figsize=(6, 3.4), dpi=DPI)
    ax = fig.add_subplot()
    ax.loglog(lengths, np.array(standard_bytes) / 2**20, "o-", color="#c03d3e", label="standard: T x T scores")
    ax.loglog(lengths, np.array(tiled_bytes) / 2**20, "s-", color="#3b75af", label="tiled (online softmax)")
    if sdpa_bytes is not None:
        ax.loglog(lengths, np.array(sdpa_bytes) / 2**20, "x--", color="#55a868", label="torch SDPA (CPU)")
    _plain_log_ticks(ax, x=lengths)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("largest tensor (MiB)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.set_layout_engine("tight")
    return fig


def plot_batching(points) -> Figure:
    """Throughput and per-request latency of ``batching_sweep`` points against batch size."""
    fig = Figure(figsize=(10, 3.2), dpi=DPI)
    ax1, ax2 = fig.subplots(1, 2)
    b = [p.batch_size for p in points]
    ax1.plot(b, [p.tokens_per_s for p in points], "o-", color="#3b75af")
    ax1.set_ylabel("tokens/s (whole batch)")
    ax2.plot(b, [p.latency_s * 1e3 for p in points], "o-", color="#c03d3e")
    ax2.set_ylabel("latency per request (ms)")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        _plain_log_ticks(ax, x=b, y=False)
        ax.set_xlabel("batch size")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.set_layout_engine("tight")
    return fig


def plot_speculative(gammas, measured, expected, low=None, high=None) -> Figure:
    """Measured speedup of speculative decoding against gamma (with the middle half of the paired runs when
    ``low``/``high`` are given), beside Leviathan et al.'s expectation."""
    fig = Figure(figsize=(6, 3.4), dpi=DPI)
    ax = fig.add_subplot()
    if low is not None and high is not None:
        err = [np.subtract(measured, low), np.subtract(high, measured)]
        ax.errorbar(gammas, measured, yerr=err, fmt="o-", color="#3b75af", capsize=3,
                    label="measured (middle half of the paired runs)")
    else:
        ax.plot(gammas, measured, "o-", color="#3b75af", label="measured")
    ax.plot(gammas, expected, "s--", color="#555555", label="expected (Leviathan et al.) from measured alpha and c")
    return _finish_speedup_axes(fig, ax)


def speculative_view(alpha: float = 0.7, c: float = 0.3, max_gamma: int = 8, measured: dict | None = None) -> Figure:
    """The widget of section 7: Leviathan et al.'s expected speedup against gamma for a chosen acceptance rate
    ``alpha`` and draft cost ``c``, with this machine's measured speedups (``{gamma: speedup}``) for comparison."""
    from ..optimize.speculative import expected_speedup
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    if not c >= 0:
        raise ValueError(f"c must be >= 0, got {c}")
    if not isinstance(max_gamma, int) or max_gamma < 1:
        raise ValueError(f"max_gamma must be an int >= 1, got {max_gamma!r}")
    gammas = np.arange(1, max_gamma + 1)
    expected = [expected_speedup(alpha, int(g), c) for g in gammas]
    fig = Figure(figsize=(6, 3.4), dpi=DPI)
    ax = fig.add_subplot()
    ax.plot(gammas, expected, "s--", color="#555555", label=f"expected: alpha {alpha:.2f}, c {c:.2f}")
    if measured:
        ax.plot(list(measured), list(measured.values()), "o", color="#3b75af", label="measured here")
    best = int(gammas[int(np.argmax(expected))])
    ax.set_title(f"best gamma {best}: {max(expected):.2f}x expected; a free draft caps tokens per pass at "
                 f"{1 / (1 - alpha):.1f}", fontsize=9)
    return _finish_speedup_axes(fig, ax)


def speculative_widget(alpha: float, c: float, measured: dict | None = None, max_gamma: int = 8):
    """Section 6's live widget: sliders for the acceptance rate ``alpha`` and the draft cost ``c``, starting
    at the values measured in the notebook; the curve is ``speculative_view``'s expected speedup per gamma."""
    import ipywidgets as widgets

    from .live import interactive, live
    alpha, c = round(float(alpha), 2), round(min(float(c), 1.0), 2)
    speculative_view(alpha, c, max_gamma)   # a clear error for a bad default
    controls = {"alpha": widgets.FloatSlider(value=alpha, min=0.0, max=0.95, step=0.01, description="alpha",
                                             continuous_update=False),
                "c": widgets.FloatSlider(value=c, min=0.0, max=1.0, step=0.01, description="c",
                                         continuous_update=False)}
    widget = interactive(lambda alpha, c: speculative_view(alpha, c, max_gamma, measured), **controls)
    return live(widget, speculative_view(alpha, c, max_gamma, measured),
                "sliders for the draft's acceptance rate alpha and its cost c (a draft step over a target step); "
                "the curve is the speedup Leviathan et al.'s formula expects for each gamma, the dots what was "
                "measured here")


def _finish_speedup_axes(fig, ax):
    """Speedup against gamma, with the break-even line at 1 (both speculative plots)."""
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("gamma (draft tokens per round)")
    ax.set_ylabel("speedup over the target alone")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.set_layout_engine("tight")
    return fig
