"""Distillation: teach the draft model to guess what the main model would say (notebook 05).

Speculative decoding pays off only when the draft agrees with the target often (a high acceptance
rate alpha) and costs little per step. A draft trained on the text alone learns the text; a draft
*distilled* from the target learns the target: its training signal at every position is the target's
whole next-token distribution (soft targets, Hinton et al. 2015), and part of its training text is
the target's own greedy output, the text it will be asked to guess at inference time (the "on-policy"
data of DistillSpec, Zhou et al. 2023).

``scripts/train_bundled.py`` builds the bundled draft this way: ``greedy_continuations`` from the
main model, then ``train.train(draft, ..., loss_fn=distillation_loss(main))``.
"""
from __future__ import annotations

import torch

from ..core.generate import generate_batch


def distillation_loss(teacher):
    """``loss_fn(student, x, y)`` for ``train``: cross-entropy of the student against the teacher's next-token
    distribution at every position of ``x`` (``y`` is unused: the teacher's guess replaces the text's)."""
    teacher.eval()

    def loss_fn(student, x, y):
        with torch.no_grad():
            target = teacher(x).float().softmax(-1)
        log_q = student(x).float().log_softmax(-1)
        return -(target * log_q).sum(-1).mean()

    return loss_fn


def greedy_continuations(teacher, data: torch.Tensor, num: int, new_tokens: int = 128, prompt_len=(4, 32),
                         batch_size: int = 64, seed: int = 0) -> torch.Tensor:
    """``num`` greedy continuations by ``teacher`` of random prompts cut from ``data``, each prompt followed by
    its continuation, all joined into one token stream (for ``train``'s random windows)."""
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}")
    if not isinstance(new_tokens, int) or new_tokens < 1:
        raise ValueError(f"new_tokens must be a positive int, got {new_tokens!r}")
    lo, hi = prompt_len
    if not 1 <= lo <= hi or len(data) <= hi:
        raise ValueError(f"prompt_len must be (lo, hi) with 1 <= lo <= hi < len(data), got {prompt_len}")
    generator = torch.Generator().manual_seed(seed)
    pieces = []
    for done in range(0, num, batch_size):
        n = min(batch_size, num - done)
        length = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        starts = torch.randint(0, len(data) - length, (n,), generator=generator).tolist()
        prompts = [data[s:s + length].tolist() for s in starts]
        for prompt, out in zip(prompts, generate_batch(teacher, None, prompts, max_new_tokens=new_tokens)):
            pieces.append(torch.tensor(prompt + out.tokens))
    return torch.cat(pieces)
