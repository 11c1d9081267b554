"""The KV cache: the model's "memory notebook" of keys and values (notebook 03).

``KVCache`` preallocates room for ``capacity`` tokens per sequence and fills it left to right;
running out of room is a clear error, never a silent wrap. ``ConcatKVCache`` grows by
concatenation instead, the naive way, to compare against. Both keep a batch of sequences in
lockstep: a sequence whose prompt is shorter is left-padded, and padded slots are masked out.
"""
from __future__ import annotations

import torch

from .config import ModelConfig


class KVCache:
    """Preallocated contiguous cache: keys/values ``[n_layer, batch, n_kv_head, capacity, head_dim]``."""

    def __init__(self, config: ModelConfig, batch_size: int = 1, capacity: int | None = None,
                 dtype: torch.dtype = torch.float32, device=None):
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        capacity = config.max_seq_len if capacity is None else capacity
        for name, value in (("batch_size", batch_size), ("capacity", capacity)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.config, self.batch_size, self.capacity = config, batch_size, capacity
        shape = (config.n_layer, batch_size, config.n_kv_head, capacity, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = torch.zeros(batch_size, capacity, dtype=torch.bool, device=device)  # slot holds a real token
        self.length = 0  # slots filled, the same for every sequence in the batch
        self._pending = 0

    # --- the three calls the model makes -------------------------------------------------------
    def attention_mask(self, T: int, pad_mask: torch.Tensor | None):
        """Reserve T slots; return the [B, 1, T, length+T] mask and the positions of the new tokens."""
        if self.length + T > self.capacity:
            raise ValueError(f"KV cache full: {self.length} tokens cached + {T} new > capacity {self.capacity}; "
                             f"create the cache with a larger capacity (at most max_seq_len={self.config.max_seq_len})")
        device = self.valid.device
        if pad_mask is None:
            pad_mask = torch.ones(self.batch_size, T, dtype=torch.bool, device=device)
        if pad_mask.shape[0] != self.batch_size:
            raise ValueError(f"this cache holds batch_size={self.batch_size} sequences, got a batch of {pad_mask.shape[0]}")
        start, end = self.length, self.length + T
        counts = self.valid[:, :start].sum(-1, keepdim=True)
        positions = (counts + pad_mask.long().cumsum(-1) - 1).clamp(min=0)
        self.valid[:, start:end] = pad_mask
        key_slot = torch.arange(end, device=device)
        query_slot = torch.arange(start, end, device=device)
        mask = (key_slot[None, :] <= query_slot[:, None])[None, None] & self.valid[:, None, None, :end]
        self._pending = T
        return mask, positions

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write this step's keys/values for one layer; return all keys/values so far."""
        if k.shape[0] != self.batch_size or k.shape[2] != self._pending:
            raise ValueError(f"append expected keys of shape [{self.batch_size}, {self.config.n_kv_head}, "
                             f"{self._pending}, {self.config.head_dim}], got {tuple(k.shape)}")
        end = self.length + self._pending
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, T: int):
        self.length += T
        self._pending = 0

    # --- accounting ----------------------------------------------------------------------------
    @property
    def bytes_allocated(self) -> int:
        return (self.k.numel() + self.v.numel()) * self.k.element_size()

    @property
    def bytes_used(self) -> int:
        """Bytes holding real tokens (padding and empty slots excluded)."""
        per_token = 2 * self.config.n_layer * self.config.kv_dim * self.k.element_size()
        return int(self.valid.sum().item()) * per_token

    def tokens(self) -> list[int]:
        """Real tokens cached per sequence."""
        return self.valid.sum(-1).tolist()

    def reset(self):
        self.valid.zero_()
        self.length = 0
