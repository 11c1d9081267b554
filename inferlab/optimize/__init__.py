"""Inference optimizations, each measured for speed, memory and quality (notebook 05).

One idea per module:

* ``quantize``: int8 per channel, q8_0 and q4_0 blocks (``quantize_model``);
* ``precision``: bfloat16 / float16 against float32 (``to_precision``, ``Linear16``);
* ``tiled_attention``: the online softmax behind FlashAttention (``tiled_attention``);
* ``speculative``: a draft model proposes, the target verifies (``speculative_generate``);
* ``compile``: a static cache and ``torch.compile`` (opt-in);
* ``distill``: training the draft model on the target's own answers.

The yardsticks that compare them (decode step time, quality against float32, the formats' speed on a
memory-bound model, batching, GQA, speculative runs) are lesson 5's helpers: ``inferlab.lessons.part5``.
"""
from .compile import StaticKVCache, compile_model
from .precision import GEMV_PATHS, PRECISIONS, Linear16, fastest_gemv_path, native_support, to_precision
from .quantize import (INT8_PATHS, SCHEMES, QuantizedEmbedding, QuantizedLinear, dequantize_tensor, fastest_int8_path,
                       int8_linear, quantize_model, quantize_tensor, quantized_bytes)
from .speculative import SpeculativeResult, expected_speedup, residual, speculative_generate
from .tiled_attention import largest_intermediate_bytes, standard_attention, tiled_attention

__all__ = ["StaticKVCache", "compile_model", "GEMV_PATHS", "PRECISIONS", "Linear16", "fastest_gemv_path",
           "native_support", "to_precision", "INT8_PATHS", "SCHEMES", "QuantizedEmbedding", "QuantizedLinear",
           "dequantize_tensor", "fastest_int8_path", "int8_linear", "quantize_model", "quantize_tensor",
           "quantized_bytes", "SpeculativeResult", "expected_speedup", "residual", "speculative_generate",
           "largest_intermediate_bytes", "standard_attention", "tiled_attention"]
