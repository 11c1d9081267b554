"""inferlab: a hands-on course on how language models answer, and the code its notebooks run."""
from .config import MODEL_CONFIGS, ModelConfig, get_config
from .counting import kv_cache_bytes
from .generate import GenerationResult, generate, generate_batch, stream
from .hf import load_hf
from .kvcache import KVCache
from .model import GPT
from .pretrained import load_pretrained
from .sampling import next_token_probs, sample_next
from .tokenizer import BPETokenizer, show_tokens

__all__ = ["MODEL_CONFIGS", "ModelConfig", "get_config", "GPT", "BPETokenizer", "show_tokens", "KVCache",
           "generate", "generate_batch", "stream", "GenerationResult", "load_pretrained", "load_hf",
           "next_token_probs", "sample_next", "kv_cache_bytes"]
from .engine import CompletionOutput, Engine, RequestOutput, SamplingParams  # noqa: E402  (notebook 06)
__all__ += ["Engine", "SamplingParams", "RequestOutput", "CompletionOutput"]
