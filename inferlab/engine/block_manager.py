"""The paged KV cache's bookkeeping: a pool of fixed-size blocks (notebook 06).

Like virtual memory: a request's keys/values live in fixed-size physical *blocks* anywhere in one pool,
and its *block table* maps logical block i (tokens ``i*block_size`` onwards) to a physical block. Blocks
are taken one at a time as a sequence grows, so at most ``block_size - 1`` slots per request are empty.

Prefix caching: a full block gets a hash chained over everything before it, so requests that start with
the same tokens find the same blocks; a *reference count* says how many requests use each. A freed block
keeps its contents until it is handed out again. A hit is trusted only if the block holds the same tokens
and follows the block matched before it: the whole prefix is compared, so colliding hashes never share.
The block manager is the only writer of block tables, reference counts, hashes and its counters.
"""
from __future__ import annotations

from collections import deque


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids", "parent")

    def __init__(self, block_id: int):
        self.block_id, self.ref_count = block_id, 0
        self.hash, self.token_ids, self.parent = None, (), None   # parent: the block before it in its prefix


def block_hash(token_ids, prev_hash=None) -> int:
    """The hash of a full block, chained over the prefix through ``prev_hash``."""
    return hash((prev_hash, tuple(token_ids)))


class BlockManager:
    """Hands out blocks, keeps reference counts, and remembers full blocks by prefix."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: deque[int] = deque(range(num_blocks))   # handed out from the left
        self.hash_to_block: dict[int, int] = {}
        self.prefix_queried_tokens = 0   # tokens of admitted requests looked up in the prefix cache
        self.prefix_hit_tokens = 0       # of them, found

    @property
    def num_free(self) -> int:
        return len(self.free_ids)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def cached_prefix(self, token_ids: list[int]) -> list[int]:
        """Blocks already holding the longest run of full blocks that starts ``token_ids``. At least one
        token is always left to compute, because its logits pick the next token."""
        if not self.enable_prefix_caching:
            return []
        hits, h, bs = [], None, self.block_size
        for i in range((len(token_ids) - 1) // bs):
            chunk = tuple(token_ids[i * bs:(i + 1) * bs])
            h = block_hash(chunk, h)
            block = self.blocks[self.hash_to_block[h]] if h in self.hash_to_block else None
            if block is None or block.token_ids != chunk or block.parent != (hits[-1] if hits else None):
                break
            hits.append(block.block_id)
        return hits

    def cache_full_blocks(self, req, num_tokens: int) -> None:
        """Register each block of ``req`` that is full once ``num_tokens`` of its tokens are computed. Called
        at scheduling: a request admitted later in the step may share them (``model_runner`` says why)."""
        if not self.enable_prefix_caching:
            return
        bs, table = self.block_size, req.block_table
        full = min(num_tokens // bs, len(table))
        start = full   # blocks already cached are a prefix of the table: find where it ends
        while start > 0 and self.blocks[table[start - 1]].hash is None:
            start -= 1
        for i in range(start, full):
            block, prev = self.blocks[table[i]], self.blocks[table[i - 1]] if i else None
            block.token_ids = tuple(req.token_ids[i * bs:(i + 1) * bs])
            block.hash = block_hash(block.token_ids, prev.hash if prev else None)
            block.parent = prev.block_id if prev else None
            self.hash_to_block.setdefault(block.hash, block.block_id)   # a twin keeps the first

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (after a failed step, whose blocks may hold half-written values)."""
        self.hash_to_block.clear()
        for block in self.blocks:
            block.hash, block.token_ids, block.parent = None, (), None

    def can_allocate(self, req, num_new_tokens: int, hits=()) -> bool:
        """Would ``req`` (plus prefix hits ``hits``) fit ``num_new_tokens`` more tokens?"""
        computed = req.num_computed_tokens + len(hits) * self.block_size
        need = self.blocks_needed(computed + num_new_tokens) - len(req.block_table) - len(hits)
        reviving = sum(1 for b in hits if self.blocks[b].ref_count == 0)   # hits that sit in the free list
        return need <= self.num_free - reviving

    def allocate(self, req, num_new_tokens: int, hits=()) -> int:
        """Give ``req`` the prefix hits, then fresh blocks until ``num_new_tokens`` more tokens fit. Returns
        how many tokens the hits hold (already computed). Call ``can_allocate`` first."""
        if not req.block_table:   # admission: count the lookup
            self.prefix_queried_tokens += req.num_tokens
            self.prefix_hit_tokens += len(hits) * self.block_size
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                self.free_ids.remove(block_id)
            block.ref_count += 1
            req.block_table.append(block_id)
        cached = len(hits) * self.block_size
        need = self.blocks_needed(req.num_computed_tokens + cached + num_new_tokens) - len(req.block_table)
        if need > self.num_free:
            raise RuntimeError(f"out of KV blocks: need {need}, {self.num_free} free (call can_allocate first)")
        for _ in range(need):
            block = self.blocks[self.free_ids.popleft()]
            if block.hash is not None:   # evict its cached prefix: the block now holds new tokens
                if self.hash_to_block.get(block.hash) == block.block_id:
                    del self.hash_to_block[block.hash]
                block.hash, block.token_ids, block.parent = None, (), None
            block.ref_count = 1
            req.block_table.append(block.block_id)
        return cached

    def free(self, req) -> None:
        """Drop ``req``'s claim on its blocks. A block nobody uses goes back to the free list: to the front if it
        holds nothing reusable, to the back if it holds a cached prefix (tail blocks first, so a prefix's first
        blocks, shared by the most requests, stay cached longest)."""
        for block_id in reversed(req.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.hash is not None and self.hash_to_block.get(block.hash) == block_id:
                    self.free_ids.append(block_id)
                else:
                    block.hash, block.token_ids, block.parent = None, (), None
                    self.free_ids.appendleft(block_id)
        req.block_table = []
