"""The paged KV cache: one pool of blocks, read and written through block tables (notebook 06).

``KVPool`` holds the keys and values of every block of every layer, ``[n_layer, num_blocks, n_kv_head,
block_size, head_dim]``: token slot ``s`` is offset ``s % block_size`` of physical block ``s // block_size``.
``PagedBatch`` is the cache the model sees for one forward pass: it writes the new keys/values into their
slots (the *slot mapping*), then gathers each sequence's blocks through its block table. vLLM's
PagedAttention reads the blocks inside the attention kernel instead of gathering a copy.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.config import ModelConfig


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
      row are its blocks, padded to the longest table, and one masked attention covers the batch.
    * ``packed=True`` (prefill): all new tokens one after the other in a single row ``[1, N]``, so prompts of
      different lengths need no padding, and ``attend`` runs attention sequence by sequence over each
      one's own blocks (what vLLM does in one call of a variable-length attention kernel).
    """

    def __init__(self, pool: KVPool, block_tables: list, num_computed: list, num_new: list, packed: bool = False):
        self.pool, device, bs = pool, pool.k.device, pool.block_size
        used = [-(-(c + n) // bs) for c, n in zip(num_computed, num_new)]   # blocks each sequence reads
        if packed:
            positions = torch.cat([torch.arange(c, c + n) for c, n in zip(num_computed, num_new)])[None]
            tables = index_tensor([b for t, u in zip(block_tables, used) for b in t[:u]])[None]   # [1, W]
            ends_q, ends_k = np.cumsum(num_new).tolist(), (np.cumsum(used) * bs).tolist()
            self.spans = [(eq - n, eq, ek - u * bs, ek) for eq, ek, n, u in zip(ends_q, ends_k, num_new, used)]
            self.masks = [(torch.arange(u * bs)[None, :] <= torch.arange(c, c + n)[:, None])[None, None].to(device)
                          for c, n, u in zip(num_computed, num_new, used)]   # causal, over its own keys
            self.mask, self.last = None, (index_tensor(ends_q) - 1).to(device)   # each sequence's newest token
        else:
            if any(n != 1 for n in num_new):
                raise ValueError(f"an unpacked batch holds one new token per row (decode), got num_new={num_new}")
            width = max(used)
            tables = index_tensor([t[:u] + [0] * (width - u) for t, u in zip(block_tables, used)])  # pad: block 0
            positions = index_tensor(num_computed)[:, None]                               # [B, 1]
            mask = torch.arange(width * bs)[None, :] <= positions                         # [B, S]
            self.mask, self.last = mask[:, None, None].to(device), None
            self.attend = None   # the model's own masked attention
        # the slot mapping: where each new token's key/value goes, in the pool seen as rows of
        # [block_size, head_dim], one row per (block, kv head)
        slots = index_tensor([slot_of(t, p, bs) for t, c, n in zip(block_tables, num_computed, num_new)
                              for p in range(c, c + n)])
        heads = torch.arange(pool.config.n_kv_head)
        write_rows = ((slots // bs)[:, None] * heads.numel() + heads) * bs + (slots % bs)[:, None]
        read_rows = tables[:, None, :] * heads.numel() + heads[None, :, None]   # [rows, KV, blocks]
        self.positions, self.shape = positions.to(device), tables.shape
        self.write_rows, self.read_rows = write_rows.flatten().to(device), read_rows.flatten().to(device)

    def reserve(self, T: int, attention_mask):   # each new token sees its own sequence up to its position
        return self.mask, self.positions

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
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

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attend) -> torch.Tensor:
        """Packed layout: write and gather as ``update``, then ``attend`` (the model's) for each sequence's
        queries over its own keys only, so the work grows with each sequence's length, not the batch's."""
        keys, values = self.update(layer, k, v)
        return torch.cat([attend(q[:, :, qs:qe], keys[:, :, ks:ke], values[:, :, ks:ke], mask)
                          for (qs, qe, ks, ke), mask in zip(self.spans, self.masks)], dim=2)

    def commit(self, T: int):
        pass
