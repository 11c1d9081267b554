"""The paged KV cache: one pool of blocks, read and written through block tables (notebook 06).

``KVPool`` holds the keys and values of every block of every layer, ``[n_layer, num_blocks, n_kv_head,
block_size, head_dim]``: token slot ``s`` is offset ``s % block_size`` of physical block ``s // block_size``. ``PagedBatch`` is the
cache object the model sees for one forward pass over a padded ``[B, T]`` batch of new tokens (the
same three calls as ``KVCache``):

* ``attention_mask`` gives each query the keys at positions up to its own, within its own sequence;
* ``append`` writes the new keys/values into their slots (the *slot mapping*), then gathers each
  sequence's keys/values through its block table into a padded ``[B, n_kv_head, S, head_dim]`` batch
  (``S`` = blocks in the longest table x ``block_size``; one gather of whole blocks, per head);
* ``advance`` does nothing: the engine, not the cache, counts computed tokens.

Production engines (vLLM's PagedAttention) read the blocks inside the attention kernel instead of
gathering a copy; the arithmetic is the same.
"""
from __future__ import annotations

import torch

from ..config import ModelConfig


class KVPool:
    """Preallocated keys and values for ``num_blocks`` blocks of ``block_size`` tokens."""

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, dtype=torch.float32, device=None):
        self.config, self.num_blocks, self.block_size = config, num_blocks, block_size
        shape = (config.n_layer, num_blocks, config.n_kv_head, block_size, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # zeros: padding gathers 0, never NaN
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype=torch.float32) -> int:
        return 2 * config.n_layer * block_size * config.kv_dim * torch.empty(0, dtype=dtype).element_size()

    @property
    def bytes_allocated(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


def slot_of(block_table: list[int], position: int, block_size: int) -> int:
    """The slot of the token at ``position``: physical block from the table, offset within the block."""
    return block_table[position // block_size] * block_size + position % block_size


class PagedBatch:
    """The cache object for one forward pass. Row b holds ``num_new[b]`` new tokens of a sequence that
    already has ``num_computed[b]`` tokens cached, in the blocks of ``block_tables[b]``."""

    def __init__(self, pool: KVPool, block_tables: list[list[int]], num_computed: list[int], num_new: list[int]):
        self.pool = pool
        device = pool.k.device
        bs = pool.block_size
        B, T = len(num_new), max(num_new)
        self.context = [c + n for c, n in zip(num_computed, num_new)]     # tokens each row attends over
        width = max(-(-n // bs) for n in self.context)                   # blocks in the longest row
        self.positions = torch.zeros(B, T, dtype=torch.long)
        self.pad_mask = torch.zeros(B, T, dtype=torch.bool)
        self.tables = torch.zeros(B, width, dtype=torch.long)            # padded with block 0, masked out
        write_slots = []
        for b, (table, c, n) in enumerate(zip(block_tables, num_computed, num_new)):
            self.positions[b, :n] = torch.arange(c, c + n)
            self.pad_mask[b, :n] = True
            used = table[:-(-(c + n) // bs)]
            self.tables[b, :len(used)] = torch.tensor(used)
            pos = torch.arange(c, c + n)
            write_slots.append(self.tables[b, pos // bs] * bs + pos % bs)  # the slot mapping
        write_slots = torch.cat(write_slots)
        self.write_slots = write_slots.to(device)
        # the pool seen as rows of [block_size, head_dim], one row per (block, kv head): row = block * KV + head
        kv = pool.config.n_kv_head
        heads = torch.arange(kv)
        rows = ((write_slots // bs)[:, None] * kv + heads) * bs + (write_slots % bs)[:, None]
        self.write_rows = rows.flatten().to(device)                       # [N * KV] token rows of [head_dim]
        self.read_rows = (self.tables[:, None, :] * kv + heads[None, :, None]).flatten().to(device)  # [B * KV * width]
        self.real = self.pad_mask.flatten().nonzero().flatten().to(device)   # which of the B*T queries are tokens
        key_pos = torch.arange(width * bs)
        visible = key_pos[None, None, :] <= self.positions[:, :, None]                  # causal
        visible &= key_pos[None, None, :] < torch.tensor(self.context)[:, None, None]   # own sequence only
        visible &= self.pad_mask[:, :, None]                                            # padding sees nothing
        self.tables = self.tables.to(device)
        self.mask = visible[:, None].to(device)                                        # [B, 1, T, S]
        self.positions, self.pad_mask = self.positions.to(device), self.pad_mask.to(device)

    # --- the three calls the model makes -------------------------------------------------------
    def attention_mask(self, T: int, pad_mask):
        return self.mask, self.positions

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write the new keys/values into their slots, then read each row's blocks, in block-table order."""
        B, width = self.tables.shape
        cfg, bs = self.pool.config, self.pool.block_size
        out = []
        for pool, new in ((self.pool.k[layer], k), (self.pool.v[layer], v)):
            new = new.transpose(1, 2).reshape(-1, cfg.n_kv_head * cfg.head_dim).index_select(0, self.real)  # [N, KV*d]
            pool.view(-1, cfg.head_dim).index_copy_(0, self.write_rows, new.view(-1, cfg.head_dim))
            blocks = pool.view(-1, bs, cfg.head_dim).index_select(0, self.read_rows)  # [B*KV*width, bs, d]
            out.append(blocks.view(B, cfg.n_kv_head, width * bs, cfg.head_dim))        # [B, KV, S, d]
        return out[0], out[1]

    def advance(self, T: int):
        pass
