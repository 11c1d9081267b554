"""Lesson 5's helpers: each technique measured the same way, speed, memory and quality beside a baseline (notebook 05).

* ``decode_step_time``: one decode step at a given context length through a ``KVCache`` (the step
  that runs once per generated token).
* quality uses ``core.train.heldout_loss``: next-token loss on held-out text, logits in float32.
* ``greedy_agreement``: how much of a greedy answer stays the same.
* ``inference_mode_cost``: a training-mode forward against ``eval()`` + ``torch.inference_mode()``.
* ``quality_vs_reference``: how far a changed model's predictions are from the float32 model's (KL
  divergence per token, which cannot be negative, and the held-out loss change with its spread).
* ``format_speeds``: decode steps of one model stored in several weight formats, timed in alternation.
* ``memory_bound_model``: a stack of real-size layers with random weights, too big for any CPU cache.
* ``batching_sweep``: throughput and per-request latency of ``il.generate_batch`` against batch size.
* ``gqa_sweep``: KV cache bytes and decode step time of one shape with fewer and fewer key/value heads.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.config import MODEL_CONFIGS
from ..core.device import as_device
from ..core.generate import generate_batch
from ..measure import decode_step, random_weights
from ..measure.counting import kv_cache_bytes
from ..measure.timing import Ratio, Timing, compare, measure, paired_ratio
from ..optimize import precision as _precision, quantize as _quantize
from ..progress import progress
from .part1 import saved_bytes


def decode_stepper(model, context: int = 32, batch_size: int = 1):
    """One decode step (one new token per sequence) after ``context`` cached tokens, again and again at the
    same position: ``decode_step.decode_stepper``, counted in cached tokens."""
    if not isinstance(context, int) or not 1 <= context < model.config.max_seq_len:
        raise ValueError(f"context must be an int in [1, {model.config.max_seq_len - 1}], got {context!r}")
    return decode_step.decode_stepper(model, batch_size, context + 1)


def decode_step_time(model, context: int = 32, batch_size: int = 1, warmup: int = 2, repeats: int = 10,
                     min_time_s: float = 0.0):
    """``timing.Timing`` of one decode step (one new token per sequence) after ``context`` cached tokens."""
    step = decode_stepper(model, context, batch_size)
    return measure(step, warmup=warmup, repeats=repeats, device=model.device, min_time_s=min_time_s)


def greedy_agreement(reference: list[int], other: list[int]) -> tuple[float, int]:
    """(share of positions with the same token, length of the common prefix)."""
    n = min(len(reference), len(other))
    if n == 0:
        return float("nan"), 0
    same = sum(a == b for a, b in zip(reference, other))
    prefix = next((i for i in range(n) if reference[i] != other[i]), n)
    return same / n, prefix


@dataclass
class ModeCost:
    train_s: float          # median forward time, training mode with autograd recording
    inference_s: float      # median forward time, eval() + torch.inference_mode()
    train_saved_bytes: int  # activations autograd keeps for a backward pass that inference never runs
    inference_saved_bytes: int
    speedup: Ratio | None = None   # training-mode time / inference time, paired run by run
    spread: float = 0.0            # the larger of the two timings' spreads (timing.Timing.spread)


def inference_mode_cost(model, batch_size: int = 4, seq_len: int = 128, repeats: int = 5) -> ModeCost:
    """A forward pass as training runs it (train mode, gradients recorded) against inference, the two
    taking turns (``timing.compare``)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (batch_size, seq_len), generator=gen).to(model.device)
    was_training = model.training

    def train_forward():
        model.train()
        with torch.enable_grad():
            return model(x)

    def inference_forward():
        model.eval()
        with torch.inference_mode():
            return model(x)

    try:
        t = compare({"train": train_forward, "inference": inference_forward}, repeats=repeats, warmup=1,
                    device=model.device)
        saved_train = saved_bytes(model, train_forward)   # weights not counted: they exist anyway
        saved_inf = saved_bytes(model, inference_forward)
    finally:
        model.train(was_training)
    return ModeCost(t["train"].median_s, t["inference"].median_s, saved_train, saved_inf,
                    paired_ratio(t["train"], t["inference"]), max(t["train"].spread, t["inference"].spread))


@dataclass
class BatchPoint:
    batch_size: int
    tokens_per_s: float   # generated tokens of the whole batch / wall time (median run)
    latency_s: float      # wall time until each request has its answer (they finish together)
    tpot_s: float         # time per decode step of the batch (mean over the median run's steps)
    timing: Timing | None = None   # the batch's runs (timing.Timing: median, spread)


def batching_sweep(model, tok, prompts: list, batch_sizes=(1, 2, 4, 8, 16), max_new_tokens: int = 32,
                   repeats: int = 3) -> list[BatchPoint]:
    """``il.generate_batch`` on the first ``b`` prompts (cycled) for each batch size ``b``, the batch sizes
    taking turns (``timing.compare``), so a machine that slows down half-way slows every batch size alike."""
    if not prompts:
        raise ValueError("prompts must be a non-empty list")
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive ints, got {batch_sizes!r}")
    runs = {}

    def run(b):
        res = generate_batch(model, tok, [prompts[i % len(prompts)] for i in range(b)], max_new_tokens=max_new_tokens)
        runs.setdefault(b, []).append(res[0])

    timings = compare({b: (lambda b=b: run(b)) for b in batch_sizes}, repeats=repeats, warmup=1, device=model.device)
    points = []
    for b in batch_sizes:
        t = timings[b]
        tpot = statistics.median(r.tpot_s for r in runs[b][1:])   # the warm-up run left out
        points.append(BatchPoint(b, b * max_new_tokens / t.median_s, t.median_s, tpot, t))
    return points


# --- weight formats: quality against the float32 model, and decode speed ----------------------------------

FORMATS = ("float32", "bfloat16", "float16", "int8", "q8_0", "q4_0")


def in_format(model, name: str):
    """A copy of ``model`` (float32) stored as ``name``: a precision of ``precision.PRECISIONS`` or a
    quantization scheme of ``quantize.SCHEMES`` (weight-only: activations keep the model's float dtype).
    "float32" returns ``model`` itself."""
    if name == "float32":
        return model
    if name in _precision.PRECISIONS:
        return _precision.to_precision(model, name)
    if name in _quantize.SCHEMES:
        return _quantize.quantize_model(model, name)
    raise ValueError(f"unknown weight format {name!r}; choose one of {FORMATS}")


@dataclass
class Quality:
    """One model's predictions against a reference model's on the same held-out windows."""
    kl_per_token: float    # mean KL(reference || model) in nats per token: 0 only when they predict alike
    loss: float            # mean held-out loss (nats per token)
    loss_change: float     # mean over windows of (loss - reference loss) on the same window
    loss_change_se: float  # its standard error: the change is clearly not zero when |change| > 2 se
    windows: int

    @property
    def loss_change_clear(self) -> bool:
        """True when the loss change is more than two standard errors from zero (its sign is measured)."""
        return abs(self.loss_change) > 2 * self.loss_change_se


@torch.no_grad()
def quality_vs_reference(reference, models: dict, data: torch.Tensor, seq_len: int = 256, batch_size: int = 8,
                         max_windows=None, show_progress: bool = True) -> dict:
    """``{name: Quality}`` of each model in ``models`` against ``reference`` on consecutive windows of ``data``.

    Per token, KL(p_ref || p_model) = sum_v p_ref(v) (log p_ref(v) - log p_model(v)) >= 0: how much the
    changed model's whole next-token distribution moved. A loss change can come out negative on a little
    text by chance (a quantized model is not better; it errs differently); a KL divergence cannot.
    """
    if not isinstance(models, dict) or not models:
        raise TypeError("models must be a non-empty dict of name -> model")
    n = (len(data) - 1) // seq_len
    n = n if max_windows is None else min(n, max_windows)
    if n < 2:
        raise ValueError(f"need at least 2 windows of seq_len = {seq_len} tokens, data has {len(data)} tokens")
    ref_losses, losses = [], {name: [] for name in models}
    kl_sum = {name: 0.0 for name in models}
    with torch.inference_mode():
        for i in progress(range(0, n, batch_size), desc="held-out batches", unit="batch", enabled=show_progress):
            rows = range(i, min(n, i + batch_size))
            x = torch.stack([data[r * seq_len:(r + 1) * seq_len] for r in rows])
            y = torch.stack([data[r * seq_len + 1:(r + 1) * seq_len + 1] for r in rows])
            ref_logp = torch.log_softmax(reference(x.to(reference.device)).float().cpu(), -1)
            ref_losses += F.nll_loss(ref_logp.transpose(1, 2), y, reduction="none").mean(1).tolist()
            for name, m in models.items():
                logp = torch.log_softmax(m(x.to(m.device)).float().cpu(), -1)
                losses[name] += F.nll_loss(logp.transpose(1, 2), y, reduction="none").mean(1).tolist()
                kl_sum[name] += F.kl_div(logp, ref_logp, log_target=True, reduction="sum").item()
    out = {}
    for name in models:
        change = [a - b for a, b in zip(losses[name], ref_losses)]
        out[name] = Quality(kl_sum[name] / (n * seq_len), statistics.fmean(losses[name]), statistics.fmean(change),
                            statistics.stdev(change) / math.sqrt(n), n)
    return out


@dataclass
class FormatSpeed:
    name: str
    weight_bytes: int      # bytes the model stores, which a decode step reads (the embedding: one row)
    timing: Timing         # one decode step
    speedup: Ratio         # float32 step / this step, paired round by round
    logits_error: float    # |logits - float32 logits| / |float32 logits| for the same step


def format_speeds(model, formats=("float32", "bfloat16", "int8"), context: int = 64, repeats: int = 10,
                  warmup: int = 2, models: dict | None = None) -> dict:
    """``{format: FormatSpeed}``: one decode step of ``model`` (float32) in each weight format, the formats
    taking turns (``timing.compare``) so that other work on the machine slows them alike, and the ratio to
    float32 taken round by round. ``models`` may hold formats already made (``in_format``)."""
    if "float32" not in formats:
        raise ValueError("formats must include 'float32', the baseline")
    given = models or {}
    made = {name: given[name] if given.get(name) is not None else in_format(model, name) for name in formats}
    steps = {name: decode_stepper(m, context) for name, m in made.items()}
    reference = steps["float32"]().float()
    errors = {name: float((step().float() - reference).norm() / reference.norm()) for name, step in steps.items()}
    timings = compare(steps, repeats=repeats, warmup=warmup, device=model.device)
    return {name: FormatSpeed(name, made[name].weight_bytes(), timings[name],
                              paired_ratio(timings["float32"], timings[name]), errors[name]) for name in formats}


def memory_bound_model(shape: str = "gpt2-large", n_layer: int = 4, vocab_size: int = 2048, max_seq_len: int = 256,
                       device=None):
    """A float32 model of ``n_layer`` layers of a published shape, with random weights (which time exactly like
    trained ones): hundreds of MB, more than a CPU's caches hold, so every decode step streams its weights from
    memory. The vocabulary is cut to ``vocab_size`` so that the layers, not the output head, are measured.
    ``device``: where it runs (default the CPU)."""
    if shape not in MODEL_CONFIGS:
        raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(MODEL_CONFIGS)}")
    if not isinstance(n_layer, int) or isinstance(n_layer, bool) or n_layer < 1:
        raise ValueError(f"n_layer must be an int >= 1, got {n_layer!r}")
    cfg = MODEL_CONFIGS[shape].with_(n_layer=n_layer, vocab_size=vocab_size, max_seq_len=max_seq_len,
                                     name=f"{shape} x{n_layer} layers")
    torch.manual_seed(0)
    return random_weights.random_model(cfg, torch.float32).to(as_device(device))


# --- grouped-query attention: one real-size layer, fewer and fewer key/value heads --------------------------

@dataclass
class GQAPoint:
    n_kv_head: int
    cache_bytes: int      # KV cache of the batch at ``context`` tokens (model's dtype)
    weight_bytes: int
    step_s: float         # median decode step at that context
    kind: str             # multi-head / grouped-query / multi-query
    timing: Timing | None = None
    speedup: Ratio | None = None   # the first variant's step / this one's, paired round by round


def gqa_sweep(config, kv_heads=(None, 8, 1), n_layer: int = 1, context: int = 2048, batch_size: int = 8,
              vocab_size: int | None = 2048, repeats: int = 3, dtype=torch.float32, device=None) -> list[GQAPoint]:
    """Random-weight models of ``config``'s layer shape with each number of key/value heads (None = as
    many as query heads): KV cache bytes and decode step time at ``context`` tokens per sequence, the
    variants taking turns (``timing.compare``); ``speedup`` is the first variant's time / each one's.

    ``n_layer`` layers and a ``vocab_size``-row embedding keep it fast (per layer, every number is the real
    shape's). The cache is filled with stand-in keys/values instead of a prefill: a step reads them the same.
    ``device``: where the models run (default the CPU).
    """
    device = as_device(device)
    weights, made = {}, []
    torch.manual_seed(0)
    for kv in kv_heads:
        kv = config.n_head if kv is None else kv
        cfg = config.with_(n_kv_head=kv, n_layer=n_layer, max_seq_len=context + 1,
                           vocab_size=vocab_size or config.vocab_size, name=f"{config.name}-kv{kv}")
        model = random_weights.random_model(cfg, dtype, weights=weights).to(device)
        cache = decode_step.filled_cache(model, batch_size, context, capacity=context + 1)
        made.append((kv, cfg, model, cache))
    step_in = torch.zeros(batch_size, 1, dtype=torch.long, device=device)

    def stepper(model, cache):
        def step():
            with torch.inference_mode():
                model(step_in, cache=cache)
            cache.truncate(context)
        return step

    timings = compare({i: stepper(m, c) for i, (_, _, m, c) in enumerate(made)}, repeats=repeats, warmup=1,
                      device=device)
    points = []
    for i, (kv, cfg, model, _) in enumerate(made):
        kind = "multi-head" if kv == cfg.n_head else "multi-query" if kv == 1 else "grouped-query"
        points.append(GQAPoint(kv, kv_cache_bytes(cfg, context, batch_size, dtype), model.weight_bytes(),
                               timings[i].median_s, kind, timings[i], paired_ratio(timings[0], timings[i])))
    return points


# --- speculative decoding: c, and the speedup over plain greedy decoding ---------------------------------

@dataclass
class StepCost:
    """Leviathan et al.'s c: one draft decode step's time / one target decode step's time (one token each)."""
    c: Ratio              # draft step / target step, paired round by round
    target: Timing
    draft: Timing


def step_cost(target, draft, context: int = 32, repeats: int = 20, warmup: int = 3) -> StepCost:
    """Time one decode step of each model in alternation, and their ratio c (Leviathan et al. 2023)."""
    t = compare({"target": decode_stepper(target, context), "draft": decode_stepper(draft, context)},
                repeats=repeats, warmup=warmup, device=target.device)
    return StepCost(paired_ratio(t["draft"], t["target"]), t["target"], t["draft"])


@dataclass
class SpecPoint:
    """One speculative setting against plain greedy decoding of the same prompts."""
    options: dict         # keyword arguments of speculative_generate (gamma, min_confidence)
    runs: list            # one SpeculativeResult per prompt (the last timed round)
    timing: Timing        # all prompts, per round
    speedup: Ratio        # plain time / speculative time, paired round by round

    @property
    def alpha(self) -> float:
        return sum(r.accepted for r in self.runs) / max(1, sum(r.judged for r in self.runs))

    @property
    def rounds(self) -> int:
        return sum(r.rounds for r in self.runs)

    @property
    def draft_steps(self) -> int:
        return sum(r.draft_steps for r in self.runs)

    @property
    def tokens(self) -> int:
        return sum(len(r.tokens) for r in self.runs)

    @property
    def verify_pass_s(self) -> float:
        """Mean time of the target's verify pass (gamma + 1 tokens at once) inside the loop."""
        return sum(r.target_s for r in self.runs) / max(1, self.rounds)

    @property
    def draft_step_s(self) -> float:
        return sum(r.draft_s for r in self.runs) / max(1, self.draft_steps)


def speculative_sweep(target, draft, tok, prompts: list, settings: dict, max_new_tokens: int = 48,
                      repeats: int = 3, warmup: int = 1, show_progress: bool = True):
    """(plain Timing, ``{name: SpecPoint}``): plain greedy ``il.generate`` of every prompt and each speculative
    setting (``{name: dict(gamma=..., min_confidence=...)}``) take turns round by round (``timing.compare``),
    so the speedups are paired ratios that a burst of other work on the machine cannot favour."""
    from ..core.generate import generate
    from ..optimize.speculative import speculative_generate
    if not prompts or not settings:
        raise ValueError("prompts and settings must be non-empty")
    if "plain" in settings:
        raise ValueError("'plain' names the baseline; give the speculative settings other names")
    last = {}
    bar = progress(total=(len(settings) + 1) * (repeats + warmup), desc="runs (plain and speculative, in turn)",
                   unit="run", enabled=show_progress)

    def counted(fn):
        def run():
            fn()
            bar.update(1)
        return run

    def plain():
        for p in prompts:
            generate(target, tok, p, max_new_tokens=max_new_tokens)

    def spec(name, options):
        last[name] = [speculative_generate(target, draft, tok, p, max_new_tokens, **options) for p in prompts]

    fns = {"plain": plain, **{name: (lambda n=name, o=opts: spec(n, o)) for name, opts in settings.items()}}
    t = compare({name: counted(fn) for name, fn in fns.items()}, repeats=repeats, warmup=warmup, device=target.device)
    bar.close()
    return t["plain"], {name: SpecPoint(dict(opts), last[name], t[name], paired_ratio(t["plain"], t[name]))
                        for name, opts in settings.items()}
