"""inferlab.optimize (notebook 05): quantization bounds, tiled attention, speculative decoding, truncate."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import inferlab as il
from conftest import random_model, small_configs
from inferlab.core.corpus import load_corpus, split_corpus
from inferlab.core.train import heldout_loss, token_tensor, train
from inferlab.lessons import part5
from inferlab.measure import random_weights
from inferlab.optimize import compile as opt_compile, precision, quantize, speculative
from inferlab.optimize.tiled_attention import largest_intermediate_bytes, standard_attention, tiled_attention

PROMPTS = ["The return value of a function is", "import os", "Lists are mutable sequences"]


def chisquare_pvalue(observed, expected) -> float:
    """Pearson's chi-square goodness-of-fit p-value (k - 1 degrees of freedom), from torch alone:
    P(X > stat) for X ~ chi2(df) is the regularized upper incomplete gamma Q(df / 2, stat / 2)."""
    o = torch.as_tensor(observed, dtype=torch.float64).flatten()
    e = torch.as_tensor(expected, dtype=torch.float64).flatten()
    stat = ((o - e) ** 2 / e).sum()
    df = torch.tensor((o.numel() - 1) / 2, dtype=torch.float64)
    return float(torch.special.gammaincc(df, stat / 2))


# --- quantization ------------------------------------------------------------------------------------

@given(st.integers(1, 6), st.sampled_from([32, 64, 96]), st.sampled_from(quantize.SCHEMES),
       st.sampled_from([8, 16, 32]), st.floats(1e-3, 10.0), st.integers(0, 1000))
def test_quantize_dequantize_error_within_half_a_scale(rows, cols, scheme, group, magnitude, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * magnitude
    q, scale = quantize.quantize_tensor(w, scheme, group)
    w_hat = quantize.dequantize_tensor(q, scale, scheme, group)
    per_element = scale.float()[:, None] if scheme == "int8" else scale.float().repeat_interleave(group, dim=1)
    assert (w - w_hat).abs().le(per_element / 2 * (1 + 1e-6) + 1e-12).all()
    if scheme == "q4_0":
        assert q.dtype == torch.uint8 and q.shape == (rows, cols // 2)
    else:
        assert q.dtype == torch.int8 and q.abs().max() <= 127


def test_zero_blocks_and_exact_levels_survive():
    w = torch.zeros(2, 64)
    w[1, :32] = torch.arange(-16, 16) / 16 * 7  # exactly representable in q4_0
    for scheme in quantize.SCHEMES:
        q, s = quantize.quantize_tensor(w, scheme)
        assert torch.isfinite(quantize.dequantize_tensor(q, s, scheme)).all()
    q, s = quantize.quantize_tensor(w, "q4_0")
    assert torch.equal(quantize.dequantize_tensor(q, s, "q4_0")[0], w[0])


@pytest.mark.parametrize("scheme, bits", [("q8_0", 8.5), ("q4_0", 4.5)])
def test_block_formats_store_their_promised_bits(scheme, bits):
    layer = torch.nn.Linear(256, 96, bias=False)
    ql = quantize.QuantizedLinear(layer, scheme, 32)
    stored = ql.qweight.numel() * ql.qweight.element_size() + ql.scale.numel() * ql.scale.element_size()
    assert stored == quantize.quantized_bytes(96, 256, scheme, 32) == 96 * 256 * bits / 8
    assert quantize.bits_per_weight(scheme, 32) == bits


@pytest.mark.parametrize("scheme", quantize.SCHEMES)
def test_quantized_linear_matches_its_dequantized_weight(scheme):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48)
    ql = quantize.QuantizedLinear(layer, scheme, 16, path="dequantize")
    x = torch.randn(3, 5, 64)
    want = F.linear(x, ql.dequantized_weight(), layer.bias)
    assert torch.allclose(ql(x), want, atol=1e-5)
    assert torch.allclose(ql(x), layer(x), atol=0.2)


@pytest.mark.parametrize("path", quantize.INT8_PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_every_int8_path_computes_the_same_product(path, dtype):
    """The kernel in the input's dtype, the kernel in bfloat16, and dequantize-then-multiply: one product,
    returned in the input's dtype and shape (batch and time dimensions kept)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48).to(dtype)
    ql = quantize.QuantizedLinear(layer, "int8", path=path)
    x = torch.randn(2, 7, 64).to(dtype)
    want = F.linear(x.float(), ql.dequantized_weight(torch.float32), layer.bias.float())
    out = ql(x)
    assert out.dtype == dtype and out.shape == (2, 7, 48)
    exact = path == "dequantize" and dtype == torch.float32
    assert torch.allclose(out.float(), want, atol=1e-5 if exact else 0.05)


def test_auto_picks_the_fastest_correct_int8_path(monkeypatch):
    """``auto`` measures the paths once per device and dtype, leaves out a path whose kernel is missing or wrong,
    and the layers then use the fastest."""
    monkeypatch.setattr(quantize, "_FASTEST", {})
    times = quantize.int8_path_times("cpu", torch.float32, 256, 256, repeats=2)
    assert set(times) <= set(quantize.INT8_PATHS) and "dequantize" in times and all(t > 0 for t in times.values())
    path = quantize.fastest_int8_path("cpu", torch.float32)
    assert path in quantize.INT8_PATHS and quantize.int8_path_report("cpu", torch.float32)[path] == min(
        quantize.int8_path_report("cpu", torch.float32).values())
    real = torch._weight_int8pack_mm

    def missing(*args):
        raise RuntimeError("no kernel for this device")

    monkeypatch.setattr(quantize, "_FASTEST", {})
    monkeypatch.setattr(torch, "_weight_int8pack_mm", missing)
    assert quantize.int8_path_times("cpu", torch.float32, 64, 64, repeats=1).keys() == {"dequantize"}
    assert quantize.fastest_int8_path("cpu", torch.float32) == "dequantize"
    layer = quantize.QuantizedLinear(torch.nn.Linear(64, 32), "int8")     # auto: falls back, still right
    x = torch.randn(3, 64)
    assert torch.allclose(layer(x), F.linear(x, layer.dequantized_weight(), layer.bias), atol=1e-5)
    monkeypatch.setattr(quantize, "_FASTEST", {})
    monkeypatch.setattr(torch, "_weight_int8pack_mm", lambda a, q, s: real(a, q, s) * 2)   # a wrong kernel
    assert set(quantize.int8_path_times("cpu", torch.float32, 64, 64, repeats=1)) == {"dequantize"}


def test_bad_int8_path_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown int8 path"):
        quantize.QuantizedLinear(torch.nn.Linear(8, 8), "int8", path="fast")
    with pytest.raises(ValueError, match="unknown int8 path"):
        quantize.int8_linear(torch.randn(1, 8), torch.zeros(8, 8, dtype=torch.int8), torch.ones(8), "auto")


def test_quantize_model_keeps_the_original_and_works_on_every_path(pretrained):
    model, tok = pretrained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize.quantize_model(model, "int8")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())
    ratio = model.weight_bytes() / q.weight_bytes()
    assert ratio >= 3.9
    a = il.generate(q, tok, PROMPTS[0], max_new_tokens=8)
    b = il.generate(q, tok, PROMPTS[0], max_new_tokens=8, use_cache=False)
    c = il.generate_batch(q, tok, PROMPTS[:2], max_new_tokens=8)
    assert a.tokens == b.tokens == c[0].tokens


def test_quantized_model_holds_its_quality(pretrained):
    model, tok = pretrained
    data = token_tensor(tok, split_corpus(load_corpus())[1])
    base = heldout_loss(model, data, max_windows=4)
    for scheme, tolerance in (("int8", 0.01), ("q8_0", 0.01), ("q4_0", 0.05)):
        loss = heldout_loss(quantize.quantize_model(model, scheme), data, max_windows=4)
        assert abs(loss - base) / base < tolerance, scheme


@pytest.mark.parametrize("call, match", [
    (lambda m: quantize.quantize_model(m, "int4"), "unknown quantization scheme"),
    (lambda m: quantize.quantize_model(m, "q4_0", group_size=24), "group_size 24 does not divide"),
    (lambda m: quantize.quantize_model(m, "q8_0", group_size=0), "group_size must be a positive int"),
    (lambda m: quantize.quantize_tensor(torch.randn(4, 40), "q8_0", 32), "does not divide the row width 40"),
])
def test_bad_quantization_input_is_a_clear_error(call, match):
    model = random_model(il.ModelConfig(vocab_size=64, d_model=64, n_layer=1, n_head=2, arch="llama"))
    with pytest.raises(ValueError, match=match):
        call(model)


def test_untied_gpt2_quantizes_too():
    cfg = il.ModelConfig(vocab_size=300, d_model=64, n_layer=2, n_head=4, arch="gpt2", tie_embeddings=False,
                         max_seq_len=32)
    model = random_model(cfg)
    q = quantize.quantize_model(model, "q8_0")
    x = torch.randint(0, 300, (2, 10))
    with torch.inference_mode():
        got, want = q(x), model(x)
    assert isinstance(q.tok_emb, quantize.QuantizedEmbedding) and q.tok_emb.qweight is not q.lm_head.qweight
    assert (got - want).norm() / want.norm() < 0.05


# --- precision -----------------------------------------------------------------------------------------

def test_to_precision_copies_and_errors():
    model = random_model(il.ModelConfig(vocab_size=64, d_model=32, n_layer=1, n_head=2, arch="llama"))
    half = precision.to_precision(model, "bfloat16")
    assert half.dtype == torch.bfloat16 and model.dtype == torch.float32
    assert precision.native_support("float32") == ["float32"]
    with pytest.raises(ValueError, match="unknown precision"):
        precision.to_precision(model, "int3")
    with pytest.raises(ValueError, match="unknown path"):
        precision.to_precision(model, "bfloat16", path="fast")


@pytest.mark.parametrize("path", precision.GEMV_PATHS + ("auto",))
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_linear16_paths_give_the_same_model(path, dtype, byte_tokenizer):
    """16-bit copies hold Linear16 layers: one row takes the chosen matrix-vector path, more rows the default;
    every path gives the same product (up to 16-bit rounding), and the weights stay tied and shared."""
    cfg = il.ModelConfig(vocab_size=256, d_model=64, n_layer=1, n_head=4, arch="llama", max_seq_len=32)
    model = random_model(cfg)
    half = precision.to_precision(model, dtype, path=path)
    assert isinstance(half.blocks[0].mlp.up, precision.Linear16) and half.lm_head.weight is half.tok_emb.weight
    layer = half.blocks[0].mlp.up
    x = torch.randn(1, 1, 64).to(half.dtype)
    want = F.linear(x.float(), layer.weight.float())
    assert torch.allclose(layer(x).float(), want, atol=0.02)
    assert torch.allclose(layer(x.expand(3, 2, 64)).float(), want.expand(3, 2, -1), atol=0.02)
    out = il.generate(half, byte_tokenizer, "ab", max_new_tokens=4)
    assert len(out.tokens) == 4
    assert torch.backends.mkldnn.enabled   # the switch is restored after each call


def test_gemv_paths_are_timed_per_shape(monkeypatch):
    monkeypatch.setattr(precision, "_FASTEST", {})
    times = precision.gemv_path_times("cpu", torch.bfloat16, 64, 32, repeats=2)
    assert "default" in times and set(times) <= set(precision.GEMV_PATHS)
    path = precision.fastest_gemv_path("cpu", torch.bfloat16, 64, 32)
    assert precision.gemv_paths_chosen(torch.bfloat16) == {(64, 32): path}
    with pytest.raises(ValueError, match="unknown path"):
        precision.linear16(torch.randn(1, 4), torch.randn(3, 4), None, "fastest")


# --- tiled attention ------------------------------------------------------------------------------------

@given(st.integers(1, 2), st.sampled_from([(1, 1), (4, 2), (4, 1), (2, 2)]), st.integers(1, 70), st.integers(0, 40),
       st.sampled_from([8, 16]), st.booleans(), st.integers(1, 33), st.integers(1, 33))
@settings(max_examples=30)
def test_tiled_attention_equals_sdpa(B, heads, T, extra, d, causal, block_q, block_k):
    H, KV = heads
    S = T + extra
    gen = torch.Generator().manual_seed(T * 100 + S)
    q = torch.randn(B, H, T, d, generator=gen)
    k = torch.randn(B, KV, S, d, generator=gen)
    v = torch.randn(B, KV, S, d, generator=gen)
    kk, vv = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
    mask = torch.ones(T, S, dtype=torch.bool).tril(S - T) if causal else None
    want = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
    got = tiled_attention(q, k, v, causal=causal, block_q=block_q, block_k=block_k)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert torch.allclose(standard_attention(q, k, v, causal), want, atol=1e-5, rtol=1e-5)


def test_tiled_attention_memory_grows_linearly():
    sizes = {}
    for T in (256, 512, 1024):
        q = k = v = torch.randn(1, 2, T, 64)
        sizes[T] = (largest_intermediate_bytes(tiled_attention, q, k, v, True)[0],
                    largest_intermediate_bytes(standard_attention, q, k, v, True)[0])
    assert sizes[1024][0] == 4 * sizes[256][0]        # linear: the output [T, d] is the largest tensor
    assert sizes[1024][1] == 16 * sizes[256][1]       # quadratic: the [T, T] score matrix
    assert sizes[1024][1] > 10 * sizes[1024][0]


def test_tiled_attention_bad_shapes():
    with pytest.raises(ValueError, match="KV dividing H"):
        tiled_attention(torch.randn(1, 3, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8))
    with pytest.raises(ValueError, match="at least as many keys"):
        tiled_attention(torch.randn(1, 2, 4, 8), torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8), causal=True)


# --- KVCache.truncate -------------------------------------------------------------------------------------

def test_truncate_rolls_back_exactly():
    cfg = il.ModelConfig(vocab_size=64, d_model=32, n_layer=2, n_head=4, n_kv_head=2, arch="llama", max_seq_len=32)
    model = random_model(cfg)
    x = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = model(x)
        cache = il.KVCache(cfg, capacity=20)
        model(x[:, :8], cache=cache)
        model(torch.randint(0, 64, (1, 5)), cache=cache)  # tokens that get rejected
        cache.truncate(8)
        assert cache.length == 8 and cache.tokens() == [8]
        rest = model(x[:, 8:], cache=cache)
    assert torch.allclose(rest, full[:, 8:], atol=1e-5)
    with pytest.raises(ValueError, match="truncate length"):
        cache.truncate(13)
    with pytest.raises(ValueError, match="truncate length"):
        cache.truncate(-1)


# --- speculative decoding -----------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [1, 3, 5])
def test_speculative_greedy_equals_target_greedy_bundled(pretrained, gamma):
    model, tok = pretrained
    draft, _ = il.load_pretrained("draft")
    for prompt in PROMPTS:
        want = il.generate(model, tok, prompt, max_new_tokens=24).tokens
        got = speculative.speculative_generate(model, draft, tok, prompt, 24, gamma=gamma)
        assert got.tokens == want
        assert got.accepted <= got.judged <= got.proposed and got.rounds <= 24


@given(small_configs(), st.integers(1, 5), st.integers(1, 12), st.integers(1, 20), st.integers(0, 10**6),
       st.one_of(st.none(), st.floats(0, 1)))
def test_speculative_greedy_equals_target_on_random_configs(cfg, gamma, prompt_len, n_new, seed, min_confidence):
    target = random_model(cfg, seed)
    draft_cfg = cfg.with_(n_layer=1, n_head=cfg.n_kv_head, d_model=cfg.n_kv_head * cfg.head_dim)
    draft = random_model(draft_cfg, seed + 1)
    ids = torch.randint(0, cfg.vocab_size, (prompt_len,), generator=torch.Generator().manual_seed(seed)).tolist()
    want = il.generate(target, il.BPETokenizer(), ids, max_new_tokens=n_new).tokens
    got = speculative.speculative_generate(target, draft, None, ids, n_new, gamma=gamma, min_confidence=min_confidence)
    assert got.tokens == want
    same = speculative.speculative_generate(target, target, None, ids, n_new, gamma=gamma,
                                            min_confidence=min_confidence)
    assert same.tokens == want and same.accepted == same.judged  # a draft equal to the target is always right


def test_min_confidence_sets_the_draft_length_per_round():
    cfg = il.ModelConfig(vocab_size=64, d_model=32, n_layer=2, n_head=4, arch="llama", max_seq_len=64)
    target, draft = random_model(cfg, 1), random_model(cfg.with_(n_layer=1), 2)
    ids, n = [1, 2, 3], 30
    fixed = speculative.speculative_generate(target, draft, None, ids, n, gamma=4)
    never_stops = speculative.speculative_generate(target, draft, None, ids, n, gamma=4, min_confidence=0.0)
    always_stops = speculative.speculative_generate(target, draft, None, ids, n, gamma=4, min_confidence=1.0)
    assert never_stops.tokens == always_stops.tokens == fixed.tokens
    assert (never_stops.rounds, never_stops.proposed) == (fixed.rounds, fixed.proposed)
    # one draft per round (the last round may have none: the target's own token ends the answer)
    assert always_stops.rounds - 1 <= always_stops.proposed == always_stops.draft_steps <= always_stops.rounds
    # a threshold between: rounds of different lengths, never more than gamma
    between = speculative.speculative_generate(target, draft, None, ids, n, gamma=4, min_confidence=0.05)
    assert between.rounds <= always_stops.rounds and between.proposed <= 4 * between.rounds


def _exact_joint(target, prompt, vocab, n, temperature):
    """P(first n tokens) by enumeration, for a tiny vocabulary."""
    import itertools
    probs = {}
    with torch.inference_mode():
        for seq in itertools.product(range(vocab), repeat=n):
            logits = target(torch.tensor([prompt + list(seq)]))[0, len(prompt) - 1:-1]
            p = torch.softmax(logits.double() / temperature, -1)
            probs[seq] = float(torch.prod(p[torch.arange(n), torch.tensor(seq)]))
    return probs


@pytest.mark.parametrize("min_confidence", [None, 0.4])
def test_speculative_sampling_follows_the_target_distribution(min_confidence):
    vocab, n, samples = 4, 3, 600
    cfg = il.ModelConfig(vocab_size=vocab, d_model=16, n_layer=1, n_head=2, arch="llama", max_seq_len=16)
    target, draft = random_model(cfg, 1), random_model(cfg, 2)  # different weights: many rejections
    prompt = [1, 2, 3]
    exact = _exact_joint(target, prompt, vocab, n, 1.0)
    counts = {k: 0 for k in exact}
    judged = accepted = 0
    for seed in range(samples):
        r = speculative.speculative_generate(target, draft, None, prompt, n, gamma=2, temperature=1.0, seed=seed,
                                             min_confidence=min_confidence)
        counts[tuple(r.tokens)] += 1
        judged, accepted = judged + r.judged, accepted + r.accepted
    assert 0.2 < accepted / judged < 0.95  # both the accept and the resample branches ran
    keys = sorted(exact)
    observed = [counts[k] for k in keys]
    expected = [exact[k] * samples for k in keys]
    assert chisquare_pvalue(observed, expected) > 0.001
    draft_only = _exact_joint(draft, prompt, vocab, n, 1.0)  # the test can tell distributions apart
    assert chisquare_pvalue(observed, [draft_only[k] * samples for k in keys]) < 1e-6


def test_accept_or_resample_follows_p():
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.1, 0.2, 0.3, 0.4])
    counts = torch.zeros(4)
    for _ in range(6000):
        x = int(torch.multinomial(q, 1, generator=gen))
        counts[speculative.accept_or_resample(p, q, x, gen)[1]] += 1
    assert chisquare_pvalue(counts, p * 6000) > 0.001


def test_expected_speedup_formula():
    assert speculative.expected_speedup(0.8, 4, 0.1) == pytest.approx((1 - 0.8 ** 5) / (0.2 * 1.4))
    assert speculative.expected_tokens_per_round(1.0, 3) == 4
    assert speculative.expected_speedup(0.0, 3, 0.0) == pytest.approx(1.0)


@pytest.mark.parametrize("gamma, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError)])
def test_bad_gamma_is_a_clear_error(pretrained, gamma, error):
    model, tok = pretrained
    with pytest.raises(error, match="gamma"):
        speculative.speculative_generate(model, model, tok, "import os", 4, gamma=gamma)


def test_speculative_bad_input():
    a = random_model(il.ModelConfig(vocab_size=64, d_model=16, n_layer=1, n_head=2, max_seq_len=16))
    b = random_model(il.ModelConfig(vocab_size=65, d_model=16, n_layer=1, n_head=2, max_seq_len=16))
    with pytest.raises(ValueError, match="share the vocabulary"):
        speculative.speculative_generate(a, b, None, [1, 2], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculative.speculative_generate(a, a, None, [1, 2], 15)
    with pytest.raises(ValueError, match="tokenizer"):
        speculative.speculative_generate(a, a, None, "text", 4)
    for bad, error in ((-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError), ("0.5", TypeError)):
        with pytest.raises(error, match="min_confidence"):
            speculative.speculative_generate(a, a, None, [1, 2], 4, min_confidence=bad)


# --- measurement helpers and the static cache ------------------------------------------------------------

def test_measure_helpers_on_a_tiny_model(byte_tokenizer):
    cfg = il.ModelConfig(vocab_size=256, d_model=32, n_layer=1, n_head=4, n_kv_head=2, arch="llama", max_seq_len=64)
    model = random_model(cfg)
    assert part5.decode_step_time(model, 10, warmup=0, repeats=2).median_s > 0
    cost = part5.inference_mode_cost(model, 2, 16, repeats=1)
    assert cost.train_saved_bytes > 0 and cost.inference_saved_bytes == 0 and not model.training
    points = part5.batching_sweep(model, byte_tokenizer, ["ab", "cde"], (1, 2), max_new_tokens=3, repeats=1)
    assert [p.batch_size for p in points] == [1, 2] and all(p.tokens_per_s > 0 for p in points)
    assert part5.greedy_agreement([1, 2, 3, 4], [1, 2, 9, 4]) == (0.75, 2)
    gqa = part5.gqa_sweep(cfg.with_(n_head=4, n_kv_head=4), (None, 2, 1), context=16, batch_size=2, repeats=1)
    assert [p.cache_bytes for p in gqa] == [2 * 4 * 8 * 16 * 2 * 4 // k for k in (1, 2, 4)]
    assert [p.kind for p in gqa] == ["multi-head", "grouped-query", "multi-query"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_random_gpt_for_sweeps_is_a_whole_model(arch):
    """The fast random models of gqa_sweep: real memory for every weight, rotary tables right, MLPs shared."""
    from inferlab.core.model import rope_tables
    cfg = il.ModelConfig(vocab_size=64, d_model=32, n_layer=2, n_head=4, n_kv_head=4, arch=arch, max_seq_len=16)
    weights = {}
    mha = random_weights.random_model(cfg, torch.float32, weights=weights)
    mqa = random_weights.random_model(cfg.with_(n_kv_head=1), torch.float32, weights=weights)
    for m in (mha, mqa):
        params = list(m.parameters())
        assert all(p.device.type == "cpu" for p in params)
        assert len({p.data_ptr() for p in params}) == len(params)   # no two weights share memory
        assert torch.isfinite(m(torch.randint(0, 64, (2, 5)))).all()
        if arch == "llama":
            assert torch.equal(m.rope_cos, rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)[0])
    assert mha.blocks[0].mlp.up.weight.data_ptr() == mqa.blocks[0].mlp.up.weight.data_ptr()
    assert mqa.blocks[0].attn.k_proj.weight.shape == (cfg.head_dim, 32)


def test_static_cache_gives_the_same_logits():
    cfg = il.ModelConfig(vocab_size=64, d_model=32, n_layer=2, n_head=4, n_kv_head=2, arch="llama", max_seq_len=32)
    model = random_model(cfg)
    x = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = model(x)
        cache = opt_compile.StaticKVCache(cfg, capacity=16)
        parts = [model(x[:, :6], cache=cache)] + [model(x[:, t:t + 1], cache=cache) for t in range(6, 10)]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


# --- distillation (how the bundled draft is made) ----------------------------------------------------

def test_distillation_loss_is_the_teachers_entropy_for_the_teacher_itself():
    from inferlab.optimize.distill import distillation_loss
    teacher = random_model(il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=2, max_seq_len=32), seed=1)
    x = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p = teacher(x).softmax(-1)
    entropy = -(p * p.log()).sum(-1).mean()
    assert distillation_loss(teacher)(teacher, x, None).item() == pytest.approx(entropy.item(), rel=1e-5)


def test_distillation_moves_the_student_towards_the_teacher():
    from inferlab.optimize.distill import distillation_loss, greedy_continuations
    cfg = il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=2, max_seq_len=64)
    teacher = random_model(cfg, seed=1)
    student = il.GPT(cfg.with_(d_model=16, n_head=1, n_kv_head=1, d_ff=None))
    data = torch.randint(0, 300, (2000,), generator=torch.Generator().manual_seed(0))
    answers = greedy_continuations(teacher, data, num=8, new_tokens=16, prompt_len=(2, 4), batch_size=4)
    # the stream is prompt + the teacher's greedy continuation, piece after piece
    first = answers[:40].tolist()
    for length in (2, 3, 4):
        prompt = first[:length]
        if first[length:length + 16] == il.generate(teacher, None, prompt, max_new_tokens=16).tokens:
            break
    else:
        pytest.fail("the first piece is not a prompt followed by the teacher's greedy answer")
    loss = distillation_loss(teacher)
    x = answers[:48][None]
    before = loss(student, x, None).item()
    train(student, answers, None, steps=30, batch_size=4, seq_len=32, lr=1e-2, warmup=1, progress=False,
             loss_fn=loss)
    assert loss(student, x, None).item() < before
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is never trained


@pytest.mark.parametrize("kwargs, match", [({"num": 0}, "num"), ({"new_tokens": 0}, "new_tokens"),
                                           ({"prompt_len": (5, 2)}, "prompt_len")])
def test_greedy_continuations_bad_input(kwargs, match):
    from inferlab.optimize.distill import greedy_continuations
    model = random_model(il.ModelConfig(vocab_size=300, d_model=16, n_layer=1, n_head=1, max_seq_len=32))
    args = {"num": 2, "new_tokens": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        greedy_continuations(model, torch.arange(100), **args)


# --- weight formats: quality against float32, decode speed, the memory-bound model ----------------------

def test_quality_vs_reference_kl_is_zero_for_the_same_model_and_positive_otherwise():
    cfg = il.ModelConfig(vocab_size=64, d_model=32, n_layer=1, n_head=4, arch="llama", max_seq_len=32)
    model = random_model(cfg)
    data = torch.randint(0, 64, (16 * 5 + 1,), generator=torch.Generator().manual_seed(0))
    q = part5.quality_vs_reference(model, {"same": model, "q4_0": quantize.quantize_model(model, "q4_0")}, data,
                                     seq_len=16, batch_size=2, show_progress=False)
    assert q["same"].kl_per_token == pytest.approx(0.0, abs=1e-6) and q["same"].loss_change == 0.0
    assert q["q4_0"].kl_per_token > 0 and q["q4_0"].windows == 5 and q["q4_0"].loss_change_se >= 0
    assert q["q4_0"].loss == pytest.approx(heldout_loss(quantize.quantize_model(model, "q4_0"), data, 16),
                                           rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 windows"):
        part5.quality_vs_reference(model, {"m": model}, data[:20], seq_len=16)
    with pytest.raises(TypeError, match="models"):
        part5.quality_vs_reference(model, [model], data, seq_len=16)


def test_in_format_and_format_speeds():
    cfg = il.ModelConfig(vocab_size=64, d_model=64, n_layer=1, n_head=4, arch="llama", max_seq_len=32)
    model = random_model(cfg)
    made = {name: part5.in_format(model, name) for name in part5.FORMATS}
    assert made["float32"] is model and made["bfloat16"].dtype == torch.bfloat16
    assert isinstance(made["q4_0"].blocks[0].mlp.up, quantize.QuantizedLinear)
    speeds = part5.format_speeds(model, ("float32", "bfloat16", "int8"), context=8, repeats=2, warmup=0, models=made)
    assert list(speeds) == ["float32", "bfloat16", "int8"]
    assert speeds["float32"].logits_error == 0.0 and speeds["float32"].speedup.median == pytest.approx(1.0)
    assert 0 < speeds["int8"].logits_error < 0.1 and speeds["int8"].weight_bytes < speeds["float32"].weight_bytes / 3
    with pytest.raises(ValueError, match="unknown weight format"):
        part5.in_format(model, "int4")
    with pytest.raises(ValueError, match="float32"):
        part5.format_speeds(model, ("int8",))


def test_format_copies_leave_the_original_and_share_nothing():
    """to_precision converts each weight straight into the copy (tied weights stay tied); quantize_model does
    not copy the float weights it replaces; the original model is never changed."""
    cfg = il.ModelConfig(vocab_size=64, d_model=32, n_layer=2, n_head=4, arch="llama", max_seq_len=32)
    model = random_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    half = precision.to_precision(model, "bfloat16")
    assert half.lm_head.weight is half.tok_emb.weight and half.rope_cos.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    assert not {p.data_ptr() for p in half.parameters()} & {p.data_ptr() for p in model.parameters()}
    quantize.quantize_model(model, "int8")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_memory_bound_model_is_the_published_layer_shape():
    big = part5.memory_bound_model("gpt2", n_layer=1, vocab_size=128, max_seq_len=16)
    cfg = il.MODEL_CONFIGS["gpt2"]
    assert big.config.d_model == cfg.d_model and big.config.d_ff == cfg.d_ff and big.config.n_layer == 1
    assert big.config.vocab_size == 128 and not big.training
    assert torch.isfinite(big(torch.randint(0, 128, (1, 4)))).all()
    with pytest.raises(ValueError, match="unknown shape"):
        part5.memory_bound_model("gpt-5")
    with pytest.raises(ValueError, match="n_layer"):
        part5.memory_bound_model("gpt2", n_layer=0)


def test_step_cost_and_speculative_sweep(pretrained, byte_tokenizer):
    cfg = il.ModelConfig(vocab_size=256, d_model=32, n_layer=2, n_head=4, arch="llama", max_seq_len=64)
    target, draft = random_model(cfg), random_model(cfg.with_(n_layer=1), seed=1)
    cost = part5.step_cost(target, draft, context=8, repeats=3, warmup=0)
    assert cost.c.median > 0 and cost.target.repeats == cost.draft.repeats == 3
    plain, spec = part5.speculative_sweep(target, draft, byte_tokenizer, ["ab", "xyz"],
                                            {2: dict(gamma=2), "adaptive": dict(gamma=4, min_confidence=0.3)},
                                            max_new_tokens=6, repeats=2, warmup=0, show_progress=False)
    assert plain.repeats == 2 and set(spec) == {2, "adaptive"}
    for pt in spec.values():
        assert len(pt.runs) == 2 and pt.tokens == 12 and 0 <= pt.alpha <= 1 and pt.speedup.median > 0
        assert pt.verify_pass_s > 0 and pt.draft_step_s > 0
        for r, p in zip(pt.runs, ["ab", "xyz"]):
            assert r.tokens == il.generate(target, byte_tokenizer, p, max_new_tokens=6).tokens
    with pytest.raises(ValueError, match="plain"):
        part5.speculative_sweep(target, draft, byte_tokenizer, ["ab"], {"plain": dict(gamma=2)})


def test_batching_sweep_alternates_and_reports_spread(byte_tokenizer):
    cfg = il.ModelConfig(vocab_size=256, d_model=32, n_layer=1, n_head=4, arch="llama", max_seq_len=64)
    model = random_model(cfg)
    points = part5.batching_sweep(model, byte_tokenizer, ["ab", "cde"], (1, 2), max_new_tokens=3, repeats=2)
    assert [p.batch_size for p in points] == [1, 2] and all(p.timing.repeats == 2 for p in points)
    assert all(p.latency_s == p.timing.median_s and p.tpot_s > 0 for p in points)
    with pytest.raises(ValueError, match="batch_sizes"):
        part5.batching_sweep(model, byte_tokenizer, ["ab"], (0,))


def test_a_kernel_that_fails_at_run_time_falls_back_to_dequantize(monkeypatch):
    layer = quantize.QuantizedLinear(torch.nn.Linear(64, 32), "int8", path="kernel")
    x = torch.randn(5, 64)
    want = F.linear(x, layer.dequantized_weight(), layer.bias)

    def missing(*args):
        raise RuntimeError("no kernel for this shape")

    monkeypatch.setattr(torch, "_weight_int8pack_mm", missing)
    assert torch.allclose(layer(x), want, atol=1e-5)
