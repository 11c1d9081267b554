"""Real-shape models with random weights, built in about a second (notebooks 04-05 and the benchmarks).

A model of a published shape (``il.MODEL_CONFIGS``) times like the trained one: the speed of a step depends
on the shapes and the bytes, not on the values. Initialising hundreds of millions of weights one by one takes
seconds; ``random_model`` builds the module on the meta device and fills each weight from one random block.
"""
from __future__ import annotations

import math

import torch

from ..core.config import ModelConfig
from ..core.model import GPT


def random_tensor(shape, dtype=torch.float32, seed: int = 0, block: int = 65537) -> torch.Tensor:
    """Normal(0, 0.02) numbers for a weight of ``shape``: one random block tiled over the tensor (drawing
    hundreds of millions of numbers takes seconds; copying a block a fraction of one). Times like any weight.
    The block's length is prime, so no two rows are the same numbers: with 2**16, a multiple of 256 rows of
    768, gpt2's 50257-row embedding (the tied head) held 257 distinct rows, and every greedy pick was a tie
    that rounding decided (cached and uncached decoding then disagreed)."""
    numel = math.prod(shape)
    pattern = torch.randn(min(block, numel), generator=torch.Generator().manual_seed(seed)).mul_(0.02).to(dtype)
    out = torch.empty(numel, dtype=dtype)
    full = numel // pattern.numel() * pattern.numel()
    out[:full].view(-1, pattern.numel()).copy_(pattern.expand(full // pattern.numel(), -1))
    out[full:].copy_(pattern[:numel - full])
    return out.view(shape)


def random_model(config: ModelConfig, dtype=torch.float32, seed: int = 0, weights: dict | None = None) -> GPT:
    """``GPT(config)`` with random weights, built in about a second even for billions of bytes: the module is
    made on the meta device (no memory, no init) and each weight is a ``random_tensor``. ``weights``: a dict
    of tensors by parameter name, reused where the shape matches and filled with the new ones, so models that
    differ in one part share the rest (notebook 05's grouped-query sweep). Free it with ``del model; gc.collect()``."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    weights = {} if weights is None else weights
    with torch.device("meta"):
        shapes = {name: p.shape for name, p in GPT(config).named_parameters()}   # a tied weight is listed once
    state = {}
    for name, shape in shapes.items():
        w = weights.get(name)
        if w is None or w.shape != shape or w.dtype != dtype:
            w = weights[name] = (random_tensor(shape, dtype, seed) if len(shape) > 1 and not name.endswith("bias")
                                 else torch.zeros(shape, dtype=dtype) if name.endswith("bias")
                                 else torch.ones(shape, dtype=dtype))
        state[name] = w
    return GPT.from_state_dict(config, state)
