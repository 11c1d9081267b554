"""Each core lesson run top to bottom on a real model's shape, against the bundled default (issue 17).

    python benchmarks/lessons_on_a_real_model.py                  # all six lessons, both ways
    python benchmarks/lessons_on_a_real_model.py --lessons 02 03   # some of them
    python benchmarks/lessons_on_a_real_model.py --model path/to/checkpoint --draft path/to/smaller

Every lesson's first cell holds ``MODEL = "bundled"`` (lessons 05 and 06 also ``DRAFT = "draft"``). This script
copies each lesson to a temporary folder, sets those lines to a checkpoint, executes the copy with
``jupyter nbconvert --execute`` (as a learner's Restart & Run All) and times it, beside the lesson run as it is.
Errors are listed by cell; the lessons themselves are not changed.

By default the model is ``benchmarks/load_hf.py``'s checkpoint of SmolLM2-135M's shape with random weights
(written once to /tmp, needs requirements-hf.txt) and the draft a random Llama sharing its tokenizer (4 layers,
192 wide, 11 M weights), also written once. Random weights time exactly like trained ones, but everything that
depends on what the model predicts does not carry over: the text is noise, and a random draft agrees with a
random target almost never, so speculative decoding (lesson 05) runs slower than plain decoding, and its cell
longer than with a real pair. The results are printed last as ``name: value`` lines (seconds of wall time).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))   # run from a plain checkout too
sys.path.insert(0, str(HERE))
from inferlab.measure.timing import cpu_model  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
DRAFT_FOLDER = Path(tempfile.gettempdir()) / "inferlab-bench" / "smollm2-135m-shape-draft"


def write_draft(folder: Path, tokenizer_json: Path):
    """A random Llama of 4 layers, 192 wide, with the target's vocabulary and tokenizer (once)."""
    if (folder / "model.safetensors").exists():
        return
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    print(f"writing {folder} (once)")
    torch.manual_seed(1)
    config = LlamaConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, num_key_value_heads=1,
                         intermediate_size=512, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                         rms_norm_eps=1e-5, tie_word_embeddings=True)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    (folder / "tokenizer.json").write_text(tokenizer_json.read_text())


def switched(path: Path, model: str | None, draft: str | None) -> dict:
    """The lesson's notebook with its MODEL (and DRAFT) line set; None leaves the lesson as it is."""
    nb = json.loads(path.read_text())
    found = 0
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        new = source
        if model is not None:
            new = re.sub(r'^MODEL = "bundled"', f"MODEL = {model!r}", new, flags=re.M)
        if draft is not None:
            new = re.sub(r'^DRAFT = "draft"', f"DRAFT = {draft!r}", new, flags=re.M)
        found += new != source
        cell["source"] = new
    if model is not None and not found:
        raise ValueError(f"{path.name} has no line MODEL = \"bundled\"")
    return nb


def run(path: Path, model: str | None, draft: str | None, timeout: int) -> tuple[float, list[str]]:
    """(wall seconds, errors by cell) of executing the lesson once."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        copy.write_text(json.dumps(switched(path, model, draft)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   INFERLAB_PROGRESS="off")
        start = time.perf_counter()
        done = subprocess.run(["jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace", "--allow-errors",
                               f"--ExecutePreprocessor.timeout={timeout}", str(copy)],
                              cwd=NOTEBOOKS, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            return wall, [done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "nbconvert failed"]
        out = json.loads(copy.read_text())
    errors = [f"cell {i}: {o['ename']}: {o['evalue'][:200]}" for i, c in enumerate(out["cells"])
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    return wall, errors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint folder or cached hub name (default: SmolLM2-135M's shape, random)")
    ap.add_argument("--draft", help="a smaller checkpoint with the same tokenizer, for lessons 05 and 06 "
                                    "(default: a random 4-layer Llama on the default model's tokenizer)")
    ap.add_argument("--lessons", nargs="*", default=None, help="lesson numbers, e.g. 02 03 (default: all six)")
    ap.add_argument("--no-defaults", action="store_true", help="do not time the lessons as they are")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds a cell may run (default 3600)")
    args = ap.parse_args()

    model, draft = args.model, args.draft
    if model is None:
        from load_hf import FOLDER, write_checkpoint   # benchmarks/load_hf.py
        write_checkpoint(FOLDER)
        model = str(FOLDER)
        if draft is None:
            write_draft(DRAFT_FOLDER, FOLDER / "tokenizer.json")
            draft = str(DRAFT_FOLDER)
    draft = draft or model
    lessons = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.lessons:
        lessons = [p for p in lessons if p.name[:2] in {n.zfill(2) for n in args.lessons}]
    print(f"machine: {cpu_model()}; {os.cpu_count()} logical CPUs; load average {os.getloadavg()[0]:.2f} at the start")
    print(f"model: {model}\ndraft: {draft}")
    results = {}
    for path in lessons:
        ways = ([("bundled", None, None)] if not args.no_defaults else []) + [("real", model, draft)]
        for label, m, d in ways:
            load = os.getloadavg()[0]
            wall, errors = run(path, m, d, args.timeout)
            print(f"{path.stem} ({label}): {wall:.0f} s wall, load average {load:.2f} before"
                  + ("; errors: " + "; ".join(errors) if errors else ""))
            results[f"{path.stem}_{label}_s"] = wall
    print()
    print(f"machine: {cpu_model()}; load average {os.getloadavg()[0]:.2f} at the end")
    for k, v in results.items():
        print(f"{k}: {v:.1f}")


if __name__ == "__main__":
    main()
