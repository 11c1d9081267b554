"""The scheduler: which requests run in the next step, and how many tokens each (notebook 06).

Continuous batching: every step, the scheduler looks again. Requests join as soon as there is room
and leave as soon as they finish, instead of a batch waiting for its longest member.

One step has a token budget (``max_num_batched_tokens``) and a seat limit (``max_num_seqs``):

1. Running requests first, in arrival order: a decoding request needs 1 token, a request still in its
   prefill the rest of its prompt (or as much as the budget allows: *chunked prefill*). If the KV pool
   has no free block for it, the most recently admitted running request is *preempted*: its blocks
   are taken back and it returns to the front of the queue, to recompute its tokens later.
2. Then waiting requests, first come first served, while seats, budget and blocks last. A request
   first looks up its prompt in the prefix cache: blocks found there are shared, not recomputed.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .block_manager import BlockManager
from .request import Request, RequestState


@dataclass
class ScheduledRequest:
    request: Request
    num_new: int       # tokens computed for it this step
    is_prefill: bool   # computing prompt (or recomputed) tokens; False: decoding one new token


@dataclass
class SchedulerOutput:
    scheduled: list = field(default_factory=list)   # ScheduledRequest, in batch order
    preempted: list = field(default_factory=list)   # requests preempted this step

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new for s in self.scheduled)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.bm = block_manager
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def _preempt(self, victim: Request, out: SchedulerOutput) -> None:
        self.running.remove(victim)
        self.bm.free(victim)   # recompute later: tokens stay, keys/values are dropped
        victim.state = RequestState.PREEMPTED
        victim.metrics.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(victim)
        out.preempted.append(victim)

    def _register(self, req: Request, num_new: int) -> None:
        """Publish the blocks this step fills to the prefix cache already now, so a request admitted later in
        this step can share them. Only for prefill rows: they run first, and each layer writes every row's new
        keys/values before any row reads. Blocks a decode row fills are published after the step."""
        self.bm.register_full_blocks(req, req.num_computed + (num_new if num_new > 1 else 0))

    def schedule(self, now: float) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens

        # 1. running requests: decode one token, or continue a chunked prefill
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            num_new = min(req.num_tokens - req.num_computed, budget)
            while not self.bm.can_allocate(req, num_new):
                self._preempt(self.running[-1], out)   # the newest running request gives its blocks back
                if req.state is RequestState.PREEMPTED:
                    break
            if req.state is RequestState.PREEMPTED:
                break
            self.bm.allocate(req, num_new)
            self._register(req, num_new)
            out.scheduled.append(ScheduledRequest(req, num_new, req.num_computed < req.num_tokens - 1))
            budget -= num_new
            i += 1

        # 2. waiting (and preempted) requests, first come first served
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and not out.preempted:
            req = self.waiting[0]
            hits = self.bm.lookup(req.tokens)
            num_new = min(req.num_tokens - len(hits) * self.bm.block_size, budget)
            if not self.bm.can_allocate(req, num_new, hits):
                break   # no room now: it keeps its place at the head of the queue
            self.waiting.popleft()
            self.bm.take_hits(req, hits)
            self.bm.allocate(req, num_new)
            self._register(req, num_new)
            if req.metrics.first_scheduled is None:
                req.metrics.first_scheduled = now
                req.metrics.num_prefix_cached_tokens = req.num_computed
            if req.state is RequestState.WAITING:   # resumed requests were counted the first time
                self.bm.prefix_queries += req.num_tokens
                self.bm.prefix_hits += req.num_computed
            req.state = RequestState.RUNNING
            self.running.append(req)
            out.scheduled.append(ScheduledRequest(req, num_new, True))
            budget -= num_new
        return out

    def finish(self, req: Request) -> None:
        self.running.remove(req)
        self.bm.free(req)
        req.state = RequestState.FINISHED
