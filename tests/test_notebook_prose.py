"""Prose never types a figure a cell measures (issue: every sentence true on the learner's machine).

A figure with a unit of time, rate, speed-up or share (ms, s, GB/s, FLOP/s, tok/s, x, %) may stand in a
notebook's markdown only in a paragraph that links its source (a published figure), or when it is a
deterministic fact listed below. Anything a cell measures is printed by that cell instead.
"""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").rglob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]

_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_UNIT = (r"(?:ms|µs|us|ns|s|sec|seconds?|[KMGT]i?B/s|[KMGT]?FLOP/s|FLOPS|tok/s|tokens/s|tokens per second"
         r"|%|per ?cent|[x×](?!\s*\d))")
FIGURE = re.compile(rf"(?<![\w/.]){_NUMBER}(?:\s?[–-]\s?{_NUMBER})?\s?{_UNIT}(?![\w/])")
SOURCE = re.compile(r"\]\(https?://|<a\s+href=\"https?://")
NEW_PARAGRAPH = re.compile(r"^\s*(?:[-*+]\s|\d+\.\s|#|\|)")

# Deterministic facts that cannot change between machines, as (notebook name, exact figure text).
ALLOWED = {
}


def paragraphs(markdown: str):
    """Blank lines, list items, headings and table rows each start a new paragraph."""
    block = []
    for line in markdown.splitlines():
        if not line.strip() or NEW_PARAGRAPH.match(line):
            if block:
                yield "\n".join(block)
            block = [line] if line.strip() else []
        else:
            block.append(line)
    if block:
        yield "\n".join(block)


def unsourced_figures(markdown: str) -> list:
    """Every figure with a measurement unit in a paragraph that links no source."""
    markdown = re.sub(r"<!--.*?-->", "", markdown, flags=re.S)
    found = []
    for paragraph in paragraphs(markdown):
        if not SOURCE.search(paragraph):
            found += [m.group(0) for m in FIGURE.finditer(paragraph)]
    return found


def test_a_planted_measured_figure_is_caught():
    assert unsourced_figures("One step took about 2 ms on this laptop.") == ["2 ms"]
    assert unsourced_figures("Sampling is 8% of the step.\n\nThe cache is 3.5x faster.") == ["8%", "3.5x"]
    assert unsourced_figures("- decode runs at 40 tok/s\n- [a link](https://example.org) here") == ["40 tok/s"]
    assert unsourced_figures("Reads 29 GB/s, and peaks at 1.2 TFLOP/s; 1–2 s in all.") == \
        ["29 GB/s", "1.2 TFLOP/s", "1–2 s"]


def test_a_linked_citation_and_plain_counts_pass():
    cited = "vLLM reports 2–4× the throughput of Orca ([Kwon et al., 2023](https://arxiv.org/abs/2309.06180))."
    assert unsourced_figures(cited) == []
    assert unsourced_figures("A 4096 x 4096 matrix, 8,192 tokens, 12 layers, step 3 of 5.") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_prose_types_no_measured_figure(path):
    cells = json.loads(path.read_text())["cells"]
    allowed = ALLOWED.get(path.stem, set())
    bad = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "markdown":
            bad += [f"cell {index}: {fig!r}" for fig in unsourced_figures("".join(cell["source"]))
                    if fig not in allowed]
    assert not bad, ("figures typed into prose (print them from the cell that measures them, link their "
                     "source, or list a deterministic fact in ALLOWED): " + ", ".join(bad))
