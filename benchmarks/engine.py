"""The engine against static batching and one request at a time, measured as the vLLM paper measures.

    python benchmarks/engine.py            # 64 requests, 3 rounds, 6 arrival rates (a few minutes on 2 cores)
    python benchmarks/engine.py --quick    # 32 requests, 1 round, 5 rates

Method (Kwon et al., "Efficient Memory Management for Large Language Model Serving with PagedAttention",
SOSP 2023, https://arxiv.org/abs/2309.06180, section 6):

* Equal KV-cache memory. All three ways get the same bytes for keys and values. Static batching keeps one
  contiguous cache per batch that reserves, for every row, the batch's longest prompt plus its longest
  allowed output, and takes requests in arrival order while they fit; one at a time reserves prompt +
  max_tokens per request; the engine's paged pool holds the same bytes. Each request's max_tokens is
  its true output length, so static batching reserves exactly the longest answer of its batch: the most
  favourable case for it (the paper's "Oracle" variant of Orca). Workload: prompts of 16-256 tokens cut
  from the bundled corpus, output lengths long-tailed (lognormal, median 64 tokens, 4-256), greedy, all
  arriving at once. Reported: throughput ratios at two memory sizes (median over rounds that
  alternate the ways, with the quartiles), and KV memory waste (reserved slots holding no token, averaged
  over time) for each way.
* Latency against request rate. Poisson arrivals at rates from light load to past saturation, as
  multiples of what one-at-a-time serving sustains (its requests per second in the burst run), so the
  sweep means the same on any machine. Per way and rate: throughput, p50/p99 TTFT, mean TPOT and the
  paper's normalised latency (end-to-end seconds per output token, averaged over requests); then the
  highest rate each way sustains with p99 TTFT under a stated limit.
* Prefix caching: every prompt opens with the same text (80% of its tokens), a burst; mean TTFT with the
  cache off / on.

Where our setting differs from the paper: a 3.5M-parameter model on a CPU instead of 13B-175B models on
A100 GPUs, synthetic prompts and lengths instead of ShareGPT/Alpaca traces, a static-batching baseline
built on our own ``generate_batch`` (the paper's are FasterTransformer and Orca), and a paged cache
gathered in plain PyTorch instead of read in place by a kernel.

The results are printed last as ``name: value`` lines.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too
import inferlab as il  # noqa: E402
from inferlab.engine.baselines import one_at_a_time, static_batching  # noqa: E402
from inferlab.engine.paged_cache import KVPool  # noqa: E402
from inferlab.engine.serving import (chat_workload, rate_sweep, serve, serve_in_turn, serving_stats,
                                     sustained_rate)  # noqa: E402
from inferlab.measure.timing import cpu_model, ratio_of  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="32 requests, 1 round, 5 rates")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds per comparison (default 3)")
    ap.add_argument("--memory-mib", type=float, nargs=2, default=(8.0, 32.0),
                    help="the two KV-cache budgets, MiB (default 8 and 32)")
    ap.add_argument("--ttft-limit", type=float, default=10.0,
                    help="p99 TTFT limit for 'sustained', in multiples of one request's time served alone (default 10)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.requests or (32 if args.quick else 64)
    rounds = args.rounds or (1 if args.quick else 3)
    device = torch.device(args.device)
    model, tok = il.load_pretrained(device=device)
    where = torch.cuda.get_device_name() if device.type == "cuda" else cpu_model()
    print(f"machine: {where}; {os.cpu_count()} logical CPUs; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; device {device}")
    prompts, params = chat_workload(tok, n, seed=0)
    outs = [p.max_tokens for p in params]
    print(f"workload: {n} requests, prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens (mean "
          f"{sum(map(len, prompts)) / n:.0f}), outputs {min(outs)}-{max(outs)} tokens (median {sorted(outs)[n // 2]}, "
          f"mean {sum(outs) / n:.0f}), greedy", flush=True)
    per_token = KVPool.bytes_per_block(model.config, 1, model.dtype)
    serve(il.Engine(model, tok), prompts[:4], params[:4])   # warm-up: first calls allocate memory
    results = {}

    def ways(budget, arrivals=None):
        return {"engine": lambda: serve(il.Engine(model, tok, kv_cache_memory_bytes=budget), prompts, params, arrivals),
                "static": lambda: static_batching(model, tok, prompts, params, arrivals, kv_cache_memory_bytes=budget),
                "one": lambda: one_at_a_time(model, tok, prompts, params, arrivals, kv_cache_memory_bytes=budget)}

    # 1. equal KV memory, all requests at once
    for mib in args.memory_mib:
        budget = int(mib * 2**20)
        runs = serve_in_turn(ways(budget), rounds)
        for label, rs in runs.items():
            assert [o.outputs[0].token_ids for o in rs[0].outputs] == [o.outputs[0].token_ids for o in runs["engine"][0].outputs], \
                f"{label} produced different tokens from the engine"
        stats = {label: [serving_stats(r) for r in rs] for label, rs in runs.items()}
        typical = {label: sorted(s, key=lambda x: x.throughput)[len(s) // 2] for label, s in stats.items()}
        tag = f"{mib:g}mib"
        print(f"\nKV cache {mib:g} MiB = {budget // per_token} token slots; same greedy tokens on all three ways: True")
        for label, s in typical.items():
            print(f"  {label:7s} {s.throughput:7.0f} tokens/s  p50 TTFT {s.ttft_p50_s:6.2f} s  KV reserved "
                  f"{s.kv_reserved_share:4.0%} of the budget, of it holding no token {s.kv_waste:4.0%}"
                  + (f", {s.num_preemptions} preemptions" if label == "engine" else ""))
        for other in ("static", "one"):
            r = ratio_of([a.throughput / b.throughput for a, b in zip(stats["engine"], stats[other])])
            results[f"throughput_engine_vs_{other}_{tag}"] = r
            print(f"  engine / {other}: {r}")
        for label, s in typical.items():
            results[f"kv_waste_{label}_{tag}"] = s.kv_waste
        one_rate = typical["one"].request_rate
        service_s = typical["one"].wall_s / n

    # 2. latency against request rate (the larger budget)
    budget = int(args.memory_mib[1] * 2**20)
    limit = args.ttft_limit * service_s
    multiples = [0.5, 1, 2, 4, 8] + ([] if args.quick else [16])
    print(f"\nPoisson arrivals, KV cache {args.memory_mib[1]:g} MiB; rates as multiples of one-at-a-time's "
          f"{one_rate:.1f} requests/s; p99 TTFT limit {limit:.2f} s ({args.ttft_limit:g} x {service_s:.3f} s, "
          f"one request served alone)")
    print(f"  {'rate/s':>7s} {'way':7s} {'tokens/s':>8s} {'p50 TTFT':>8s} {'p99 TTFT':>8s} {'TPOT ms':>8s} {'s/token':>8s}")
    rates = [m * one_rate for m in multiples]
    sweep = rate_sweep({label: (lambda arrivals, label=label: ways(budget, arrivals)[label]())
                        for label in ("engine", "static", "one")}, rates, num_requests=n)
    for i, (m, rate) in enumerate(zip(multiples, sweep["rates"])):
        for label, per_rate in sweep["stats"].items():
            s = per_rate[i]
            print(f"  {rate:7.1f} {label:7s} {s.throughput:8.0f} {s.ttft_p50_s:8.2f} {s.ttft_p99_s:8.2f} "
                  f"{s.tpot_mean_s * 1e3:8.1f} {s.normalized_latency_s:8.3f}")
            results[f"normalized_latency_{label}_rate{m:g}x"] = s.normalized_latency_s
    sustained = {label: sustained_rate(sweep, label, limit) for label in sweep["stats"]}

    # 3. prefix caching
    sp_prompts, sp_params = chat_workload(tok, n, seed=2, shared_prefix_frac=0.8)
    runs = serve_in_turn({p: (lambda p=p: serve(il.Engine(model, tok, enable_prefix_caching=p), sp_prompts, sp_params))
                          for p in (False, True)}, rounds)
    off, on = ([serving_stats(r) for r in runs[k]] for k in (False, True))
    same = [o.outputs[0].token_ids for o in runs[True][0].outputs] == [o.outputs[0].token_ids for o in runs[False][0].outputs]
    ttft = ratio_of([a.ttft_p50_s / b.ttft_p50_s for a, b in zip(off, on)])
    mean_ttft = ratio_of([sum(o.metrics.ttft for o in a.outputs) / sum(o.metrics.ttft for o in b.outputs)
                          for a, b in zip(runs[False], runs[True])])
    print(f"\nprefix caching (80% shared prefix, burst of {n}): same tokens {same}; hit rate "
          f"{on[0].prefix_hit_rate:.0%}; mean TTFT off / on {mean_ttft}, p50 {ttft}")

    print()
    print(f"machine: {where}")
    for name, value in results.items():
        print(f"{name}: {value.median:.2f}" if hasattr(value, "median") else f"{name}: {value:.3f}")
    for label, rate in sustained.items():
        print(f"sustained_rate_{label}_per_s: {rate:.2f}")
    print(f"sustained_rate_engine_vs_static: {sustained['engine'] / sustained['static'] if sustained['static'] else float('inf'):.2f}")
    print(f"prefix_cache_hit_rate: {on[0].prefix_hit_rate:.3f}")
    print(f"ttft_speedup_prefix_caching: {mean_ttft.median:.2f}")


if __name__ == "__main__":
    main()
