import copy

import pytest
import torch

import inferlab as il
from inferlab.core.train import get_batch, heldout_loss, train
from inferlab.lessons.part1 import (cost_per_million_tokens, measure_inference_pass, measure_training_step,
                                    weight_checksum)
from inferlab.measure import machine

CONFIG = il.ModelConfig(vocab_size=64, d_model=32, n_layer=2, n_head=4, n_kv_head=2, arch="llama", max_seq_len=32)


def periodic_data(n=4000):
    return torch.arange(n) % 16  # a pattern a tiny model learns within a few dozen steps


def test_training_lowers_the_loss_and_records_history():
    torch.manual_seed(0)
    model = il.GPT(CONFIG)
    data = periodic_data()
    before = heldout_loss(model, data, seq_len=16)
    hist = train(model, data, data, steps=60, batch_size=8, seq_len=16, lr=1e-2, warmup=5, eval_every=20,
                 progress=False, sample_fn=lambda m: "sample")
    assert heldout_loss(model, data, seq_len=16) < before / 3
    assert len(hist.train_loss) == 60 and hist.eval_steps == [0, 20, 40, 59] and len(hist.samples) == 4
    assert hist.tokens_seen == 60 * 8 * 16


def test_train_stops_at_max_seconds():
    hist = train(il.GPT(CONFIG), periodic_data(), steps=10_000, batch_size=2, seq_len=8, max_seconds=0.3,
                 progress=False)
    assert len(hist.steps) < 10_000


def test_get_batch_targets_are_inputs_shifted_by_one():
    x, y = get_batch(torch.arange(100), 4, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10) and torch.equal(x[:, 1:], y[:, :-1])


def test_training_changes_weights_and_inference_does_not():
    torch.manual_seed(0)
    model = il.GPT(CONFIG)
    x, y = get_batch(periodic_data(), 4, 16, torch.Generator().manual_seed(0))
    infer = measure_inference_pass(model, x)
    assert not infer.weights_changed and infer.checksum_before == weight_checksum(model)
    step = measure_training_step(model, x, y, repeats=1)
    assert step.weights_changed and step.checksum_after == weight_checksum(model)


def test_memory_breakdown_counts_what_adamw_needs():
    torch.manual_seed(0)
    model = il.GPT(CONFIG)
    x, y = get_batch(periodic_data(), 4, 16, torch.Generator().manual_seed(0))
    step = measure_training_step(model, x, y, repeats=1)
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert step.memory.weights == weights
    assert step.memory.gradients == weights                 # one gradient per weight
    assert step.memory.optimizer_state == 2 * weights       # AdamW: two moments per weight
    infer = measure_inference_pass(model, x)
    assert 0 < infer.memory.activations < step.memory.activations
    assert set(step.parts_s) == {"forward", "backward", "optimizer"}


def test_weight_checksum_sees_a_single_changed_weight():
    model = il.GPT(CONFIG)
    other = copy.deepcopy(model)
    assert weight_checksum(model) == weight_checksum(other)
    with torch.no_grad():
        other.blocks[1].mlp.down.weight[3, 5] += 1e-6
    assert weight_checksum(model) != weight_checksum(other)


def test_cost_per_million_tokens():
    # 1,000 tokens/s -> 1e6 tokens take 1000 s; 360 W for 1000 s = 0.1 kWh; at 0.30/kWh = 0.03
    assert cost_per_million_tokens(1000, 360, 0.30) == pytest.approx(0.03)
    assert cost_per_million_tokens(1000, 0, 0, hardware_per_hour=3.6) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tokens_per_s"):
        cost_per_million_tokens(0, 100, 0.3)
    with pytest.raises(ValueError, match="watts"):
        cost_per_million_tokens(10, -1, 0.3)


def test_measure_bad_batch():
    model = il.GPT(CONFIG)
    with pytest.raises(ValueError, match="shape of x"):
        measure_training_step(model, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="context"):
        measure_inference_pass(model, torch.zeros(1, 40, dtype=torch.long))


# --- memory counted the same way for training and inference; alternation; batching evidence ---------------

from inferlab.lessons.part1 import (LiveTensors, batch_sweep, batching_explanation, compare_training_and_inference,
                                    count_torch_ops, decode_step_ops, greedy_margin)


def test_live_tensors_counts_what_is_alive_at_once():
    a = torch.ones(1000)  # made before: not counted
    with LiveTensors() as watch:
        b = a * 2                 # 4,000 bytes alive
        c = b + 1                 # 8,000 alive
        del b
        d = c.view(10, 100) * 3   # b freed, the view shares c: 8,000 alive
    assert watch.ops == 4 and watch.peak_bytes == 8000
    del c, d
    with LiveTensors() as watch:
        for _ in range(5):
            e = a * 2  # each one replaces the last: never more than two alive
        del e
    assert watch.peak_bytes == 8000
    assert count_torch_ops(lambda: a.add(1).mul(2)) == 2


def test_activations_are_counted_the_same_way_for_training_and_inference():
    torch.manual_seed(0)
    model = il.GPT(CONFIG)
    x, y = get_batch(periodic_data(), 4, 16, torch.Generator().manual_seed(0))
    step = measure_training_step(copy.deepcopy(model), x, y, repeats=1)
    infer = measure_inference_pass(model, x, repeats=1)
    logits_bytes = 4 * 16 * CONFIG.vocab_size * 4
    assert infer.saved_bytes == 0                       # inference mode saves nothing for a backward pass
    assert step.saved_bytes > 0
    assert step.memory.activations >= step.saved_bytes  # what is saved stays alive until the backward pass
    assert logits_bytes <= infer.memory.activations < step.memory.activations


def test_compare_alternates_and_reports_a_paired_ratio():
    torch.manual_seed(0)
    model = il.GPT(CONFIG)
    x, y = get_batch(periodic_data(), 4, 16, torch.Generator().manual_seed(0))
    before = weight_checksum(model)
    c = compare_training_and_inference(copy.deepcopy(model), model, x, y, repeats=3, warmup=1)
    assert c.training.weights_changed and not c.inference.weights_changed and weight_checksum(model) == before
    assert c.training.stats.repeats == c.inference.stats.repeats == 3
    assert c.ratio.low <= c.ratio.median <= c.ratio.high and c.ratio.median > 0
    assert set(c.training.parts_s) == {"forward", "backward", "optimizer"}
    assert c.training.memory.optimizer_state == 2 * c.training.memory.weights
    assert isinstance(c.busy, str)
    with pytest.raises(ValueError, match="repeats"):
        compare_training_and_inference(model, model, x, y, repeats=0)


def test_batch_sweep_and_the_ops_of_a_decode_step(byte_tokenizer):
    torch.manual_seed(0)
    model = il.GPT(il.ModelConfig(vocab_size=256, d_model=32, n_layer=1, n_head=2, arch="llama", max_seq_len=64))
    prompts = ["abc", "hello", "xy", "the end"]
    sweep = batch_sweep(model, byte_tokenizer, prompts, [1, 2, 4], new_tokens=4, repeats=2, warmup=0)
    assert len(sweep.tokens_per_s) == len(sweep.tpot_s) == 3 and all(t > 0 for t in sweep.tokens_per_s)
    assert list(sweep.timings) == [1, 2, 4] and all(t.repeats == 2 for t in sweep.timings.values())
    assert isinstance(sweep.impossible, list) and isinstance(sweep.busy, str)
    assert decode_step_ops(model, byte_tokenizer, prompts[:1]) == decode_step_ops(model, byte_tokenizer, prompts) > 10
    assert 0 < machine.seconds_per_small_op(repeats=2, calls=50) < 0.01
    with pytest.raises(ValueError, match="prompts"):
        batch_sweep(model, byte_tokenizer, prompts, [1, 8])
    with pytest.raises(ValueError, match="batch_sizes"):
        batch_sweep(model, byte_tokenizer, prompts, [])


def test_batching_explanation_names_the_cost_the_batch_shares():
    overhead = batching_explanation(32, 2e-3, 5e-3, 12.0, 0.4e-3, 1.2e-3, 300, 300)
    assert "overhead-bound" in overhead and "same number of operations" in overhead and "2.5x" in overhead
    assert "12.0x the throughput" in overhead
    memory = batching_explanation(32, 2e-3, 5e-3, 12.0, 1.5e-3, 0.3e-3, 300, 300)
    assert "memory-bound" in memory
    noisy = batching_explanation(32, 2e-3, 1e-3, 60.0, 0.4e-3, 1.2e-3, 300, 300)
    assert "noise" in noisy and "throughput" not in noisy.split("noise")[-1]
    busy = batching_explanation(32, 2e-3, 5e-3, 12.0, 0.4e-3, 1.2e-3, 300, 300, busy="⚠ This machine looks busy")
    assert "too busy" in busy and "overhead-bound" not in busy and "%" not in busy
    with pytest.raises(ValueError, match="read_s"):
        batching_explanation(32, 2e-3, 5e-3, 12.0, 0.0, 1e-3, 300, 300)
    with pytest.raises(ValueError, match="batch"):
        batching_explanation(0, 2e-3, 5e-3, 12.0, 1e-3, 1e-3, 300, 300)


def test_greedy_margin_of_a_greedy_answer(byte_tokenizer):
    torch.manual_seed(0)
    model = il.GPT(il.ModelConfig(vocab_size=256, d_model=32, n_layer=2, n_head=2, arch="llama", max_seq_len=64),
                   init_std=0.3)
    res = il.generate(model, byte_tokenizer, "hello", max_new_tokens=8)
    m = greedy_margin(model, res.prompt_tokens, res.tokens)
    assert m.picks_agree and 0 <= m.step < 8 and m.smallest > 0 and 0 < m.rounding < 1e-3
    assert m.safe == (m.smallest > 100 * m.rounding)
    with pytest.raises(ValueError, match="tokens"):
        greedy_margin(model, res.prompt_tokens, [])


def test_train_says_when_the_time_budget_stopped_it():
    hist = train(il.GPT(CONFIG), periodic_data(), steps=10_000, batch_size=2, seq_len=8, max_seconds=0.3,
                 progress=False)
    assert hist.stopped_by_budget and len(hist.steps) < 10_000
    hist = train(il.GPT(CONFIG), periodic_data(), steps=3, batch_size=2, seq_len=8, max_seconds=60, progress=False)
    assert not hist.stopped_by_budget and len(hist.steps) == 3
    for bad in (0, -1, "10", True):
        with pytest.raises(ValueError, match="max_seconds"):
            train(il.GPT(CONFIG), periodic_data(), steps=3, batch_size=2, seq_len=8, max_seconds=bad, progress=False)


def test_forward_memory_and_optimizer_state_bytes():
    """Notebook 01a: training keeps what autograd saved, inference keeps nothing; SGD keeps no state,
    momentum one buffer per weight, AdamW two."""
    from inferlab.lessons.part1 import forward_memory, optimizer_state_bytes

    torch.manual_seed(0)
    model = il.GPT(il.ModelConfig(vocab_size=256, d_model=32, n_layer=1, n_head=2, arch="llama", max_seq_len=64))
    x, y = torch.randint(0, 256, (2, 16)), torch.randint(0, 256, (2, 16))
    train_peak, saved = forward_memory(model, x, y)
    infer_peak, infer_saved = forward_memory(model, x)
    assert saved > 0 and infer_saved == 0 and train_peak > infer_peak
    with pytest.raises(ValueError, match="y must be"):
        forward_memory(model, x, y[:, :3])
    weight_bytes = model.weight_bytes()
    for make, copies in ((lambda p: torch.optim.SGD(p, lr=0.1), 0),
                         (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), 1),
                         (lambda p: torch.optim.AdamW(p), 2)):
        m = copy.deepcopy(model)
        opt = make(m.parameters())
        m(x).sum().backward()
        opt.step()
        assert optimizer_state_bytes(opt) == copies * weight_bytes
    with pytest.raises(TypeError, match="optimizer"):
        optimizer_state_bytes("adam")
