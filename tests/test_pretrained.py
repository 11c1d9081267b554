import re
import time
from pathlib import Path

import pytest
import torch

import inferlab as il
from inferlab.core.corpus import load_corpus, split_corpus
from inferlab.core.pretrained import CHECKPOINTS, load_tokenizer
from inferlab.core.train import heldout_loss, token_tensor

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def heldout_ids():
    return token_tensor(load_tokenizer(), split_corpus(load_corpus())[1])


@pytest.fixture(scope="module")
def main_loss(heldout_ids):
    """The main model's held-out loss, computed once for the tests below (a pass over the whole held-out text)."""
    model, _ = il.load_pretrained()
    return heldout_loss(model, heldout_ids, seq_len=256)


def stated_loss(name):
    match = re.search(rf"{name} model[^\n]*held-out loss of (\d+\.\d+)", README.read_text())
    assert match, f"README.md must state the {name} model's held-out loss"
    return float(match.group(1))


def test_main_model_reaches_the_held_out_loss_the_readme_states(main_loss):
    loss = main_loss
    assert loss == pytest.approx(stated_loss("main"), abs=0.005)
    assert loss < 0.6 * torch.log(torch.tensor(2048.0)).item()  # far better than a uniform guess


def test_draft_is_much_smaller_and_worse_on_the_same_tokenizer(heldout_ids, main_loss):
    main, tok = il.load_pretrained()
    draft, tok2 = il.load_pretrained("draft")
    assert tok2.merges == tok.merges and draft.config.vocab_size == main.config.vocab_size
    assert draft.num_params() * 7 < main.num_params() and draft.config.n_layer < main.config.n_layer
    draft_loss = heldout_loss(draft, heldout_ids, seq_len=256)
    assert draft_loss == pytest.approx(stated_loss("draft"), abs=0.005)
    assert draft_loss > main_loss


def test_checkpoints_fit_the_size_budget():
    assert sum(p.stat().st_size for p in CHECKPOINTS.values()) <= 25 * 2**20


def test_load_pretrained_is_quick_and_ready(capsys):
    start = time.perf_counter()
    model, tok = il.load_pretrained()
    print(f"load_pretrained took {time.perf_counter() - start:.3f} s")  # reported, never asserted
    assert not model.training and model.config.name == "inferlab-main"
    assert model.meta["steps"] > 0


def test_samples_read_like_python_documentation():
    model, tok = il.load_pretrained()
    text = il.generate(model, tok, "The return value", max_new_tokens=60).text
    words = re.findall(r"[a-z]+", text.lower())
    common = {"the", "a", "is", "of", "to", "and", "in", "if", "be", "for", "an", "or", "that", "it", "this", "are",
              "as", "by", "with", "not", "object", "value", "function", "return", "returns", "list", "string",
              "module", "name", "argument", "default", "none", "file", "method", "class", "type"}
    assert len(words) >= 8 and sum(w in common for w in words) / len(words) > 0.3


def test_unknown_bundled_name():
    with pytest.raises(ValueError, match="unknown bundled model 'huge'"):
        il.load_pretrained("huge")
