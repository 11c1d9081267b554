"""Tests for notebook 02: the stage-by-stage forward pass, the stage timer, the plots and widget
callbacks (called with the values the widgets send), and the exercises' checks."""
import warnings

import pytest
import torch
from matplotlib.figure import Figure

import inferlab as il
from inferlab import anatomy
from inferlab import exercises as ex
from inferlab.exercises import part2
from inferlab.pretrained import CHECKPOINTS, load_tokenizer
from inferlab.viz import inference as viz

needs_bundled = pytest.mark.skipif(not CHECKPOINTS["main"].exists(), reason="bundled checkpoint not built yet")

CONFIGS = {
    "inferlab-main": il.MODEL_CONFIGS["inferlab-main"],
    "gpt2-arch": il.ModelConfig(vocab_size=300, d_model=32, n_layer=2, n_head=4, max_seq_len=64, arch="gpt2"),
    "llama-gqa-bias": il.ModelConfig(vocab_size=300, d_model=32, n_layer=3, n_head=4, n_kv_head=2, d_ff=48,
                                     max_seq_len=64, arch="llama", qkv_bias=True, tie_embeddings=False),
}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return il.GPT(il.MODEL_CONFIGS["inferlab-main"]).eval()


def _random_ids(config, B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (B, T), generator=g)


# --- anatomy: the stages reproduce model.forward ------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("B,T", [(1, 1), (1, 9), (2, 17)])
def test_forward_by_stage_matches_forward(name, B, T):
    torch.manual_seed(1)
    model = il.GPT(CONFIGS[name]).eval()
    idx = _random_ids(model.config, B, T)
    out = anatomy.forward_by_stage(model, idx)
    with torch.inference_mode():
        ref = model(idx)
    assert out.logits.shape == ref.shape
    assert torch.allclose(out.logits, ref, atol=1e-5, rtol=0)


@needs_bundled
def test_forward_by_stage_matches_bundled_model(tok):
    model, tok = il.load_pretrained()
    ids = tok.encode("The return value of a function is")
    out = anatomy.forward_by_stage(model, ids)
    with torch.inference_mode():
        ref = model(torch.tensor([ids]))
    assert torch.allclose(out.logits, ref, atol=1e-5, rtol=0)


def test_stage_names_shapes_and_embedding_row(small):
    cfg = small.config
    ids = [5, 17, 300, 2047]
    out = anatomy.forward_by_stage(small, ids)
    assert out.names == ["embed"] + [f"layer {i}" for i in range(cfg.n_layer)] + ["final norm"]
    assert all(t.shape == (1, len(ids), cfg.d_model) for t in out.tensors)
    # llama arch: no learned positions, so the embedding stage is exactly the rows of tok_emb.weight
    assert torch.equal(out["embed"][0], small.tok_emb.weight[ids].detach())
    rows = anatomy.stage_summary(out)
    assert [r["stage"] for r in rows] == out.names
    assert rows[-1]["rms"] == pytest.approx(1.0, abs=0.05)  # RMSNorm with unit weights
    assert anatomy.token_rms(out).shape == (len(out.names), len(ids))


def test_gpt2_embedding_adds_positions():
    torch.manual_seed(0)
    model = il.GPT(CONFIGS["gpt2-arch"]).eval()
    idx = torch.tensor([[3, 3, 3]])
    emb = anatomy.embed(model, idx)
    assert emb.rope is None
    expected = model.tok_emb.weight[[3, 3, 3]] + model.pos_emb.weight[:3]
    assert torch.allclose(emb.x[0], expected)


def test_logit_lens_last_row_is_the_prediction(small):
    ids = [1, 2, 3, 4, 5]
    out = anatomy.forward_by_stage(small, ids)
    lens = anatomy.logit_lens(small, out)
    assert [r[0] for r in lens] == out.names[:-1]
    assert lens[-1][1] == int(out.logits[0, -1].argmax())
    assert all(0 < r[2] <= 1 for r in lens)


def test_as_ids_rejects_bad_input(small):
    with pytest.raises(ValueError):
        anatomy.as_ids([])
    with pytest.raises(ValueError):
        anatomy.as_ids(torch.zeros(1, 3))
    with pytest.raises(ValueError):
        anatomy.embed(small, torch.zeros(1, small.config.max_seq_len + 1, dtype=torch.long))


# --- anatomy: timing ------------------------------------------------------------------------------------

def test_time_call_and_median():
    calls = []
    times = anatomy.time_call(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(times) == 5 and len(calls) == 7 and all(t >= 0 for t in times)
    assert anatomy.median_time(lambda: None, warmup=0, repeats=3) >= 0
    with pytest.raises(ValueError):
        anatomy.time_call(lambda: None, repeats=0)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, None, None), (0.8, 20, 0.9)])
def test_time_step_stages(small, tok, temperature, top_k, top_p):
    t = anatomy.time_step(small, tok, "The return value", temperature, top_k, top_p, warmup=1, repeats=2)
    n = small.config.n_layer
    assert list(t.stages) == ["tokenize", "embed"] + [f"layer {i}" for i in range(n)] + ["head", "sampling"]
    assert all(v > 0 for v in t.stages.values()) and t.whole_step_s > 0
    assert t.prompt_tokens == len(tok.encode("The return value"))
    assert list(t.grouped()) == ["tokenize", "embed", "layers", "head", "sampling"]
    assert sum(t.grouped().values()) == pytest.approx(t.sum_of_stages_s)
    assert len(t.samples["whole step"]) == 2
    assert not small.training
    with pytest.raises(ValueError):
        anatomy.time_step(small, tok, "")


# --- plots and widget callbacks ---------------------------------------------------------------------------

def _no_glyph_warnings(fn, *args, **kwargs):
    """Call a plotting function and render it, failing on any matplotlib warning (e.g. a missing glyph)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = fn(*args, **kwargs)
        assert isinstance(fig, Figure)
        fig.canvas.draw()
    return fig


@pytest.mark.parametrize("text", ["Hello world", "Grüße aus Köln 🙂 日本語 $x$ \n\tTabs", "a", ""])
def test_token_view_callback(tok, text):
    fig = _no_glyph_warnings(viz.token_view, tok, text)
    assert f"{len(tok.encode(text))} tokens" in fig._suptitle.get_text()


def test_token_labels_show_bytes_for_partial_characters(tok):
    ids = tok.encode("🙂")
    assert len(ids) >= 2  # no emoji token: byte-level fallback
    assert all(viz.is_partial(tok, i) for i in ids)
    assert viz.token_label(tok, ids[0]) == "F0"
    assert viz.token_label(tok, tok.encode(" a")[0]).startswith("␣")
    table = viz.format_tokens(tok, "🙂")
    assert "b'\\xf0'" in table and "1 characters -> 4 UTF-8 bytes" in table


def test_sampling_view_callback_with_slider_values(small, tok):
    logits = anatomy.forward_by_stage(small, tok.encode("The")).logits[0, -1] * 20  # random weights: sharpen
    # slider defaults: temperature 1, top_k 0 (off), top_p 1.0 (off)
    fig = _no_glyph_warnings(viz.sampling_view, logits, tok, temperature=1.0, top_k=0, top_p=1.0)
    assert f"{logits.numel()} of {logits.numel()} tokens can be drawn" in fig.axes[0].get_title()
    fig = viz.sampling_view(logits, tok, temperature=0.7, top_k=3, top_p=1.0)
    assert "3 of" in fig.axes[0].get_title()
    fig = viz.sampling_view(logits, tok, temperature=0.0, top_k=0, top_p=1.0)
    assert "greedy" in fig.axes[0].get_title() and "1 of" in fig.axes[0].get_title()
    fig = viz.sampling_view(logits, tok, temperature=2.0, top_k=50, top_p=0.3)
    kept = int((il.next_token_probs(logits, 2.0, 50, 0.3) > 0).sum())
    assert 1 <= kept <= 50 and f"top_p=0.3: {kept} of" in fig.axes[0].get_title()


def test_slider_conversions_and_candidate_rows(tok):
    assert viz.slider_top_k(0) is None and viz.slider_top_k(5) == 5
    assert viz.slider_top_p(1.0) is None and viz.slider_top_p(0.9) == 0.9
    logits = torch.zeros(tok.vocab_size)
    logits[[10, 20, 30]] = torch.tensor([3.0, 2.0, 1.0])
    rows = viz.candidate_rows(logits, tok, temperature=1.0, top_k=2, n=3)
    assert [r[0] for r in rows] == [10, 20, 30]
    assert rows[2][2] == 0.0 and rows[0][2] + rows[1][2] == pytest.approx(1.0, abs=2e-3)
    assert viz.candidate_rows(logits, tok, temperature=0.0, n=1)[0] == (10, viz.token_label(tok, 10), 1.0)


def test_layer_and_logit_plots(small, tok):
    ids = tok.encode("The return value of a function is")
    out = anatomy.forward_by_stage(small, ids)
    _no_glyph_warnings(viz.plot_residual_stream, out, tok, ids)
    _no_glyph_warnings(viz.plot_embedding_row, small, tok, ids[0])
    _no_glyph_warnings(viz.plot_logits_to_probs, out.logits[0, -1], tok, n=8)


def test_trace_plots_and_step_slider_callback(small, tok):
    res = il.generate(small, tok, "The return value", max_new_tokens=6, temperature=0.9, seed=3, trace=True)
    _no_glyph_warnings(viz.plot_trace, res.trace, tok)
    for step in (0, 3, 5):  # the slider's range
        fig = _no_glyph_warnings(viz.trace_step_view, res, step, tok)
        assert fig.axes[0].get_title(loc="left").startswith(f"step {step},")
    viz.trace_step_view(res, 99)  # clamped, no error
    viz.trace_step_view(res, 2)  # without tok
    with pytest.raises(ValueError):
        viz.trace_step_view(il.generate(small, tok, "The", max_new_tokens=2), 0)


def test_plot_stage_times(small, tok):
    t = anatomy.time_step(small, tok, "The return value", warmup=0, repeats=1)
    _no_glyph_warnings(viz.plot_stage_times, t)


def test_entropy_bits():
    assert viz.entropy_bits(torch.tensor([0.5, 0.5, 0.0])) == pytest.approx(1.0)
    assert viz.entropy_bits(torch.tensor([1.0, 0.0])) == pytest.approx(0.0)


# --- exercises: each check accepts a right answer and rejects a wrong one -------------------------------

def test_exercise_21(tok):
    right = len(tok.encode(part2.EX21_TEXT))
    assert ex.verdict("2.1", right)[0]
    assert not ex.verdict("2.1", len(part2.EX21_TEXT))[0]
    assert not ex.verdict("2.1", right + 1)[0]


def test_exercise_22():
    right = torch.tensor(part2.EX22_LOGITS).topk(part2.EX22_K).indices.tolist()
    assert set(right) == {2, 4, 6}
    assert ex.verdict("2.2", right)[0] and ex.verdict("2.2", set(right))[0] and ex.verdict("2.2", torch.tensor(right))[0]
    assert not ex.verdict("2.2", [2, 4])[0]
    assert not ex.verdict("2.2", [2, 4, 3])[0]


def test_exercise_23():
    right = torch.softmax(torch.tensor(part2.EX23_LOGITS) / part2.EX23_TEMPERATURE, -1)[0].item()
    assert ex.verdict("2.3", right)[0] and ex.verdict("2.3", round(right, 3))[0]
    assert not ex.verdict("2.3", torch.softmax(torch.tensor(part2.EX23_LOGITS), -1)[0].item())[0]
    assert not ex.verdict("2.3", 0.5)[0]


def test_exercise_24():
    assert ex.verdict("2.4", [0, 1, 4])[0]
    assert not ex.verdict("2.4", [0, 1])[0]
    assert not ex.verdict("2.4", [0, 1, 4, 2])[0]


@needs_bundled
def test_exercise_25():
    model, tok = il.load_pretrained()
    right = il.generate(model, tok, part2.EX25_PROMPT, max_new_tokens=1).tokens[0]
    assert ex.verdict("2.5", right)[0]
    assert not ex.verdict("2.5", (right + 1) % tok.vocab_size)[0]
    assert not ex.verdict("2.5", tok.decode([right]))[0]


@pytest.mark.parametrize("key", ["2.1", "2.2", "2.3", "2.4"])
def test_check_prints_and_never_raises(key, capsys):
    for answer in (None, "nonsense", [1.5], object()):
        ex.check(key, answer)
        assert ex.verdict(key, answer)[0] is False
    printed = capsys.readouterr().out
    assert printed.count("❌") == 3 and "waiting for your answer" in printed
    ex.solution(key)
    assert "answer" in capsys.readouterr().out
