import pytest
from hypothesis import example, given, strategies as st

import inferlab as il
from inferlab.core.pretrained import load_tokenizer
from inferlab.core.tokenizer import _pieces

SAMPLE = "The assert statement inserts debugging assertions into a program. " * 3 + "naïve café 🚀 日本語"


@pytest.fixture(scope="module")
def tiny_tok():
    return il.BPETokenizer.train(SAMPLE, 300)


@pytest.fixture(scope="module")
def bundled_tok():
    return load_tokenizer()


@given(st.text(max_size=200))
@example("snake_case __init__ _ x² ½ it's\t\r\n")
def test_any_unicode_round_trips_with_the_bundled_tokenizer(text):
    tok = load_tokenizer()
    assert tok.decode(tok.encode(text)) == text


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=100))
@example("__init__ and max_seq_len")
def test_any_unicode_round_trips_with_a_tiny_tokenizer(text):
    tok = il.BPETokenizer.train(SAMPLE, 300)
    assert tok.decode(tok.encode(text)) == text


@given(st.text(max_size=300))
def test_the_split_into_pieces_loses_no_character(text):
    assert b"".join(_pieces(text)) == text.encode("utf-8")


def test_training_learns_merges_that_shorten_text(tiny_tok):
    assert tiny_tok.vocab_size == 300
    assert len(tiny_tok.encode(SAMPLE)) < len(SAMPLE.encode("utf-8")) / 2
    assert il.BPETokenizer.train(SAMPLE, 300).merges == tiny_tok.merges  # deterministic


def test_save_and_load(tmp_path, tiny_tok):
    tiny_tok.save(tmp_path / "tok.json")
    again = il.BPETokenizer.load(tmp_path / "tok.json")
    assert again.merges == tiny_tok.merges and again.encode(SAMPLE) == tiny_tok.encode(SAMPLE)


def test_show_tokens_marks_boundaries(bundled_tok):
    shown = il.show_tokens(bundled_tok, "Hello world")
    assert shown.replace("|", "") == "Hello world" and "|" in shown


def test_bundled_tokenizer_compresses_its_training_text(bundled_tok):
    text = "Return a new list containing all items from the iterable in ascending order."
    assert len(bundled_tok.encode(text)) < len(text) / 2.5


def test_bad_input(tiny_tok):
    with pytest.raises(TypeError, match="text must be a str"):
        tiny_tok.encode(b"bytes")
    with pytest.raises(ValueError, match="token ids must lie in"):
        tiny_tok.decode([300])
    with pytest.raises(ValueError, match="vocab_size must be"):
        il.BPETokenizer.train("abc", 100)


def test_merge_steps_follow_encode(bundled_tok):
    tok = bundled_tok
    for word in [" function", " tokenizer", "🙂", "12", "  "]:
        steps = tok.merge_steps(word)
        assert steps[0] == list(word.encode("utf-8"))            # starts from the bytes
        assert steps[-1] == tok.encode(word)                     # ends at what encode gives
        assert all(len(b) == len(a) - 1 or len(b) < len(a) for a, b in zip(steps, steps[1:]))
        assert all(tok.decode(s) == word for s in steps)         # every step spells the same text
    with pytest.raises(ValueError, match="one piece"):
        tok.merge_steps("two words")
    with pytest.raises(TypeError):
        tok.merge_steps(b"bytes")


def test_pair_counts_pick_the_first_merge():
    from inferlab.core.tokenizer import BPETokenizer, pair_counts
    text = "low lower lowest newer wider"
    counts = pair_counts(text)
    assert counts[(ord("l"), ord("o"))] == 3 and (ord("w"), ord(" ")) not in counts   # never across pieces
    trained = BPETokenizer.train(text, 257)
    best = max(counts.values())
    assert counts[trained.merges[0]] == best
    with pytest.raises(TypeError):
        pair_counts(None)
