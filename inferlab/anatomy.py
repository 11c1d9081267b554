"""One forward pass opened up, stage by stage (notebook 02).

``forward_by_stage`` runs the model's own modules in the order ``GPT.forward`` runs them
(token embedding, positions, every block, final norm, LM head) and keeps the activation after
each stage, so the notebook can show shapes and values flowing through the layers; its logits
equal ``model(idx)``. ``time_step`` measures one generation step (prompt in, next token out)
broken down by stage: tokenize, embed, each layer, head, sampling, each the median of repeats
after warm-up.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch

from .model import GPT, causal_mask
from .sampling import sample_next
from .timing import measure


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


def token_rms(outputs: StageOutputs, batch: int = 0) -> torch.Tensor:
    """[stages, T]: RMS of each token's vector after each stage (notebook 02's residual-stream heatmap)."""
    return torch.stack([t[batch].float().pow(2).mean(-1).sqrt() for t in outputs.tensors])


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
    """Median time of each stage of one generation step, and of the whole step timed in one go (notebook 02)."""
    prompt_tokens: int
    stages: dict[str, float]                      # stage name -> median seconds, in execution order
    whole_step_s: float                           # median of tokenize + model(idx) + sample_next, timed together
    samples: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def sum_of_stages_s(self) -> float:
        return sum(self.stages.values())

    @property
    def layers_s(self) -> float:
        return sum(v for k, v in self.stages.items() if k.startswith("layer"))

    def grouped(self) -> dict[str, float]:
        """The five stages of the post's story: tokenize, embed, layers (all together), head, sampling."""
        return {"tokenize": self.stages["tokenize"], "embed": self.stages["embed"], "layers": self.layers_s,
                "head": self.stages["head"], "sampling": self.stages["sampling"]}


@torch.inference_mode()
def time_step(model: GPT, tok, prompt: str, temperature: float = 0.0, top_k=None, top_p=None,
              warmup: int = 3, repeats: int = 30, seed: int = 0) -> StepTiming:
    """Measure one generation step (text prompt -> next token id) stage by stage.

    Each stage is timed on its own, on the real input the previous stage produced, as the median
    of ``repeats`` runs after ``warmup``. The whole step is also timed in one piece
    (``tok.encode`` + ``model(idx)`` + ``sample_next``) so the sum of the parts can be compared with it.
    The head runs on every position, as ``GPT.forward`` does.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty str")
    was_training = model.training
    model.eval()
    device = model.device
    gen = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
    try:
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

        def whole():
            ids = torch.tensor([tok.encode(prompt)], device=device)
            return sample_next(model(ids)[:, -1], temperature, top_k, top_p, gen).item()

        samples = {name: time_call(fn, warmup, repeats, device) for name, fn in jobs.items()}
        whole_samples = time_call(whole, warmup, repeats, device)
    finally:
        model.train(was_training)
    stages = {name: statistics.median(s) for name, s in samples.items()}
    samples["whole step"] = whole_samples
    return StepTiming(idx.shape[1], stages, statistics.median(whole_samples), samples)
