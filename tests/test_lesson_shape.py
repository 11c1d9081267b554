"""Each core lesson fits a 45-minute class (DESIGN.md, issue: classroom-ready): at most about 1,800
words of prose, objectives first, predict-then-measure, two or more live widgets each with its picture,
three or more checked exercises (one a prediction checked against the learner's own measurement), a
summary, a pointer to the next lesson, and links to its deep dives in notebooks/extras/."""
import json
import re
from pathlib import Path

import pytest

from inferlab import exercises as ex

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
CORE = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
NOT_YET_CUT = set()   # every core lesson is cut to a 45-minute class
LESSONS = [pytest.param(p, marks=pytest.mark.xfail(strict=False, reason="not yet cut to a 45-minute core"))
           if p.name[:2] in NOT_YET_CUT else p for p in CORE]
EXTRAS = sorted(NOTEBOOKS.glob("extras/*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
MAX_WORDS = 1800


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _markdown(path):
    return ["".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown"]


def prose_words(markdown: str) -> int:
    """Words a learner reads: code blocks, HTML comments and link targets do not count."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return len(re.findall(r"[A-Za-z0-9][\w'’.,-]*", text))


def test_word_count_ignores_code_and_links():
    assert prose_words("Read [the paper](https://example.org/a/b) now.\n```python\nx = 1\n```") == 4


def test_core_lessons_and_extras_exist():
    assert [p.name[:2] for p in CORE] == ["01", "02", "03", "04", "05", "06"]
    assert EXTRAS, "no deep dives in notebooks/extras/"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_prose_fits_a_class(path):
    words = sum(prose_words(m) for m in _markdown(path))
    assert words <= MAX_WORDS, f"{words} words of prose (at most {MAX_WORDS}): move depth to notebooks/extras/"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_objectives_summary_next_and_deep_dives(path):
    markdown = _markdown(path)
    assert any(re.search(r"objectives|you will", m, re.I) for m in markdown[:3]), "no learning objectives at the top"
    assert any(re.search(r"^#+ .*summary", m, re.I | re.M) for m in markdown), "no summary section"
    assert any(re.search(r"predict", m, re.I) for m in markdown), "no predict-then-measure moment"
    number = int(path.name[:2])
    text = "\n".join(markdown)
    if number < 6:
        assert re.search(rf"\]\({number + 1:02d}_[\w-]+\.ipynb\)", text), "no link to the next lesson"
    for extra in EXTRAS:
        if extra.name.startswith(f"{number:02d}"):
            assert f"extras/{extra.name}" in text, f"the lesson does not link its deep dive {extra.name}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_live_widgets_carry_their_picture_and_a_sentence(path):
    bundles = [o["data"] for c in _cells(path) if c["cell_type"] == "code" for o in c.get("outputs", [])
               if WIDGET in o.get("data", {})]
    assert len(bundles) >= 2, f"{len(bundles)} live widgets stored (at least 2; execute the notebook)"
    for data in bundles:
        text = "".join(data.get("text/plain", ""))
        assert "image/png" in data, "a widget without its static picture (use inferlab.viz.live.live)"
        assert not re.match(r"\w+\(children=|\w+\(value=", text), f"a widget's fallback text is its repr: {text[:60]}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_checked_exercises_with_a_prediction(path):
    sources = "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")
    keys = sorted(set(re.findall(r'ex\.check\(\s*"(\d+\.\d+)"', sources)))
    assert len(keys) >= 3, f"{len(keys)} checked exercises (at least 3)"
    assert any(ex.get_exercise(k).measured for k in keys), "no prediction checked against the learner's own measurement"
