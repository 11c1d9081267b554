"""The KV cache: the model's "memory notebook" of keys and values (notebook 03).

``KVCache`` preallocates room for ``capacity`` tokens per sequence and fills it left to right;
running out of room is a clear error, never a silent wrap. ``ConcatKVCache`` grows by
concatenation instead, the naive way, to compare against. Both keep a batch of sequences in
lockstep: a sequence whose prompt is shorter is left-padded, and padded slots are masked out.
"""
from __future__ import annotations

import torch

from .config import ModelConfig


def _check_step(cache, k, v, new_tokens: int, dtype) -> None:
    """One step's keys and values must fit the cache: a clear error naming the argument, not a torch one."""
    want = [cache.batch_size, cache.config.n_kv_head, new_tokens, cache.config.head_dim]
    for name, t in (("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"update expected {name} to be a torch.Tensor, got {type(t).__name__}")
        if list(t.shape) != want:
            raise ValueError(f"update expected {name} of shape [batch_size, n_kv_head, new tokens, head_dim] = "
                             f"{want}, got {list(t.shape)}; was the cache made for this model's config and batch?")
        if t.dtype != dtype:
            raise TypeError(f"update expected {name} of dtype {dtype} (the cache's), got {t.dtype}; "
                            f"create the cache with dtype=model.dtype")


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
        self.padded = False  # was a pad mask ever written? If not, every filled slot holds a real token
        self._pending = 0

    # --- the three calls the model makes: reserve, update (once per layer), commit ------------------
    def reserve(self, T: int, attention_mask: torch.Tensor | None):
        """Reserve T slots for the new tokens (``attention_mask``: ``[B, T]``, False for padding); return the
        [B, 1, T, length+T] mask of the keys each new token may see, and the new tokens' positions.
        The mask is None when there is nothing to hide: one new token, and no padding ever written."""
        if self.length + T > self.capacity:
            raise ValueError(f"KV cache full: {self.length} tokens cached + {T} new > capacity {self.capacity}; "
                             f"create the cache with a larger capacity (at most max_seq_len={self.config.max_seq_len})")
        device = self.valid.device
        start, end = self.length, self.length + T
        self._pending = T
        if attention_mask is None and T == 1:  # decoding one token: it may see every real slot, itself included
            self.valid[:, start] = True
            if not self.padded:   # every slot is real: no mask (None), and the new token's position is its slot
                return None, torch.full((self.batch_size, 1), start, device=device)
            return self.valid[:, None, None, :end].clone(), self.valid[:, :end].sum(-1, keepdim=True) - 1
        if attention_mask is None:
            attention_mask = torch.ones(self.batch_size, T, dtype=torch.bool, device=device)
        elif attention_mask.shape[0] != self.batch_size:
            self._pending = 0
            raise ValueError(f"this cache holds batch_size={self.batch_size} sequences, got a batch of {attention_mask.shape[0]}")
        else:
            self.padded = True
        counts = self.valid[:, :start].sum(-1, keepdim=True)
        positions = (counts + attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        self.valid[:, start:end] = attention_mask
        key_slot = torch.arange(end, device=device)
        query_slot = torch.arange(start, end, device=device)
        mask = (key_slot[None, :] <= query_slot[:, None])[None, None] & self.valid[:, None, None, :end]
        return mask, positions

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write this step's keys/values for one layer; return all keys/values so far."""
        try:
            _check_step(self, k, v, self._pending, self.k.dtype)
        except (TypeError, ValueError):
            self.valid[:, self.length:self.length + self._pending] = False  # undo the reservation
            self._pending = 0
            raise
        end = self.length + self._pending
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def commit(self, T: int):
        """The T reserved tokens are now cached: the next step starts after them."""
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

    def truncate(self, length: int):
        """Forget every slot from ``length`` on (speculative decoding rolls back rejected tokens, notebook 05).
        The kept slots are untouched; the forgotten ones are overwritten by the next update."""
        if not isinstance(length, int) or isinstance(length, bool) or not 0 <= length <= self.length:
            raise ValueError(f"truncate length must be an int in [0, {self.length}] (tokens cached), got {length!r}")
        self.valid[:, length:] = False
        self.length = length
        self._pending = 0


class ConcatKVCache:
    """The naive cache: starts empty and grows by ``torch.cat`` every step (a full copy each time).

    Same calls and results as ``KVCache``; only how memory is managed differs, which notebook 03
    times. No capacity, so no overflow error: it grows until the model's context runs out.
    """

    def __init__(self, config: ModelConfig, batch_size: int = 1, dtype: torch.dtype = torch.float32, device=None):
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.config, self.batch_size = config, batch_size
        empty = torch.zeros(batch_size, config.n_kv_head, 0, config.head_dim, dtype=dtype, device=device)
        self.k = [empty] * config.n_layer
        self.v = [empty] * config.n_layer
        self.valid = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
        self.length = 0
        self.bytes_copied = 0  # total bytes torch.cat has copied so far: the hidden cost of growing

    def reserve(self, T: int, attention_mask: torch.Tensor | None):
        if self.length + T > self.config.max_seq_len:
            raise ValueError(f"cache would hold {self.length + T} tokens, more than max_seq_len={self.config.max_seq_len}")
        device = self.valid.device
        if attention_mask is None:
            attention_mask = torch.ones(self.batch_size, T, dtype=torch.bool, device=device)
        if attention_mask.shape[0] != self.batch_size:
            raise ValueError(f"this cache holds batch_size={self.batch_size} sequences, got a batch of {attention_mask.shape[0]}")
        counts = self.valid.sum(-1, keepdim=True)
        positions = (counts + attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        self.valid = torch.cat([self.valid, attention_mask], dim=1)
        end = self.length + T
        key_slot = torch.arange(end, device=device)
        query_slot = torch.arange(self.length, end, device=device)
        mask = (key_slot[None, :] <= query_slot[:, None])[None, None] & self.valid[:, None, None, :]
        return mask, positions

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        try:
            _check_step(self, k, v, self.valid.shape[1] - self.length, self.k[layer].dtype)
        except (TypeError, ValueError):
            self.valid = self.valid[:, :self.length]  # undo the reservation: the cache is as it was
            raise
        self.k[layer] = torch.cat([self.k[layer], k], dim=2)
        self.v[layer] = torch.cat([self.v[layer], v], dim=2)
        self.bytes_copied += 2 * self.k[layer].numel() * self.k[layer].element_size()
        return self.k[layer], self.v[layer]

    def commit(self, T: int):
        self.length += T

    def truncate(self, length: int):
        """Forget every token from ``length`` on (the kept rows are untouched), like ``KVCache.truncate``."""
        if not isinstance(length, int) or isinstance(length, bool) or not 0 <= length <= self.length:
            raise ValueError(f"truncate length must be an int in [0, {self.length}] (tokens cached), got {length!r}")
        self.k = [k[:, :, :length] for k in self.k]
        self.v = [v[:, :, :length] for v in self.v]
        self.valid = self.valid[:, :length]
        self.length = length

    @property
    def bytes_allocated(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    @property
    def bytes_used(self) -> int:
        per_token = 2 * self.config.n_layer * self.config.kv_dim * self.k[0].element_size()
        return int(self.valid.sum().item()) * per_token

    def tokens(self) -> list[int]:
        return self.valid.sum(-1).tolist()
