"""Cached greedy decoding at batch 1 against the memory's read bandwidth (issue 16's hot path).

    python benchmarks/decode.py               # gpt2-124M shape (random weights) and the bundled main model
    python benchmarks/decode.py --threads 2

At batch 1 every decode step reads every weight once, so tokens/s x bytes per step can at best equal the
read bandwidth (the roofline's memory roof; gpt-fast reports about two thirds of an A100's datasheet
bandwidth, https://github.com/pytorch-labs/gpt-fast). Measured in one process, in alternating rounds:

* the read bandwidth (sum of a 512 MiB tensor) and cached greedy decode with ``il.generate`` (time per
  output token after the first), for each model; the fraction = bytes per step / step time / bandwidth;
* the model's step as it is now against the path before issue 16 (the reference attention, an input
  check with host synchronisation in every forward and a mask at every step: ``model.attention =
  "reference"``, ``check_inputs``, ``KVCache.padded``),
  one forward of one token with a cached context, the ratio of the two;
* the ceiling that binds first: every linear layer's matrix-vector product alone (``F.linear`` with one row,
  the model's weights in forward order), as a fraction of the bandwidth, and the step against it (what the
  step spends outside those products);
* a tuning probe: the same model with its weight matrices stored transposed in memory (see the notes);
* when ``transformers`` is installed, Hugging Face ``generate`` (greedy, cached) on a ``GPT2LMHeadModel``
  with the gpt2-124M shape and random weights, alternated with ours: the ratio of tokens/s.

The results are printed last as ``name: value`` lines.

Notes from issue 16 (2-vCPU AMD EPYC Zen 4 VM, 32 MiB L3; torch 2.13 CPU with MKL 2024.2; ranges over runs):

* The matrix-vector kernel is the ceiling, not the memory. ``F.linear`` with one row reads gpt2's 494 MB of
  matrices at 12-13.5 GB/s, one thread or two (MKL runs this product on one thread here): 0.4-0.55 of the
  ``sum()`` bandwidth (24-34 GB/s). The model's step is 1.07-1.11x its products alone, so cutting the work
  around them cannot reach 0.85 of the bandwidth; the step is at about 0.9 of what this kernel allows.
* The same numbers stored ``[in, out]`` in memory (``weight`` a transposed view, as Hugging Face's GPT-2 keeps
  its block weights) send ``F.linear`` to MKL's other product, 17-24 GB/s: gpt2's step 1.23-1.28x faster on
  one thread, the bundled model's 1.07-1.15x, greedy tokens the same. Not the model's layout: the gain is one
  library's on one CPU, and ``[out, in]`` is the layout every lesson, checkpoint and loader assumes.
* A batched product over two halves of each weight's rows (``torch.bmm``) reads at the ``sum()`` bandwidth
  (25 GB/s on one thread, 44 on two, quiet), so the hardware could; but it rests on MKL picking a matrix
  kernel for a batch (and on the vector's strides: an expanded ``[1, in, 1]`` view made it 10x slower),
  rounds differently, and stalls on a busy machine. Not used.
* Threads: while another process kept one of the two vCPUs busy, torch's default of two threads made the
  bundled step 11x slower than one thread (32 vs 2.9 ms) and gpt2's 2.7x (120 vs 44 ms): every operator
  that runs in parallel waits for the thread that lost its CPU. On a shared machine, ``--threads 1``.
* The bundled model (14 MB, in the L3) is overhead-bound: its step is 1.6-1.9x its products alone, the rest
  ~280 operators of 2-3 us (norms, rotary, cache writes, views). At one new token SDPA costs 12 us per layer
  without a mask, 35 us with a bool mask (converted to an additive one, then ``nan_to_num``), the reference
  ``attend`` 35 us; so a step over a cache without padding passes no mask. Tried and dropped, each within
  the noise of the whole step (2% or less): one fused q/k/v projection (16 vs 20 us per layer), one
  gate+up (no gain), ``F.rms_norm`` (bit-identical, 3 us less per norm), rotary on q and k in one call.
* Prefill: SDPA with ``is_causal=True`` instead of the bool causal mask is 1.3x faster on attention alone,
  a small part of a 16-token prefill; not changed. ``generate`` itself (argmax, ``.item()``, text) costs
  nothing measurable beside the forwards. No denormal numbers in the weights or the activations.
* Hugging Face's forward step alone is about 6% faster than ours on the gpt2 shape (its ``[in, out]``
  block weights); its ``generate`` loop spends that, so end to end the two are even.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too
import inferlab as il  # noqa: E402
from inferlab.core.kvcache import KVCache  # noqa: E402
from inferlab.measure import machine, random_weights, roofline  # noqa: E402
from inferlab.measure.timing import compare, cpu_model, paired_ratio, print_results  # noqa: E402

PROMPT, NEW = 16, 48


def decode_s_per_token(model):
    """Seconds per output token of cached greedy decoding (after the first), one ``il.generate`` call."""
    res = il.generate(model, None, list(range(1, PROMPT + 1)), max_new_tokens=NEW)
    return res.tpot_s


def step_fn(model, legacy: bool):
    """One cached forward of one token; ``legacy``: the reference attention, per-forward input checks and a
    bool mask at every step (a cache that saw padding still builds one)."""
    cache = KVCache(model.config, 1, PROMPT + 2, dtype=model.dtype)
    cache.padded = legacy
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


def gemv_fn(model):
    """Every linear layer's matrix-vector product alone (one row in, as at a decode step), in forward order:
    the weights a step must read, read by the kernel the model uses, and nothing else. Also their bytes."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    xs = [torch.randn(1, m.in_features) for m in layers]

    def gemvs():
        with torch.inference_mode():
            for m, x in zip(layers, xs):
                F.linear(x, m.weight)
    return gemvs, sum(m.weight.numel() * m.weight.element_size() for m in layers)


def stored_transposed(model):
    """A copy of ``model`` whose weight matrices lie in memory as ``[in, out]`` (each ``weight`` a transposed view:
    the same numbers, shape and names; Hugging Face's GPT-2 keeps its block weights so, its Conv1D). A tuning
    probe for the notes, not the lessons' model."""
    copy = type(model)(model.config)
    copy.load_state_dict(model.state_dict())
    done = {}
    for m in copy.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            w = m.weight
            if w.data_ptr() not in done:   # a tied weight once
                done[w.data_ptr()] = torch.nn.Parameter(w.detach().t().contiguous().t())
            m.weight = done[w.data_ptr()]
    if model.config.arch == "llama":
        copy.rope_cos, copy.rope_sin = model.rope_cos, model.rope_sin
    return copy.eval()


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
        gemvs, gemv_bytes = gemv_fn(model)
        other = stored_transposed(model)
        t = compare({"before": step_fn(model, legacy=True), "now": step_fn(model, legacy=False), "gemvs": gemvs,
                     "now T": step_fn(other, legacy=False), "gemvs T": gemv_fn(other)[0]},
                    repeats=max(20, 4 * args.rounds), warmup=3)
        r = paired_ratio(t["before"], t["now"])
        print(f"  one-token step: before {t['before'].median_s * 1e3:.2f} ms, now {t['now'].median_s * 1e3:.2f} ms; {r}")
        print(f"  its {gemv_bytes / 1e6:.1f} MB of matrix-vector products alone (F.linear, one row): "
              f"{t['gemvs'].median_s * 1e3:.2f} ms = {gemv_bytes / t['gemvs'].median_s / 1e9:.1f} GB/s = "
              f"{gemv_bytes / t['gemvs'].median_s / bw_med:.2f} of the read bandwidth (the ceiling for this model's "
              f"step); step / products alone {paired_ratio(t['now'], t['gemvs'])}")
        same = (il.generate(model, None, list(range(1, PROMPT + 1)), max_new_tokens=NEW).tokens ==
                il.generate(other, None, list(range(1, PROMPT + 1)), max_new_tokens=NEW).tokens)
        print(f"  tuning probe, the weights stored [in, out]: step {t['now T'].median_s * 1e3:.2f} ms, "
              f"{paired_ratio(t['now'], t['now T'])} faster; products alone "
              f"{gemv_bytes / t['gemvs T'].median_s / bw_med:.2f} of the read bandwidth; "
              f"greedy tokens {'the same' if same else 'DIFFERENT'}")
        del other
        results[f"{name}_gemv_only_bandwidth_fraction"] = gemv_bytes / t["gemvs"].median_s / bw_med
        results[f"{name}_step_over_gemvs"] = paired_ratio(t["now"], t["gemvs"]).median
        results[f"{name}_tokens_per_s"] = 1 / t_med
        results[f"{name}_bandwidth_fraction"] = fractions[len(fractions) // 2]
        results[f"{name}_step_speedup_vs_before"] = r.median
    hf = hf_pair(args.rounds)
    if hf is None:
        print("transformers is not installed: no Hugging Face comparison (pip install transformers)")
    else:
        r = paired_ratio(hf["transformers"], hf["inferlab"])
        print(f"gpt2-124M shape, {NEW} tokens after a {PROMPT}-token prompt: inferlab {hf['inferlab'].median_s:.2f} s "
              f"({NEW / hf['inferlab'].median_s:.1f} tokens/s), transformers {hf['transformers'].median_s:.2f} s "
              f"({NEW / hf['transformers'].median_s:.1f} tokens/s); transformers / inferlab time {r}")
        results["gpt2_speed_vs_transformers"] = r.median
    print()
    print_results(results)


if __name__ == "__main__":
    main()
