"""Reproduce the bundled checkpoints from scratch: tokenizer, main model, draft model.

    python scripts/train_bundled.py                 # train on the bundled text snapshot (about 25 min on 2 cores)
    python scripts/train_bundled.py --refresh-corpus  # first re-extract the text from this Python

Writes inferlab/assets/{tokenizer.json, main.pt, draft.pt} and prints each model's held-out loss.
The draft is distilled from the main model (inferlab/optimize/distill.py), so it is trained after it.
"""
from __future__ import annotations

import argparse
import gzip
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import inferlab as il  # noqa: E402
from inferlab.core.corpus import CORPUS_FILE, extract_python_docs, load_corpus, split_corpus  # noqa: E402
from inferlab.core.pretrained import CHECKPOINTS, TOKENIZER_FILE, load_checkpoint, save_checkpoint  # noqa: E402
from inferlab.core.train import heldout_loss, token_tensor, train  # noqa: E402
from inferlab.optimize.distill import distillation_loss, greedy_continuations  # noqa: E402

RECIPES = {  # name: (config, steps, batch, seq_len, lr)
    "main": ("inferlab-main", 900, 12, 256, 3e-3),
    "draft": ("inferlab-draft", 2000, 16, 256, 5e-3),
}
DRAFT_POLICY_SEQUENCES = 6144  # the draft is distilled from main on the text plus this many of main's greedy answers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refresh-corpus", action="store_true", help="re-extract the text from the running Python")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="scale every recipe's step count (quick tries)")
    ap.add_argument("--only", choices=sorted(RECIPES), help="train just this model")
    ap.add_argument("--reuse-tokenizer", action="store_true", help="keep the existing tokenizer.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.refresh_corpus:
        with gzip.GzipFile(CORPUS_FILE, "wb", mtime=0) as f:
            f.write(extract_python_docs().encode("utf-8"))
    train_text, heldout_text = split_corpus(load_corpus())
    t = time.perf_counter()
    if args.reuse_tokenizer and TOKENIZER_FILE.exists():
        tok = il.BPETokenizer.load(TOKENIZER_FILE)
    else:
        tok = il.BPETokenizer.train(train_text, il.MODEL_CONFIGS["inferlab-main"].vocab_size, progress=True)
        tok.save(TOKENIZER_FILE)
    print(f"tokenizer: {tok.vocab_size} tokens in {time.perf_counter() - t:.0f} s")
    train_ids, heldout_ids = token_tensor(tok, train_text), token_tensor(tok, heldout_text)
    print(f"corpus: {len(train_ids):,} training tokens, {len(heldout_ids):,} held-out tokens")
    for name, (config_name, steps, batch, seq_len, lr) in RECIPES.items():
        if args.only and name != args.only:
            continue
        torch.manual_seed(0)
        model = il.GPT(il.MODEL_CONFIGS[config_name])
        steps = max(1, int(steps * args.steps_scale))
        data, loss_fn, meta = train_ids, None, {}
        if name == "draft":  # distilled from the main model just saved: it learns main's guesses, not the text's
            teacher = load_checkpoint(CHECKPOINTS["main"])
            t = time.perf_counter()
            answers = greedy_continuations(teacher, train_ids, DRAFT_POLICY_SEQUENCES, seed=0)
            print(f"draft: {DRAFT_POLICY_SEQUENCES} greedy answers of main, {len(answers):,} tokens, in "
                  f"{time.perf_counter() - t:.0f} s")
            data, loss_fn = torch.cat([train_ids, answers]), distillation_loss(teacher)
            meta = {"distilled_from": "main", "policy_sequences": DRAFT_POLICY_SEQUENCES}
        hist = train(model, data, heldout_ids, steps=steps, batch_size=batch, seq_len=seq_len, lr=lr,
                     warmup=50, eval_every=100, seed=0, loss_fn=loss_fn)
        print(f"{name}: held-out loss during training {[round(x, 3) for x in hist.eval_loss]}")
        meta.update({"steps": steps, "batch_size": batch, "seq_len": seq_len, "lr": lr,
                     "train_seconds": round(hist.seconds), "python": platform.python_version(),
                     "torch": str(torch.__version__)})
        save_checkpoint(model, CHECKPOINTS[name], meta)
        reloaded = load_checkpoint(CHECKPOINTS[name])  # the loss of what ships (float16 weights)
        loss = heldout_loss(reloaded, heldout_ids, seq_len=256)
        print(f"{name}: {reloaded.num_params():,} params, held-out loss {loss:.4f} after {steps} steps "
              f"({hist.seconds:.0f} s), file {CHECKPOINTS[name].stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
