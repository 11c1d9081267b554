"""What the engine hands back, with vLLM's names and fields (vLLM's ``outputs.py``; notebook 06):
``RequestOutput`` per request, holding one ``CompletionOutput``, and the request's ``RequestMetrics``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RequestMetrics:
    """Timestamps on the engine's clock (seconds), as vLLM's ``RequestMetrics``, and what they imply."""
    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None
    num_output_tokens: int = 0
    num_preemptions: int = 0

    @property
    def ttft(self) -> float:   # time to first token, queueing included
        return self.first_token_time - self.arrival_time if self.first_token_time is not None else float("nan")

    @property
    def tpot(self) -> float:   # time per output token after the first (mean inter-token latency)
        n = self.num_output_tokens
        return (self.last_token_time - self.first_token_time) / (n - 1) if n > 1 else 0.0

    @property
    def e2e(self) -> float:    # end-to-end latency, arrival to finish
        return self.finished_time - self.arrival_time if self.finished_time is not None else float("nan")


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list
    finish_reason: str | None      # "stop", "length", "abort"; None while running
    stop_reason: object = None     # the stop string or stop token id that ended it


@dataclass
class RequestOutput:
    """What the engine returns for one request (vLLM's fields; ``error`` says why an aborted one ended)."""
    request_id: object
    prompt: object
    prompt_token_ids: list
    outputs: list                  # one CompletionOutput
    finished: bool
    metrics: RequestMetrics
    num_cached_tokens: int = 0     # prompt tokens found in the prefix cache
    error: str | None = None
