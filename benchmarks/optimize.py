"""Each optimization of notebook 05 against its baseline: speed ratio, memory ratio, quality.

    python benchmarks/optimize.py             # a few minutes on a laptop CPU
    python benchmarks/optimize.py --quick     # fewer repeats and tokens
    python benchmarks/optimize.py --compile   # also torch.compile (adds a minute or more of compilation)

Baseline: the bundled model in float32, one request at a time, ``eval()`` + ``torch.inference_mode()``.
Speed ratios are baseline time / technique time (higher is faster), measured side by side in this run;
memory ratios are technique bytes / baseline bytes (lower is smaller); quality is the change in held-out
loss (all held-out windows) and the share of greedy tokens equal to the float32 model's.
Speculative decoding runs at fixed draft lengths gamma and with an adaptive one (``min_confidence``); the
fastest setting is then timed once more on its own, since the best of several noisy timings flatters it.
Aims (the issue): speculative decoding >= 1.3x at greedy with the bundled pair; int8 weights >= 3.9x
smaller than float32 with held-out loss < 1% worse. The final ``name: value`` lines are the results.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too
import inferlab as il  # noqa: E402
from inferlab.timing import cpu_model  # noqa: E402
from inferlab.corpus import load_corpus, split_corpus  # noqa: E402
from inferlab.optimize import compile as opt_compile  # noqa: E402
from inferlab.optimize import measure, precision, quantize, speculative  # noqa: E402
from inferlab.optimize.tiled_attention import largest_intermediate_bytes, standard_attention, tiled_attention  # noqa: E402
from inferlab.timing import measure as time_it  # noqa: E402
from inferlab.train import token_tensor  # noqa: E402

PROMPTS = ["The return value of a function is", "import os", "Lists are mutable sequences"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile with a static cache")
    args = ap.parse_args()
    repeats = 5 if args.quick else 20
    n_new = 48 if args.quick else 96
    print(f"machine: {cpu_model()}; {os.cpu_count()} logical CPUs; torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads")
    model, tok = il.load_pretrained()
    draft, _ = il.load_pretrained("draft")
    heldout = token_tensor(tok, split_corpus(load_corpus())[1])
    windows = 16 if args.quick else None
    results = {}

    def quality(m, ref):
        loss = measure.heldout_loss(m, heldout, max_windows=windows)
        agree = [measure.greedy_agreement(ref[p], il.generate(m, tok, p, max_new_tokens=32).tokens)[0] for p in PROMPTS]
        return loss, sum(agree) / len(agree)

    reference = {p: il.generate(model, tok, p, max_new_tokens=32).tokens for p in PROMPTS}
    base_loss = measure.heldout_loss(model, heldout, max_windows=windows)
    base_bytes = quantize.weight_bytes(model)
    base_step = measure.decode_step_time(model, 64, warmup=3, repeats=repeats).median_s
    print(f"baseline: {base_bytes:,} bytes, decode step {base_step * 1e3:.2f} ms, held-out loss {base_loss:.4f}")

    # 1. inference mode
    mode = measure.inference_mode_cost(model, 4, 128, repeats=max(3, repeats // 4))
    print(f"\ninference mode: train-mode forward {mode.train_s * 1e3:.1f} ms, {mode.train_saved_bytes:,} bytes saved for "
          f"backward; inference {mode.inference_s * 1e3:.1f} ms, {mode.inference_saved_bytes:,} bytes")
    results["inference_mode_speed"] = mode.train_s / mode.inference_s
    results["inference_mode_activation_bytes_ratio"] = mode.inference_saved_bytes / mode.train_saved_bytes

    # 2. batching
    points = measure.batching_sweep(model, tok, PROMPTS, (1, 4, 16), max_new_tokens=32, repeats=2)
    print("\nbatching:", ", ".join(f"batch {p.batch_size}: {p.tokens_per_s:.0f} tok/s, latency {p.latency_s * 1e3:.0f} ms"
                                   for p in points))
    for p in points[1:]:
        results[f"batch{p.batch_size}_throughput"] = p.tokens_per_s / points[0].tokens_per_s
        results[f"batch{p.batch_size}_latency"] = p.latency_s / points[0].latency_s

    # 3 + 4. quantization and precision
    print(f"\n{'precision':<9} {'scheme':<18} {'step ms':>8} {'speed':>6} {'memory':>7} {'loss change':>11} {'greedy equal':>12}")
    variants = [("float32", s) for s in quantize.SCHEMES] + [("float32", "int8-dequantize")] + \
               [(p, s) for p in ("bfloat16", "float16") for s in ("none",) + quantize.SCHEMES]
    for prec, scheme in variants:
        m = precision.to_precision(model, prec)
        if scheme != "none":
            m = quantize.quantize_model(m, scheme.split("-")[0], fused="dequantize" not in scheme)
        step = measure.decode_step_time(m, 64, warmup=3, repeats=repeats).median_s
        loss, agree = quality(m, reference)
        ratio = quantize.weight_bytes(m) / base_bytes
        print(f"{prec:<9} {scheme:<18} {step * 1e3:>8.2f} {base_step / step:>5.2f}x {ratio:>6.3f}x "
              f"{100 * (loss - base_loss) / base_loss:>+10.3f}% {agree:>12.0%}")
        key = scheme.replace("-", "_") if prec == "float32" else f"{prec}_{scheme}"
        results[f"{key}_speed"] = base_step / step
        results[f"{key}_memory"] = ratio
        results[f"{key}_loss_change_pct"] = 100 * (loss - base_loss) / base_loss

    # 5. grouped-query attention (one Llama-2-7B-shaped layer, random weights)
    gqa = measure.gqa_sweep(il.MODEL_CONFIGS["llama-2-7b"], (None, 8, 1), n_layer=1,
                            context=1024 if args.quick else 2048, batch_size=8, repeats=3)
    print("\nGQA (llama-2-7b layer, batch 8):", ", ".join(f"{p.n_kv_head} kv heads: cache {p.cache_bytes / 1e6:.0f} MB, "
                                                         f"step {p.step_s * 1e3:.1f} ms" for p in gqa))
    for p in gqa[1:]:
        results[f"kv_heads_{p.n_kv_head}_speed"] = gqa[0].step_s / p.step_s
        results[f"kv_heads_{p.n_kv_head}_cache_memory"] = p.cache_bytes / gqa[0].cache_bytes

    # 6. tiled attention
    T = 2048
    q = k = v = torch.randn(1, 8, T, 64)
    same = torch.allclose(tiled_attention(q, k, v, True, 128, 128), F.scaled_dot_product_attention(q, k, v, is_causal=True),
                          atol=1e-5)
    big_std = largest_intermediate_bytes(standard_attention, q, k, v, True)[0]
    big_tiled = largest_intermediate_bytes(tiled_attention, q, k, v, True, 128, 128)[0]
    t_std = time_it(lambda: standard_attention(q, k, v, True), 1, 3).median_s
    t_tiled = time_it(lambda: tiled_attention(q, k, v, True, 128, 128), 1, 3).median_s
    t_sdpa = time_it(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), 1, 3).median_s
    print(f"\ntiled attention, T={T}, 8 heads: equal to SDPA {same}; largest tensor {big_std:,} -> {big_tiled:,} bytes; "
          f"standard {t_std * 1e3:.0f} ms, tiled {t_tiled * 1e3:.0f} ms, SDPA {t_sdpa * 1e3:.0f} ms")
    results["tiled_attention_speed"] = t_std / t_tiled
    results["tiled_attention_memory"] = big_tiled / big_std
    results["sdpa_speed"] = t_std / t_sdpa

    # 7. speculative decoding, greedy
    t_target = measure.decode_step_time(model, 32, warmup=3, repeats=repeats).median_s
    t_draft = measure.decode_step_time(draft, 32, warmup=3, repeats=repeats).median_s
    c = t_draft / t_target
    reps = 3 if args.quick else 5

    def speedup_of(fn):
        """Plain / speculative time over the prompts. The two run alternately, prompt by prompt, and each keeps
        its fastest run: on a shared machine a burst of other work then slows neither one alone."""
        best_plain, best_spec = {}, {}
        for _ in range(reps):
            for p in PROMPTS:
                for best, run in ((best_plain, lambda: il.generate(model, tok, p, max_new_tokens=n_new)),
                                  (best_spec, lambda: fn(p))):
                    t0 = time.perf_counter()
                    run()
                    best[p] = min(best.get(p, float("inf")), time.perf_counter() - t0)
        return sum(best_plain.values()) / sum(best_spec.values())

    print(f"\nspeculative decoding, greedy, {n_new} tokens x {len(PROMPTS)} prompts: c = {c:.3f} "
          f"(draft {t_draft * 1e3:.2f} ms / target {t_target * 1e3:.2f} ms per step)")
    print(f"{'gamma':>5} {'alpha':>6} {'tokens/pass':>11} {'identical':>9} {'speedup':>8} {'expected':>9} "
          f"{'c loop':>7} {'expected':>9} {'other':>6}")
    print("(expected: with c alone, then with c measured inside the loop; other: the share of the speculative "
          "run's time spent outside both models' forward passes)")
    greedy = {p: il.generate(model, tok, p, max_new_tokens=n_new).tokens for p in PROMPTS}

    def counted(**options):
        """One speculative run per prompt: (runs, identical to greedy?, alpha, target passes, draft steps, tokens,
        c measured inside the loop)."""
        runs = [speculative.speculative_generate(model, draft, tok, p, n_new, **options) for p in PROMPTS]
        rounds, steps = sum(r.rounds for r in runs), sum(r.draft_steps for r in runs)
        c_loop = sum(r.draft_s for r in runs) / steps / (sum(r.target_s for r in runs) / rounds)
        return (runs, all(r.tokens == greedy[p] for r, p in zip(runs, PROMPTS)),
                sum(r.accepted for r in runs) / sum(r.judged for r in runs), rounds, steps,
                sum(len(r.tokens) for r in runs), c_loop)

    best, best_options = 0.0, None
    for g in (1, 2, 3, 4, 6):
        runs, identical, alpha, rounds, _, tokens, c_loop = counted(gamma=g)
        per_pass = tokens / rounds
        speedup = speedup_of(lambda p: speculative.speculative_generate(model, draft, tok, p, n_new, gamma=g))
        expected = speculative.expected_speedup(alpha, g, c)
        expected_loop = speculative.expected_speedup(alpha, g, c_loop)
        other = 1 - sum(r.draft_s + r.target_s for r in runs) / sum(r.total_s for r in runs)
        print(f"{g:>5} {alpha:>6.2f} {per_pass:>11.2f} {str(identical):>9} {speedup:>7.2f}x {expected:>8.2f}x "
              f"{c_loop:>7.3f} {expected_loop:>8.2f}x {other:>6.1%}")
        results[f"speculative_gamma{g}_alpha"] = alpha
        results[f"speculative_gamma{g}_speedup"] = speedup
        results[f"speculative_gamma{g}_expected"] = expected
        results[f"speculative_gamma{g}_expected_c_in_loop"] = expected_loop
        results[f"speculative_gamma{g}_time_outside_passes"] = other
        if speedup > best:
            best, best_options = speedup, dict(gamma=g)
    # adaptive draft length: up to gamma drafts, ending a round's drafts after one the draft is unsure of.
    # The formula needs one gamma; its count-based form is tokens / (draft steps x c + target passes).
    print("\nadaptive draft length (min_confidence: end the drafts after a token the draft gave less than that)")
    print(f"{'gamma<=':>7} {'min_conf':>8} {'alpha':>6} {'drafts/pass':>11} {'tokens/pass':>11} {'identical':>9} "
          f"{'speedup':>8} {'expected':>9}  (expected: from the counts, with c measured inside the loop)")
    for g, conf in ((4, 0.15), (6, 0.2), (8, 0.2)):
        kw = dict(gamma=g, min_confidence=conf)
        _, identical, alpha, rounds, steps, tokens, c_loop = counted(**kw)
        expected = tokens / (steps * c_loop + rounds)
        speedup = speedup_of(lambda p: speculative.speculative_generate(model, draft, tok, p, n_new, **kw))
        print(f"{g:>7} {conf:>8.2f} {alpha:>6.2f} {steps / rounds:>11.2f} {tokens / rounds:>11.2f} {str(identical):>9} "
              f"{speedup:>7.2f}x {expected:>8.2f}x")
        key = f"speculative_adaptive_gamma{g}_conf{round(conf * 100)}"
        results[f"{key}_speedup"] = speedup
        results[f"{key}_expected"] = expected
        if speedup > best:
            best, best_options = speedup, kw
    # the best of eight noisy measurements is biased upwards: time the chosen setting again, afresh
    confirmed = speedup_of(lambda p: speculative.speculative_generate(model, draft, tok, p, n_new, **best_options))
    print(f"best setting {best_options}: {best:.2f}x; timed again on its own: {confirmed:.2f}x")
    results["speculative_best_speedup"] = best
    results["speculative_best_confirmed_speedup"] = confirmed
    results["speculative_memory"] = (base_bytes + quantize.weight_bytes(draft)) / base_bytes

    # 8. static cache + torch.compile (opt-in)
    if args.compile:
        compile_s, eager_s, compiled_s, same = opt_compile.time_compiled_decode(model, context=32)
        print(f"\ntorch.compile: compile time {compile_s:.1f} s; decode step eager {eager_s * 1e3:.2f} ms, compiled "
              f"{compiled_s * 1e3:.2f} ms; same logits {same}")
        results["compile_seconds"] = compile_s
        results["compile_speed"] = eager_s / compiled_s

    print(f"\naims: int8 {1 / results['int8_memory']:.2f}x smaller (aim >= 3.9), loss "
          f"{results['int8_loss_change_pct']:+.3f}% (aim < 1%); speculative best {best:.2f}x, timed again "
          f"{confirmed:.2f}x (aim >= 1.3)")
    for key, value in results.items():
        print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    main()
