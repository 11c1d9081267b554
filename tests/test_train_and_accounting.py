import copy

import pytest
import torch

import inferlab as il
from inferlab.accounting import (cost_per_million_tokens, measure_inference_pass, measure_training_step,
                                 weight_checksum)
from inferlab.train import get_batch, heldout_loss, train

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
