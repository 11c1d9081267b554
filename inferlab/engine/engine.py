"""The engine: requests in, answers out, many at a time (notebook 06), with vLLM's names::

    engine = il.Engine(model, tok)
    outputs = engine.generate(["The list", "A dictionary"], il.SamplingParams(max_tokens=20))

Each ``step()``: the scheduler picks requests and token counts, the runner computes them and picks next
tokens, the scheduler appends them and finishes what is done. ``add_request`` and ``step`` can be driven
by hand, so requests arrive while others run (``engine.serving`` does that with simulated arrivals).
"""
from __future__ import annotations

import itertools
import math
import numbers
import time

from ..core.generate import encode_prompt
from ..progress import progress
from ..validate import boolean, positive_int
from .block_manager import BlockManager
from .model_runner import ModelRunner
from .outputs import RequestOutput
from .paged_cache import KVPool
from .request import Request, SamplingParams
from .scheduler import Scheduler, SchedulerOutput

DEFAULT_BLOCK_SIZE = 16                  # tokens per KV block, vLLM's default
DEFAULT_KV_CACHE_MEMORY_BYTES = 64 * 2**20


class Engine:
    """Continuous batching over a paged KV cache, with prefix caching, preemption and chunked prefill.

    The KV pool holds ``num_blocks`` blocks of ``block_size`` tokens, or as many as fit in
    ``kv_cache_memory_bytes`` (default 64 MiB). ``max_num_seqs``: most requests running at once;
    ``max_num_batched_tokens``: most tokens computed in one step. ``clock``: seconds for timestamps.
    """

    def __init__(self, model, tok, block_size: int = DEFAULT_BLOCK_SIZE, num_blocks: int | None = None,
                 kv_cache_memory_bytes: int | None = None, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 512, enable_prefix_caching: bool = True, clock=time.perf_counter):
        if not hasattr(model, "config") or not callable(model):
            raise TypeError(f"model must be an il.GPT, got {type(model).__name__}")
        if tok is not None and not (hasattr(tok, "encode") and hasattr(tok, "vocab")):
            raise TypeError("tok must be a tokenizer with encode and vocab (il.BPETokenizer, or il.load_hf's "
                            f"HFTokenizer), or None for prompts of token ids; got {type(tok).__name__}")
        if not callable(clock):
            raise TypeError("clock must be a function returning seconds, like time.perf_counter")
        self.model, self.tok, self.config, self.clock = model, tok, model.config, clock
        self.block_size = positive_int("block_size", block_size)
        self.max_num_seqs = positive_int("max_num_seqs", max_num_seqs)
        self.max_num_batched_tokens = positive_int("max_num_batched_tokens", max_num_batched_tokens)
        per_block = KVPool.bytes_per_block(self.config, self.block_size, model.dtype)
        if num_blocks is not None and kv_cache_memory_bytes is not None:
            raise ValueError("give num_blocks or kv_cache_memory_bytes, not both")
        if num_blocks is None:
            budget = positive_int("kv_cache_memory_bytes", kv_cache_memory_bytes or DEFAULT_KV_CACHE_MEMORY_BYTES)
            num_blocks = budget // per_block
            if num_blocks < 1:
                raise ValueError(f"kv_cache_memory_bytes={budget} is smaller than one KV block ({per_block} bytes "
                                 f"for {self.block_size} tokens of this model)")
        self.num_blocks = positive_int("num_blocks", num_blocks)
        self.pool = KVPool(self.config, self.num_blocks, self.block_size, model.dtype, model.device)
        self.block_manager = BlockManager(self.num_blocks, self.block_size,
                                          boolean("enable_prefix_caching", enable_prefix_caching))
        self.scheduler = Scheduler(self.block_manager, self.max_num_seqs, self.max_num_batched_tokens)
        self.runner = ModelRunner(model, self.pool)
        self.requests: dict = {}          # unfinished requests, by id
        self.last_step: SchedulerOutput | None = None   # what the last step ran, when, for how long
        self._ids = itertools.count()

    def __repr__(self):
        return f"Engine({self.config.name}, {self.num_blocks} KV blocks x {self.block_size} tokens)"

    def _make_request(self, prompt, params, request_id=None, arrival_time=None) -> Request:
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise TypeError(f"sampling_params must be an il.SamplingParams, got {type(params).__name__}")
        cfg = self.config
        ids = encode_prompt(self.tok, prompt, cfg.max_seq_len, cfg.vocab_size)
        if len(ids) + params.max_tokens > cfg.max_seq_len:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) exceeds the model's "
                             f"context max_seq_len={cfg.max_seq_len}")
        if any(i >= cfg.vocab_size for i in params.stop_token_ids or ()):
            raise ValueError(f"stop_token_ids must lie in [0, vocab_size={cfg.vocab_size}), got {params.stop_token_ids}")
        need = self.block_manager.blocks_needed(len(ids) + params.max_tokens - 1)
        if need > self.num_blocks:   # could never run, even alone: refuse now rather than stall forever
            raise ValueError(f"this request needs {need} KV blocks (prompt {len(ids)} + max_tokens {params.max_tokens} "
                             f"tokens, blocks of {self.block_size}) but the pool has {self.num_blocks}; raise "
                             f"num_blocks or kv_cache_memory_bytes, or lower max_tokens")
        if request_id is None:
            request_id = next(i for i in map(str, self._ids) if i not in self.requests)   # never a caller's id in use
        elif not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
            raise TypeError(f"request_id must be a str or an int, got {type(request_id).__name__}")
        elif request_id in self.requests:
            raise ValueError(f"request_id {request_id!r} is already in use by an unfinished request")
        if arrival_time is None:
            arrival_time = self.clock()
        elif not isinstance(arrival_time, numbers.Real) or isinstance(arrival_time, bool) or not math.isfinite(arrival_time):
            raise ValueError(f"arrival_time must be a finite number of seconds on the engine's clock, got {arrival_time!r}")
        return Request(request_id, prompt, ids, params, self.tok, float(arrival_time), self.model.device)

    def add_request(self, prompt, sampling_params: SamplingParams | None = None, request_id=None,
                    arrival_time: float | None = None):
        """Queue one request (it joins the running batch at the next ``step()``); return its id. A request
        the engine could never serve (bad input, too long, larger than the KV pool) is refused here."""
        return self._queue(self._make_request(prompt, sampling_params, request_id, arrival_time))

    def _queue(self, req: Request):
        self.requests[req.request_id] = req
        self.scheduler.add(req)
        return req.request_id

    def abort_request(self, request_id) -> RequestOutput:   # end it now; its output, finish_reason "abort"
        if request_id not in self.requests:
            raise ValueError(f"request_id {request_id!r} is not an unfinished request of this engine")
        req = self.requests.pop(request_id)
        self.scheduler.finish(req, self.clock(), "abort", "aborted by the caller")
        return req.output()

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def step(self) -> list[RequestOutput]:
        """Schedule, run the model, append the new tokens. Returns the output of every request that got a
        token or ended in this step; a finished request leaves the engine with it."""
        start = self.clock()
        out = self.scheduler.schedule(start)
        try:
            picks = self.runner.run(out) if out.rows else {}
        except Exception as error:   # noqa: BLE001 - the step's requests end with the reason; the others go on
            self.block_manager.reset_prefix_cache()   # blocks registered for this step may be half written
            picks = {req: error for req, _ in out.rows}
        now = self.clock()
        out.start, out.duration, self.last_step = start, now - start, out
        outputs = [req.output() for req in self.scheduler.postprocess(out, picks, now)]
        for o in outputs:
            if o.finished:
                del self.requests[o.request_id]
        return outputs

    def generate(self, prompts, sampling_params: SamplingParams | list | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """Serve every prompt; return one ``RequestOutput`` per prompt, in prompt order (vLLM's
        ``LLM.generate``). ``sampling_params``: one for all, or a list with one per prompt (default: greedy,
        16 tokens). Every prompt is checked before any runs."""
        if self.requests:
            raise RuntimeError(f"{len(self.requests)} requests added with add_request are unfinished: step() "
                               f"until has_unfinished_requests() is False before calling generate()")
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError("prompts must be a non-empty list of prompts (str or lists of token ids)")
        params = sampling_params if isinstance(sampling_params, (list, tuple)) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"got {len(params)} SamplingParams for {len(prompts)} prompts; give one, or one per prompt")
        reqs = [self._make_request(p, sp) for p, sp in zip(prompts, params)]   # all checked before any runs
        for req in reqs:
            self._queue(req)
        done, bar = {}, progress(total=len(reqs), desc="requests", unit="request", enabled=use_tqdm)
        while self.requests:
            for o in self.step():
                if o.finished:
                    done[o.request_id] = o
                    bar.update(1)
        bar.close()
        return [done[req.request_id] for req in reqs]
