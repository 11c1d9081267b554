"""Requests and their sampling parameters (notebook 06).

A ``Request`` is one prompt travelling through the engine: it waits, runs (prefill, then decode),
may be preempted and resumed, and finishes (or is rejected with a reason). It carries its own
``SamplingParams``, its tokens, its place in the KV cache (the block table) and its timestamps.
"""
from __future__ import annotations

import codecs
import enum
import numbers
from dataclasses import dataclass, field

from ..generate import _check_stop, token_bytes
from ..sampling import check_sampling_args, make_generator


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each token of one request: the names of vLLM's ``SamplingParams``.

    ``temperature=0`` is greedy; ``max_tokens`` counts generated tokens; ``stop`` is a string (or list)
    that ends the answer, cut before it; ``seed`` makes a sampled answer reproducible.
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    max_tokens: int = 16
    seed: int | None = None
    stop: str | list | None = None

    def __post_init__(self):
        check_sampling_args(self.temperature, self.top_k, self.top_p)
        if not isinstance(self.max_tokens, numbers.Integral) or isinstance(self.max_tokens, bool):
            raise TypeError(f"max_tokens must be an int >= 1, got {type(self.max_tokens).__name__}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 (tokens to generate), got {self.max_tokens}")
        make_generator(self.seed, "cpu")  # raises TypeError for a seed that is not an int
        object.__setattr__(self, "stop", tuple(_check_stop(self.stop)) or None)


class RequestState(enum.Enum):
    WAITING = "waiting"        # queued, no KV cache yet
    RUNNING = "running"        # holds blocks; prefilling or decoding
    PREEMPTED = "preempted"    # blocks taken back; back in the queue, will recompute its tokens
    FINISHED = "finished"      # done: finish_reason says why ("length", "stop" or "rejected")


@dataclass
class RequestMetrics:
    """Timestamps on the engine's clock (seconds) and what they imply."""
    arrival: float = 0.0
    first_scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None
    token_times: list = field(default_factory=list)
    num_prefix_cached_tokens: int = 0   # prompt tokens found in the prefix cache (first schedule)
    num_preemptions: int = 0

    @property
    def ttft_s(self) -> float:
        """Time to first token: from arrival (queueing included) to the first generated token."""
        return self.first_token - self.arrival if self.first_token is not None else float("nan")

    @property
    def itl_s(self) -> float:
        """Mean inter-token latency: time between consecutive generated tokens."""
        t = self.token_times
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else 0.0

    @property
    def e2e_s(self) -> float:
        """End-to-end latency: arrival to the last token."""
        return self.finished - self.arrival if self.finished is not None else float("nan")

    @property
    def queue_s(self) -> float:
        return self.first_scheduled - self.arrival if self.first_scheduled is not None else float("nan")


class Request:
    """One prompt in the engine. ``tokens = prompt_ids + output_ids``; the first ``num_computed``
    of them have keys/values in the cache, in the blocks listed by ``block_table``."""

    def __init__(self, request_id, prompt, prompt_ids: list[int], params: SamplingParams, tok, arrival: float = 0.0):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_ids = list(prompt_ids)
        self.output_ids: list[int] = []
        self.params = params
        self.state = RequestState.WAITING
        self.block_table: list[int] = []
        self.num_computed = 0          # tokens whose keys/values are in the cache
        self.finish_reason: str | None = None
        self.error: str | None = None  # why it was rejected
        self.metrics = RequestMetrics(arrival=arrival)
        self.generator = make_generator(params.seed, "cpu")
        self._tok = tok
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self._emitted = 0

    def __repr__(self):
        return (f"Request({self.request_id!r}, {self.state.value}, prompt {len(self.prompt_ids)} + "
                f"{len(self.output_ids)} out, computed {self.num_computed}, blocks {self.block_table})")

    @property
    def tokens(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def max_kv_tokens(self) -> int:
        """Most tokens this request ever stores: the last generated token is never fed back."""
        return len(self.prompt_ids) + self.params.max_tokens - 1

    @property
    def is_finished(self) -> bool:
        return self.state is RequestState.FINISHED

    def append_token(self, token: int, now: float) -> str:
        """Record a generated token; return the new text it completes (held back while it could
        still start a stop string). Sets ``finish_reason`` when the request is done."""
        if self.metrics.first_token is None:
            self.metrics.first_token = now
        self.metrics.token_times.append(now)
        self.output_ids.append(token)
        last = len(self.output_ids) >= self.params.max_tokens
        self.text += self._decoder.decode(token_bytes(self._tok, token), final=last)
        stops = self.params.stop or []
        hit = min((self.text.find(s) for s in stops if s in self.text), default=-1)
        if hit >= 0:
            self.text, self.finish_reason, last = self.text[:hit], "stop", True
        elif last:
            self.finish_reason = "length"
        holdback = max((len(s) for s in stops), default=1) - 1
        ready = len(self.text) if last else max(self._emitted, len(self.text) - holdback)
        delta, self._emitted = self.text[self._emitted:ready], ready
        return delta


@dataclass
class RequestOutput:
    """What ``Engine.generate`` returns per prompt (vLLM's name). ``tokens``: generated ids."""
    request_id: object
    prompt: object
    prompt_tokens: list
    text: str
    tokens: list
    finish_reason: str          # "length", "stop" or "rejected"
    metrics: RequestMetrics
    error: str | None = None    # the reason, when rejected

    @property
    def ttft_s(self) -> float:
        return self.metrics.ttft_s

    @property
    def itl_s(self) -> float:
        return self.metrics.itl_s

    @property
    def e2e_s(self) -> float:
        return self.metrics.e2e_s

    @classmethod
    def from_request(cls, req: Request) -> "RequestOutput":
        return cls(req.request_id, req.prompt, req.prompt_ids, req.text, list(req.output_ids), req.finish_reason,
                   req.metrics, req.error)


@dataclass
class TokenEvent:
    """One streamed token: which request, the id, the new text it completes, and whether it was the last."""
    request_id: object
    token_id: int
    text: str
    finished: bool
