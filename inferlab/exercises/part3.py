"""Exercises of notebook 03 (prefill, decoding and the KV cache): ``ex.check("3.1", answer_31)`` ... ``"3.5"``
(3.5 is a prediction, checked against the learner's own measurement).

Every check recomputes the right answer with the package's own code (``counting``, the bundled model,
``il.generate``), so it tests the idea, not a number copied from the notebook. Hints say what is wrong
(a unit, a forgotten factor, a shortcut) and never print the expected answer.
"""
from __future__ import annotations

import math
import os
import sys
from functools import lru_cache
from pathlib import Path

import torch

from . import (as_number as _number, compare_guess,  # noqa: F401  (compare_guess: the notebook imports it from here)
               exercise, is_close as _close)

EX31 = {"model": "qwen2.5-0.5b", "seq_len": 32768, "dtype": torch.bfloat16}
EX32 = {"model": "llama-2-7b", "seq_len": 6000, "memory_gb": 80, "dtype": torch.float16}  # 6,000: not a calculator setting
EX33_CASES = (("The return value of a function is", 8), ("Lists are mutable sequences", 5))
EX34 = {"model": "llama-3-8b", "batch_size": 16, "dtype": torch.float16, "params_by_name": 8e9}
UNITS = (("GB (10^9 bytes)", 1e9), ("GiB (2^30 bytes)", 2 ** 30), ("MB (10^6 bytes)", 1e6),
         ("MiB (2^20 bytes)", 2 ** 20), ("kB (10^3 bytes)", 1e3), ("KiB (2^10 bytes)", 2 ** 10))


def _config(name):
    from ..core.config import get_config
    return get_config(name)


def _unit_hint(value: float, expected_bytes: float, what: str) -> str | None:
    """The hint for a right size given in GB, GiB, MB, ... when bytes are wanted (None if it is not that)."""
    for unit, size in UNITS:
        if _close(value, expected_bytes / size, 0.03):
            return (f"That looks like {what} in {unit}; the question wants bytes, as an int "
                    f"(multiply back by {size:,.0f}, or skip the conversion).")
    return None


@exercise(
    "3.1",
    question=("How many bytes of KV cache does one sequence of 32,768 tokens take in Qwen2.5-0.5B "
              "(il.MODEL_CONFIGS['qwen2.5-0.5b']) with keys and values in bfloat16? Give an int (bytes)."),
    solution='''
Every layer keeps a key and a value vector per token for each key/value head:

    import inferlab as il
    qwen = il.MODEL_CONFIGS["qwen2.5-0.5b"]   # 24 layers, 14 query heads sharing 2 key/value heads, head_dim 64
    qwen_per_token = 2 * qwen.n_layer * qwen.n_kv_head * qwen.head_dim * 2   # K and V x layers x heads x dims x 2 bytes
    answer_31 = qwen_per_token * 32768      # 12,288 bytes per token -> 402,653,184 bytes (0.40 GB)
    # the same with the package: il.kv_cache_bytes(qwen, 32768, dtype=torch.bfloat16)

Grouped-query attention is why it is small: only the 2 key/value heads are cached, not the 14 query heads.
''')
def _verify_bytes(answer):
    from ..measure.counting import kv_cache_bytes
    value = _number(answer)
    cfg = _config(EX31["model"])
    expected = kv_cache_bytes(cfg, EX31["seq_len"], 1, EX31["dtype"])
    if _close(value, expected, rel=0.001):
        return True, f"{expected:,} bytes: {expected // EX31['seq_len']:,} bytes per token x {EX31['seq_len']:,} tokens."
    unit = _unit_hint(value, expected, "the right size")
    if unit:
        return False, unit
    if _close(value, expected / 2, 0.001):
        return False, "That is the keys only (or the values only): the cache keeps both."
    if _close(value, expected * cfg.n_head / cfg.n_kv_head, 0.001):
        return False, "That counts every query head. Only the key/value heads (n_kv_head) are cached."
    if _close(value, expected * 2, 0.001):
        return False, "That is 4 bytes per number (float32); bfloat16 takes 2."
    if _close(value, expected / EX31["seq_len"], 0.001):
        return False, "That is one token's worth. Multiply by the sequence length."
    if _close(value, expected / cfg.n_layer, 0.001):
        return False, "That is one layer's cache; every layer keeps its own."
    return False, "Hint: 2 (K and V) x n_layer x n_kv_head x head_dim x tokens x bytes per number, in bytes."


@exercise(
    "3.2",
    question=("Llama-2-7B in float16 serves sequences of 6,000 tokens on an 80 GB accelerator (GB = 10^9 bytes). "
              "How many whole sequences' KV caches fit beside the weights? Give an int (a number of sequences)."),
    solution='''
The weights take their share first; what is left holds whole sequences' caches:

    import inferlab as il
    import torch
    from inferlab.measure import counting
    llama = il.MODEL_CONFIGS["llama-2-7b"]
    llama_weights = counting.param_bytes(llama, torch.float16)     # 13.48e9 bytes
    llama_per_sequence = il.kv_cache_bytes(llama, 6000)             # 3.146e9 bytes (multi-head: 512 KiB/token)
    answer_32 = int((80e9 - llama_weights) // llama_per_sequence)   # 21
    # the same with the package: counting.max_concurrent_sequences(llama, 6000, 80)

A real server keeps some memory for activations and fragmentation too, so it fits a few fewer.
''')
def _verify_fit(answer):
    from ..measure.counting import kv_cache_bytes, max_concurrent_sequences, param_bytes
    value = _number(answer)
    c = EX32
    cfg = _config(c["model"])
    expected = max_concurrent_sequences(cfg, c["seq_len"], c["memory_gb"], c["dtype"])
    per_seq = kv_cache_bytes(cfg, c["seq_len"], 1, c["dtype"])
    free = c["memory_gb"] * 1e9 - param_bytes(cfg, c["dtype"])
    if value == expected:
        return True, (f"{expected} sequences: each holds {per_seq / 1e9:.2f} GB of cache, beside "
                      f"{c['memory_gb'] - expected * per_seq / 1e9:.1f} GB of weights and leftover.")
    if any(_close(value, per_seq / size, 0.03) for _, size in UNITS):
        return False, ("That is the size of one sequence's cache (in GB, GiB or similar); the question asks how "
                       "many sequences fit: a count, not a size.")
    if any(_close(value, free / size, 0.03) for _, size in UNITS):
        return False, ("That is the memory left for the caches (in GB, GiB or similar); divide it by one "
                       "sequence's cache, in the same unit, to count the sequences.")
    if value == int(c["memory_gb"] * 1e9 // per_seq):
        return False, "That forgets the weights: they sit in the same memory."
    if value == expected + 1:
        return False, "Round down: a sequence whose cache only partly fits does not fit."
    gib = max_concurrent_sequences(cfg, c["seq_len"], c["memory_gb"] * 2**30 / 1e9, c["dtype"])
    if value == gib:
        return False, ("That mixes units: 80 GB is 80 x 10^9 bytes, while sizes in GiB are in 2^30 bytes. "
                       "Work in bytes throughout (accelerator memory is sold in 10^9 bytes).")
    if value != int(value):
        return False, "Give a whole number of sequences (an int): a sequence whose cache only partly fits does not fit."
    return False, "Hint: (memory in bytes - weight bytes) // (KV cache bytes of one 6,000-token sequence)."


@lru_cache(maxsize=1)
def _bundled():
    from ..core.pretrained import load_pretrained
    return load_pretrained()


_PACKAGE = str(Path(__file__).resolve().parent.parent) + os.sep


def _package_caller(frame, stop) -> str | None:
    """The first function of the inferlab package (other than this checker) between ``frame`` and ``stop``
    on the call stack: who called the model, if it was not the learner's own code."""
    while frame is not None and frame is not stop:
        path = str(Path(frame.f_code.co_filename).resolve()) if frame.f_code.co_filename[:1] not in "<" else ""
        if path.startswith(_PACKAGE) and path != str(Path(__file__).resolve()) and not path.endswith("model.py"):
            module = "inferlab." + path[len(_PACKAGE):].removesuffix(".py").replace(os.sep, ".")
            return f"{module}.{frame.f_code.co_name}"
        frame = frame.f_back
    return None


def record_forward_calls(model, fn):
    """Run ``fn()`` and record every forward call of ``model`` (exercise 3.3): tokens per sequence, whether a
    cache was passed, and which package function made the call (None: the learner's own code)."""
    calls = []
    here = sys._getframe()

    def hook(module, args, kwargs):
        idx = args[0] if args else kwargs.get("idx")
        cache = args[2] if len(args) > 2 else kwargs.get("cache")
        tokens = idx.shape[-1] if isinstance(idx, torch.Tensor) and idx.dim() > 0 else 0
        calls.append({"tokens": int(tokens), "cache": cache is not None,
                      "caller": _package_caller(sys._getframe(1), here)})

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        out = fn()
    finally:
        handle.remove()
    return out, calls


def count_forward_tokens(model, fn):
    """Run ``fn()`` and count the forward calls of ``model`` and the tokens they processed."""
    out, calls = record_forward_calls(model, fn)
    return out, {"calls": len(calls), "tokens": sum(c["tokens"] for c in calls)}


def _as_token_list(got):
    if isinstance(got, torch.Tensor):
        got = got.flatten().tolist()
    if not isinstance(got, (list, tuple)):
        raise TypeError(f"answer(model, ids, n) must return a list of token ids, got {type(got).__name__}")
    return [int(t) for t in got]


@exercise(
    "3.3",
    question=("Write greedy decoding with a KV cache yourself (no il.generate): a function answer(model, ids, n) "
              "that returns the n token ids (a list of ints) generated after the prompt ids, running the prompt "
              "once (prefill) and then one new token per forward pass, with an il.KVCache."),
    solution='''
Prefill the prompt into the cache once, then feed only the newest token; the cache supplies the rest:

    import inferlab as il
    import torch

    def answer(model, ids, n):
        cache = il.KVCache(model.config, batch_size=1, capacity=len(ids) + n)
        step_input, out = torch.tensor([ids]), []
        with torch.no_grad():
            for _ in range(n):
                logits = model(step_input, cache=cache)     # prefill first, then one token per step
                next_id = int(logits[0, -1].argmax())
                out.append(next_id)
                step_input = torch.tensor([[next_id]])
        return out

The model processes len(ids) + n - 1 tokens in all, instead of n * len(ids) + n * (n - 1) / 2 without a cache.
''')
def _verify_cached_loop(answer):
    from ..core.generate import generate
    if not callable(answer):
        return False, "Give a function, e.g. def answer(model, ids, n): ... (it returns a list of token ids)."
    model, tok = _bundled()
    notes = set()
    for prompt, n in EX33_CASES:
        ids = tok.encode(prompt)
        expected = generate(model, tok, ids, max_new_tokens=n, use_cache=False).tokens
        got, calls = record_forward_calls(model, lambda: answer(model, list(ids), n))
        shortcut = next((c["caller"] for c in calls if c["caller"]), None)
        if shortcut:
            return False, (f"Your function let the package's own loop run the model ({shortcut}); the exercise "
                           f"asks for your loop: call model(...) yourself, one forward pass at a time.")
        if not calls:
            return False, ("Your function never ran the model. Compute each token from the model's logits: "
                           "model(step_input, cache=cache)[0, -1].argmax().")
        got = _as_token_list(got)
        if len(got) == len(ids) + n and got[: len(ids)] == ids:
            return False, "Return only the n new tokens, without the prompt."
        if len(got) != n:
            return False, f"Your function returned {len(got)} tokens for n={n}; return exactly n new token ids."
        if got != expected:
            agree = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
            if agree == 0:
                return False, ("The first new token already differs from greedy decoding: after the prefill, pick "
                               "the argmax of the logits at the last position, logits[0, -1].")
            return False, (f"The first {agree} token(s) are greedy decoding's, then they differ. After the prefill, "
                           f"give the model the token it just picked, with the same cache every time (do not "
                           f"create a new cache or feed the prompt again).")
        tokens = sum(c["tokens"] for c in calls)
        if not any(c["cache"] for c in calls):
            return False, (f"Right tokens, but no cache reached the model: every pass recomputed the whole "
                           f"sequence ({tokens} tokens in {len(calls)} pass(es)). Create an il.KVCache and pass it "
                           f"as cache=... on every call.")
        if tokens > len(ids) + n or not all(c["cache"] for c in calls):
            return False, (f"Right tokens, but the model processed {tokens} tokens in {len(calls)} passes; with a "
                           f"cache, the prompt once and then one token per pass is enough (at most len(ids) + n "
                           f"tokens). Pass the same cache on every call, and after the prefill give the model only "
                           f"the token just picked.")
        if calls[0]["tokens"] < len(ids):
            notes.add("your prompt went in over several passes; one pass (the prefill) takes it all at once, "
                      "in parallel, which is what makes prefill fast")
        if tokens == len(ids) + n:
            notes.add("your last pass computed logits it never used (one step of extra work, harmless)")
    extra = f" Note: {'; '.join(sorted(notes))}." if notes else ""
    return True, ("Same tokens as recomputing everything, for two prompts, with the prompt processed once and "
                  f"then one token per forward pass.{extra}")


def _ex34_answers() -> dict:
    """The context length each justified way of counting the weights gives (exercise 3.4)."""
    from ..measure.counting import kv_cache_bytes, param_bytes, step_count
    c = EX34
    cfg = _config(c["model"])
    per_token = kv_cache_bytes(cfg, 1, c["batch_size"], c["dtype"])
    nbytes = 2  # float16
    table = cfg.vocab_size * cfg.d_model * nbytes
    weights = {
        "the weights a step reads: every matrix, but only the 16 looked-up rows of the input embedding table":
            step_count(cfg, 1, 1, c["batch_size"], c["dtype"]).weight_bytes,
        "every weight, counted from the shape, the input embedding table included":
            param_bytes(cfg, c["dtype"]),
        "8e9 weights, the name's round figure": c["params_by_name"] * nbytes,
        "8e9 weights less the input embedding table": c["params_by_name"] * nbytes - table,
    }
    return {name: w / per_token for name, w in weights.items()}


@exercise(
    "3.4",
    question=("Llama-3-8B (float16) decodes 16 sequences together, all the same length. At what context length "
              "(tokens per sequence) does reading the 16 KV caches cost as many bytes per decode step as reading "
              "the weights once? Count the weights a step reads (the input embedding table is only looked up, "
              "as the cell above explains); counting every weight, or 8e9 by the name, is accepted too. "
              "Give an int (round up)."),
    solution='''
The weights are read once per step for the whole batch; every sequence's cache is read for itself:

    import math
    import inferlab as il
    import torch
    from inferlab.measure import counting
    llama3 = il.MODEL_CONFIGS["llama-3-8b"]
    llama3_read = counting.step_count(llama3, 1, 1, 16, torch.float16).weight_bytes   # 15.01e9 bytes read
    llama3_cache_per_token = il.kv_cache_bytes(llama3, 1) * 16         # 128 KiB x 16 sequences
    answer = math.ceil(llama3_read / llama3_cache_per_token)           # 7,158 tokens
    # counting every weight (16.06e9 bytes, the embedding table too) gives 7,659: also accepted

Alone, one sequence reaches that point only past a hundred thousand tokens; batching brings it 16 times closer.
''')
def _verify_crossover(answer):
    value = _number(answer)
    c = EX34
    answers = _ex34_answers()
    for name, exact in answers.items():
        if math.floor(exact) - 1 <= value <= math.ceil(exact) + 1 or _close(value, exact, 0.002):
            others = ", ".join(f"{math.ceil(v):,}" for n, v in answers.items() if n != name)
            return True, (f"{math.ceil(exact):,} tokens ({name}). Past it, each decode step reads more cache "
                          f"than weights. The other ways of counting give {others}: the same lesson, the "
                          f"caches catch up with the weights within a few thousand tokens at batch 16.")
    per_seq = {n: v * c["batch_size"] for n, v in answers.items()}
    if any(_close(value, v, 0.01) for v in per_seq.values()):
        return False, "That is for one sequence. Each of the 16 sequences reads its own cache every step."
    if any(_close(value, v * 2, 0.01) or _close(value, v / 2, 0.01) for v in answers.values()):
        return False, "Off by a factor of 2: count K and V, and 2 bytes per number for both weights and cache."
    if any(_close(value, v * 8 / 32, 0.01) for v in answers.values()):
        return False, ("That counts every query head (32) in the cache; Llama-3-8B caches only its 8 key/value "
                       "heads (grouped-query attention).")
    return False, "Hint: weight bytes / (KV cache bytes per token x 16 sequences), rounded up."


EX35_PROMPT_TOKENS = 200   # notebook 03 times the generation of a 200-token prompt
EX35_FACTOR = 3            # a prediction within this factor of the measurement counts as right


@exercise(
    "3.5",
    question=("Predict, before measuring: the prefill of a 200-token prompt (the time to first token) costs how "
              "many decode steps of the same model (time to first token / time per output token)? A number."),
    solution='''
Reason from what each pass does. A decode step pushes one token through every weight matrix; the prefill
pushes all 200 together, as one matrix multiplication per weight matrix, so the weights are read once and
the arithmetic runs in parallel. It costs far fewer than 200 steps, but more than one (it does 200 times
the arithmetic). A prediction has no single right number; the checker accepts a guess within a factor of
3 of your measurement. What you measured:

    answer_35 = prefill_in_steps   # time to first token / time per output token, measured in section 1

On a GPU the prefill is even closer to one step: it has far more arithmetic units idle during decoding.
''', measured="prefill_in_steps")
def _verify_prefill_steps(answer, measured):
    if isinstance(answer, str):
        return False, "Give a number (for example 30), not text."
    guess, steps = _number(answer), _number(measured)
    if steps <= 0:
        raise ValueError("the measurement must be a positive number of decode steps")
    said = f"You predicted {guess:g} decode steps; your measurement gave {steps:.1f}."
    if steps / EX35_FACTOR <= guess <= steps * EX35_FACTOR:
        return True, (f"{said} Far fewer than one step per prompt token: the 200 tokens go through each weight "
                      f"matrix together." if steps < EX35_PROMPT_TOKENS / 2 else
                      f"{said} (Your machine gave the prefill little advantage; a busy machine does that: run the "
                      f"measuring cell again.)")
    if guess <= 0:
        return False, f"{said} A time ratio is positive: the prefill takes at least some time."
    if guess >= EX35_PROMPT_TOKENS / 2 and steps < EX35_PROMPT_TOKENS / 2:
        return False, (f"{said} You expected about one decode step per prompt token. The prefill gives the model "
                       f"all 200 tokens in one pass: each weight matrix is read once and multiplied by 200 rows "
                       f"at a time, which costs far less than 200 separate passes.")
    if guess < steps:
        return False, (f"{said} More than a factor of {EX35_FACTOR} below: the prefill does 200 times the "
                       f"arithmetic of a step, and on this machine that was not free.")
    return False, f"{said} More than a factor of {EX35_FACTOR} off: compare the work of one pass over 200 tokens with 200 passes."

