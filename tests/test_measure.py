"""Notebook 04's measuring and counting tools: roofs, roofline math, op counts, timing, the queue.

Counts are checked against arithmetic written out by hand and against torch's FlopCounterMode.
Measured roofs are only checked to be positive and sensibly ordered with a wide margin: never a timing assert.
"""
import math
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import inferlab as il
from inferlab.core.model import attend
from inferlab.engine.serving import poisson_arrivals
from inferlab.lessons import part4
from inferlab.measure import decode_step, machine, profiler, random_weights, roofline
from inferlab.measure.timing import first_calls, measure, num_threads

MAIN = il.MODEL_CONFIGS["inferlab-main"]


def counted_flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# --- counting single operations ----------------------------------------------------------------------

def test_linear_count_by_hand():
    # one token through GPT-2's MLP up-projection: x [1, 768] @ W^T, W [3072, 768], float32
    c = roofline.linear_count(1, 768, 3072, torch.float32)
    assert c.flops == 2 * 1 * 768 * 3072 == 4_718_592
    # reads x (768) and W (768 x 3072 = 2,359,296), writes y (3072): 2,363,136 numbers x 4 bytes
    assert c.bytes == (768 + 2_359_296 + 3072) * 4 == 9_452_544
    assert c.intensity == pytest.approx(4_718_592 / 9_452_544)  # ~0.5 FLOP/byte: memory-bound anywhere
    # a prefill of 512 tokens reuses every weight 512 times: intensity grows to ~ 2 x 512 x 768 x 3072 / ...
    big = roofline.linear_count(512, 768, 3072, torch.bfloat16)
    assert big.bytes == (512 * 768 + 768 * 3072 + 512 * 3072) * 2 == 8_650_752
    assert big.intensity == pytest.approx(2 * 512 * 768 * 3072 / 8_650_752)


def test_attention_count_by_hand():
    # one decode query per head over 1,024 cached keys, GPT-2 small's layer: 12 heads of 64, float32
    c = roofline.attention_count(12, 12, 64, n_new=1, n_context=1024)
    assert c.flops == 4 * 12 * 1 * 1024 * 64 == 3_145_728  # q.K^T and weights.V: 2 FLOPs each per (key, dim)
    # reads q (12 x 64) and writes out (12 x 64), reads K and V (2 x 12 x 1024 x 64), 4 bytes each
    assert c.bytes == (2 * 12 * 64 + 2 * 12 * 1024 * 64) * 4 == 6_297_600
    gqa = roofline.attention_count(12, 2, 64, n_new=1, n_context=1024)
    assert gqa.bytes == (2 * 12 * 64 + 2 * 2 * 1024 * 64) * 4  # grouped-query: 6x fewer cache bytes
    assert gqa.flops == c.flops


def test_op_counts_match_flop_counter_mode():
    x, w = torch.randn(8, 96), torch.randn(160, 96)
    assert counted_flops(lambda: torch.nn.functional.linear(x, w)) == roofline.linear_count(8, 96, 160).flops
    q, k, v = torch.randn(2, 8, 3, 16), torch.randn(2, 4, 40, 16), torch.randn(2, 4, 40, 16)
    mask = torch.ones(40, 40, dtype=torch.bool).tril()[None, None, -3:]
    assert counted_flops(lambda: attend(q, k, v, mask)) == roofline.attention_count(8, 4, 16, 3, 40, 2).flops


def test_decode_count_of_the_bundled_model_by_hand():
    # inferlab-main: 4 layers, d_model 256, 8 query heads sharing 4 key/value heads of 32 dims, d_ff 704,
    # vocabulary 2,048, tied embeddings, SwiGLU. Per layer: q, o (256 x 256) + k, v (256 x 128) + 3 x 256 x 704.
    per_layer = 2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 704
    assert per_layer == 737_280
    params = 4 * per_layer + (2 * 4 + 1) * 256 + 2048 * 256  # + norms + the (tied) embedding
    assert params == 3_475_712 == il.measure.counting.param_count(MAIN)
    c = roofline.decode_count(MAIN, batch_size=1, n_context=100, dtype=torch.float32)
    kv_per_token = 2 * 4 * 4 * 32 * 4  # K and V x layers x kv heads x head_dim x 4 bytes = 4,096
    assert c.weight_bytes == params * 4 == 13_902_848
    assert c.kv_read_bytes == 99 * kv_per_token and c.kv_write_bytes == kv_per_token
    # FLOPs: 2 per weight of the matrices + the head, plus attention over 100 keys
    assert c.flops == 2 * (4 * per_layer + 256 * 2048) + 4 * 4 * 8 * 100 * 32 == 7_356_416
    assert c.intensity == pytest.approx(7_356_416 / (13_902_848 + 405_504 + 4_096))
    # batch 8 shares the weights: 8x the FLOPs, the weights once
    c8 = roofline.decode_count(MAIN, 8, 100)
    assert c8.flops == 8 * c.flops and c8.weight_bytes == c.weight_bytes and c8.kv_read_bytes == 8 * c.kv_read_bytes


def test_decode_step_flops_match_flop_counter_mode():
    model = random_weights.random_model(MAIN)
    model.attention = "reference"   # FlopCounterMode counts grouped-query SDPA by its K/V heads, not its query heads
    step = decode_step.decode_stepper(model, batch_size=3, n_context=20)
    assert counted_flops(step) == roofline.decode_count(MAIN, 3, 20).flops


# --- roofline math -------------------------------------------------------------------------------------

def test_roof_math():
    roof = roofline.Roof("toy", peak_flops=100e9, bandwidth=10e9)
    assert roof.ridge == 10.0
    assert roof.attainable(1.0) == 10e9 and roof.attainable(10.0) == 100e9 and roof.attainable(1000.0) == 100e9
    assert roof.step_time(1e9, 1e9) == 0.1  # 1 GB at 10 GB/s beats 1 GFLOP at 100 GFLOP/s
    assert roof.regime(0.5) == "memory-bound" and roof.regime(50) == "compute-bound"
    assert roofline.mbu(6e9, 1.0, 10e9) == pytest.approx(0.6)
    assert roofline.mfu(30e9, 0.5, 100e9) == pytest.approx(0.6)


def test_hardware_presets():
    h100 = roofline.hardware_roof("h100", torch.bfloat16)
    assert h100.peak_flops == 989.4e12 and h100.bandwidth == 3.35e12
    assert h100.ridge == pytest.approx(295.3, abs=0.1)
    assert roofline.hardware_roof("H200", "bfloat16").bandwidth > h100.bandwidth
    assert roofline.hardware_roof("a100", torch.float32).peak_flops == 19.5e12
    for name in roofline.HARDWARE:
        roof = roofline.hardware_roof(name)
        assert roof.peak_flops > 0 and roof.bandwidth > 0


def test_critical_batch_is_where_the_intensity_crosses_the_ridge():
    roof = roofline.Roof("toy", 100e9, 10e9)
    b = roofline.critical_batch(MAIN, 16, roof)
    assert roofline.decode_count(MAIN, b, 16).intensity >= roof.ridge > roofline.decode_count(MAIN, b - 1, 16).intensity
    # float32 weights: intensity ~ 2B FLOPs / 4 bytes per weight = B / 2, so about 2 x ridge
    assert 18 <= b <= 24
    # at a long context each sequence's cache keeps the step memory-bound on an H100: no batch does it
    assert roofline.critical_batch(il.MODEL_CONFIGS["llama-2-7b"], 4096, roofline.hardware_roof("h100"),
                                    torch.bfloat16) is None


def test_batch_regimes_read_off_synthetic_sweeps():
    batches = [1, 2, 4, 8, 16, 32, 64, 128]
    # flat (memory-bound) until 16, then in proportion to the batch (compute-bound)
    r = part4.batch_regimes(batches, [max(1.0, b / 16) for b in batches])
    assert r.near_free_until == 16 and r.compute_bound_from == 16
    assert r.tokens_per_s[4] == pytest.approx(16 * r.tokens_per_s[0])
    assert r.doubling_factors == pytest.approx([1, 1, 1, 1, 2, 2, 2])
    # still flat at the largest batch: the sweep did not reach the compute-bound regime, and says so
    flat = part4.batch_regimes([1, 2, 4, 8], [1.0, 1.0, 1.1, 1.2])
    assert flat.near_free_until == 8 and flat.compute_bound_from is None
    # growing but never in proportion (the tail's doublings cost 1.3x): not compute-bound either
    slow = part4.batch_regimes([1, 2, 4, 8, 16], [1.0, 1.0, 1.3, 1.69, 2.2])
    assert slow.near_free_until == 2 and slow.compute_bound_from is None
    # a noisy middle point that doubles does not count: only a tail that keeps growing in proportion does
    noisy = part4.batch_regimes([1, 2, 4, 8, 16, 32], [1.0, 1.0, 2.0, 2.0, 4.0, 8.0])
    assert noisy.near_free_until == 2 and noisy.compute_bound_from == 8
    # the first extra sequence already costs: nothing is nearly free
    assert part4.batch_regimes([1, 2, 4], [1.0, 2.0, 4.0]).near_free_until == 1


def test_batch_regimes_say_what_the_sweep_shows():
    batches = [1, 2, 4, 8, 16, 32, 64, 128]
    words = " ".join(part4.batch_regimes(batches, [max(1.0, b / 16) for b in batches]).sentences(16, 8.0))
    assert "Up to batch 16" in words and "16.0x the tokens/s" in words and "From batch 16 on" in words
    assert "did not reach" not in words and "predicts the change at batch 16" in words and "earlier" not in words
    flat = " ".join(part4.batch_regimes([1, 2, 4, 8], [1.0, 1.0, 1.1, 1.2]).sentences(21))
    assert "did not reach the compute-bound regime" in flat and "From batch" not in flat
    early = " ".join(part4.batch_regimes([1, 2, 4, 8], [1.0, 1.6, 3.0, 6.0]).sentences(21, 10.0))
    assert "Already batch 2" in early and "left its plateau earlier" in early and "From batch 2 on" in early
    last = part4.batch_regimes([1, 2, 4, 8], [1.0, 1.0, 1.1, 2.0]).sentences()
    assert len(last) == 2 and "doubling the batch to 8 made the step 1.82x longer" in last[1]


def test_roof_at_least_only_raises():
    roof = roofline.Roof("toy", 100e9, 10e9)
    assert roof.at_least(peak_flops=50e9) == roof
    higher = roof.at_least(peak_flops=120e9, bandwidth=12e9)
    assert higher.peak_flops == 120e9 and higher.bandwidth == 12e9 and higher.name == "toy"
    assert roof.at_least(bandwidth=11e9).peak_flops == 100e9
    with pytest.raises(ValueError, match="bandwidth must be a finite number >= 0"):
        roof.at_least(bandwidth=-1)


def test_memory_level_of_an_operation():
    dram = 10e9
    assert machine.memory_level(1e9, 5e9, dram, cache_bytes=32 * 2 ** 20) == "DRAM"  # too big, DRAM speed
    assert machine.memory_level(8e6, 5e9, dram, cache_bytes=32 * 2 ** 20) == "L3"    # fits in the cache
    assert machine.memory_level(1e9, 15e9, dram) == "L3"   # faster than DRAM can deliver: only a cache can
    assert machine.memory_level(1e9, 5e9, dram) == "DRAM"  # no cache size known, DRAM speed
    with pytest.raises(ValueError, match="bytes_per_s must be a positive"):
        machine.memory_level(1e9, 0, dram)


@pytest.mark.parametrize("call, error, match", [
    (lambda: roofline.hardware_roof("tpu-v9"), ValueError, "unknown hardware preset 'tpu-v9'; known: a100, h100"),
    (lambda: roofline.hardware_roof(100), TypeError, "hardware name must be a str"),
    (lambda: roofline.hardware_roof("laptop-m2", "tf32"), ValueError, "no published peak for tf32"),
    (lambda: roofline.decode_count(MAIN, 0, 16), ValueError, "batch_size must be >= 1, got 0"),
    (lambda: roofline.decode_count(MAIN, 2.5, 16), TypeError, "batch_size must be an int"),
    (lambda: roofline.decode_count(MAIN, 1, -3), ValueError, "n_context must be >= 1"),
    (lambda: roofline.linear_count(-1, 8, 8), ValueError, "m must be >= 1"),
    (lambda: roofline.attention_count(8, 4, 16, 1, 0), ValueError, "n_context must be >= 1"),
    (lambda: roofline.Roof("x", 0, 1e9), ValueError, "peak_flops must be a positive"),
    (lambda: roofline.Roof("x", 1e9, -5), ValueError, "bandwidth must be a positive"),
    (lambda: roofline.Roof("x", 1e9, 1e9).attainable(0), ValueError, "intensity must be a positive"),
    (lambda: roofline.mbu(1e9, 0, 1e9), ValueError, "seconds must be a positive"),
    (lambda: roofline.mfu(-1, 1, 1e9), ValueError, "flops must be a positive"),
    (lambda: roofline.critical_batch(MAIN, 16, "h100"), TypeError, "roof must be a Roof"),
    (lambda: machine.read_bandwidth(-1024), ValueError, "nbytes must be >= 1"),
    (lambda: machine.copy_bandwidth(0), ValueError, "nbytes must be >= 1"),
    (lambda: machine.bandwidth_sweep([]), ValueError, "sizes must be a non-empty list"),
    (lambda: machine.bandwidth_sweep([4096, -1]), ValueError, "sizes must be >= 1"),
    (lambda: machine.matmul_peak(0), ValueError, "n must be >= 1"),
    (lambda: random_weights.random_model("gpt2"), TypeError, "config must be a ModelConfig"),
    (lambda: part4.batch_regimes([1, 2], [1.0, 1.0]), ValueError, "at least 3"),
    (lambda: part4.batch_regimes([1, 4, 2], [1.0, 1.0, 1.0]), ValueError, "batch_sizes must grow"),
    (lambda: part4.batch_regimes([1, 2, 4], [1.0, 0.0, 1.0]), ValueError, "step_seconds must be a positive"),
    (lambda: part4.batch_regimes([1, 2, 4], [1.0, 1.0, 1.0], slope=1.5), ValueError, "slope must be in"),
    (lambda: machine.bandwidth_sweep([4096], threads=0), ValueError, "threads must be >= 1"),
    (lambda: machine.cache_bandwidth(threads=0), ValueError, "threads must be >= 1"),
    (lambda: machine.cache_bandwidth(min_time_s=-1), ValueError, "min_time_s must be a number of seconds"),
    (lambda: decode_step.time_decode_batches(random_weights.random_model(MAIN), []), ValueError, "non-empty list"),
])
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- measured roofs (sanity only) -----------------------------------------------------------------------

def test_measured_roofs_are_positive_and_ordered():
    read = machine.read_bandwidth(8 * 2 ** 20, warmup=1, repeats=3)
    copy = machine.copy_bandwidth(8 * 2 ** 20, warmup=1, repeats=3)
    assert read.bytes_per_s > 0 and copy.bytes_per_s > 0 and copy.moved_bytes == 2 * copy.nbytes
    peak = machine.matmul_peak(256, warmup=1, repeats=2, min_time_s=0.0)
    assert peak.flops_per_s > 0 and peak.timing.threads == torch.get_num_threads()
    tiny, small, large = machine.bandwidth_sweep([16 * 1024, 256 * 1024, 64 * 2 ** 20], min_time_s=0.0, repeats=3)
    # a small set is read many times per timed call, so the call's fixed cost does not hide the cache
    assert tiny.moved_bytes >= machine.READ_PER_CALL and small.moved_bytes >= machine.READ_PER_CALL
    # best sample of each, a wide margin: a working set in the core's cache is not read slower than DRAM
    best = [b.best_bytes_per_s for b in (tiny, small, large)]
    assert best[0] >= 0.5 * best[2] and best[1] >= 0.5 * best[2]
    assert all(b.best_bytes_per_s >= b.bytes_per_s for b in (read, copy, tiny))
    assert peak.best_flops_per_s >= peak.flops_per_s
    l3 = machine.cache_bandwidth(repeats=2, min_time_s=0.0)
    assert l3.best_bytes_per_s > 0 and l3.moved_bytes >= l3.nbytes
    if "L3" in machine.cache_sizes():
        assert l3.nbytes <= machine.cache_sizes()["L3"] // 2 + 4096


def test_cache_sizes_are_bytes():
    sizes = machine.cache_sizes()
    assert all(isinstance(v, int) and v > 0 for v in sizes.values())


def test_random_model_is_a_gpt_with_tied_weights_and_rope():
    fast = random_weights.random_model(MAIN, seed=1)
    slow = il.GPT(MAIN)
    slow.load_state_dict(fast.state_dict())
    assert fast.lm_head.weight is fast.tok_emb.weight
    assert fast.weight_bytes() == il.measure.counting.param_bytes(MAIN, torch.float32)
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        assert torch.equal(fast(x), slow(x))
    assert fast.tok_emb.weight.std() > 0.01  # random, not constant
    half = random_weights.random_model(MAIN, torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.rope_cos.dtype == torch.bfloat16


def test_decode_stepper_replays_the_same_step():
    model = random_weights.random_model(MAIN)
    step = decode_step.decode_stepper(model, batch_size=2, n_context=10)
    cache = step.cache
    before = (cache.length, cache.k[:, :, :, :9].clone(), cache.v[:, :, :, :9].clone(), cache.valid.clone())
    a, b = step(), step()
    assert a.shape == (2, 1, MAIN.vocab_size) and torch.equal(a, b)
    # the rewind (the cache's own truncate) leaves the cache exactly as before: length, keys, values, slots
    step.cache.truncate(9)
    assert cache.length == before[0] == 9
    assert torch.equal(cache.k[:, :, :, :9], before[1]) and torch.equal(cache.v[:, :, :, :9], before[2])
    assert torch.equal(cache.valid, before[3])
    # the step sees the 9 cached tokens: the same new token over an empty cache gives other logits
    assert not torch.allclose(decode_step.decode_stepper(model, batch_size=2, n_context=1)(), a)
    m = decode_step.time_decode_step(model, batch_size=2, n_context=10, warmup=0, repeats=2)
    assert m.count == roofline.decode_count(MAIN, 2, 10) and m.tokens_per_s > 0 and m.bytes_per_s > 0
    with pytest.raises(ValueError, match="n_context must be <= max_seq_len=512"):
        decode_step.decode_stepper(model, 1, 600)


def test_time_decode_batches_alternates_and_counts():
    model = random_weights.random_model(MAIN)
    seen = []
    runs = decode_step.time_decode_batches(model, [1, 2, 4], n_context=8, repeats=2, warmup=0,
                                         progress=lambda rounds, **kw: (seen.append(kw), rounds)[1])
    assert [r.batch_size for r in runs] == [1, 2, 4] and seen and "desc" in seen[0]
    assert all(r.timing.repeats == 2 and r.count == roofline.decode_count(MAIN, r.batch_size, 8) for r in runs)


# --- timing ---------------------------------------------------------------------------------------------

def test_measure_statistics_on_a_known_sleep():
    t = measure(lambda: time.sleep(0.01), warmup=1, repeats=5)
    assert t.repeats == 5 and len(t.samples_s) == 5
    assert 0.01 <= t.min_s <= t.median_s < 1.0  # a sanity check of the clock, not a performance assert
    assert t.iqr_s >= 0 and t.threads == torch.get_num_threads()


def test_num_threads_restores_and_first_calls_counts():
    before = torch.get_num_threads()
    with num_threads(1):
        assert torch.get_num_threads() == 1
        assert measure(lambda: None, repeats=2).threads == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        with num_threads(0):
            pass
    times = first_calls(lambda: None, calls=4)
    assert len(times) == 4 and all(s >= 0 for s in times)
    with pytest.raises(ValueError, match="calls must be an int >= 1"):
        first_calls(lambda: None, calls=0)


# --- the queue ------------------------------------------------------------------------------------------

def test_one_at_a_time_queue_by_hand():
    res = part4.simulate([0.0, 0.1, 0.2], service_time=1.0)
    assert res.start_s == [0.0, 1.0, 2.0] and res.finish_s == [1.0, 2.0, 3.0]
    assert res.latency_s == pytest.approx([1.0, 1.9, 2.8])  # the third waits 1.8 s for 1 s of work
    assert res.wait_s == pytest.approx([0.0, 0.9, 1.8]) and res.batches == [1, 1, 1]
    assert res.busy_fraction == pytest.approx(1.0) and res.percentile(50) == pytest.approx(1.9)


def test_batching_server_by_hand():
    # the first request is alone; the next two wait and are served together in 1.5 s
    res = part4.simulate([0.0, 0.1, 0.2], service_time={1: 1.0, 2: 1.5}, max_batch=2)
    assert res.finish_s == [1.0, 2.5, 2.5] and res.batches == [1, 2, 2]
    assert part4.simulate([0, 0, 0], lambda b: 0.5 * b, max_batch=8).finish_s == [1.5, 1.5, 1.5]


def test_poisson_arrivals_are_seeded_and_match_md1():
    a = poisson_arrivals(5000, 2.0, seed=3)
    assert a == poisson_arrivals(5000, 2.0, seed=3) and a != poisson_arrivals(5000, 2.0, seed=4)
    assert a[-1] / len(a) == pytest.approx(0.5, rel=0.05)  # mean gap = 1 / rate
    sim = part4.simulate(a, 0.35).mean_latency_s  # rho = 0.7
    assert sim == pytest.approx(part4.md1_latency(2.0, 0.35), rel=0.1)
    assert part4.md1_latency(1.6, 0.5) == pytest.approx(1.5) and part4.md1_latency(3, 0.5) == math.inf
    rows = part4.latency_sweep([0.5, 1.0, 1.5], 0.5, n_requests=500)
    assert [r["utilisation"] for r in rows] == [0.25, 0.5, 0.75]
    assert rows[0]["mean_s"] < rows[1]["mean_s"] < rows[2]["mean_s"]


@pytest.mark.parametrize("call, error, match", [
    (lambda: poisson_arrivals(10, 0), ValueError, "rate must be a positive finite number"),
    (lambda: poisson_arrivals(10, "fast"), TypeError, "rate must be a number"),
    (lambda: poisson_arrivals(0, 1.0), ValueError, "num_requests must be >= 1"),
    (lambda: part4.simulate([], 1.0), ValueError, "arrival_s must be a non-empty"),
    (lambda: part4.simulate([1.0, 0.5], 1.0), ValueError, "arrival_s must be sorted"),
    (lambda: part4.simulate([0.0], -1.0), ValueError, "service_time must give a positive"),
    (lambda: part4.simulate([0.0], 1.0, max_batch=0), ValueError, "max_batch must be a positive int"),
    (lambda: part4.simulate([0, 0, 0], {1: 1.0, 2: 1.0}, max_batch=3), ValueError, "no entry for a batch of 3"),
    (lambda: part4.md1_latency(1.0, 0), ValueError, "service_s must be a positive finite number"),
])
def test_queue_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_cpu_profile_records_operators_and_restores_stderr():
    import os
    before = os.fstat(2)
    with profiler.cpu_profile() as prof:
        torch.ones(4) @ torch.ones(4)
    assert any(e.key.startswith("aten::") for e in prof.key_averages())
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)  # stderr is stderr again
