"""Exercises of notebook 03 (prefill, decoding and the KV cache): ``ex.check("3.1", answer)`` ... ``"3.4"``.

Every check recomputes the right answer with the package's own code (``counting``, the bundled model,
``il.generate``), so it tests the idea, not a number copied from the notebook.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from . import as_number as _number, is_close as _close, exercise

EX31 = {"model": "qwen2.5-0.5b", "seq_len": 32768, "dtype": torch.bfloat16}
EX32 = {"model": "llama-2-7b", "seq_len": 4096, "memory_gb": 80, "dtype": torch.float16}
EX33_PROMPT = "The return value of a function is"
EX33_NEW_TOKENS = 8
EX34 = {"model": "llama-3-8b", "batch_size": 16, "dtype": torch.float16}


def _config(name):
    from ..config import get_config
    return get_config(name)


@exercise(
    "3.1",
    question=("How many bytes of KV cache does one sequence of 32,768 tokens take in Qwen2.5-0.5B "
              "(il.MODEL_CONFIGS['qwen2.5-0.5b']) with keys and values in bfloat16? Give an int."),
    solution='''
Every layer keeps a key and a value vector per token for each key/value head:

    cfg = il.MODEL_CONFIGS["qwen2.5-0.5b"]   # 24 layers, 14 query heads sharing 2 key/value heads, head_dim 64
    per_token = 2 * cfg.n_layer * cfg.n_kv_head * cfg.head_dim * 2   # K and V x layers x heads x dims x 2 bytes
    answer = per_token * 32768          # 12,288 bytes per token -> 402,653,184 bytes (0.40 GB)
    # the same with the package: il.kv_cache_bytes(cfg, 32768, dtype=torch.bfloat16)

Grouped-query attention is why it is small: only the 2 key/value heads are cached, not the 14 query heads.
''')
def _verify_bytes(answer):
    from ..counting import kv_cache_bytes
    value = _number(answer)
    cfg = _config(EX31["model"])
    expected = kv_cache_bytes(cfg, EX31["seq_len"], 1, EX31["dtype"])
    if _close(value, expected, rel=0.001):
        return True, f"{expected:,} bytes: {expected // EX31['seq_len']:,} bytes per token x {EX31['seq_len']:,} tokens."
    if value == expected / 2:
        return False, "That is the keys only (or the values only): the cache keeps both."
    if value == expected * cfg.n_head // cfg.n_kv_head:
        return False, "That counts every query head. Only the key/value heads (n_kv_head) are cached."
    if value == expected * 2:
        return False, "That is 4 bytes per number (float32); bfloat16 takes 2."
    if value == expected // EX31["seq_len"]:
        return False, "That is one token's worth. Multiply by the sequence length."
    if value == expected // cfg.n_layer:
        return False, "That is one layer's cache; every layer keeps its own."
    return False, "Hint: 2 (K and V) x n_layer x n_kv_head x head_dim x tokens x bytes per number."


@exercise(
    "3.2",
    question=("Llama-2-7B in float16 serves sequences of 4,096 tokens on an 80 GB accelerator (GB = 10^9 bytes). "
              "How many whole sequences' KV caches fit beside the weights? Give an int."),
    solution='''
The weights take their share first; what is left holds whole sequences' caches:

    cfg = il.MODEL_CONFIGS["llama-2-7b"]
    weights = inferlab.counting.weight_bytes(cfg, torch.float16)      # 13.48e9 bytes
    per_sequence = il.kv_cache_bytes(cfg, 4096)                        # 2.147e9 bytes (multi-head: 512 KiB/token)
    answer = int((80e9 - weights) // per_sequence)                     # 30
    # the same with the package: inferlab.counting.max_concurrent_sequences(cfg, 4096, 80)

A real server keeps some memory for activations and fragmentation too, so it fits a few fewer.
''')
def _verify_fit(answer):
    from ..counting import kv_cache_bytes, max_concurrent_sequences
    value = _number(answer)
    c = EX32
    cfg = _config(c["model"])
    expected = max_concurrent_sequences(cfg, c["seq_len"], c["memory_gb"], c["dtype"])
    per_seq = kv_cache_bytes(cfg, c["seq_len"], 1, c["dtype"])
    if value == expected:
        return True, (f"{expected} sequences: each holds {per_seq / 1e9:.2f} GB of cache, beside "
                      f"{c['memory_gb'] - expected * per_seq / 1e9:.1f} GB of weights and leftover.")
    if value == int(c["memory_gb"] * 1e9 // per_seq):
        return False, "That forgets the weights: they sit in the same memory."
    if value == expected + 1:
        return False, "Round down: a sequence whose cache only partly fits does not fit."
    gib = max_concurrent_sequences(cfg, c["seq_len"], c["memory_gb"] * 2**30 / 1e9, c["dtype"])
    if value == gib:
        return False, "That reads 80 GB as 80 GiB (2^30 bytes); accelerator memory is sold in 10^9 bytes."
    return False, "Hint: (memory - weight bytes) // (KV cache bytes of one 4,096-token sequence)."


@lru_cache(maxsize=1)
def _bundled():
    from ..pretrained import load_pretrained
    return load_pretrained()


def count_forward_tokens(model, fn):
    """Run ``fn()`` and count the forward calls of ``model`` and the tokens they processed (exercise 3.3)."""
    seen = {"calls": 0, "tokens": 0}

    def hook(module, args, kwargs):
        idx = args[0] if args else kwargs.get("idx")
        seen["calls"] += 1
        seen["tokens"] += idx.numel() if isinstance(idx, torch.Tensor) else 0

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        out = fn()
    finally:
        handle.remove()
    return out, seen


@exercise(
    "3.3",
    question=("Write greedy decoding with a KV cache: a function answer(model, ids, n) that returns the n token "
              "ids (a list of ints) generated after the prompt ids, running the prompt once (prefill) and then "
              "one new token per forward pass, with an il.KVCache."),
    solution='''
Prefill the prompt into the cache once, then feed only the newest token; the cache supplies the rest:

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
    from ..generate import generate
    if not callable(answer):
        return False, "Give a function, e.g. def answer(model, ids, n): ... (it returns a list of token ids)."
    model, tok = _bundled()
    ids, n = tok.encode(EX33_PROMPT), EX33_NEW_TOKENS
    expected = generate(model, tok, ids, max_new_tokens=n, use_cache=False).tokens
    got, seen = count_forward_tokens(model, lambda: answer(model, list(ids), n))
    if isinstance(got, torch.Tensor):
        got = got.flatten().tolist()
    got = [int(t) for t in got]
    if got[: len(ids)] == ids and len(got) == len(ids) + n:
        return False, "Return only the n new tokens, without the prompt."
    if got != expected:
        return False, f"Your function gave {got}, greedy decoding gives {expected}."
    needed = len(ids) + n - 1
    if seen["tokens"] > needed:
        return False, (f"Right tokens, but the model processed {seen['tokens']} tokens in {seen['calls']} calls; "
                       f"with a cache {needed} are enough. Feed only the newest token after the prefill.")
    return True, (f"Same tokens as recomputing everything, with {seen['tokens']} tokens processed in "
                  f"{seen['calls']} forward passes (one prefill of {len(ids)}, then one token each).")


@exercise(
    "3.4",
    question=("Llama-3-8B (float16) decodes 16 sequences together, all the same length. At what context length "
              "(tokens per sequence) does reading the 16 KV caches cost as many bytes per decode step as reading "
              "the weights once? Give an int (round up)."),
    solution='''
The weights are read once per step for the whole batch; every sequence's cache is read for itself:

    cfg = il.MODEL_CONFIGS["llama-3-8b"]
    weights = inferlab.counting.weight_bytes(cfg, torch.float16)       # 16.06e9 bytes
    per_token = il.kv_cache_bytes(cfg, 1) * 16                          # 128 KiB x 16 sequences
    answer = math.ceil(weights / per_token)                             # 7,659 tokens
    # the same with the package: inferlab.counting.cache_equals_weights_context(cfg, batch_size=16)

Alone, one sequence reaches that point only at 122,533 tokens; batching brings it 16 times closer.
''')
def _verify_crossover(answer):
    from ..counting import cache_equals_weights_context
    value = _number(answer)
    c = EX34
    cfg = _config(c["model"])
    expected = cache_equals_weights_context(cfg, c["batch_size"], c["dtype"])
    single = cache_equals_weights_context(cfg, 1, c["dtype"])
    if value in (expected, expected - 1):
        return True, (f"{expected:,} tokens: past it each decode step reads more cache than weights. "
                      f"One sequence alone would reach it only at {single:,}.")
    if _close(value, single):
        return False, "That is for one sequence. Each of the 16 sequences reads its own cache every step."
    if _close(value, expected * 2) or _close(value, expected / 2):
        return False, "Off by a factor of 2: count K and V, and 2 bytes per number in float16."
    return False, "Hint: weight bytes / (KV cache bytes per token x 16 sequences)."
