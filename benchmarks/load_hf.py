"""Loading a real checkpoint with ``il.load_hf``, and decoding with it (issue 17).

    python benchmarks/load_hf.py              # a checkpoint of SmolLM2-135M's shape, written once to /tmp
    python benchmarks/load_hf.py --threads 2

The checkpoint is what ``transformers``' ``save_pretrained`` writes for a ``LlamaForCausalLM`` with
SmolLM2-135M's config (576 wide, 30 layers, 9 heads, 3 KV heads, 1536 MLP, 49,152 tokens, tied embeddings)
and random weights, stored in bfloat16 as the real one is, with a small tokenizer.json. Measured:

* ``il.load_hf`` (bfloat16 file -> float32 model and tokenizer), the median of ``--rounds`` loads, beside
  the floor (the tensors read with ``safetensors.torch.load_file`` and converted to float32, which any
  loader does) and ``transformers``' ``from_pretrained`` of the same folder;
* cached greedy decoding with ``il.generate`` (time per output token after the first) of the loaded model
  and of ``random_weights.random_model`` of the same shape, in alternating rounds: the same class and shape,
  so the ratio should be 1 (a loaded weight laid out differently in memory would show here).

Needs requirements-hf.txt. The results are printed last as ``name: value`` lines.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too
import inferlab as il  # noqa: E402
from inferlab.core.corpus import load_corpus  # noqa: E402
from inferlab.measure import random_weights  # noqa: E402
from inferlab.measure.timing import cpu_model, from_samples, measure, print_results, ratio_of  # noqa: E402

FOLDER = Path(tempfile.gettempdir()) / "inferlab-bench" / "smollm2-135m-shape"
SMOLLM2_135M = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True)
PROMPT, NEW = 16, 48


def write_checkpoint(folder: Path):
    """The random SmolLM2-135M-shaped checkpoint, written by transformers (once; later runs reuse it)."""
    if (folder / "model.safetensors").exists():
        return
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    print(f"writing {folder} (once)")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).to(torch.bfloat16).save_pretrained(folder)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator([load_corpus()[:200_000]], trainers.BpeTrainer(
        vocab_size=1024, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.save(str(folder / "tokenizer.json"))


def decode_s_per_token(model) -> float:
    return il.generate(model, None, list(range(1, PROMPT + 1)), max_new_tokens=NEW).tpot_s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--folder", type=Path, default=FOLDER, help=f"where the checkpoint is written (default {FOLDER})")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {cpu_model()}; {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    write_checkpoint(args.folder)
    size = sum(p.stat().st_size for p in args.folder.glob("*.safetensors"))
    print(f"checkpoint: {args.folder}, {size / 1e6:.0f} MB of bfloat16 weights; config "
          f"{json.loads((args.folder / 'config.json').read_text())['architectures']}")

    from safetensors.torch import load_file
    loads = {"il.load_hf": lambda: il.load_hf(args.folder),
             "read_as_float32": lambda: {k: v.float() for k, v in load_file(args.folder / "model.safetensors").items()}}
    try:
        from transformers import AutoModelForCausalLM
        loads["transformers.from_pretrained"] = lambda: AutoModelForCausalLM.from_pretrained(
            args.folder, dtype=torch.float32)
    except ImportError:
        pass
    results = {}
    for name, fn in loads.items():
        t = measure(fn, warmup=1, repeats=args.rounds)
        print(f"{name}: {t.median_s:.2f} s (median of {t.repeats}, IQR {t.iqr_s:.2f} s)")
        results[f"{name}_s"] = t.median_s

    loaded, _ = il.load_hf(args.folder)
    random = random_weights.random_model(loaded.config)
    decode_s_per_token(loaded), decode_s_per_token(random)   # warm-up
    per_token = {"loaded": [], "random": []}
    for _ in range(args.rounds):   # alternate, so a machine that slows down slows both alike
        per_token["loaded"].append(decode_s_per_token(loaded))
        per_token["random"].append(decode_s_per_token(random))
    tl, tr = from_samples(per_token["loaded"]), from_samples(per_token["random"])
    r = ratio_of([b / a for a, b in zip(per_token["loaded"], per_token["random"])])
    print(f"cached greedy decode, {NEW} tokens after {PROMPT}: loaded {1 / tl.median_s:.1f} tokens/s, "
          f"random weights {1 / tr.median_s:.1f} tokens/s; loaded / random speed {r.median:.2f} "
          f"(middle half {r.low:.2f}-{r.high:.2f})")
    results["loaded_tokens_per_s"] = 1 / tl.median_s
    results["random_tokens_per_s"] = 1 / tr.median_s
    results["loaded_vs_random_speed"] = r.median
    print()
    print_results(results)


if __name__ == "__main__":
    main()
