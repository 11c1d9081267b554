"""Training vs inference, measured on the same batch (notebook 01).

A training step is forward + backward + optimizer update and must keep every activation the
backward pass needs, plus gradients and optimizer state. An inference pass is the forward alone.
These functions time both (in alternation, so a busy machine slows both alike), count the bytes of
each kind of memory *the same way for both*, and take a checksum of the weights before and after so
a learner sees which one changes them. ``batch_sweep`` and ``decode_step_ops`` measure why batching
raises throughput on a small model (a fixed cost per step, shared by the rows of the batch).
"""
from __future__ import annotations

import copy
import hashlib
import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..measure import timing


def weight_checksum(model: torch.nn.Module) -> str:
    """A short fingerprint of every weight's exact bits: changes if any single weight changes."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return total


class LiveTensors(TorchDispatchMode):
    """Watches every torch operation run inside ``with LiveTensors() as watch:``.

    ``watch.ops`` counts the operations; ``watch.peak_bytes`` is the most bytes of tensors created
    inside the block that were alive at the same moment (tensors that existed before, such as the
    weights, are not counted, nor their views, such as a weight's transpose; a view shares its tensor's
    memory and is counted once). A tensor stays alive while anything holds it: the next layer, a
    variable, or autograd saving it for the backward pass.
    """

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live = {}  # weak reference to a storage -> its bytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for ref in [r for r in self._live if r.expired()]:  # freed since the last operation
            self.live_bytes -= self._live.pop(ref)
        inputs = {StorageWeakRef(t.untyped_storage()) for t in tree_leaves((args, kwargs or {}))
                  if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                ref = StorageWeakRef(t.untyped_storage())
                if ref not in self._live and ref not in inputs:  # a view or in-place result is no new memory
                    self._live[ref] = t.untyped_storage().nbytes()
                    self.live_bytes += self._live[ref]
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out


def count_torch_ops(fn) -> int:
    """How many torch operations ``fn()`` runs (each one pays a fixed cost of Python and dispatch)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    with LiveTensors() as watch:
        fn()
    return watch.ops


@dataclass
class MemoryBreakdown:
    weights: int = 0
    gradients: int = 0
    optimizer_state: int = 0
    activations: int = 0      # peak bytes of tensors the forward pass created, alive at the same moment

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer_state + self.activations

    def as_dict(self) -> dict:
        return {"weights": self.weights, "gradients": self.gradients, "optimizer state": self.optimizer_state,
                "activations": self.activations}


@dataclass
class StepCost:
    kind: str                 # "training step" or "inference pass"
    seconds: float            # median wall time over the repeats
    parts_s: dict             # forward / backward / optimizer seconds (inference: forward only)
    memory: MemoryBreakdown
    checksum_before: str
    checksum_after: str
    saved_bytes: int = 0      # of the activations: bytes autograd saved for the backward pass
    stats: timing.Timing | None = None   # the repeats' times: median, spread

    @property
    def weights_changed(self) -> bool:
        return self.checksum_before != self.checksum_after


def _check_batch(model, x, y=None):
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError("x must be a [batch, time] tensor of token ids")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != x.shape):
        raise ValueError(f"y must be a tensor with the shape of x {tuple(x.shape)}")
    if x.shape[1] > model.config.max_seq_len:
        raise ValueError(f"x has {x.shape[1]} tokens per row; the model's context is {model.config.max_seq_len}")


def _check_repeats(repeats, warmup):
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")


def _loss(model, x, y):
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _training_step(model, x, y, optimizer) -> dict:
    """One step, timed by part: forward + loss, backward, optimizer update."""
    model.train()
    t0 = time.perf_counter()
    loss = _loss(model, x, y)
    t1 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    t2 = time.perf_counter()
    optimizer.step()
    t3 = time.perf_counter()
    model.eval()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


def _inference_pass(model, x) -> None:
    model.eval()
    with torch.inference_mode():
        model(x)


def saved_bytes(model, fn) -> int:
    """Bytes autograd keeps for a backward pass while ``fn()`` runs (``saved_tensors_hooks``), each storage
    once, not counting ``model``'s weights, which it keeps a reference to but which exist anyway. Inference
    keeps none (notebooks 01 and 05)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: (saved.append(t), t)[1], lambda t: t):
        fn()
    held = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    return _tensor_bytes(t for t in saved if t.untyped_storage().data_ptr() not in held)


def _forward_memory(model, x, y=None) -> tuple[int, int]:
    """(activations, saved): one untimed forward pass watched by ``LiveTensors``, with autograd saving
    for a backward pass when ``y`` is given (training) and in inference mode when not."""
    def training_forward():
        model.train()
        loss = _loss(model, x, y)   # dropped on return: the graph is freed without a backward pass
        model.eval()
        return loss

    with LiveTensors() as watch:
        saved = saved_bytes(model, (lambda: _inference_pass(model, x)) if y is None else training_forward)
    return watch.peak_bytes, saved


def forward_memory(model, x, y=None) -> tuple[int, int]:
    """(activations, saved) of one forward pass of ``model`` on ``x`` (notebook 01a): the most bytes of
    the pass's tensors alive at once (``LiveTensors``), and of those the bytes autograd saved for the
    backward pass. With targets ``y`` the pass runs as in training (loss included, graph kept until
    the end); without, in inference mode. No backward pass runs and no weight changes."""
    _check_batch(model, x, y)
    return _forward_memory(model, x, y)


def optimizer_state_bytes(optimizer) -> int:
    """Bytes the optimizer keeps per weight tensor (AdamW: m and v; SGD with momentum: one buffer;
    plain SGD: none), not counting its scalar step counters (notebook 01a)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return _tensor_bytes(v for state in optimizer.state.values() for v in state.values()
                         if isinstance(v, torch.Tensor) and v.dim() > 0)


def _training_memory(model, optimizer, x, y) -> tuple[MemoryBreakdown, int]:
    activations, saved = _forward_memory(model, x, y)
    params = list(model.parameters())
    memory = MemoryBreakdown(
        weights=_tensor_bytes(params),
        gradients=_tensor_bytes(p.grad for p in params),
        optimizer_state=optimizer_state_bytes(optimizer),
        activations=activations,
    )
    return memory, saved


def _inference_memory(model, x) -> MemoryBreakdown:
    activations, _ = _forward_memory(model, x)
    return MemoryBreakdown(weights=_tensor_bytes(model.parameters()), activations=activations)


def _median_round(t: timing.Timing) -> int:
    """The index of the repeat whose time is the median (the upper middle one for an even count)."""
    return sorted(range(t.repeats), key=t.samples_s.__getitem__)[t.repeats // 2]


def measure_training_step(model, x, y, optimizer=None, repeats: int = 3, warmup: int = 0) -> StepCost:
    """Time ``repeats`` full training steps (median) and count the memory one step needs.

    Activations are counted as for an inference pass (``LiveTensors``: the most bytes the forward pass's
    tensors hold at once); ``saved_bytes`` says how many of them autograd saved for the backward pass.
    The weights *do* change: pass a copy if you want to keep them.
    """
    _check_batch(model, x, y)
    _check_repeats(repeats, warmup)
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = weight_checksum(model)
    parts = []
    t = timing.measure(lambda: parts.append(_training_step(model, x, y, optimizer)), warmup, repeats)
    memory, saved = _training_memory(model, optimizer, x, y)
    return StepCost("training step", t.median_s, parts[warmup + _median_round(t)], memory, before,
                    weight_checksum(model), saved, t)


def measure_inference_pass(model, x, repeats: int = 3, warmup: int = 0) -> StepCost:
    """Time ``repeats`` forward passes in inference mode (median); no weight moves.

    Activations are counted as for a training step (``LiveTensors``): here each intermediate result
    is freed as soon as the next operation has used it, so the peak is a few layers' worth.
    """
    _check_batch(model, x)
    _check_repeats(repeats, warmup)
    before = weight_checksum(model)
    t = timing.measure(lambda: _inference_pass(model, x), warmup, repeats)
    memory = _inference_memory(model, x)
    return StepCost("inference pass", t.median_s, {"forward": t.median_s}, memory, before, weight_checksum(model),
                    0, t)


@dataclass
class StepComparison:
    training: StepCost
    inference: StepCost
    ratio: timing.Ratio   # training step time / inference pass time, paired round by round
    busy: str             # timing.busy_note of both: '' when the repeats agreed


def compare_training_and_inference(train_model, model, x, y, repeats: int = 5, warmup: int = 1) -> StepComparison:
    """One training step of ``train_model`` (its weights change: pass a copy) against one inference pass
    of ``model`` on the same batch, timed in alternation (step, pass, step, pass, ...), memory counted
    the same way for both (notebook 01). The first ``warmup`` rounds (AdamW creating its state, first
    allocations) are not timed."""
    _check_batch(train_model, x, y)
    _check_batch(model, x)
    _check_repeats(repeats, warmup)
    optimizer = torch.optim.AdamW(train_model.parameters(), lr=1e-3)
    train_before, infer_before = weight_checksum(train_model), weight_checksum(model)
    parts = []
    timings = timing.compare({"training step": lambda: parts.append(_training_step(train_model, x, y, optimizer)),
                              "inference pass": lambda: _inference_pass(model, x)}, repeats, warmup)
    t_train, t_infer = timings["training step"], timings["inference pass"]
    train_memory, saved = _training_memory(train_model, optimizer, x, y)
    training = StepCost("training step", t_train.median_s, parts[warmup + _median_round(t_train)], train_memory,
                        train_before, weight_checksum(train_model), saved, t_train)
    inference = StepCost("inference pass", t_infer.median_s, {"forward": t_infer.median_s},
                         _inference_memory(model, x), infer_before, weight_checksum(model), 0, t_infer)
    return StepComparison(training, inference, timing.paired_ratio(t_train, t_infer), timing.busy_note(t_train, t_infer))


# --- batching: why more rows per step raise throughput ---------------------------------------------------

@dataclass
class BatchSweep:
    batch_sizes: list
    tokens_per_s: list    # all sequences together: batch x new tokens / median wall time of the call
    tpot_s: list          # median time per output token each sequence saw
    step_s: list          # median wall time of one whole call, per batch size
    new_tokens: int
    timings: dict = field(default_factory=dict)   # batch size -> timing.Timing of the whole call

    @property
    def busy(self) -> str:
        return timing.busy_note(*self.timings.values())

    @property
    def impossible(self) -> list:
        return timing.impossible_results(batch_throughput=(self.batch_sizes, self.tokens_per_s))


def batch_sweep(model, tok, prompts, batch_sizes, new_tokens: int = 32, repeats: int = 3,
                warmup: int = 1) -> BatchSweep:
    """Greedy ``il.generate_batch`` of the first ``b`` prompts for each ``b`` in ``batch_sizes``, the
    sizes timed in alternation (1, 2, 4, ..., 1, 2, 4, ...) ``repeats`` times after ``warmup`` untimed
    rounds; each figure is the median over the repeats (notebook 01)."""
    from ..core.generate import generate_batch

    batch_sizes = list(batch_sizes)
    if not batch_sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be a non-empty list of ints >= 1, got {batch_sizes!r}")
    if not isinstance(prompts, (list, tuple)) or len(prompts) < max(batch_sizes):
        raise ValueError(f"prompts must be a list of at least {max(batch_sizes)} prompts (the largest batch)")
    if not isinstance(new_tokens, int) or isinstance(new_tokens, bool) or new_tokens < 2:
        raise ValueError(f"new_tokens must be an int >= 2, got {new_tokens!r}")
    _check_repeats(repeats, warmup)
    results = {b: [] for b in batch_sizes}

    def run(b):
        return lambda: results[b].append(generate_batch(model, tok, list(prompts[:b]), max_new_tokens=new_tokens)[0])

    timings = timing.compare({b: run(b) for b in batch_sizes}, repeats=repeats, warmup=warmup, device=model.device)
    total = [statistics.median(r.total_s for r in results[b][warmup:]) for b in batch_sizes]
    tpot = [statistics.median(r.tpot_s for r in results[b][warmup:]) for b in batch_sizes]
    return BatchSweep(batch_sizes, [b * new_tokens / t for b, t in zip(batch_sizes, total)], tpot, total,
                      new_tokens, timings)


def decode_step_ops(model, tok, prompts) -> int:
    """Torch operations in one decode step of ``il.generate_batch`` over ``prompts`` (the step's forward
    pass and the pick of the next tokens): the calls of 3 new tokens minus those of 2."""
    from ..core.generate import generate_batch

    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompts")
    prompts = list(prompts)
    return (count_torch_ops(lambda: generate_batch(model, tok, prompts, max_new_tokens=3))
            - count_torch_ops(lambda: generate_batch(model, tok, prompts, max_new_tokens=2)))


def batching_explanation(batch: int, step_s: float, batch_step_s: float, gain: float, read_s: float,
                         fixed_s: float, ops: int, batch_ops: int, busy: str = "") -> str:
    """The sentences notebook 01 prints after its batch sweep, chosen by what was measured: a decode step
    took ``step_s`` at batch 1 and ``batch_step_s`` at ``batch``, whose whole calls gave ``gain`` times
    the throughput; reading the weights once at the measured bandwidth takes ``read_s``; ``fixed_s`` is
    ``ops`` operations x the fixed cost of one tiny operation (``batch_ops`` operations at ``batch``).

    The two step times split a step into a part that grows with the rows and a part that does not
    (step = shared + rows x per_row); the weights and the operations' fixed costs explain the shared part.
    ``busy`` is the sweep's ``busy_note``: when it is not empty, no conclusion is drawn from the times.
    """
    for name, value in (("step_s", step_s), ("batch_step_s", batch_step_s), ("gain", gain), ("read_s", read_s),
                        ("fixed_s", fixed_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a number > 0, got {value!r}")
    for name, value in (("batch", batch), ("ops", ops), ("batch_ops", batch_ops)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if batch < 2:
        raise ValueError(f"batch must be at least 2 to compare with batch 1, got {batch}")
    if not isinstance(busy, str):
        raise TypeError(f"busy must be the sweep's busy note (a str), got {type(busy).__name__}")
    if busy:
        return ("The sweep's repeats disagreed (the warning under it), so this machine was too busy to split a "
                "step into the part that grows with the batch and the part that does not. Close other programs "
                "and run the sweep and this cell again.")
    per_row = (batch_step_s - step_s) / (batch - 1)
    if per_row <= 0:
        return (f"On this run a step at batch {batch} took no longer than at batch 1, which only noise can do: "
                "the machine was busy, so run the sweep again before reading anything from it.")
    shared = step_s - per_row
    read, fixed = read_s / step_s, fixed_s / step_s
    same_ops = "the same number of" if batch_ops == ops else f"{batch_ops} instead of {ops}"
    text = (f"From the sweep: each extra row added about {per_row * 1e3:.2f} ms to a step (its own arithmetic and data), "
            f"while {shared / step_s:.0%} of a step at batch 1 ({shared * 1e3:.2f} ms) did not grow with the batch. "
            f"That shared part is paid once per step whatever the batch: at batch {batch} a step runs {same_ops} "
            f"operations and reads the same weights. Of a step at batch 1, reading the weights at the measured "
            f"bandwidth is about {read:.0%} and the fixed cost of its {ops} operations about {fixed:.0%}")
    if read + fixed < shared / step_s:
        text += (f"; the other {shared / step_s - read - fixed:.0%} is more work that does not depend on the batch "
                 "(the model's own Python code around the operations) or, on a busy machine, waiting for the CPU")
    if fixed_s >= read_s:
        text += ". The operations cost more than the weights: the regime notebook 04 calls overhead-bound."
    elif read >= 0.5:
        text += ". Reading the weights is most of the step: the regime notebook 04 calls memory-bound."
    else:
        text += "."
    return (text + f" So a step at batch {batch} took {batch_step_s / step_s:.1f}x as long as at batch 1 while "
            f"making {batch} tokens instead of one, and whole calls (prefill included) gave {gain:.1f}x the "
            f"throughput. The rows' own cost matches the shared cost at about {shared / per_row:.0f} rows: from "
            "there on, doubling the batch no longer nearly doubles the throughput, which levels off towards one "
            f"row's arithmetic (about {1 / per_row:,.0f} tokens/s here).")


# --- why the checked greedy answers are the same on other machines ---------------------------------------

@dataclass
class GreedyMargin:
    smallest: float       # the closest call: winner's logit minus the runner-up's, over all the picks
    step: int             # at which generated token (0 = the first)
    rounding: float       # the most float32 rounding moved any of these logits (against float64)
    picks_agree: bool     # a pass over the whole text picks the same tokens again

    @property
    def safe(self) -> bool:
        """True when every pick won by far more than rounding can move a logit (100x)."""
        return self.picks_agree and self.smallest > 100 * self.rounding


@torch.no_grad()
def greedy_margin(model, prompt_tokens, tokens) -> GreedyMargin:
    """How close the greedy answer ``tokens`` (after ``prompt_tokens``) came to a tie (notebook 01).

    One forward pass over the prompt and the answer gives, at each step, the logits the pick was made
    from. Their gap between first and second place is compared with float32's rounding, measured by
    running the same pass in float64: another CPU's kernels add up in another order and differ by
    about that much, so a pick can only flip where the gap is that small.
    """
    if not isinstance(prompt_tokens, (list, tuple)) or not prompt_tokens:
        raise ValueError("prompt_tokens must be a non-empty list of token ids")
    if not isinstance(tokens, (list, tuple)) or not tokens:
        raise ValueError("tokens must be a non-empty list of token ids (the greedy answer)")
    ids = list(prompt_tokens) + list(tokens[:-1])
    if len(ids) > model.config.max_seq_len:
        raise ValueError(f"prompt and answer have {len(ids)} tokens; the model's context is {model.config.max_seq_len}")
    x = torch.tensor([ids], device=model.device)
    first = len(prompt_tokens) - 1  # the logits at the prompt's last token picked the first new token
    was_training = model.training
    model.eval()
    logits = model(x)[0, first:].double().cpu()
    # the float64 reference runs on the CPU: Apple's MPS has no float64
    reference = copy.deepcopy(model).cpu().double().eval()(x.cpu())[0, first:]
    model.train(was_training)
    top2 = logits.topk(2, dim=-1).values
    gaps = top2[:, 0] - top2[:, 1]
    step = int(gaps.argmin())
    agree = logits.argmax(-1).tolist() == list(tokens)
    return GreedyMargin(float(gaps[step]), step, float((logits - reference).abs().max()), agree)


def cost_per_million_tokens(tokens_per_s: float, watts: float, price_per_kwh: float,
                            hardware_per_hour: float = 0.0) -> float:
    """Money per million generated tokens: energy (watts x time x price) plus hardware rent per hour."""
    for name, value in (("tokens_per_s", tokens_per_s), ("watts", watts), ("price_per_kwh", price_per_kwh),
                        ("hardware_per_hour", hardware_per_hour)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if tokens_per_s <= 0:
        raise ValueError(f"tokens_per_s must be > 0, got {tokens_per_s}")
    hours = 1e6 / tokens_per_s / 3600
    return hours * (watts / 1000 * price_per_kwh + hardware_per_hour)
