"""What a stored notebook shows without a kernel (GitHub, nbviewer) must be true and read right."""
import json
import re
from pathlib import Path

import pytest

from inferlab.measure.timing import IMPOSSIBLE

NOTEBOOKS = sorted(p for p in (Path(__file__).parent.parent / "notebooks").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)


def stored_texts(path):
    for index, cell in enumerate(json.loads(path.read_text())["cells"]):
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain") or ""
            yield index, out, "".join(text) if isinstance(text, list) else text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_physically_impossible_result_is_stored(path):
    bad = [i for i, _, text in stored_texts(path) if IMPOSSIBLE in text]
    assert not bad, f"cells {bad} stored a physically impossible result: re-run on a quiet machine"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_progress_bars_are_stored_in_their_final_state(path):
    frozen = [i for i, _, text in stored_texts(path) if re.search(r"(^|\s)0%\|", text)]
    assert not frozen, f"cells {frozen} store a progress bar at 0% (a widget's first frame)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_metadata_widgets_is_valid_for_github(path):
    widgets = json.loads(path.read_text())["metadata"].get("widgets")
    if widgets is not None:
        for key, value in widgets.items():
            assert "state" in value, f"metadata.widgets[{key!r}] lacks 'state' (GitHub refuses to render it)"
