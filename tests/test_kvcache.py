"""The KV cache (notebook 03): it changes no output, it counts its bytes right, and misuse is a clear error."""
import pytest
import torch
from hypothesis import given, strategies as st

import inferlab as il
from conftest import random_model, small_configs
from inferlab.core.kvcache import ConcatKVCache
from inferlab.lessons.part3 import make_cache
from inferlab.measure.counting import max_concurrent_sequences, param_bytes

CACHES = ["contiguous", "concat"]


# --- the cache changes no output ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", CACHES)
@given(config=small_configs(), seed=st.integers(0, 10**6))
def test_cached_logits_equal_full_recompute_at_every_position(kind, config, seed):
    model = random_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    T = int(torch.randint(2, 40, (1,), generator=g))
    prefill = int(torch.randint(1, T, (1,), generator=g))
    x = torch.randint(0, config.vocab_size, (2, T), generator=g)
    with torch.no_grad():
        full = model(x)
        cache = make_cache(model, kind, capacity=T, batch_size=2)
        pieces = [model(x[:, :prefill], cache=cache)]  # prefill, then one token per step
        pieces += [model(x[:, t:t + 1], cache=cache) for t in range(prefill, T)]
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-4, rtol=1e-4)
    assert cache.length == T and cache.tokens() == [T, T]


@pytest.mark.parametrize("kind", CACHES)
@given(config=small_configs(), lengths=st.lists(st.integers(1, 16), min_size=2, max_size=4),
       decode_steps=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_padded_batch_through_the_cache_equals_each_sequence_alone(kind, config, lengths, decode_steps, seed):
    model = random_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    B, width = len(lengths), max(lengths)
    seqs = [torch.randint(0, config.vocab_size, (n + decode_steps,), generator=g) for n in lengths]
    idx = torch.zeros(B, width, dtype=torch.long)
    attention_mask = torch.zeros(B, width, dtype=torch.bool)
    for b, (n, s) in enumerate(zip(lengths, seqs)):  # left padding, as generate_batch does
        idx[b, width - n:], attention_mask[b, width - n:] = s[:n], True
    with torch.no_grad():
        cache = make_cache(model, kind, capacity=width + decode_steps, batch_size=B)
        prefill = model(idx, cache=cache, attention_mask=attention_mask)
        steps = [model(torch.stack([s[n + t] for n, s in zip(lengths, seqs)])[:, None], cache=cache)
                 for t in range(decode_steps)]
        for b, (n, s) in enumerate(zip(lengths, seqs)):
            alone = model(s[None])[0]
            batched = torch.cat([prefill[b, width - n:]] + [step[b] for step in steps])
            torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)
    assert cache.tokens() == [n + decode_steps for n in lengths]


@given(config=small_configs(), seed=st.integers(0, 10**6))
def test_greedy_generate_gives_the_same_tokens_with_and_without_the_cache(config, seed, byte_tokenizer):
    config = config.with_(vocab_size=256)
    model = random_model(config, seed)
    with_cache = il.generate(model, byte_tokenizer, "KV cache!", max_new_tokens=12, use_cache=True)
    without = il.generate(model, byte_tokenizer, "KV cache!", max_new_tokens=12, use_cache=False)
    assert with_cache.tokens == without.tokens


@pytest.mark.parametrize("kind", CACHES)
def test_rewind_then_refeed_gives_the_same_logits(kind):
    config = il.ModelConfig(vocab_size=300, d_model=32, n_layer=2, n_head=4, n_kv_head=2, arch="llama", max_seq_len=32)
    model = random_model(config)
    x = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(x)
        cache = make_cache(model, kind, capacity=12)
        model(x[:, :11], cache=cache)
        for p in (10, 6, 3):  # rewind to p cached tokens, then feed token p again
            cache.truncate(p)
            torch.testing.assert_close(model(x[:, p:p + 1], cache=cache)[0, -1], full[0, p], atol=1e-5, rtol=1e-5)
            assert cache.length == p + 1 and cache.tokens() == [p + 1]
    with pytest.raises(ValueError, match="length"):
        cache.truncate(9)


# --- byte accounting ----------------------------------------------------------------------------------

def test_kv_cache_bytes_is_exported():
    assert il.kv_cache_bytes is il.measure.counting.kv_cache_bytes


@pytest.mark.parametrize("name, seq_len, batch, dtype, hand", [
    # 2 (K and V) x layers x kv heads x head_dim x tokens x batch x bytes per number
    ("gpt2", 1, 1, torch.float16, 2 * 12 * 12 * 64 * 1 * 1 * 2),                    # 36,864 = 36 KiB
    ("gpt2", 1024, 8, torch.float32, 2 * 12 * 12 * 64 * 1024 * 8 * 4),
    ("llama-2-7b", 4096, 1, torch.float16, 2 * 32 * 32 * 128 * 4096 * 1 * 2),     # 2 GiB
    ("llama-2-13b", 8192, 1, torch.float16, 2 * 40 * 40 * 128 * 8192 * 1 * 2),    # 6.71e9: "about 6.7 GB"
    ("llama-2-70b", 4096, 2, torch.bfloat16, 2 * 80 * 8 * 128 * 4096 * 2 * 2),
    ("llama-3-8b", 1, 1, torch.float16, 2 * 32 * 8 * 128 * 1 * 1 * 2),             # 131,072 = 128 KiB
    ("mistral-7b", 32768, 4, torch.int8, 2 * 32 * 8 * 128 * 32768 * 4 * 1),
    ("qwen2.5-0.5b", 32768, 1, torch.bfloat16, 2 * 24 * 2 * 64 * 32768 * 1 * 2),   # head_dim = 896 / 14 = 64
    ("inferlab-main", 512, 1, torch.float32, 2 * 4 * 4 * 32 * 512 * 1 * 4),        # head_dim = 256 / 8 = 32
])
def test_kv_cache_bytes_against_hand_computation(name, seq_len, batch, dtype, hand):
    assert il.kv_cache_bytes(il.MODEL_CONFIGS[name], seq_len, batch_size=batch, dtype=dtype) == hand


def test_published_figures():
    llama2_13b = il.kv_cache_bytes(il.MODEL_CONFIGS["llama-2-13b"], 8192)
    assert llama2_13b == 6_710_886_400 and round(llama2_13b / 1e9, 1) == 6.7
    assert il.kv_cache_bytes(il.MODEL_CONFIGS["llama-3-8b"], 1) == 128 * 1024
    mqa = il.MODEL_CONFIGS["llama-2-7b"].with_(n_kv_head=1)
    assert il.kv_cache_bytes(mqa, 1) * 32 == il.kv_cache_bytes(il.MODEL_CONFIGS["llama-2-7b"], 1)


def test_concurrent_sequences_by_hand():
    cfg = il.MODEL_CONFIGS["llama-3-8b"]
    weights = 8_030_261_248 * 2                 # published parameter count x 2 bytes
    per_sequence = 2 * 32 * 8 * 128 * 8192 * 2  # 1 GiB at 8,192 tokens
    assert param_bytes(cfg) == weights
    for gb in (24, 80, 141):
        assert max_concurrent_sequences(cfg, 8192, gb) == (gb * 10**9 - weights) // per_sequence
    assert max_concurrent_sequences(il.MODEL_CONFIGS["llama-2-13b"], 8192, 24) == 0  # weights alone: 26 GB


def test_contiguous_cache_bytes_allocated_and_used():
    config = il.ModelConfig(vocab_size=300, d_model=64, n_layer=3, n_head=8, n_kv_head=2, arch="llama", max_seq_len=64)
    model = random_model(config)
    cache = il.KVCache(config, batch_size=2, capacity=20)
    per_token = 2 * 3 * 2 * 8 * 4              # K and V x layers x kv heads x head_dim x float32
    assert cache.bytes_allocated == 2 * 20 * per_token == il.kv_cache_bytes(config, 20, 2, torch.float32)
    assert cache.bytes_used == 0
    idx = torch.randint(0, 300, (2, 6))
    attention_mask = torch.tensor([[True] * 6, [False] * 4 + [True] * 2])  # second sequence: 2 real tokens, 4 padding
    with torch.no_grad():
        model(idx, cache=cache, attention_mask=attention_mask)
        model(torch.randint(0, 300, (2, 1)), cache=cache)
    assert cache.tokens() == [7, 3]
    assert cache.bytes_used == (7 + 3) * per_token
    assert cache.bytes_allocated == 2 * 20 * per_token  # preallocated: never grows


def test_concat_cache_grows_and_counts_its_copies():
    config = il.ModelConfig(vocab_size=300, d_model=32, n_layer=2, n_head=4, arch="gpt2", max_seq_len=64)
    model = random_model(config)
    cache = ConcatKVCache(config)
    per_token = 2 * 2 * 4 * 8 * 4
    with torch.no_grad():
        model(torch.randint(0, 300, (1, 5)), cache=cache)
        assert cache.bytes_allocated == cache.bytes_used == 5 * per_token
        model(torch.randint(0, 300, (1, 1)), cache=cache)
    assert cache.bytes_allocated == cache.bytes_used == 6 * per_token
    assert cache.bytes_copied == 5 * per_token + 6 * per_token  # each append copies everything so far


# --- misuse is a clear error --------------------------------------------------------------------------

def small_model(**changes):
    config = il.ModelConfig(**{**dict(vocab_size=300, d_model=32, n_layer=2, n_head=4, n_kv_head=2, arch="llama",
                                      max_seq_len=16), **changes})
    return random_model(config)


def test_overflow_is_a_clear_error_and_the_cache_stays_usable():
    model = small_model()
    cache = il.KVCache(model.config, capacity=6)
    with torch.no_grad():
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="KV cache full.*capacity 6"):
            model(torch.zeros(1, 2, dtype=torch.long), cache=cache)
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="KV cache full"):  # never a silent wrap to slot 0
            model(torch.zeros(1, 1, dtype=torch.long), cache=cache)
    assert cache.length == 6 and cache.tokens() == [6]


def test_concat_cache_stops_at_the_context():
    model = small_model()
    cache = ConcatKVCache(model.config)
    with torch.no_grad():
        model(torch.zeros(1, 16, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="max_seq_len=16"):
            model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("kind", CACHES)
def test_a_cache_for_another_model_is_a_clear_error(kind):
    model = small_model()
    other = small_model(n_kv_head=4)  # same d_model, different number of key/value heads
    cache = make_cache(other, kind, capacity=8)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"update expected k of shape .*\[1, 4, 3, 8\], got \[1, 2, 3, 8\]"):
            model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    assert cache.length == 0 and cache.tokens() == [0]  # nothing half-written
    with torch.no_grad():
        other(torch.zeros(1, 3, dtype=torch.long), cache=cache)  # still works for its own model
    assert cache.tokens() == [3]


@pytest.mark.parametrize("kind", CACHES)
def test_wrong_batch_size_is_a_clear_error(kind):
    model = small_model()
    cache = make_cache(model, kind, capacity=8, batch_size=2)
    with torch.no_grad():
        with pytest.raises(ValueError, match="batch_size=2"):
            model(torch.zeros(3, 2, dtype=torch.long), cache=cache, attention_mask=torch.ones(3, 2, dtype=torch.bool))
        with pytest.raises(ValueError, match="shape of idx"):  # positions counted for the cache's 2 sequences
            model(torch.zeros(3, 2, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("kind", CACHES)
def test_wrong_dtype_is_a_clear_error(kind):
    model = small_model()
    cache = (il.KVCache(model.config, capacity=8, dtype=torch.float16) if kind == "contiguous"
             else ConcatKVCache(model.config, dtype=torch.float16))
    with torch.no_grad(), pytest.raises(TypeError, match="update expected k of dtype torch.float16"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("kind", CACHES)
def test_update_checks_k_and_v_by_name(kind):
    model = small_model()
    cache = make_cache(model, kind, capacity=8)
    cache.reserve(2, None)
    good = torch.zeros(1, 2, 2, 8)
    with pytest.raises(ValueError, match="update expected v of shape"):
        cache.update(0, good, torch.zeros(1, 2, 3, 8))
    cache.reserve(2, None)
    with pytest.raises(TypeError, match="update expected k to be a torch.Tensor"):
        cache.update(0, [[0.0]], good)


@pytest.mark.parametrize("call, error, match", [
    (lambda: il.KVCache("gpt2"), TypeError, "config must be a ModelConfig"),
    (lambda: il.KVCache(il.MODEL_CONFIGS["gpt2"], capacity=0), ValueError, "capacity must be a positive int"),
    (lambda: il.KVCache(il.MODEL_CONFIGS["gpt2"], batch_size=0), ValueError, "batch_size must be a positive int"),
    (lambda: ConcatKVCache(il.MODEL_CONFIGS["gpt2"], batch_size=-1), ValueError, "batch_size"),
    (lambda: il.kv_cache_bytes("gpt2", 10), TypeError, "config must be a ModelConfig"),
    (lambda: il.kv_cache_bytes(il.MODEL_CONFIGS["gpt2"], 0), ValueError, "seq_len must be >= 1"),
    (lambda: il.kv_cache_bytes(il.MODEL_CONFIGS["gpt2"], 1.5), TypeError, "seq_len must be an int"),
    (lambda: il.kv_cache_bytes(il.MODEL_CONFIGS["gpt2"], 8, batch_size=0), ValueError, "batch_size must be >= 1"),
    (lambda: il.kv_cache_bytes(il.MODEL_CONFIGS["gpt2"], 8, dtype="fp16"), ValueError, "dtype must be one of"),
    (lambda: make_cache(small_model(), "paged"), ValueError, "kind must be one of"),
])
def test_bad_arguments_are_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@given(st.integers(1, 4), st.integers(1, 12), st.integers(0, 10**6))
def test_one_token_fast_path_gives_the_general_mask_and_positions(batch, prompt_len, seed):
    cfg = il.ModelConfig(vocab_size=300, d_model=16, n_layer=1, n_head=2, max_seq_len=32)
    g = torch.Generator().manual_seed(seed)
    pad = torch.rand(batch, prompt_len, generator=g) < 0.7
    pad[:, -1] = True
    caches = [il.KVCache(cfg, batch, 20), il.KVCache(cfg, batch, 20)]
    for c in caches:
        c.reserve(prompt_len, pad)
        c.commit(prompt_len)
    fast = caches[0].reserve(1, None)                                  # T == 1, no attention mask
    general = caches[1].reserve(1, torch.ones(batch, 1, dtype=torch.bool))
    assert torch.equal(fast[0], general[0]) and torch.equal(fast[1], general[1])
    assert torch.equal(caches[0].valid, caches[1].valid)


@given(config=small_configs(), seed=st.integers(0, 10**6))
def test_a_decode_step_without_padding_needs_no_mask_and_gives_the_masked_logits(config, seed):
    model = random_model(config, seed)
    x = torch.randint(0, config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for name in ("sdpa", "reference"):
            model.attention = name
            plain, padded = il.KVCache(config, 2, 9), il.KVCache(config, 2, 9)
            model(x[:, :5], cache=plain)
            model(x[:, :5], cache=padded, attention_mask=torch.ones(2, 5, dtype=torch.bool))  # every later step masked
            for t in range(5, 8):
                torch.testing.assert_close(model(x[:, t:t + 1], cache=plain), model(x[:, t:t + 1], cache=padded),
                                           atol=2e-5, rtol=2e-5)
    model.attention = "sdpa"
    assert plain.reserve(1, None)[0] is None and padded.reserve(1, None)[0] is not None
