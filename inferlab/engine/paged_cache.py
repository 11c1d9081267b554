"""The paged KV cache: one pool of blocks, read and written through block tables (notebook 06).

``KVPool`` holds the keys and values of every block of every layer, ``[n_layer, num_blocks, n_kv_head,
block_size, head_dim]``: token slot ``s`` is offset ``s % block_size`` of physical block ``s // block_size``.
``PagedBatch`` is the cache object the model sees for one forward pass over a left-padded ``[B, T]`` batch
of new tokens (the same three calls as ``KVCache``):

* ``attention_mask`` gives each query the keys at positions up to its own, within its own sequence;
* ``append`` writes the new keys/values into their slots (the *slot mapping*), then gathers each
  sequence's keys/values through its block table into a padded ``[B, n_kv_head, S, head_dim]`` batch
  (``S`` = blocks in the longest table x ``block_size``; one gather of whole blocks, per head, into a
  buffer the pool reuses);
* ``advance`` does nothing: the engine, not the cache, counts computed tokens.

Production engines (vLLM's PagedAttention) read the blocks inside the attention kernel instead of
gathering a copy; the arithmetic is the same.
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
        self._gathered = {}  # name -> reusable buffer the blocks of one layer are gathered into

    def gather_buffer(self, name: str, rows: int) -> torch.Tensor:
        """A ``[rows, block_size, head_dim]`` buffer to gather blocks into, reused by every layer and step.

        A fresh tensor per layer is megabytes of new memory; when the allocator has none to spare, the
        operating system maps it in page by page (measured here: 9,600 page faults in a 32-row decode step,
        doubling its time, when decode steps run back to back). Reusing one buffer never costs that.
        What it holds is valid until the next gather with the same name."""
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
    """An int64 tensor from a list of ints or of equal-length int lists, made through numpy: ``torch.tensor``
    walks a Python list about 6x slower (410 us against 71 us for a 32 x 48 block table on the CPU this course
    was built on), and the engine makes these for every pass."""
    return torch.from_numpy(np.array(rows, dtype=np.int64))


def slot_of(block_table: list[int], position: int, block_size: int) -> int:
    """The slot of the token at ``position``: physical block from the table, offset within the block."""
    return block_table[position // block_size] * block_size + position % block_size


class PagedBatch:
    """The cache object for one forward pass. Row b holds ``num_new[b]`` new tokens of a sequence that
    already has ``num_computed[b]`` tokens cached, in the blocks of ``block_tables[b]``."""

    def __init__(self, pool: KVPool, block_tables: list[list[int]], num_computed: list[int], num_new: list[int]):
        self.pool = pool
        device = pool.k.device
        bs, kv = pool.block_size, pool.config.n_kv_head
        T = max(num_new)
        context = [c + n for c, n in zip(num_computed, num_new)]          # tokens each row attends over
        used = [-(-n // bs) for n in context]                             # blocks each row reads
        width = max(used)
        tables = index_tensor([t[:u] + [0] * (width - u) for t, u in zip(block_tables, used)])  # pad: block 0, masked
        # rows are left-padded: each row's last column is its newest token, so the model can compute the
        # logits of the last column only (``last_only``), not of every prompt position
        offset = T - index_tensor(num_new)[:, None]
        steps = torch.arange(T)[None, :]
        pad_mask = steps >= offset                                        # [B, T] real new tokens
        positions = torch.where(pad_mask, index_tensor(num_computed)[:, None] + steps - offset, 0)
        # the slot mapping: where each new token's key/value goes = physical block * block_size + offset
        slots = tables.gather(1, positions // bs) * bs + positions % bs
        write_slots = slots[pad_mask]
        # the pool seen as rows of [block_size, head_dim], one row per (block, kv head): row = block * KV + head
        heads = torch.arange(kv)
        write_rows = ((write_slots // bs)[:, None] * kv + heads) * bs + (write_slots % bs)[:, None]
        read_rows = tables[:, None, :] * kv + heads[None, :, None]       # [B, KV, width]
        key_pos = torch.arange(width * bs)
        mask = (key_pos[None, None, :] <= positions[:, :, None]) & pad_mask[:, :, None]  # causal, own sequence
        self.positions, self.pad_mask = positions.to(device), pad_mask.to(device)
        self.tables, self.write_slots = tables.to(device), write_slots.to(device)
        self.write_rows, self.read_rows = write_rows.flatten().to(device), read_rows.flatten().to(device)
        self.real = pad_mask.flatten().nonzero().flatten().to(device)    # which of the B*T queries are tokens
        self.mask = mask[:, None].to(device)                              # [B, 1, T, S]; padding sees nothing

    # --- the three calls the model makes -------------------------------------------------------
    def attention_mask(self, T: int, pad_mask):
        return self.mask, self.positions

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write the new keys/values into their slots, then read each row's blocks, in block-table order."""
        B, width = self.tables.shape
        cfg, bs = self.pool.config, self.pool.block_size
        out = []
        for name, pool, new in (("k", self.pool.k[layer], k), ("v", self.pool.v[layer], v)):
            new = new.transpose(1, 2).reshape(-1, cfg.n_kv_head * cfg.head_dim).index_select(0, self.real)  # [N, KV*d]
            pool.view(-1, cfg.head_dim).index_copy_(0, self.write_rows, new.view(-1, cfg.head_dim))
            blocks = torch.index_select(pool.view(-1, bs, cfg.head_dim), 0, self.read_rows,   # [B*KV*width, bs, d]
                                        out=self.pool.gather_buffer(name, self.read_rows.numel()))
            out.append(blocks.view(B, cfg.n_kv_head, width * bs, cfg.head_dim))        # [B, KV, S, d]
        return out[0], out[1]

    def advance(self, T: int):
        pass
