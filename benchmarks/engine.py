"""The engine against one request at a time and against static batching, same model (notebook 06).

    python benchmarks/engine.py            # 64 requests: prompts of 16-256 tokens, outputs of 16-128
    python benchmarks/engine.py --quick    # 24 requests, well under a minute

Workload: a fixed seeded mix of prompts cut from the bundled corpus, greedy, all arriving at once.
Three ways to serve it with the bundled main model:

* one at a time: ``il.generate`` per request, in order;
* static batching: batches of ``--max-num-seqs`` through ``il.generate_batch``; a batch starts when the
  previous one is done and decodes until its longest member is done;
* the engine: ``il.Engine`` with the same ``max_num_seqs``, continuous batching over the paged cache, with
  its default token budget per step (512) and again with a larger one (``--throughput-budget``, 2048): a
  bigger budget finishes prompts in fewer, larger passes, for throughput, while a small one keeps decoding
  requests' steps short, for latency (vLLM's tuning guide says the same of its ``max_num_batched_tokens``).

All three must produce the same tokens (checked). Then the prefix cache: every prompt opens with the
same text (80% of its tokens), a burst of requests all admitted at once (``max_num_seqs`` = requests),
engine with and without prefix caching, mean time to first token.

Each method runs ``--rounds`` times, alternating, and the fastest run of each is kept: on a shared
machine other work only ever slows a run down.

Last, where the engine's steps cost more: one decode step of ``max_num_seqs`` rows through the paged cache
against the same step through a contiguous ``KVCache``, timed in alternation (``decode_step_paged_vs_contiguous``,
the median of the paired ratios).

Throughput = generated tokens / wall time of the whole run. TTFT counts queueing from the moment all
requests arrive. The results are printed last as ``name: value`` lines. Aims (not asserted): engine
>= 4x one at a time, >= 1.5x static batching; prefix caching cuts mean TTFT >= 3x.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too
import inferlab as il  # noqa: E402
from inferlab.timing import cpu_model  # noqa: E402
from inferlab.engine.baselines import decode_step_pair, mixed_workload, one_at_a_time, static_batching  # noqa: E402
from inferlab.engine.engine import DEFAULT_BLOCK_SIZE  # noqa: E402
from inferlab.timing import compare, paired_ratio  # noqa: E402


def decode_step_costs(model, contexts, block_size=DEFAULT_BLOCK_SIZE, repeats=30):
    """(paged ms, contiguous ms, paired ratio): one decode step of ``len(contexts)`` rows through the engine's
    paged cache and through a contiguous ``KVCache``, both padded to the longest context
    (``decode_step_pair``), timed in alternation. The gap is what gathering blocks costs without a kernel that
    reads them in place."""
    fns = decode_step_pair(model, contexts, block_size)
    t = compare(fns, repeats=repeats, warmup=3, device=model.device)
    paged, contiguous = t["paged cache"], t["contiguous cache"]
    return paged.median_s * 1e3, contiguous.median_s * 1e3, paired_ratio(paged, contiguous)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="24 requests instead of 64")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--max-num-seqs", type=int, default=32, help="engine seats = static batch size (default 32)")
    ap.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, help="tokens per KV block (default "
                    f"{DEFAULT_BLOCK_SIZE}, the Engine's own default)")
    ap.add_argument("--max-num-batched-tokens", type=int, default=512, help="the engine's token budget per step "
                    "(default 512, the Engine's own default)")
    ap.add_argument("--throughput-budget", type=int, default=2048, help="a second, larger budget the engine also "
                    "runs with, as offline throughput settings do (default 2048; 0 to skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--rounds", type=int, default=None, help="runs of each method, best kept (default 3, --quick 1)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.requests or (24 if args.quick else 64)
    args.rounds = args.rounds or (1 if args.quick else 3)
    device = torch.device(args.device)
    model, tok = il.load_pretrained(device=device)
    where = torch.cuda.get_device_name() if device.type == "cuda" else cpu_model()
    print(f"machine: {where}; {os.cpu_count()} logical CPUs; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; device {device}")
    prompts, params = mixed_workload(tok, n, prompt_len=(16, 256), output_len=(16, 128), seed=0)
    print(f"workload: {n} requests, prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens "
          f"(mean {sum(map(len, prompts)) / n:.0f}), outputs {min(p.max_tokens for p in params)}-"
          f"{max(p.max_tokens for p in params)} (mean {sum(p.max_tokens for p in params) / n:.0f}), greedy; "
          f"max_num_seqs = static batch size = {args.max_num_seqs}; KV blocks of {args.block_size} tokens", flush=True)

    def make_engine(prefix=True, seats=args.max_num_seqs, budget=args.max_num_batched_tokens):
        return il.Engine(model, tok, block_size=args.block_size, max_num_seqs=seats, max_num_batched_tokens=budget,
                         enable_prefix_caching=prefix)

    make_engine().generate(prompts[:4], params[:4])       # warm-up (first calls allocate memory)
    il.generate(model, tok, prompts[0], max_new_tokens=4)

    def best(a, b):  # the faster of two runs of the same thing: a shared machine only ever slows a run down
        return b if a is None or b[1].wall_s < a[1].wall_s else a

    # prefix caching: 80% of every prompt is one shared opening (a system prompt); a burst of requests, every
    # one admitted at once, so time to first token is the time to work through the queue of prefills
    sp_prompts, sp_params = mixed_workload(tok, n, prompt_len=(16, 256), output_len=(16, 128), seed=1,
                                           shared_prefix_frac=0.8)
    res = {k: None for k in ("engine", "engine_large", "static", "one", False, True)}
    for r in range(args.rounds):   # rounds alternate the methods, so a burst of load hits them alike
        engine = make_engine()
        res["engine"] = best(res["engine"], (engine.generate(prompts, params), engine.last_stats))
        if args.throughput_budget:
            engine = make_engine(budget=args.throughput_budget)
            res["engine_large"] = best(res["engine_large"], (engine.generate(prompts, params), engine.last_stats))
        res["static"] = best(res["static"], static_batching(model, tok, prompts, params, batch_size=args.max_num_seqs))
        res["one"] = best(res["one"], one_at_a_time(model, tok, prompts, params))
        for prefix in (False, True):
            e = make_engine(prefix, seats=n)
            res[prefix] = best(res[prefix], (e.generate(sp_prompts, sp_params), e.last_stats))
        print(f"round {r + 1}/{args.rounds}: engine {res['engine'][1].wall_s:.2f} s, "
              f"static {res['static'][1].wall_s:.2f} s, "
              f"one at a time {res['one'][1].wall_s:.2f} s (best so far)", flush=True)
    (eng_out, eng), (st_out, st), (one_out, one) = res["engine"], res["static"], res["one"]
    print(f"engine          {eng}")
    print(f"static batching {st.generated_tokens} tokens in {st.wall_s:.2f} s = {st.throughput:.0f} tokens/s; "
          f"mean TTFT {st.mean_ttft_s * 1e3:.0f} ms, end-to-end {st.mean_e2e_s * 1e3:.0f} ms")
    print(f"one at a time   {one.generated_tokens} tokens in {one.wall_s:.2f} s = {one.throughput:.0f} tokens/s; "
          f"mean TTFT {one.mean_ttft_s * 1e3:.0f} ms, end-to-end {one.mean_e2e_s * 1e3:.0f} ms")
    same = all(a.tokens == b.tokens == c.tokens for a, b, c in zip(eng_out, st_out, one_out))
    if args.throughput_budget:
        large_out, large = res["engine_large"]
        print(f"engine, budget {args.throughput_budget} {large}")
        same = same and all(a.tokens == b.tokens for a, b in zip(large_out, eng_out))
    print(f"same greedy tokens on all three paths: {same}")
    runs = {k: (res[k][1], [o.tokens for o in res[k][0]]) for k in (False, True)}
    for prefix in (False, True):
        print(f"prefix caching {'on ' if prefix else 'off'} {runs[prefix][0]}")
    print(f"same greedy tokens with and without prefix caching: {runs[True][1] == runs[False][1]}")

    contexts = [len(p) + sp.max_tokens // 2 for p, sp in zip(prompts, params)][:args.max_num_seqs]
    paged_ms, contiguous_ms, step_ratio = decode_step_costs(model, contexts, args.block_size)
    print(f"one decode step of {len(contexts)} rows at contexts {min(contexts)}-{max(contexts)}: paged cache "
          f"{paged_ms:.2f} ms, contiguous cache {contiguous_ms:.2f} ms; paged / contiguous {step_ratio}")

    print(f"engine_tokens_per_s: {eng.throughput:.1f}")
    print(f"static_batching_tokens_per_s: {st.throughput:.1f}")
    print(f"one_at_a_time_tokens_per_s: {one.throughput:.1f}")
    print(f"throughput_engine_vs_one_at_a_time: {eng.throughput / one.throughput:.2f}")
    print(f"throughput_engine_vs_static_batching: {eng.throughput / st.throughput:.2f}")
    if args.throughput_budget:
        b = args.throughput_budget
        print(f"engine_budget{b}_tokens_per_s: {large.throughput:.1f}")
        print(f"throughput_engine_budget{b}_vs_one_at_a_time: {large.throughput / one.throughput:.2f}")
        print(f"throughput_engine_budget{b}_vs_static_batching: {large.throughput / st.throughput:.2f}")
    print(f"mean_ttft_engine_s: {eng.mean_ttft_s:.3f}")
    print(f"mean_ttft_static_batching_s: {st.mean_ttft_s:.3f}")
    print(f"mean_ttft_one_at_a_time_s: {one.mean_ttft_s:.3f}")
    print(f"mean_ttft_no_prefix_cache_s: {runs[False][0].mean_ttft_s:.3f}")
    print(f"mean_ttft_prefix_cache_s: {runs[True][0].mean_ttft_s:.3f}")
    print(f"prefix_cache_hit_rate: {runs[True][0].prefix_hit_rate:.3f}")
    print(f"ttft_speedup_prefix_caching: {runs[False][0].mean_ttft_s / runs[True][0].mean_ttft_s:.2f}")
    print(f"decode_step_paged_vs_contiguous: {step_ratio.median:.2f}")


if __name__ == "__main__":
    main()
