"""KV cache against full recomputation: tokens per second of greedy ``il.generate`` (notebook 03).

    python benchmarks/kv_cache.py             # bundled model and a GPT-2-shaped model, 64 / 256 / 512 new tokens
    python benchmarks/kv_cache.py --quick     # 16 and 64 new tokens, a minute or so

Both runs of a pair generate the same greedy tokens from the same short prompt, one with the cache
(``use_cache=True``: prefill once, then one token per forward pass) and one recomputing the whole
sequence at every step (``use_cache=False``), in alternation; tokens/s = new tokens / wall time of the
whole call, and the speedup is the median of the paired runs' ratios (with their middle half).
The GPT-2 shape (124M weights) has random weights, which time exactly like trained ones. The bundled
model's context is 512 tokens, so it generates at most 512 - prompt tokens; the names say how many.

Reference: LLMs-from-scratch (ch. 4 bonus, KV cache) reports 27 -> 144 tokens/s (5.3x) for a 124M GPT-2
at 200 new tokens on an Apple M4 CPU. Each speedup is printed last as a ``name: value`` line.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too
import inferlab as il  # noqa: E402
from inferlab.lessons.part3 import wide_tokenizer  # noqa: E402
from inferlab.measure.timing import busy_note, compare, cpu_model, paired_ratio  # noqa: E402

PROMPT = "The return value of a function is"


def machine(device) -> str:
    where = torch.cuda.get_device_name() if device.type == "cuda" else cpu_model()
    return (f"machine: {where}; {os.cpu_count()} logical CPUs; torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads; device {device}")


def run_pair(model, tok, n, repeats):
    """(tokens/s with the cache, tokens/s recomputing, paired speedup, same tokens?) for ``n`` new greedy
    tokens; the two runs alternate (cache, recompute, cache, ...), so a machine that slows down slows both."""
    results = {True: [], False: []}
    calls = {use_cache: (lambda use_cache=use_cache: results[use_cache].append(
        il.generate(model, tok, PROMPT, max_new_tokens=n, use_cache=use_cache))) for use_cache in (True, False)}
    t = compare(calls, repeats=repeats, warmup=0, device=model.device)
    same = results[True][-1].tokens == results[False][-1].tokens
    return n / t[True].median_s, n / t[False].median_s, paired_ratio(t[False], t[True]), same, busy_note(*t.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16 and 64 new tokens only")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed runs per measurement (default: 3 for the bundled model, 2 for gpt2)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    lengths = (16, 64) if args.quick else (64, 256, 512)

    bundled, tok = il.load_pretrained(device=device)
    gpt2 = il.GPT(il.MODEL_CONFIGS["gpt2"]).to(device).eval()
    models = {"main": (bundled, tok, 3), "gpt2": (gpt2, wide_tokenizer(tok, gpt2.config.vocab_size), 2)}
    print(machine(device))
    print(f"prompt {PROMPT!r} ({len(tok.encode(PROMPT))} tokens), greedy, float32")
    print(f"{'model':<6} {'new tokens':>10} {'cache tok/s':>12} {'recompute tok/s':>16} {'speedup':>8} "
          f"{'repeats':>8} {'same tokens':>12}", flush=True)
    speedups = {}
    for name, (model, mtok, default_repeats) in models.items():
        repeats = args.repeats or default_repeats
        room = model.config.max_seq_len - len(mtok.encode(PROMPT))
        for use_cache in (True, False):  # warm-up: first calls allocate memory and pick kernels
            il.generate(model, mtok, PROMPT, max_new_tokens=4, use_cache=use_cache)
        for n in lengths:
            n = min(n, room)
            cached, recompute, ratio, same, note = run_pair(model, mtok, n, repeats)
            speedups[f"speedup_{name}_{n}"] = ratio.median
            print(f"{name:<6} {n:>10} {cached:>12.1f} {recompute:>16.1f} {ratio.median:>7.1f}x "
                  f"{repeats:>8} {str(same):>12}  (middle half {ratio.low:.1f}-{ratio.high:.1f}x)", flush=True)
            if note:
                print(note, flush=True)
    for key, value in speedups.items():
        print(f"{key}: {value:.1f}")


if __name__ == "__main__":
    main()
