"""Exercises of notebook 05 (inference optimization): ``ex.check("5.1", answer)`` ... ``"5.6"``.

5.1, 5.2, 5.5 and 5.6 are in the core lesson (5.5 a prediction checked against the learner's own
measurement); 5.3 sits in the deep dive 05b (speculative decoding), 5.4 in 05a (quantization formats).
Every check recomputes the right answer with the package's own code (``optimize.quantize``,
``optimize.speculative``, ``kv_cache_bytes``), so it tests the idea, not a number copied from the notebook.
"""
from __future__ import annotations

import math

import torch

from . import as_number as _number, exercise

EX51 = {"out_features": 4096, "in_features": 4096, "scheme": "q4_0", "group_size": 32}
EX52 = {"alpha": 0.8, "gamma": 4, "c": 0.1}
EX56 = {"model": "llama-3-8b", "dtype": torch.bfloat16}


@exercise(
    "5.1",
    question=("How many bytes does one 4096 x 4096 weight matrix take in q4_0 with blocks of 32 weights, each "
              "block with one float16 scale? Give an int."),
    solution='''
Each weight takes 4 bits (two per byte) and each block of 32 adds a 2-byte float16 scale:

    sol_n = 4096 * 4096
    answer = sol_n // 2 + (sol_n // 32) * 2     # 8,388,608 + 1,048,576 = 9,437,184 bytes: 4.5 bits per weight
    # the same with the package: inferlab.optimize.quantize.quantized_bytes(4096, 4096, "q4_0", 32)

Against float32 (67,108,864 bytes) that is 7.1x smaller; the scales cost an eighth of the 4-bit payload.
''')
def _verify_bytes(answer):
    from ..optimize.quantize import quantized_bytes
    value = _number(answer)
    c = EX51
    n = c["out_features"] * c["in_features"]
    expected = quantized_bytes(c["out_features"], c["in_features"], c["scheme"], c["group_size"])
    if value == expected:
        return True, f"{expected:,} bytes = {8 * expected / n:.1f} bits per weight, {4 * n / expected:.1f}x smaller than float32."
    if value == n // 2:
        return False, "That is the 4-bit weights alone: every block of 32 also stores a 2-byte scale."
    if value == n // 2 + (n // 32) * 4:
        return False, "That stores the scales in float32 (4 bytes); q4_0 keeps them in float16."
    if value == n:
        return False, "That is one byte per weight (int8). q4_0 packs two weights into a byte."
    if value == expected * 8:
        return False, "That is bits, not bytes."
    if value == n // 2 + (n // 32) * 2 + 4096 * 4:
        return False, "Q4_0 has no per-row scale: only one float16 scale per block of 32 weights."
    return False, ("Hint: add two parts, the 4-bit integers (how many bytes hold n weights at 4 bits each?) "
                   "and the scales (one 2-byte float16 per block of 32 weights).")


@exercise(
    "5.2",
    question=("Speculative decoding with acceptance rate alpha = 0.8, gamma = 4 draft tokens per round and a draft "
              "step costing c = 0.1 target steps: what speedup do Leviathan et al. (2023) expect? Give a number."),
    solution='''
A round yields on average (1 - alpha^(gamma+1)) / (1 - alpha) tokens and costs gamma draft steps plus one
target step, gamma * c + 1 target steps:

    sol_alpha, sol_gamma, sol_c = 0.8, 4, 0.1
    answer = (1 - sol_alpha ** (sol_gamma + 1)) / ((1 - sol_alpha) * (sol_gamma * sol_c + 1))   # 3.36 / 1.4 = 2.40
    # the same with the package: inferlab.optimize.speculative.expected_speedup(0.8, 4, 0.1)
''')
def _verify_speedup(answer):
    from ..optimize.speculative import expected_speedup, expected_tokens_per_round
    value = _number(answer)
    a, g, c = EX52["alpha"], EX52["gamma"], EX52["c"]
    expected = expected_speedup(a, g, c)
    if abs(value - expected) <= 0.01 * expected:
        return True, f"{expected:.3f}: {expected_tokens_per_round(a, g):.2f} tokens per round for {g * c + 1:.1f} target steps."
    if abs(value - expected_tokens_per_round(a, g)) < 0.01:
        return False, "That is the tokens per round; a round also costs gamma draft steps (gamma * c) besides the target's."
    if abs(value - (1 - a ** g) / ((1 - a) * (g * c + 1))) < 0.01:
        return False, "Use alpha^(gamma + 1): the round adds one token from the target besides the accepted drafts."
    return False, "Hint: (1 - alpha^(gamma+1)) / ((1 - alpha) (gamma c + 1))."


def _reference_residual(p, q):
    from ..optimize.speculative import residual
    return residual(p, q)


@exercise(
    "5.3",
    question=("Write answer(p, q): after the target rejects a draft token, the token is drawn from this "
              "distribution. p, q: 1-D probability tensors of the target and the draft. Return a 1-D tensor."),
    solution='''
Draw from the part of p that q under-covers: normalize(max(0, p - q)).

    def answer(p, q):
        r = (p - q).clamp(min=0)
        return r / r.sum()

Why it works: a token x is kept with probability q(x) min(1, p(x)/q(x)) = min(q(x), p(x)); the residual
adds exactly the missing p(x) - min(p(x), q(x)) = max(0, p(x) - q(x)), so every token ends up with p(x).
''')
def _verify_residual(answer):
    if not callable(answer):
        return False, "answer must be a function answer(p, q) returning a tensor."
    gen = torch.Generator().manual_seed(5)
    for n in (2, 5, 16):
        p = torch.softmax(torch.randn(n, generator=gen) * 2, -1)
        q = torch.softmax(torch.randn(n, generator=gen) * 2, -1)
        got = answer(p.clone(), q.clone())
        if not isinstance(got, torch.Tensor) or got.shape != p.shape:
            return False, f"return a tensor of shape {tuple(p.shape)}."
        want = _reference_residual(p, q)
        if torch.allclose(got.float(), want, atol=1e-5):
            continue
        if (got < -1e-6).any():
            return False, "Some entries are negative: clip p - q at zero first."
        if not math.isclose(float(got.sum()), 1.0, rel_tol=1e-4):
            return False, "It must be a distribution: divide by its sum."
        return False, "Not the residual: normalize(max(0, p - q))."
    return True, "normalize(max(0, p - q)): with it, every generated token follows the target's p exactly."


@exercise(
    "5.4",
    question=("Write answer(w) that quantizes a 2-D float weight w [out, in] to int8 with one scale per output "
              "channel (row) on the symmetric grid of section 4, integers in [-127, 127], returning (q, scale): "
              "q an int8 tensor [out, in], scale a float tensor [out], so that q * scale[:, None] approximates w "
              "within scale / 2 per element."),
    solution='''
Map each row's largest magnitude to 127 and round to the nearest integer:

    def answer(w):
        scale = w.abs().amax(dim=1) / 127
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return q, scale

Rounding to the nearest level is off by at most half a level: |w - q * scale| <= scale / 2.
(inferlab.optimize.quantize.quantize_tensor(w, "int8") does the same, guarding all-zero rows.)
''')
def _verify_int8(answer):
    if not callable(answer):
        return False, "answer must be a function answer(w) returning (q, scale)."
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(48, 64, generator=gen) * torch.rand(48, 1, generator=gen)
    out = answer(w.clone())
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return False, "return a pair (q, scale)."
    q, scale = out
    if not isinstance(q, torch.Tensor) or q.dtype != torch.int8 or q.shape != w.shape:
        return False, f"q must be an int8 tensor of shape {tuple(w.shape)} (use .to(torch.int8))."
    scale = torch.as_tensor(scale).float().reshape(-1)
    if scale.numel() != w.shape[0]:
        return False, f"one scale per output channel (row): {w.shape[0]} scales, got {scale.numel()}."
    err = (w - q.float() * scale[:, None]).abs()
    bad = err > scale[:, None] / 2 + 1e-6
    if bad.any():
        ideal = w / scale[:, None]   # where each weight would land on the grid without rounding or clipping
        if (ideal[bad].abs() > 127.5).all():
            return False, ("The weights with the largest magnitude are clipped: with your scale they land beyond "
                           "127, the edge of the symmetric grid [-127, 127], and clipping moves them by more than "
                           "half a step. Choose each row's scale so that no weight lands past 127.")
        if (q.abs() < 64).all():
            return False, "The integers use only half the range: map each row's largest |w| to 127."
        return False, "Some weights are off by more than half a step: round to the nearest integer (torch.round)."
    if (q == -128).any():
        return False, ("Some integers are -128: the grid is the symmetric [-127, 127] (as many levels each side "
                       "of zero), so -128 is not on it.")
    if (q.float().abs().amax(1) < 120).any():
        return False, "Within the bound, but the range [-127, 127] is not used: scale = max |w| / 127 per row."
    return True, f"int8 per channel: largest error {err.max():.2e}, within scale / 2 everywhere."


@exercise(
    "5.5",
    question=("Predict, before the measurement: how many times as fast will one decode step of the memory-bound "
              "model (four real-size layers) run with int8 weights as with float32 weights? A number (float32 "
              "time / int8 time)."),
    measured="int8_measured",
    solution='''
The step streams every weight once and does two FLOPs per weight: far below the ridge point, memory-bound
(notebook 04). Its time is its bytes over the rate memory delivers them, so it follows the bytes:

    answer_55 = int8_measured["float32_bytes"] / int8_measured["int8_bytes"]   # about 3.9 times fewer bytes
    # int8 stores one byte per weight plus one float32 scale per row, against float32's four bytes

The measurement then says how close this machine's int8 kernel came to streaming its bytes as fast as
float32's kernel streams its own (the identity printed under the table).
''')
def _verify_int8_prediction(answer, measured):
    value = _number(answer)
    got, fewer = float(measured["memory_bound"]), float(measured["fewer_bytes"])
    if value <= 0:
        return False, "A speedup is float32's step time over int8's: a positive number."
    if value < 1 and abs(value - 1 / fewer) < 0.05:
        return False, ("That is the memory ratio (int8 bytes over float32 bytes). The question asks for the speed: "
                       "float32's step time over int8's.")
    if got / 2 <= value <= got * 2:
        return True, f"You predicted {value:.2f}, this machine measured {got:.2f} (within 2x)."
    if abs(value - fewer) <= 0.25 * fewer:
        return True, (f"You reasoned from the bytes ({fewer:.1f}x fewer), the rule for a memory-bound step; this "
                      f"machine measured {got:.2f}: its int8 kernel streamed its bytes at a different rate than "
                      "float32's (the identity under the table shows how much).")
    if value <= 1.25:
        return False, ("You expected little or no gain: that holds for an overhead-bound step like the bundled "
                       "model's. This model's step streams hundreds of megabytes of weights per token, which no "
                       "cache holds, so reading fewer of them is what it waits for.")
    if value > fewer * 1.25:
        return False, ("More than the bytes allow: a memory-bound step reads every weight once, so it can gain "
                       "at most about the ratio of the bytes (float32's bytes over int8's), unless a kernel was "
                       "slow to begin with.")
    return False, ("Far from the measurement. Hint: a memory-bound step's time is the bytes it reads over the "
                   "rate memory delivers them; compare the bytes int8 and float32 store.")


@exercise(
    "5.6",
    question=("Llama-3-8B has 32 layers, 32 query heads of 128 dimensions and 8 key/value heads (grouped-query "
              "attention). How many bytes does its KV cache take per token of context, over all layers, in "
              "bfloat16? Give an int."),
    solution='''
Per layer a token stores one key and one value vector per KEY/VALUE head (not per query head):

    sol_layers, sol_kv_heads, sol_head_dim, sol_bytes = 32, 8, 128, 2
    answer_56 = 2 * sol_layers * sol_kv_heads * sol_head_dim * sol_bytes   # keys and values: 131,072 bytes
    # the same with the package: il.kv_cache_bytes(il.MODEL_CONFIGS["llama-3-8b"], 1, 1, torch.bfloat16)

With 32 key/value heads (multi-head attention) it would be four times as much; a 8,192-token context
takes about 1 GiB per sequence instead of 4.
''')
def _verify_gqa_bytes(answer):
    from ..core.config import get_config
    from ..measure.counting import kv_cache_bytes
    value = _number(answer)
    cfg = get_config(EX56["model"])
    expected = kv_cache_bytes(cfg, 1, 1, EX56["dtype"])
    if value == expected:
        return True, (f"{expected:,} bytes per token: {cfg.n_head // cfg.n_kv_head}x less than with one "
                      "key/value head per query head.")
    if value == expected * cfg.n_head // cfg.n_kv_head:
        return False, "That counts a key/value head per QUERY head: with grouped-query attention only n_kv_head are stored."
    if value == expected // 2:
        return False, "That stores keys or values: a token stores both."
    if value == expected * 2:
        return False, "That is 4 bytes per number (float32): bfloat16 takes 2."
    if value == expected // cfg.n_layer:
        return False, "That is one layer: every layer keeps its own keys and values."
    if value == expected * 8:
        return False, "That is bits, not bytes."
    return False, ("Hint: multiply keys and values (2) x layers x key/value heads x dimensions per head x bytes "
                   "per number.")
