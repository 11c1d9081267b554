"""Plots and the roofline explorer widget of notebook 04 (bottlenecks).

Every function returns a matplotlib ``Figure`` built without pyplot. Two live widgets: the roofline
explorer (``roofline_widget``; callback ``roofline_view(hardware, config_name, batch_size, context_len,
dtype_name)``, numbers from ``roofline_prediction``) and the overhead model (``overhead_widget``; callback
``overhead_view(fixed_ms, batch_size, ...)``, numbers from ``overhead_prediction``). Tests call the
callbacks directly with values a learner could set.
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from ..core.config import ModelConfig, get_config
from ..measure.counting import step_count
from ..measure.roofline import HARDWARE, Roof, critical_batch, decode_count, hardware_roof, predict_decode

DPI = 150   # legible at GitHub's width
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MACHINE = "this machine"
COLORS = ["#3b75af", "#c03d3e", "#55a868", "#e1812c", "#8172b2", "#937860", "#da8bc3", "#555555"]


PLAIN = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")


def _plain_log_axes(ax):
    """Log axes with plain tick labels (0.01, 1, 100, 10,000) instead of powers of ten."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(PLAIN)
        axis.set_minor_formatter(NullFormatter())


def _roof_line(ax, roof: Roof, color, lw=2.0, ls="-", x=None):
    x = np.logspace(-2, 4, 300) if x is None else x
    ax.plot(x, [roof.attainable(i) / 1e9 for i in x], ls, color=color, lw=lw,
            label=f"{roof.name}: {roof.peak_flops / 1e9:,.0f} GFLOP/s, {roof.bandwidth / 1e9:,.0f} GB/s, "
                  f"ridge {roof.ridge:.1f} FLOP/B")
    ax.axvline(roof.ridge, color=color, lw=0.8, ls=":")


def plot_roofline(roofs, points=(), title: str = "") -> Figure:
    """Roofs (``Roof``; the first drawn boldest) and measured points ``(label, intensity, FLOP/s)`` on log axes.
    For a hierarchical roofline pass one roof per memory level with the same peak (e.g. DRAM, then L3)."""
    fig = Figure(figsize=(10, 4.6), dpi=DPI)
    ax = fig.add_subplot()
    for i, roof in enumerate(roofs):
        _roof_line(ax, roof, COLORS[i % len(COLORS)], lw=2.2 if i == 0 else 1.2, ls="-" if i == 0 else "--")
    markers = iter("osD^vP*Xh<>")
    for j, (label, intensity, flops) in enumerate(points):
        ax.plot([intensity], [flops / 1e9], next(markers, "o"), ms=8, color=COLORS[(j + len(roofs)) % len(COLORS)],
                markeredgecolor="black", label=f"{label}: {intensity:.3g} FLOP/B, {flops / 1e9:.3g} GFLOP/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_axes(ax)
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(title or "roofline: attainable FLOP/s = min(peak, intensity x bandwidth)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.set_layout_engine("tight")
    return fig


def plot_bandwidth_sweep(sweep, caches: dict | None = None, threads: int | None = None) -> Figure:
    """Read bandwidth against working-set size (``measure.machine.bandwidth_sweep``), cache sizes marked."""
    fig = Figure(figsize=(10, 3.6), dpi=DPI)
    ax = fig.add_subplot()
    sizes = [b.nbytes for b in sweep]
    ax.plot(sizes, [b.bytes_per_s / 1e9 for b in sweep], "o-", color=COLORS[0])
    for i, (name, size) in enumerate((caches or {}).items()):
        ax.axvline(size, color=COLORS[1 + i % 4], ls=":", lw=1)
        ax.text(size, ax.get_ylim()[1] * 0.95, f" {name} {size / 2 ** 20:g} MiB" if size >= 2 ** 20
                else f" {name} {size // 1024} KiB", fontsize=8, va="top", color=COLORS[1 + i % 4])
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda v, _: f"{v / 2 ** 20:g} MiB" if v >= 2 ** 20 else f"{v / 1024:g} KiB"))
    ax.set_xlabel("working set, read over and over")
    ax.set_ylabel("read bandwidth (GB/s)")
    ax.set_ylim(bottom=0)
    ax.set_title("memory hierarchy, measured: read bandwidth against the size of the working set"
                 + (f" ({threads} thread{'s' * (threads != 1)})" if threads else ""), fontsize=10)
    ax.grid(alpha=0.3)
    fig.set_layout_engine("tight")
    return fig


def plot_batch_sweep(batch_sizes, step_s, predicted_s=None, critical=None) -> Figure:
    """Decode step time and tokens/s against the batch, with the roofline's prediction and the batches where
    the regime changes (``critical``: ``{"label": batch}``; a ``None`` batch is left out)."""
    fig = Figure(figsize=(10, 3.6), dpi=DPI)
    ax1, ax2 = fig.subplots(1, 2)
    b = np.array(batch_sizes)
    ms = np.array(step_s) * 1e3
    ax1.plot(b, ms, "o-", color=COLORS[0], label="measured")
    ax2.plot(b, b / np.array(step_s), "o-", color=COLORS[0], label="measured")
    if predicted_s is not None:
        ax1.plot(b, np.array(predicted_s) * 1e3, "--", color="#777777", label="roofline prediction (measured roofs)")
        ax2.plot(b, b / np.array(predicted_s), "--", color="#777777", label="roofline prediction")
    for i, (label, value) in enumerate((critical or {}).items()):
        if value:
            for ax in (ax1, ax2):
                ax.axvline(value, color=COLORS[1 + i], ls=":", label=f"{label}: {value:.0f}")
    ax1.set_ylabel("time per decode step (ms)")
    ax2.set_ylabel("tokens per second (batch / step time)")
    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    some = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 and f"{v:.0e}"[0] in "25" else "")  # 2, 5, 20, 50...
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(batch_sizes))
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(some)
        ax.set_xlabel("batch size (sequences decoded together)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.set_layout_engine("tight")
    return fig


def plot_queue(rows_by_label: dict, md1=None) -> Figure:
    """Mean and p95 latency against arrival rate for each server (``lessons.part4.latency_sweep`` rows)."""
    fig = Figure(figsize=(10, 3.6), dpi=DPI)
    ax = fig.add_subplot()
    for i, (label, rows) in enumerate(rows_by_label.items()):
        rates = [r["rate"] for r in rows]
        ax.plot(rates, [r["mean_s"] for r in rows], "o-", color=COLORS[i], label=f"{label}: mean")
        ax.plot(rates, [r["p95_s"] for r in rows], "s--", color=COLORS[i], alpha=0.6, label=f"{label}: p95")
    if md1 is not None:
        ax.plot(*md1, ":", color="black", label="M/D/1 formula (one at a time)")
    ax.set_xlabel("arrival rate (requests per second)")
    ax.set_ylabel("latency: waiting + service (s)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PLAIN)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("the line in front of the server: latency explodes as arrivals approach the service rate",
                 fontsize=10)
    fig.set_layout_engine("tight")
    return fig


# --- the widget -----------------------------------------------------------------------------------------

def _roof(hardware: str, dtype, machine: Roof | None) -> Roof:
    if hardware == MACHINE:
        if machine is None:
            raise ValueError(f"hardware {MACHINE!r} needs the measured roof (machine=Roof(...))")
        return machine
    return hardware_roof(hardware, dtype)


def roofline_prediction(hardware: str = "h100", config_name: str = "llama-3-8b", batch_size: int = 1,
                        context_len: int = 4096, dtype_name: str = "bfloat16", machine: Roof | None = None) -> dict:
    """The explorer's numbers: the decode step's FLOPs, bytes, intensity, regime, predicted step time and
    tokens/s on the hardware, and the critical batch at this context."""
    if dtype_name not in DTYPES:
        raise ValueError(f"dtype_name must be one of {list(DTYPES)}, got {dtype_name!r}")
    cfg = get_config(config_name)
    if isinstance(context_len, bool) or not isinstance(context_len, int) or not 1 <= context_len:
        raise ValueError(f"context_len must be a positive int, got {context_len!r}")
    dtype = DTYPES[dtype_name]
    roof = _roof(hardware, dtype, machine)
    out = predict_decode(cfg, batch_size, context_len, roof, dtype)
    out.update(hardware=roof.name, config=cfg.name, batch_size=batch_size, context_len=context_len,
               critical_batch=critical_batch(cfg, context_len, roof, dtype))
    return out


def roofline_view(hardware: str = "h100", config_name: str = "llama-3-8b", batch_size: int = 1,
                  context_len: int = 4096, dtype_name: str = "bfloat16", machine: Roof | None = None) -> Figure:
    """Widget callback: the hardware's roofline, the decode step at this batch (and at other batches, faint),
    and the prefill of ``context_len`` tokens; the title says the regime and the predicted tokens/s."""
    p = roofline_prediction(hardware, config_name, batch_size, context_len, dtype_name, machine)
    dtype = DTYPES[dtype_name]
    roof = _roof(hardware, dtype, machine)
    cfg = get_config(config_name)
    fig = Figure(figsize=(10, 4.4), dpi=DPI)
    ax = fig.add_subplot()
    _roof_line(ax, roof, COLORS[0], x=np.logspace(-1, 5, 300))
    path = [2 ** k for k in range(0, 13)]
    pts = [predict_decode(cfg, b, context_len, roof, dtype) for b in path]
    ax.plot([q["intensity"] for q in pts], [q["attainable_flops"] / 1e9 for q in pts], ".", color="#999999",
            label="decode at batch 1, 2, 4, ... 4096")
    color = COLORS[1] if p["regime"] == "memory-bound" else COLORS[2]
    ax.plot([p["intensity"]], [p["attainable_flops"] / 1e9], "o", ms=12, color=color, markeredgecolor="black",
            label=f"decode, batch {batch_size}: {p['intensity']:.3g} FLOP/B, {p['regime']}")
    pre = step_count(cfg, context_len, context_len, 1, dtype)
    ax.plot([pre.intensity], [roof.attainable(pre.intensity) / 1e9], "s", ms=9, color=COLORS[3], markeredgecolor="black",
            label=f"prefill of {context_len:,} tokens: {pre.intensity:,.0f} FLOP/B")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_axes(ax)
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
    ax.set_ylabel("attainable GFLOP/s")
    crit = p["critical_batch"]
    ax.set_title(f"{cfg.name} ({dtype_name}) on {roof.name}, context {context_len:,}: {p['regime']}; "
                 f"predicted {p['step_s'] * 1e3:.3g} ms per step, {p['tokens_per_s']:,.0f} tokens/s\n"
                 f"critical batch at this context: {crit if crit else 'none (the KV cache keeps it memory-bound)'}",
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.set_layout_engine("tight")
    return fig


def hardware_options(machine: Roof | None = None) -> list:
    """Dropdown options: the presets, and the measured machine when given."""
    return ([MACHINE] if machine is not None else []) + list(HARDWARE)


def roofline_widget(machine: Roof | None = None, hardware: str = "h100", config_name: str = "llama-3-8b",
                    batch_size: int = 1, context_len: int = 4096, dtype_name: str = "bfloat16"):
    """Notebook 04's roofline explorer: chip (or this machine's measured ``machine`` roof), model, batch,
    context and number format (``roofline_view``), shown with a picture of its default state."""
    import ipywidgets as widgets

    from ..core.config import MODEL_CONFIGS
    from .live import interactive, live
    controls = {
        "hardware": widgets.Dropdown(options=hardware_options(machine), value=hardware, description="hardware"),
        "config_name": widgets.Dropdown(options=list(MODEL_CONFIGS), value=config_name, description="model"),
        "batch_size": widgets.SelectionSlider(options=[2 ** k for k in range(11)], value=batch_size,
                                              description="batch", continuous_update=False),
        "context_len": widgets.SelectionSlider(options=[2 ** k for k in range(16)], value=context_len,
                                               description="context", continuous_update=False),
        "dtype_name": widgets.Dropdown(options=list(DTYPES), value=dtype_name, description="format")}
    widget = interactive(lambda hardware, config_name, batch_size, context_len, dtype_name: roofline_view(
        hardware, config_name, batch_size, context_len, dtype_name, machine), **controls)
    return live(widget, roofline_view(hardware, config_name, batch_size, context_len, dtype_name, machine),
                "pick a chip, a model, a batch, a context and a number format; the dot is one decode step on "
                "that chip's roofline, the title gives its regime and predicted tokens/s")


# --- the overhead model ------------------------------------------------------------------------------------

WIDTHS = [2 ** k for k in range(6, 14)]   # d_model 64 ... 8,192


def scaled_config(base: ModelConfig, d_model: int) -> ModelConfig:
    """``base`` with another width (same layers, heads, vocabulary; the MLP keeps its ratio to the width)."""
    if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < base.n_head or d_model % base.n_head:
        raise ValueError(f"d_model must be a positive multiple of n_head={base.n_head}, got {d_model!r}")
    d_ff = max(1, round(base.d_ff * d_model / base.d_model))
    return base.with_(d_model=d_model, d_ff=d_ff, name=f"{base.name} at width {d_model}")


def widths_for(base: ModelConfig, widths=WIDTHS) -> list[int]:
    """``widths`` each rounded to the nearest width ``base``'s heads can split evenly into heads of an even
    size (a multiple of 2 x n_head; the powers of two themselves for the bundled shapes)."""
    step = 2 * base.n_head
    return sorted({max(step, round(w / step) * step) for w in widths})


def overhead_prediction(base: ModelConfig, roof: Roof, fixed_ms: float, batch_size: int = 1, n_context: int = 64,
                        widths=None) -> dict:
    """A decode step of ``base`` at each width, priced two ways (notebook 04's overhead model): the roofline
    time (the slower of FLOPs / peak and bytes / bandwidth) and a fixed cost per step (``fixed_ms``: Python,
    dispatch and launches, whatever the size). The step is overhead-bound while the fixed cost is the larger;
    ``crossover`` is the first width whose roofline time exceeds it (None: no width in ``widths`` does).
    ``widths``: default ``widths_for(base)``, d_model 64 to 8,192."""
    if not isinstance(roof, Roof):
        raise TypeError(f"roof must be a Roof, got {type(roof).__name__}")
    if isinstance(fixed_ms, bool) or not isinstance(fixed_ms, (int, float)) or not fixed_ms >= 0:
        raise ValueError(f"fixed_ms must be a number >= 0, got {fixed_ms!r}")
    widths = widths_for(base) if widths is None else list(widths)
    roof_s = [roof.step_time(c.flops, c.bytes) for c in
              (decode_count(scaled_config(base, w), batch_size, n_context) for w in widths)]
    fixed_s = fixed_ms / 1e3
    crossover = next((w for w, t in zip(widths, roof_s) if t > fixed_s), None)
    return {"widths": widths, "roofline_s": roof_s, "fixed_s": fixed_s, "total_s": [fixed_s + t for t in roof_s],
            "crossover": crossover, "batch_size": batch_size}


def overhead_view(fixed_ms: float, batch_size: int, base: ModelConfig, roof: Roof, measured: dict | None = None,
                  n_context: int = 64) -> Figure:
    """Widget callback: time per decode step against the model's width, the roofline time and the fixed cost
    apart and added, with ``measured`` points ``{d_model: seconds}`` if given."""
    p = overhead_prediction(base, roof, fixed_ms, batch_size, n_context)
    w = np.array(p["widths"])
    fig = Figure(figsize=(10, 4.0), dpi=DPI)
    ax = fig.add_subplot()
    ax.plot(w, np.array(p["roofline_s"]) * 1e3, "--", color=COLORS[0], label="roofline time (bytes or FLOPs)")
    ax.plot(w, np.full(len(w), max(p["fixed_s"], 1e-9) * 1e3), ":", color=COLORS[1], label="fixed cost per step")
    ax.plot(w, np.array(p["total_s"]) * 1e3, "-", color="black", lw=1.8, label="predicted: fixed + roofline")
    if measured:
        ax.plot(list(measured), [s * 1e3 for s in measured.values()], "o", ms=8, color=COLORS[2],
                markeredgecolor="black", label="measured here (batch 1)")
    if p["crossover"]:
        ax.axvline(p["crossover"], color=COLORS[3], ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(w))
    _plain_log_axes(ax)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.set_xlabel(f"width d_model ({base.n_layer} layers, vocabulary {base.vocab_size:,}, context {n_context})")
    ax.set_ylabel("ms per decode step")
    where = (f"overhead-bound below width {p['crossover']:,}, where the roofline time passes the fixed cost"
             if p["crossover"] else "overhead-bound at every width shown")
    ax.set_title(f"batch {batch_size}, fixed cost {fixed_ms:g} ms per step: {where}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    fig.set_layout_engine("tight")
    return fig


FIXED_MS = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]


def overhead_widget(base: ModelConfig, roof: Roof, fixed_ms: float, measured: dict | None = None, batch_size: int = 1):
    """Notebook 04's overhead model as a live widget: sliders for the fixed cost per step and the batch
    (``overhead_view``); ``fixed_ms`` (the measured fixed cost) is the default and joins the slider's options."""
    import ipywidgets as widgets

    from .live import interactive, live
    fixed_ms = float(f"{fixed_ms:.2g}")
    options = sorted(set(FIXED_MS) | {fixed_ms})
    controls = {"fixed_ms": widgets.SelectionSlider(options=options, value=fixed_ms, description="fixed ms",
                                                    continuous_update=False),
                "batch_size": widgets.SelectionSlider(options=[2 ** k for k in range(9)], value=batch_size,
                                                      description="batch", continuous_update=False)}
    widget = interactive(lambda fixed_ms, batch_size: overhead_view(fixed_ms, batch_size, base, roof, measured),
                                 **controls)
    return live(widget, overhead_view(fixed_ms, batch_size, base, roof, measured),
                "sliders for the fixed cost of a step and the batch; the curves show from which width a model "
                "stops being overhead-bound on this machine's roofs")
