"""The training text: Python's own documentation, which ships with every CPython (notebook 01).

``extract_python_docs()`` reads it from the running interpreter (the language reference topics
in ``pydoc_data`` plus the standard library's docstrings). The package bundles one snapshot of it
(``assets/corpus.txt.gz``) so that the bundled models and the notebooks see the same text on every
Python version; ``load_corpus()`` returns that snapshot.
"""
from __future__ import annotations

import ast
import gzip
import sysconfig
from pathlib import Path


ASSETS = Path(__file__).resolve().parent.parent / "assets"   # inferlab/assets
CORPUS_FILE = ASSETS / "corpus.txt.gz"
HELDOUT_FRACTION = 0.05
_SKIP = {"site-packages", "test", "tests", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip", "pydoc_data"}


def extract_python_docs(min_docstring_chars: int = 200) -> str:
    """The documentation text of the running Python: reference topics, then long stdlib docstrings."""
    import pydoc_data.topics

    parts = [pydoc_data.topics.topics[k].strip() for k in sorted(pydoc_data.topics.topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if _SKIP & set(path.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_docstring_chars:
                    parts.append(doc.strip())
    return "\n\n".join(parts) + "\n"


def load_corpus() -> str:
    """The bundled snapshot of the training text."""
    with gzip.open(CORPUS_FILE, "rt", encoding="utf-8") as f:
        return f.read()


def split_corpus(text: str, heldout_fraction: float = HELDOUT_FRACTION) -> tuple[str, str]:
    """(train, held-out): the held-out slice is the last ``heldout_fraction`` of the text, cut at a paragraph."""
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    cut = int(len(text) * (1 - heldout_fraction))
    para = text.rfind("\n\n", 0, cut)
    cut = para + 2 if para > 0 else cut
    return text[:cut], text[cut:]
