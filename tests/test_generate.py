import pytest
import torch
from hypothesis import given, strategies as st

import inferlab as il
from conftest import DEVICES, random_model, small_configs


@st.composite
def workloads(draw):
    """A random config, random prompt ids and a random number of new tokens that fit its context."""
    config = draw(small_configs(max_seq_len=48))
    prompt = draw(st.lists(st.integers(0, 255), min_size=1, max_size=20))
    new = draw(st.integers(1, config.max_seq_len - len(prompt)))
    return config, prompt, min(new, 20), draw(st.integers(0, 10**6))


@given(workloads())
def test_greedy_is_identical_with_and_without_cache(work):
    config, prompt, new, seed = work
    model, tok = random_model(config, seed), il.BPETokenizer()
    cached = il.generate(model, tok, prompt, max_new_tokens=new, use_cache=True)
    recomputed = il.generate(model, tok, prompt, max_new_tokens=new, use_cache=False)
    assert cached.tokens == recomputed.tokens and len(cached.tokens) == new


@given(small_configs(max_seq_len=48), st.lists(st.lists(st.integers(0, 255), min_size=1, max_size=16),
                                               min_size=2, max_size=4), st.integers(0, 10**6))
def test_batched_greedy_equals_one_at_a_time(config, prompts, seed):
    model, tok = random_model(config, seed), il.BPETokenizer()
    batch = il.generate_batch(model, tok, prompts, max_new_tokens=8)
    for prompt, res in zip(prompts, batch):
        assert res.tokens == il.generate(model, tok, prompt, max_new_tokens=8).tokens


@given(st.integers(0, 10**6), st.sampled_from([None, 5]), st.sampled_from([None, 0.9]))
def test_seeded_sampling_is_reproducible_and_cache_independent(seed, top_k, top_p):
    config = il.ModelConfig(vocab_size=256, d_model=32, n_layer=2, n_head=4, n_kv_head=2, arch="llama",
                            max_seq_len=64)
    model, tok = random_model(config, 1), il.BPETokenizer()
    kw = dict(max_new_tokens=12, temperature=0.8, top_k=top_k, top_p=top_p, seed=seed)
    a = il.generate(model, tok, "abc", **kw)
    assert a.tokens == il.generate(model, tok, "abc", **kw).tokens
    assert a.tokens == il.generate(model, tok, "abc", use_cache=False, **kw).tokens


@pytest.mark.parametrize("device", DEVICES)
def test_every_path_agrees_on_each_device(device):
    """On every device present: greedy tokens equal with and without the cache, batched and one at a time,
    and equal to the CPU's; seeded sampling repeats itself on the device (its generator lives there); timing
    waits for the device."""
    from inferlab.measure.timing import measure
    gen = torch.Generator().manual_seed(7)
    for i in range(4):   # random configs and workloads
        config = il.ModelConfig(vocab_size=300, d_model=32, n_layer=1 + i % 3, n_head=4, n_kv_head=(1, 2, 4)[i % 3],
                                arch=("gpt2", "llama")[i % 2], max_seq_len=48)
        cpu_model, tok = random_model(config, i), il.BPETokenizer()
        model = random_model(config, i).to(device)
        prompts = [torch.randint(0, 256, (n,), generator=gen).tolist() for n in (3, 9, 14)]
        batch = il.generate_batch(model, tok, prompts, max_new_tokens=10)
        for prompt, res in zip(prompts, batch):
            cached = il.generate(model, tok, prompt, max_new_tokens=10)
            assert cached.tokens == res.tokens == il.generate(model, tok, prompt, max_new_tokens=10,
                                                              use_cache=False).tokens
            assert cached.tokens == il.generate(cpu_model, tok, prompt, max_new_tokens=10).tokens
        kw = dict(max_new_tokens=10, temperature=0.9, top_k=20, seed=11)
        assert il.generate(model, tok, prompts[0], **kw).tokens == il.generate(model, tok, prompts[0], **kw).tokens
    assert measure(lambda: model(torch.tensor([prompts[0]], device=device)), warmup=0, repeats=2,
                   device=device).median_s > 0


def test_result_fields_and_timings(pretrained):
    model, tok = pretrained
    res = il.generate(model, tok, "The list", max_new_tokens=10)
    assert len(res.tokens) == 10 and res.text == tok.decode(res.tokens)
    assert res.prompt_tokens == tok.encode("The list")
    assert res.ttft_s > 0 and res.tpot_s > 0 and res.total_s >= res.ttft_s
    assert res.finish_reason == "length" and len(res.step_times_s) == 10


def test_stream_yields_the_same_text_as_generate(pretrained):
    model, tok = pretrained
    pieces = list(il.stream(model, tok, "Return the", max_new_tokens=30))
    res = il.generate(model, tok, "Return the", max_new_tokens=30)
    assert "".join(p.text for p in pieces) == res.text
    assert [p.token_id for p in pieces] == res.tokens


def test_stop_string_cuts_text_and_ends_generation(pretrained):
    model, tok = pretrained
    full = il.generate(model, tok, "The", max_new_tokens=40)
    stop = full.text.strip()[:3] if full.text.strip() else " "
    res = il.generate(model, tok, "The", max_new_tokens=40, stop=stop)
    assert res.finish_reason == "stop" and stop not in res.text
    assert full.text.startswith(res.text) and len(res.tokens) < 40
    streamed = "".join(p.text for p in il.stream(model, tok, "The", max_new_tokens=40, stop=stop))
    assert streamed == res.text


def test_trace_records_candidates_and_greedy_picks_the_top(pretrained):
    model, tok = pretrained
    res = il.generate(model, tok, "def", max_new_tokens=5, trace=True, trace_top=4)
    assert len(res.trace) == 5
    for step, token in zip(res.trace, res.tokens):
        probs = [c.prob for c in step.candidates]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert step.candidates[0].token_id == token == step.token_id


def test_generate_does_not_change_the_models_mode(pretrained):
    model, tok = pretrained
    model.train()
    il.generate(model, tok, "a", max_new_tokens=2)
    assert model.training
    model.eval()


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(prompt=""), ValueError, "prompt is empty"),
    (dict(prompt=[]), ValueError, "prompt is empty"),
    (dict(prompt=3.5), TypeError, "prompt must be a str"),
    (dict(prompt="x" * 3000), ValueError, "max_seq_len"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.01), ValueError, "top_p"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(max_new_tokens=0), ValueError, "max_new_tokens must be >= 1"),
    (dict(max_new_tokens=10_000), ValueError, "exceeds the model's context"),
    (dict(stop=""), ValueError, "stop"),
    (dict(seed="one"), TypeError, "seed"),
])
def test_bad_generation_input_is_a_clear_error(pretrained, kwargs, error, words):
    model, tok = pretrained
    args = dict(prompt="Hello", max_new_tokens=5)
    args.update(kwargs)
    with pytest.raises(error, match=words):
        il.generate(model, tok, **args)


def test_generate_batch_bad_input(pretrained):
    model, tok = pretrained
    with pytest.raises(ValueError, match="non-empty list"):
        il.generate_batch(model, tok, [])
    with pytest.raises(ValueError, match="prompt is empty"):
        il.generate_batch(model, tok, ["ok", ""])


def test_token_id_prompts_need_no_tokenizer(pretrained):
    model, tok = pretrained
    ids = tok.encode("import os")
    want = il.generate(model, tok, ids, max_new_tokens=6).tokens
    assert il.generate(model, None, ids, max_new_tokens=6).tokens == want
    assert [r.tokens for r in il.generate_batch(model, None, [ids, ids[:1]], max_new_tokens=6)][0] == want
    assert il.generate(model, None, ids, max_new_tokens=6).text == ""  # no tokenizer, no text
    with pytest.raises(ValueError, match="needs the tokenizer"):
        il.generate(model, None, "import os", max_new_tokens=6)
