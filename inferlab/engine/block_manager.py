"""The paged KV cache's bookkeeping: a pool of fixed-size blocks (notebook 06).

Like virtual memory in an operating system: each request sees a contiguous sequence of token slots,
but its keys/values live in fixed-size physical *blocks* scattered anywhere in one pool. The request's
*block table* maps logical block i (tokens ``i*block_size .. (i+1)*block_size - 1``) to a physical block.
Memory is taken one block at a time as the sequence grows, so at most ``block_size - 1`` slots per
request are ever empty.

Prefix caching: a block full of tokens gets a hash chained over everything before it (its own tokens
and the hash of the previous block), so two requests that start with the same tokens map to the same
physical blocks; a *reference count* says how many requests use each block. A block whose count drops
to zero goes back to the free list but keeps its hash: a later request with the same prefix can
still reuse it, until the block is handed out for something else.
"""
from __future__ import annotations

from collections import deque


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_count = 0
        self.hash = None        # set once the block is full and registered in the prefix cache
        self.token_ids = ()     # the tokens a hashed block holds (checked on a hit: hashes can collide)

    def __repr__(self):
        return f"Block({self.block_id}, ref={self.ref_count}, {'hashed' if self.hash is not None else 'unhashed'})"


def block_hash(token_ids, prev_hash=None) -> int:
    """The hash of a full block, chained over the whole prefix through ``prev_hash``."""
    return hash((prev_hash, tuple(token_ids)))


class BlockManager:
    """Hands out blocks, keeps reference counts, and remembers full blocks by prefix hash."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: deque[int] = deque(range(num_blocks))   # least recently freed first
        self.hash_to_block: dict[int, int] = {}
        self.prefix_queries = 0   # prompt tokens looked up in the prefix cache
        self.prefix_hits = 0      # of them, tokens found

    # --- counting ------------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self.free_ids)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self.free_ids)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # --- prefix cache -------------------------------------------------------------------------
    def lookup(self, token_ids: list[int]) -> list[int]:
        """Physical blocks already holding the longest cached run of full blocks that starts ``token_ids``.

        At least one token is always left to compute, because its logits pick the next token."""
        if not self.enable_prefix_caching:
            return []
        hits, prev = [], None
        bs = self.block_size
        for i in range((len(token_ids) - 1) // bs):
            chunk = token_ids[i * bs:(i + 1) * bs]
            prev = block_hash(chunk, prev)
            block_id = self.hash_to_block.get(prev)
            if block_id is None or self.blocks[block_id].token_ids != tuple(chunk):
                break
            hits.append(block_id)
        return hits

    def register_full_blocks(self, req, num_tokens: int) -> None:
        """Give each block of ``req`` that is full once its first ``num_tokens`` tokens are computed its chained
        hash, so later requests can share it. Called when the step is scheduled: a request scheduled later in
        the same step may share it too, since every layer writes all new keys/values before any row reads."""
        if not self.enable_prefix_caching:
            return
        bs, tokens, table = self.block_size, req.tokens, req.block_table
        full = min(num_tokens // bs, len(table))
        # the blocks hashed already (shared hits, earlier steps) are a prefix of the table: skip them, from the end
        start = full
        while start > 0 and self.blocks[table[start - 1]].hash is None:
            start -= 1
        prev = self.blocks[table[start - 1]].hash if start else None
        for i in range(start, full):
            block = self.blocks[table[i]]
            chunk = tuple(tokens[i * bs:(i + 1) * bs])
            prev = block_hash(chunk, prev)
            block.hash, block.token_ids = prev, chunk
            self.hash_to_block.setdefault(prev, block.block_id)  # a twin computed in the same step keeps the first

    # --- allocation ---------------------------------------------------------------------------
    def can_allocate(self, req, num_new_tokens: int, hits=()) -> bool:
        """Would ``req`` (plus prefix hits ``hits`` it is about to take) fit ``num_new_tokens`` more tokens?"""
        have = len(req.block_table) + len(hits)
        computed = req.num_computed + len(hits) * self.block_size
        need = self.blocks_needed(computed + num_new_tokens) - have
        reviving = sum(1 for b in hits if self.blocks[b].ref_count == 0)  # hits that sit in the free list
        return need <= self.num_free - reviving

    def take_hits(self, req, hits) -> None:
        """Share the prefix-cache hits with ``req``: they become its first blocks, already computed."""
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                self.free_ids.remove(block_id)
            block.ref_count += 1
            req.block_table.append(block_id)
        req.num_computed += len(hits) * self.block_size

    def allocate(self, req, num_new_tokens: int) -> None:
        """Append fresh blocks to ``req``'s table until ``num_computed + num_new_tokens`` tokens fit."""
        need = self.blocks_needed(req.num_computed + num_new_tokens) - len(req.block_table)
        if need > self.num_free:
            raise RuntimeError(f"out of KV blocks: need {need}, {self.num_free} free (call can_allocate first)")
        for _ in range(need):
            block = self.blocks[self.free_ids.popleft()]
            if block.hash is not None:   # evict its cached prefix: the block now holds new tokens
                if self.hash_to_block.get(block.hash) == block.block_id:
                    del self.hash_to_block[block.hash]
                block.hash, block.token_ids = None, ()
            block.ref_count = 1
            req.block_table.append(block.block_id)

    def free(self, req) -> None:
        """Drop ``req``'s claim on its blocks. Blocks nobody uses return to the free list, tail first, so a
        prefix's first blocks stay cached longest."""
        for block_id in reversed(req.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.hash is None or self.hash_to_block.get(block.hash) != block_id:
                    block.hash, block.token_ids = None, ()
                    self.free_ids.appendleft(block_id)   # holds nothing reusable: hand it out first
                else:
                    self.free_ids.append(block_id)
        req.block_table = []
        req.num_computed = 0

    # --- checks and pictures ------------------------------------------------------------------
    def check_invariants(self, requests) -> None:
        """Raise AssertionError unless every reference count equals the number of live block tables
        holding that block, no table holds a block twice, each table's hashed blocks come first (what
        ``register_full_blocks`` relies on), and the free list holds exactly the unused blocks."""
        counts = [0] * self.num_blocks
        for req in requests:
            assert len(set(req.block_table)) == len(req.block_table), f"{req} holds a block twice"
            hashed = [self.blocks[b].hash is not None for b in req.block_table]
            assert hashed == sorted(hashed, reverse=True), f"{req}: hashed blocks are not a prefix of its table"
            for b in req.block_table:
                counts[b] += 1
        for block, n in zip(self.blocks, counts):
            assert block.ref_count == n, f"{block}: ref_count {block.ref_count}, but {n} block tables hold it"
        assert len(set(self.free_ids)) == len(self.free_ids), "a block is in the free list twice"
        assert set(self.free_ids) == {b.block_id for b in self.blocks if b.ref_count == 0}, "free list is wrong"
        for h, b in self.hash_to_block.items():
            assert self.blocks[b].hash == h, f"prefix cache maps a hash to block {b}, which holds something else"
