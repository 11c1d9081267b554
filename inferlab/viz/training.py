"""Plots and widget callbacks for notebook 01 (training vs inference).

Every function is plain: it takes numbers or results the notebook measured and returns a
matplotlib ``Figure`` (or plain data), with no global state. The two widget callbacks are
``training_snapshot`` (slider over the training history) and ``cost_calculator`` (watts, price
and hardware sliders); the notebook also draws their default state as a static plot.
"""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt

from ..lessons.part1 import cost_per_million_tokens

MEMORY_COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer state": "#c44e52",
                 "activations": "#55a868"}
TIME_COLORS = {"forward": "#4c72b0", "backward": "#dd8452", "optimizer": "#c44e52"}


def _as_int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def sample_at(history, step) -> tuple[int, str]:
    """(step, text) of the last sample recorded at or before ``step`` (notebook 01's training slider).

    Steps before the first sample give the first sample; steps after the end give the last one.
    """
    if not history.samples:
        raise ValueError("this history has no samples: train with sample_fn=... to record them")
    step = _as_int(step, "step")
    chosen = history.samples[0]
    for s, text in history.samples:
        if s <= step:
            chosen = (s, text)
    return chosen


def plot_loss_curve(history, upto_step=None, ax=None, title: str | None = "Training loss"):
    """Training loss (every step) and held-out loss (each evaluation) up to ``upto_step`` (notebook 01)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
    else:
        fig = ax.figure
    last = history.steps[-1] if history.steps else 0
    upto = last if upto_step is None else min(_as_int(upto_step, "upto_step"), last)
    train = [(s, loss) for s, loss in zip(history.steps, history.train_loss) if s <= upto]
    evals = [(s, loss) for s, loss in zip(history.eval_steps, history.eval_loss) if s <= upto]
    if train:
        ax.plot(*zip(*train), color="#4c72b0", lw=1, alpha=0.8, label="training batch loss")
    if evals:
        ax.plot(*zip(*evals), "o-", color="#c44e52", ms=4, label="held-out loss")
    all_losses = history.train_loss + history.eval_loss
    if all_losses:  # fixed axes, so the curve grows as the slider moves instead of rescaling
        ax.set_xlim(0, max(last, 1))
        ax.set_ylim(min(all_losses) * 0.95, max(all_losses) * 1.03)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (cross-entropy, nats)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def training_snapshot(history, step, width: int = 70):
    """Widget callback (notebook 01): the loss curve up to ``step`` and the sample the model wrote then."""
    fig, (ax_loss, ax_text) = plt.subplots(2, 1, figsize=(7, 4.6), gridspec_kw={"height_ratios": [3, 1.3]})
    step = _as_int(step, "step")
    plot_loss_curve(history, upto_step=step, ax=ax_loss, title=f"Training up to step {step}")
    s, text = sample_at(history, step)
    shown = text.replace("\n", "↵ ")
    wrapped = "\n".join(textwrap.wrap(shown, width)[:4]) or "(empty)"
    ax_text.axis("off")
    ax_text.text(0, 1, f"sample at step {s}:", fontsize=9, fontweight="bold", va="top", transform=ax_text.transAxes)
    ax_text.text(0, 0.72, wrapped, fontsize=9, family="monospace", va="top", transform=ax_text.transAxes)
    fig.set_layout_engine("tight")
    return fig


def _stacked_bars(ax, bars: list[dict], colors: dict, labels: list[str], unit: str, ylabel: str,
                  title: str) -> None:
    """One stacked bar per dict (part -> value), its total written on top (notebook 01's step comparison)."""
    for i, parts in enumerate(bars):
        bottom = 0.0
        for part, value in parts.items():
            ax.bar(i, value, bottom=bottom, color=colors.get(part, "grey"), width=0.6, label=part if i == 0 else None)
            bottom += value
        ax.text(i, bottom, f"{bottom:.1f} {unit}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(bars)), labels)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.margins(y=0.15)


def plot_step_comparison(train_cost, infer_cost, time_ratio: float | None = None):
    """Time and memory of one training step against one inference pass on the same batch (notebook 01).

    Takes two ``lessons.part1.StepCost`` results (``compare_training_and_inference``, or
    ``measure_training_step`` and ``measure_inference_pass``). ``time_ratio`` is the title's ratio
    (give the paired ratio the notebook prints, so both say the same); default: the medians' ratio.
    """
    if time_ratio is None:
        time_ratio = train_cost.seconds / infer_cost.seconds
    elif isinstance(time_ratio, bool) or not isinstance(time_ratio, (int, float)) or not time_ratio > 0:
        raise ValueError(f"time_ratio must be a number > 0 or None, got {time_ratio!r}")
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = ["training step", "inference pass"]
    _stacked_bars(ax_t, [{k: v * 1e3 for k, v in c.parts_s.items()} for c in (train_cost, infer_cost)],
                  TIME_COLORS, labels, "ms", "time (ms)",
                  f"Time: training step = {time_ratio:.1f}x inference pass")
    _stacked_bars(ax_m, [{k: v / 1e6 for k, v in c.memory.as_dict().items()} for c in (train_cost, infer_cost)],
                  MEMORY_COLORS, labels, "MB", "memory (MB)",
                  f"Memory: training step = {train_cost.memory.total / infer_cost.memory.total:.1f}x inference pass")
    fig.set_layout_engine("tight")
    return fig


def plot_token_times(result):
    """Wall time of every step of one ``il.generate`` call: the first token (TTFT), then one per token (notebook 01)."""
    times_ms = [t * 1e3 for t in result.step_times_s]
    if not times_ms:
        raise ValueError("this result has no step times")
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(range(1, len(times_ms) + 1), times_ms, color=["#c44e52"] + ["#4c72b0"] * (len(times_ms) - 1))
    ax.axhline(result.tpot_s * 1e3, color="k", ls="--", lw=1, label=f"mean time per output token {result.tpot_s * 1e3:.1f} ms")
    ax.set_xlabel("generated token number")
    ax.set_ylabel("time for this token (ms)")
    ax.set_title(f"Latency: first token {result.ttft_s * 1e3:.1f} ms (red), then {1 / result.tpot_s:.0f} tokens/s"
                 if result.tpot_s > 0 else f"Latency: first token {result.ttft_s * 1e3:.1f} ms")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.set_layout_engine("tight")
    return fig


def plot_throughput_vs_batch(batch_sizes, tokens_per_s, tpot_s):
    """Throughput (tokens/s, all sequences together) and per-token latency against batch size (notebook 01)."""
    if not (len(batch_sizes) == len(tokens_per_s) == len(tpot_s)) or not batch_sizes:
        raise ValueError("batch_sizes, tokens_per_s and tpot_s must be non-empty and of the same length")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
    panels = [(tokens_per_s, "#55a868", "throughput (tokens/s)", "Throughput: all sequences together"),
              ([t * 1e3 for t in tpot_s], "#c44e52", "time per output token (ms)", "Latency: each sequence, per token")]
    for ax, (values, color, ylabel, title) in zip(axes, panels):
        ax.plot(batch_sizes, values, "o-", color=color)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
        ax.set_xlabel("batch size (sequences generated together)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(bottom=0)
    fig.set_layout_engine("tight")
    return fig


def cost_breakdown(tokens_per_s: float, watts: float, price_per_kwh: float, hardware_per_hour: float = 0.0) -> dict:
    """Money per million tokens, split into energy and hardware rent (notebook 01's cost calculator)."""
    energy = cost_per_million_tokens(tokens_per_s, watts, price_per_kwh, 0.0)
    hardware = cost_per_million_tokens(tokens_per_s, 0.0, 0.0, hardware_per_hour)
    return {"energy": energy, "hardware": hardware, "total": energy + hardware}


def cost_calculator(throughputs: dict, watts: float, price_per_kwh: float, hardware_per_hour: float = 0.0):
    """Widget callback (notebook 01): cost per million tokens at each measured throughput.

    ``throughputs`` maps a label (e.g. the batch size) to measured tokens/s; the sliders give
    ``watts`` (power the machine draws), ``price_per_kwh`` and ``hardware_per_hour`` (rent, or
    the purchase price spread over the hours of its life).
    """
    if not throughputs:
        raise ValueError("throughputs must map at least one label to a measured tokens/s")
    labels = [str(k) for k in throughputs]
    parts = [cost_breakdown(float(v), float(watts), float(price_per_kwh), float(hardware_per_hour))
             for v in throughputs.values()]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    energy = [p["energy"] for p in parts]
    hardware = [p["hardware"] for p in parts]
    ax.bar(labels, energy, color="#dd8452", label="electricity")
    ax.bar(labels, hardware, bottom=energy, color="#4c72b0", label="hardware")
    for i, p in enumerate(parts):
        ax.text(i, p["total"], f"{p['total']:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("batch size (measured throughput)")
    ax.set_ylabel("cost per million tokens")
    best = min(parts, key=lambda p: p["total"])
    ax.set_title(f"{watts:g} W at {price_per_kwh:g}/kWh + {hardware_per_hour:g}/h: "
                 f"best {best['total']:.3g} per million tokens", fontsize=10)
    ax.legend(fontsize=8)
    ax.margins(y=0.15)
    fig.set_layout_engine("tight")
    return fig


def training_widget(history, step: int | None = None):
    """Notebook 01's training slider: the loss curve up to a step and the sample written then
    (``training_snapshot``), shown with a picture of its default state (``viz.live.live``)."""
    import ipywidgets as widgets

    from .live import interactive, live

    if not history.steps:
        raise ValueError("this history has no steps: train first")
    last = history.steps[-1]
    step = last // 3 if step is None else min(max(_as_int(step, "step"), 0), last)
    slider = widgets.IntSlider(value=step, min=0, max=last, step=5, description="step", continuous_update=False)

    def show(step):   # returns nothing: the widget shows the figure once, as drawn
        training_snapshot(history, step)

    widget = interactive(show, step=slider)
    return live(widget, training_snapshot(history, step),
                "a slider over the training steps; it draws the loss curve up to the chosen step and the sample "
                "the model wrote then")


def cost_widget(throughputs: dict, watts: float, price_per_kwh: float, hardware_per_hour: float = 0.0):
    """Notebook 01's cost calculator: sliders for the power draw, the electricity price and an hourly
    hardware cost over the measured ``throughputs`` (``cost_calculator``), with its default picture."""
    import ipywidgets as widgets

    from .live import interactive, live

    sliders = {"watts": widgets.FloatSlider(value=watts, min=5, max=1000, step=5, continuous_update=False),
               "price_per_kwh": widgets.FloatSlider(value=price_per_kwh, min=0.0, max=1.0, step=0.01,
                                                    description="per kWh", continuous_update=False),
               "hardware_per_hour": widgets.FloatSlider(value=hardware_per_hour, min=0.0, max=5.0, step=0.05,
                                                        description="hardware/h", continuous_update=False)}

    def show(watts, price_per_kwh, hardware_per_hour):
        cost_calculator(throughputs, watts, price_per_kwh, hardware_per_hour)

    widget = interactive(show, **sliders)
    return live(widget, cost_calculator(throughputs, watts, price_per_kwh, hardware_per_hour),
                "sliders for the power draw, the electricity price and an hourly hardware cost; the bars show the "
                "cost per million tokens at each measured throughput")
