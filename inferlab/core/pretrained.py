"""The bundled checkpoints: trained here by ``scripts/train_bundled.py``, shipped in ``assets/``.

``load_pretrained()`` gives the main model (notebooks 01-06) and its tokenizer;
``load_pretrained("draft")`` the much smaller draft model on the same tokenizer (notebook 05).
Weights are stored in float16 to keep the package small and loaded as float32.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import ModelConfig
from .device import as_device
from .model import GPT
from .tokenizer import BPETokenizer

ASSETS = Path(__file__).resolve().parent.parent / "assets"   # inferlab/assets
CHECKPOINTS = {"main": ASSETS / "main.pt", "draft": ASSETS / "draft.pt"}
TOKENIZER_FILE = ASSETS / "tokenizer.json"


def save_checkpoint(model: GPT, path, meta: dict | None = None, dtype=torch.float16) -> None:
    state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()
             if not (model.config.tie_embeddings and k == "lm_head.weight")}
    torch.save({"config": model.config.to_dict(), "state_dict": state, "meta": meta or {}}, path)


def load_checkpoint(path, device=None, dtype=torch.float32) -> GPT:
    data = torch.load(path, map_location="cpu", weights_only=True)
    model = GPT(ModelConfig(**data["config"]))
    missing, unexpected = model.load_state_dict(data["state_dict"], strict=False)
    allowed_missing = {"lm_head.weight"} if model.config.tie_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit its config: missing {missing}, unexpected {unexpected}")
    model.meta = data.get("meta", {})
    return model.to(device=device, dtype=dtype).eval()


def load_tokenizer() -> BPETokenizer:
    return BPETokenizer.load(TOKENIZER_FILE)


def load_pretrained(name: str = "main", device=None, dtype=torch.float32):
    """(model, tokenizer) of a bundled checkpoint: ``"main"`` or ``"draft"``, on ``device`` (default the CPU;
    ``il.best_device()`` picks a GPU when there is one). The model is in eval mode."""
    device = as_device(device)
    if name not in CHECKPOINTS:
        raise ValueError(f"unknown bundled model {name!r}; choose one of {sorted(CHECKPOINTS)}")
    if not CHECKPOINTS[name].exists():
        raise FileNotFoundError(f"{CHECKPOINTS[name]} is missing; rebuild it with scripts/train_bundled.py")
    return load_checkpoint(CHECKPOINTS[name], device, dtype), load_tokenizer()
