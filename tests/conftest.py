"""Shared fixtures. Hypothesis runs derandomized: the random configs and workloads are the same
every run, so a pass is a pass everywhere (no flaky greedy near-ties)."""
import pytest
import torch
from hypothesis import HealthCheck, settings, strategies as st

import inferlab as il

settings.register_profile("inferlab", derandomize=True, deadline=None, max_examples=20,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("inferlab")
torch.set_num_threads(min(2, torch.get_num_threads()))


def _has_mps() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


# every device present: the CPU always, CUDA and Apple's MPS when torch sees them (skipped with the reason)
DEVICES = ["cpu",
           pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")),
           pytest.param("mps", marks=pytest.mark.skipif(not _has_mps(), reason="no Apple MPS device here"))]


@st.composite
def small_configs(draw, max_seq_len=64):
    """Random small model shapes: both architectures, multi-head, grouped-query and multi-query."""
    n_kv_head = draw(st.sampled_from([1, 2, 4]))
    groups = draw(st.sampled_from([1, 2]))
    n_head = n_kv_head * groups
    head_dim = draw(st.sampled_from([8, 16]))
    return il.ModelConfig(vocab_size=draw(st.integers(260, 400)), d_model=n_head * head_dim,
                          n_layer=draw(st.integers(1, 3)), n_head=n_head, n_kv_head=n_kv_head,
                          max_seq_len=max_seq_len, arch=draw(st.sampled_from(["gpt2", "llama"])))


def random_model(config, seed=0):
    """Random weights with a larger init so logits are spread out (greedy picks are not near-ties)."""
    torch.manual_seed(seed)
    return il.GPT(config, init_std=0.3).eval()


@pytest.fixture(scope="session")
def pretrained():
    return il.load_pretrained()


@pytest.fixture(scope="session")
def byte_tokenizer():
    """A tokenizer with no merges: every byte its own token (vocab 256), for random models."""
    return il.BPETokenizer()
