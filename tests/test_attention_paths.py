"""The model's attention runs through F.scaled_dot_product_attention; ``attend`` is the readable reference the
lessons show. Both must give the same logits, to float rounding, on every path: no cache, a contiguous cache
(prefill, then decode), a left-padded batch, and the engine's paged cache (packed prefill, then decode)."""
import pytest
import torch
from hypothesis import given, strategies as st

import inferlab as il
from conftest import random_model, small_configs
from inferlab.core.kvcache import KVCache
from inferlab.engine.paged_cache import KVPool, PagedBatch


def both(model, run):
    """``run()`` with the reference attention, then with SDPA; the two results."""
    out = {}
    for name in ("reference", "sdpa"):
        model.attention = name
        with torch.no_grad():
            out[name] = run()
    model.attention = "sdpa"
    return out["reference"], out["sdpa"]


def close(a, b):
    torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


@given(config=small_configs(), seed=st.integers(0, 10**6))
def test_sdpa_equals_the_reference_attention_on_every_cache_path(config, seed):
    model = random_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, config.vocab_size, (2, 12), generator=g)
    close(*both(model, lambda: model(x)))                                            # no cache

    def cached():
        cache = KVCache(config, 2, 16)
        return torch.cat([model(x[:, :9], cache=cache), model(x[:, 9:10], cache=cache), model(x[:, 10:], cache=cache)], 1)
    close(*both(model, cached))                                                      # contiguous cache

    pad = torch.ones(2, 12, dtype=torch.bool)
    pad[0, :5] = False                                                               # row 0 left-padded
    ref, fast = both(model, lambda: model(x, attention_mask=pad))
    close(ref[pad], fast[pad])                                                       # padded batch (real tokens)

    def paged():
        pool = KVPool(config, num_blocks=12, block_size=4)
        tables = [[3, 7, 1, 9], [0, 5, 11, 2]]
        first = PagedBatch(pool, tables, [0, 0], [9, 6], packed=True)                # prefill, packed
        ids = torch.cat([x[0, :9], x[1, :6]])[None]
        a = model(ids, positions=first.positions, cache=first, logits_to_keep=first.last)
        second = PagedBatch(pool, tables, [9, 6], [1, 1])                            # decode
        b = model(torch.stack([x[0, 9:10], x[1, 6:7]]), positions=second.positions, cache=second, last_only=True)
        return torch.cat([a[0], b[:, 0]])
    close(*both(model, paged))


def test_the_attention_choice_is_checked():
    model = random_model(il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=2, max_seq_len=32))
    assert model.attention == "sdpa"
    with pytest.raises(ValueError, match="attention must be one of"):
        model.attention = "flash"


def test_a_query_with_no_visible_key_gets_zeros_in_both():
    from inferlab.core.model import attend, sdpa_attend
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    mask = torch.ones(1, 1, 3, 5, dtype=torch.bool)
    mask[0, 0, 1] = False
    for fn in (attend, sdpa_attend):
        out = fn(q, k, v, mask)
        assert torch.isfinite(out).all() and out[0, :, 1].abs().sum() == 0
