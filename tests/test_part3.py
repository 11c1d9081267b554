"""Notebook 03: prefill/decode measurement, the attention the widget shows, its callbacks, tables and exercises."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import inferlab as il  # noqa: E402
from conftest import random_model, small_configs  # noqa: E402
from inferlab import exercises as ex  # noqa: E402
from inferlab import phases  # noqa: E402
from inferlab.counting import cache_equals_weights_context, forward_flops, max_concurrent_sequences  # noqa: E402
from inferlab.viz import kvcache as viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def tiny_model(**changes):
    config = il.ModelConfig(**{**dict(vocab_size=256, d_model=64, n_layer=2, n_head=4, n_kv_head=2, arch="llama",
                                      max_seq_len=64), **changes})
    return random_model(config)


# --- prefill and decode, timed and counted -----------------------------------------------------------

@pytest.mark.parametrize("kind", phases.CACHE_KINDS)
def test_time_prefill_and_decode_return_one_timing_per_length(kind):
    model = tiny_model()
    pre = phases.time_prefill(model, [1, 8, 30], kind=kind, warmup=0, repeats=2)
    dec = phases.time_decode(model, [0, 5, 40, 5], kind=kind, warmup=0, repeats=2)
    assert pre.x == [1, 8, 30] and len(pre.timings) == 3 and pre.kind == kind
    assert dec.x == [0, 5, 40, 5] and len(dec.median_ms) == len(dec.iqr_ms) == 4
    assert all(t.repeats == 2 and t.median_s > 0 for t in pre.timings + dec.timings)


@pytest.mark.parametrize("call, match", [
    (lambda m: phases.time_decode(m, [64]), "positions must be a non-empty list of ints in \\[0, 63\\]"),
    (lambda m: phases.time_decode(m, []), "positions"),
    (lambda m: phases.time_prefill(m, [0]), "lengths must be a non-empty list of ints in \\[1, 64\\]"),
    (lambda m: phases.time_prefill(m, [4], kind="paged"), "kind must be one of"),
])
def test_bad_lengths_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny_model())


def test_step_flops_follow_the_counting_module():
    cfg = il.MODEL_CONFIGS["gpt2"]
    assert phases.prefill_flops(cfg, [1, 100]) == [forward_flops(cfg, 1), forward_flops(cfg, 100)]
    assert phases.decode_flops(cfg, [0, 99]) == [forward_flops(cfg, 1, 1), forward_flops(cfg, 1, 100)]
    assert phases.decode_flops(cfg, [99], use_cache=False) == [forward_flops(cfg, 100)]
    # without the cache, step p repeats the cached step's work for each of its p + 1 tokens (the masked
    # score matrix is computed in full, as FlopCounterMode counts it)
    cached, uncached = phases.decode_flops(cfg, [99])[0], phases.decode_flops(cfg, [99], use_cache=False)[0]
    assert uncached == 100 * cached


def test_wide_tokenizer_decodes_every_id_of_a_real_vocabulary(byte_tokenizer):
    wide = phases.wide_tokenizer(byte_tokenizer, 50257)
    assert wide.vocab_size == 50257
    assert wide.encode("hello") == byte_tokenizer.encode("hello")
    assert wide.decode([104, 105, 50256]) == "hi<50256>"
    with pytest.raises(ValueError, match="vocab_size"):
        phases.wide_tokenizer(byte_tokenizer, 100)


# --- the attention weights the widget shows -----------------------------------------------------------

@given(config=small_configs(), seed=st.integers(0, 10**6))
def test_attention_weights_sum_to_one_and_reproduce_the_attention_output(config, seed):
    """Reference: the weights times the values, through o_proj, must give exactly what each attention module
    returned in the model's own forward pass."""
    model = random_model(config, seed)
    x = torch.randint(0, config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(seed))
    outputs, values = {}, {}
    hooks = [b.attn.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out))
             for i, b in enumerate(model.blocks)]
    hooks += [b.attn.v_proj.register_forward_hook(lambda m, a, out, i=i: values.__setitem__(i, out))
              for i, b in enumerate(model.blocks)]
    logits, weights = phases.attention_weights(model, x)
    for h in hooks:
        h.remove()
    assert weights.shape == (config.n_layer, 2, config.n_head, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert (weights.triu(1) == 0).all()  # causal: nothing from the future
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
        for layer, block in enumerate(model.blocks):
            v = values[layer].view(2, 9, config.n_kv_head, config.head_dim).transpose(1, 2)
            v = v.repeat_interleave(config.n_head // config.n_kv_head, dim=1)
            mixed = (weights[layer] @ v).transpose(1, 2).reshape(2, 9, config.d_model)
            torch.testing.assert_close(block.attn.o_proj(mixed), outputs[layer], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["contiguous", "concat"])
@given(config=small_configs(), seed=st.integers(0, 10**6))
def test_cached_attention_weights_equal_the_rows_of_the_full_pass(kind, config, seed):
    model = random_model(config, seed)
    x = torch.randint(0, config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(seed))
    _, full = phases.attention_weights(model, x)
    cache = phases.make_cache(model, kind, capacity=12)
    _, first = phases.attention_weights(model, x[:, :7], cache)
    torch.testing.assert_close(first, full[..., :7, :7], atol=1e-5, rtol=1e-4)
    for t in range(7, 12):  # each decode step: one query row over all t + 1 cached keys
        _, step = phases.attention_weights(model, x[:, t:t + 1], cache)
        assert step.shape == (config.n_layer, 1, config.n_head, 1, t + 1)
        torch.testing.assert_close(step[..., 0, :], full[..., t, : t + 1], atol=1e-5, rtol=1e-4)


def test_attention_weights_ignore_padding():
    model = tiny_model()
    x = torch.randint(0, 256, (2, 6))
    pad_mask = torch.tensor([[True] * 6, [False, False, False, True, True, True]])
    _, w = phases.attention_weights(model, x, pad_mask=pad_mask)
    assert (w[:, 1, :, 3:, :3] == 0).all()  # real tokens never look at padding
    torch.testing.assert_close(w[:, 1, :, 3:].sum(-1), torch.ones(2, 4, 3))


@pytest.fixture(scope="module")
def trace(byte_tokenizer):
    return phases.trace_cache(tiny_model(), byte_tokenizer, "Cache me", max_new_tokens=6)


def test_trace_cache_records_new_and_reused_rows(trace, byte_tokenizer):
    model = tiny_model()
    assert trace.tokens[trace.prompt_len:] == il.generate(model, byte_tokenizer, "Cache me", max_new_tokens=6).tokens
    assert trace.prompt_len == 8 and trace.capacity == 14 and len(trace.steps) == 6
    assert (trace.steps[0].start, trace.steps[0].end) == (0, 8)  # prefill writes the whole prompt
    for s in trace.steps[1:]:
        assert s.end == s.start + 1 and s.new_rows == [s.start]  # decode writes one row, reuses the rest
        assert s.attention.shape == (2, 4, s.end)
        torch.testing.assert_close(s.attention.sum(-1), torch.ones(2, 4))
    assert trace.keys.shape == (2, 2, 13, 16) and trace.values.shape == trace.keys.shape
    assert viz.step_summary(trace, 3) == {"step": 3, "reused": 10, "written": 1, "recomputed_without_cache": 11,
                                          "position": 10, "token_id": trace.steps[3].token_id}


def test_trace_cache_checks_its_arguments(byte_tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens"):
        phases.trace_cache(tiny_model(), byte_tokenizer, "x" * 60, max_new_tokens=10)
    with pytest.raises(ValueError, match="prompt is empty"):
        phases.trace_cache(tiny_model(), byte_tokenizer, "", max_new_tokens=3)


# --- widget callbacks, driven with the values the widgets send ------------------------------------------

@pytest.mark.parametrize("step, layer, head", [(0, 0, -1), (3, 1, 2), (5, 0, 0), (99, 7, -1)])
def test_cache_step_view_follows_the_sliders(trace, byte_tokenizer, step, layer, head):
    fig = viz.cache_step_view(trace, byte_tokenizer, step, layer, head)
    ax_slots, ax_kv, ax_att = fig.axes[:3]
    s = trace.steps[min(step, 5)]
    colors = [tuple(p.get_facecolor()) for p in ax_slots.patches]
    red, blue = matplotlib.colors.to_rgba(viz.NEW), matplotlib.colors.to_rgba(viz.REUSED)
    assert len(colors) == trace.capacity
    assert colors.count(red) == s.end - s.start and colors.count(blue) == s.start
    assert f"step {min(step, 5)}:" in ax_slots.get_title(loc="left")
    bars = ax_att.patches
    assert len(bars) == s.end
    heights = torch.tensor([b.get_height() for b in bars])
    layer = min(layer, 1)
    expected = s.attention[layer].mean(0) if head == -1 else s.attention[layer, head]
    torch.testing.assert_close(heights, expected.double(), atol=1e-6, rtol=0)
    assert "sums to 1.000" in ax_att.get_title(loc="left")
    assert ("mean of all query heads" in ax_att.get_title(loc="left")) == (head == -1)


def test_cache_step_view_rejects_a_bad_head(trace, byte_tokenizer):
    with pytest.raises(ValueError, match="head must be -1"):
        viz.cache_step_view(trace, byte_tokenizer, 0, 0, 4)


@pytest.mark.parametrize("name, seq_len, batch, dtype_name, gb", [
    ("llama-3-8b", 8192, 1, "float16", 80), ("llama-2-13b", 8192, 4, "float16", 24),
    ("llama-2-70b", 32768, 8, "4-bit", 141), ("gpt2", 1024, 64, "float32", 24)])
def test_memory_view_follows_the_controls(name, seq_len, batch, dtype_name, gb):
    fig = viz.memory_view(name, seq_len, batch, dtype_name, gb)
    budget = phases.memory_budget(il.MODEL_CONFIGS[name], seq_len, batch, gb, viz.DTYPES[dtype_name])
    title = fig.axes[0].get_title()
    assert ("does NOT fit" in title) == (not budget["fits"])
    assert f"at most {budget['max_sequences']} sequences of {seq_len:,} tokens fit" in title
    if dtype_name != "4-bit":
        assert budget["max_sequences"] == max_concurrent_sequences(il.MODEL_CONFIGS[name], seq_len, gb,
                                                                   viz.DTYPES[dtype_name])
    widths = [p.get_width() for p in fig.axes[0].patches]
    assert widths[:2] == pytest.approx([budget["weights"] / 1e9, budget["cache"] / 1e9])


def test_memory_view_rejects_unknown_choices():
    with pytest.raises(ValueError, match="dtype_name"):
        viz.memory_view("gpt2", 1024, 1, "float8", 24)
    with pytest.raises(ValueError, match="unknown config name"):
        viz.memory_view("gpt5", 1024, 1, "float16", 24)


def test_static_plots_draw_what_they_are_given(byte_tokenizer):
    model = tiny_model()
    decodes = [phases.time_decode(model, [1, 20], kind, warmup=0, repeats=1) for kind in phases.CACHE_KINDS]
    fig = viz.plot_decode(decodes, model.config, log=True)
    assert len(fig.axes[0].get_lines()) >= 3 and len(fig.axes[1].get_lines()) == 2
    pre = phases.time_prefill(model, [4, 16], warmup=0, repeats=1)
    assert list(viz.plot_prefill(pre, model.config).axes[1].get_lines()[0].get_xdata()) == [4, 16]
    res = il.generate(model, byte_tokenizer, "abc", max_new_tokens=4)
    assert len(viz.plot_generation_steps({"cache": res}).axes[0].get_lines()[0].get_xdata()) == 4
    rows = phases.kv_cache_rows([il.MODEL_CONFIGS["gpt2"], il.MODEL_CONFIGS["llama-3-8b"]])
    assert [p.get_width() for p in viz.plot_kv_per_token(rows).axes[0].patches[:2]] == [36.0, 128.0]


# --- tables of real models ---------------------------------------------------------------------------

def test_kv_cache_rows_and_tables():
    mqa = il.MODEL_CONFIGS["llama-2-7b"].with_(n_kv_head=1, name="llama-2-7b-mqa")
    configs = [il.MODEL_CONFIGS["llama-2-13b"], il.MODEL_CONFIGS["llama-3-8b"], mqa]
    rows = phases.kv_cache_rows(configs)
    assert [r["attention"] for r in rows] == ["multi-head", "grouped-query", "multi-query"]
    assert rows[0]["bytes_per_sequence"][8192] == 2 * 40 * 40 * 128 * 8192 * 2
    assert rows[1]["bytes_per_token"] == 128 * 1024
    assert rows[2]["bytes_per_token"] == 2 * 32 * 1 * 128 * 2
    assert rows[1]["crossover"] == cache_equals_weights_context(configs[1])
    table = phases.format_kv_cache_table(rows)
    assert "6.71" in table.splitlines()[2] and "128.0" in table.splitlines()[3]
    fits = phases.concurrency_rows(configs, 8192)
    assert fits[1]["fit"] == {gb: max_concurrent_sequences(configs[1], 8192, gb) for gb in (24, 80, 141)}
    assert "llama-3-8b" in phases.format_concurrency_table(fits, 8192)


@pytest.mark.parametrize("n, text", [(6_710_886_400, "6.71 GB"), (131072, "131.07 kB"), (12, "12 B")])
def test_format_bytes(n, text):
    assert phases.format_bytes(n) == text


# --- exercises: a right answer passes, wrong ones do not -------------------------------------------------

def right_loop(model, ids, n):
    cache = il.KVCache(model.config, capacity=len(ids) + n)
    step, out = torch.tensor([ids]), []
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(step, cache=cache)[0, -1].argmax()))
            step = torch.tensor([[out[-1]]])
    return out


def uncached_loop(model, ids, n):
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(ids):]


def test_exercise_3_1():
    cfg = il.MODEL_CONFIGS["qwen2.5-0.5b"]
    assert ex.verdict("3.1", 2 * 24 * 2 * 64 * 32768 * 2)[0]
    assert ex.verdict("3.1", il.kv_cache_bytes(cfg, 32768, dtype=torch.bfloat16))[0]
    assert not ex.verdict("3.1", 24 * 2 * 64 * 32768 * 2)[0]        # keys only
    assert "query head" in ex.verdict("3.1", 2 * 24 * 14 * 64 * 32768 * 2)[1]
    assert not ex.verdict("3.1", None)[0] and not ex.verdict("3.1", "a lot")[0]


def test_exercise_3_2():
    assert ex.verdict("3.2", 30)[0]
    assert "forgets the weights" in ex.verdict("3.2", 37)[1]
    assert "Round down" in ex.verdict("3.2", 31)[1]
    assert not ex.verdict("3.2", 33)[0]


def test_exercise_3_3():
    assert ex.verdict("3.3", right_loop)[0]
    ok, message = ex.verdict("3.3", uncached_loop)
    assert not ok and "Right tokens" in message
    assert not ex.verdict("3.3", lambda model, ids, n: [0] * n)[0]
    assert not ex.verdict("3.3", lambda model, ids, n: list(ids) + right_loop(model, ids, n))[0]
    assert not ex.verdict("3.3", 42)[0]


def test_exercise_3_4():
    cfg = il.MODEL_CONFIGS["llama-3-8b"]
    assert ex.verdict("3.4", cache_equals_weights_context(cfg, batch_size=16))[0]
    assert ex.verdict("3.4", 7659)[0]
    assert "one sequence" in ex.verdict("3.4", cache_equals_weights_context(cfg))[1]
    assert not ex.verdict("3.4", 2 * 7659)[0]


def test_check_prints_and_never_raises(capsys):
    for key in ("3.1", "3.2", "3.3", "3.4"):
        ex.check(key, None)
        assert ex.verdict(key, None)[0] is False
        assert ex.verdict(key, object())[0] is False
    assert "waiting for your answer" in capsys.readouterr().out
    ex.solution("3.3")
    assert "KVCache" in capsys.readouterr().out
