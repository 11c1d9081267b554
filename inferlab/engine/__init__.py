"""A miniature inference engine in plain PyTorch (notebook 06), one idea per module, as in nano-vllm:

``request`` (SamplingParams, Request), ``outputs`` (RequestOutput, as vLLM's), ``block_manager`` (blocks, reference counts, prefix
cache), ``paged_cache`` (the KV pool, attention through block tables), ``scheduler`` (continuous batching,
chunked prefill, preemption), ``model_runner`` (the forward passes), ``engine`` (the loop).

Around the engine, not in it: ``serving`` (workloads, simulated arrivals and clock, statistics, snapshots
for pictures) and ``baselines`` (one request at a time, static batching at the same KV memory).
"""
from .engine import Engine
from .outputs import CompletionOutput, RequestOutput
from .request import SamplingParams

__all__ = ["Engine", "SamplingParams", "RequestOutput", "CompletionOutput"]
