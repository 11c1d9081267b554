"""Cached greedy decoding at batch 1 against the memory's read bandwidth (issue 16's hot path).

    python benchmarks/decode.py               # gpt2-124M shape (random weights) and the bundled main model
    python benchmarks/decode.py --threads 2

At batch 1 every decode step reads every weight once, so tokens/s x bytes per step can at best equal the
read bandwidth (the roofline's memory roof; gpt-fast reports about two thirds of an A100's datasheet
bandwidth, https://github.com/pytorch-labs/gpt-fast). Measured in one process, in alternating rounds:

* the read bandwidth (sum of a 512 MiB tensor) and cached greedy decode with ``il.generate`` (time per
  output token after the first), for each model; the fraction = bytes per step / step time / bandwidth;
* the model's step as it is now against the path before issue 16 (the reference attention and an input
  check with host synchronisation in every forward: ``model.attention = "reference"``, ``check_inputs``),
  one forward of one token with a cached context, the ratio of the two;
* when ``transformers`` is installed, Hugging Face ``generate`` (greedy, cached) on a ``GPT2LMHeadModel``
  with the gpt2-124M shape and random weights, alternated with ours: the ratio of tokens/s.

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
from inferlab.core.kvcache import KVCache  # noqa: E402
from inferlab.measure import machine, random_weights, roofline  # noqa: E402
from inferlab.measure.timing import compare, cpu_model, paired_ratio  # noqa: E402

PROMPT, NEW = 16, 48


def decode_s_per_token(model):
    """Seconds per output token of cached greedy decoding (after the first), one ``il.generate`` call."""
    res = il.generate(model, None, list(range(1, PROMPT + 1)), max_new_tokens=NEW)
    return res.tpot_s


def step_fn(model, legacy: bool):
    """One cached forward of one token; ``legacy``: the reference attention and per-forward input checks."""
    cache = KVCache(model.config, 1, PROMPT + 2, dtype=model.dtype)
    x = torch.tensor([list(range(1, PROMPT + 1))])
    with torch.inference_mode():
        model(x, cache=cache)

    def step():
        model.attention = "reference" if legacy else "sdpa"
        with torch.inference_mode():
            cache.truncate(PROMPT)
            model(x[:, -1:], cache=cache, last_only=True, check_inputs=legacy)
        model.attention = "sdpa"
    return step


def hf_pair(rounds):
    """(ours s/token, HF s/token) per round on the gpt2-124M shape, or None without transformers."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    hf = GPT2LMHeadModel(GPT2Config()).eval()
    ours = random_weights.random_model(il.MODEL_CONFIGS["gpt2"])
    ids = torch.tensor([list(range(1, PROMPT + 1))])

    def hf_run():
        with torch.inference_mode():
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, min_new_tokens=NEW,
                        do_sample=False, pad_token_id=0)

    t = compare({"inferlab": lambda: il.generate(ours, None, ids[0].tolist(), max_new_tokens=NEW),
                 "transformers": hf_run}, repeats=rounds, warmup=1)
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {cpu_model()}; {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    results = {}
    models = {"gpt2": random_weights.random_model(il.MODEL_CONFIGS["gpt2"]), "bundled": il.load_pretrained()[0]}
    for name, model in models.items():
        per_step = roofline.decode_count(model.config, 1, PROMPT + NEW // 2)
        step_bytes = per_step.weight_bytes + per_step.kv_read_bytes + per_step.kv_write_bytes
        decode_s_per_token(model)   # warm-up
        bw, tpot = [], []
        for _ in range(args.rounds):   # alternate: the bandwidth and the decode see the same machine
            bw.append(machine.read_bandwidth(512 * machine.MiB, warmup=1, repeats=3).bytes_per_s)
            tpot.append(decode_s_per_token(model))
        fractions = sorted(step_bytes / t / b for t, b in zip(tpot, bw))
        bw_med, t_med = sorted(bw)[len(bw) // 2], sorted(tpot)[len(tpot) // 2]
        print(f"{name}: {step_bytes / 1e6:.1f} MB read per step; read bandwidth {bw_med / 1e9:.1f} GB/s -> at most "
              f"{bw_med / step_bytes:.0f} tokens/s; measured {1 / t_med:.1f} tokens/s = "
              f"{fractions[len(fractions) // 2]:.2f} of the bandwidth (rounds {fractions[0]:.2f}-{fractions[-1]:.2f})")
        if step_bytes < max(machine.cache_sizes().values(), default=0):
            print("  (its weights fit in the last-level cache: the memory roof does not bind, each step costs what "
                  "its ~300 small operations cost)")
        t = compare({"before": step_fn(model, legacy=True), "now": step_fn(model, legacy=False)},
                    repeats=max(20, 4 * args.rounds), warmup=3)
        r = paired_ratio(t["before"], t["now"])
        print(f"  one-token step: before {t['before'].median_s * 1e3:.2f} ms, now {t['now'].median_s * 1e3:.2f} ms; {r}")
        results[f"{name}_tokens_per_s"] = 1 / t_med
        results[f"{name}_bandwidth_fraction"] = fractions[len(fractions) // 2]
        results[f"{name}_step_speedup_vs_before"] = r.median
    hf = hf_pair(args.rounds)
    if hf is None:
        print("transformers is not installed: no Hugging Face comparison (pip install transformers)")
    else:
        r = paired_ratio(hf["transformers"], hf["inferlab"])
        print(f"gpt2-124M shape, {NEW} tokens: inferlab {hf['inferlab'].median_s:.2f} s, transformers "
              f"{hf['transformers'].median_s:.2f} s; transformers / inferlab time {r}")
        results["gpt2_speed_vs_transformers"] = r.median
    print()
    print(f"machine: {cpu_model()}")
    for k, v in results.items():
        print(f"{k}: {v:.3f}")


if __name__ == "__main__":
    main()
