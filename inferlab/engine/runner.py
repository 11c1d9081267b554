"""The model runner: one engine step's forward pass over the paged cache (notebook 06).

The scheduled requests become left-padded ``[B, T]`` batches of their new tokens, with explicit positions
and a pad mask, run through the one GPT with a ``PagedBatch`` as its cache. Decoding rows (one token
each) and prefill rows (many) go in separate passes, so a long prompt does not pad every decoding row
to its length; prefill rows are sorted by length and cut into passes too (``prefill_order``,
``prefill_passes``). Prefill rows run first, and a request that found its prefix in blocks being computed
in this same step runs with or after their owner, so it reads them after they are written. A request
whose last token was just computed gets its next token picked by ``sample_next`` with its own
``SamplingParams``.
"""
from __future__ import annotations

import torch

from ..sampling import sample_next
from .paged_cache import KVPool, PagedBatch, index_tensor
from .scheduler import SchedulerOutput


class ModelRunner:
    # The cost of a prefill pass, in token slots, fitted to 268 passes timed on the 2-core CPU this course was
    # built on (median error 7%): every row is padded to the pass's most new tokens and widest context, and
    #     cost = prefill_pass_cost_tokens + rows x most new tokens x (1 + widest context / attention_context_tokens)
    # A pass costs as much as ~100 more tokens (5 ms); a token's attention costs as much as its projections and
    # MLP once it looks at ~360 keys. ``benchmarks/prefill_pass_cost.py`` refits both on any machine (repeated
    # runs here gave 100-125 and 250-365).
    prefill_pass_cost_tokens = 100
    attention_context_tokens = 360

    def __init__(self, model, pool: KVPool):
        self.model, self.pool = model, pool

    @torch.inference_mode()
    def forward(self, group) -> torch.Tensor:
        """Last-token logits ``[B, vocab]`` for a list of ``ScheduledRequest``."""
        device = self.model.device
        cache = PagedBatch(self.pool, [s.request.block_table for s in group],
                           [s.request.num_computed for s in group], [s.num_new for s in group])
        T = cache.pad_mask.shape[1]
        rows = []
        for s in group:   # left-padded, like the cache's rows: the newest token is in the last column
            c = s.request.num_computed
            rows.append([0] * (T - s.num_new) + s.request.tokens[c:c + s.num_new])
        idx = index_tensor(rows)
        logits = self.model(idx.to(device), positions=cache.positions, cache=cache, pad_mask=cache.pad_mask,
                            last_only=True)
        return logits[:, -1]

    def pass_cost(self, rows: int, longest: int, widest: int) -> float:
        """Cost of one prefill pass in token slots: ``rows`` padded to ``longest`` new tokens and ``widest`` context."""
        return self.prefill_pass_cost_tokens + rows * longest * (1 + widest / self.attention_context_tokens)

    def prefill_order(self, prefill: list) -> list:
        """Prefill rows sorted by new tokens, so that rows of like length can share a pass. A row that reads a
        block another row writes in this step (a prefix found in the cache while its owner computes it) sorts
        after that row: its level is one more than the writer's, and levels sort first."""
        bs = self.pool.block_size
        levels, writer_level = [], {}   # block id -> level of the row that writes it this step
        for s in prefill:
            table, start, end = s.request.block_table, s.request.num_computed, s.request.num_computed + s.num_new
            level = 1 + max((writer_level[b] for b in table[:-(-end // bs)] if b in writer_level), default=-1)
            for b in table[start // bs:-(-end // bs)]:
                writer_level.setdefault(b, level)
            levels.append(level)
        order = sorted(range(len(prefill)), key=lambda i: (levels[i], prefill[i].num_new))
        return [prefill[i] for i in order]

    def prefill_passes(self, prefill: list) -> list[list]:
        """Split prefill rows, in the given order, into consecutive passes of the least total cost (the model
        above: padded work plus a fixed cost per pass), by dynamic programming over the cuts."""
        n = len(prefill)
        cost, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
        for end in range(1, n + 1):
            longest = widest = 0
            for start in range(end - 1, -1, -1):   # the last pass holds rows start .. end - 1
                longest = max(longest, prefill[start].num_new)
                widest = max(widest, prefill[start].request.num_computed + prefill[start].num_new)
                c = cost[start] + self.pass_cost(end - start, longest, widest)
                if c < cost[end]:
                    cost[end], cut[end] = c, start
        passes, end = [], n
        while end > 0:
            passes.append(prefill[cut[end]:end])
            end = cut[end]
        return passes[::-1]

    def run(self, out: SchedulerOutput) -> dict:
        """Run one step; return ``{request: next token}`` for each request whose tokens are now all computed.
        ``num_computed`` of every scheduled request moves forward by its ``num_new``."""
        decode = [s for s in out.scheduled if s.num_new == 1]
        prefill = [s for s in out.scheduled if s.num_new > 1]
        picks = {}
        # prefill first: a decode row may read a prefix block written by it; and a request sharing blocks
        # computed in this step runs in the same pass as their owner or a later one (``prefill_order``)
        for group in self.prefill_passes(self.prefill_order(prefill)) + [decode]:
            if not group:
                continue
            logits = self.forward(group)
            greedy = logits.argmax(-1).tolist()   # one call for every greedy row
            for s, row, best in zip(group, logits, greedy):
                req = s.request
                req.num_computed += s.num_new
                if req.num_computed == req.num_tokens:   # caught up: its next token can be picked
                    p = req.params
                    picks[req] = best if p.temperature == 0 else \
                        int(sample_next(row, p.temperature, p.top_k, p.top_p, req.generator))
        return picks
