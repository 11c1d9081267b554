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
from inferlab.core.kvcache import ConcatKVCache  # noqa: E402
from inferlab.exercises import part3  # noqa: E402
from inferlab.lessons import part3 as lesson3  # noqa: E402
from inferlab.measure import counting  # noqa: E402
from inferlab.measure.counting import (cache_equals_weights_context, forward_flops,  # noqa: E402
                                       max_concurrent_sequences)
from inferlab.measure.decode_step import filled_cache  # noqa: E402
from inferlab.measure.timing import Timing  # noqa: E402
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

@pytest.mark.parametrize("kind", lesson3.CACHE_KINDS)
def test_time_prefill_and_decode_return_one_timing_per_length(kind):
    model = tiny_model()
    pre = lesson3.time_prefill(model, [1, 8, 30], kind=kind, warmup=0, repeats=2)
    dec = lesson3.time_decode(model, [0, 5, 40, 5], kind=kind, warmup=0, repeats=2)
    assert pre.x == [1, 8, 30] and len(pre.timings) == 3 and pre.kind == kind
    assert dec.x == [0, 5, 40, 5] and len(dec.median_ms) == len(dec.iqr_ms) == 4
    assert all(t.repeats == 2 and t.median_s > 0 for t in pre.timings + dec.timings)


@pytest.mark.parametrize("call, match", [
    (lambda m: lesson3.time_decode(m, [64]), "positions must be a non-empty list of ints in \\[0, 63\\]"),
    (lambda m: lesson3.time_decode(m, []), "positions"),
    (lambda m: lesson3.time_prefill(m, [0]), "lengths must be a non-empty list of ints in \\[1, 64\\]"),
    (lambda m: lesson3.time_prefill(m, [4], kind="paged"), "kind must be one of"),
])
def test_bad_lengths_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny_model())


def test_step_flops_follow_the_counting_module():
    cfg = il.MODEL_CONFIGS["gpt2"]
    assert lesson3.prefill_flops(cfg, [1, 100]) == [forward_flops(cfg, 1), forward_flops(cfg, 100)]
    assert lesson3.decode_flops(cfg, [0, 99]) == [forward_flops(cfg, 1, 1), forward_flops(cfg, 1, 100)]
    assert lesson3.decode_flops(cfg, [99], use_cache=False) == [forward_flops(cfg, 100)]
    # without the cache, step p repeats the cached step's work for each of its p + 1 tokens (the masked
    # score matrix is computed in full, as FlopCounterMode counts it)
    cached, uncached = lesson3.decode_flops(cfg, [99])[0], lesson3.decode_flops(cfg, [99], use_cache=False)[0]
    assert uncached == 100 * cached


def test_wide_tokenizer_decodes_every_id_of_a_real_vocabulary(byte_tokenizer):
    wide = lesson3.wide_tokenizer(byte_tokenizer, 50257)
    assert wide.vocab_size == 50257
    assert wide.encode("hello") == byte_tokenizer.encode("hello")
    assert wide.decode([104, 105, 50256]) == "hi<50256>"
    with pytest.raises(ValueError, match="vocab_size"):
        lesson3.wide_tokenizer(byte_tokenizer, 100)


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
    logits, weights = lesson3.attention_weights(model, x)
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
    _, full = lesson3.attention_weights(model, x)
    cache = lesson3.make_cache(model, kind, capacity=12)
    _, first = lesson3.attention_weights(model, x[:, :7], cache)
    torch.testing.assert_close(first, full[..., :7, :7], atol=1e-5, rtol=1e-4)
    for t in range(7, 12):  # each decode step: one query row over all t + 1 cached keys
        _, step = lesson3.attention_weights(model, x[:, t:t + 1], cache)
        assert step.shape == (config.n_layer, 1, config.n_head, 1, t + 1)
        torch.testing.assert_close(step[..., 0, :], full[..., t, : t + 1], atol=1e-5, rtol=1e-4)


def test_attention_weights_ignore_padding():
    model = tiny_model()
    x = torch.randint(0, 256, (2, 6))
    attention_mask = torch.tensor([[True] * 6, [False, False, False, True, True, True]])
    _, w = lesson3.attention_weights(model, x, attention_mask=attention_mask)
    assert (w[:, 1, :, 3:, :3] == 0).all()  # real tokens never look at padding
    torch.testing.assert_close(w[:, 1, :, 3:].sum(-1), torch.ones(2, 4, 3))


@pytest.fixture(scope="module")
def trace(byte_tokenizer):
    return lesson3.trace_cache(tiny_model(), byte_tokenizer, "Cache me", max_new_tokens=6)


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
        lesson3.trace_cache(tiny_model(), byte_tokenizer, "x" * 60, max_new_tokens=10)
    with pytest.raises(ValueError, match="prompt is empty"):
        lesson3.trace_cache(tiny_model(), byte_tokenizer, "", max_new_tokens=3)


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
    budget = lesson3.memory_budget(il.MODEL_CONFIGS[name], seq_len, batch, gb, viz.DTYPES[dtype_name])
    title = fig.axes[0].get_title()
    assert ("does NOT fit" in title) == (not budget["fits"])
    if budget["exceeds_context"]:  # llama-2-13b was built for 4,096 tokens
        assert f"{seq_len:,} tokens EXCEED the model's context of {budget['context']:,}" in title
    else:
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
    decodes = [lesson3.time_decode(model, [1, 20], kind, warmup=0, repeats=1) for kind in lesson3.CACHE_KINDS]
    fig = viz.plot_decode(decodes, model.config, log=True)
    assert len(fig.axes[0].get_lines()) >= 3 and len(fig.axes[1].get_lines()) == 2
    pre = lesson3.time_prefill(model, [4, 16], warmup=0, repeats=1)
    assert list(viz.plot_prefill(pre, model.config).axes[1].get_lines()[0].get_xdata()) == [4, 16]
    res = il.generate(model, byte_tokenizer, "abc", max_new_tokens=4)
    assert len(viz.plot_generation_steps({"cache": res}).axes[0].get_lines()[0].get_xdata()) == 4
    rows = lesson3.kv_cache_rows([il.MODEL_CONFIGS["gpt2"], il.MODEL_CONFIGS["llama-3-8b"]])
    assert [p.get_width() for p in viz.plot_kv_per_token(rows).axes[0].patches[:2]] == [36.0, 128.0]


# --- tables of real models ---------------------------------------------------------------------------

def test_kv_cache_rows_and_tables():
    mqa = il.MODEL_CONFIGS["llama-2-7b"].with_(n_kv_head=1, name="llama-2-7b-mqa")
    configs = [il.MODEL_CONFIGS["llama-2-13b"], il.MODEL_CONFIGS["llama-3-8b"], mqa]
    rows = lesson3.kv_cache_rows(configs)
    assert [r["attention"] for r in rows] == ["multi-head", "grouped-query", "multi-query"]
    assert rows[0]["bytes_per_sequence"][8192] == 2 * 40 * 40 * 128 * 8192 * 2
    assert rows[1]["bytes_per_token"] == 128 * 1024
    assert rows[2]["bytes_per_token"] == 2 * 32 * 1 * 128 * 2
    assert rows[1]["crossover"] == lesson3.cache_equals_weights_read(configs[1]) < cache_equals_weights_context(configs[1])
    table = lesson3.format_kv_cache_table(rows)
    assert "6.71" in table.splitlines()[2] and "128.0" in table.splitlines()[3]
    fits = lesson3.concurrency_rows(configs, 8192)
    assert fits[1]["fit"] == {gb: max_concurrent_sequences(configs[1], 8192, gb) for gb in (24, 80, 141)}
    assert "llama-3-8b" in lesson3.format_concurrency_table(fits, 8192)


@pytest.mark.parametrize("n, text", [(6_710_886_400, "6.71 GB"), (131072, "131.07 kB"), (12, "12 B")])
def test_format_bytes(n, text):
    assert lesson3.format_bytes(n) == text


# --- what a one-token step spends its time on; long context -----------------------------------------------

@pytest.mark.parametrize("kinds", [lesson3.CACHE_KINDS, ("contiguous", "none")])
def test_time_decode_kinds_times_each_kind_at_each_position(kinds):
    model = tiny_model()
    out = lesson3.time_decode_kinds(model, [0, 5, 40], kinds, warmup=0, repeats=3)
    assert [d.kind for d in out] == list(kinds)
    for d in out:
        assert d.x == [0, 5, 40] and len(d.timings) == 3
        assert all(t.repeats == 3 and len(t.samples_s) == 3 for t in d.timings)
    with pytest.raises(ValueError, match="kinds must be"):
        lesson3.time_decode_kinds(model, [3], ("paged",))


def test_step_budget_splits_reading_from_overhead():
    cfg = il.MODEL_CONFIGS["gpt2"]
    read = counting.step_count(cfg, 1, 1, 1, torch.float32).weight_bytes
    assert read == counting.param_bytes(cfg, torch.float32)  # tied embeddings: the head reads the whole table
    slow = lesson3.step_budget("x", cfg, step_s=read / 1e9 * 10, bandwidth=1e9)
    assert slow.read_s == pytest.approx(read / 1e9) and slow.read_share == pytest.approx(0.1)
    assert "overhead" in slow.verdict
    assert "reading its weights" in lesson3.step_budget("x", cfg, read / 1e9 * 1.2, 1e9).verdict
    assert "split" in lesson3.step_budget("x", cfg, read / 1e9 * 2.5, 1e9).verdict
    with pytest.raises(ValueError, match="bandwidth"):
        lesson3.step_budget("x", cfg, 0.01, 0)
    with pytest.raises(ValueError, match="step_s"):
        lesson3.step_budget("x", cfg, -1.0, 1e9)


def test_filled_cache_holds_the_tokens_it_says():
    model = tiny_model()
    cache = filled_cache(model, batch_size=3, length=20, capacity=32)
    assert cache.length == 20 and cache.tokens() == [20, 20, 20] and cache.capacity == 32
    assert (cache.k[:, :, :, :20] == 0.01).all() and (cache.k[:, :, :, 20:] == 0).all()
    with torch.inference_mode():
        assert model(torch.zeros(3, 1, dtype=torch.long), cache=cache).shape == (3, 1, 256)
    assert cache.length == 21
    with pytest.raises(ValueError, match="capacity"):
        filled_cache(model, 1, 64)  # capacity 65 > max_seq_len 64
    with pytest.raises(ValueError, match="batch_size"):
        filled_cache(model, 0, 4)


def test_context_sweep_counts_the_bytes_of_each_step():
    model = tiny_model()
    sweep = lesson3.context_sweep(model, 4, [64, 8, 32], warmup=0, repeats=2)
    cfg = model.config
    assert sweep.contexts == [8, 32, 64] and len(sweep.timings) == 3
    assert sweep.cache_bytes == [il.kv_cache_bytes(cfg, n - 1, 4, torch.float32) for n in (8, 32, 64)]
    assert sweep.weight_bytes == counting.step_count(cfg, 1, 8, 4, torch.float32).weight_bytes
    per_token = il.kv_cache_bytes(cfg, 1, 4, torch.float32)
    assert (sweep.crossover - 1) * per_token < sweep.weight_bytes <= sweep.crossover * per_token
    assert sweep.predicted_s[0] == sweep.median_s[0]
    assert sweep.predicted_growth == pytest.approx(sweep.bytes[-1] / sweep.bytes[0])
    assert isinstance(sweep.conclusion(), str)
    assert len(viz.plot_context_sweep(sweep).axes) == 2
    with pytest.raises(ValueError, match="contexts"):
        lesson3.context_sweep(model, 2, [65])
    with pytest.raises(ValueError, match="two different"):
        lesson3.context_sweep(model, 2, [8, 8])


def fake_sweep(times_s, crossover=600):
    timings = [Timing(t, t, 0.0, 3, 2, [t] * 3) for t in times_s]
    contexts = [1, 257, 513, 769, 1025][: len(times_s)]
    per_token = 1000
    return lesson3.ContextSweep("m", 8, contexts, timings, weight_bytes=600 * per_token,
                               cache_bytes=[(n - 1) * per_token for n in contexts], crossover=crossover)


def test_context_sweep_conclusion_says_what_happened():
    # time = 1 + cache bytes / weight bytes: the measured crossover is exactly where the bytes cross
    sweep = fake_sweep([1 + (n - 1) / 600 for n in [1, 257, 513, 769, 1025]])
    fixed, per_byte = sweep.fit()
    assert fixed == pytest.approx(1.0) and per_byte == pytest.approx(1 / 600_000)
    assert sweep.measured_crossover == pytest.approx(601)
    text = sweep.conclusion()
    assert "became the bigger part of the step" in text and "at about 601 tokens" in text
    flat = fake_sweep([1.0, 0.99, 1.0, 0.98, 0.99])
    assert flat.measured_crossover is None and "did not grow" in flat.conclusion()
    slow_growth = fake_sweep([1 + (n - 1) / 6000 for n in [1, 257, 513, 769, 1025]])
    assert "did not overtake" in slow_growth.conclusion()


def test_context_sweep_conclusion_says_when_the_machine_was_busy():
    noisy = fake_sweep([1 + (n - 1) / 600 for n in [1, 257, 513, 769, 1025]])
    noisy.timings[2] = Timing(1.8, 1.0, 1.0, 3, 2, [1.0, 1.8, 2.8])
    text = noisy.conclusion()
    assert "busy" in text and "bytes predicted" in text
    assert "straight line" not in text and "bigger part" not in text  # no conclusion the numbers cannot carry


@pytest.mark.parametrize("n, text", [(128, "128 bytes"), (12288, "12 KiB"), (131072, "128 KiB"),
                                     (1.5 * 2**20, "1.5 MiB"), (1, "1 byte"), (0, "0 bytes")])
def test_format_bytes_binary(n, text):
    assert lesson3.format_bytes_binary(n) == text


def test_weights_read_per_step_leave_out_an_untied_embedding_table():
    llama3 = il.MODEL_CONFIGS["llama-3-8b"]
    table = llama3.vocab_size * llama3.d_model * 2
    assert lesson3.weights_read_per_step(llama3, 16) == counting.param_bytes(llama3) - table + 16 * llama3.d_model * 2
    assert lesson3.cache_equals_weights_read(llama3, 16) == 7158
    gpt2 = il.MODEL_CONFIGS["gpt2"]  # tied: the output head reads the whole table anyway
    assert lesson3.cache_equals_weights_read(gpt2, 8) == cache_equals_weights_context(gpt2, 8) == 844


def test_memory_view_shows_small_caches_in_bytes_and_says_when_the_context_is_exceeded():
    fig = viz.memory_view("inferlab-draft", 512, 1, "int8", 24)
    assert fig.axes[1].get_title().endswith("128 bytes per token")
    assert "EXCEED" not in fig.axes[0].get_title()
    over = viz.memory_view("inferlab-draft", 131072, 1, "float16", 24)
    title = over.axes[0].get_title()
    assert "131,072 tokens EXCEED the model's context of 512" in title and "cannot read that far" in title
    budget = lesson3.memory_budget(il.MODEL_CONFIGS["inferlab-draft"], 131072, 1, 24)
    assert budget["exceeds_context"] and budget["context"] == 512 and budget["bytes_per_token"] == 256


# --- exercises: a right answer passes, wrong ones do not, and no hint gives the answer away ---------------

def right_loop(model, ids, n):
    cache = il.KVCache(model.config, capacity=len(ids) + n)
    step, out = torch.tensor([ids]), []
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(step, cache=cache)[0, -1].argmax()))
            step = torch.tensor([[out[-1]]])
    return out


def loop_with_unused_last_pass(model, ids, n):
    cache = il.KVCache(model.config, capacity=len(ids) + n)
    out = []
    with torch.no_grad():
        logits = model(torch.tensor([ids]), cache=cache)
        for _ in range(n):
            out.append(int(logits[0, -1].argmax()))
            logits = model(torch.tensor([[out[-1]]]), cache=cache)
    return out


def prompt_token_by_token(model, ids, n):
    cache = ConcatKVCache(model.config)
    out = []
    with torch.no_grad():
        for t in ids:
            logits = model(torch.tensor([[t]]), cache=cache)
        for i in range(n):
            out.append(int(logits[0, -1].argmax()))
            if i < n - 1:
                logits = model(torch.tensor([[out[-1]]]), cache=cache)
    return out


def uncached_loop(model, ids, n):
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(ids):]


def fresh_cache_every_step(model, ids, n):
    step, out = torch.tensor([ids]), []
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(step, cache=il.KVCache(model.config, capacity=len(ids) + n))[0, -1].argmax()))
            step = torch.tensor([[out[-1]]])
    return out


def expected_ids(pretrained):
    model, tok = pretrained
    return [il.generate(model, tok, p, max_new_tokens=n).tokens for p, n in part3.EX33_CASES]


def test_exercise_3_1():
    cfg = il.MODEL_CONFIGS["qwen2.5-0.5b"]
    right = il.kv_cache_bytes(cfg, 32768, dtype=torch.bfloat16)
    assert ex.verdict("3.1", 2 * 24 * 2 * 64 * 32768 * 2)[0] and ex.verdict("3.1", right)[0]
    assert not ex.verdict("3.1", 24 * 2 * 64 * 32768 * 2)[0]        # keys only
    assert "query head" in ex.verdict("3.1", 2 * 24 * 14 * 64 * 32768 * 2)[1]
    for value, unit in [(right / 1e9, "GB"), (round(right / 1e9, 2), "GB"), (right / 2**30, "GiB"),
                        (right / 2**20, "MiB"), (right / 1e6, "MB")]:
        ok, message = ex.verdict("3.1", value)
        assert not ok and f"in {unit} " in message and "wants bytes" in message
    for wrong in (123, right / 2, right * 2, 7.5):
        assert f"{right:,}" not in ex.verdict("3.1", wrong)[1] and str(right) not in ex.verdict("3.1", wrong)[1]
    assert not ex.verdict("3.1", None)[0] and not ex.verdict("3.1", "a lot")[0]


def test_exercise_3_2():
    assert ex.verdict("3.2", 21)[0]                                  # 6,000 tokens: a length the calculator cannot be set to
    assert "forgets the weights" in ex.verdict("3.2", 25)[1]
    assert "Round down" in ex.verdict("3.2", 22)[1]
    assert "mixes units" in ex.verdict("3.2", 23)[1]
    assert "one sequence's cache" in ex.verdict("3.2", 3.146)[1] and "one sequence's cache" in ex.verdict("3.2", 2.93)[1]
    assert "memory left" in ex.verdict("3.2", 66.52)[1] and "memory left" in ex.verdict("3.2", 61.95)[1]
    assert "whole number" in ex.verdict("3.2", 20.5)[1]
    for wrong in (12, 20.5, 25):
        assert "21 " not in ex.verdict("3.2", wrong)[1] and "21." not in ex.verdict("3.2", wrong)[1]


def test_exercise_3_3_accepts_every_correct_cached_loop(pretrained):
    for loop in (right_loop, loop_with_unused_last_pass, prompt_token_by_token,
                 lambda m, i, n: torch.tensor(right_loop(m, i, n))):
        ok, message = ex.verdict("3.3", loop)
        assert ok, message
    assert "never used" in ex.verdict("3.3", loop_with_unused_last_pass)[1]
    assert "several passes" in ex.verdict("3.3", prompt_token_by_token)[1]


def test_exercise_3_3_rejects_shortcuts_and_never_shows_the_tokens(pretrained):
    model, tok = pretrained
    expected = expected_ids(pretrained)
    cases = {
        "il.generate": (lambda m, ids, n: il.generate(m, tok, ids, max_new_tokens=n).tokens, "package's own loop"),
        "generate_batch": (lambda m, ids, n: il.generate_batch(m, tok, [ids], max_new_tokens=n)[0].tokens,
                           "generate_batch"),
        "pasted ids": (lambda m, ids, n: expected[0][:n], "never ran the model"),
        "no cache": (uncached_loop, "no cache reached the model"),
        "cache rebuilt": (fresh_cache_every_step, "then they differ"),
        "with the prompt": (lambda m, ids, n: list(ids) + right_loop(m, ids, n), "without the prompt"),
        "too short": (lambda m, ids, n: right_loop(m, ids, n)[:-1], "exactly n"),
        "wrong": (lambda m, ids, n: [int(m(torch.tensor([ids]))[0, -1].argmin())] * n, "first new token"),
    }
    for name, (loop, hint) in cases.items():
        ok, message = ex.verdict("3.3", loop)
        assert not ok and hint in message, (name, message)
        for ids in expected:
            assert str(ids) not in message and ", ".join(map(str, ids[:3])) not in message, (name, message)
    assert not ex.verdict("3.3", 42)[0]


def test_exercise_3_3_records_who_called_the_model(pretrained):
    model, tok = pretrained
    _, calls = part3.record_forward_calls(model, lambda: il.generate(model, tok, "abc", max_new_tokens=2))
    assert [c["caller"] for c in calls] == ["inferlab.core.generate._token_loop"] * 2
    _, calls = part3.record_forward_calls(model, lambda: right_loop(model, tok.encode("abc"), 2))
    assert [(c["caller"], c["cache"]) for c in calls] == [(None, True), (None, True)]
    assert part3.count_forward_tokens(model, lambda: right_loop(model, tok.encode("abc"), 3))[1] == \
        {"calls": 3, "tokens": len(tok.encode("abc")) + 2}


def test_exercise_3_4_accepts_each_justified_way_of_counting_the_weights():
    cfg = il.MODEL_CONFIGS["llama-3-8b"]
    for right in (7158, 7157, 7159, cache_equals_weights_context(cfg, batch_size=16), 7659, 7658, 7630, 7129):
        ok, message = ex.verdict("3.4", right)
        assert ok, (right, message)
    assert "one sequence" in ex.verdict("3.4", cache_equals_weights_context(cfg))[1]
    assert "factor of 2" in ex.verdict("3.4", 2 * 7158)[1]
    assert "query head" in ex.verdict("3.4", 7158 // 4)[1]
    for wrong in (2 * 7659, 5000, 7300):
        ok, message = ex.verdict("3.4", wrong)
        assert not ok and not any(s in message for s in ("7,158", "7158", "7,659", "7659"))


def test_solutions_run_in_a_notebook_namespace_without_touching_its_names(pretrained):
    model, tok = pretrained
    namespace = {"il": il, "torch": torch, "counting": counting, "model": model, "tok": tok,
                 "cfg": model.config, "answer": None, "answer_31": None, "answer_32": None, "answer_35": None,
                 "ids": [1, 2, 3], "prefill_in_steps": 9.5}
    for key in ("3.1", "3.2", "3.3", "3.4", "3.5"):
        assert ex.run_solution(key, namespace) == [], key
    assert namespace["cfg"] is model.config and namespace["answer"] is None


def test_check_prints_and_never_raises(capsys):
    for key in ("3.1", "3.2", "3.3", "3.4", "3.5"):
        ex.check(key, None)
        assert ex.verdict(key, None)[0] is False
        assert ex.verdict(key, object())[0] is False
    assert "waiting for your answer" in capsys.readouterr().out
    ex.solution("3.3")
    assert "KVCache" in capsys.readouterr().out


# --- exercise 3.5: a prediction checked against the learner's own measurement --------------------------

@pytest.mark.parametrize("guess, measured, ok", [
    (10, 7.0, True), (20, 7.0, True), (3, 7.0, True), (200, 7.0, False), (100, 7.0, False), (1, 7.0, False),
    (0, 7.0, False), (-5, 7.0, False), (30, 12.0, True), (150, 120.0, True)])
def test_exercise_3_5_judges_the_guess_against_the_measurement(guess, measured, ok):
    assert ex.verdict("3.5", guess, measured=measured)[0] is ok


def test_exercise_3_5_needs_the_measurement_and_a_number():
    ok, message = ex.verdict("3.5", 10)
    assert not ok and "measured=prefill_in_steps" in message
    ok, message = ex.verdict("3.5", "ten", measured=7.0)
    assert not ok and "number" in message
    assert ex.get_exercise("3.5").measured == "prefill_in_steps"
    ok, message = ex.verdict("3.5", 200, measured=7.0)
    assert "one decode step per prompt token" in message


def test_compare_guess_is_neutral_until_a_guess_is_written():
    assert part3.compare_guess(None, 3.0, "ratio").startswith("… no guess written yet (ratio)")
    assert part3.compare_guess(5, 3.04, "ratio", "{:.1f}") == "ratio: you guessed 5.0, measured 3.0 (within 2x: a good guess)."


# --- the live widgets: one output with the widget, its default picture and a sentence -------------------

def _bundle(live_widget):
    return live_widget._repr_mimebundle_()


def test_cache_widget_carries_its_default_picture_and_follows_the_sliders(trace, byte_tokenizer):
    w = viz.cache_widget(trace, byte_tokenizer, step=2, layer=1, head=-1)
    bundle = _bundle(w)
    assert "image/png" in bundle and bundle["text/plain"].startswith("Live widget: sliders for the generation step")
    controls = {c.description: c for c in w.widget.children[:-1]}
    assert controls["step"].value == 2 and controls["step"].max == len(trace.steps) - 1
    assert controls["layer"].max == trace.config.n_layer - 1
    assert controls["head"].value == -1 and len(controls["head"].options) == trace.config.n_head + 1
    for step, layer, head in [(0, 0, -1), (5, 1, 3)]:  # what the callback draws for values a learner could set
        fig = viz.cache_step_view(trace, byte_tokenizer, step, layer, head)
        assert f"step {step}:" in fig.axes[0].get_title(loc="left")


def test_memory_widget_carries_its_default_picture_and_checks_its_defaults():
    w = viz.memory_widget()
    bundle = _bundle(w)
    assert "image/png" in bundle and "calculator" in bundle["text/plain"]
    controls = {c.description: c for c in w.widget.children[:-1]}
    assert controls["model"].value == "llama-3-8b" and controls["tokens"].value == 8192
    assert controls["sequences"].value == 16 and controls["format"].value == "float16" and controls["GB"].value == 80
    fig = viz.memory_view("llama-2-70b", 32768, 8, "4-bit", 141)   # a learner's choice
    assert "llama-2-70b" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="seq_len"):
        viz.memory_widget(seq_len=1000)


def test_figures_are_drawn_at_150_dpi_or_more():
    assert viz.DPI >= 150
    assert viz.memory_view().dpi >= 150

