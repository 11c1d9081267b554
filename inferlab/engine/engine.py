"""The engine: requests in, answers out, many at a time (notebook 06).

``Engine`` ties the pieces together, the way vLLM's ``LLM`` does::

    engine = il.Engine(model, tok, block_size=8, max_num_seqs=32, max_num_batched_tokens=512)
    outs = engine.generate(["The list", "A dictionary"], il.SamplingParams(max_tokens=20))

Each ``step()``: the scheduler picks requests and token counts, the runner computes them over the paged
KV cache, new tokens are appended, finished requests leave and free their blocks, and the step is recorded
in ``engine.trace``. ``add_request`` and ``step`` can also be driven by hand, so requests can arrive while
others run.
"""
from __future__ import annotations

import numbers
import time

from ..generate import encode_prompt
from ..progress import progress
from .block_manager import BlockManager
from .metrics import StepRecord, run_stats
from .paged_cache import KVPool
from .request import Request, RequestOutput, RequestState, SamplingParams, TokenEvent
from .runner import ModelRunner
from .scheduler import Scheduler

DEFAULT_KV_CACHE_MEMORY_BYTES = 64 * 2**20
# Tokens per KV block. vLLM uses 16, a size its GPU kernels read well. Here every step gathers whole blocks
# (plain PyTorch, no kernel reading them in place), so smaller blocks gather less padding and share more of
# a prefix: on the 2-core CPU this course was built on, blocks of 8 ran benchmarks/engine.py's workload 5%
# faster than 16 (5 of 5 paired runs) and raised its shared-prefix hit rate from 71% to 75%; blocks of 4 were
# slower again (more, smaller copies).
DEFAULT_BLOCK_SIZE = 8


def _positive_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


class Engine:
    """A miniature LLM inference engine: continuous batching over a paged KV cache with prefix caching,
    preemption by recompute and chunked prefill, in plain PyTorch.

    The KV pool holds ``num_blocks`` blocks of ``block_size`` tokens; with ``num_blocks=None`` it is as many
    as fit in ``kv_cache_memory_bytes`` (default 64 MiB). ``max_num_seqs``: most requests running at once;
    ``max_num_batched_tokens``: most tokens computed in one step (the budget prefill chunks share).
    """

    def __init__(self, model, tok, block_size: int = DEFAULT_BLOCK_SIZE, num_blocks: int | None = None,
                 max_num_seqs: int = 32, max_num_batched_tokens: int = 512, enable_prefix_caching: bool = True,
                 kv_cache_memory_bytes: int | None = None):
        if not hasattr(model, "config") or not callable(model):
            raise TypeError(f"model must be an il.GPT, got {type(model).__name__}")
        if not (hasattr(tok, "encode") and hasattr(tok, "vocab")):
            raise TypeError(f"tok must be an il.BPETokenizer, got {type(tok).__name__}")
        self.model, self.tok, self.config = model, tok, model.config
        self.block_size = _positive_int("block_size", block_size)
        self.max_num_seqs = _positive_int("max_num_seqs", max_num_seqs)
        self.max_num_batched_tokens = _positive_int("max_num_batched_tokens", max_num_batched_tokens)
        per_block = KVPool.bytes_per_block(self.config, self.block_size, model.dtype)
        if num_blocks is None:
            budget = DEFAULT_KV_CACHE_MEMORY_BYTES if kv_cache_memory_bytes is None else \
                _positive_int("kv_cache_memory_bytes", kv_cache_memory_bytes)
            num_blocks = budget // per_block
            if num_blocks < 1:
                raise ValueError(f"kv_cache_memory_bytes={budget} is smaller than one KV block ({per_block} bytes "
                                 f"for {self.block_size} tokens of this model); give at least {per_block}")
        elif kv_cache_memory_bytes is not None:
            raise ValueError("give num_blocks or kv_cache_memory_bytes, not both")
        self.num_blocks = _positive_int("num_blocks", num_blocks)
        self.enable_prefix_caching = bool(enable_prefix_caching)
        self.pool = KVPool(self.config, self.num_blocks, self.block_size, model.dtype, model.device)
        self.block_manager = BlockManager(self.num_blocks, self.block_size, self.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, self.max_num_seqs, self.max_num_batched_tokens)
        self.runner = ModelRunner(model, self.pool)
        self.requests: dict = {}       # every request ever added, by id
        self.trace: list[StepRecord] = []
        self.last_stats = None         # RunStats of the last generate()
        self._next_id = 0
        self._t0 = time.perf_counter()
        self._skipped = 0.0            # idle time jumped over while waiting for the next arrival

    def __repr__(self):
        return (f"Engine({self.config.name}, {self.num_blocks} blocks x {self.block_size} tokens = "
                f"{self.num_blocks * self.block_size} KV slots ({self.pool.bytes_allocated / 2**20:.1f} MiB), "
                f"max_num_seqs={self.max_num_seqs}, max_num_batched_tokens={self.max_num_batched_tokens}, "
                f"prefix caching {'on' if self.enable_prefix_caching else 'off'})")

    # --- the clock ------------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds on the engine's clock: wall time, minus idle waits for requests that had not arrived."""
        return time.perf_counter() - self._t0 + self._skipped

    # --- requests ---------------------------------------------------------------------------------
    def _make_request(self, prompt, params, request_id=None) -> Request:
        if params is None:
            params = SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"sampling params must be an il.SamplingParams, got {type(params).__name__}")
        ids = encode_prompt(self.tok, prompt, self.config.max_seq_len)
        if len(ids) + params.max_tokens > self.config.max_seq_len:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) exceeds the model's "
                             f"context max_seq_len={self.config.max_seq_len}; ask for at most "
                             f"{self.config.max_seq_len - len(ids)} tokens")
        if max(ids) >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, vocab_size={self.config.vocab_size}), got {max(ids)}")
        if request_id is None:
            request_id = self._next_id
            self._next_id += 1
        if request_id in self.requests:
            raise ValueError(f"request_id {request_id!r} is already in use")
        return Request(request_id, prompt, ids, params, self.tok)

    def _admit(self, req: Request) -> None:
        req.metrics.arrival = self.now()
        self.requests[req.request_id] = req
        need = self.block_manager.blocks_needed(req.max_kv_tokens)
        if need > self.num_blocks:   # could never run, even alone: reject now rather than stall forever
            req.state, req.finish_reason = RequestState.FINISHED, "rejected"
            req.error = (f"needs {need} KV blocks (prompt {len(req.prompt_ids)} + max_tokens {req.params.max_tokens} "
                         f"tokens in blocks of {self.block_size}) but the pool has only {self.num_blocks}; "
                         f"raise num_blocks or kv_cache_memory_bytes, or lower max_tokens")
            req.metrics.finished = req.metrics.arrival
        else:
            self.scheduler.add(req)

    def add_request(self, prompt, params: SamplingParams | None = None, request_id=None):
        """Queue one request (it joins the running batch at the next ``step()``); return its id.
        Bad input raises; a request the KV pool could never hold is finished as ``"rejected"`` with a reason."""
        req = self._make_request(prompt, params, request_id)
        self._admit(req)
        return req.request_id

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    def output(self, request_id) -> RequestOutput:
        return RequestOutput.from_request(self.requests[request_id])

    # --- one step ---------------------------------------------------------------------------------
    def step(self) -> list[TokenEvent]:
        """Schedule, run the model once over the paged cache, append the new tokens; return them as events."""
        start = self.now()
        out = self.scheduler.schedule(start)
        if not out.scheduled:
            if self.scheduler.waiting and not self.scheduler.running:   # cannot happen: requests that fit are admitted
                raise RuntimeError(f"the scheduler admitted nothing with an empty batch: {self.scheduler.waiting[0]}")
            return []
        picks = self.runner.run(out)
        for s in out.scheduled:   # blocks filled by this step, now computed, join the prefix cache
            self.block_manager.register_full_blocks(s.request, s.request.num_computed)
        end = self.now()
        self.trace.append(StepRecord(
            len(self.trace), start, end - start,
            [(s.request.request_id, "prefill" if s.is_prefill else "decode", s.num_new) for s in out.scheduled],
            self.max_num_batched_tokens, self.block_manager.num_used, self.num_blocks, self.block_size,
            self._tokens_stored(), [r.request_id for r in out.preempted]))
        events = []
        for s in out.scheduled:
            req = s.request
            if req not in picks:
                continue
            text = req.append_token(picks[req], end)
            if req.finish_reason is not None:
                req.metrics.finished = end
                self.scheduler.finish(req)
            events.append(TokenEvent(req.request_id, req.output_ids[-1], text, req.is_finished))
        return events

    def _tokens_stored(self) -> int:
        """Distinct tokens with keys/values in the pool (a shared block counts once). Only full blocks are ever
        shared, so every extra table holding a block counted ``block_size`` tokens twice."""
        blocks, computed, held = set(), 0, 0
        for req in self.scheduler.running:
            blocks.update(req.block_table)
            computed += req.num_computed
            held += len(req.block_table)
        return computed - self.block_size * (held - len(blocks))

    # --- whole runs -------------------------------------------------------------------------------
    def _requests_for(self, prompts, sampling_params):
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError("prompts must be a non-empty list of prompts (str or lists of token ids)")
        if isinstance(sampling_params, (list, tuple)):
            if len(sampling_params) != len(prompts):
                raise ValueError(f"got {len(sampling_params)} SamplingParams for {len(prompts)} prompts; "
                                 f"give one, or one per prompt")
        else:
            sampling_params = [sampling_params] * len(prompts)
        return [self._make_request(p, sp) for p, sp in zip(prompts, sampling_params)]  # all checked before any runs

    @staticmethod
    def _check_arrivals(arrival_times, n):
        if arrival_times is None:
            return [0.0] * n
        if not isinstance(arrival_times, (list, tuple)) or len(arrival_times) != n or any(
                not isinstance(t, numbers.Real) or isinstance(t, bool) or not t >= 0 for t in arrival_times):
            raise ValueError("arrival_times must be one number >= 0 (seconds after the start) per prompt")
        return list(arrival_times)

    def _drive(self, reqs, arrival_times):
        """Add each request when it arrives (seconds after the start), step until all are done; yield events."""
        order = sorted(range(len(reqs)), key=lambda i: arrival_times[i])
        start, nxt = self.now(), 0
        while nxt < len(order) or any(not r.is_finished for r in reqs):
            while nxt < len(order) and arrival_times[order[nxt]] <= self.now() - start:
                self._admit(reqs[order[nxt]])
                nxt += 1
            if not self.scheduler.has_unfinished():
                if nxt < len(order):   # idle until the next arrival: jump the clock instead of sleeping
                    self._skipped += max(0.0, start + arrival_times[order[nxt]] - self.now())
                continue
            yield from self.step()

    def generate(self, prompts, sampling_params: SamplingParams | list | None = None, arrival_times=None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """Serve every prompt; return one ``RequestOutput`` per prompt, in prompt order.

        ``sampling_params``: one ``SamplingParams`` for all, or a list with one per prompt (default: greedy,
        16 tokens). ``arrival_times``: seconds after the start at which each request arrives (default: all
        at once). Statistics of the run are in ``engine.last_stats``."""
        reqs = self._requests_for(prompts, sampling_params)
        arrival_times = self._check_arrivals(arrival_times, len(reqs))
        first_step, start = len(self.trace), self.now()
        bm = self.block_manager
        q0, h0, p0 = bm.prefix_queries, bm.prefix_hits, self.scheduler.num_preemptions
        bar = progress(total=len(reqs), desc="requests", unit="request", enabled=use_tqdm)
        for event in self._drive(reqs, arrival_times):
            if event.finished:
                bar.update(1)
        bar.close()
        outputs = [RequestOutput.from_request(r) for r in reqs]
        self.last_stats = run_stats(outputs, self.trace[first_step:], self.now() - start,
                                    self.scheduler.num_preemptions - p0, bm.prefix_queries - q0, bm.prefix_hits - h0)
        return outputs

    def stream(self, prompts, sampling_params=None, arrival_times=None):
        """Like ``generate``, but return an iterator of ``TokenEvent``, one per token as soon as it is picked.
        Bad input raises here, before anything runs."""
        reqs = self._requests_for(prompts, sampling_params)
        return self._drive(reqs, self._check_arrivals(arrival_times, len(reqs)))

    # --- pictures ---------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """The state of the KV pool now: per physical block its reference count, whether it holds a cached
        prefix, which running requests use it and how many tokens it holds; and every running block table."""
        owners = {b: [] for b in range(self.num_blocks)}
        fill = [0] * self.num_blocks
        tables = {}
        for req in self.scheduler.running:
            tables[req.request_id] = list(req.block_table)
            for i, b in enumerate(req.block_table):
                owners[b].append(req.request_id)
                fill[b] = max(fill[b], min(self.block_size, req.num_computed - i * self.block_size))
        blocks = [{"block": blk.block_id, "ref_count": blk.ref_count, "cached": blk.hash is not None,
                   "owners": owners[blk.block_id], "tokens": fill[blk.block_id] if blk.ref_count else
                   (self.block_size if blk.hash is not None else 0)} for blk in self.block_manager.blocks]
        return {"block_size": self.block_size, "num_blocks": self.num_blocks, "blocks": blocks, "tables": tables}
