"""Counting FLOPs and bytes of a model step, from the config alone (notebooks 03 and 04).

FLOPs count the matrix multiplications the code performs (2 per multiply-add), exactly what
``torch.utils.flop_counter.FlopCounterMode`` counts; elementwise work (norms, softmax, RoPE) is
left out, as it is small and not what caps the speed. Bytes count what a step must read from
memory at least once: every weight matrix, the cached keys/values, and the new keys/values written.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from ..core.config import ModelConfig

DTYPE_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1, torch.float64: 8}


def dtype_bytes(dtype) -> float:
    if isinstance(dtype, numbers.Real) and not isinstance(dtype, bool) and dtype > 0:
        return float(dtype)  # bytes per element given directly (e.g. 0.5625 for 4.5-bit blocks)
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {list(DTYPE_BYTES)} or a positive number of bytes, got {dtype!r}")
    return DTYPE_BYTES[dtype]


def _check_config(config):
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig (e.g. il.MODEL_CONFIGS['gpt2']), got {type(config).__name__}")


def _check_count(name, value, minimum=1):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def matmul_flops(m: int, k: int, n: int) -> int:
    """[m, k] @ [k, n]: m * n dot products of length k, 2 FLOPs per multiply-add."""
    for name, v in (("m", m), ("k", k), ("n", n)):
        _check_count(name, v)
    return 2 * m * k * n


def linear_weights_per_layer(config: ModelConfig) -> int:
    """Weights in one layer's matrices (the ones every token multiplies)."""
    d, kv, ff = config.d_model, config.kv_dim, config.d_ff
    mlp = (3 if config.arch == "llama" else 2) * d * ff
    return 2 * d * d + 2 * d * kv + mlp


def attention_matmul_flops(n_head: int, head_dim: int, n_new: int, n_context: int, batch_size: int = 1) -> int:
    """One layer's scores (q @ k^T) and weighted sum (weights @ v): two matmuls of n_new queries over n_context
    keys per head, 2 FLOPs per multiply-add each."""
    for name, v in (("n_head", n_head), ("head_dim", head_dim), ("n_new", n_new), ("n_context", n_context),
                    ("batch_size", batch_size)):
        _check_count(name, v)
    return 2 * 2 * batch_size * n_head * n_new * n_context * head_dim


def attention_flops(config: ModelConfig, n_new: int, n_context: int, batch_size: int = 1) -> int:
    """Scores (q @ k^T) and the weighted sum (weights @ v) for n_new queries over n_context keys, all layers."""
    _check_config(config)
    return config.n_layer * attention_matmul_flops(config.n_head, config.head_dim, n_new, n_context, batch_size)


def forward_flops(config: ModelConfig, n_new: int, n_context: int | None = None, batch_size: int = 1) -> int:
    """Matmul FLOPs of one forward over ``n_new`` tokens per sequence that attend to ``n_context`` keys.

    Prefill of T tokens: ``n_new = n_context = T``. Decode with the cache at position p:
    ``n_new = 1, n_context = p + 1``. Decode without the cache recomputes everything: ``n_new = n_context = p + 1``.
    """
    _check_config(config)
    n_context = n_new if n_context is None else n_context
    for name, v in (("n_new", n_new), ("n_context", n_context), ("batch_size", batch_size)):
        _check_count(name, v)
    tokens = batch_size * n_new
    dense = 2 * tokens * (config.n_layer * linear_weights_per_layer(config) + config.d_model * config.vocab_size)
    return dense + attention_flops(config, n_new, n_context, batch_size)


def kv_cache_bytes(config: ModelConfig, seq_len: int, batch_size: int = 1, dtype=torch.float16) -> int:
    """Bytes of keys + values for ``batch_size`` sequences of ``seq_len`` tokens:
    2 (K and V) x n_layer x n_kv_head x head_dim x seq_len x batch x bytes per number."""
    _check_config(config)
    _check_count("seq_len", seq_len)
    _check_count("batch_size", batch_size)
    per_token = 2 * config.n_layer * config.n_kv_head * config.head_dim * dtype_bytes(dtype)
    return int(per_token * seq_len * batch_size)


def param_count(config: ModelConfig) -> int:
    """Parameters of ``GPT(config)``, counted without building it."""
    _check_config(config)
    d = config.d_model
    norms = (2 * config.n_layer + 1) * d * (2 if config.arch == "gpt2" else 1)
    per_layer = linear_weights_per_layer(config)
    if config.arch == "gpt2":
        per_layer += 2 * d + 2 * config.kv_dim + config.d_ff + d  # biases of q, o, k, v, up, down
    elif config.qkv_bias:
        per_layer += d + 2 * config.kv_dim
    embeddings = config.vocab_size * d * (1 if config.tie_embeddings else 2)
    positions = config.max_seq_len * d if config.arch == "gpt2" else 0
    return config.n_layer * per_layer + norms + embeddings + positions


def param_bytes(config: ModelConfig, dtype=torch.float16) -> int:
    """Bytes of a model of this shape's parameters stored in ``dtype``, from the config alone (a built
    model's own figure is ``GPT.weight_bytes()``)."""
    return int(param_count(config) * dtype_bytes(dtype))


@dataclass
class StepCount:
    flops: int
    weight_bytes: int   # weights read once per step (the whole batch shares them)
    kv_read_bytes: int  # cached keys/values read
    kv_write_bytes: int

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes

    @property
    def intensity(self) -> float:
        """Arithmetic intensity: FLOPs per byte moved."""
        return self.flops / self.bytes


def step_count(config: ModelConfig, n_new: int, n_context: int | None = None, batch_size: int = 1,
               dtype=torch.float32, kv_dtype=None) -> StepCount:
    """FLOPs and bytes of one forward step (see ``forward_flops`` for n_new / n_context)."""
    n_context = n_new if n_context is None else n_context
    flops = forward_flops(config, n_new, n_context, batch_size)
    kv_dtype = dtype if kv_dtype is None else kv_dtype
    # embedding rows actually read instead of the whole table (unless tied: the head reads it all anyway)
    emb_rows = 0 if config.tie_embeddings else config.vocab_size * config.d_model - min(
        config.vocab_size, batch_size * n_new) * config.d_model
    weights = param_bytes(config, dtype) - int(emb_rows * dtype_bytes(dtype))
    cached = max(0, n_context - n_new)
    kv_read = kv_cache_bytes(config, cached, batch_size, kv_dtype) if cached else 0
    kv_write = kv_cache_bytes(config, n_new, batch_size, kv_dtype)
    return StepCount(flops, weights, kv_read, kv_write)


def cache_equals_weights_context(config: ModelConfig, batch_size: int = 1, dtype=torch.float16) -> int:
    """Context length at which reading the KV cache costs as many bytes per decode step as reading the
    weights: past it, the cache itself is the bigger memory bottleneck (notebook 03)."""
    per_token = kv_cache_bytes(config, 1, batch_size, dtype)
    return -(-param_bytes(config, dtype) // per_token)


def max_concurrent_sequences(config: ModelConfig, seq_len: int, memory_gb: float, dtype=torch.float16) -> int:
    """How many sequences of ``seq_len`` tokens fit in an accelerator's memory beside the weights (0 if the
    weights alone do not fit). GB = 10^9 bytes, as accelerator memory is advertised."""
    if not isinstance(memory_gb, numbers.Real) or memory_gb <= 0:
        raise ValueError(f"memory_gb must be a positive number, got {memory_gb!r}")
    free = memory_gb * 1e9 - param_bytes(config, dtype)
    return max(0, int(free // kv_cache_bytes(config, seq_len, 1, dtype)))
