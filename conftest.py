"""After each core notebook's last cell, nbval runs one more item in the same kernel: every exercise's
worked solution, pasted as a learner would, must run, leave the notebook's names alone and pass its
own check (inferlab.exercises.check_solutions)."""
import os
import re
from collections import defaultdict
from pathlib import Path

import nbformat

os.environ["INFERLAB_PROGRESS"] = "off"   # tests and the notebook kernels they start keep no progress file


def pytest_collection_modifyitems(session, config, items):
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:
        return
    last = {}
    for index, item in enumerate(items):
        if isinstance(item, IPyNbCell):
            last[item.parent] = index
    for notebook, index in sorted(last.items(), key=lambda kv: -kv[1]):
        match = re.match(r"(\d\d)_", Path(str(notebook.fspath)).name)
        if match is None:
            continue
        source = ("from inferlab import exercises as _exercises\n"
                  f"_exercises.check_solutions({int(match.group(1))}, globals())")
        items.insert(index + 1, IPyNbCell.from_parent(
            notebook, name="solutions", cell_num=items[index].cell_num + 1,
            cell=nbformat.v4.new_code_cell(source), options=defaultdict(bool, check=False)))
