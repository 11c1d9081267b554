"""Plots and widget callbacks for notebook 02 (how inference works).

Every function returns a matplotlib ``Figure`` (built without pyplot, so nothing leaks between
cells) or plain data. The widget callbacks take the widget's values as plain arguments:

* ``token_view(tok, text)``: the text box (tokens and ids of any text);
* ``sampling_view(logits, tok, temperature, top_k, top_p)``: the temperature / top-k / top-p sliders
  (slider values ``top_k=0`` and ``top_p=1.0`` mean "off": they reach ``inferlab.sampling`` as ``None``);
* ``trace_step_view(result, step)``: the slider that walks through the token-by-token loop.

``token_widget``, ``sampling_widget`` and ``step_widget`` build each live widget with
``inferlab.viz.live.live``: the widget, a picture of its default state drawn by the same callback with
the same values, and a sentence saying what it does (so the notebook reads on GitHub too).
"""
from __future__ import annotations

import statistics
from functools import lru_cache

import matplotlib
import matplotlib.ticker
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..core.generate import token_bytes
from ..core.sampling import next_token_probs
from ..core.tokenizer import token_table

DPI = 150   # legible at GitHub's width
KEPT, DROPPED, RAW, ACCENT = "#3b75af", "#d9d9d9", "#bdbdbd", "#d62728"


# --- showing tokens ---------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _font_codepoints() -> frozenset:
    from matplotlib.font_manager import FontProperties, findfont, get_font
    path = findfont(FontProperties(family=matplotlib.rcParams["font.family"]))
    return frozenset(get_font(path).get_charmap())


def _label_char(c: str) -> str:
    special = {" ": "␣", "\n": "↵", "\t": "→"}
    if c in special:
        return special[c]
    if ord(c) in _font_codepoints() and c.isprintable():
        return c
    return f"U+{ord(c):04X}"


def drawable_text(text: str) -> str:
    """``text`` with every character the plot font lacks written as U+XXXX, spaces kept, ``$`` escaped."""
    return mathtext_safe("".join(c if c in " \n" else _label_char(c) for c in text).replace("\n", "↵"))


def mathtext_safe(s: str) -> str:
    """Escape ``$`` so matplotlib draws it instead of starting math mode."""
    return s.replace("$", r"\$")


def token_label(tok, token_id: int) -> str:
    """How notebook 02 draws one token: its text (space ␣, newline ↵), or its raw bytes in hex
    when the token is only part of a UTF-8 character (the byte-level fallback). An id the tokenizer
    lacks (a model with more embedding rows than tokens) shows as ``<id>``."""
    raw = token_bytes(tok, int(token_id))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return " ".join(f"{b:02X}" for b in raw)
    return "".join(_label_char(c) for c in text)


def text_of(tok, ids) -> str:
    """The text of token ``ids``: their bytes joined, then decoded (a character cut off shows as U+FFFD). Unlike
    ``tok.decode``, an id the tokenizer lacks (a model with more embedding rows than tokens) shows as ``<id>``."""
    return b"".join(token_bytes(tok, int(i)) for i in ids).decode("utf-8", errors="replace")


def is_byte_token(token_id: int, tok=None) -> bool:
    """True for a single-byte token, the fallback every text can use (notebook 02). With ``tok``: a token of
    one byte, in any tokenizer; without: the bundled tokenizer's rule, ids 0-255 (every other id there is
    a learned merge of two earlier tokens)."""
    if tok is None:
        return 0 <= int(token_id) < 256
    return len(token_bytes(tok, int(token_id))) == 1


def is_partial(tok, token_id: int) -> bool:
    """True when a token's bytes are not whole UTF-8 characters on their own (notebook 02)."""
    try:
        token_bytes(tok, int(token_id)).decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def format_tokens(tok, text: str) -> str:
    """A printable table of ``text``'s tokens: id, raw bytes, and how the token reads (notebook 02)."""
    lines = [f"{'id':>5}  {'bytes':<24} token"]
    for token_id, _ in token_table(tok, text):
        lines.append(f"{token_id:>5}  {token_bytes(tok, token_id)!r:<24} {token_label(tok, token_id)}")
    n_chars, n_tokens = len(text), len(lines) - 1
    lines.append(f"{n_chars} character{'s' * (n_chars != 1)} -> {len(text.encode('utf-8'))} UTF-8 bytes -> "
                 f"{n_tokens} token{'s' * (n_tokens != 1)}")
    return "\n".join(lines)


def token_view(tok, text: str, width: float = 56.0) -> Figure:
    """Widget callback for the text box: ``text`` as coloured token boxes with each token's id below.

    Orange boxes are single-byte tokens (ids 0-255 in the bundled tokenizer), the fallback for text the
    vocabulary has no longer piece for; a label in hex marks a token that is not a whole character (a byte
    of a multi-byte character, or one of the few learned merges that stop mid-character).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    pairs = token_table(tok, text) if text else []
    boxes, x, row = [], 0.0, 0
    for token_id, _ in pairs:
        label = token_label(tok, token_id)
        w = max(len(label), 2) + 1.2
        if x + w > width and x > 0:
            x, row = 0.0, row + 1
        boxes.append((x, row, w, label, token_id))
        x += w + 0.4
    rows = row + 1
    fig = Figure(figsize=(10, 0.3 + 0.62 * rows), dpi=DPI)
    ax = fig.add_axes((0.01, 0.02, 0.98, 0.96 - 0.3 / (0.3 + 0.62 * rows)))
    palette = ["#cfe2f3", "#d9ead3", "#fff2cc", "#ead1dc"]
    for n, (bx, by, w, label, token_id) in enumerate(boxes):
        color = "#f9cb9c" if is_byte_token(token_id, tok) else palette[n % len(palette)]
        ax.add_patch(Rectangle((bx, -by - 0.62), w, 0.58, facecolor=color, edgecolor="#666666", lw=0.6))
        ax.text(bx + w / 2, -by - 0.25, mathtext_safe(label), ha="center", va="center", fontsize=10, family="DejaVu Sans Mono")
        ax.text(bx + w / 2, -by - 0.53, str(token_id), ha="center", va="center", fontsize=7, color="#444444")
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-rows * 1.0 + 0.3, 0.05)
    ax.axis("off")
    n_bytes = len(text.encode("utf-8"))
    n_single = sum(is_byte_token(b[4], tok) for b in boxes)
    n_partial = sum(is_partial(tok, b[4]) for b in boxes)
    legend = [f"{n_single} single-byte tokens (orange)"] if n_single else []
    legend += [f"{n_partial} not whole characters (hex)"] if n_partial else []
    fig.suptitle(f"{len(text)} characters → {n_bytes} bytes → {len(boxes)} tokens"
                 + (": " + ", ".join(legend) if legend else ""), fontsize=10, y=0.995)
    return fig


def plot_embedding_row(model, tok, token_id: int) -> Figure:
    """The embedding lookup: row ``token_id`` of ``model.tok_emb.weight`` drawn as its d_model numbers."""
    weight = model.tok_emb.weight
    row = weight[int(token_id)].detach().float().cpu()
    fig = Figure(figsize=(10, 2.6), dpi=DPI)
    ax = fig.add_subplot()
    ax.bar(range(row.numel()), row.numpy(), width=1.0, color=KEPT)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlim(-1, row.numel())
    ax.set_xlabel("dimension")
    ax.set_ylabel("value")
    ax.set_title(f"token {int(token_id)} ({mathtext_safe(token_label(tok, token_id))}) → row {int(token_id)} of tok_emb.weight "
                 f"{list(weight.shape)} → a vector of {row.numel()} numbers", fontsize=10)
    fig.set_layout_engine("tight")
    return fig


# --- the layers ---------------------------------------------------------------------------------------

def plot_residual_stream(outputs, tok, ids) -> Figure:
    """Heatmap of each token's RMS after each stage, and the average per stage (notebook 02).

    ``outputs``: ``anatomy.forward_by_stage(model, ids)``.
    """
    from ..lessons.part2 import token_rms
    rms = token_rms(outputs).numpy()
    labels = [mathtext_safe(token_label(tok, i)) for i in ids]
    fig = Figure(figsize=(10, 3.4), dpi=DPI)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    im = ax.imshow(rms, aspect="auto", cmap="viridis", norm=matplotlib.colors.LogNorm())
    ax.set_yticks(range(len(outputs.names)), outputs.names)
    ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=8)
    ax.set_title("RMS of each token's vector after each stage", fontsize=10)
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")   # 0.1, 1, 10 rather than powers of ten
    bar = fig.colorbar(im, ax=ax, fraction=0.04)
    bar.ax.yaxis.set_major_formatter(plain)
    bar.ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.plot(rms.mean(1), range(len(outputs.names)), "o-", color=KEPT)
    ax2.set_xscale("log")
    ax2.xaxis.set_major_formatter(plain)
    ax2.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.set_ylim(len(outputs.names) - 0.5, -0.5)
    ax2.set_yticks(range(len(outputs.names)), [])
    ax2.set_xlabel("mean RMS (log)")
    ax2.grid(alpha=0.3)
    fig.set_layout_engine("tight")
    return fig


# --- logits -> probabilities -> a choice -----------------------------------------------------------------

def slider_top_k(value):
    """Slider value -> top_k argument: 0 means off (None)."""
    return None if value is None or int(value) <= 0 else int(value)


def slider_top_p(value):
    """Slider value -> top_p argument: 1.0 means off (None)."""
    return None if value is None or float(value) >= 1.0 else float(value)


def candidate_rows(logits: torch.Tensor, tok, temperature: float = 1.0, top_k=None, top_p=None, n: int = 10,
                   digits: int = 3) -> list[tuple[int, str, float]]:
    """The ``n`` highest-scoring next tokens and their probability under these controls (0 = filtered out):
    (id, token, probability rounded to ``digits``)."""
    logits = logits.float()
    probs = next_token_probs(logits, temperature, top_k, top_p)
    order = logits.topk(min(n, logits.numel())).indices
    return [(int(i), token_label(tok, int(i)), round(float(probs[i]), digits)) for i in order]


def plot_logits_to_probs(logits: torch.Tensor, tok, n: int = 10) -> Figure:
    """Side by side: the ``n`` largest logits (any real number) and their softmax probabilities (sum to 1)."""
    logits = logits.float().cpu()
    probs = torch.softmax(logits, -1)
    top = logits.topk(n)
    labels = [mathtext_safe(token_label(tok, int(i))) for i in top.indices]
    fig = Figure(figsize=(10, 3.0), dpi=DPI)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.barh(range(n), top.values.numpy(), color=RAW)
    ax1.set_title(f"logits: {logits.numel()} raw scores (top {n} shown)", fontsize=10)
    ax2.barh(range(n), probs[top.indices].numpy(), color=KEPT)
    ax2.set_title(f"softmax: probabilities (these {n} hold {probs[top.indices].sum():.1%})", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_yticks(range(n), labels, family="DejaVu Sans Mono")
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.set_layout_engine("tight")
    return fig


def sampling_view(logits: torch.Tensor, tok, temperature: float = 1.0, top_k=0, top_p=1.0, n: int = 12) -> Figure:
    """Widget callback for the sampling sliders: the next-token distribution under temperature, top-k, top-p.

    Grey bars: plain softmax (temperature 1, nothing filtered). Blue bars: the distribution the token
    is actually drawn from (``inferlab.sampling.next_token_probs``). The slider values ``top_k=0`` and
    ``top_p=1.0`` mean off; they are passed on as ``None``, which is how ``inferlab.sampling`` says off
    (it accepts ``top_p=1.0`` too, and refuses ``top_k=0``).
    """
    top_k, top_p = slider_top_k(top_k), slider_top_p(top_p)
    logits = logits.float().cpu()
    plain = torch.softmax(logits, -1)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    order = logits.topk(n).indices
    labels = [mathtext_safe(token_label(tok, int(i))) for i in order]
    kept = int((probs > 0).sum())
    fig = Figure(figsize=(10, 3.4), dpi=DPI)
    ax = fig.add_subplot()
    xs = torch.arange(n).float()
    ax.bar(xs - 0.2, plain[order].numpy(), width=0.4, color=RAW, label="softmax (T=1, unfiltered)")
    ax.bar(xs + 0.2, probs[order].numpy(), width=0.4, color=KEPT, label="drawn from (after the controls)")
    for x, p in zip(xs.tolist(), probs[order].tolist()):
        if p > 0:
            ax.text(x + 0.2, p, f"{p:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(n), labels, rotation=30, family="DejaVu Sans Mono")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("probability")
    mode = "greedy (temperature 0)" if temperature == 0 else f"temperature {temperature:g}"
    k_text = "top_k off" if top_k is None else f"top_k={top_k}"
    p_text = "top_p off" if top_p is None else f"top_p={top_p:g}"
    ax.set_title(f"{mode}, {k_text}, {p_text}: {kept} of {logits.numel()} tokens can be drawn", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.set_layout_engine("tight")
    return fig


# --- the token-by-token loop ---------------------------------------------------------------------------

def _fit_label(label: str, width_pt: float, size: float = 9.0, smallest: float = 6.0) -> tuple[str, float]:
    """A whole token label and a font size at which it fits ``width_pt`` (monospace: a character is about
    0.6 of the font size wide); a label too long even at ``smallest`` is wrapped over two lines, never cut."""
    needed = 0.6 * max(len(label), 1)
    if needed * size <= width_pt:
        return label, size
    if needed * smallest <= width_pt:
        return label, width_pt / needed
    half = (len(label) + 1) // 2
    return label[:half] + "\n" + label[half:], max(smallest, min(size, width_pt / (0.6 * half)))


def plot_trace(trace, tok=None, max_steps: int = 16, width: float = 10.0) -> Figure:
    """The loop as a table: one row per step (one forward pass each), its top candidates left to right
    with their probabilities (colour = probability), the picked token outlined in red. Every label is
    the whole token (space ␣, newline ↵, bytes in hex). ``trace``: ``il.generate(..., trace=True).trace``."""
    if not trace:
        raise ValueError("trace is empty: call il.generate(..., trace=True)")
    steps = trace[:max_steps]
    k = max(len(s.candidates) for s in steps)
    outside = any(all(c.token_id != s.token_id for c in s.candidates) for s in steps)
    left, right = 1.3, (1.6 if outside else 0.2)   # inches: step labels, and a note for a pick outside the top k
    cell_in = (width - left - right) / k
    row_in = 0.34
    fig = Figure(figsize=(width, 0.95 + row_in * len(steps)), dpi=DPI)
    ax = fig.add_axes((left / width, 0.55 / fig.get_figheight(), cell_in * k / width,
                       row_in * len(steps) / fig.get_figheight()))
    norm, cmap = Normalize(0, 1), matplotlib.colormaps["Blues"]
    label_pt = (cell_in - 0.55) * 72           # room left of the probability
    for row, s in enumerate(steps):
        for col, c in enumerate(s.candidates):
            dark = c.prob > 0.55
            chosen = c.token_id == s.token_id
            ax.add_patch(Rectangle((col + 0.02, row + 0.06), 0.96, 0.88, facecolor=cmap(norm(c.prob) * 0.85),
                                   edgecolor=ACCENT if chosen else "white", lw=2 if chosen else 0.5))
            label = token_label(tok, c.token_id) if tok is not None else "".join(_label_char(ch) for ch in c.text)
            text, size = _fit_label(label, label_pt)
            ax.text(col + 0.06, row + 0.5, mathtext_safe(text), ha="left", va="center", fontsize=size,
                    family="DejaVu Sans Mono", color="white" if dark else "black")
            ax.text(col + 0.95, row + 0.5, f"{c.prob:.2f}", ha="right", va="center", fontsize=8,
                    color="white" if dark else "#333333")
        if all(c.token_id != s.token_id for c in s.candidates):
            picked = token_label(tok, s.token_id) if tok is not None else s.text
            ax.text(k + 0.05, row + 0.5, f"picked: {mathtext_safe(picked)}", ha="left", va="center", fontsize=8,
                    color=ACCENT, family="DejaVu Sans Mono", clip_on=False)
    ax.set_xlim(0, k)
    ax.set_ylim(len(steps), 0)
    ax.set_yticks([r + 0.5 for r in range(len(steps))],
                  [f"step {s.step} (pos {s.position})" for s in steps], fontsize=8)
    ax.set_xticks([c + 0.5 for c in range(k)], [f"#{c + 1} most likely" if c == 0 else f"#{c + 1}" for c in range(k)],
                  fontsize=8)
    ax.xaxis.tick_top()
    ax.set_xlabel("each row is one forward pass; red outline = the token picked and appended", fontsize=9)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


def words_over_steps(texts) -> list[tuple[int, list[str]]]:
    """Words that took more than one step to write (notebook 02): ``(first step, [pieces])`` for each
    run of tokens where a token starting with a letter follows one ending with a letter, with no space
    between. ``texts``: the generated tokens' texts, e.g. ``[s.text for s in result.trace]``."""
    found, run, start = [], [], 0
    for step, piece in enumerate(list(texts) + [" "]):
        if run and piece[:1].isalpha() and run[-1][-1:].isalpha():
            run.append(piece)
            continue
        if len(run) > 1:
            found.append((start, run))
        run, start = [piece], step
    return found


def trace_step_view(result, step: int = 0, tok=None) -> Figure:
    """Widget callback for the step slider: the text so far at ``step`` and the candidates the model weighed.

    ``result``: ``il.generate(..., trace=True)``; with ``tok`` the prompt is shown too.
    """
    trace = result.trace
    if not trace:
        raise ValueError("result has no trace: call il.generate(..., trace=True)")
    step = max(0, min(int(step), len(trace) - 1))
    s = trace[step]
    if tok is not None:
        before = text_of(tok, [*result.prompt_tokens, *result.tokens[:step]])
    else:
        before = "".join(t.text for t in trace[:step])
    fig = Figure(figsize=(10, 2.9), dpi=DPI)
    ax = fig.add_subplot()
    names = [mathtext_safe(token_label(tok, c.token_id) if tok is not None else "".join(_label_char(ch) for ch in c.text))
             for c in s.candidates]
    colors = [ACCENT if c.token_id == s.token_id else KEPT for c in s.candidates]
    ax.barh(range(len(names)), [c.prob for c in s.candidates], color=colors)
    ax.set_yticks(range(len(names)), names, family="DejaVu Sans Mono")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    picked_shown = any(c.token_id == s.token_id for c in s.candidates)
    ax.set_xlabel("probability (red: the token picked)" if picked_shown else
                  f"probability (the token picked, {drawable_text(s.text)}, is not among these {len(names)})")
    ax.set_title(f"step {step}, position {s.position}: …{drawable_text(before[-60:])}[{drawable_text(s.text)}]", fontsize=9,
                 family="DejaVu Sans Mono", loc="left")
    fig.set_layout_engine("tight")
    return fig


# --- where the time of one step goes ----------------------------------------------------------------------

def plot_stage_times(timing) -> Figure:
    """Measured median time per stage of one step (µs), next to the whole step timed in one go, and
    each group's share. ``timing``: ``anatomy.time_step(...)``."""
    names = list(timing.stages) + ["sum of stages", "whole step"]
    values = [v * 1e6 for v in timing.stages.values()] + [timing.sum_of_stages_s * 1e6, timing.whole_step_s * 1e6]
    colors = [KEPT if n.startswith("layer") else "#7f7f7f" for n in timing.stages] + ["#2ca02c", ACCENT]
    low, high = [], []                            # the middle half of each entry's repeats (error bars)
    for name, v in zip(names, values):
        reps = timing.samples.get(name, [])
        q = statistics.quantiles(reps, n=4) if len(reps) >= 2 else [v / 1e6, v / 1e6, v / 1e6]
        low.append(max(v - q[0] * 1e6, 0.0))
        high.append(max(q[2] * 1e6 - v, 0.0))
    fig = Figure(figsize=(10, 3.6), dpi=DPI)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.3]})
    ax.barh(range(len(names)), values, color=colors, xerr=[low, high], error_kw={"lw": 0.8, "capsize": 2})
    for y, (v, h) in enumerate(zip(values, high)):
        ax.text(v + h, y, f" {v:,.0f}", va="center", fontsize=7)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("median time (µs); bars: middle half of the repeats")
    ax.set_xlim(0, max(v + h for v, h in zip(values, high)) * 1.18)
    ax.set_title(f"one step on a {timing.prompt_tokens}-token prompt", fontsize=10)
    groups = timing.grouped()
    total = sum(groups.values())
    shares = [v / total for v in groups.values()]
    ax2.barh(range(len(groups)), shares, color=[KEPT if n == "layers" else "#7f7f7f" for n in groups])
    for y, share in enumerate(shares):
        ax2.text(share, y, f" {share:.1%}", va="center", fontsize=8)
    ax2.set_yticks(range(len(groups)), list(groups))
    ax2.invert_yaxis()
    ax2.set_xlim(0, 1.25)
    ax2.set_xlabel("share of the sum of stages")
    fig.set_layout_engine("tight")
    return fig


# --- the live widgets (each: widget + picture of its default state + a sentence) -----------------------

TOKEN_DEMO_TEXT = "Köln — the return value is None 🐍"   # the text box's default (notebook 02)


def token_widget(tok, text: str = TOKEN_DEMO_TEXT):
    """Notebook 02's text box: type any text, see its tokens (``token_view``)."""
    import ipywidgets as widgets

    from .live import interactive, live
    box = widgets.Text(value=text, description="text", continuous_update=False, layout=widgets.Layout(width="90%"))
    widget = interactive(lambda text: token_view(tok, text), text=box)
    return live(widget, token_view(tok, text),
                "a text box; type any text and press Enter to see its tokens, their ids and which are single bytes")


def sampling_widget(logits: torch.Tensor, tok, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """Notebook 02's sampling sliders: temperature, top-k (0 = off) and top-p (1.0 = off) on ``logits``
    (``sampling_view``)."""
    import ipywidgets as widgets

    from .live import interactive, live
    sliders = {"temperature": widgets.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05,
                                                  continuous_update=False),
               "top_k": widgets.IntSlider(value=top_k, min=0, max=50, continuous_update=False),
               "top_p": widgets.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.05, continuous_update=False)}
    widget = interactive(lambda temperature, top_k, top_p: sampling_view(logits, tok, temperature, top_k, top_p),
                                 **sliders)
    return live(widget, sampling_view(logits, tok, temperature, top_k, top_p),
                "sliders for temperature, top-k and top-p; the bars show which next tokens can be drawn and how likely")


def step_widget(result, tok=None, step: int = 0):
    """Notebook 02's step slider: walk through a traced generation one forward pass at a time
    (``trace_step_view``); ``result``: ``il.generate(..., trace=True)``."""
    import ipywidgets as widgets

    from .live import interactive, live
    if not result.trace:
        raise ValueError("result has no trace: call il.generate(..., trace=True)")
    slider = widgets.IntSlider(value=step, min=0, max=len(result.trace) - 1, continuous_update=False)
    widget = interactive(lambda step: trace_step_view(result, step, tok), step=slider)
    return live(widget, trace_step_view(result, step, tok),
                "a slider over the steps of the loop; each step shows the text so far and the candidates for the next token")


def entropy_bits(probs: torch.Tensor) -> float:
    """Entropy of a distribution in bits (how spread out the next-token choice is)."""
    p = probs.float()
    p = p[p > 0]
    return max(0.0, float(-(p * p.log2()).sum()))  # max: a sure choice gives 0.0, not -0.0


__all__ = ["token_label", "text_of", "is_partial", "format_tokens", "token_view", "plot_embedding_row", "plot_residual_stream",
           "slider_top_k", "slider_top_p", "candidate_rows", "plot_logits_to_probs", "sampling_view", "plot_trace",
           "words_over_steps", "is_byte_token", "trace_step_view", "plot_stage_times", "entropy_bits",
           "TOKEN_DEMO_TEXT", "token_widget", "sampling_widget", "step_widget"]
