"""Where the engine's prefill-pass cost model comes from: time real passes, fit the model (notebook 06).

    python benchmarks/prefill_pass_cost.py           # 4 workloads x 2 runs, a minute or so
    python benchmarks/prefill_pass_cost.py --quick   # 2 workloads x 1 run

``ModelRunner.prefill_passes`` cuts a step's prefill rows into passes by a cost model: every row of a
pass is padded to the pass's most new tokens ``T`` and its widest context ``S``, and a pass costs

    fixed + rows x T x (1 + S / attention_context_tokens)      (in token slots)

This script runs the engine on mixed workloads (with and without shared prefixes, so contexts are both
short and long), times every prefill pass, fits ``time = a + b (rows T) + c (rows S) + d (rows T S)``
by least squares and prints the two constants in token slots: ``fixed = a / b`` and
``attention_context_tokens = b / d`` (``c``, the gather of the context's blocks, comes out small).
Compare them with the values the runner ships (``ModelRunner.prefill_pass_cost_tokens`` and
``ModelRunner.attention_context_tokens``), which were fitted the same way on the course's 2-core CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too
import inferlab as il  # noqa: E402
from inferlab.engine.baselines import mixed_workload  # noqa: E402
from inferlab.engine.runner import ModelRunner  # noqa: E402
from inferlab.timing import cpu_model  # noqa: E402


class TimedRunner(ModelRunner):
    """The engine's runner, recording (rows, most new tokens, widest context, seconds) per prefill pass."""
    passes: list = []

    def forward(self, group):
        t0 = time.perf_counter()
        logits = super().forward(group)
        seconds = time.perf_counter() - t0
        longest = max(s.num_new for s in group)
        if longest > 1:   # (run() moves num_computed on after this returns)
            widest = max(s.request.num_computed + s.num_new for s in group)
            self.passes.append((len(group), longest, widest, seconds))
        return logits


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    model, tok = il.load_pretrained()
    print(f"machine: {cpu_model()}")
    workloads = ((0, 0.0), (1, 0.8)) if args.quick else ((0, 0.0), (1, 0.8), (2, 0.8), (3, 0.0))
    il.Engine(model, tok).generate(["warm up"], il.SamplingParams(max_tokens=2))
    for seed, shared in workloads:
        prompts, params = mixed_workload(tok, 64, prompt_len=(16, 256), output_len=(4, 8), seed=seed,
                                         shared_prefix_frac=shared)
        for _ in range(1 if args.quick else 2):
            engine = il.Engine(model, tok, max_num_seqs=64, enable_prefix_caching=shared > 0)
            engine.runner = TimedRunner(model, engine.pool)
            engine.generate(prompts, params)
    rows, T, S, seconds = np.array(TimedRunner.passes, dtype=float).T
    X = np.stack([np.ones_like(rows), rows * T, rows * S, rows * T * S], 1)
    a, b, c, d = np.linalg.lstsq(X, seconds, rcond=None)[0]
    error = np.median(np.abs(X @ (a, b, c, d) - seconds) / seconds)
    print(f"{len(rows)} prefill passes; time = {a * 1e3:.2f} ms + {b * 1e3:.4f} ms x rows x T + {c * 1e6:.3f} us x "
          f"rows x S + {d * 1e6:.4f} us x rows x T x S (median error {error:.0%})")
    print(f"shipped: prefill_pass_cost_tokens = {ModelRunner.prefill_pass_cost_tokens}, attention_context_tokens = "
          f"{ModelRunner.attention_context_tokens}")
    print(f"prefill_pass_cost_tokens: {a / b:.0f}")
    print(f"attention_context_tokens: {b / d:.0f}")


if __name__ == "__main__":
    main()
