"""inferlab: a hands-on course on how language models answer, and the code its notebooks run."""
from .core.config import MODEL_CONFIGS, ModelConfig, get_config
from .core.device import best_device
from .core.generate import GenerationResult, generate, generate_batch, stream
from .core.kvcache import KVCache
from .core.model import GPT
from .core.pretrained import load_pretrained
from .core.sampling import next_token_probs, sample_next
from .core.tokenizer import BPETokenizer, show_tokens
from .hf import load_hf, load_model
from .measure.counting import kv_cache_bytes

__all__ = ["MODEL_CONFIGS", "ModelConfig", "get_config", "GPT", "BPETokenizer", "show_tokens", "KVCache",
           "generate", "generate_batch", "stream", "GenerationResult", "load_pretrained", "next_token_probs",
           "sample_next", "kv_cache_bytes", "best_device", "load_hf", "load_model"]
from .engine import CompletionOutput, Engine, RequestOutput, SamplingParams  # noqa: E402  (notebook 06)

__all__ += ["Engine", "SamplingParams", "RequestOutput", "CompletionOutput"]
