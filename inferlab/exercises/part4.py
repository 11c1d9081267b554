"""Exercises of notebook 04 (bottlenecks): ``ex.check("4.1", answer)`` ... ``"4.4"``.

Every check recomputes the right answer with the package's own code (``counting``, ``profiling``,
``queueing``), so it tests the idea, not a number copied from the notebook.
"""
from __future__ import annotations


import torch

from . import as_number as _number, is_close as _close, exercise

EX41 = {"model": "llama-2-7b", "batch_size": 8, "n_context": 1024, "dtype": torch.float16}
EX42 = {"model": "llama-3-8b", "hardware": "h100", "n_context": 1, "dtype": torch.bfloat16}
EX43 = {"model": "llama-2-7b", "hardware": "a100", "dtype": torch.float16}
EX44 = {"rate": 1.6, "service_s": 0.5}


def _config(name):
    from ..config import get_config
    return get_config(name)


@exercise(
    "4.1",
    question=("Llama-2-7B in float16 decodes 8 sequences together, each with 1,024 tokens of context (the new "
              "one included). What is the arithmetic intensity of one decode step, in FLOPs per byte? Count the "
              "weights read once, the 8 KV caches read, and the new keys/values written (a float)."),
    solution='''
FLOPs: every one of the 8 new tokens meets every weight matrix once (2 FLOPs per weight), plus attention
over its 1,024 keys. Bytes: the weights once for the whole batch, plus each sequence's own cache.

    cfg = il.MODEL_CONFIGS["llama-2-7b"]
    c = counting.step_count(cfg, n_new=1, n_context=1024, batch_size=8, dtype=torch.float16)
    answer = c.flops / c.bytes     # = c.intensity, about 6.3 FLOP/byte
    # by hand: weights about 13.2 GB (the input embedding table is only looked up, 8 rows of it);
    # caches 8 x 1,023 tokens x 524,288 bytes = 4.3 GB; writes 8 x 524,288 bytes
    # FLOPs 8 x 2 x 6.61e9 weights used + attention 8 x 4 x 32 heads x 1,024 keys x 128 dims = 1.10e11

Without the caches it would be about 8 (2 FLOPs per weight per sequence over 2 bytes per weight); the
caches every sequence reads on its own pull it down. Far below any accelerator's ridge: memory-bound.
''')
def _verify_intensity(answer):
    from ..counting import step_count
    value = _number(answer)
    cfg = _config(EX41["model"])
    c = step_count(cfg, 1, EX41["n_context"], EX41["batch_size"], EX41["dtype"])
    if _close(value, c.intensity, 0.02):
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
    return False, "Hint: counting.step_count(cfg, n_new=1, n_context=1024, batch_size=8, dtype=torch.float16)."


@exercise(
    "4.2",
    question=("On an H100 (bfloat16, published roofs: profiling.hardware_roof('h100', torch.bfloat16)), from what "
              "batch size on is a decode step of Llama-3-8B compute-bound? Take a context of 1 token (no cache "
              "to read). Give an int."),
    solution='''
A step is compute-bound once its intensity reaches the ridge point, peak FLOP/s / bandwidth:

    roof = profiling.hardware_roof("h100", torch.bfloat16)     # 989.4e12 / 3.35e12 = 295 FLOP/byte
    cfg = il.MODEL_CONFIGS["llama-3-8b"]
    # intensity at batch B is about 2 x B FLOPs per weight / 2 bytes per weight = B, so B ~ 295
    answer = profiling.critical_batch(cfg, 1, roof, torch.bfloat16)

Below that batch, adding sequences is almost free (the weights are read anyway): the reason servers batch.
''')
def _verify_critical(answer):
    from ..profiling import critical_batch, hardware_roof
    value = _number(answer)
    roof = hardware_roof(EX42["hardware"], EX42["dtype"])
    expected = critical_batch(_config(EX42["model"]), EX42["n_context"], roof, EX42["dtype"])
    if value == expected:
        return True, f"batch {expected}: the ridge point is {roof.ridge:.1f} FLOP/byte and batch B gives a bit less than B."
    if _close(value, roof.ridge, 0.002):
        return False, "That is the ridge point itself (FLOP/byte). Which batch gives a step that intensity?"
    if _close(value, expected, 0.03):
        return False, ("Close: batch B gives a little less than B FLOP/byte (the head and the cache writes). Find the "
                       "smallest B with counting.step_count(cfg, 1, 1, B, torch.bfloat16).intensity >= roof.ridge.")
    if _close(value, 2 * expected, 0.05):
        return False, "Close, but bfloat16 weights are 2 bytes each: intensity is about B, not B/2."
    return False, "Hint: the smallest batch B with step intensity >= roof.ridge (profiling.critical_batch)."


@exercise(
    "4.3",
    question=("Llama-2-7B in float16 decodes one sequence on an A100 (published bandwidth 2,039 GB/s). Ignoring the "
              "tiny KV cache (context 1), what is the most tokens per second it can reach? (a float)"),
    solution='''
At batch 1 the step is memory-bound: it cannot be faster than reading every weight once.

    roof = profiling.hardware_roof("a100", torch.float16)
    c = counting.step_count(il.MODEL_CONFIGS["llama-2-7b"], 1, 1, 1, torch.float16)   # about 13.5 GB
    answer = roof.bandwidth / c.bytes      # about 154 tokens/s; the FLOPs would allow 23,600

gpt-fast reaches 72% of the bandwidth on an A100 (MBU 0.72), i.e. about 110 tokens/s in float16.
''')
def _verify_tokens(answer):
    from ..counting import step_count
    from ..profiling import hardware_roof
    value = _number(answer)
    roof = hardware_roof(EX43["hardware"], EX43["dtype"])
    c = step_count(_config(EX43["model"]), 1, 1, 1, EX43["dtype"])
    expected = roof.bandwidth / c.bytes
    if _close(value, expected, 0.03):
        return True, f"about {expected:.0f} tokens/s: {roof.bandwidth / 1e9:,.0f} GB/s / {c.bytes / 1e9:.2f} GB per step."
    if _close(value, roof.peak_flops / c.flops, 0.05):
        return False, "That is the compute limit; at batch 1 the memory limit is far lower and wins."
    if _close(value, expected / 2, 0.05):
        return False, "That reads 4 bytes per weight; float16 takes 2."
    return False, "Hint: time per step >= bytes per step / bandwidth."


@exercise(
    "4.4",
    question=("A server answers one request at a time, each in exactly 0.5 s. Requests arrive at random, 1.6 per "
              "second on average (Poisson). What is the mean latency (waiting + service) in seconds? "
              "(queueing.md1_latency has the formula; a float)"),
    solution='''
The server is busy rho = 1.6 x 0.5 = 80% of the time. A random arrival waits on average
rho x s / (2 (1 - rho)) = 0.8 x 0.5 / 0.4 = 1.0 s, then is served in 0.5 s:

    answer = queueing.md1_latency(1.6, 0.5)    # 1.5 s: three times the service time

At 95% busy it would be 5.25 s. The fix is not a faster part but serving several requests together.
''')
def _verify_queue(answer):
    from ..queueing import md1_latency
    value = _number(answer)
    expected = md1_latency(EX44["rate"], EX44["service_s"])
    if _close(value, expected, 0.02):
        return True, f"{expected:.2f} s: {expected - EX44['service_s']:.2f} s waiting in line + {EX44['service_s']} s served."
    if _close(value, EX44["service_s"], 0.02):
        return False, "That is the service time alone; at 80% busy most arrivals find someone in front of them."
    if _close(value, expected - EX44["service_s"], 0.02):
        return False, "That is the waiting alone; add the service time."
    return False, "Hint: rho = rate x service; waiting = rho x service / (2 (1 - rho))."
