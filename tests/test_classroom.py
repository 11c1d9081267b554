"""Class copies with nbgrader: a student copy holds no solution and still runs; a right answer is graded
right and a wrong one wrong (issue: classroom-ready). nbgrader is a teacher's extra that CI installs
(requirements-teacher.txt); without it these tests skip, except in CI, where they must run."""
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from inferlab import classroom, exercises as ex

LESSONS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))

try:
    import nbgrader  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("nbgrader is not installed (pip install -r requirements-teacher.txt)", allow_module_level=True)


def _nbgrader(course, *args):
    # the kernels nbgrader starts run in the course folder: let them import this checkout's package even where
    # it is not installed (a plain checkout, or an install pointing elsewhere)
    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args, "--force"], cwd=course, capture_output=True,
                         text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout + run.stderr


def _code_lines(key):
    """The lines of a solution that could give it away (not short, not a comment, not the signature
    that the question itself gives)."""
    return [line.strip() for line in ex.solution_code(key).splitlines()
            if len(line.strip()) > 12 and not line.strip().startswith(("#", "def "))]


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Every lesson as an nbgrader assignment, released (``generate_assignment``, through nbgrader's own API
    in this process: one interpreter instead of six)."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader
    root = tmp_path_factory.mktemp("course")
    names = classroom.make_course(root, LESSONS)
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()   # what the CLI reads
    config.CourseDirectory.root = str(root)
    api = NbGraderAPI(config=config)
    for name in names:
        result = api.generate_assignment(name, force=True)
        assert result["success"], result.get("error", "") + result.get("log", "")
    return root


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_student_copy_holds_no_solution_and_no_output(course, lesson):
    number = lesson.name[:2]
    release = nbformat.read(str(course / "release" / f"lesson{number}" / lesson.name), as_version=4)
    source = nbformat.read(str(course / "source" / f"lesson{number}" / lesson.name), as_version=4)
    keys = sorted({k for c in source.cells if c.cell_type == "code" for k, _ in classroom.CHECK_CALL.findall(c.source)})
    assert len(keys) >= 3
    text = "\n".join(c.source for c in release.cells)
    answer_cells = "\n".join(c.source for c in release.cells if c.metadata.get("nbgrader", {}).get("solution"))
    assert "BEGIN SOLUTION" not in text
    for key in keys:
        assert f'ex.graded("{key}"' in text, f"no graded cell for {key}"
        for line in _code_lines(key):
            assert line not in answer_cells, f"the student copy shows solution {key}: {line!r}"
    assert all(not c.get("outputs") for c in release.cells if c.cell_type == "code")


def test_autograde_marks_right_answers_right_and_wrong_ones_wrong(course):
    """One learner answers half the exercises of lesson 02 with the worked solution pasted in, and the
    other half wrongly; nbgrader runs the copy top to bottom and grades each exercise."""
    lesson = next(p for p in LESSONS if p.name.startswith("02_"))
    release = nbformat.read(str(course / "release" / "lesson02" / lesson.name), as_version=4)
    expected = {}
    for cell in release.cells:
        checks = classroom.CHECK_CALL.findall(cell.source) if cell.cell_type == "code" else []
        lines = cell.source.splitlines()
        if not checks or "# your answer here" not in lines:
            continue
        answers = []
        for key, name in checks:
            right = len(expected) % 2 == 0
            expected[key] = right
            answers += classroom._solution_lines(key, name) if right else [f"{name} = -1"]
        stub = lines.index("# your answer here")   # nbgrader's stub, where a learner types
        cell.source = "\n".join(lines[:stub] + answers + lines[stub + 1:])
    submission = course / "submitted" / "ada" / "lesson02" / lesson.name
    submission.parent.mkdir(parents=True)
    nbformat.write(release, str(submission))
    _nbgrader(course, "autograde", "lesson02")
    graded = classroom.solved(course)["lesson02"]["ada"]
    assert graded == expected
    assert re.search(r"ada\s", classroom.report(course))
