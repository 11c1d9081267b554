"""One forward pass opened up, stage by stage (notebook 02).

``forward_by_stage`` runs the model's own modules in the order ``GPT.forward`` runs them
(token embedding, positions, every block, final norm, LM head) and keeps the activation after
each stage, so the notebook can show shapes and values flowing through the layers; its logits
equal ``model(idx)``. ``time_step`` measures one generation step (prompt in, next token out)
broken down by stage: tokenize, embed, each layer, head, sampling, all timed in alternation (one
round times every stage once) so a machine that slows down half-way slows every stage alike;
``step_findings`` turns the result into the sentences the notebook prints; ``ops_by_stage`` counts
the torch operations each stage runs (the deep dive on where a step's fixed costs come from).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.model import GPT, causal_mask
from ..core.sampling import sample_next
from ..measure.timing import Timing, busy_note, compare, measure

# --- the forward pass, one stage at a time ---------------------------------------------------------

@dataclass
class Embedded:
    """What the embedding stage hands to the first layer (notebook 02)."""
    x: torch.Tensor                 # [B, T, d_model] the residual stream's first value
    rope: tuple | None              # (cos, sin) rotary tables for these positions, or None (gpt2: learned positions)
    mask: torch.Tensor              # [1, 1, T, T] causal mask


def as_ids(ids) -> torch.Tensor:
    """Token ids (list or tensor, [T] or [B, T]) as a long tensor [B, T], for notebook 02's stage functions."""
    idx = torch.as_tensor(ids)
    if idx.dim() == 1:
        idx = idx[None]
    if idx.dim() != 2 or idx.shape[1] == 0 or idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"ids must be a non-empty list of token ids or an integer tensor [batch, time], "
                         f"got {idx.dtype} {tuple(idx.shape)}")
    return idx.long()


def embed(model: GPT, idx: torch.Tensor) -> Embedded:
    """Stage 'embed': look up each id's row of ``model.tok_emb.weight`` and attach positions, as ``GPT.forward`` does."""
    idx = idx.to(model.device)
    B, T = idx.shape
    if T > model.config.max_seq_len:
        raise ValueError(f"{T} tokens exceed the model's context max_seq_len={model.config.max_seq_len}")
    positions = torch.arange(T, device=idx.device).expand(B, T)
    x, rope = model.embed(idx, positions)
    return Embedded(x, rope, causal_mask(T, None, idx.device))


def run_layer(model: GPT, layer: int, emb: Embedded, x: torch.Tensor) -> torch.Tensor:
    """Stage 'layer i': one transformer block (attention + MLP, each added to the residual stream)."""
    return model.blocks[layer](x, emb.rope, emb.mask)


def head(model: GPT, x: torch.Tensor) -> torch.Tensor:
    """Stage 'head': final norm, then the LM head: one logit per vocabulary entry at every position."""
    return model.head(x)


@dataclass
class StageOutputs:
    """Activations after each stage of one forward pass, in order, and the logits (notebook 02)."""
    names: list[str]
    tensors: list[torch.Tensor]     # each [B, T, d_model]
    logits: torch.Tensor            # [B, T, vocab_size]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[self.names.index(name)]


@torch.inference_mode()
def forward_by_stage(model: GPT, ids) -> StageOutputs:
    """``model(ids)`` run stage by stage, keeping the residual stream after every stage.

    Stages: ``embed``, ``layer 0`` … ``layer n-1``, ``final norm``; then the logits.
    """
    idx = as_ids(ids)
    emb = embed(model, idx)
    names, tensors = ["embed"], [emb.x]
    x = emb.x
    for i in range(len(model.blocks)):
        x = run_layer(model, i, emb, x)
        names.append(f"layer {i}")
        tensors.append(x)
    normed = model.norm(x)
    names.append("final norm")
    tensors.append(normed)
    return StageOutputs(names, tensors, model.lm_head(normed))


def stage_summary(outputs: StageOutputs) -> list[dict]:
    """One row per stage: shape, mean, std, RMS per token (averaged) and largest |value| (notebook 02's table)."""
    rows = []
    for name, t in zip(outputs.names, outputs.tensors):
        t = t.float()
        rows.append({"stage": name, "shape": tuple(t.shape), "mean": t.mean().item(), "std": t.std().item(),
                     "rms": t.pow(2).mean(-1).sqrt().mean().item(), "max_abs": t.abs().max().item()})
    return rows


def layer_updates(outputs: StageOutputs, batch: int = 0) -> list[dict]:
    """What each layer added to the residual stream (notebook 02): per layer, the RMS of its update
    (the stream after minus before, per token, averaged), the stream's RMS before and after, and how
    many tokens' vectors came out shorter than they went in (an update can point against the stream)."""
    rows = []
    for i, name in enumerate(outputs.names):
        if not name.startswith("layer"):
            continue
        before, after = outputs.tensors[i - 1][batch].float(), outputs.tensors[i][batch].float()
        rms = lambda t: t.pow(2).mean(-1).sqrt()  # noqa: E731 -- per token
        rows.append({"stage": name, "update_rms": rms(after - before).mean().item(),
                     "rms_before": rms(before).mean().item(), "rms_after": rms(after).mean().item(),
                     "tokens_shrunk": int((after.norm(dim=-1) < before.norm(dim=-1)).sum())})
    return rows


def token_rms(outputs: StageOutputs, batch: int = 0) -> torch.Tensor:
    """[stages, T]: RMS of each token's vector after each stage (notebook 02's residual-stream heatmap), on the CPU."""
    return torch.stack([t[batch].float().pow(2).mean(-1).sqrt() for t in outputs.tensors]).cpu()


@torch.inference_mode()
def logit_lens(model: GPT, outputs: StageOutputs, position: int = -1, batch: int = 0) -> list[tuple[str, int, float]]:
    """(stage, top token id, its probability) if we stopped after each stage and applied the head there.

    The 'logit lens': final norm + LM head applied to intermediate residual streams. The last
    row (after every layer) is the model's real prediction.
    """
    rows = []
    for name, t in zip(outputs.names[:-1], outputs.tensors[:-1]):  # skip 'final norm': it is the last layer's lens
        probs = torch.softmax(head(model, t[batch, position]).float(), dim=-1)
        p, i = probs.max(-1)
        rows.append((name, int(i), float(p)))
    return rows


# --- timing ----------------------------------------------------------------------------------------

def time_call(fn: Callable[[], object], warmup: int = 3, repeats: int = 20, device="cpu") -> list[float]:
    """Wall times in seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (notebook 02);
    see ``timing.measure``, which also synchronises a GPU so the time covers the work, not its launch."""
    return measure(fn, warmup, repeats, device).samples_s


def median_time(fn: Callable[[], object], warmup: int = 3, repeats: int = 20, device="cpu") -> float:
    """Median wall time in seconds of ``fn``; the median ignores the odd slow outlier."""
    return measure(fn, warmup, repeats, device).median_s


@dataclass
class StepTiming:
    """Median time of each stage of one generation step, and of the whole step timed in one go (notebook 02).

    Every entry was timed in the same alternating rounds (``timing.compare``), so ``timings`` holds
    each one's repeats and spread; ``greedy pick`` (an argmax) is timed beside them for comparison.
    """
    prompt_tokens: int
    stages: dict[str, float]                      # stage name -> median seconds, in execution order
    whole_step_s: float                           # median of tokenize + model(idx) + sample_next, timed together
    samples: dict[str, list[float]] = field(default_factory=dict, repr=False)
    timings: dict[str, Timing] = field(default_factory=dict, repr=False)   # stages + "whole step" + "greedy pick"

    @property
    def sum_of_stages_s(self) -> float:
        return sum(self.stages.values())

    @property
    def layers_s(self) -> float:
        return sum(v for k, v in self.stages.items() if k.startswith("layer"))

    @property
    def greedy_pick_s(self) -> float:
        """Median time of a greedy pick (argmax of the same logits), timed beside the stages."""
        return self.timings["greedy pick"].median_s

    def grouped(self) -> dict[str, float]:
        """The five stages of the post's story: tokenize, embed, layers (all together), head, sampling."""
        return {"tokenize": self.stages["tokenize"], "embed": self.stages["embed"], "layers": self.layers_s,
                "head": self.stages["head"], "sampling": self.stages["sampling"]}

    def busy_note(self) -> str:
        """``timing.busy_note`` over the stages and the whole step: '' when the repeats agree."""
        return busy_note(*(self.timings[name] for name in [*self.stages, "whole step"]))


def _step_jobs(model: GPT, tok, prompt: str, temperature: float, top_k, top_p, seed: int):
    """The stages of one generation step as callables, each on the real input the stage before it made,
    plus the whole step in one piece and a greedy pick (shared by ``time_step`` and ``ops_by_stage``)."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty str")
    device = model.device
    gen = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
    idx = as_ids(tok.encode(prompt)).to(device)
    emb = embed(model, idx)
    xs = [emb.x]
    for i in range(len(model.blocks)):
        xs.append(run_layer(model, i, emb, xs[-1]))
    last_logits = head(model, xs[-1])[:, -1]

    jobs: dict[str, Callable[[], object]] = {"tokenize": lambda: tok.encode(prompt),
                                             "embed": lambda: embed(model, idx)}
    for i in range(len(model.blocks)):
        jobs[f"layer {i}"] = (lambda i=i: run_layer(model, i, emb, xs[i]))
    jobs["head"] = lambda: head(model, xs[-1])
    jobs["sampling"] = lambda: sample_next(last_logits, temperature, top_k, top_p, gen).item()
    stage_names = list(jobs)

    def whole():
        ids = torch.tensor([tok.encode(prompt)], device=device)
        return sample_next(model(ids)[:, -1], temperature, top_k, top_p, gen).item()

    jobs["whole step"] = whole
    jobs["greedy pick"] = lambda: sample_next(last_logits, 0.0).item()
    return jobs, stage_names, idx


@torch.inference_mode()
def time_step(model: GPT, tok, prompt: str, temperature: float = 0.0, top_k=None, top_p=None,
              warmup: int = 3, repeats: int = 30, seed: int = 0) -> StepTiming:
    """Measure one generation step (text prompt -> next token id) stage by stage.

    Each stage runs on the real input the previous stage produced. All stages, the whole step in one
    piece (``tok.encode`` + ``model(idx)`` + ``sample_next``) and a greedy pick for comparison are
    timed in alternation, ``repeats`` rounds after ``warmup`` rounds (``timing.compare``); each
    stage's time is the median of its repeats. The head runs on every position, as ``GPT.forward`` does.
    """
    was_training = model.training
    model.eval()
    try:
        jobs, stage_names, idx = _step_jobs(model, tok, prompt, temperature, top_k, top_p, seed)
        timings = compare(jobs, repeats=repeats, warmup=warmup, device=model.device)
    finally:
        model.train(was_training)
    stages = {name: timings[name].median_s for name in stage_names}
    samples = {name: t.samples_s for name, t in timings.items()}
    return StepTiming(idx.shape[1], stages, timings["whole step"].median_s, samples, timings)


@torch.inference_mode()
def ops_by_stage(model: GPT, tok, prompt: str, temperature: float = 0.0, top_k=None, top_p=None,
                 seed: int = 0) -> dict[str, int]:
    """How many torch operations each stage of one generation step runs (notebook 02's deep dive on a
    step's time): every operation pays a fixed cost (Python, dispatch, a kernel launch) whatever its size.
    Keys as in ``time_step``'s stages, plus ``whole step``."""
    from .part1 import count_torch_ops
    was_training = model.training
    model.eval()
    try:
        jobs, stage_names, _ = _step_jobs(model, tok, prompt, temperature, top_k, top_p, seed)
        return {name: count_torch_ops(jobs[name]) for name in [*stage_names, "whole step"]}
    finally:
        model.train(was_training)


def step_findings(timing: StepTiming) -> list[str]:
    """What one measured step shows, as sentences a notebook prints (notebook 02, section 7).

    Each sentence states what happened in *this* measurement, so it stays true on any machine:
    the figures come from ``timing`` and each claim is checked against them before it is made.
    """
    total, g = timing.sum_of_stages_s, timing.grouped()
    layers = {k: v for k, v in timing.stages.items() if k.startswith("layer")}
    n = len(layers)
    us = lambda s: f"{s * 1e6:,.0f} µs"  # noqa: E731
    lines = [f"On this machine one step (prompt text in, token id out) took {us(timing.whole_step_s)} timed in "
             f"one piece; the stages timed alone add up to {us(total)} "
             f"({timing.whole_step_s / total:.2f} x the sum)."]
    note = timing.busy_note()
    if note:   # repeats disagree: say so instead of drawing conclusions the numbers cannot carry
        return lines + [note, "So no conclusion is drawn from this run: the shares above may be far from what "
                              "this machine does when it is quiet."]
    share = g["layers"] / total
    if share > 0.5:
        lines.append(f"The {n} layers took {share:.0%} of the stages' time, most of it: the same block of work "
                     "runs once per layer.")
    else:
        lines.append(f"The {n} layers took only {share:.0%} of the stages' time here, less than half: on this "
                     "machine the fixed costs outside them (Python calls, launching each operation, the "
                     "sampler's sort) outweighed the layers' arithmetic.")
    spread = max(layers.values()) / min(layers.values())
    if spread < 1.3:
        lines.append(f"Each layer cost about the same ({us(min(layers.values()))} to {us(max(layers.values()))}): "
                     "every block does the same work on the same shapes.")
    else:
        lines.append(f"The layers' times differed by {spread:.1f} x although every block does the same work "
                     "on the same shapes: a sign that something else used the CPU during the measurement.")
    front = (g["tokenize"] + g["embed"]) / total
    lines.append(f"Tokenization and the embedding lookup took {front:.1%} together"
                 + (": nearly free; the post's step 1 is not where the time goes." if front < 0.05 else
                    ": more than a string split and a table lookup need; fixed costs (a call into torch, "
                    "on a GPU the copy of the ids to the device) weigh more here."))
    ratio = g["sampling"] / timing.greedy_pick_s
    versus = "more" if g["sampling"] > g["head"] else "less"
    lines.append(f"Sampling (temperature, top-k, top-p, a random draw) took {us(g['sampling'])}, "
                 f"{g['sampling'] / total:.1%} of the stages' time: {ratio:.0f} x a greedy argmax ({us(timing.greedy_pick_s)}) "
                 f"and {versus} than the head's matrix multiplication ({us(g['head'])}).")
    worst = max([*timing.stages, "whole step"], key=lambda k: timing.timings[k].spread)
    lines.append(f"Spread: the middle half of each stage's {timing.timings[worst].repeats} repeats spanned at most "
                 f"{timing.timings[worst].spread:.0%} of its median (widest: {worst}), so these shares are typical "
                 "of this machine.")
    return lines


def overhead_findings(timing: StepTiming, ops: dict[str, int], per_op_s: float) -> list[str]:
    """Sentences on where one step's fixed costs come from (notebook 02's deep dive 02c): ``ops`` from
    ``ops_by_stage``, ``per_op_s`` the measured time of one tiny torch operation
    (``measure.machine.seconds_per_small_op``). Each claim is checked against the numbers before it is made."""
    if not isinstance(per_op_s, (int, float)) or not per_op_s > 0:
        raise ValueError(f"per_op_s must be a positive number of seconds, got {per_op_s!r}")
    missing = [k for k in [*timing.stages, "whole step"] if k not in ops]
    if missing:
        raise ValueError(f"ops lacks the stages {missing}: pass lessons.part2.ops_by_stage(...) for the same step")
    us = lambda s: f"{s * 1e6:,.1f} µs"  # noqa: E731
    fixed = ops["whole step"] * per_op_s
    lines = [f"One tiny torch operation (an addition on 64 numbers) took {us(per_op_s)} here: the fixed cost "
             "every operation pays, whatever its size.",
             f"One step launched {ops['whole step']} torch operations; at that price their fixed costs alone "
             f"come to {us(fixed)}, against {us(timing.whole_step_s)} measured for the whole step."]
    note = timing.busy_note()
    if note:
        return lines + [note, "So no conclusion is drawn from this run."]
    share = fixed / timing.whole_step_s
    layer = next(k for k in timing.stages if k.startswith("layer"))
    layer_share = ops[layer] * per_op_s / timing.stages[layer]
    if share >= 0.5:
        lines.append(f"That is {min(share, 1):.0%} of the step"
                     + (" or more" if share >= 1 else "") + ": most of this step is fixed cost, not arithmetic. "
                     "A model this small is overhead-bound (notebook 04 measures that regime).")
    else:
        lines.append(f"That is {share:.0%} of the step: the operations' own fixed cost explains only part of it "
                     "here; the rest is arithmetic and the Python around the operations (module calls, shape "
                     "handling), which one addition does not price.")
    lines.append(f"One layer runs {ops[layer]} operations, {us(ops[layer] * per_op_s)} of fixed cost against "
                 f"{us(timing.stages[layer])} measured for {layer}"
                 + (" (the estimate is rough: some operations are views that launch no kernel and cost less than "
                    "an addition)." if layer_share > 1 else "."))
    return lines
