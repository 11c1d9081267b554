"""Static cache and ``torch.compile``: fewer Python and dispatch overheads per step (notebook 05).

A small model's decode step is overhead-bound (notebook 04): most of its time goes to Python and to
launching dozens of tiny operations, not to memory or arithmetic. ``torch.compile`` traces the step
and fuses the small elementwise operations into a few generated kernels. Compilation is slow and
recompiles whenever a shape changes, so it pairs with a **static cache**: ``StaticKVCache`` always
hands attention keys/values of its full capacity (empty slots masked), so every decode step has the
same shapes. It is an opt-in switch, off by default: the compile time is paid before the first token.
"""
from __future__ import annotations

import time

import torch

from ..core.kvcache import KVCache


class StaticKVCache(KVCache):
    """A ``KVCache`` whose attention always spans the full capacity: same shapes at every decode step."""

    def reserve(self, T: int, attention_mask):
        mask, positions = super().reserve(T, attention_mask)
        if mask is None:   # the new token sees every filled slot; the empty ones still need hiding
            mask = self.valid[:, None, None, :self.length + T]
        full = torch.zeros(*mask.shape[:-1], self.capacity, dtype=torch.bool, device=mask.device)
        full[..., :mask.shape[-1]] = mask
        return full, positions

    def update(self, layer: int, k, v):
        super().update(layer, k, v)
        return self.k[layer], self.v[layer]


def compile_model(model, mode: str | None = None, dynamic: bool | None = None):
    """``torch.compile(model)``: compilation itself happens lazily, on the first call (time it)."""
    return torch.compile(model, mode=mode, dynamic=dynamic)


def time_compiled_decode(model, context: int = 32, steps: int = 20, mode: str | None = None):
    """(compile seconds, eager step seconds, compiled step seconds, same logits?) for decode steps
    through a ``StaticKVCache``. Opt-in: compiling takes tens of seconds on a laptop CPU."""
    from ..measure.timing import measure
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (1, context + 1), generator=gen)
    results = {}
    compiled = compile_model(model, mode=mode)
    for name, m in (("eager", model), ("compiled", compiled)):
        cache = StaticKVCache(cfg, 1, context + 1, dtype=model.dtype)
        with torch.inference_mode():
            model(ids[:, :context], cache=cache)  # prefill eagerly
            t0 = time.perf_counter()
            first = m(ids[:, context:], cache=cache)
            cache.truncate(context)
            first_s = time.perf_counter() - t0

            def step():
                m(ids[:, context:], cache=cache)
                cache.truncate(context)

            results[name] = (first_s, measure(step, warmup=2, repeats=steps).median_s, first)
    same = torch.allclose(results["eager"][2], results["compiled"][2], atol=1e-4, rtol=1e-4)
    return results["compiled"][0], results["eager"][1], results["compiled"][1], same
