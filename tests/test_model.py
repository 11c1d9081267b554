import pytest
import torch
from hypothesis import given, strategies as st

import inferlab as il
from conftest import random_model, small_configs

# Published parameter counts (tied embeddings counted once).
PUBLISHED = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
             "llama-2-7b": 6_738_415_616, "llama-2-13b": 13_015_864_320, "llama-2-70b": 68_976_648_192,
             "llama-3-8b": 8_030_261_248, "llama-3-70b": 70_553_706_496, "mistral-7b": 7_241_732_096,
             "qwen2.5-0.5b": 494_032_768}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_real_shapes_have_published_parameter_counts(name):
    with torch.device("meta"):  # shapes only, no memory
        model = il.GPT(il.MODEL_CONFIGS[name])
    assert model.num_params() == PUBLISHED[name]


def test_gpt2_forward_shape():
    model = il.GPT(il.MODEL_CONFIGS["gpt2"].with_(n_layer=1)).eval()
    logits = model(torch.randint(0, 50257, (2, 7)))
    assert logits.shape == (2, 7, 50257)


@given(small_configs(), st.integers(0, 10**6))
def test_cached_logits_equal_uncached_at_every_position(config, seed):
    model = random_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    T = int(torch.randint(2, 40, (1,), generator=g))
    x = torch.randint(0, config.vocab_size, (2, T), generator=g)
    cuts = sorted(set(torch.randint(1, T, (3,), generator=g).tolist()))
    with torch.no_grad():
        full = model(x)
        cache = il.KVCache(config, batch_size=2, capacity=T)
        pieces, start = [], 0
        for end in cuts + [T]:  # prefill a chunk, then more chunks / single tokens
            pieces.append(model(x[:, start:end], cache=cache))
            start = end
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-4, rtol=1e-4)


@given(small_configs(), st.lists(st.integers(1, 20), min_size=2, max_size=4), st.integers(0, 10**6))
def test_padded_batch_equals_one_by_one(config, lengths, seed):
    model = random_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, config.vocab_size, (n,), generator=g) for n in lengths]
    width = max(lengths)
    idx = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.bool)
    for b, s in enumerate(seqs):  # left padding, as generate_batch does
        idx[b, width - len(s):], mask[b, width - len(s):] = s, True
    with torch.no_grad():
        batched = model(idx, attention_mask=mask)
        for b, s in enumerate(seqs):
            alone = model(s[None])[0]
            torch.testing.assert_close(batched[b, width - len(s):], alone, atol=1e-4, rtol=1e-4)


def test_explicit_positions_match_default():
    config = il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=4, arch="llama", max_seq_len=32)
    model = random_model(config)
    x = torch.randint(0, 300, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, positions=torch.arange(10)[None]))


@pytest.mark.parametrize("kwargs, error", [
    (dict(n_head=3), ValueError),            # d_model 64 not divisible by 3
    (dict(n_kv_head=3), ValueError),         # does not divide n_head
    (dict(arch="mamba"), ValueError),
    (dict(vocab_size=0), ValueError),
    (dict(n_layer=2.5), TypeError),
])
def test_bad_configs_are_clear_errors(kwargs, error):
    base = dict(vocab_size=300, d_model=64, n_layer=1, n_head=4)
    with pytest.raises(error, match=next(iter(kwargs))):
        il.ModelConfig(**{**base, **kwargs})


def test_unknown_config_name():
    with pytest.raises(ValueError, match="unknown config name 'gpt5'"):
        il.get_config("gpt5")


def test_bad_model_inputs_are_clear_errors():
    config = il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=4, max_seq_len=16)
    model = random_model(config)
    with pytest.raises(ValueError, match="token ids must lie in"):
        model(torch.tensor([[5, 300]]))
    with pytest.raises(ValueError, match="positions must lie in"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([1, 2, 3])
    with pytest.raises(TypeError, match="ModelConfig"):
        il.GPT("gpt2")


def test_kv_cache_overflow_is_a_clear_error_and_loses_nothing():
    config = il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=4, max_seq_len=16)
    model = random_model(config)
    cache = il.KVCache(config, capacity=5)
    with torch.no_grad():
        model(torch.zeros(1, 4, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="KV cache full"):
            model(torch.zeros(1, 2, dtype=torch.long), cache=cache)
        assert cache.length == 4
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)  # the last slot is still usable
    assert cache.length == 5 and cache.tokens() == [5]


def test_last_only_gives_the_last_rows_of_the_full_logits():
    config = il.ModelConfig(vocab_size=300, d_model=32, n_layer=2, n_head=4, arch="llama", max_seq_len=32)
    model = random_model(config)
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(x, last_only=True), model(x)[:, -1:])


def test_best_device_is_one_torch_can_use_and_bad_devices_are_named():
    from inferlab.core.device import as_device
    device = il.best_device()
    assert device.type in ("cuda", "mps", "cpu")
    assert device.type != "cpu" or not torch.cuda.is_available()
    model, _ = il.load_pretrained("draft", device=device)
    assert model.device.type == device.type
    with pytest.raises(TypeError, match="device must be"):
        as_device(3)
    with pytest.raises(ValueError, match="not one torch can use here"):
        as_device("tpu-9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not one torch can use here"):
            il.load_pretrained(device="cuda")
