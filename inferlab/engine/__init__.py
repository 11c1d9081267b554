"""A miniature inference engine in plain PyTorch (notebook 06), one idea per module:

``request`` (Request, SamplingParams, states), ``block_manager`` (blocks, reference counts, prefix hashes),
``paged_cache`` (the KV pool and attention through block tables), ``scheduler`` (continuous batching,
chunked prefill, preemption), ``runner`` (the forward pass), ``metrics``, ``engine`` (the loop),
``baselines`` (one request at a time, static batching).
"""
from .engine import Engine
from .request import RequestOutput, RequestState, SamplingParams, TokenEvent

__all__ = ["Engine", "SamplingParams", "RequestOutput", "RequestState", "TokenEvent"]
