"""Plots and the widget callback of notebook 06 (the inference engine).

Every function returns a matplotlib ``Figure`` built without pyplot:

* ``plot_timeline(runs)``: each request's wait, prefill and decode, for several ways of serving;
* ``plot_step_trace(trace)``: tokens per engine step, prefill and decode, against the budget;
* ``plot_block_table(snapshot)``: the KV pool's physical blocks by owner, shared prefix blocks with their
  reference counts, and each request's block table;
* ``fragmentation_sim(...)`` + ``plot_fragmentation(result)``: how much reserved KV memory holds real tokens
  when each request reserves its maximum length, against paging;
* ``kv_memory_view(block_size, max_tokens)`` + ``kv_memory_widget()``: the fragmentation simulation as a live
  widget (how block size and answer length change the share of reserved KV memory that holds tokens);
* ``engine_view(arrival_rate, kv_tokens, block_size)`` + ``serving_widget()``: serves a seeded workload with the
  bundled draft model and shows throughput, latency and preemptions; ``request_segments`` reads each request's
  waiting, prefill and decode spans from the engine's step trace;
* ``load_sweep(rates, ...)`` + ``plot_load_sweep(result)``: serving metrics against the arrival rate, the way
  the vLLM paper plots latency against request rate (deep dive 06b).
"""
from __future__ import annotations

import math
import random
from functools import lru_cache

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

DPI = 150   # legible at GitHub's width
WAIT, PREFILL, DECODE, HELD = "#d9d9d9", "#e1812c", "#3b75af", "#c6dbef"
OWNER_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
                "#ccb974", "#64b5cd"]
SHARED, CACHED, FREE = "#6a3d9a", "#e5d8f0", "#f2f2f2"


# --- timelines -------------------------------------------------------------------------------------------

def plot_timeline(runs: dict, max_requests: int | None = None) -> Figure:
    """One panel per run (``{"label": (outputs, stats)}``), one row per request: waiting (grey), from first
    scheduled to first token (orange: prefill), decoding (blue), and answer done but held until its batch
    ends (pale blue: static batching)."""
    fig = Figure(figsize=(10, 1.0 + 2.4 * len(runs)), dpi=DPI)
    axes = fig.subplots(len(runs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, (outputs, stats)) in zip(axes, runs.items()):
        shown = outputs[:max_requests] if max_requests else outputs
        for row, o in enumerate(shown):
            m = o.metrics
            if m.first_token is None:   # rejected
                continue
            last = m.token_times[-1]
            for a, b, color in ((m.arrival, m.first_scheduled, WAIT), (m.first_scheduled, m.first_token, PREFILL),
                                (m.first_token, last, DECODE), (last, m.finished, HELD)):
                if b > a:
                    ax.barh(row, b - a, left=a, height=0.8, color=color, lw=0)
        ax.set_ylim(len(shown) - 0.4, -0.6)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("request")
        tput = f"{stats.throughput:.0f} tokens/s" if stats is not None else ""
        ttft = f"mean TTFT {stats.mean_ttft_s * 1e3:.0f} ms" if stats is not None else ""
        ax.set_title(f"{label}: {tput}, {ttft}", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in (WAIT, PREFILL, DECODE, HELD)]
    fig.legend(handles, ["waiting", "prefill (to first token)", "decoding", "done, held for the batch"],
               fontsize=8, ncol=4, loc="upper center")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig


def plot_step_trace(trace, max_steps: int | None = None) -> Figure:
    """Tokens computed in each engine step, prefill and decode stacked, against the token budget; the dots
    count the requests in the step. Every step is drawn unless ``max_steps`` is given; the title says how
    many steps the run had and how many are shown."""
    if max_steps is not None and (not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1):
        raise ValueError(f"max_steps must be None or an int >= 1, got {max_steps!r}")
    total = len(trace)
    trace = trace[:max_steps] if max_steps else list(trace)
    steps = np.array([r.step for r in trace])
    pre = np.array([sum(n for _, k, n in r.entries if k == "prefill") for r in trace])
    dec = np.array([sum(n for _, k, n in r.entries if k == "decode") for r in trace])
    fig = Figure(figsize=(10, 3.4), dpi=DPI)
    ax = fig.add_subplot()
    width = 0.8 if len(trace) < 150 else 1.0
    ax.bar(steps, pre, width=width, color=PREFILL, label="prefill tokens")
    ax.bar(steps, dec, width=width, bottom=pre, color=DECODE, label="decode tokens")
    if trace:
        ax.axhline(trace[0].budget, color="k", ls="--", lw=1, label=f"budget (max_num_batched_tokens={trace[0].budget})")
        ax.set_ylim(0, trace[0].budget * 1.15)
    for r in trace:
        if r.preempted:
            ax.annotate("preempt", (r.step, r.tokens), xytext=(0, 4), textcoords="offset points", ha="center",
                        fontsize=7, color="#c44e52")
    ax2 = ax.twinx()
    ax2.plot(steps, [len(r.entries) for r in trace], "k.", ms=4, label="requests in the step")
    ax2.set_ylabel("requests in the step")
    ax2.set_ylim(bottom=0)
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("engine step")
    ax.set_ylabel("tokens computed")
    shown = (f"all {total} steps of the run" if len(trace) == total
             else f"the first {len(trace)} of the run's {total} steps")
    ax.set_title(f"Tokens per engine step: {shown}", fontsize=10, loc="left")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, fontsize=8, ncol=4, loc="lower center")   # below the axes: it covers no bar
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))
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
    fig.tight_layout()
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


def plot_fragmentation(result: dict) -> Figure:
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
    fig.tight_layout()
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
    fig = plot_fragmentation(result)
    fig.suptitle(f"KV memory held by 32 requests: blocks of {block_size} tokens; answers ask for up to {max_tokens} "
                 "tokens and stop earlier", fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    fig.result = result
    return fig


def kv_memory_widget(block_size: int = 16, max_tokens: int = 512):
    """Notebook 06's KV-memory widget: sliders for the block size and the longest answer a request asks for;
    the figure shows how much reserved KV memory holds tokens under each way of reserving."""
    import ipywidgets as widgets
    from .live import live
    controls = {"block_size": widgets.SelectionSlider(options=BLOCK_SIZES, value=block_size, description="block size",
                                                      continuous_update=False),
                "max_tokens": widgets.SelectionSlider(options=MAX_TOKENS, value=max_tokens, description="max_tokens",
                                                      continuous_update=False)}
    widget = widgets.interactive(lambda block_size, max_tokens: kv_memory_view(block_size, max_tokens), **controls)
    return live(widget, kv_memory_view(block_size, max_tokens),
                "sliders for the block size and the longest answer a request may ask for; the bars show what share "
                "of reserved KV memory holds tokens when each request reserves the whole context, its own maximum, "
                "or blocks as it grows")


# --- the widget ------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _draft():
    from ..pretrained import load_pretrained
    return load_pretrained("draft")


def serve_workload(arrival_rate: float, kv_tokens: int, block_size: int, num_requests: int = 24, seed: int = 0,
                   model=None, tok=None, max_num_seqs: int = 16, max_num_batched_tokens: int = 256):
    """Serve a seeded workload (prompts of 16-128 tokens, answers of 8-48) arriving at ``arrival_rate``
    requests per second (Poisson), with a KV pool of ``kv_tokens // block_size`` blocks. Returns the engine's
    outputs, its ``RunStats`` and the engine."""
    from ..engine import Engine
    from ..engine.baselines import mixed_workload
    _check_positive(arrival_rate=arrival_rate, kv_tokens=kv_tokens, block_size=block_size)
    if model is None:
        model, tok = _draft()
    prompts, params = mixed_workload(tok, num_requests, prompt_len=(16, 128), output_len=(8, 48), seed=seed)
    rng = random.Random(seed)
    t, arrivals = 0.0, []
    for _ in prompts:
        arrivals.append(t)
        t += rng.expovariate(arrival_rate)
    engine = Engine(model, tok, block_size=int(block_size), num_blocks=max(1, int(kv_tokens) // int(block_size)),
                    max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
    outputs = engine.generate(prompts, params, arrival_times=arrivals)
    return outputs, engine.last_stats, engine


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")


@lru_cache(maxsize=16)
def _serve_draft(arrival_rate: float, kv_tokens: int, block_size: int):
    return serve_workload(arrival_rate, kv_tokens, block_size)


def request_segments(metrics, request_id, trace) -> list[tuple[float, float, str]]:
    """One request's life as ``(start, end, phase)`` spans on the engine clock, read from the step trace:
    ``"prefill"`` in steps that computed several of its tokens (its prompt, or its tokens again after a
    preemption), ``"decode"`` in steps that computed one new token, and ``"waiting"`` from its arrival to its
    first step and whenever it sat out a step (queued again after a preemption, or left out of a step whose
    token budget ran out). Back-to-back steps join without a gap."""
    spans, last_step = [], None
    for rec in trace:
        phase = next((kind for rid, kind, _ in rec.entries if rid == request_id), None)
        if phase is None:
            continue
        start, end = rec.start, rec.start + rec.duration
        if spans and last_step == rec.step - 1:
            start = spans[-1][1]            # the bookkeeping between two steps belongs to the request's run
            if spans[-1][2] == phase:
                spans[-1] = (spans[-1][0], end, phase)
                last_step = rec.step
                continue
        spans.append((start, end, phase))
        last_step = rec.step
    out, t = [], metrics.arrival
    for start, end, phase in spans:
        if start > t:
            out.append((t, start, "waiting"))
        out.append((start, end, phase))
        t = end
    return out


PHASE_COLORS = {"waiting": WAIT, "prefill": PREFILL, "decode": DECODE}


def draw_requests(ax, outputs, trace) -> None:
    """One row per request on ``ax``: its waiting, prefill and decode spans (``request_segments``); rejected and
    preempted requests are labelled."""
    for row, o in enumerate(outputs):
        m = o.metrics
        if m.first_token is None:
            ax.text(m.arrival, row, " rejected", va="center", fontsize=7, color="#c44e52")
            continue
        for a, b, phase in request_segments(m, o.request_id, trace):
            ax.barh(row, max(b - a, 1e-4), left=a, height=0.8, color=PHASE_COLORS[phase], lw=0)
        if m.num_preemptions:
            ax.text(m.finished, row, f" preempted ×{m.num_preemptions}", va="center", fontsize=7, color="#c44e52")
    ax.set_ylim(len(outputs) - 0.4, -0.6)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("request")
    ax.grid(axis="x", alpha=0.3)
    ax.legend([Rectangle((0, 0), 1, 1, color=c) for c in (WAIT, PREFILL, DECODE)],
              ["waiting (queued, or preempted)", "prefill (or recompute)", "decoding"], fontsize=8, loc="upper right")


def engine_view(arrival_rate: float = 20.0, kv_tokens: int = 2048, block_size: int = 16, model=None, tok=None) -> Figure:
    """Widget callback: serve the workload and show each request's timeline (from the engine's step trace, so
    time spent queued again after a preemption is drawn as waiting) and the run's numbers."""
    _check_positive(arrival_rate=arrival_rate, kv_tokens=kv_tokens, block_size=block_size)
    if model is None:   # the bundled draft model: the same setting is served once (the notebook draws it twice)
        outputs, stats, engine = _serve_draft(float(arrival_rate), kv_tokens, block_size)
    else:
        outputs, stats, engine = serve_workload(arrival_rate, kv_tokens, block_size, model=model, tok=tok)
    fig = Figure(figsize=(10, 4.0), dpi=DPI)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    draw_requests(ax, outputs, engine.trace)
    ax.set_title(f"{engine.num_blocks} blocks x {engine.block_size} tokens; {arrival_rate:g} requests/s",
                 fontsize=10, loc="left")
    lines = [f"throughput\n{stats.throughput:.0f} tokens/s", f"mean TTFT\n{stats.mean_ttft_s * 1e3:.0f} ms",
             f"mean end-to-end\n{stats.mean_e2e_s * 1e3:.0f} ms", f"preemptions\n{stats.num_preemptions}",
             f"rejected\n{stats.num_rejected}", f"KV blocks in use\n{stats.block_utilisation:.0%}"]
    ax2.axis("off")
    for i, line in enumerate(lines):
        ax2.text(0.05, 1 - i / len(lines), line, va="top", fontsize=10)
    fig.tight_layout()
    fig.stats = stats   # for tests and curious readers
    fig.engine = engine
    return fig


def serving_widget(arrival_rate: float = 200.0, kv_tokens: int = 1024, block_size: int = 16):
    """Notebook 06's serving widget: sliders for the arrival rate, the KV budget and the block size; each
    setting serves the same seeded workload with the bundled draft model (``engine_view``)."""
    import ipywidgets as widgets
    from .live import live
    controls = {"arrival_rate": widgets.FloatLogSlider(value=arrival_rate, base=10, min=0, max=4, step=0.25,
                                                       description="requests/s", continuous_update=False),
                "kv_tokens": widgets.IntSlider(value=kv_tokens, min=128, max=4096, step=128, description="KV tokens",
                                               continuous_update=False),
                "block_size": widgets.Dropdown(options=[4, 8, 16, 32, 64], value=block_size, description="block size")}
    widget = widgets.interactive(lambda arrival_rate, kv_tokens, block_size:
                                 engine_view(arrival_rate, kv_tokens, block_size), **controls)
    return live(widget, engine_view(arrival_rate, kv_tokens, block_size),
                "sliders for the arrival rate, the KV budget and the block size; the engine serves 24 requests with "
                "the bundled draft model and the rows show each request waiting, prefilling and decoding, beside "
                "the run's throughput, time to first token and preemptions")


# --- load: metrics against the arrival rate (deep dive 06b) ----------------------------------------------

def load_sweep(rates, model=None, tok=None, num_requests: int = 32, seed: int = 0, max_num_seqs: int = 16,
               kv_tokens: int = 4096, block_size: int = 16, rounds: int = 3) -> dict:
    """Serve the same seeded workload (``serve_workload``) at each arrival rate (requests per second), ``rounds``
    times in alternation (``serve_alternating``); returns ``{"rates": [...], "stats": [RunStats of the median
    run, ...], "timings": [Timing of the rounds, ...]}`` in rate order."""
    from ..engine.baselines import serve_alternating
    if not isinstance(rates, (list, tuple)) or not rates:
        raise ValueError(f"rates must be a non-empty list of positive numbers, got {rates!r}")
    _check_positive(**{f"rates[{i}]": r for i, r in enumerate(rates)})
    rates = sorted(float(r) for r in rates)

    def serve(rate):
        outputs, stats, _ = serve_workload(rate, kv_tokens, block_size, num_requests=num_requests, seed=seed,
                                           model=model, tok=tok, max_num_seqs=max_num_seqs)
        return outputs, stats

    served = serve_alternating({rate: (lambda rate=rate: serve(rate)) for rate in rates}, rounds=rounds)
    typical = served.typical
    return {"rates": rates, "stats": [typical[r][1] for r in rates], "timings": [served.timings[r] for r in rates]}


def plot_load_sweep(result: dict) -> Figure:
    """Left: throughput against the arrival rate (and the rate itself in tokens/s, the most that can be served);
    right: mean time to first token, inter-token latency and end-to-end latency against the arrival rate."""
    from matplotlib.ticker import ScalarFormatter
    rates, stats = result["rates"], result["stats"]
    fig = Figure(figsize=(10, 3.6), dpi=DPI)
    ax, ax2 = fig.subplots(1, 2)
    ax.plot(rates, [s.throughput for s in stats], "o-", color=DECODE, label="throughput (tokens/s)")
    ax.set_xlabel("arrival rate (requests/s)")
    ax.set_ylabel("generated tokens/s")
    for name, values, style in (("mean time to first token", [s.mean_ttft_s for s in stats], "o-"),
                                ("mean inter-token latency", [s.mean_itl_s for s in stats], "s-"),
                                ("mean end-to-end latency", [s.mean_e2e_s for s in stats], "^-")):
        ax2.plot(rates, [v * 1e3 for v in values], style, label=name)
    ax2.set_xlabel("arrival rate (requests/s)")
    ax2.set_ylabel("ms")
    ax2.set_yscale("log")
    for a in (ax, ax2):
        a.set_xscale("log")
        a.xaxis.set_major_formatter(ScalarFormatter())
        a.grid(alpha=0.3)
    ax2.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_title("throughput rises with the load, then levels off", fontsize=10, loc="left")
    ax2.set_title("latency: what each user feels", fontsize=10, loc="left")
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
