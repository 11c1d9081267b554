"""Every bad input the fuzzing of issue 16 found unclear or silently accepted is now a ValueError/TypeError that
names the argument and what is allowed (DESIGN.md's bad-input rule). One row per input."""
import pytest

import inferlab as il
from conftest import random_model

TOK = il.BPETokenizer()
CFG = il.ModelConfig(vocab_size=300, d_model=32, n_layer=1, n_head=2, max_seq_len=64)
MODEL = random_model(CFG)


def engine():
    return il.Engine(MODEL, TOK, block_size=4, num_blocks=32)


CASES = [
    # (what, call, error, words the message must contain)
    ("stop=5 in generate", lambda: il.generate(MODEL, TOK, [1, 2], 4, stop=5), TypeError, "stop"),
    ("stop=5 in SamplingParams", lambda: il.SamplingParams(stop=5), TypeError, "stop"),
    ("trace_top=-1", lambda: il.generate(MODEL, TOK, [1, 2], 4, trace=True, trace_top=-1), ValueError, "trace_top"),
    ("pad_id=-1", lambda: il.generate_batch(MODEL, TOK, [[1, 2], [3]], 2, pad_id=-1), ValueError, "pad_id"),
    ("pad_id=10**6", lambda: il.generate_batch(MODEL, TOK, [[1, 2], [3]], 2, pad_id=10**6), ValueError, "pad_id"),
    ("pad_id=2.5", lambda: il.generate_batch(MODEL, TOK, [[1, 2], [3]], 2, pad_id=2.5), ValueError, "pad_id"),
    ("request_id=['x']", lambda: engine().add_request([1], request_id=["x"]), TypeError, "request_id"),
    ("abort of an unknown id", lambda: engine().abort_request("nope"), ValueError, "request_id"),
    ("MODEL_CONFIGS['gpt-5']", lambda: il.MODEL_CONFIGS["gpt-5"], ValueError, "known: gpt2"),
    ("ModelConfig(d_ff=-1)", lambda: CFG.with_(d_ff=-1), ValueError, "d_ff"),
    ("ModelConfig(rope_theta=0)", lambda: CFG.with_(arch="llama", rope_theta=0.0), ValueError, "rope_theta"),
    ("ModelConfig(norm_eps=-1)", lambda: CFG.with_(norm_eps=-1.0), ValueError, "norm_eps"),
    ("ModelConfig(qkv_bias='no')", lambda: CFG.with_(qkv_bias="no"), TypeError, "qkv_bias"),
    ("a prompt of bools", lambda: il.generate(MODEL, TOK, [True, False], 4), TypeError, "prompt"),
    ("a prompt of bools in the engine", lambda: engine().add_request([True, 1]), TypeError, "prompt"),
    ("use_cache='no'", lambda: il.generate(MODEL, TOK, [1, 2], 4, use_cache="no"), TypeError, "use_cache"),
    ("a model name as the engine's tokenizer", lambda: il.Engine(MODEL, "gpt2"), TypeError, "tok must be a tokenizer"),
    ("enable_prefix_caching='no'", lambda: il.Engine(MODEL, TOK, enable_prefix_caching="no"), TypeError,
     "enable_prefix_caching"),
    ("temperature=float('nan')", lambda: il.generate(MODEL, TOK, [1, 2], 4, temperature=float("nan")), ValueError,
     "temperature"),
    ("a negative prompt id", lambda: il.generate(MODEL, TOK, [1, -2], 4), ValueError, "vocab_size"),
    ("a prompt id past the vocabulary", lambda: il.generate(MODEL, TOK, [1, 300], 4), ValueError, "vocab_size"),
]


@pytest.mark.parametrize("what, call, error, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(what, call, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace("[", r"\[")):
        call()


def test_an_unknown_config_is_still_a_key_error_for_code_that_expects_one():
    with pytest.raises(KeyError):
        il.MODEL_CONFIGS["gpt-5"]
    assert "gpt-5" not in il.MODEL_CONFIGS and il.MODEL_CONFIGS.get("gpt-5") is None


def test_tiny_temperatures_work_instead_of_failing():
    out = il.generate(MODEL, TOK, [1, 2, 3], 5, temperature=1e-40, seed=0)
    assert out.tokens == il.generate(MODEL, TOK, [1, 2, 3], 5).tokens
