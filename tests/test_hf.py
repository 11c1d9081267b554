"""il.load_hf against transformers itself (issue 17): tiny random checkpoints of each architecture, written by
transformers' save_pretrained, must give transformers' logits and greedy tokens, on every path of our GPT.

The checkpoints are built once per session in a temporary folder (random weights, tokenizers trained in a
fraction of a second on the bundled corpus). Tests that need transformers skip without it; the checks of
arguments, of the optional imports and of real configs need nothing optional.
"""
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import inferlab as il
from inferlab import hf as ilhf
from inferlab.core.config import RopeScaling
from inferlab.core.corpus import load_corpus
from inferlab.optimize.quantize import quantize_model
from inferlab.optimize.speculative import speculative_generate

NEW = 32   # greedy tokens compared
PROMPTS = ["The return value of the function is", "A list"]
SKIP = "the Hugging Face tests need transformers: pip install -r requirements-hf.txt"


def need(module: str):
    """An optional package of requirements-hf.txt, or a skip; in CI, which installs them, a failure instead."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=SKIP)
MAX_DIFF = {}   # the largest logit difference from transformers, by checkpoint (printed with -s)


# --- building the checkpoints --------------------------------------------------------------------------------

def byte_level_tokenizer(text):
    """GPT-2 style: byte-level BPE (GPT-2, Llama 3, SmolLM, Qwen2 tokenize this way)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok, {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}


def sentencepiece_tokenizer(text):
    """Llama 2 style, as its tokenizer.json has it: spaces written "▁", bytes without a token as <0xNN>
    tokens (byte fallback), and <s> put before every text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"],
                                                        show_progress=False))
    spec = json.loads(tok.to_str())
    for b in range(256):
        spec["model"]["vocab"].setdefault(f"<0x{b:02X}>", len(spec["model"]["vocab"]))
    spec["model"].update(byte_fallback=True, fuse_unk=True)
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    spec["pre_tokenizer"] = None
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


@torch.no_grad()
def spread(model, seed):
    """Weights larger than transformers' init, norms and biases random too: logits spread out (no greedy
    near-ties) and a swapped or misplaced tensor cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() > 1:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (0.0 if name.endswith("bias") else 1.0))


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """{name: (folder, the transformers model)}: GPT-2 (tied, learned positions); Llama with grouped-query
    attention, an untied head, another rope_theta and a SentencePiece-style tokenizer; a one-layer Llama draft
    on the same tokenizer; Llama 3.1-style rope scaling with multi-query attention; Qwen2 with q/k/v biases,
    tied embeddings, more embedding rows than tokens, saved in shards."""
    transformers = need("transformers")
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast,
                              Qwen2Config, Qwen2ForCausalLM)

    transformers.logging.set_verbosity_error()
    text = load_corpus()[:100_000]
    toks = {"byte": byte_level_tokenizer(text), "sp": sentencepiece_tokenizer(text)}
    sizes = {k: t.get_vocab_size() for k, (t, _) in toks.items()}
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                 max_position_embeddings=128)
    llama = dict(small, num_key_value_heads=2, vocab_size=sizes["sp"], rope_theta=500000.0, rms_norm_eps=1e-5,
                 tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    llama3_rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 16}   # short, so all three kinds of frequency occur
    gpt2 = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=sizes["byte"], bos_token_id=0,
                      eos_token_id=0)
    llama3 = dict(small, num_key_value_heads=1, vocab_size=sizes["byte"], rope_theta=10000.0, rope_scaling=llama3_rope)
    qwen2 = dict(small, num_key_value_heads=2, vocab_size=sizes["byte"] + 40, tie_word_embeddings=True)
    specs = {   # name: (class, config, tokenizer, save_pretrained's arguments)
        "gpt2": (GPT2LMHeadModel, gpt2, "byte", {}),
        "llama": (LlamaForCausalLM, LlamaConfig(**llama), "sp", {}),
        "llama-draft": (LlamaForCausalLM, LlamaConfig(**dict(llama, num_hidden_layers=1)), "sp", {}),
        "llama3-rope": (LlamaForCausalLM, LlamaConfig(**llama3), "byte", {}),
        "qwen2": (Qwen2ForCausalLM, Qwen2Config(**qwen2), "byte", {"max_shard_size": "40KB"}),
    }
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for seed, (name, (cls, config, tok_kind, save_args)) in enumerate(specs.items()):
        torch.manual_seed(seed)
        model = cls(config).eval()
        spread(model, seed)
        model.generation_config.eos_token_id = None   # transformers' generate runs all NEW tokens, as ours does
        folder = root / name
        model.save_pretrained(folder, **save_args)
        tok, special = toks[tok_kind]
        PreTrainedTokenizerFast(tokenizer_object=tok, **special).save_pretrained(folder)
        out[name] = folder, model
    return out


@pytest.fixture(scope="session")
def loaded(checkpoints):
    return {name: il.load_hf(folder) for name, (folder, _) in checkpoints.items()}


ARCHS = ["gpt2", "llama", "llama3-rope", "qwen2"]


# --- the same numbers as transformers ------------------------------------------------------------------------

def hf_logits(hf, ids, mask):
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)   # left padding: positions count real tokens only
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask.long(), position_ids=positions).logits


def float32_angles(model):
    """A copy of ``model`` with rotary tables computed the way transformers computes them: frequencies and
    angles (position x frequency) rounded to float32 before the cosine. Ours are computed in float64."""
    from inferlab.core.model import llama3_frequencies

    copy = il.GPT.from_state_dict(model.config, model.state_dict())
    c = model.config
    freqs = 1.0 / c.rope_theta ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim)
    if c.rope_scaling is not None:
        freqs = llama3_frequencies(freqs, c.rope_scaling)
    angles = torch.outer(torch.arange(c.max_seq_len).float(), freqs)
    copy.rope_cos, copy.rope_sin = angles.cos(), angles.sin()
    return copy


@pytest.mark.parametrize("name", ARCHS)
def test_logits_equal_transformers_with_and_without_padding(checkpoints, loaded, name):
    hf = checkpoints[name][1]
    model, tok = loaded[name]
    prompts = [tok.encode(p) for p in ["def f(x):\n    return x + 1  # the value", "The list"]]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for b, p in enumerate(prompts):   # left padding, as generate_batch does
        ids[b, width - len(p):], mask[b, width - len(p):] = torch.tensor(p), True
    far = torch.randint(0, tok.vocab_size, (2, 120), generator=torch.Generator().manual_seed(0))
    everything = torch.ones_like(far, dtype=torch.bool)
    with torch.inference_mode():
        # padding slots' logits mean nothing: compared where the mask is True
        diffs = [(model(x, attention_mask=m)[m] - hf_logits(hf, x, m)[m]).abs().max().item()
                 for x, m in ((ids, mask), (ids[:1], mask[:1]), (far[:, :64], everything[:, :64]))]
        # Further on, rotary angles rounded to float32 (transformers) and float64 (ours) differ by about
        # 1e-7 x position radians, enough to move logits by 1e-4 near position 120; with transformers'
        # rounding the logits agree to float32 precision on every position.
        theirs = hf_logits(hf, far, everything)
        far_diff = (model(far) - theirs).abs().max().item()
        same_angles = model if model.config.arch == "gpt2" else float32_angles(model)
        same_angles_diff = (same_angles(far) - theirs).abs().max().item()
    MAX_DIFF[name] = max(diffs)
    print(f"\n{name}: max |logit difference| from transformers {max(diffs):.1e} (positions < 64), "
          f"{far_diff:.1e} (to 119), {same_angles_diff:.1e} (to 119, float32 angles); logits up to "
          f"{theirs.abs().max().item():.0f}")
    assert max(diffs) < 1e-4 and same_angles_diff < 1e-5


def test_llama3_rope_scaling_changes_the_logits(checkpoints, loaded):
    """The scaled frequencies matter at these positions: the same weights with plain RoPE give other logits."""
    model, _ = loaded["llama3-rope"]
    plain = il.GPT.from_state_dict(model.config.with_(rope_scaling=None), model.state_dict())
    x = torch.arange(1, 100)[None]
    with torch.inference_mode():
        assert (model(x) - plain(x)).abs().max() > 1e-2


@pytest.mark.parametrize("name", ARCHS)
def test_greedy_tokens_equal_transformers_generate(checkpoints, loaded, name):
    hf = checkpoints[name][1]
    model, tok = loaded[name]
    ids = tok.encode(PROMPTS[0])
    x = torch.tensor([ids])
    with torch.inference_mode():
        theirs = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW, do_sample=False,
                             pad_token_id=0)[0, len(ids):].tolist()
    assert len(theirs) == NEW
    assert il.generate(model, tok, PROMPTS[0], NEW).tokens == theirs
    assert il.generate(model, tok, PROMPTS[0], NEW, use_cache=False).tokens == theirs


# --- every path of the course on a loaded model -----------------------------------------------------------------

def greedy_on_every_path(model, tok):
    """Greedy tokens of PROMPTS via generate (cached, uncached), generate_batch and the engine: all equal."""
    want = [il.generate(model, tok, p, NEW).tokens for p in PROMPTS]
    assert il.generate(model, tok, PROMPTS[0], NEW, use_cache=False).tokens == want[0]
    assert [r.tokens for r in il.generate_batch(model, tok, PROMPTS, NEW)] == want   # the second one padded
    outs = il.Engine(model, tok, block_size=8).generate(PROMPTS, il.SamplingParams(max_tokens=NEW))
    assert [o.outputs[0].token_ids for o in outs] == want
    return want


@pytest.mark.parametrize("name", ARCHS)
def test_every_path_gives_the_same_greedy_tokens(loaded, name):
    greedy_on_every_path(*loaded[name])


@pytest.mark.parametrize("name", ["gpt2", "qwen2"])
def test_a_quantized_loaded_model_runs_every_path(loaded, name):
    model, tok = loaded[name]
    q = quantize_model(model, "int8", path="dequantize")   # not "auto", which times the paths first
    assert q.lm_head.qweight is q.tok_emb.qweight   # the tied head stayed tied through loading
    greedy_on_every_path(q, tok)
    x = torch.tensor([tok.encode(PROMPTS[0])])
    with torch.inference_mode():
        want = model(x)
        assert (q(x) - want).norm() / want.norm() < 0.1


def test_speculative_decoding_between_two_loaded_models_gives_the_targets_tokens(loaded):
    (target, tok), (draft, _) = loaded["llama"], loaded["llama-draft"]
    want = il.generate(target, tok, PROMPTS[0], NEW).tokens
    res = speculative_generate(target, draft, tok, PROMPTS[0], NEW, gamma=4)
    assert res.tokens == want and res.proposed > 0


def test_bfloat16_loading(checkpoints, loaded):
    model, tok = loaded["llama"]
    half, _ = il.load_hf(checkpoints["llama"][0], dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in half.parameters())
    x = torch.tensor([tok.encode(PROMPTS[0])])
    with torch.inference_mode():
        want = model(x)
        assert (half(x).float() - want).norm() / want.norm() < 0.05
    assert len(il.generate(half, tok, PROMPTS[0], 8).tokens) == 8


def test_loaded_configs(checkpoints, loaded):
    """Shapes, context and the KV cache's bytes come from config.json's own numbers."""
    for name, (folder, _) in checkpoints.items():
        hf = json.loads((folder / "config.json").read_text())
        config = loaded[name][0].config
        layers = hf.get("num_hidden_layers", hf.get("n_layer"))
        heads = hf.get("num_attention_heads", hf.get("n_head"))
        kv_heads = hf.get("num_key_value_heads", heads)
        head_dim = hf.get("hidden_size", hf.get("n_embd")) // heads
        assert il.kv_cache_bytes(config, 100) == 2 * layers * kv_heads * head_dim * 2 * 100
        assert config.max_seq_len == hf.get("max_position_embeddings", hf.get("n_positions"))
        assert config.name == name
    assert loaded["llama"][0].config.rope_theta == 500000.0 and loaded["llama"][0].config.norm_eps == 1e-5
    assert loaded["llama"][0].lm_head.weight is not loaded["llama"][0].tok_emb.weight
    assert loaded["qwen2"][0].lm_head.weight is loaded["qwen2"][0].tok_emb.weight
    assert loaded["llama3-rope"][0].config.rope_scaling == RopeScaling(8.0, 1.0, 4.0, 16)
    assert (loaded["llama"][1].bos_id, loaded["llama"][1].eos_id) == (1, 2)


# Published config.json of real models (from the hub), with the KV cache per token they imply.
SMOLLM2_135M = {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 0,
                "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 576, "intermediate_size": 1536,
                "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
                "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
                "rope_interleaved": False, "rope_scaling": None, "rope_theta": 100000, "tie_word_embeddings": True,
                "torch_dtype": "bfloat16", "vocab_size": 49152}
QWEN25_05B = {"architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu", "hidden_size": 896,
              "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
              "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
              "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
              "use_sliding_window": False, "vocab_size": 151936}
LLAMA2_7B = {"architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "hidden_size": 4096,
             "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
             "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "rms_norm_eps": 1e-05,
             "rope_scaling": None, "tie_word_embeddings": False, "vocab_size": 32000}
GPT2_124M = {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "layer_norm_epsilon": 1e-05,
             "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024,
             "vocab_size": 50257}


def test_real_configs_map_to_their_published_shapes():
    smol = ilhf.config_from_hf(SMOLLM2_135M, "HuggingFaceTB/SmolLM2-135M")
    assert (smol.n_layer, smol.n_kv_head, smol.head_dim, smol.max_seq_len) == (30, 3, 64, 8192)
    assert il.kv_cache_bytes(smol, 1) == 2 * 30 * 3 * 64 * 2 == 23040   # fp16 bytes per token
    assert il.kv_cache_bytes(smol, 8192) == 180 * 2**20                 # a full context: 180 MiB
    for hf, name in ((QWEN25_05B, "qwen2.5-0.5b"), (LLAMA2_7B, "llama-2-7b"), (GPT2_124M, "gpt2")):
        assert ilhf.config_from_hf(hf, name) == il.MODEL_CONFIGS[name]


def test_the_new_config_layout_of_transformers_5_is_read_too():
    new = dict(LLAMA2_7B, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 8192})
    config = ilhf.config_from_hf(new)
    assert config.rope_theta == 500000.0 and config.rope_scaling.factor == 32.0


# --- the tokenizer ----------------------------------------------------------------------------------------------

def tokenizer_triple(checkpoints, name):
    """(ours, the tokenizers library's, transformers') on one checkpoint's tokenizer.json."""
    need("transformers")
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    folder = checkpoints[name][0]
    return (il.load_hf(folder)[1], Tokenizer.from_file(str(folder / "tokenizer.json")),
            AutoTokenizer.from_pretrained(folder))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_tokenizer_round_trip_and_ids_equal_the_libraries(checkpoints, name):
    ours, raw, fast = tokenizer_triple(checkpoints, name)
    # SentencePiece writes a space as "▁", so a "▁" in the text comes back as a space: left out for "llama"
    text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="▁" if name == "llama" else ""),
                   max_size=40)

    @settings(max_examples=40)
    @given(text)
    def check(s):
        ids = ours.encode(s)
        assert ids == raw.encode(s).ids == fast(s)["input_ids"]
        assert ours.decode(ids) == s == raw.decode(ids)
        if name == "gpt2":   # byte-level: the tokens' bytes are the text's bytes
            assert b"".join(ours.vocab[i] for i in ids) == s.encode()
        else:                # <s>, then the text with the space SentencePiece puts before it
            assert b"".join(ours.vocab[i] for i in ids) == b"<s>" + (b" " + s.encode() if s else b"")

    check()


def test_tokenizer_serves_the_lessons_helpers(loaded):
    tok = loaded["llama"][1]
    assert il.show_tokens(tok, "Hello world").replace("|", "") == "<s> Hello world"
    assert tok.vocab[tok.encode("\xff")[-1]] == b"\xbf"   # "ÿ" is not in the vocabulary: its bytes are tokens
    assert tok.vocab[:3] == [b"<unk>", b"<s>", b"</s>"] and loaded["gpt2"][1].vocab[0] == b"<|endoftext|>"
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(5)
    with pytest.raises(ValueError, match="token ids must lie in"):
        tok.decode([tok.vocab_size])


# --- the hub, the network and the optional packages -------------------------------------------------------------

@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection fails, and is recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def hub_cache(monkeypatch, tmp_path):
    """An empty Hugging Face cache in a temporary folder."""
    constants = need("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_a_hub_name_not_in_the_cache_asks_for_download_true_and_touches_no_network(hub_cache, no_network):
    with pytest.raises(FileNotFoundError, match=r"nor in the local Hugging Face cache.*download=True"):
        il.load_hf("someone/some-model")
    assert no_network == []


def test_a_cached_hub_name_loads_offline(checkpoints, loaded, hub_cache, no_network):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / "models--someone--tiny-llama"
    shutil.copytree(checkpoints["llama"][0], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model, tok = il.load_hf("someone/tiny-llama")
    assert no_network == [] and model.config.name == "someone/tiny-llama"
    assert il.generate(model, tok, PROMPTS[0], 8).tokens == il.generate(*loaded["llama"], PROMPTS[0], 8).tokens


def test_download_true_fetches_through_huggingface_hub(checkpoints, monkeypatch):
    hub = need("huggingface_hub")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(checkpoints["gpt2"][0])

    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    model, _ = il.load_hf("someone/tiny-gpt2", download=True)
    (repo_id, kwargs), = calls
    assert repo_id == "someone/tiny-gpt2" and not kwargs.get("local_files_only")
    assert "config.json" in kwargs["allow_patterns"] and model.config.name == "someone/tiny-gpt2"


def test_a_missing_optional_package_says_how_to_install_it(checkpoints, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match=r"pip install -r requirements-hf.txt"):
        il.load_hf(checkpoints["gpt2"][0])


def test_importing_inferlab_imports_no_optional_package():
    code = ("import sys, inferlab; print([m for m in ('transformers', 'safetensors', 'tokenizers', "
            "'huggingface_hub') if m in sys.modules])")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True,
                         env=dict(os.environ, PYTHONPATH=str(root)))
    assert out.stdout.strip() == "[]"


def test_the_hub_layout_of_gpt2_without_prefix_and_with_mask_buffers(checkpoints, loaded, tmp_path):
    """The gpt2 checkpoint on the hub names its tensors "h.0.attn..." and keeps each layer's causal mask."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "gpt2"
    shutil.copytree(checkpoints["gpt2"][0], folder)
    tensors = {k.removeprefix("transformer."): v for k, v in load_file(folder / "model.safetensors").items()}
    tensors.update({f"h.{i}.attn.bias": torch.ones(1, 1, 128, 128).tril() for i in range(2)})
    save_file(tensors, folder / "model.safetensors")
    model, tok = il.load_hf(folder)
    x = torch.tensor([tok.encode(PROMPTS[0])])
    with torch.inference_mode():
        assert torch.equal(model(x), loaded["gpt2"][0](x))


# --- bad input --------------------------------------------------------------------------------------------------

ARG_CASES = [
    # (what, call, error, words the message must contain)
    ("name_or_path=5", lambda: il.load_hf(5), TypeError, "name_or_path"),
    ("download='yes'", lambda: il.load_hf("x/y", download="yes"), TypeError, "download"),
    ("dtype='float32'", lambda: il.load_hf("x/y", dtype="float32"), TypeError, "dtype"),
    ("dtype=torch.int8", lambda: il.load_hf("x/y", dtype=torch.int8), ValueError, "dtype"),
    ("device=0.5", lambda: il.load_hf("x/y", device=0.5), TypeError, "device"),
    ("device='gpu'", lambda: il.load_hf("x/y", device="gpu"), ValueError, "device"),
    ("a path that is not there", lambda: il.load_hf("./no/such/folder"), FileNotFoundError, "no folder"),
    ("a file, not a folder", lambda: il.load_hf(__file__), ValueError, "not a file"),
    ("config.json of another model", lambda: ilhf.config_from_hf({"architectures": ["MistralForCausalLM"]}),
     ValueError, r"\['MistralForCausalLM'\].*GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM"),
    ("rope_scaling yarn", lambda: ilhf.config_from_hf(dict(LLAMA2_7B, rope_scaling={"rope_type": "yarn"})),
     ValueError, "'yarn'"),
    ("sliding window", lambda: ilhf.config_from_hf(dict(QWEN25_05B, use_sliding_window=True)), ValueError,
     "sliding-window"),
    ("attention_bias", lambda: ilhf.config_from_hf(dict(LLAMA2_7B, attention_bias=True)), ValueError, "biases"),
    ("gelu exact", lambda: ilhf.config_from_hf(dict(GPT2_124M, activation_function="relu")), ValueError, "relu"),
    ("head_dim not hidden / heads", lambda: ilhf.config_from_hf(dict(LLAMA2_7B, head_dim=256)), ValueError,
     "head_dim=256"),
    ("a missing field", lambda: ilhf.config_from_hf({"architectures": ["GPT2LMHeadModel"]}), ValueError,
     "lacks 'vocab_size'"),
]


@pytest.mark.parametrize("what, call, error, words", ARG_CASES, ids=[c[0] for c in ARG_CASES])
def test_bad_arguments_are_clear_errors(what, call, error, words):
    with pytest.raises(error, match=words):
        call()


def edit_json(path, **changes):
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **changes)))


def drop_tensor(folder, name):
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    del tensors[name]
    save_file(tensors, folder / "model.safetensors")


def add_tensor(folder, name):
    from safetensors.torch import load_file, save_file

    save_file(dict(load_file(folder / "model.safetensors"), **{name: torch.zeros(3)}), folder / "model.safetensors")


FOLDER_CASES = [
    # (what, source checkpoint, how to break it, error, words the message must contain)
    ("no config.json", "gpt2", lambda f: (f / "config.json").unlink(), FileNotFoundError, "no config.json"),
    ("no tokenizer.json", "gpt2", lambda f: (f / "tokenizer.json").unlink(), FileNotFoundError,
     "no tokenizer.json.*save_pretrained"),
    ("no weights", "gpt2", lambda f: (f / "model.safetensors").unlink(), FileNotFoundError,
     "no model.safetensors.*download=True"),
    ("only a pytorch_model.bin", "gpt2", lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"),
     FileNotFoundError, "pytorch_model.bin, which il.load_hf does not read"),
    ("a missing shard", "qwen2", lambda f: next(f.glob("model-00002-*")).unlink(), FileNotFoundError,
     "lacks 1 of the .* weight shards.*model-00002"),
    ("a missing tensor", "gpt2", lambda f: drop_tensor(f, "transformer.h.1.mlp.c_fc.bias"), ValueError,
     "lacks the tensor 'transformer.h.1.mlp.c_fc.bias'"),
    ("a missing head", "llama", lambda f: drop_tensor(f, "lm_head.weight"), ValueError, "'lm_head.weight'"),
    ("a tensor with no place", "llama", lambda f: add_tensor(f, "model.layers.0.self_attn.q_norm.weight"),
     ValueError, "no place for.*q_norm"),
    ("shapes that disagree with config.json", "llama", lambda f: edit_json(f / "config.json", num_key_value_heads=4),
     ValueError, r"'model.layers.0.self_attn.k_proj.weight' has shape \(32, 64\).*implies \(64, 64\)"),
    ("an unsupported architecture", "llama",
     lambda f: edit_json(f / "config.json", architectures=["MistralForCausalLM"], model_type="mistral"), ValueError,
     "MistralForCausalLM.*reads GPT2LMHeadModel"),
]


@pytest.mark.parametrize("what, source, breaks, error, words", FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_a_broken_checkpoint_is_a_clear_error(checkpoints, tmp_path, what, source, breaks, error, words):
    folder = tmp_path / source
    shutil.copytree(checkpoints[source][0], folder)
    breaks(folder)
    with pytest.raises(error, match=words):
        il.load_hf(folder)


def test_load_model_is_the_lessons_switch(tmp_path):
    """MODEL = "bundled" (or "draft") reads the bundled checkpoints offline; anything else goes to load_hf."""
    bundled, tok = il.load_model("bundled")
    main, _ = il.load_pretrained()
    assert bundled.config == main.config and tok.vocab_size == 2048
    draft, _ = il.load_model("draft")
    assert draft.config.n_layer < bundled.config.n_layer
    with pytest.raises(FileNotFoundError, match="config.json"):
        il.load_model(str(tmp_path))
    with pytest.raises(TypeError, match="name must be"):
        il.load_model(3)
