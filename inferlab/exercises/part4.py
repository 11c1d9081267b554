"""Exercises of notebook 04 (bottlenecks): ``ex.check("4.1", answer)`` ... ``"4.5"`` (4.4 sits in the deep
dive 04b; 4.5 is a prediction checked against the learner's own measured roofs and batch sweep).

Every check recomputes the right answer with the package's own code (``measure.counting``, ``measure.roofline``,
``lessons.part4``), so it tests the idea, not a number copied from the notebook.
"""
from __future__ import annotations

import torch

from . import as_number as _number, compare_guess, exercise, is_close as _close

EX41 = {"model": "llama-2-7b", "batch_size": 8, "n_context": 1024, "dtype": torch.float16}
EX42 = {"model": "llama-3-8b", "hardware": "h100", "n_context": 1, "dtype": torch.bfloat16}
EX43 = {"model": "llama-2-7b", "hardware": "a100", "dtype": torch.float16}
EX44 = {"rate": 1.5, "service_s": 0.5}


def _config(name):
    from ..core.config import get_config
    return get_config(name)


@exercise(
    "4.1",
    question=("Llama-2-7B in float16 decodes 8 sequences together, each with 1,024 tokens of context (the new "
              "one included). What is the arithmetic intensity of one decode step, in FLOPs per byte? Count the "
              "weights read once, the 8 KV caches read, and the new keys/values written (a float)."),
    solution='''
FLOPs: every one of the 8 new tokens meets every weight matrix once (2 FLOPs per weight), plus attention
over its 1,024 keys. Bytes: the weights once for the whole batch, plus each sequence's own cache.

    import torch
    import inferlab as il
    from inferlab.measure import counting
    sol_cfg = il.MODEL_CONFIGS["llama-2-7b"]
    sol_step = counting.step_count(sol_cfg, n_new=1, n_context=1024, batch_size=8, dtype=torch.float16)
    answer_41 = sol_step.flops / sol_step.bytes     # = sol_step.intensity, about 6.3 FLOP/byte
    # by hand: weights about 13.2 GB (the input embedding table is only looked up, 8 rows of it);
    # caches 8 x 1,023 tokens x 524,288 bytes = 4.3 GB; writes 8 x 524,288 bytes
    # FLOPs 8 x 2 x 6.61e9 weights used + attention 8 x 4 x 32 heads x 1,024 keys x 128 dims = 1.10e11

Without the caches it would be about 8 (2 FLOPs per weight per sequence over 2 bytes per weight); the
caches every sequence reads on its own pull it down. Far below any accelerator's ridge: memory-bound.
''')
def _verify_intensity(answer):
    from ..measure.counting import param_bytes, step_count
    value = _number(answer)
    cfg = _config(EX41["model"])
    c = step_count(cfg, 1, EX41["n_context"], EX41["batch_size"], EX41["dtype"])
    # counting the whole embedding table as read (instead of the 8 rows looked up) is a fair convention too
    whole_table = c.flops / (param_bytes(cfg, EX41["dtype"]) + c.kv_read_bytes + c.kv_write_bytes)
    if _close(value, c.intensity, 0.02) or _close(value, whole_table, 0.02):
        return True, (f"{c.intensity:.2f} FLOP/byte: {c.flops / 1e9:.0f} GFLOP over {c.bytes / 1e9:.1f} GB "
                      f"({c.weight_bytes / 1e9:.1f} GB of weights, {c.kv_read_bytes / 1e9:.1f} GB of cache).")
    no_cache = c.flops / (c.weight_bytes + c.kv_write_bytes)
    if _close(value, no_cache, 0.05):
        return False, "That leaves out the caches: each of the 8 sequences reads its own 1,023 cached tokens."
    c32 = step_count(cfg, 1, EX41["n_context"], EX41["batch_size"], torch.float32)
    if _close(value, c32.intensity, 0.05):
        return False, "That counts 4 bytes per number (float32); float16 takes 2."
    if _close(value, c.intensity / EX41["batch_size"], 0.1) or _close(value, 1.0, 0.1):
        return False, "That is one sequence's intensity; 8 sequences share one read of the weights."
    if _close(value, 1 / c.intensity, 0.05):
        return False, "That is bytes per FLOP; the intensity is FLOPs per byte (the other way round)."
    if value > 2 * c.intensity:
        return False, ("Too high for a decode step: check that every sequence's own KV cache is among the bytes, and "
                       "that each weight counts 2 FLOPs per new token (not per token of context).")
    return False, ("Not yet. FLOPs: 2 per weight per new token (8 tokens), plus attention over the context; bytes: "
                   "the weights once for the batch, plus each sequence's cached keys/values, plus the new ones.")


@exercise(
    "4.2",
    question=("On an H100 (bfloat16, published roofs: roofline.hardware_roof('h100', torch.bfloat16)), from what "
              "batch size on is a decode step of Llama-3-8B compute-bound? Take a context of 1 token (no cache "
              "to read). Give an int."),
    solution='''
A step is compute-bound once its intensity reaches the ridge point, peak FLOP/s / bandwidth:

    import torch
    import inferlab as il
    from inferlab.measure import roofline
    sol_roof = roofline.hardware_roof("h100", torch.bfloat16)     # 989.4e12 / 3.35e12 = 295 FLOP/byte
    sol_cfg = il.MODEL_CONFIGS["llama-3-8b"]
    # intensity at batch B is about 2 x B FLOPs per weight / 2 bytes per weight = B, so B ~ 296; counted
    # exactly (the head, the cache writes) it is a little less than B:
    answer_42 = roofline.critical_batch(sol_cfg, 1, sol_roof, torch.bfloat16)

Below that batch, adding sequences is almost free (the weights are read anyway): the reason servers batch.
''')
def _verify_critical(answer):
    import math

    from ..measure.counting import dtype_bytes
    from ..measure.roofline import critical_batch, hardware_roof
    value = _number(answer)
    roof = hardware_roof(EX42["hardware"], EX42["dtype"])
    expected = critical_batch(_config(EX42["model"]), EX42["n_context"], roof, EX42["dtype"])
    rule_of_thumb = math.ceil(roof.ridge * dtype_bytes(EX42["dtype"]) / 2)  # intensity ~ 2B / bytes per weight
    if value == expected:
        return True, f"batch {expected}: the ridge point is {roof.ridge:.1f} FLOP/byte and batch B gives a bit less than B."
    if value == rule_of_thumb:
        return True, (f"batch {rule_of_thumb}, by the rule intensity ~ 2 x B / bytes per weight. Counted exactly (the "
                      f"head and the cache writes add bytes) a step reaches the ridge from batch {expected}.")
    if _close(value, roof.ridge, 0.002):
        return False, "That is the ridge point itself (FLOP/byte). Which batch gives a step that intensity?"
    if _close(value, expected, 0.03):
        return False, ("Close: a decode step's intensity at batch B is a little less than B FLOP/byte in bfloat16 "
                       "(the head and the cache writes add bytes). Look for the smallest B whose intensity reaches "
                       "the ridge.")
    if _close(value, 2 * expected, 0.05):
        return False, "Too high by about 2x: bfloat16 weights are 2 bytes each, so intensity is about B, not B/2."
    return False, ("Not yet: a step is compute-bound once its intensity (FLOPs per byte) reaches the ridge point, "
                   "peak FLOP/s / bandwidth. Which batch is the first to get there?")


@exercise(
    "4.3",
    question=("Llama-2-7B in float16 decodes one sequence on an A100 (published bandwidth 2,039 GB/s). Ignoring the "
              "tiny KV cache (context 1), what is the most tokens per second it can reach? (a float)"),
    solution='''
At batch 1 the step is memory-bound: it cannot be faster than reading every weight once.

    import torch
    import inferlab as il
    from inferlab.measure import counting, roofline
    sol_roof = roofline.hardware_roof("a100", torch.float16)
    sol_step = counting.step_count(il.MODEL_CONFIGS["llama-2-7b"], 1, 1, 1, torch.float16)   # about 13.2 GB
    answer_43 = sol_roof.bandwidth / sol_step.bytes      # about 154 tokens/s; the FLOPs would allow 23,600

(Counting the whole embedding table as read gives about 151: it is looked up, one row per token, but
either convention passes.) gpt-fast's README reports 104.9 tokens/s for this model in bfloat16 on an
A100-80GB limited to 330 W, i.e. 1,397 GB/s: about two thirds of the datasheet's bandwidth.
''')
def _verify_tokens(answer):
    from ..measure.counting import param_bytes, step_count
    from ..measure.roofline import hardware_roof
    value = _number(answer)
    roof = hardware_roof(EX43["hardware"], EX43["dtype"])
    cfg = _config(EX43["model"])
    c = step_count(cfg, 1, 1, 1, EX43["dtype"])
    expected = roof.bandwidth / c.bytes
    whole_table = roof.bandwidth / param_bytes(cfg, EX43["dtype"])  # the embedding table counted as read
    if whole_table * 0.98 <= value <= expected * 1.02:
        return True, (f"about {expected:.0f} tokens/s: {roof.bandwidth / 1e9:,.0f} GB/s / {c.bytes / 1e9:.2f} GB per step "
                      f"({whole_table:.0f} if the whole embedding table is counted as read).")
    if _close(value, roof.peak_flops / c.flops, 0.05):
        return False, "That is the compute limit; at batch 1 the memory limit is far lower and wins."
    if _close(value, expected / 2, 0.05) or _close(value, whole_table / 2, 0.05):
        return False, "That reads 4 bytes per weight; float16 takes 2."
    if _close(value, roof.bandwidth / (7e9 * 2), 0.01):
        return False, ("That takes the 7 billion of the model's name; the name is rounded. Count its parameters "
                       "(counting.param_count) or the bytes a step reads.")
    return False, "Not yet: at batch 1 a step cannot take less than the time to read every weight once."


@exercise(
    "4.4",
    question=("A server answers one request at a time, each in exactly 0.5 s. Requests arrive at random, 1.5 per "
              "second on average (Poisson). What is the mean latency (waiting + service) in seconds? "
              "(a float; the deep dive 04b gives the M/D/1 formula)"),
    solution='''
The server is busy rho = 1.5 x 0.5 = 75% of the time. A random arrival waits on average
rho x s / (2 (1 - rho)) = 0.75 x 0.5 / 0.5 = 0.75 s, then is served in 0.5 s:

    from inferlab.lessons import part4
    answer_44 = part4.md1_latency(1.5, 0.5)    # 1.25 s: two and a half times the service time

At 95% busy it would be 5.25 s. The fix is not a faster part but serving several requests together.
''')
def _verify_queue(answer):
    from ..lessons.part4 import md1_latency
    value = _number(answer)
    expected = md1_latency(EX44["rate"], EX44["service_s"])
    if _close(value, expected, 0.02):
        return True, f"{expected:.2f} s: {expected - EX44['service_s']:.2f} s waiting in line + {EX44['service_s']} s served."
    if _close(value, EX44["service_s"], 0.02):
        return False, "That is the service time alone; at 75% busy most arrivals find someone in front of them."
    if _close(value, expected - EX44["service_s"], 0.02):
        return False, "That is the waiting alone; add the service time."
    rho = EX44["rate"] * EX44["service_s"]
    if _close(value, EX44["service_s"] / (1 - rho), 0.02) or _close(value, rho * EX44["service_s"] / (1 - rho), 0.02):
        return False, ("That is the M/M/1 formula, for service times that vary at random; here every request takes "
                       "exactly the same time (M/D/1), which halves the waiting.")
    return False, "Not yet: rho = rate x service; waiting = rho x service / (2 (1 - rho)); latency = waiting + service."


def _regime_change(measured) -> dict:
    """4.5's measurement: ``{"roofline": batch, "sweep": batch or None}`` (the notebook's ``regime_change``)."""
    if not isinstance(measured, dict) or "roofline" not in measured:
        raise TypeError("measured must be the notebook's regime_change dict ({'roofline': ..., 'sweep': ...})")
    return measured


@exercise(
    "4.5",
    question=("Predict, before the batch sweep: from which batch size on is a decode step of GPT-2's shape (float32, "
              "context 16) compute-bound on THIS machine? Work it out from the ridge point you measured (an int)."),
    measured="regime_change",
    solution='''
In float32 a weight is 4 bytes and each sequence in the batch does 2 FLOPs with it, so a decode step's
intensity is about 2 x B / 4 = B / 2 FLOPs per byte. It reaches the ridge when B is about twice the ridge:

    import math
    answer_45 = max(1, math.ceil(2 * roof.ridge))   # roof: the measured roofs of section 2

The sweep then shows where this machine's step really left its plateau (often earlier: small matmuls run
below the square matmul's peak).
''')
def _verify_regime_change(answer, measured):
    value = _number(answer)
    m = _regime_change(measured)
    predicted = m["roofline"]
    if predicted is None:
        return False, "The roofline found no batch: run the measuring cells again."
    accepted = [predicted] + ([m["sweep"]] if m.get("sweep") else [])
    if value < 1:
        return False, "A batch size is at least 1."
    if any(a / 2 <= value <= 2 * a for a in accepted):
        seen = (f"; the sweep saw the step grow in proportion from batch {m['sweep']}" if m.get("sweep")
                else "; this sweep's repeats did not agree well enough to read the change off it")
        return True, f"the measured roofs put the change at batch {predicted}{seen}."
    ridge = m.get("ridge")
    if ridge and _close(value, ridge, 0.1) and not any(a / 2 <= ridge <= 2 * a for a in accepted):
        return False, "That is the ridge itself, in FLOPs per byte. Which batch gives a decode step that intensity?"
    if any(value > 2 * a for a in accepted):
        if ridge and any(a / 2 <= value / 2 <= 2 * a for a in accepted):
            return False, "Too high by about 2x: a float32 weight is 4 bytes, and a batch of B does 2 x B FLOPs with it."
        return False, ("Too high: the roofline puts the change much earlier. Decode intensity grows about B / 2 FLOPs "
                       "per byte in float32; where does it meet the ridge you measured?")
    return False, ("Too low: until a step's intensity reaches the ridge (peak FLOP/s / bandwidth), extra sequences "
                   "ride along with weights read anyway. Decode intensity is about B / 2 FLOPs per byte in float32.")




__all__ = ["EX41", "EX42", "EX43", "EX44", "compare_guess"]
