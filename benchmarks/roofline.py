"""This machine's roofs and how close decoding a large model gets to them (notebook 04).

    python benchmarks/roofline.py                       # gpt2-large shape, float32 (3.1 GB of weights)
    python benchmarks/roofline.py --model qwen2.5-0.5b  # 2.0 GB
    python benchmarks/roofline.py --threads 1

Measures, side by side in one run and on the same threads: read bandwidth (sum of a 1 GiB tensor, far
larger than the last-level cache), copy bandwidth (read + write counted, as STREAM does), the last-level
cache's read bandwidth (a working set that fits in the L3, read repeatedly), peak matmul
FLOP/s (2048 x 2048, float32 and bfloat16), and one decode step at batch 1 of a real-shape model with random
weights (a single forward of one token with a 16-token KV cache). MBU = bytes the step must read (every
weight once, plus the cache) / step time / read bandwidth, measured in alternating rounds (the median
ratio), so that both see the same machine when other programs come and go.

Reference: gpt-fast's README reports Llama-2-7B (bfloat16, batch 1) decoding at 1,397 GB/s on an A100-80GB
limited to 330 W, about two thirds of the datasheet's 2,039 GB/s. Each result is printed last as a
``name: value`` line.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too
import inferlab as il  # noqa: E402
from inferlab.measure import decode_step, machine, random_weights, roofline  # noqa: E402
from inferlab.measure.timing import cpu_model  # noqa: E402
from inferlab.measure.timing import measure  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gpt2-large", help="a name in il.MODEL_CONFIGS (default gpt2-large)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per roof measurement")
    ap.add_argument("--rounds", type=int, default=7, help="rounds of (decode step, read bandwidth)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"machine: {cpu_model()}; {os.cpu_count()} logical CPUs; torch {torch.__version__} with {threads} threads")
    print(f"caches: {machine.cache_sizes()}", flush=True)

    read = machine.read_bandwidth(2 ** 30, repeats=args.repeats)
    copy = machine.copy_bandwidth(2 ** 29, repeats=args.repeats)
    print(f"read 1 GiB:   {read.timing}  -> {read.bytes_per_s / 1e9:.2f} GB/s")
    print(f"copy 512 MiB: {copy.timing}  -> {copy.bytes_per_s / 1e9:.2f} GB/s (read + write)", flush=True)
    l3 = machine.cache_bandwidth(repeats=args.repeats)
    print(f"read {l3.nbytes / 2 ** 20:.0f} MiB repeatedly (fits in the L3): {l3.timing}  -> "
          f"{l3.bytes_per_s / 1e9:.2f} GB/s, best {l3.best_bytes_per_s / 1e9:.2f} GB/s", flush=True)
    fp32 = machine.matmul_peak(2048, torch.float32, repeats=args.repeats)
    print(f"matmul 2048^3 float32:  {fp32.timing}  -> {fp32.flops_per_s / 1e9:.1f} GFLOP/s", flush=True)
    bf16 = machine.matmul_peak(2048, torch.bfloat16, repeats=args.repeats)
    print(f"matmul 2048^3 bfloat16: {bf16.timing}  -> {bf16.flops_per_s / 1e9:.1f} GFLOP/s "
          f"({'native' if machine.has_bf16_matmul() else 'no native bf16 on this CPU'})", flush=True)

    config = il.get_config(args.model)
    model = random_weights.random_model(config, torch.float32)
    print(f"{config.name}: {model.weight_bytes() / 1e9:.2f} GB of float32 weights (random)", flush=True)
    # Rounds that alternate the decode step and the read bandwidth, so both see the same machine (other
    # programs come and go); MBU is the median over rounds of (decode GB/s / read GB/s of the same round).
    stepper = decode_step.decode_stepper(model, batch_size=1, n_context=16)
    count = roofline.decode_count(config, 1, 16, model.dtype)
    measure(stepper, warmup=2, repeats=1)
    x = torch.full((2 ** 28,), 1.0)  # 1 GiB
    rounds = []
    for _ in range(args.rounds):
        step_s = measure(stepper, warmup=0, repeats=3).median_s
        read_s = measure(x.sum, warmup=1, repeats=3).median_s
        rounds.append((count.bytes / step_s, x.numel() * 4 / read_s))
    del model, stepper, x
    gc.collect()
    decode_bw = statistics.median(r[0] for r in rounds)
    bandwidth = statistics.median(r[1] for r in rounds)
    mbu = statistics.median(r[0] / r[1] for r in rounds)
    for i, (d, r) in enumerate(rounds):
        print(f"round {i}: decode step {count.bytes / d * 1e3:7.1f} ms = {d / 1e9:5.2f} GB/s; read {r / 1e9:5.2f} GB/s; "
              f"ratio {d / r:.2f}")
    print(f"decode step, batch 1: reads {count.bytes / 1e9:.3f} GB (weights + cache), median "
          f"{count.bytes / decode_bw * 1e3:.1f} ms -> {decode_bw / 1e9:.2f} GB/s, {decode_bw / count.bytes:.2f} tokens/s")
    print(f"read bandwidth during the rounds (median): {bandwidth / 1e9:.2f} GB/s")
    print(f"read_bandwidth_gb_s: {read.bytes_per_s / 1e9:.2f}")
    print(f"copy_bandwidth_gb_s: {copy.bytes_per_s / 1e9:.2f}")
    print(f"l3_bandwidth_gb_s: {l3.bytes_per_s / 1e9:.2f}")
    print(f"peak_fp32_gflops: {fp32.flops_per_s / 1e9:.1f}")
    print(f"peak_bf16_gflops: {bf16.flops_per_s / 1e9:.1f}")
    print(f"decode_gb_s_{config.name}: {decode_bw / 1e9:.2f}")
    print(f"decode_mbu_{config.name}: {mbu:.2f}")


if __name__ == "__main__":
    main()
