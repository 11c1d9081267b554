"""Real checkpoints: a Hugging Face model folder read into our one ``GPT`` class (issue 17, optional).

    model, tok = il.load_hf("HuggingFaceTB/SmolLM2-135M")          # from the local Hugging Face cache
    model, tok = il.load_hf("HuggingFaceTB/SmolLM2-135M", download=True)   # fetch it once
    model, tok = il.load_hf("path/to/folder")                     # config.json, *.safetensors, tokenizer.json

GPT-2, the Llama family (Llama 2 and 3, TinyLlama, SmolLM) and Qwen2 are the same decoder with different
parts, all of which ``GPT`` has: the work is renaming tensors, plus two GPT-2 details (its linear layers
store the transposed weight, ``Conv1D``, and one fused ``c_attn`` holds q, k and v). Llama-family files
rotate the pairs (i, i + head_dim/2) of each head (transformers' ``rotate_half``), as our ``apply_rope``
does, so q and k need no reordering. Every path of the course then runs on the real model.
Needs the optional packages: ``pip install -r requirements-hf.txt``. Nothing touches the network unless
``download=True``.
"""
from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

import torch

from .core.config import ModelConfig, RopeScaling
from .core.device import as_device
from .core.model import GPT
from .validate import boolean

# config.json's "architectures" entry -> its "model_type", which says how to read it
SUPPORTED = {"GPT2LMHeadModel": "gpt2", "LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
INSTALL_HINT = 'pip install -r requirements-hf.txt (or pip install -e ".[hf]")'
FILES = "config.json, model.safetensors (or its shards and model.safetensors.index.json) and tokenizer.json"
HUB_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
ROPE_SCALINGS = ("llama3",)   # the only rope_scaling types load_hf implements


def _require(module: str):
    """Import one of the optional packages, or say how to install them."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"il.load_hf needs the {module} package, which inferlab does not install by default: "
                          f"{INSTALL_HINT}") from error


def _get_hint(name: str) -> str:
    return (f"get the whole checkpoint with il.load_hf({name!r}, download=True) or "
            f"`huggingface-cli download {name}` (a folder needs {FILES})")


# --- config.json -> ModelConfig ---------------------------------------------------------------------------

def _kind(hf: dict) -> str:
    archs = hf.get("architectures") or []
    for arch in archs:
        if arch in SUPPORTED:
            return SUPPORTED[arch]
    if not archs and hf.get("model_type") in SUPPORTED.values():   # a config that names no architecture
        return hf["model_type"]
    raise ValueError(f"config.json names architectures={archs} (model_type={hf.get('model_type')!r}), which "
                     f"il.load_hf does not read; it reads {', '.join(SUPPORTED)}")


def _refuse_unless(ok: bool, what: str):
    if not ok:
        raise ValueError(f"config.json asks for {what}, which our GPT does not implement; il.load_hf refuses "
                         f"rather than load a model that would compute something else")


def _rope(hf: dict) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling), from the old layout (``rope_theta``, ``rope_scaling``) or the new
    (``rope_parameters``, transformers 5)."""
    params = hf.get("rope_parameters") or {}
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    scaling = hf.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    _refuse_unless(params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) == 1.0,
                   "partial_rotary_factor != 1 (rotary positions on part of each head)")
    _refuse_unless(not hf.get("rope_interleaved", False), "rope_interleaved (rotating adjacent pairs)")
    if kind in ("default", None):
        return theta, None
    if kind not in ROPE_SCALINGS:
        raise ValueError(f"config.json asks for rope_scaling of type {kind!r} (rotary frequencies changed for "
                         f"long contexts), which il.load_hf does not implement; it implements "
                         f"{', '.join(ROPE_SCALINGS)}")
    return theta, RopeScaling(scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"],
                              scaling["original_max_position_embeddings"])


def config_from_hf(hf: dict, name: str = "custom") -> ModelConfig:
    """The ``ModelConfig`` of a Hugging Face ``config.json`` (as a dict). Raises ``ValueError`` for an
    architecture or an option our ``GPT`` does not implement, naming it."""
    if not isinstance(hf, dict):
        raise TypeError(f"hf must be the dict of a config.json, got {type(hf).__name__}")
    kind = _kind(hf)
    try:
        if kind == "gpt2":
            _refuse_unless(hf.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh"),
                           f"activation_function={hf.get('activation_function')!r} (ours: GELU, tanh form)")
            _refuse_unless(hf.get("scale_attn_weights", True) and not hf.get("scale_attn_by_inverse_layer_idx"),
                           "attention scaled other than by 1/sqrt(head_dim)")
            _refuse_unless(not hf.get("add_cross_attention"), "cross-attention")
            return ModelConfig(vocab_size=hf["vocab_size"], d_model=hf["n_embd"], n_layer=hf["n_layer"],
                               n_head=hf["n_head"], d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
                               max_seq_len=hf["n_positions"], arch="gpt2",
                               tie_embeddings=hf.get("tie_word_embeddings", True),
                               norm_eps=hf.get("layer_norm_epsilon", 1e-5), name=name)
        # Llama and Qwen2: the same decoder; Qwen2 adds biases to q, k and v
        _refuse_unless(hf.get("hidden_act", "silu") == "silu", f"hidden_act={hf.get('hidden_act')!r} (ours: SwiGLU)")
        _refuse_unless(not hf.get("attention_bias") and not hf.get("mlp_bias"), "biases on attention or MLP layers")
        head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
        _refuse_unless(head_dim * hf["num_attention_heads"] == hf["hidden_size"],
                       f"head_dim={head_dim} with {hf['num_attention_heads']} heads != hidden_size={hf['hidden_size']}")
        if kind == "qwen2":
            sliding = hf.get("use_sliding_window") or "sliding_attention" in (hf.get("layer_types") or [])
            _refuse_unless(not sliding, "sliding-window attention (use_sliding_window)")
        default_ctx = 32768 if kind == "qwen2" else 2048
        theta, scaling = _rope(hf)
        return ModelConfig(vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layer=hf["num_hidden_layers"],
                           n_head=hf["num_attention_heads"],
                           n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"],
                           d_ff=hf["intermediate_size"], max_seq_len=hf.get("max_position_embeddings", default_ctx),
                           arch="llama", tie_embeddings=hf.get("tie_word_embeddings", False),
                           qkv_bias=kind == "qwen2", rope_theta=float(theta), rope_scaling=scaling,
                           norm_eps=hf.get("rms_norm_eps", 1e-6), name=name)
    except KeyError as missing:
        raise ValueError(f"config.json lacks {missing}, which a {kind} config has") from None
    except TypeError as error:   # a field of the wrong type, caught by ModelConfig
        raise ValueError(f"config.json does not describe a model our GPT can hold: {error}") from None


# --- the tensors ---------------------------------------------------------------------------------------------

def _gpt2_names(config: ModelConfig, prefix: str) -> dict:
    """Our parameter name -> (the checkpoint's name, stored transposed). GPT-2's ``Conv1D`` layers keep the
    weight as [in, out], nn.Linear as [out, in]; its fused ``c_attn`` is split in ``_state_dict``."""
    names = {"tok_emb.weight": (prefix + "wte.weight", False), "pos_emb.weight": (prefix + "wpe.weight", False),
             "norm.weight": (prefix + "ln_f.weight", False), "norm.bias": (prefix + "ln_f.bias", False)}
    if not config.tie_embeddings:
        names["lm_head.weight"] = ("lm_head.weight", False)
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"{prefix}h.{i}."
        for a, b in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2"), ("attn.o_proj", "attn.c_proj"),
                     ("mlp.up", "mlp.c_fc"), ("mlp.down", "mlp.c_proj")):
            names[f"{ours}{a}.weight"] = (f"{theirs}{b}.weight", not a.endswith("norm"))
            names[f"{ours}{a}.bias"] = (f"{theirs}{b}.bias", False)
    return names


def _llama_names(config: ModelConfig) -> dict:
    """Our parameter name -> (the checkpoint's name, False): Llama and Qwen2 store nn.Linear weights."""
    names = {"tok_emb.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not config.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        names[ours + "attn_norm.weight"] = theirs + "input_layernorm.weight"
        names[ours + "mlp_norm.weight"] = theirs + "post_attention_layernorm.weight"
        for p in "qkvo":
            names[f"{ours}attn.{p}_proj.weight"] = f"{theirs}self_attn.{p}_proj.weight"
        if config.qkv_bias:
            for p in "qkv":
                names[f"{ours}attn.{p}_proj.bias"] = f"{theirs}self_attn.{p}_proj.bias"
        for a, b in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            names[f"{ours}mlp.{a}.weight"] = f"{theirs}mlp.{b}.weight"
    return {ours: (theirs, False) for ours, theirs in names.items()}


# tensors a checkpoint may hold that carry no weight: old GPT-2 files keep their causal mask, old Llama files
# their rotary frequencies; a tied model may store the head anyway
IGNORED = re.compile(r"(.*\.attn\.(masked_)?bias|.*rotary_emb\.inv_freq|lm_head\.weight)$")


def _weight_files(folder: Path, name: str) -> list[Path]:
    """The safetensors files of a checkpoint folder: one ``model.safetensors``, or the shards its index names."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).exists()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {len(missing)} of the {len(shards)} weight shards that "
                                    f"model.safetensors.index.json names ({', '.join(missing[:3])}); the download "
                                    f"is incomplete: {_get_hint(name)}")
        return [folder / s for s in shards]
    if (folder / "model.safetensors").exists():
        return [folder / "model.safetensors"]
    other = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf")]
    raise FileNotFoundError(f"{folder} has no model.safetensors (nor model.safetensors.index.json and its shards)"
                            + (f"; it has {', '.join(sorted(other))}, which il.load_hf does not read (they are "
                               f"pickles or another format: take the checkpoint's safetensors version)" if other
                               else f": {_get_hint(name)}"))


def _read_tensors(folder: Path, name: str) -> dict:
    safetensors_torch = _require("safetensors.torch")
    tensors = {}
    for path in _weight_files(folder, name):
        tensors.update(safetensors_torch.load_file(path))
    return tensors


def _state_dict(config: ModelConfig, kind: str, tensors: dict, dtype) -> dict:
    """Our state dict from the checkpoint's tensors, each checked against the shape config.json implies."""
    with torch.device("meta"):
        want = {name: p.shape for name, p in GPT(config).named_parameters()}   # a tied weight is listed once
    tensors = dict(tensors)

    def take(name, shape):
        if name not in tensors:
            raise ValueError(f"the checkpoint lacks the tensor {name!r} that its config.json implies; the "
                             f"download may be incomplete or the files of another model")
        t = tensors.pop(name)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(t.shape)} in the checkpoint, but config.json "
                             f"implies {tuple(shape)}")
        return t.to(dtype)

    state = {}
    if kind == "gpt2":
        prefix = "transformer." if "transformer.wte.weight" in tensors else ""
        names = _gpt2_names(config, prefix)
        d = config.d_model
        for i in range(config.n_layer):   # c_attn: [d, 3d] weight and [3d] bias hold q, k and v side by side
            fused = f"{prefix}h.{i}.attn.c_attn."
            qkv_w = take(fused + "weight", (d, 3 * d)).t().chunk(3, dim=0)
            qkv_b = take(fused + "bias", (3 * d,)).chunk(3)
            for p, w, b in zip("qkv", qkv_w, qkv_b):
                state[f"blocks.{i}.attn.{p}_proj.weight"] = w.contiguous()
                state[f"blocks.{i}.attn.{p}_proj.bias"] = b.contiguous()
    else:
        names = _llama_names(config)
    for ours, (theirs, transposed) in names.items():
        shape = want[ours]
        t = take(theirs, tuple(reversed(shape)) if transposed else shape)
        state[ours] = t.t().contiguous() if transposed else t
    left = sorted(n for n in tensors if not IGNORED.fullmatch(n))
    if left:
        raise ValueError(f"the checkpoint has {len(left)} tensors our GPT has no place for (e.g. {left[:3]}): "
                         f"its config.json does not describe these weights")
    return state


# --- finding the folder -----------------------------------------------------------------------------------------

def resolve(name_or_path, download: bool = False) -> tuple[Path, str]:
    """(checkpoint folder, model name). A folder that exists is used as it is; otherwise ``name_or_path`` is a
    hub name looked up in the local Hugging Face cache, and fetched only when ``download`` is True."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a folder or a Hugging Face hub name (a str), "
                        f"got {type(name_or_path).__name__}")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, path.resolve().name
    if path.exists():
        raise ValueError(f"name_or_path must be the checkpoint's folder, not a file: {path}")
    name = str(name_or_path)
    if not isinstance(name_or_path, str) or not HUB_NAME.fullmatch(name):
        raise FileNotFoundError(f"no folder {name}, and it is not a Hugging Face hub name (such as "
                                f"'HuggingFaceTB/SmolLM2-135M')")
    hub = _require("huggingface_hub")
    if download:
        return Path(hub.snapshot_download(name, allow_patterns=HUB_FILES)), name
    try:   # local_files_only: the cache only, no request of any kind
        return Path(hub.snapshot_download(name, allow_patterns=HUB_FILES, local_files_only=True)), name
    except FileNotFoundError:   # huggingface_hub's LocalEntryNotFoundError is one
        cache = importlib.import_module("huggingface_hub.constants").HF_HUB_CACHE
        raise FileNotFoundError(f"{name!r} is neither a folder nor in the local Hugging Face cache "
                                f"({cache}); pass download=True once to fetch it (or run "
                                f"`huggingface-cli download {name}`), after which it loads offline") from None


def _check_dtype(dtype):
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {type(dtype).__name__}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype (torch.float32, torch.bfloat16...), got {dtype}")
    return dtype


def load_hf(name_or_path, *, download: bool = False, dtype=torch.float32, device="cpu"):
    """``(model, tok)`` of a Hugging Face checkpoint: a ``GPT`` in eval mode and an ``HFTokenizer``.

    ``name_or_path``: a folder holding config.json, the safetensors weights and tokenizer.json, or a hub
    name such as ``"HuggingFaceTB/SmolLM2-135M"`` found in the local Hugging Face cache. ``download=True``
    fetches a hub name that is not there yet (only then is the network used). ``dtype``: the weights'
    dtype in memory, whatever the file stores. Reads GPT-2, Llama (Llama 2 and 3, TinyLlama, SmolLM) and Qwen2.
    """
    boolean("download", download)
    dtype, device = _check_dtype(dtype), as_device(device)
    folder, name = resolve(name_or_path, download)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} has no config.json: {_get_hint(name)}")
    hf = json.loads((folder / "config.json").read_text())
    config = config_from_hf(hf, name)
    if not (folder / "tokenizer.json").exists():
        raise FileNotFoundError(f"{folder} has no tokenizer.json. A checkpoint with only the older tokenizer "
                                f"files gets one from transformers: AutoTokenizer.from_pretrained(folder)"
                                f".save_pretrained(folder); or {_get_hint(name)}")
    _require("tokenizers")
    from .hf_tokenizer import HFTokenizer

    state = _state_dict(config, _kind(hf), _read_tensors(folder, name), dtype)
    model = GPT.from_state_dict(config, state).to(device)
    tok = HFTokenizer(folder / "tokenizer.json", _first_id(hf.get("bos_token_id")), _first_id(hf.get("eos_token_id")))
    return model, tok


def _first_id(value):
    """A config's special token id: an int, a list of ints (the first), or None."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) else None


BUNDLED = ("bundled", "draft")   # the names load_model reads from inferlab/assets


def load_model(name: str = "bundled", *, device=None, dtype=torch.float32, download: bool = False):
    """The lesson's model and tokenizer, from the one line at the top of every lesson (``MODEL = "bundled"``):
    ``"bundled"`` is the bundled main model and ``"draft"`` its draft (``il.load_pretrained``), offline; any
    other name is a Hugging Face checkpoint, a folder or a hub name in the local cache (``load_hf``; with
    ``download=True`` fetched once)."""
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be 'bundled', 'draft', a folder or a Hugging Face name, got {type(name).__name__}")
    if name in BUNDLED:
        from .core.pretrained import load_pretrained
        return load_pretrained("main" if name == "bundled" else name, device=device, dtype=dtype)
    return load_hf(name, download=download, dtype=dtype, device=device if device is not None else "cpu")
