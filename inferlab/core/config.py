"""Model shapes: the bundled models and the published shapes of real models.

Used by every notebook: 01/02 build the bundled model from its config, 03 sizes the KV cache of
real models, 04 and 05 build real shapes with random weights to time them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

ARCHS = ("gpt2", "llama")


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1's rotary frequencies for long contexts (``"rope_type": "llama3"`` in a config.json): the slow
    frequencies, whose wavelength exceeds ``original_max_seq_len / low_freq_factor`` positions, are divided by
    ``factor``; the fast ones, below ``original_max_seq_len / high_freq_factor``, are kept; those between are
    blended (``model.rope_tables``)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_seq_len: int

    def __post_init__(self):
        for field in ("factor", "low_freq_factor", "high_freq_factor", "original_max_seq_len"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
                raise ValueError(f"RopeScaling.{field} must be a finite number > 0, got {value!r}")
        if self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(f"RopeScaling.high_freq_factor ({self.high_freq_factor}) must exceed low_freq_factor "
                             f"({self.low_freq_factor})")


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a decoder-only transformer.

    ``arch="gpt2"``: learned absolute positions, LayerNorm, GELU MLP, biases, tied embeddings.
    ``arch="llama"``: rotary positions (RoPE), RMSNorm, SwiGLU MLP, no biases.
    ``n_kv_head < n_head`` is grouped-query attention (``n_kv_head == 1``: multi-query).
    ``rope_scaling``: Llama 3.1's long-context rotary frequencies (``RopeScaling``), None for plain RoPE.
    """

    vocab_size: int
    d_model: int
    n_layer: int
    n_head: int
    n_kv_head: int | None = None
    d_ff: int | None = None
    max_seq_len: int = 1024
    arch: str = "gpt2"
    tie_embeddings: bool = True
    qkv_bias: bool = False  # biases on the q/k/v projections only (Qwen2); gpt2 has biases everywhere
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    name: str = "custom"
    rope_scaling: RopeScaling | None = None

    def __post_init__(self):
        for field in ("vocab_size", "d_model", "n_layer", "n_head", "max_seq_len"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ModelConfig.{field} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"ModelConfig.{field} must be >= 1, got {value}")
        for field in ("n_kv_head", "d_ff"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"ModelConfig.{field} must be an int >= 1 (or None for the default), got {value!r}")
        for field in ("rope_theta", "norm_eps"):   # 0 or less gives NaN logits, silently
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
                raise ValueError(f"ModelConfig.{field} must be a finite number > 0, got {value!r}")
        for field in ("tie_embeddings", "qkv_bias"):
            if not isinstance(getattr(self, field), bool):
                raise TypeError(f"ModelConfig.{field} must be True or False, got {getattr(self, field)!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"ModelConfig.arch must be one of {ARCHS}, got {self.arch!r}")
        if self.n_kv_head is None:
            object.__setattr__(self, "n_kv_head", self.n_head)
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.d_model % self.n_head:
            raise ValueError(f"ModelConfig.d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not 1 <= self.n_kv_head <= self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(
                f"ModelConfig.n_kv_head must divide n_head ({self.n_head}) and be between 1 and n_head, "
                f"got {self.n_kv_head}"
            )
        if isinstance(self.rope_scaling, dict):   # as to_dict() writes it
            object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))
        if self.rope_scaling is not None and (not isinstance(self.rope_scaling, RopeScaling) or self.arch != "llama"):
            raise ValueError(f"ModelConfig.rope_scaling must be None or a RopeScaling of a llama config, "
                             f"got {self.rope_scaling!r} with arch={self.arch!r}")
        if self.arch == "llama" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head_dim, got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_dim(self) -> int:
        return self.n_kv_head * self.head_dim

    def with_(self, **changes) -> "ModelConfig":
        """A copy with some fields changed, e.g. ``cfg.with_(n_layer=2)``."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def _gpt2(name, d_model, n_layer, n_head):
    return ModelConfig(vocab_size=50257, d_model=d_model, n_layer=n_layer, n_head=n_head,
                       max_seq_len=1024, arch="gpt2", tie_embeddings=True, name=name)


def _llama(name, vocab, d_model, n_layer, n_head, n_kv_head, d_ff, ctx, theta=10000.0, tie=False, eps=1e-5,
           qkv_bias=False):
    return ModelConfig(vocab_size=vocab, d_model=d_model, n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head,
                       d_ff=d_ff, max_seq_len=ctx, arch="llama", tie_embeddings=tie, qkv_bias=qkv_bias,
                       rope_theta=theta, norm_eps=eps, name=name)


class UnknownConfig(KeyError, ValueError):
    """A config name that is not in ``MODEL_CONFIGS`` (a KeyError, as a dict raises, and a ValueError)."""

    def __str__(self):
        return self.args[0]


class ConfigTable(dict):
    """``MODEL_CONFIGS``: a dict whose missing names are a clear error that lists the known ones."""

    def __missing__(self, name):
        raise UnknownConfig(f"unknown config name {name!r}; known: {', '.join(self)}")


# Published shapes (from each model's config.json). Weights are random when built with il.GPT(config):
# they time exactly like trained ones, and their sizes are exact.
MODEL_CONFIGS: dict[str, ModelConfig] = ConfigTable({
    "gpt2": _gpt2("gpt2", 768, 12, 12),
    "gpt2-medium": _gpt2("gpt2-medium", 1024, 24, 16),
    "gpt2-large": _gpt2("gpt2-large", 1280, 36, 20),
    "gpt2-xl": _gpt2("gpt2-xl", 1600, 48, 25),
    "llama-2-7b": _llama("llama-2-7b", 32000, 4096, 32, 32, 32, 11008, 4096),
    "llama-2-13b": _llama("llama-2-13b", 32000, 5120, 40, 40, 40, 13824, 4096),
    "llama-2-70b": _llama("llama-2-70b", 32000, 8192, 80, 64, 8, 28672, 4096),
    "llama-3-8b": _llama("llama-3-8b", 128256, 4096, 32, 32, 8, 14336, 8192, theta=500000.0),
    "llama-3-70b": _llama("llama-3-70b", 128256, 8192, 80, 64, 8, 28672, 8192, theta=500000.0),
    "mistral-7b": _llama("mistral-7b", 32000, 4096, 32, 32, 8, 14336, 32768, theta=1000000.0),
    "qwen2.5-0.5b": _llama("qwen2.5-0.5b", 151936, 896, 24, 14, 2, 4864, 32768, theta=1000000.0, tie=True,
                           eps=1e-6, qkv_bias=True),
    # The bundled models (weights in inferlab/assets, trained by scripts/train_bundled.py).
    "inferlab-main": _llama("inferlab-main", 2048, 256, 4, 8, 4, 704, 512, tie=True),
    # The draft has one layer: on a CPU a small model's step costs about the same per layer whatever its width
    # (overhead-bound, notebook 04), so one wide layer is cheaper per guess than two narrow ones and as accurate.
    "inferlab-draft": _llama("inferlab-draft", 2048, 128, 1, 4, 2, 384, 512, tie=True),
})


def get_config(name: str) -> ModelConfig:
    """The config called ``name``; a clear error lists the known names."""
    if not isinstance(name, str):
        raise TypeError(f"config name must be a str, got {type(name).__name__}")
    return MODEL_CONFIGS[name]
