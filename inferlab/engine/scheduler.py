"""The scheduler: which requests run in the next step, and how many tokens each (notebook 06).

Continuous batching: requests join as soon as there is room and leave as soon as they finish, instead of
a batch waiting for its longest member. A step has a token budget (``max_num_batched_tokens``) and seats
(``max_num_seqs``):

1. Running requests first, oldest first: 1 token to decode, or the rest of the prompt, as much as the
   budget allows (*chunked prefill*). When no block is free, the newest running request is *preempted*:
   its blocks are taken back and it returns to the front of the queue, to recompute later.
2. Then waiting requests, first come first served, while seats, budget and blocks last; blocks found in
   the prefix cache are shared, not recomputed.

The scheduler is the only writer of a request's state, computed-token count and output tokens.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .block_manager import BlockManager
from .request import Request, RequestState


@dataclass
class SchedulerOutput:
    """One step: ``decode`` rows compute the one newest token of a request that was already running;
    ``prefill`` rows compute several tokens, or are new in this step. Both are lists of (request, tokens).
    The engine adds when the step started and how long it took (seconds)."""
    decode: list = field(default_factory=list)
    prefill: list = field(default_factory=list)
    preempted: list = field(default_factory=list)
    start: float = 0.0
    duration: float = 0.0

    @property
    def rows(self) -> list:
        return self.decode + self.prefill


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.bm = block_manager
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def _preempt(self, victim: Request, out: SchedulerOutput) -> None:
        self.running.remove(victim)
        self.bm.free(victim)   # recompute later: its tokens stay, its keys/values are dropped
        victim.num_computed_tokens, victim.state = 0, RequestState.PREEMPTED
        victim.metrics.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(victim)
        out.preempted.append(victim)

    def schedule(self, now: float) -> SchedulerOutput:
        out, budget = SchedulerOutput(), self.max_num_batched_tokens

        # 1. running requests: decode one token, or continue a chunked prefill
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            num_new = min(req.num_tokens - req.num_computed_tokens, budget)
            while not self.bm.can_allocate(req, num_new) and req.state is RequestState.RUNNING:
                self._preempt(self.running[-1], out)   # the newest gives its blocks back (maybe req itself)
            if req.state is not RequestState.RUNNING:
                break
            self.bm.allocate(req, num_new)
            self.bm.cache_full_blocks(req, req.num_computed_tokens + num_new)
            (out.decode if num_new == 1 else out.prefill).append((req, num_new))
            budget -= num_new
            i += 1

        # 2. waiting (and preempted) requests, first come first served
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and not out.preempted:
            req = self.waiting[0]
            hits = self.bm.cached_prefix(req.token_ids)
            num_new = min(req.num_tokens - len(hits) * self.bm.block_size, budget)
            if not self.bm.can_allocate(req, num_new, hits):
                break   # no room now: it keeps its place at the head of the queue
            self.waiting.popleft()
            cached = self.bm.allocate(req, num_new, hits)
            req.num_computed_tokens = cached
            if req.metrics.first_scheduled_time is None:
                req.metrics.first_scheduled_time, req.num_cached_tokens = now, cached
            self.bm.cache_full_blocks(req, cached + num_new)
            req.state = RequestState.RUNNING
            self.running.append(req)
            out.prefill.append((req, num_new))
            budget -= num_new
        return out

    def postprocess(self, out: SchedulerOutput, picks: dict, now: float) -> list[Request]:
        """After the model ran: count the computed tokens, append each picked token (``picks``: request ->
        token id, or the exception that picking it raised), finish what is done. Returns the requests that
        got a token or ended."""
        for req, num_new in out.rows:
            req.num_computed_tokens += num_new
        for req, token in picks.items():
            if isinstance(token, Exception):
                self.finish(req, now, "abort", f"picking its next token failed: {token!r}")
                continue
            req.append_token(token, now)
            if req.finish_reason is not None:
                self.finish(req, now, req.finish_reason)
        return list(picks)

    def finish(self, req: Request, now: float, reason: str, error: str | None = None) -> None:
        """End ``req`` (done, or aborted with ``error``) and free its blocks."""
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.bm.free(req)
        req.state, req.finish_reason, req.error = RequestState.FINISHED, reason, error
        req.metrics.finished_time = now
