"""Plots and widget callbacks for notebook 03 (prefill, decoding and the KV cache).

Every function returns a matplotlib ``Figure`` built without pyplot. The widget callbacks take the
widgets' values as plain arguments:

* ``cache_step_view(trace, tok, step, layer, head)``: the slider that steps through generation and shows
  which key/value rows are new, which are reused, and where the new token looks (``head=-1``: the mean
  over all query heads);
* ``memory_view(config_name, seq_len, batch_size, dtype_name, memory_gb)``: the KV cache calculator.

``cache_widget`` and ``memory_widget`` put each widget and a picture of its default state (drawn by the
same callback) in one output (``inferlab.viz.live``).

``plot_context_sweep`` draws the long-context measurement (``lessons.part3.context_sweep``).
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, NullFormatter

from ..core.config import get_config
from ..lessons.part3 import (attention_kind, decode_flops, format_bytes, format_bytes_binary, memory_budget,
                             prefill_flops)
from ..measure.counting import kv_cache_bytes
from .inference import drawable_text, mathtext_safe, text_of, token_label

DPI = 150   # legible at GitHub's width
KIND_COLORS = {"contiguous": "#3b75af", "concat": "#e1812c", "none": "#c03d3e"}
KIND_LABELS = {"contiguous": "KV cache, preallocated (KVCache)", "concat": "KV cache, grown by torch.cat",
               "none": "no cache: recompute everything"}
ATTENTION_COLORS = {"multi-head": "#c03d3e", "grouped-query": "#3b75af", "multi-query": "#55a868"}
REUSED, NEW, EMPTY = "#9ecae1", "#d62728", "#f2f2f2"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8,
          "4-bit": 0.5}


def _flop_unit(largest: float):
    return ("GFLOP", 1e9) if largest >= 1e9 else ("MFLOP", 1e6)


# --- the two phases of one generation ------------------------------------------------------------------

def plot_generation_steps(results: dict) -> Figure:
    """Wall time of every step of ``il.generate`` runs (``{"label": result}``): step 0 is the prefill
    (time to first token), the rest are decode steps."""
    fig = Figure(figsize=(10, 3.2), dpi=DPI)
    ax = fig.add_subplot()
    colors = iter([KIND_COLORS["contiguous"], KIND_COLORS["none"], KIND_COLORS["concat"], "#555555"])
    for label, res in results.items():
        ms = np.array(res.step_times_s) * 1e3
        color = next(colors)
        ax.plot(range(len(ms)), ms, ".-", color=color, lw=1, label=f"{label}: first token {ms[0]:.1f} ms, "
                f"then {res.tpot_s * 1e3:.2f} ms/token")
        ax.plot([0], [ms[0]], "o", color=color, ms=8)
    ax.set_xlabel("generated token (0 = the first: prefill of the whole prompt)")
    ax.set_ylabel("wall time of the step (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.set_layout_engine("tight")
    return fig


def plot_prefill(prefill, config, title: str = "") -> Figure:
    """Time to first token against prompt length (measured) beside the prefill's matmul FLOPs (counted)."""
    fig = Figure(figsize=(10, 3.2), dpi=DPI)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.errorbar(prefill.x, prefill.median_ms, yerr=np.array(prefill.iqr_ms) / 2, fmt="o-", capsize=3,
                 color=KIND_COLORS["contiguous"])
    ax1.set_xlabel("prompt length (tokens)")
    ax1.set_ylabel("time to first token (ms)")
    ax1.set_title(f"{title}measured (median, bars: IQR)", fontsize=10)
    flops = prefill_flops(config, prefill.x)
    unit, scale = _flop_unit(max(flops))
    ax2.plot(prefill.x, np.array(flops) / scale, "s-", color="#555555")
    ax2.set_xlabel("prompt length (tokens)")
    ax2.set_ylabel(unit)
    ax2.set_title(f"{title}counted: matmul FLOPs of the prefill", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.set_layout_engine("tight")
    return fig


def plot_decode(decodes, config, title: str = "", log: bool = False) -> Figure:
    """Time of one decode step against its position for each kind of cache (``lessons.part3.time_decode``
    results), beside the matmul FLOPs of the same step with and without the cache."""
    fig = Figure(figsize=(10, 3.4), dpi=DPI)
    ax1, ax2 = fig.subplots(1, 2)
    for d in decodes:
        ax1.errorbar(d.x, d.median_ms, yerr=np.array(d.iqr_ms) / 2, fmt="o-", capsize=3, ms=4,
                     color=KIND_COLORS[d.kind], label=KIND_LABELS[d.kind])
    ax1.set_xlabel("position of the new token")
    ax1.set_ylabel("time of the step (ms)")
    ax1.set_title(f"{title}measured (median, bars: IQR)", fontsize=10)
    positions = sorted({p for d in decodes for p in d.x})
    unit, scale = _flop_unit(max(decode_flops(config, positions, use_cache=False)))
    for use_cache, kind in ((True, "contiguous"), (False, "none")):
        ax2.plot(positions, np.array(decode_flops(config, positions, use_cache)) / scale, "s-", ms=4,
                 color=KIND_COLORS[kind], label="with the cache" if use_cache else "without: recompute")
    ax2.set_xlabel("position of the new token")
    ax2.set_ylabel(f"{unit} per step")
    ax2.set_title(f"{title}counted: matmul FLOPs of the step", fontsize=10)
    for ax in (ax1, ax2):
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.set_layout_engine("tight")
    return fig


# --- seeing the cache ---------------------------------------------------------------------------------

def step_summary(trace, step: int) -> dict:
    """What one step did to the cache: rows reused, rows written, rows a cache-less step would recompute."""
    s = trace.steps[step]
    return {"step": step, "reused": s.start, "written": s.end - s.start, "recomputed_without_cache": s.end,
            "position": s.end - 1, "token_id": s.token_id}


def cache_step_view(trace, tok, step: int = 0, layer: int = 0, head: int = -1) -> Figure:
    """Widget callback for the generation slider: the cache after ``step`` (one column per slot: blue rows
    reused, red rows written this step, grey slots still empty), the layer's cached keys and values, and
    the newest token's attention over every cached row (``head=-1``: mean of all query heads)."""
    cfg = trace.config
    step = max(0, min(int(step), len(trace.steps) - 1))
    layer = max(0, min(int(layer), cfg.n_layer - 1))
    head = int(head)
    if not -1 <= head < cfg.n_head:
        raise ValueError(f"head must be -1 (mean of all heads) or in [0, {cfg.n_head}), got {head}")
    s = trace.steps[step]
    cap = trace.capacity
    fig = Figure(figsize=(10, 5.6), dpi=DPI)
    ax_slots, ax_kv, ax_att = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [0.5, 2.0, 1.5]})

    # slots of the cache: reused, new, empty
    for i in range(cap):
        color = REUSED if i < s.start else NEW if i < s.end else EMPTY
        ax_slots.add_patch(Rectangle((i - 0.45, 0), 0.9, 1, facecolor=color, edgecolor="#777777", lw=0.5))
    ax_slots.set_ylim(0, 1)
    ax_slots.set_yticks([])
    ax_slots.set_title(f"step {step}: {s.end - s.start} row(s) written (red), {s.start} reused from the cache "
                       f"(blue), {cap - s.end} slots still empty\nwithout a cache this step would recompute all "
                       f"{s.end} rows in each of the {cfg.n_layer} layers", fontsize=9, loc="left")

    # the layer's keys and values: one column per token
    kv = torch.cat([trace.keys[layer].reshape(-1, trace.keys.shape[2]),
                    trace.values[layer].reshape(-1, trace.values.shape[2])]).float().numpy()
    img = np.full((kv.shape[0], cap), np.nan)
    img[:, : s.end] = kv[:, : s.end]
    lim = np.nanpercentile(np.abs(kv), 98) if kv.size else 1.0
    ax_kv.imshow(img, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest",
                 extent=(-0.5, cap - 0.5, kv.shape[0], 0))
    half = kv.shape[0] // 2
    ax_kv.axhline(half, color="black", lw=1)
    ax_kv.add_patch(Rectangle((s.start - 0.5, 0), s.end - s.start, kv.shape[0], fill=False, edgecolor=NEW, lw=2))
    ax_kv.set_yticks([half / 2, half * 1.5], ["K", "V"])
    ax_kv.set_ylabel(f"{cfg.n_kv_head} heads x {cfg.head_dim}", fontsize=8)
    ax_kv.set_title(f"layer {layer}'s cache: keys and values of every token so far ({half} numbers each)",
                    fontsize=9, loc="left")

    # where the newest token looks
    weights = s.attention[layer].mean(0) if head == -1 else s.attention[layer, head]
    weights = weights.float().numpy()
    colors = [REUSED if i < s.start else NEW for i in range(s.end)]
    ax_att.bar(range(s.end), weights, color=colors, edgecolor="#555555", lw=0.3)
    ax_att.set_ylim(0, max(0.05, float(weights.max()) * 1.15))
    ax_att.set_ylabel("attention weight")
    who = "mean of all query heads" if head == -1 else (
        f"query head {head} (reads K/V head {head // (cfg.n_head // cfg.n_kv_head)})")
    ax_att.set_title(f"attention of the newest token (position {s.end - 1}) over the cached rows, {who}; "
                     f"sums to {weights.sum():.3f}", fontsize=9, loc="left")
    labels = [mathtext_safe(token_label(tok, t)) if i < s.end else "" for i, t in enumerate(trace.tokens[:cap])]
    labels += [""] * (cap - len(labels))
    ax_att.set_xticks(range(cap), labels, rotation=90, fontsize=7, family="DejaVu Sans Mono")
    ax_att.set_xlim(-0.6, cap - 0.4)
    picked = drawable_text(text_of(tok, [s.token_id]))
    fig.suptitle(f"…then picks [{picked}] (id {s.token_id})", fontsize=9, x=0.99, y=0.995, ha="right")
    fig.set_layout_engine("tight")
    return fig


# --- sizing the cache of real models --------------------------------------------------------------------

def plot_kv_per_token(rows) -> Figure:
    """KiB of KV cache per token for each model (``lessons.part3.kv_cache_rows``), coloured by attention kind."""
    fig = Figure(figsize=(10, 0.6 + 0.34 * len(rows)), dpi=DPI)
    ax = fig.add_subplot()
    kib = [r["bytes_per_token"] / 1024 for r in rows]
    ax.barh(range(len(rows)), kib, color=[ATTENTION_COLORS[r["attention"]] for r in rows])
    ax.set_yticks(range(len(rows)), [f"{r['name']} ({r['n_head']}/{r['n_kv_head']} q/kv heads)" for r in rows],
                  fontsize=8)
    ax.invert_yaxis()
    for i, v in enumerate(kib):
        ax.text(v, i, f" {v:,.0f} KiB", va="center", fontsize=8)
    ax.set_xlim(0, max(kib) * 1.15)
    ax.set_xlabel("KV cache per token, 16-bit (KiB = 1,024 bytes)")
    for kind, color in ATTENTION_COLORS.items():
        ax.bar([0], [0], color=color, label=kind)
    ax.legend(fontsize=8, loc="lower right")
    fig.set_layout_engine("tight")
    return fig


def memory_view(config_name: str = "llama-3-8b", seq_len: int = 8192, batch_size: int = 1,
                dtype_name: str = "float16", memory_gb: float = 80.0) -> Figure:
    """Widget callback for the KV cache calculator: weights + cache of ``batch_size`` sequences of ``seq_len``
    tokens against an accelerator's memory (left), and the cache against context length (right)."""
    if dtype_name not in DTYPES:
        raise ValueError(f"dtype_name must be one of {list(DTYPES)}, got {dtype_name!r}")
    cfg = get_config(config_name)
    dtype = DTYPES[dtype_name]
    b = memory_budget(cfg, int(seq_len), int(batch_size), float(memory_gb), dtype)
    fig = Figure(figsize=(10, 4.0), dpi=DPI)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    ax1.barh([0], [b["weights"] / 1e9], color="#8c8c8c", label=f"weights {format_bytes(b['weights'])}")
    ax1.barh([0], [b["cache"] / 1e9], left=[b["weights"] / 1e9], color=ATTENTION_COLORS[attention_kind(cfg)],
             label=f"KV cache {format_bytes(b['cache'])}")
    ax1.axvline(memory_gb, color="black", ls="--", lw=1.5, label=f"accelerator {memory_gb:g} GB")
    ax1.set_xlim(0, max(memory_gb, b["total"] / 1e9) * 1.1)
    ax1.set_yticks([])
    ax1.set_xlabel("GB (10^9 bytes)")
    verdict = "fits in memory" if b["fits"] else "does NOT fit in memory"
    reach = f"at most {b['max_sequences']} sequences of {int(seq_len):,} tokens fit beside the weights"
    if b["exceeds_context"]:
        verdict += ","
        reach = (f"but {int(seq_len):,} tokens EXCEED the model's context of {b['context']:,}:\n"
                 f"it cannot read that far (the bars: what its cache would take)")
    ax1.set_title(f"{cfg.name}, {batch_size} x {int(seq_len):,} tokens, {dtype_name}: {verdict}\n{reach}",
                  fontsize=9, color="#c03d3e" if b["exceeds_context"] else "black")
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    lengths = np.unique(np.geomspace(512, 131072, 40).astype(int))
    cache_gb = [kv_cache_bytes(cfg, int(n), int(batch_size), dtype) / 1e9 for n in lengths]
    ax2.plot(lengths, cache_gb, color=ATTENTION_COLORS[attention_kind(cfg)], label=f"KV cache, batch {batch_size}")
    ax2.axhline(b["weights"] / 1e9, color="#8c8c8c", lw=1.5, label="weights")
    ax2.axhline(memory_gb, color="black", ls="--", lw=1, label="accelerator memory")
    ax2.axvline(int(seq_len), color="#555555", lw=0.8, ls=":")
    if b["context"] < lengths[-1]:  # the part of the curve the model cannot reach
        ax2.axvspan(b["context"], lengths[-1], color="#c03d3e", alpha=0.08, lw=0,
                    label=f"beyond its context ({b['context']:,})")
    ax2.set_xscale("log", base=2)
    ticks = [2 ** k for k in range(9, 18, 2)]
    ax2.set_xticks(ticks, [f"{t // 1024}k" if t >= 1024 else str(t) for t in ticks])
    ax2.set_yscale("log")
    ax2.set_xlabel("tokens per sequence")
    ax2.set_ylabel("GB")
    ax2.set_title(f"{attention_kind(cfg)} attention: {format_bytes_binary(b['bytes_per_token'])} per token",
                  fontsize=9)
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))  # plain labels
    ax2.yaxis.set_minor_formatter(NullFormatter())
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    fig.set_layout_engine("tight")
    return fig


# --- long context: the cache overtakes the weights ------------------------------------------------------

def plot_context_sweep(sweep) -> Figure:
    """A decode step of a batch against context length (``lessons.part3.context_sweep``): measured time beside the
    time predicted from the bytes it reads (left), and those bytes, weights against caches (right)."""
    ctx = np.array(sweep.contexts)
    fig = Figure(figsize=(10, 3.4), dpi=DPI)
    ax1, ax2 = fig.subplots(1, 2)
    ms = np.array(sweep.median_s) * 1e3
    iqr = np.array([t.iqr_s for t in sweep.timings]) * 1e3
    ax1.errorbar(ctx, ms, yerr=iqr / 2, fmt="o-", capsize=3, color=KIND_COLORS["contiguous"], label="measured")
    ax1.plot(ctx, np.array(sweep.predicted_s) * 1e3, "--", color="#555555",
             label=f"predicted from bytes read\n(time at {ctx[0]:,} tokens, scaled by bytes)")
    fixed, per_byte = sweep.fit()
    ax1.axhline(fixed * 1e3, color="#8c8c8c", lw=1, ls=":", label="fitted: the step without its cache")
    ax1.set_xlabel("context (tokens per sequence)")
    ax1.set_ylabel("time of one decode step (ms)")
    ax1.set_title(f"{sweep.name}, batch {sweep.batch_size}: measured (median, bars: IQR)", fontsize=10)
    gb = 1e6
    ax2.plot(ctx, np.full(len(ctx), sweep.weight_bytes / gb), color="#8c8c8c", lw=2, label="weights, read once")
    ax2.plot(ctx, np.array(sweep.cache_bytes) / gb, "o-", color=ATTENTION_COLORS["multi-head"], ms=4,
             label=f"{sweep.batch_size} caches, each read")
    ax2.set_xlabel("context (tokens per sequence)")
    ax2.set_ylabel("MB read per decode step")
    ax2.set_title("counted: bytes one step reads", fontsize=10)
    for ax in (ax1, ax2):
        if sweep.crossover <= ctx[-1]:
            ax.axvline(sweep.crossover, color=ATTENTION_COLORS["multi-head"], lw=0.8, ls=":")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    if sweep.crossover <= ctx[-1]:
        ax2.annotate(f"cache = weights\nat {sweep.crossover:,} tokens", (sweep.crossover, sweep.weight_bytes / gb),
                     xytext=(8, -28), textcoords="offset points", fontsize=8)
    fig.set_layout_engine("tight")
    return fig


# --- the live widgets of notebook 03 ----------------------------------------------------------------------

def cache_widget(trace, tok, step: int = 4, layer: int = 0, head: int = -1):
    """Notebook 03's generation slider over ``trace`` (``lessons.part3.trace_cache``): step, layer and query head
    (``cache_step_view``), with a picture of the default state."""
    import ipywidgets as widgets

    from .live import interactive, live
    cfg = trace.config
    heads = [("mean of heads", -1)] + [(f"head {h}", h) for h in range(cfg.n_head)]
    controls = {"step": widgets.IntSlider(value=step, min=0, max=len(trace.steps) - 1, continuous_update=False),
                "layer": widgets.IntSlider(value=layer, min=0, max=cfg.n_layer - 1, continuous_update=False),
                "head": widgets.Dropdown(options=heads, value=head)}
    widget = interactive(lambda step, layer, head: cache_step_view(trace, tok, step, layer, head), **controls)
    return live(widget, cache_step_view(trace, tok, step, layer, head),
                "sliders for the generation step, the layer and the query head; red rows are written in that step, "
                "blue ones read back from the cache")


MEMORY_DEFAULTS = {"config_name": "llama-3-8b", "seq_len": 8192, "batch_size": 16, "dtype_name": "float16",
                   "memory_gb": 80}


def memory_widget(config_name: str = "llama-3-8b", seq_len: int = 8192, batch_size: int = 16,
                  dtype_name: str = "float16", memory_gb: float = 80):
    """Notebook 03's KV cache calculator (``memory_view``): model, tokens per sequence, sequences, number
    format and accelerator memory, with a picture of the default state."""
    import ipywidgets as widgets

    from ..core.config import MODEL_CONFIGS
    from .live import interactive, live
    lengths = [2 ** k for k in range(9, 18)]
    if seq_len not in lengths:
        raise ValueError(f"seq_len must be one of {lengths}, got {seq_len}")
    memories = sorted({24, 40, 80, 141, 192, memory_gb})
    controls = {
        "config_name": widgets.Dropdown(options=list(MODEL_CONFIGS), value=config_name, description="model"),
        "seq_len": widgets.SelectionSlider(options=lengths, value=seq_len, description="tokens"),
        "batch_size": widgets.IntSlider(value=batch_size, min=1, max=256, description="sequences",
                                        continuous_update=False),
        "dtype_name": widgets.Dropdown(options=list(DTYPES), value=dtype_name, description="format"),
        "memory_gb": widgets.Dropdown(options=memories, value=memory_gb, description="GB")}
    widget = interactive(memory_view, **controls)
    return live(widget, memory_view(config_name, seq_len, batch_size, dtype_name, memory_gb),
                "a calculator: pick a model, tokens per sequence, number of sequences, number format and "
                "accelerator memory; the bars show weights and KV cache against that memory")

