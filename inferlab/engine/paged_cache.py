"""The paged KV cache: one pool of blocks, read and written through block tables (notebook 06).

``KVPool`` holds the keys and values of every block of every layer, ``[n_layer, num_blocks, n_kv_head,
block_size, head_dim]``: token slot ``s`` is offset ``s % block_size`` of physical block ``s // block_size``.
``PagedBatch`` is the cache object the model sees for one forward pass (the calls of ``KVCache``):
``attention_mask`` lets each new token see its own sequence's keys up to its position; ``append`` writes
the new keys/values into their slots (the *slot mapping*), then gathers each sequence's blocks, through
its block table, into one tensor. Production engines (vLLM's PagedAttention) read the blocks inside the
attention kernel instead of gathering a copy; the arithmetic is the same.
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import ModelConfig


class KVPool:
    """Preallocated keys and values for ``num_blocks`` blocks of ``block_size`` tokens."""

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, dtype=torch.float32, device=None):
        self.config, self.num_blocks, self.block_size = config, num_blocks, block_size
        shape = (config.n_layer, num_blocks, config.n_kv_head, block_size, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # zeros: padding gathers 0, never NaN
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self._gathered = {}

    def gather_buffer(self, name: str, rows: int) -> torch.Tensor:
        """A ``[rows, block_size, head_dim]`` buffer to gather blocks into, reused by every layer and step
        (a fresh one per layer is megabytes of new memory the system maps in page by page)."""
        buf = self._gathered.get(name)
        if buf is None or buf.shape[0] < rows:
            buf = torch.empty(rows, self.block_size, self.config.head_dim, dtype=self.k.dtype, device=self.k.device)
            self._gathered[name] = buf
        return buf[:rows]

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype=torch.float32) -> int:
        return 2 * config.n_layer * block_size * config.kv_dim * torch.empty(0, dtype=dtype).element_size()

    @property
    def bytes_allocated(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


def index_tensor(rows: list) -> torch.Tensor:
    """An int64 tensor from a list of ints (or equal-length lists), through numpy: faster than torch.tensor."""
    return torch.from_numpy(np.array(rows, dtype=np.int64))


def slot_of(block_table: list[int], position: int, block_size: int) -> int:
    """The slot of the token at ``position``: physical block from the table, offset within the block."""
    return block_table[position // block_size] * block_size + position % block_size


class PagedBatch:
    """The cache for one forward pass: sequence r has ``num_new[r]`` new tokens after ``num_computed[r]``
    cached ones, in the blocks of ``block_tables[r]``. Two layouts:

    * ``packed=False`` (decode): one row per sequence, ``[B, 1]``, one new token each; the keys of each
      row are its blocks, padded to the longest table.
    * ``packed=True`` (prefill): all new tokens one after the other in a single row ``[1, N]``, the keys of
      every sequence side by side, and a mask that keeps each token to its own sequence: prompts of
      different lengths share a pass with no padding (vLLM does this with a variable-length kernel).
    """

    def __init__(self, pool: KVPool, block_tables: list, num_computed: list, num_new: list, packed: bool = False):
        self.pool, device = pool, pool.k.device
        bs, kv, B = pool.block_size, pool.config.n_kv_head, len(num_new)
        used = [-(-(c + n) // bs) for c, n in zip(num_computed, num_new)]   # blocks each sequence reads
        if packed:
            seq = torch.repeat_interleave(torch.arange(B), index_tensor(num_new))           # [N] query -> sequence
            positions = torch.cat([torch.arange(c, c + n) for c, n in zip(num_computed, num_new)])[None]
            tables = index_tensor([b for t, u in zip(block_tables, used) for b in t[:u]])[None]   # [1, W]
            key_seq = torch.repeat_interleave(torch.arange(B), index_tensor(used) * bs)
            key_pos = torch.cat([torch.arange(u * bs) for u in used])
            mask = (key_seq[None, :] == seq[:, None]) & (key_pos[None, :] <= positions[0, :, None])   # [N, S]
            self.mask = mask[None, None].to(device)
            self.last = (torch.cumsum(index_tensor(num_new), 0) - 1).to(device)   # each sequence's newest token
        else:
            if any(n != 1 for n in num_new):
                raise ValueError(f"an unpacked batch holds one new token per row (decode), got num_new={num_new}")
            width = max(used)
            tables = index_tensor([t[:u] + [0] * (width - u) for t, u in zip(block_tables, used)])  # pad: block 0
            positions = index_tensor(num_computed)[:, None]                               # [B, 1]
            mask = torch.arange(width * bs)[None, :] <= positions                         # [B, S]
            self.mask, self.last = mask[:, None, None].to(device), None
        # the slot mapping: where each new token's key/value goes, in the pool seen as rows of
        # [block_size, head_dim], one row per (block, kv head)
        slots = index_tensor([slot_of(t, p, bs) for t, c, n in zip(block_tables, num_computed, num_new)
                              for p in range(c, c + n)])
        heads = torch.arange(kv)
        write_rows = ((slots // bs)[:, None] * kv + heads) * bs + (slots % bs)[:, None]
        read_rows = tables[:, None, :] * kv + heads[None, :, None]          # [rows, KV, blocks]
        self.positions, self.shape = positions.to(device), tables.shape
        self.write_rows, self.read_rows = write_rows.flatten().to(device), read_rows.flatten().to(device)

    def attention_mask(self, T: int, pad_mask):
        return self.mask, self.positions

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write the new keys/values into their slots, then gather each row's blocks in block-table order."""
        (rows, width), cfg, bs = self.shape, self.pool.config, self.pool.block_size
        out = []
        for name, pool, new in (("k", self.pool.k[layer], k), ("v", self.pool.v[layer], v)):
            new = new.transpose(1, 2).reshape(-1, cfg.head_dim)   # [tokens * KV, d], in slot-mapping order
            pool.view(-1, cfg.head_dim).index_copy_(0, self.write_rows, new)
            blocks = torch.index_select(pool.view(-1, bs, cfg.head_dim), 0, self.read_rows,
                                        out=self.pool.gather_buffer(name, self.read_rows.numel()))
            out.append(blocks.view(rows, cfg.n_kv_head, width * bs, cfg.head_dim))
        return out[0], out[1]

    def advance(self, T: int):
        pass
