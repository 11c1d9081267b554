"""Weight-only quantization: int8 per output channel, and llama.cpp-style blocks (notebook 05).

Decoding one token reads every weight once, so the step is as fast as memory delivers weights.
Storing each weight in fewer bits relieves that memory bottleneck (and shrinks the model):

* ``"int8"``: one float32 scale per output channel (row), weights rounded to integers in [-127, 127].
* ``"q8_0"``: blocks of ``group_size`` (32) weights along a row share one float16 scale, integers in
  [-127, 127]: 8 + 16/32 = 8.5 bits per weight, like llama.cpp's Q8_0.
* ``"q4_0"``: blocks of 32 share one float16 scale, integers in [-7, 7] packed two per byte:
  4 + 16/32 = 4.5 bits per weight, the bytes of llama.cpp's Q4_0. llama.cpp uses all 16 levels, [-8, 7]
  (its scale maps each block's largest-magnitude weight to -8, so the opposite extreme can be clipped by a
  step); ours keeps the symmetric 15, like int8's [-127, 127], so the bound below holds for every weight.

Every scheme rounds to the nearest level of a symmetric grid, so each weight is off by at most half
its scale: ``|w - dequantize(quantize(w))| <= scale / 2``.

``quantize_model(model, scheme)`` returns a new model whose ``nn.Linear`` layers (and the token
embedding, which the output head shares) are replaced by ``QuantizedLinear`` / ``QuantizedEmbedding``;
the original model is left intact and every generate path works unchanged.

Speed needs a kernel. A matrix multiplication needs float weights: without a fused kernel the layer
dequantizes its whole matrix on every call (reads the int8 bytes, writes and reads a float copy), which is
slower than not quantizing. PyTorch has a fused int8 weight-only kernel (``torch._weight_int8pack_mm``, the
one gpt-fast uses), but how fast it runs depends on the device and on the activations' dtype: on the CPU
this course was built on it was several times faster with bfloat16 activations than with float32 ones. So
an int8 layer has three ways to multiply (``INT8_PATHS``): ``"kernel"`` (the fused kernel in the input's
dtype), ``"kernel-bf16"`` (activations cast to bfloat16 for the kernel, the result cast back) and
``"dequantize"``. ``path="auto"`` (the default) times the ones that run on this device, checks each gives
the right result, and keeps the fastest (``fastest_int8_path``, measured once per device and dtype). The
block formats (q8_0, q4_0) always dequantize: plain PyTorch has no kernel for them.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

SCHEMES = ("int8", "q8_0", "q4_0")
LEVELS = {"int8": 127, "q8_0": 127, "q4_0": 7}  # largest integer of each symmetric grid


def _check_scheme(scheme, group_size):
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of {SCHEMES}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")


def bits_per_weight(scheme: str, group_size: int = 32) -> float:
    """Storage per weight, scales included: 8 + 32/in_features for int8 is not fixed, so int8 counts 8."""
    _check_scheme(scheme, group_size)
    if scheme == "int8":
        return 8.0
    return (8 if scheme == "q8_0" else 4) + 16 / group_size


def quantized_bytes(out_features: int, in_features: int, scheme: str, group_size: int = 32) -> int:
    """Exact bytes of one [out, in] matrix stored in ``scheme`` (integers + scales)."""
    _check_scheme(scheme, group_size)
    n = out_features * in_features
    if scheme == "int8":
        return n + 4 * out_features  # int8 weights + one float32 scale per row
    blocks = n // group_size
    return (n if scheme == "q8_0" else n // 2) + 2 * blocks  # + one float16 scale per block


def _round_up_half(amax: torch.Tensor, levels: int) -> torch.Tensor:
    """float16 scale no smaller than amax / levels, so rounding never has to clip."""
    s = (amax / levels).to(torch.float16)
    too_small = s.float() * levels < amax
    return torch.where(too_small, torch.nextafter(s, torch.full_like(s, float("inf"))), s)


def quantize_tensor(w: torch.Tensor, scheme: str, group_size: int = 32):
    """(integers, scales) of a 2-D weight ``[out, in]``.

    int8: integers int8 [out, in], scales float32 [out].
    q8_0: integers int8 [out, in], scales float16 [out, in // group_size].
    q4_0: integers uint8 [out, in // 2] (two 4-bit values per byte, offset by 8), scales float16 [out, in // group_size].
    """
    _check_scheme(scheme, group_size)
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise ValueError(f"expected a 2-D weight matrix [out, in], got {getattr(w, 'shape', type(w).__name__)}")
    w = w.detach().float()
    out_f, in_f = w.shape
    levels = LEVELS[scheme]
    if scheme == "int8":
        scale = w.abs().amax(dim=1) / levels
        q = (w / torch.where(scale > 0, scale, 1.0)[:, None]).round_().clamp_(-levels, levels)
        return q.to(torch.int8), scale
    if in_f % group_size:
        raise ValueError(f"group_size {group_size} does not divide the row width {in_f}; "
                         f"choose a group size that divides it (e.g. 32 for widths that are multiples of 32)")
    if scheme == "q4_0" and in_f % 2:
        raise ValueError(f"q4_0 packs two weights per byte, so the row width must be even, got {in_f}")
    blocks = w.view(out_f, in_f // group_size, group_size)
    amax = blocks.abs().amax(dim=-1)
    scale = _round_up_half(amax, levels)
    divisor = torch.where(scale > 0, scale.float(), 1.0)[..., None]
    q = torch.round(blocks / divisor).clamp(-levels, levels).view(out_f, in_f)
    if scheme == "q8_0":
        return q.to(torch.int8), scale
    nibbles = (q + 8).to(torch.uint8)  # 1..15
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4), scale


def dequantize_tensor(q: torch.Tensor, scale: torch.Tensor, scheme: str, group_size: int = 32,
                      dtype=torch.float32) -> torch.Tensor:
    """The float weight ``[out, in]`` the integers and scales stand for."""
    _check_scheme(scheme, group_size)
    if scheme == "int8":
        return q.to(dtype) * scale.to(dtype)[:, None]
    if scheme == "q4_0":  # unpack: low nibble = even column, high nibble = odd column, both offset by 8
        w = torch.empty(q.shape[0], 2 * q.shape[1], dtype=dtype, device=q.device)
        w[:, 0::2] = q & 0x0F
        w[:, 1::2] = q >> 4
        w -= 8
    else:
        w = q.to(dtype)
    out_f, in_f = w.shape
    w = w.view(out_f, in_f // group_size, group_size) * scale.to(dtype)[..., None]
    return w.view(out_f, in_f)


INT8_PATHS = ("kernel", "kernel-bf16", "dequantize")


def _check_path(path, allow_auto=True):
    allowed = INT8_PATHS + (("auto",) if allow_auto else ())
    if path not in allowed:
        raise ValueError(f"unknown int8 path {path!r}; choose one of {allowed}")


def int8_linear(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, path: str, bias=None) -> torch.Tensor:
    """``x @ (qweight * scale[:, None]).T (+ bias)`` by one of ``INT8_PATHS``, in ``x``'s dtype.

    "kernel": torch's fused int8 weight-only kernel in ``x``'s dtype; "kernel-bf16": the same kernel with
    the activations cast to bfloat16 and the result cast back; "dequantize": a float copy of the weight, then
    ``F.linear``. The kernels raise ``RuntimeError`` where a device or dtype has none.
    """
    _check_path(path, allow_auto=False)
    if path == "dequantize":
        w = qweight.to(x.dtype) * scale.to(x.dtype)[:, None]
        return F.linear(x, w, None if bias is None else bias.to(x.dtype))
    compute = torch.bfloat16 if path == "kernel-bf16" else x.dtype
    flat = x.reshape(-1, x.shape[-1]).to(compute)
    out = torch._weight_int8pack_mm(flat, qweight, scale.to(compute)).to(x.dtype)
    out = out.view(*x.shape[:-1], qweight.shape[0])
    return out if bias is None else out + bias.to(x.dtype)


_FASTEST: dict = {}   # (device, dtype) -> (path, {path: seconds}), filled by fastest_int8_path


def int8_path_times(device="cpu", dtype=torch.float32, out_features: int = 4096, in_features: int = 4096,
                    repeats: int = 5) -> dict:
    """Seconds per call of each int8 path on one ``[out, in]`` matrix and one row of activations (a decode
    step's shape), timed in alternation. Paths that fail on this device, or give a wrong result, are left out."""
    from ..measure.timing import compare
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(out_features, in_features, generator=g) * 0.02).to(device)
    q, s = quantize_tensor(w, "int8")
    q, s = q.to(device), s.to(device)
    x = torch.randn(1, in_features, generator=g).to(device, dtype)
    want = F.linear(x.float(), q.float() * s[:, None])
    runs = {}
    for path in INT8_PATHS:
        try:
            got = int8_linear(x, q, s, path).float()
        except (RuntimeError, NotImplementedError):
            continue   # no such kernel for this device or dtype
        if got.shape == want.shape and (got - want).norm() <= 0.02 * want.norm():
            runs[path] = lambda path=path: int8_linear(x, q, s, path)
    if not runs:
        raise RuntimeError(f"no int8 path runs on {device} with {dtype}")
    return {path: t.median_s for path, t in compare(runs, repeats=repeats, warmup=1, device=device).items()}


def int8_path_report(device="cpu", dtype=torch.float32) -> dict:
    """``{path: seconds per call}`` as measured by ``fastest_int8_path`` for this device and dtype."""
    fastest_int8_path(device, dtype)
    return dict(_FASTEST[(torch.device(device).type, dtype)][1])


def fastest_int8_path(device="cpu", dtype=torch.float32) -> str:
    """The int8 path that ran fastest on this device for activations of ``dtype`` (measured on first use,
    then remembered for the session; ``_FASTEST`` holds the times)."""
    key = (torch.device(device).type, dtype)
    if key not in _FASTEST:
        times = int8_path_times(device, dtype)
        _FASTEST[key] = (min(times, key=times.get), times)
    return _FASTEST[key][0]


class QuantizedLinear(nn.Module):
    """Drop-in for ``nn.Linear`` holding quantized weights; multiplies with a fused kernel or dequantizes.

    ``path`` (int8 only): one of ``INT8_PATHS``, or ``"auto"`` for the fastest on the input's device and
    dtype (``fastest_int8_path``). The block formats always dequantize.
    """

    def __init__(self, linear: nn.Linear, scheme: str, group_size: int = 32, path: str = "auto"):
        super().__init__()
        _check_scheme(scheme, group_size)
        _check_path(path)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.scheme, self.group_size = scheme, group_size
        q, scale = quantize_tensor(linear.weight, scheme, group_size)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        self.path = path if scheme == "int8" else "dequantize"

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        return dequantize_tensor(self.qweight, self.scale, self.scheme, self.group_size, dtype)

    def forward(self, x):
        if self.scheme == "int8":
            path = fastest_int8_path(x.device, x.dtype) if self.path == "auto" else self.path
            try:
                return int8_linear(x, self.qweight, self.scale, path, self.bias)
            except (RuntimeError, NotImplementedError):
                if path == "dequantize":
                    raise
                # no kernel for this shape or device: the plain way
                return int8_linear(x, self.qweight, self.scale, "dequantize", self.bias)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, scheme={self.scheme}, group_size={self.group_size}, "
                f"path={self.path}")


class QuantizedEmbedding(nn.Module):
    """Token embedding that shares a ``QuantizedLinear``'s storage (tied embeddings) or has its own;
    it dequantizes only the rows it looks up."""

    def __init__(self, source: QuantizedLinear, dtype=torch.float32):
        super().__init__()
        self.scheme, self.group_size = source.scheme, source.group_size
        self.num_embeddings, self.embedding_dim = source.out_features, source.in_features
        self.qweight, self.scale = source.qweight, source.scale  # the same tensors: stored once
        # GPT.dtype / GPT.device read ``tok_emb.weight``: an empty tensor of the compute dtype answers them
        self.register_buffer("weight", torch.empty(0, dtype=dtype, device=source.qweight.device), persistent=False)

    def forward(self, idx):
        rows = dequantize_tensor(self.qweight[idx.reshape(-1)], self.scale[idx.reshape(-1)], self.scheme,
                                 self.group_size, self.weight.dtype)
        return rows.view(*idx.shape, self.embedding_dim)


def quantize_model(model, scheme: str = "int8", group_size: int = 32, path: str = "auto"):
    """A new model with every ``nn.Linear`` (and the token embedding) quantized; ``model`` is unchanged.

    scheme: ``"int8"`` (per output channel; ``group_size`` unused), ``"q8_0"`` or ``"q4_0"`` (blocks of
    ``group_size`` along each row). path: how int8 layers multiply (``INT8_PATHS`` or "auto", see
    ``QuantizedLinear``). Norm weights and biases stay in float. Raises ``ValueError`` for an unknown scheme
    or path, or a group size that does not divide a layer's width.
    """
    _check_scheme(scheme, group_size)
    _check_path(path)
    if scheme != "int8":
        widths = {m.in_features for m in model.modules() if isinstance(m, nn.Linear)}
        bad = sorted(w for w in widths if w % group_size)
        if bad:
            raise ValueError(f"group_size {group_size} does not divide the layer width(s) {bad}; "
                             f"choose a group size that divides every width ({sorted(widths)})")
    # copy the model, except the float weights about to be replaced (a memory-bound model's are hundreds of MB)
    replaced = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    new = copy.deepcopy(model, memo={id(w): w for w in replaced})
    dtype = next(p for p in model.parameters()).dtype
    tied = getattr(new.config, "tie_embeddings", False) and new.lm_head.weight is new.tok_emb.weight
    for name, module in list(new.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, QuantizedLinear(child, scheme, group_size, path))
    if isinstance(new.tok_emb, nn.Embedding):
        if tied:
            new.tok_emb = QuantizedEmbedding(new.lm_head, dtype)
        else:
            emb = nn.Linear(new.tok_emb.embedding_dim, new.tok_emb.num_embeddings, bias=False)
            emb.weight = new.tok_emb.weight
            new.tok_emb = QuantizedEmbedding(QuantizedLinear(emb, scheme, group_size, path), dtype)
    return new.eval()


