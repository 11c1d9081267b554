"""Class copies with nbgrader: a student copy holds no solution and still runs; a right answer is graded
right and a wrong one wrong (issue: classroom-ready). nbgrader is a teacher's extra that CI installs
(requirements-teacher.txt); without it these tests skip, except in CI, where they must run."""
import os
import re
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


def _code_lines(key):
    """The lines of a solution that could give it away (not short, not a comment, not the signature
    that the question itself gives)."""
    return [line.strip() for line in ex.solution_code(key).splitlines()
            if len(line.strip()) > 12 and not line.strip().startswith(("#", "def "))]


def course_api(root):
    """nbgrader's API for the course at ``root``, configured as its command line would be."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()   # what the CLI reads
    config.CourseDirectory.root = str(root)
    return NbGraderAPI(config=config)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Every lesson as an nbgrader assignment, released (``generate_assignment``, through nbgrader's own API
    in this process: one interpreter instead of six)."""
    root = tmp_path_factory.mktemp("course")
    names = classroom.make_course(root, LESSONS)
    api = course_api(root)
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


def _grade(cell):
    return cell.metadata.get("nbgrader", {})


# nbgrader's own gradebook warns about its SQLAlchemy session on every autograde; nothing of ours
@pytest.mark.filterwarnings("ignore:Object of type <Submitted")
def test_autograde_marks_right_answers_right_and_wrong_ones_wrong(course, monkeypatch):
    """One learner answers every other exercise of lesson 02 with the worked solution pasted in, and the
    rest wrongly; nbgrader runs the copy top to bottom and grades each exercise. nbgrader grades cells, not
    lessons, so the learner's copy keeps what the exercises need (the set-up, the model) and the exercises
    that read no measurement (the others are left out, and graded as not solved): the round trip is the
    same, in a third of the time."""
    lesson = next(p for p in LESSONS if p.name.startswith("02_"))
    release = nbformat.read(str(course / "release" / "lesson02" / lesson.name), as_version=4)
    model_cell = next(i for i, c in enumerate(release.cells) if "il.load_model(" in c.source)
    cells, expected = release.cells[:model_cell + 1], {}
    for cell in release.cells[model_cell + 1:]:
        checks = classroom.CHECK_CALL.findall(cell.source) if cell.cell_type == "code" else []
        if checks and all(not ex.get_exercise(key).measured for key, _ in checks):
            lines = cell.source.splitlines()
            answers = []
            for key, name in checks:
                right = len(expected) % 2 == 0
                expected[key] = right
                answers += classroom._solution_lines(key, name) if right else [f"{name} = -1"]
            stub = lines.index("# your answer here")   # nbgrader's stub, where a learner types
            cell.source = "\n".join(lines[:stub] + answers + lines[stub + 1:])
            cells.append(cell)
        elif _grade(cell).get("grade") and _grade(cell)["grade_id"][2:].replace("_", ".") in expected:
            cells.append(cell)
    assert len(expected) >= 3 and set(expected.values()) == {True, False}
    for cell in release.cells:   # an exercise left out of the copy is graded as not solved
        for key, _ in classroom.CHECK_CALL.findall(cell.source) if cell.cell_type == "code" else []:
            expected.setdefault(key, False)
    release.cells = cells
    submission = course / "submitted" / "ada" / "lesson02" / lesson.name
    submission.parent.mkdir(parents=True)
    nbformat.write(release, str(submission))
    # nbgrader's own API in this process (the fixture already imported it); its kernel imports this checkout
    repo = str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    result = course_api(course).autograde("lesson02", "ada", force=True, create=True)
    assert result["success"], result.get("error", "") + result.get("log", "")
    graded = classroom.solved(course)["lesson02"]["ada"]
    assert graded == expected
    assert re.search(r"ada\s", classroom.report(course))
