"""Plots and widget callbacks of notebook 06 (the inference engine) and its deep dives.

Every function returns a matplotlib ``Figure`` built without pyplot:

* ``plot_kv_memory(runs)``: the waste picture: KV slots reserved and slots holding a token, over time, for
  several ways of serving at the same KV memory (``engine.serving.Served.memory``);
* ``plot_timeline(runs)``: each request's wait, prefill, decode and hold, for several ways of serving;
* ``plot_step_trace(steps)``: tokens per engine step, prefill and decode, against the budget (06a);
* ``plot_block_table(snapshot)``: the KV pool's physical blocks by owner, shared prefix blocks with their
  reference counts, and each request's block table (06a);
* ``fragmentation_sim(...)`` + ``plot_fragmentation(result)``: how much reserved KV memory holds real tokens
  when each request reserves its maximum length, against paging;
* ``kv_memory_view(block_size, max_tokens)`` + ``kv_memory_widget()``: the fragmentation simulation as a live
  widget (how block size and answer length change the share of reserved KV memory that holds tokens);
* ``engine_view(arrival_rate, kv_tokens, block_size)`` + ``serving_widget()``: serves a seeded workload with the
  bundled draft model, by the engine and by static batching at the same KV memory, and shows each request's
  timeline; ``request_segments`` reads a request's waiting, prefill and decode spans from the recorded steps;
* ``plot_latency_vs_rate(result)`` (of ``serving.rate_sweep(ways, rates)``): normalised latency against the request rate,
  the vLLM paper's main figure (https://arxiv.org/abs/2309.06180, figure 12).
"""
from __future__ import annotations

import math
import random
from functools import lru_cache

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from ..validate import positive_number

DPI = 150   # legible at GitHub's width
WAIT, PREFILL, DECODE, HELD = "#d9d9d9", "#e1812c", "#3b75af", "#c6dbef"
RESERVED, HOLDING = "#f4b6b6", "#3b75af"
WAY_COLORS = {"one at a time": "#8c8c8c", "static batching": "#dd8452", "engine": "#3b75af"}
OWNER_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
                "#ccb974", "#64b5cd"]
SHARED, CACHED, FREE = "#6a3d9a", "#e5d8f0", "#f2f2f2"


def wall_timing(runs):
    """A ``timing.Timing`` of several ``Served`` runs' wall times, for ``timing.busy_note``."""
    from ..measure.timing import from_samples
    return from_samples([r.wall_s for r in runs])


def most_in_progress(run) -> int:
    """The most requests in progress at once in a ``Served`` run (first scheduled, not yet finished): how many
    the KV memory let run side by side."""
    events = sorted([(o.metrics.first_scheduled_time, 1) for o in run.outputs] +
                    [(o.metrics.finished_time, -1) for o in run.outputs])   # at a tie, a finish frees its seat first
    most = now = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


# --- memory and timelines --------------------------------------------------------------------------------

def plot_kv_memory(runs: dict) -> Figure:
    """The waste picture: one panel per way of serving (``{label: Served}``), KV slots over time. Pale red: slots
    reserved (by a contiguous cache, or in the blocks a paged pool handed out); blue: slots holding a token.
    The gap between them is reserved memory that holds nothing; the dashed line is the budget."""
    fig = Figure(figsize=(10, 0.8 + 2.0 * len(runs)), dpi=DPI)
    axes = fig.subplots(len(runs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, run) in zip(axes, runs.items()):
        ends = np.cumsum([0.0] + [d for d, _, _ in run.memory])
        reserved = [r for _, r, _ in run.memory]
        holding = [u for _, _, u in run.memory]
        ax.stairs(reserved, ends, fill=True, color=RESERVED, label="reserved, holding no token")
        ax.stairs(holding, ends, fill=True, color=HOLDING, label="holding a token")
        ax.axhline(run.budget_slots, color="k", ls="--", lw=1, label="KV budget")
        seconds = ends[-1] or 1.0
        mean_r = sum(d * r for d, r, _ in run.memory) / seconds
        mean_u = sum(d * u for d, _, u in run.memory) / seconds
        waste = 1 - mean_u / mean_r if mean_r else 0.0
        ax.set_title(f"{label}: {waste:.0%} of the reserved slots held no token (time-averaged)", fontsize=10,
                     loc="left")
        ax.set_ylabel("KV slots")
        ax.set_ylim(0, run.budget_slots * 1.12)
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("time serving (s)")
    h, lab = axes[0].get_legend_handles_labels()
    fig.legend(h, lab, fontsize=8, ncol=3, loc="upper center")
    fig.set_layout_engine("tight", rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return fig


def _outputs(run):
    return run.outputs if hasattr(run, "outputs") else run


def plot_timeline(runs: dict, max_requests: int | None = None) -> Figure:
    """One panel per run (``{label: Served}`` or ``{label: outputs}``), one row per request: waiting (grey),
    from first scheduled to first token (orange: prefill), decoding (blue), and answer done but held until its
    batch ends (pale blue: static batching)."""
    fig = Figure(figsize=(10, 1.0 + 2.4 * len(runs)), dpi=DPI)
    axes = fig.subplots(len(runs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, run) in zip(axes, runs.items()):
        outputs = _outputs(run)
        shown = outputs[:max_requests] if max_requests else outputs
        for row, o in enumerate(shown):
            m = o.metrics
            for a, b, color in ((m.arrival_time, m.first_scheduled_time, WAIT),
                                (m.first_scheduled_time, m.first_token_time, PREFILL),
                                (m.first_token_time, m.last_token_time, DECODE),
                                (m.last_token_time, m.finished_time, HELD)):
                if a is not None and b is not None and b > a:
                    ax.barh(row, b - a, left=a, height=0.8, color=color, lw=0)
        ax.set_ylim(len(shown) - 0.4, -0.6)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("request")
        ax.set_title(label, fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in (WAIT, PREFILL, DECODE, HELD)]
    fig.legend(handles, ["waiting", "prefill (to first token)", "decoding", "done, held for the batch"],
               fontsize=8, ncol=4, loc="upper center")
    fig.set_layout_engine("tight", rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig


def plot_step_trace(steps, max_steps: int | None = None) -> Figure:
    """Tokens computed in each engine step (``serving.step_summary`` dicts, from ``serve(..., record=True)``),
    prefill and decode stacked, against the token budget; the dots count the requests in the step. Every step
    is drawn unless ``max_steps`` is given; the title says how many steps the run had and how many are shown."""
    if max_steps is not None and (not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1):
        raise ValueError(f"max_steps must be None or an int >= 1, got {max_steps!r}")
    total = len(steps)
    steps = list(steps[:max_steps] if max_steps else steps)
    x = np.arange(len(steps))
    pre = np.array([sum(n for _, k, n in s["rows"] if k == "prefill") for s in steps])
    dec = np.array([sum(n for _, k, n in s["rows"] if k == "decode") for s in steps])
    fig = Figure(figsize=(10, 3.4), dpi=DPI)
    ax = fig.add_subplot()
    width = 0.8 if len(steps) < 150 else 1.0
    ax.bar(x, pre, width=width, color=PREFILL, label="prefill tokens")
    ax.bar(x, dec, width=width, bottom=pre, color=DECODE, label="decode tokens")
    if steps:
        budget = steps[0]["budget"]
        ax.axhline(budget, color="k", ls="--", lw=1, label=f"budget (max_num_batched_tokens={budget})")
        ax.set_ylim(0, budget * 1.15)
    for i, s in enumerate(steps):
        if s["preempted"]:
            ax.annotate("preempt", (i, pre[i] + dec[i]), xytext=(0, 4), textcoords="offset points", ha="center",
                        fontsize=7, color="#c44e52")
    ax2 = ax.twinx()
    ax2.plot(x, [len(s["rows"]) for s in steps], "k.", ms=4, label="requests in the step")
    ax2.set_ylabel("requests in the step")
    ax2.set_ylim(bottom=0)
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("engine step")
    ax.set_ylabel("tokens computed")
    shown = f"all {total} steps of the run" if len(steps) == total else f"the first {len(steps)} of the run's {total} steps"
    ax.set_title(f"Tokens per engine step: {shown}", fontsize=10, loc="left")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, fontsize=8, ncol=4, loc="lower center")   # below the axes: it covers no bar
    fig.set_layout_engine("tight", rect=(0, 0.3 / fig.get_figheight(), 1, 1))
    return fig


# --- the paged KV cache ----------------------------------------------------------------------------------

def plot_block_table(snapshot: dict, columns: int = 16) -> Figure:
    """Left: the pool's physical blocks, coloured by the request using them; blocks shared by several
    (a common prefix) in purple with their reference count; free blocks that still hold a cached prefix in
    pale purple; the bar at the bottom of each block shows how full it is. Right: each block table."""
    blocks, bs = snapshot["blocks"], snapshot["block_size"]
    owners = list(snapshot["tables"])
    color_of = {rid: OWNER_COLORS[i % len(OWNER_COLORS)] for i, rid in enumerate(owners)}
    rows = math.ceil(len(blocks) / columns)
    longest = max((len(t) for t in snapshot["tables"].values()), default=1)
    fig = Figure(figsize=(10, 0.9 + 0.42 * max(rows, len(owners))), dpi=DPI)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [columns, max(longest, 4) + 3]})
    for blk in blocks:
        r, c = divmod(blk["block"], columns)
        if len(blk["owners"]) > 1:
            color = SHARED
        elif blk["owners"]:
            color = color_of[blk["owners"][0]]
        else:
            color = CACHED if blk["cached"] else FREE
        ax.add_patch(Rectangle((c, r), 0.92, 0.86, color=color))
        ax.add_patch(Rectangle((c, r + 0.74), 0.92 * blk["tokens"] / bs, 0.12, color="black", alpha=0.35, lw=0))
        ax.text(c + 0.46, r + 0.36, str(blk["block"]), ha="center", va="center", fontsize=7,
                color="white" if blk["owners"] else "#555555")
        if blk["ref_count"] > 1:
            ax.text(c + 0.85, r + 0.12, f"×{blk['ref_count']}", ha="right", va="top", fontsize=6, color="white")
    ax.set_xlim(0, columns)
    ax.set_ylim(rows, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"KV pool: {len(blocks)} physical blocks of {bs} tokens", fontsize=10, loc="left")
    for i, rid in enumerate(owners):
        ax2.text(-0.2, i + 0.43, f"req {rid}", ha="right", va="center", fontsize=8)
        for j, b in enumerate(snapshot["tables"][rid]):
            shared = len(blocks[b]["owners"]) > 1
            ax2.add_patch(Rectangle((j, i), 0.92, 0.86, color=SHARED if shared else color_of[rid]))
            ax2.text(j + 0.46, i + 0.43, str(b), ha="center", va="center", fontsize=7, color="white")
    ax2.set_xlim(-3, max(longest, 4))
    ax2.set_ylim(max(len(owners), 1), 0)
    ax2.axis("off")
    ax2.set_title("block tables (logical block -> physical)", fontsize=10, loc="left")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in (SHARED, CACHED, FREE)]
    ax.legend(handles, ["shared prefix (×ref count)", "free, prefix still cached", "free"], fontsize=7,
              loc="upper left", bbox_to_anchor=(0, 0), ncol=3)
    fig.set_layout_engine("tight")
    return fig


def fragmentation_sim(num_steps: int = 2000, concurrency: int = 32, max_seq_len: int = 2048, block_size: int = 16,
                      prompt_len=(16, 512), max_tokens: int = 512, seed: int = 0) -> dict:
    """Simulate ``concurrency`` requests decoding side by side; a finished one is replaced by a new one.

    Each request has a prompt length and asks for up to ``max_tokens``, but stops earlier (a uniform draw),
    as answers do. Every step, the fraction of reserved KV slots that hold a real token, for three ways of
    reserving: the model's whole context (``max_seq_len``) per request, the request's own maximum (prompt +
    ``max_tokens``), and paging (whole blocks, taken as the sequence grows). Returns ``{name: array}`` and the
    means under ``"mean"``."""
    rng = random.Random(seed)

    def new():
        p = rng.randint(*prompt_len)
        return [p, p + rng.randint(1, max_tokens), p + max_tokens]   # current length, final length, requested max

    live = [new() for _ in range(concurrency)]
    for r in live:  # start at a random point of their lives, not all at once
        r[0] = rng.randint(r[0], r[1])
    out = {"reserve the context": [], "reserve prompt + max_tokens": [], "paging": []}
    for _ in range(num_steps):
        used = sum(r[0] for r in live)
        out["reserve the context"].append(used / (concurrency * max_seq_len))
        out["reserve prompt + max_tokens"].append(used / sum(r[2] for r in live))
        out["paging"].append(used / sum(math.ceil(r[0] / block_size) * block_size for r in live))
        for i, r in enumerate(live):
            r[0] += 1
            if r[0] > r[1]:
                live[i] = new()
    result = {k: np.array(v) for k, v in out.items()}
    result["mean"] = {k: float(v.mean()) for k, v in result.items()}
    return result


def plot_fragmentation(result: dict, title: str = "") -> Figure:
    fig = Figure(figsize=(10, 3.4), dpi=DPI)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    colors = ["#c44e52", "#dd8452", "#55a868"]
    names = [k for k in result if k != "mean"]
    for name, color in zip(names, colors):
        ax.plot(result[name] * 100, color=color, lw=1, label=name)
    ax.set_xlabel("simulated decode step")
    ax.set_ylabel("reserved slots holding a token (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)   # below: it covers no line
    means = [result["mean"][n] * 100 for n in names]
    ax2.barh(range(len(names)), means, color=colors)
    for i, v in enumerate(means):
        ax2.text(v + 1, i, f"{v:.0f}%", va="center", fontsize=9)
    ax2.axvspan(20, 40, color="#c44e52", alpha=0.12, label="vLLM paper: earlier systems 20-40%")
    ax2.axvline(96, color="#55a868", ls="--", lw=1, label="vLLM paper: paging > 96%")
    ax2.set_yticks(range(len(names)), names, fontsize=8)
    ax2.set_xlim(0, 118)
    ax2.invert_yaxis()
    ax2.set_xlabel("mean (%)")
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.4, -0.25), ncol=2)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.set_layout_engine("tight", rect=(0, 0, 1, 1 - (0.3 / fig.get_figheight() if title else 0)))
    return fig


BLOCK_SIZES = [1, 4, 8, 16, 32, 64, 128, 256]
MAX_TOKENS = [64, 128, 256, 512, 1024, 1536]


def kv_memory_view(block_size: int = 16, max_tokens: int = 512) -> Figure:
    """Widget callback: the seeded fragmentation simulation (``fragmentation_sim``, 32 requests side by side,
    prompts of 16-512 tokens, context 2,048) with blocks of ``block_size`` tokens and answers that ask for up to
    ``max_tokens`` but stop earlier; ``fig.result`` holds the numbers."""
    for name, value in (("block_size", block_size), ("max_tokens", max_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if 512 + max_tokens > 2048:
        raise ValueError(f"max_tokens must leave the longest prompt (512) room in the context of 2048, got {max_tokens}")
    result = fragmentation_sim(num_steps=1000, block_size=block_size, max_tokens=max_tokens, seed=0)
    fig = plot_fragmentation(result, f"KV memory held by 32 requests: blocks of {block_size} tokens; answers ask "
                                     f"for up to {max_tokens} tokens and stop earlier")
    fig.result = result
    return fig


def kv_memory_widget(block_size: int = 16, max_tokens: int = 512):
    """Notebook 06's KV-memory widget: sliders for the block size and the longest answer a request asks for;
    the figure shows how much reserved KV memory holds tokens under each way of reserving."""
    import ipywidgets as widgets

    from .live import interactive, live
    controls = {"block_size": widgets.SelectionSlider(options=BLOCK_SIZES, value=block_size, description="block size",
                                                      continuous_update=False),
                "max_tokens": widgets.SelectionSlider(options=MAX_TOKENS, value=max_tokens, description="max_tokens",
                                                      continuous_update=False)}
    widget = interactive(lambda block_size, max_tokens: kv_memory_view(block_size, max_tokens), **controls)
    return live(widget, kv_memory_view(block_size, max_tokens),
                "sliders for the block size and the longest answer a request may ask for; the bars show what share "
                "of reserved KV memory holds tokens when each request reserves the whole context, its own maximum, "
                "or blocks as it grows")


# --- the serving widget ----------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _draft():
    from ..core.pretrained import load_pretrained
    return load_pretrained("draft")


def widget_workload(tok, num_requests: int = 24, seed: int = 0):
    """The serving widget's workload: chat-like requests (``serving.chat_workload``) kept short so a setting is
    served in well under a second by the draft model: prompts of 16-128 tokens, answers of 4-96 (median 24)."""
    from ..engine.serving import chat_workload
    return chat_workload(tok, num_requests, prompt_len=(16, 128), median_output=24, output_len=(4, 96), seed=seed)


def serve_workload(arrival_rate: float, kv_tokens: int, block_size: int, num_requests: int = 24, seed: int = 0,
                   model=None, tok=None, max_num_seqs: int = 16, max_num_batched_tokens: int = 256) -> dict:
    """Serve ``widget_workload`` arriving at ``arrival_rate`` requests per second (Poisson) twice, with the same KV
    memory of ``kv_tokens`` token slots: by the engine (``kv_tokens // block_size`` blocks, steps recorded) and by
    static batching. A request that needs more than the memory holds is refused at the door by both, as the
    engine refuses it. Returns ``{"engine": Served, "static batching": Served, "refused": int, "engine_obj": ...}``
    (``None`` for a way when every request was refused)."""
    from ..engine import Engine
    from ..engine.baselines import static_batching
    from ..engine.paged_cache import KVPool
    from ..engine.serving import poisson_arrivals, serve
    _check_positive(arrival_rate=arrival_rate, kv_tokens=kv_tokens, block_size=block_size)
    if model is None:
        model, tok = _draft()
    prompts, params = widget_workload(tok, num_requests, seed)
    arrivals = poisson_arrivals(num_requests, arrival_rate, seed)
    num_blocks = max(1, int(kv_tokens) // int(block_size))
    fits = [-(-(len(p) + sp.max_tokens - 1) // block_size) <= num_blocks and len(p) + sp.max_tokens <= kv_tokens
            for p, sp in zip(prompts, params)]
    kept = [i for i, ok in enumerate(fits) if ok]
    p, sp, t = [prompts[i] for i in kept], [params[i] for i in kept], [arrivals[i] for i in kept]
    engine = Engine(model, tok, block_size=int(block_size), num_blocks=num_blocks, max_num_seqs=max_num_seqs,
                    max_num_batched_tokens=max_num_batched_tokens)
    budget = int(kv_tokens) * KVPool.bytes_per_block(model.config, 1, model.dtype)
    return {"engine": serve(engine, p, sp, t, record=True) if kept else None,
            "static batching": static_batching(model, tok, p, sp, t, kv_cache_memory_bytes=budget) if kept else None,
            "refused": len(prompts) - len(kept), "engine_obj": engine}


def _check_positive(**values):
    for name, value in values.items():
        positive_number(name, value)


@lru_cache(maxsize=16)
def _serve_draft(arrival_rate: float, kv_tokens: int, block_size: int):
    return serve_workload(arrival_rate, kv_tokens, block_size)


def request_segments(metrics, request_id, steps) -> list[tuple[float, float, str]]:
    """One request's life as ``(start, end, phase)`` spans on the engine clock, read from the recorded steps
    (``serving.step_summary`` dicts): ``"prefill"`` in steps that computed several of its tokens (its prompt, or
    its tokens again after a preemption), ``"decode"`` in steps that computed one new token, and ``"waiting"``
    from its arrival to its first step and whenever it sat out a step (queued again after a preemption, or
    left out of a step whose token budget ran out). Back-to-back steps join without a gap."""
    spans, last = [], None
    for i, s in enumerate(steps):
        phase = next((kind for rid, kind, _ in s["rows"] if rid == request_id), None)
        if phase is None:
            continue
        start, end = s["start"], s["start"] + s["duration"]
        if spans and last == i - 1:
            start = spans[-1][1]            # the bookkeeping between two steps belongs to the request's run
            if spans[-1][2] == phase:
                spans[-1], last = (spans[-1][0], end, phase), i
                continue
        spans.append((start, end, phase))
        last = i
    out, t = [], metrics.arrival_time
    for start, end, phase in spans:
        if start > t:
            out.append((t, start, "waiting"))
        out.append((start, end, phase))
        t = end
    return out


PHASE_COLORS = {"waiting": WAIT, "prefill": PREFILL, "decode": DECODE, "held": HELD}


def draw_requests(ax, outputs, steps=None) -> None:
    """One row per request on ``ax``. With the engine's recorded ``steps``: its waiting, prefill and decode spans
    (``request_segments``), preemptions labelled. Without (a baseline): waiting, prefill, decoding, and held
    until its batch ends, from the request's timestamps."""
    for row, o in enumerate(outputs):
        m = o.metrics
        if steps is not None:
            segments = request_segments(m, o.request_id, steps)
        else:
            points = [m.arrival_time, m.first_scheduled_time, m.first_token_time, m.last_token_time, m.finished_time]
            segments = [(a, b, phase) for a, b, phase in zip(points, points[1:], ("waiting", "prefill", "decode", "held"))
                        if b > a]
        for a, b, phase in segments:
            ax.barh(row, max(b - a, 1e-4), left=a, height=0.8, color=PHASE_COLORS[phase], lw=0)
        if m.num_preemptions:
            ax.text(m.finished_time, row, f" preempted ×{m.num_preemptions}", va="center", fontsize=7, color="#c44e52")
    ax.set_ylim(len(outputs) - 0.4, -0.6)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("request")
    ax.grid(axis="x", alpha=0.3)


def engine_view(arrival_rate: float = 20.0, kv_tokens: int = 1024, block_size: int = 16, model=None, tok=None) -> Figure:
    """Widget callback: serve the workload by the engine and by static batching at the same KV memory, and show
    each request's timeline and each way's numbers. ``fig.runs`` holds the ``serve_workload`` result."""
    from ..engine.serving import serving_stats
    _check_positive(arrival_rate=arrival_rate, kv_tokens=kv_tokens, block_size=block_size)
    if model is None:   # the bundled draft model: the same setting is served once (the notebook draws it twice)
        runs = _serve_draft(float(arrival_rate), int(kv_tokens), int(block_size))
    else:
        runs = serve_workload(arrival_rate, kv_tokens, block_size, model=model, tok=tok)
    fig = Figure(figsize=(10, 5.6), dpi=DPI)
    grid = fig.add_gridspec(2, 2, width_ratios=[3, 1])
    engine = runs["engine_obj"]
    titles = {"engine": f"{arrival_rate:g} requests/s; engine: {engine.num_blocks} blocks x {engine.block_size} tokens, "
                        "continuous batching",
              "static batching": f"static batching: one contiguous cache of {kv_tokens} slots per batch"}
    first = None
    for i, label in enumerate(("engine", "static batching")):
        ax = fig.add_subplot(grid[i, 0], sharex=first)
        first = first or ax
        side = fig.add_subplot(grid[i, 1])
        side.axis("off")
        run = runs[label]
        ax.set_title(titles[label], fontsize=9, loc="left")
        if run is None:
            ax.text(0.5, 0.5, "every request needs more KV memory than this", ha="center", transform=ax.transAxes)
            continue
        draw_requests(ax, run.outputs, run.steps if label == "engine" else None)
        s = serving_stats(run)
        lines = [f"throughput {s.throughput:.0f} tokens/s", f"p50 TTFT {s.ttft_p50_s * 1e3:.0f} ms",
                 f"latency {s.normalized_latency_s * 1e3:.1f} ms per token", f"reserved slots empty {s.kv_waste:.0%}",
                 f"preemptions {s.num_preemptions}", f"refused (too long) {runs['refused']}"]
        side.text(0.0, 1.0, "\n".join(lines), va="top", fontsize=8.5, transform=side.transAxes)
    first.set_xlabel("")
    fig.axes[-2].set_xlabel("time (s)")
    fig.legend([Rectangle((0, 0), 1, 1, color=c) for c in (WAIT, PREFILL, DECODE, HELD)],
               ["waiting (queued, or preempted)", "prefill (or recompute)", "decoding", "done, held for the batch"],
               fontsize=8, ncol=4, loc="upper center")
    fig.set_layout_engine("tight", rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.runs = runs   # for tests and curious readers
    return fig


def serving_widget(arrival_rate: float = 200.0, kv_tokens: int = 1024, block_size: int = 16, model=None, tok=None):
    """Notebook 06's serving widget: sliders for the arrival rate, the KV budget and the block size; each
    setting serves the same seeded workload with ``model`` and ``tok`` (default: the bundled draft model) by the
    engine and by static batching at the same KV memory (``engine_view``)."""
    import ipywidgets as widgets

    from .live import interactive, live
    controls = {"arrival_rate": widgets.FloatLogSlider(value=arrival_rate, base=10, min=0, max=4, step=0.25,
                                                       description="requests/s", continuous_update=False),
                "kv_tokens": widgets.IntSlider(value=kv_tokens, min=256, max=4096, step=128, description="KV tokens",
                                               continuous_update=False),
                "block_size": widgets.Dropdown(options=[4, 8, 16, 32, 64], value=block_size, description="block size")}
    widget = interactive(lambda arrival_rate, kv_tokens, block_size:
                                 engine_view(arrival_rate, kv_tokens, block_size, model, tok), **controls)
    return live(widget, engine_view(arrival_rate, kv_tokens, block_size, model, tok),
                "sliders for the arrival rate, the KV budget and the block size; 24 requests are served with the "
                f"{'bundled draft model' if model is None else model.config.name} by the engine and by static "
                "batching with the same KV memory, one row per "
                "request (waiting, prefill, decoding, held for its batch), beside each way's throughput, time to "
                "first token, latency per token and preemptions")


# --- latency against the request rate --------------------------------------------------------------------

def plot_latency_vs_rate(result: dict, ttft_limit_s: float | None = None) -> Figure:
    """Left: normalised latency (end-to-end seconds per output token, mean over requests) against the request
    rate, one line per way, as the vLLM paper's figure 12; right: the 99th-percentile time to first token,
    with the limit used to call a rate sustained."""
    rates, stats = result["rates"], result["stats"]
    fig = Figure(figsize=(10, 3.6), dpi=DPI)
    ax, ax2 = fig.subplots(1, 2)
    for label, per_rate in stats.items():
        color = WAY_COLORS.get(label)
        ax.plot(rates, [s.normalized_latency_s * 1e3 for s in per_rate], "o-", color=color, label=label)
        ax2.plot(rates, [s.ttft_p99_s for s in per_rate], "o-", color=color, label=label)
    if ttft_limit_s is not None:
        ax2.axhline(ttft_limit_s, color="k", ls="--", lw=1, label="limit for 'sustained'")
    ax.set_ylabel("normalised latency (ms per output token)")
    ax2.set_ylabel("p99 time to first token (s)")
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xticks(rates, [f"{r:.3g}" for r in rates])
        a.minorticks_off()
        a.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        a.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a.set_xlabel("request rate (requests/s)")
        a.grid(alpha=0.3)
    ax.set_title("latency per token: flat until a way saturates", fontsize=10, loc="left")
    ax2.set_title("the wait for the first token", fontsize=10, loc="left")
    ax.legend(fontsize=8, loc="upper left")
    fig.set_layout_engine("tight")
    return fig
