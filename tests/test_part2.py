"""Tests for notebook 02: the stage-by-stage forward pass, the stage timer, the plots and widget
callbacks (called with the values the widgets send), and the exercises' checks."""
import warnings

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure

import inferlab as il
from inferlab import exercises as ex
from inferlab.core.pretrained import CHECKPOINTS, load_tokenizer
from inferlab.exercises import part2
from inferlab.lessons import part2 as lesson2
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
    out = lesson2.forward_by_stage(model, idx)
    with torch.inference_mode():
        ref = model(idx)
    assert out.logits.shape == ref.shape
    assert torch.allclose(out.logits, ref, atol=1e-5, rtol=0)


@needs_bundled
def test_forward_by_stage_matches_bundled_model(tok):
    model, tok = il.load_pretrained()
    ids = tok.encode("The return value of a function is")
    out = lesson2.forward_by_stage(model, ids)
    with torch.inference_mode():
        ref = model(torch.tensor([ids]))
    assert torch.allclose(out.logits, ref, atol=1e-5, rtol=0)


def test_stage_names_shapes_and_embedding_row(small):
    cfg = small.config
    ids = [5, 17, 300, 2047]
    out = lesson2.forward_by_stage(small, ids)
    assert out.names == ["embed"] + [f"layer {i}" for i in range(cfg.n_layer)] + ["final norm"]
    assert all(t.shape == (1, len(ids), cfg.d_model) for t in out.tensors)
    # llama arch: no learned positions, so the embedding stage is exactly the rows of tok_emb.weight
    assert torch.equal(out["embed"][0], small.tok_emb.weight[ids].detach())
    rows = lesson2.stage_summary(out)
    assert [r["stage"] for r in rows] == out.names
    assert rows[-1]["rms"] == pytest.approx(1.0, abs=0.05)  # RMSNorm with unit weights
    assert lesson2.token_rms(out).shape == (len(out.names), len(ids))


def test_gpt2_embedding_adds_positions():
    torch.manual_seed(0)
    model = il.GPT(CONFIGS["gpt2-arch"]).eval()
    idx = torch.tensor([[3, 3, 3]])
    emb = lesson2.embed(model, idx)
    assert emb.rope is None
    expected = model.tok_emb.weight[[3, 3, 3]] + model.pos_emb.weight[:3]
    assert torch.allclose(emb.x[0], expected)


def test_logit_lens_last_row_is_the_prediction(small):
    ids = [1, 2, 3, 4, 5]
    out = lesson2.forward_by_stage(small, ids)
    lens = lesson2.logit_lens(small, out)
    assert [r[0] for r in lens] == out.names[:-1]
    assert lens[-1][1] == int(out.logits[0, -1].argmax())
    assert all(0 < r[2] <= 1 for r in lens)


def test_as_ids_rejects_bad_input(small):
    with pytest.raises(ValueError):
        lesson2.as_ids([])
    with pytest.raises(ValueError):
        lesson2.as_ids(torch.zeros(1, 3))
    with pytest.raises(ValueError):
        lesson2.embed(small, torch.zeros(1, small.config.max_seq_len + 1, dtype=torch.long))


# --- anatomy: timing ------------------------------------------------------------------------------------

def test_time_call_and_median():
    calls = []
    times = lesson2.time_call(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(times) == 5 and len(calls) == 7 and all(t >= 0 for t in times)
    assert lesson2.median_time(lambda: None, warmup=0, repeats=3) >= 0
    with pytest.raises(ValueError):
        lesson2.time_call(lambda: None, repeats=0)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, None, None), (0.8, 20, 0.9)])
def test_time_step_stages(small, tok, temperature, top_k, top_p):
    t = lesson2.time_step(small, tok, "The return value", temperature, top_k, top_p, warmup=1, repeats=2)
    n = small.config.n_layer
    assert list(t.stages) == ["tokenize", "embed"] + [f"layer {i}" for i in range(n)] + ["head", "sampling"]
    assert all(v > 0 for v in t.stages.values()) and t.whole_step_s > 0
    assert t.prompt_tokens == len(tok.encode("The return value"))
    assert list(t.grouped()) == ["tokenize", "embed", "layers", "head", "sampling"]
    assert sum(t.grouped().values()) == pytest.approx(t.sum_of_stages_s)
    assert len(t.samples["whole step"]) == 2
    assert set(t.timings) == set(t.stages) | {"whole step", "greedy pick"}   # all timed in the same rounds
    assert all(x.repeats == 2 for x in t.timings.values()) and t.greedy_pick_s > 0
    assert isinstance(t.busy_note(), str)
    assert not small.training
    with pytest.raises(ValueError):
        lesson2.time_step(small, tok, "")


def _step_timing(stage_us: dict, whole_us: float, greedy_us: float = 10.0, jitter: float = 0.0):
    """A StepTiming built from chosen medians; ``jitter`` spreads the repeats (0.5 = a busy machine)."""
    from inferlab.measure.timing import from_samples as _timing
    def reps(us):
        return _timing([us * 1e-6 * f for f in (1 - jitter, 1 - jitter / 2, 1, 1 + jitter / 2, 1 + jitter)])
    timings = {name: reps(us) for name, us in stage_us.items()}
    timings["whole step"], timings["greedy pick"] = reps(whole_us), reps(greedy_us)
    return lesson2.StepTiming(7, {k: v.median_s for k, v in timings.items() if k in stage_us},
                              timings["whole step"].median_s, {k: v.samples_s for k, v in timings.items()}, timings)


QUIET = {"tokenize": 8, "embed": 60, "layer 0": 700, "layer 1": 710, "layer 2": 720, "layer 3": 705,
         "head": 150, "sampling": 330}


def test_step_findings_state_what_the_numbers_show():
    text = " ".join(lesson2.step_findings(_step_timing(QUIET, 3900)))
    assert "took 3,900 µs timed in one piece" in text and "add up to 3,383 µs" in text
    assert "The 4 layers took 84%" in text and "most of it" in text
    assert "Each layer cost about the same (700 µs to 720 µs)" in text
    assert "nearly free" in text
    assert "33 x a greedy argmax (10 µs) and more than the head's" in text
    assert "typical of this machine" in text and "busy" not in text
    # other outcomes give other sentences, never the quiet machine's
    odd = dict(QUIET, **{"layer 2": 1400, "sampling": 100, "tokenize": 300})
    text = " ".join(lesson2.step_findings(_step_timing(odd, 5000)))
    assert "differed by 2.0 x" in text and "less than the head's" in text and "nearly free" not in text
    small_layers = dict(QUIET, **{f"layer {i}": 50 for i in range(4)})
    assert "only" in " ".join(lesson2.step_findings(_step_timing(small_layers, 900)))


def test_step_findings_on_a_busy_machine_draw_no_conclusion():
    lines = lesson2.step_findings(_step_timing(QUIET, 3900, jitter=0.6))
    text = " ".join(lines)
    assert "looks busy" in text and "no conclusion" in text
    assert "most of it" not in text and "nearly free" not in text and "about the same" not in text


def test_layer_updates_measure_what_each_layer_added(small):
    out = lesson2.forward_by_stage(small, [5, 17, 300, 2047])
    rows = lesson2.layer_updates(out)
    assert [r["stage"] for r in rows] == [f"layer {i}" for i in range(small.config.n_layer)]
    diff = out["layer 0"][0] - out["embed"][0]
    assert rows[0]["update_rms"] == pytest.approx(diff.pow(2).mean(-1).sqrt().mean().item(), rel=1e-5)
    assert rows[1]["rms_before"] == pytest.approx(rows[0]["rms_after"])
    # an update against the stream shortens the vector: the count must see it
    x = torch.ones(1, 3, 4)
    fake = lesson2.StageOutputs(["embed", "layer 0", "final norm"], [x, x * 0.5, x], torch.zeros(1, 3, 8))
    row = lesson2.layer_updates(fake)[0]
    assert row["tokens_shrunk"] == 3 and row["rms_after"] < row["rms_before"]


def test_ops_by_stage_counts_every_stage(small, tok):
    ops = lesson2.ops_by_stage(small, tok, "The return value", 0.8, 20, 0.9)
    n = small.config.n_layer
    assert list(ops) == ["tokenize", "embed"] + [f"layer {i}" for i in range(n)] + ["head", "sampling", "whole step"]
    assert ops["tokenize"] == 0   # plain Python: no torch operation
    assert len({ops[f"layer {i}"] for i in range(n)}) == 1 and ops["layer 0"] > 10   # every block runs the same code
    greedy = lesson2.ops_by_stage(small, tok, "The return value")
    assert greedy["sampling"] < ops["sampling"]   # an argmax is fewer operations than filter, sort and draw
    assert ops["whole step"] >= sum(v for k, v in ops.items() if k != "whole step") - ops["sampling"]
    assert not small.training
    with pytest.raises(ValueError):
        lesson2.ops_by_stage(small, tok, "")


OPS = {"tokenize": 0, "embed": 12, "layer 0": 64, "layer 1": 64, "layer 2": 64, "layer 3": 64, "head": 7,
       "sampling": 22, "whole step": 306}


def test_overhead_findings_state_what_the_numbers_show():
    text = " ".join(lesson2.overhead_findings(_step_timing(QUIET, 3900), OPS, 10e-6))
    assert "took 10.0 µs here" in text and "306 torch operations" in text and "3,060.0 µs" in text
    assert "78% of the step" in text and "overhead-bound" in text
    assert "One layer runs 64 operations, 640.0 µs of fixed cost against 700.0 µs measured for layer 0." in text
    text = " ".join(lesson2.overhead_findings(_step_timing(QUIET, 3900), OPS, 1e-6))
    assert "8% of the step" in text and "only part of it" in text and "overhead-bound" not in text
    text = " ".join(lesson2.overhead_findings(_step_timing(QUIET, 3900), OPS, 20e-6))
    assert "100% of the step or more" in text and "estimate is rough" in text
    busy = " ".join(lesson2.overhead_findings(_step_timing(QUIET, 3900, jitter=0.6), OPS, 10e-6))
    assert "looks busy" in busy and "no conclusion" in busy and "overhead-bound" not in busy
    with pytest.raises(ValueError):
        lesson2.overhead_findings(_step_timing(QUIET, 3900), OPS, 0)
    with pytest.raises(ValueError, match="ops lacks"):
        lesson2.overhead_findings(_step_timing(QUIET, 3900), {"embed": 1}, 1e-6)


# --- plots and widget callbacks ---------------------------------------------------------------------------

def test_figures_are_legible_on_github():
    assert viz.DPI >= 150

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


def test_single_byte_tokens_are_ids_below_256_in_the_bundled_tokenizer_and_one_byte_in_any(tok):
    assert [viz.is_byte_token(i, tok) for i in range(tok.vocab_size)] == [i < 256 for i in range(tok.vocab_size)]
    assert [viz.is_byte_token(i) for i in range(tok.vocab_size)] == [i < 256 for i in range(tok.vocab_size)]
    assert viz.token_label(tok, tok.vocab_size + 5) == f"<{tok.vocab_size + 5}>"   # an id the tokenizer lacks
    assert not viz.is_byte_token(tok.vocab_size + 5, tok) and not viz.is_partial(tok, tok.vocab_size + 5)
    ids = tok.encode("Grüße aus Köln 🙂 — the return value is None.")
    assert viz.text_of(tok, ids) == tok.decode(ids) and viz.text_of(tok, ids[:2] + [tok.vocab_size]).endswith(
        f"<{tok.vocab_size}>")


def test_token_view_counts_only_ids_below_256_as_single_bytes(tok):
    text = "Grüße aus Köln 🙂 — the return value is None."
    ids = tok.encode(text)
    assert 1093 in ids and tok.vocab[1093] == b" \xe2\x80"   # a learned merge that stops mid-character
    assert viz.is_partial(tok, 1093) and not viz.is_byte_token(1093)
    fig = _no_glyph_warnings(viz.token_view, tok, text)
    n_single, n_partial = sum(i < 256 for i in ids), sum(viz.is_partial(tok, i) for i in ids)
    assert n_single != n_partial   # the two counts differ on this text, so the title must not mix them
    title = fig._suptitle.get_text()
    assert f"{n_single} single-byte tokens (orange)" in title and f"{n_partial} not whole characters" in title
    boxes = [p for p in fig.axes[0].patches]
    orange = [b for b in boxes if matplotlib.colors.to_hex(b.get_facecolor()) == "#f9cb9c"]
    assert len(boxes) == len(ids) and len(orange) == n_single


def test_token_labels_show_bytes_for_partial_characters(tok):
    ids = tok.encode("🙂")
    assert len(ids) >= 2  # no emoji token: byte-level fallback
    assert all(viz.is_partial(tok, i) for i in ids)
    assert viz.token_label(tok, ids[0]) == "F0"
    assert viz.token_label(tok, tok.encode(" a")[0]).startswith("␣")
    table = viz.format_tokens(tok, "🙂")
    assert "b'\\xf0'" in table and "1 character -> 4 UTF-8 bytes -> 4 tokens" in table


def test_sampling_view_callback_with_slider_values(small, tok):
    logits = lesson2.forward_by_stage(small, tok.encode("The")).logits[0, -1] * 20  # random weights: sharpen
    # slider defaults: temperature 1, top_k 0 (off), top_p 1.0 (off)
    fig = _no_glyph_warnings(viz.sampling_view, logits, tok, temperature=1.0, top_k=0, top_p=1.0)
    assert f"{logits.numel()} of {logits.numel()} tokens can be drawn" in fig.axes[0].get_title()
    assert "top_k off, top_p off" in fig.axes[0].get_title()   # what the slider values mean, not None
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
    out = lesson2.forward_by_stage(small, ids)
    _no_glyph_warnings(viz.plot_residual_stream, out, tok, ids)
    _no_glyph_warnings(viz.plot_embedding_row, small, tok, ids[0])
    _no_glyph_warnings(viz.plot_logits_to_probs, out.logits[0, -1], tok, n=8)


def test_trace_plots_and_step_slider_callback(small, tok):
    res = il.generate(small, tok, "The return value", max_new_tokens=6, temperature=0.9, seed=3, trace=True)
    fig = _no_glyph_warnings(viz.plot_trace, res.trace, tok)
    drawn = {t.get_text().replace("\n", "") for t in fig.axes[0].texts}
    for s in res.trace:   # every candidate's whole label is drawn, none cut short
        assert all(viz.token_label(tok, c.token_id).replace("$", r"\$") in drawn for c in s.candidates)
    with pytest.raises(ValueError):
        viz.plot_trace([], tok)
    for step in (0, 3, 5):  # the slider's range
        fig = _no_glyph_warnings(viz.trace_step_view, res, step, tok)
        assert fig.axes[0].get_title(loc="left").startswith(f"step {step},")
    viz.trace_step_view(res, 99)  # clamped, no error
    viz.trace_step_view(res, 2)  # without tok
    with pytest.raises(ValueError):
        viz.trace_step_view(il.generate(small, tok, "The", max_new_tokens=2), 0)


def _widget_bundle(live_widget, what):
    bundle = live_widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and bundle["image/png"]
    assert bundle["text/plain"].startswith("Live widget: ") and what in bundle["text/plain"]
    return bundle


def test_live_widgets_carry_their_default_picture(small, tok, capsys):
    import matplotlib.pyplot as plt
    _widget_bundle(viz.token_widget(tok), "text box")
    assert tok.encode("🙂") and part2.EX21_TEXT not in viz.TOKEN_DEMO_TEXT   # the box does not show 2.1's answer
    logits = lesson2.forward_by_stage(small, tok.encode("The")).logits[0, -1]
    sliders = viz.sampling_widget(logits, tok)
    _widget_bundle(sliders, "temperature")
    values = {w.description: w.value for w in sliders.widget.children[:-1]}
    assert values == {"temperature": 1.0, "top_k": 0, "top_p": 1.0}   # the picture's defaults
    res = il.generate(small, tok, "The return value", max_new_tokens=4, trace=True)
    step = viz.step_widget(res, tok)
    _widget_bundle(step, "slider")
    assert step.widget.children[0].max == len(res.trace) - 1
    with pytest.raises(ValueError):
        viz.step_widget(il.generate(small, tok, "The", max_new_tokens=2), tok)
    capsys.readouterr()
    plt.close("all")


def test_fit_label_never_cuts_a_label():
    for label in ["␣a", "␣function", "-----------+--------------------------------"]:
        text, size = viz._fit_label(label, width_pt=90)
        assert text.replace("\n", "") == label and 6 <= size <= 9


def test_words_over_steps():
    texts = [" a", " string", "\n", "ra", "ises", " an", " by", "te", "w", '"', " defini", "tions", ".", "x"]
    assert viz.words_over_steps(texts) == [(3, ["ra", "ises"]), (6, [" by", "te", "w"]), (10, [" defini", "tions"])]
    assert viz.words_over_steps([" a", " function", " object", "."]) == []
    assert viz.words_over_steps(["ab", "cd"]) == [(0, ["ab", "cd"])]


def test_plot_stage_times(small, tok):
    t = lesson2.time_step(small, tok, "The return value", warmup=0, repeats=1)
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


def test_exercise_hints_say_what_is_wrong():
    right = torch.tensor(part2.EX22_LOGITS).topk(part2.EX22_K).indices.tolist()
    assert "counted from 1" in ex.verdict("2.2", [i + 1 for i in right])[1]
    assert "not logit values" in ex.verdict("2.2", sorted(part2.EX22_LOGITS)[-3:])[1]
    p = torch.softmax(torch.tensor(part2.EX23_LOGITS) / part2.EX23_TEMPERATURE, -1)[0].item()
    assert "percentage" in ex.verdict("2.3", p * 100)[1]
    assert "more than needed" in ex.verdict("2.4", [0, 1, 4, 2])[1]
    assert "not logit values" in ex.verdict("2.4", [0.46, 0.28, 0.17])[1]


@needs_bundled
def test_exercise_25():
    model, tok = il.load_pretrained()
    assert part2.EX25_PROMPT != part2.PROMPT_OF_THE_NOTEBOOK   # the notebook never prints this pick
    right = il.generate(model, tok, part2.EX25_PROMPT, max_new_tokens=1).tokens[0]
    ok, message = ex.verdict("2.5", right)
    assert ok
    assert not ex.verdict("2.5", tok.decode([right]))[0]
    notebook_pick = il.generate(model, tok, part2.PROMPT_OF_THE_NOTEBOOK, max_new_tokens=1).tokens[0]
    assert notebook_pick != right
    assert "notebook's prompt" in ex.verdict("2.5", notebook_pick)[1]
    runner_up = [i for i in part2.likely_next_tokens(part2.EX25_PROMPT) if i not in
                 (right, notebook_pick, *tok.encode(part2.EX25_PROMPT))][0]
    assert "not the most likely" in ex.verdict("2.5", runner_up)[1]
    assert "[0, " in ex.verdict("2.5", tok.vocab_size + 5)[1]
    for wrong in (notebook_pick, runner_up, tok.vocab_size + 5, (right + 1) % tok.vocab_size):
        ok, message = ex.verdict("2.5", wrong)
        assert not ok and str(right) not in message.split("not yet.")[1]   # a hint never gives the id away


class _CharTokenizer:
    """Another lesson's tokenizer: one token per character (its code point, modulo 256)."""
    vocab = [bytes([b]) for b in range(256)]
    vocab_size = 256

    def encode(self, text):
        return [ord(c) % 256 for c in text]


def test_exercises_21_and_25_are_checked_on_the_lessons_own_model_when_it_is_passed(tok):
    char_tok = _CharTokenizer()
    n_chars = len(part2.EX21_TEXT)
    assert n_chars != len(tok.encode(part2.EX21_TEXT))
    assert ex.verdict("2.1", n_chars, tok=char_tok)[0] and not ex.verdict("2.1", n_chars)[0]
    torch.manual_seed(1)
    other = il.GPT(il.ModelConfig(vocab_size=256, d_model=32, n_layer=1, n_head=2, max_seq_len=64)).eval()
    with torch.inference_mode():
        right = int(other(torch.tensor([char_tok.encode(part2.EX25_PROMPT)]))[0, -1].argmax())
    assert ex.verdict("2.5", right, model=other, tok=char_tok)[0]
    assert ex.get_exercise("2.5").uses == ("model", "tok") and ex.get_exercise("2.1").uses == ("tok",)
    assert "could not be checked" in ex.verdict("2.5", right, model=other)[1]   # a model needs its tokenizer
    with pytest.raises(TypeError, match="takes no model"):
        ex.verdict("2.1", n_chars, model=other)
    namespace = {"il": il, "torch": torch, "model": other, "tok": char_tok, "answer": None}
    assert ex.run_solution("2.5", namespace) == [] and ex.run_solution("2.1", namespace) == []


def test_exercise_26_prediction_against_the_learner_measurement():
    quiet = _step_timing(QUIET, 3900)                    # layers: 84% of the stages
    share = quiet.layers_s / quiet.sum_of_stages_s
    assert ex.get_exercise("2.6").measured == "breakdown"
    for guess in (share, 0.75, 0.95, 0.6):               # near it, or most of the step and within 0.25
        assert ex.verdict("2.6", guess, measured=quiet)[0], guess
    for guess in (0.3, 0.5, 0.55, 0.0):                  # "less than half", or far off
        assert not ex.verdict("2.6", guess, measured=quiet)[0], guess
    assert "the other way" in ex.verdict("2.6", 0.3, measured=quiet)[1]
    assert "Right side of one half" in ex.verdict("2.6", 0.55, measured=quiet)[1]
    assert "percentage" in ex.verdict("2.6", 80, measured=quiet)[1]
    assert "between 0 and 1" in ex.verdict("2.6", -1, measured=quiet)[1]
    assert "not text" in ex.verdict("2.6", "most", measured=quiet)[1]
    assert "run the measuring cell" in ex.verdict("2.6", 0.8)[1]   # a prediction needs the measurement
    # a machine where the layers took less than half: a guess of "less than half" is right there
    small_layers = _step_timing(dict(QUIET, **{f"layer {i}": 50 for i in range(4)}), 900)
    assert ex.verdict("2.6", 0.3, measured=small_layers)[0]
    assert not ex.verdict("2.6", 0.9, measured=small_layers)[0]
    busy = _step_timing(QUIET, 3900, jitter=0.6)
    assert "busy machine" in ex.verdict("2.6", 0.1, measured=busy)[1]
    assert ex.verdict("2.6", 0.8, measured=0.84)[0]   # a plain share works too
    with pytest.raises(ValueError):
        part2._layer_share(1.5)


def test_compare_guess():
    assert part2.compare_guess(None, 21, "tokens").startswith("… no guess written yet (tokens)")
    assert part2.compare_guess(12, 21, "tokens") == "tokens: you guessed 12, measured 21 (within 2x: a good guess)."


@needs_bundled
def test_solutions_run_in_the_notebook_namespace_and_leave_it_alone():
    model, tok = il.load_pretrained()
    ids = tok.encode(part2.PROMPT_OF_THE_NOTEBOOK)
    logits = model(torch.tensor([ids]))[0, -1].detach()
    namespace = {"il": il, "torch": torch, "model": model, "tok": tok, "ids": ids, "logits": logits,
                 "probs": torch.softmax(logits, -1), "idx": torch.tensor([ids]), "answer": None,
                 "answer_22": None, "answer_23": None, "answer_24": None, "answer_26": None,
                 "breakdown": _step_timing(QUIET, 3900)}
    for key in ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"]:
        assert ex.run_solution(key, namespace) == [], key


@pytest.mark.parametrize("key", ["2.1", "2.2", "2.3", "2.4"])
def test_check_prints_and_never_raises(key, capsys):
    for answer in (None, "nonsense", [1.5], object()):
        ex.check(key, answer)
        assert ex.verdict(key, answer)[0] is False
    printed = capsys.readouterr().out
    assert printed.count("❌") == 3 and "waiting for your answer" in printed
    ex.solution(key)
    assert "answer" in capsys.readouterr().out
