"""The model runner: one engine step's forward passes over the paged cache (notebook 06).

Each step runs the one GPT twice at most, with a ``PagedBatch`` as its cache: once over the decode rows
(one new token each, a ``[B, 1]`` batch) and once over the prefill rows (prompt chunks), packed one after
the other into a single ``[1, N]`` row so that prompts of different lengths need no padding. The cost that
stays: a decode row gathers and attends over as many key blocks as the longest row.

Order matters once: a request admitted in this step may share prefix blocks that other rows fill in this
step. Decode rows never do, so they go first; in the prefill pass every layer writes all rows' new
keys/values before any row reads. The runner reads the requests and writes only the KV pool.
"""
from __future__ import annotations

import torch

from ..core.sampling import sample_next
from .paged_cache import KVPool, PagedBatch, index_tensor
from .scheduler import SchedulerOutput


class ModelRunner:
    def __init__(self, model, pool: KVPool):
        self.model, self.pool = model, pool

    @torch.inference_mode()
    def last_logits(self, rows: list, packed: bool) -> torch.Tensor:
        """Logits ``[B, vocab]`` of each row's newest token, for a list of (request, new tokens)."""
        cache = PagedBatch(self.pool, [r.block_table for r, _ in rows], [r.num_computed_tokens for r, _ in rows],
                           [n for _, n in rows], packed)
        new = [r.token_ids[r.num_computed_tokens:r.num_computed_tokens + n] for r, n in rows]
        idx = index_tensor([[t for ids in new for t in ids]] if packed else new)
        logits = self.model(idx.to(self.model.device), positions=cache.positions, cache=cache,   # ids checked
                            last_only=not packed, logits_to_keep=cache.last, check_inputs=False)   # at the door
        return logits[0] if packed else logits[:, -1]

    def run(self, out: SchedulerOutput) -> dict:
        """Run one step. Returns ``{request: next token id}`` for each request whose tokens are now all
        computed, or the exception that picking its token raised (that request alone then ends)."""
        picks = {}
        for rows, packed in ((out.decode, False), (out.prefill, True)):
            if not rows:
                continue
            logits = self.last_logits(rows, packed)
            greedy = logits.argmax(-1).tolist()   # one call (and one device sync) for every greedy row
            for (req, n), row, best in zip(rows, logits, greedy):
                if req.num_computed_tokens + n < req.num_tokens:
                    continue   # a prefill chunk that is not the last: nothing to pick yet
                p = req.params
                try:
                    picks[req] = best if p.temperature == 0 else \
                        int(sample_next(row, p.temperature, p.top_k, p.top_p, req.generator))
                except Exception as error:   # noqa: BLE001 - reported on that request, the others go on
                    picks[req] = error
        return picks
