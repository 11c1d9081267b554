"""Plots and the trade-off widget of notebook 05 (inference optimization).

The widget's callback is ``tradeoff_view(measurements, scheme, precision, batch_size, speculative)``;
``combine`` does its arithmetic on measurements taken earlier in the notebook:

* ``measurements["combos"][(scheme, precision)]``: ``step_s`` (decode step), ``weight_bytes``, ``loss``
  (held-out), ``agreement`` (share of greedy tokens equal to the float32 model's), measured together;
* ``measurements["batch"][b]``: tokens/s of ``il.generate_batch`` at batch size ``b`` and ``latency_s``;
* ``measurements["speculative"]``: ``speedup`` (greedy, batch 1) and ``draft_bytes``.

Combinations of a scheme/precision pair with batching or speculation are estimates: the measured
factors multiplied, which assumes they do not interact (each factor is measured, the product is not).
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

DPI = 90
BASELINE = ("none", "float32")


def combine(measurements: dict, scheme: str = "none", precision: str = "float32", batch_size: int = 1,
            speculative: bool = False) -> dict:
    """Speed, memory and quality of one combination, relative to float32, no quantization, batch 1."""
    combos = measurements["combos"]
    if (scheme, precision) not in combos:
        known = sorted({s for s, _ in combos}), sorted({p for _, p in combos})
        raise ValueError(f"no measurement for scheme {scheme!r} with precision {precision!r}; "
                         f"schemes {known[0]}, precisions {known[1]}")
    if batch_size not in measurements["batch"]:
        raise ValueError(f"no measurement for batch size {batch_size}; measured: {sorted(measurements['batch'])}")
    base, combo = combos[BASELINE], combos[(scheme, precision)]
    batch = measurements["batch"]
    speed = base["step_s"] / combo["step_s"]
    speed *= batch[batch_size]["tokens_per_s"] / batch[1]["tokens_per_s"]
    latency = batch[batch_size]["latency_s"] / batch[1]["latency_s"] / (base["step_s"] / combo["step_s"])
    notes = []
    memory = combo["weight_bytes"]
    if speculative:
        spec = measurements["speculative"]
        memory += spec["draft_bytes"]
        if batch_size == 1:
            speed *= spec["speedup"]
            latency /= spec["speedup"]
        else:
            notes.append("speculative decoding was measured at batch size 1 only: its speedup is left out")
    if (scheme, precision) != BASELINE and (batch_size > 1 or speculative):
        notes.append("estimate: measured factors multiplied")
    return {"speed_ratio": speed, "latency_ratio": latency, "memory_ratio": memory / base["weight_bytes"],
            "loss_change": combo["loss"] - base["loss"], "agreement": combo["agreement"],
            "weight_bytes": memory, "notes": notes}


def tradeoff_view(measurements: dict, scheme: str = "none", precision: str = "float32", batch_size: int = 1,
                  speculative: bool = False) -> Figure:
    """The widget: the chosen combination's ratios (left) among every measured scheme/precision (right)."""
    r = combine(measurements, scheme, precision, batch_size, speculative)
    fig = Figure(figsize=(10, 3.6), dpi=DPI)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    labels = ["throughput\n(tokens/s)", "latency per\nrequest", "weight\nmemory"]
    values = [r["speed_ratio"], r["latency_ratio"], r["memory_ratio"]]
    colors = ["#55a868" if v >= 1 else "#c03d3e" for v in values[:1]] + \
             ["#55a868" if v <= 1 else "#c03d3e" for v in values[1:]]
    bars = ax1.bar(labels, values, color=colors)
    for bar, v in zip(bars, values):
        ax1.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.2f}x", ha="center", va="bottom", fontsize=9)
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set_ylabel("ratio to the float32 baseline")
    ax1.set_ylim(0, max(values) * 1.25)
    title = f"{scheme} · {precision} · batch {batch_size}" + (" · speculative" if speculative else "")
    ax1.set_title(f"{title}\nheld-out loss {r['loss_change']:+.4f}, greedy agreement {r['agreement']:.0%}",
                  fontsize=9)
    combos = measurements["combos"]
    base = combos[BASELINE]
    keys = list(combos)
    xs = np.array([combos[k]["weight_bytes"] / base["weight_bytes"] for k in keys])
    ys = np.array([base["step_s"] / combos[k]["step_s"] for k in keys])
    cs = np.array([combos[k]["loss"] - base["loss"] for k in keys])
    sc = ax2.scatter(xs, ys, c=cs, cmap="viridis", s=50, vmin=min(0.0, cs.min()), vmax=max(cs.max(), 1e-3))
    for (s, p), x, y in zip(keys, xs, ys):
        ax2.annotate(f"{s}/{p}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    sel = keys.index((scheme, precision))
    ax2.scatter([xs[sel]], [ys[sel]], s=220, facecolors="none", edgecolors="#c03d3e", lw=2)
    ax2.set_xlabel("weight memory (ratio to float32)")
    ax2.set_ylabel("decode speed, batch 1 (ratio)")
    ax2.set_title("every measured scheme x precision", fontsize=9)
    ax2.grid(alpha=0.3)
    fig.colorbar(sc, ax=ax2, label="held-out loss change")
    if r["notes"]:
        fig.text(0.01, 0.01, "; ".join(r["notes"]), fontsize=7, color="#555555")
    fig.tight_layout()
    return fig


def plot_attention_memory(lengths, standard_bytes, tiled_bytes, sdpa_bytes=None) -> Figure:
    """Largest intermediate tensor of standard vs tiled attention against sequence length (log-log)."""
    fig = Figure(figsize=(6, 3.4), dpi=DPI)
    ax = fig.add_subplot()
    ax.loglog(lengths, np.array(standard_bytes) / 2**20, "o-", color="#c03d3e", label="standard: T x T scores")
    ax.loglog(lengths, np.array(tiled_bytes) / 2**20, "s-", color="#3b75af", label="tiled (online softmax)")
    if sdpa_bytes is not None:
        ax.loglog(lengths, np.array(sdpa_bytes) / 2**20, "x--", color="#55a868", label="torch SDPA (CPU)")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("largest tensor (MiB)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
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
        ax.set_xlabel("batch size")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_speculative(gammas, measured, expected) -> Figure:
    """Measured speedup of speculative decoding against gamma, beside Leviathan et al.'s expectation."""
    fig = Figure(figsize=(6, 3.4), dpi=DPI)
    ax = fig.add_subplot()
    ax.plot(gammas, measured, "o-", color="#3b75af", label="measured")
    ax.plot(gammas, expected, "s--", color="#555555", label="expected from measured alpha and c (in the loop)")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("gamma (draft tokens per round)")
    ax.set_ylabel("speedup over the target alone")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
