"""A request, with vLLM's names (notebook 06): ``SamplingParams`` and ``Request`` (one prompt travelling
through the engine). Who writes a request: the scheduler (state, computed tokens, tokens picked) and the
block manager (block table).
"""
from __future__ import annotations

import enum
import numbers
from dataclasses import dataclass

from ..core.generate import TextAssembler, check_stop
from ..core.sampling import check_sampling_args, make_generator
from ..validate import positive_int
from .outputs import CompletionOutput, RequestMetrics, RequestOutput


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each token of one request (vLLM's ``SamplingParams``, a subset).

    ``max_tokens``: tokens to generate at most; ``stop``: a string (or list) that ends the answer, which is
    cut before it; ``stop_token_ids``: token ids that end it (kept in ``token_ids``, not shown in ``text``);
    ``seed``: a reproducible draw. Defaults that differ from vLLM's: ``temperature=0.0`` (greedy; vLLM 1.0),
    and the filters are off as ``top_k=None`` and ``top_p=None`` (vLLM: ``top_k=0``/``-1``, ``top_p=1.0``).
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    max_tokens: int = 16
    seed: int | None = None
    stop: str | list | None = None
    stop_token_ids: list | None = None

    def __post_init__(self):
        check_sampling_args(self.temperature, self.top_k, self.top_p)
        positive_int("max_tokens", self.max_tokens)
        make_generator(self.seed, "cpu")  # raises TypeError for a seed that is not an int
        object.__setattr__(self, "stop", tuple(check_stop(self.stop)) or None)
        ids = self.stop_token_ids
        if ids is not None and (not isinstance(ids, (list, tuple, set)) or not all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in ids)):
            raise ValueError(f"stop_token_ids must be a list of token ids (ints >= 0), got {ids!r}")
        object.__setattr__(self, "stop_token_ids", tuple(int(i) for i in ids) if ids else None)


class RequestState(enum.Enum):
    WAITING = "waiting"        # queued, no KV cache yet
    RUNNING = "running"        # holds blocks; prefilling or decoding
    PREEMPTED = "preempted"    # blocks taken back; back in the queue, will recompute its tokens
    FINISHED = "finished"      # done: finish_reason says why ("stop", "length" or "abort")


class Request:
    """One prompt in the engine. ``token_ids`` is the prompt then the output; the first
    ``num_computed_tokens`` of them have keys/values in the blocks listed by ``block_table``."""

    def __init__(self, request_id, prompt, prompt_token_ids: list[int], params: SamplingParams, tok,
                 arrival_time: float, device="cpu"):
        self.request_id, self.prompt, self.params = request_id, prompt, params
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(self.token_ids)
        self.state = RequestState.WAITING
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.block_table: list[int] = []
        self.finish_reason = self.stop_reason = self.error = None
        self.metrics = RequestMetrics(arrival_time)
        self.generator = make_generator(params.seed, device)
        self._text = TextAssembler(tok, params.stop)

    def __repr__(self):
        return (f"Request({self.request_id!r}, {self.state.value}, {self.num_prompt_tokens} prompt + "
                f"{self.num_output_tokens} out, computed {self.num_computed_tokens}, blocks {self.block_table})")

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    def append_token(self, token_id: int, now: float) -> None:
        """Record a generated token; set ``finish_reason`` when it ends the request."""
        m = self.metrics
        if m.first_token_time is None:
            m.first_token_time = now
        m.last_token_time, m.num_output_tokens = now, m.num_output_tokens + 1
        self.token_ids.append(token_id)
        if token_id in (self.params.stop_token_ids or ()):   # a stop token ends it and is not shown as text
            self.finish_reason, self.stop_reason = "stop", token_id
            return
        last = self.num_output_tokens >= self.params.max_tokens
        self._text.add(token_id, last)
        if self._text.stopped:
            self.finish_reason, self.stop_reason = "stop", self._text.stop_string
        elif last:
            self.finish_reason = "length"

    def output(self) -> RequestOutput:
        finished = self.state is RequestState.FINISHED
        text = self._text.text if finished else self._text.text[:self._text.shown]
        completion = CompletionOutput(0, text, self.token_ids[self.num_prompt_tokens:], self.finish_reason,
                                      self.stop_reason)
        return RequestOutput(self.request_id, self.prompt, self.token_ids[:self.num_prompt_tokens], [completion],
                             finished, self.metrics, self.num_cached_tokens, self.error)
