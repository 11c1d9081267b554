"""Class copies and grading with nbgrader (the teacher's guide, TEACHING.md).

The lessons in ``notebooks/`` are already the learner's version: every exercise cell starts as
``answer = None`` and calls ``ex.check``. For a class, ``make_course`` turns each lesson into an
nbgrader *source* notebook: the worked solution goes into the exercise cell between nbgrader's
``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers, and a locked, graded cell after it calls
``ex.graded`` (silent for the learner, an assertion when nbgrader grades). nbgrader's own commands then do the rest:

    python -m inferlab.classroom make ~/course            # source/ + nbgrader_config.py
    cd ~/course && nbgrader generate_assignment lesson01  # release/: student copies, no solutions, no outputs
    nbgrader autograde lesson01                           # submitted/<student>/lesson01 -> autograded/, gradebook.db
    python -m inferlab.classroom report ~/course          # which exercise each learner solved (from gradebook.db)

nbgrader is a teacher's extra (``pip install -r requirements-teacher.txt``), not needed by learners.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

CHECK_CALL = re.compile(r'ex\.check\(\s*"(\d+\.\d+)"\s*,\s*(\w+)\s*[,)]')
NBGRADER_CONFIG = '''c = get_config()
c.CourseDirectory.root = {root!r}
# the cell keeps its `answer = None` line, so a student copy runs from top to bottom unanswered
c.ClearSolutions.code_stub = {{"python": "# your answer here"}}
c.ExecutePreprocessor.timeout = 600
'''


def _grade_id(key: str) -> str:
    return "ex" + key.replace(".", "_")


def _solution_lines(key: str, name: str) -> list:
    from .exercises import solution_code
    code = solution_code(key).rstrip("\n")
    assigns_name = re.search(rf"^{re.escape(name)}\s*=", code, flags=re.M)
    if name != "answer" and not assigns_name:
        code += f"\n{name} = answer"
    return code.splitlines()


def source_notebook(path):
    """The nbgrader source version of one lesson: solutions between markers, one graded cell per check."""
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    cells = []
    for cell in nb.cells:
        checks = CHECK_CALL.findall(cell.source) if cell.cell_type == "code" else []
        if not checks:
            cells.append(cell)
            continue
        lines = cell.source.splitlines()
        first = next(i for i, line in enumerate(lines) if CHECK_CALL.search(line))
        solution = [line for key, name in checks for line in _solution_lines(key, name)]
        cell.source = "\n".join(lines[:first] + ["### BEGIN SOLUTION", *solution, "### END SOLUTION"] + lines[first:])
        cell.outputs, cell.execution_count = [], None
        cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "schema_version": 3,
                                     "grade_id": "answer_" + "_".join(_grade_id(k) for k, _ in checks)}
        cells.append(cell)
        for key, name in checks:
            from .exercises import get_exercise
            measured = get_exercise(key).measured
            extra = (f", measured={measured}" if measured else "") + "".join(f", {n}={n}" for n in get_exercise(key).uses)
            test = nbformat.v4.new_code_cell(
                f'# graded by nbgrader (silent while you work): exercise {key}\nex.graded("{key}", {name}{extra})')
            test.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": 1,
                                         "schema_version": 3, "grade_id": _grade_id(key)}
            cells.append(test)
    nb.cells = cells
    return nb


def make_course(course_dir, notebooks=None) -> list:
    """Write ``source/lessonNN/<lesson>.ipynb`` for each lesson (default: the six core lessons next to this
    package) and an ``nbgrader_config.py``; return the assignment names."""
    import nbformat
    course = Path(course_dir).expanduser().resolve()
    if notebooks is None:
        notebooks = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    notebooks = [Path(p) for p in notebooks]
    if not notebooks:
        raise ValueError("notebooks: no lesson notebooks found (expected notebooks/NN_*.ipynb)")
    names = []
    for path in notebooks:
        match = re.match(r"(\d\d)_", path.name)
        if match is None:
            raise ValueError(f"notebooks: {path.name} is not a lesson (expected a name like 01_xxx.ipynb)")
        name = f"lesson{match.group(1)}"
        target = course / "source" / name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(source_notebook(path), str(target))
        names.append(name)
    (course / "nbgrader_config.py").write_text(NBGRADER_CONFIG.format(root=str(course)))
    return names


def solved(course_dir) -> dict:
    """``{assignment: {student: {exercise key: solved?}}}`` from the course's nbgrader gradebook."""
    from nbgrader.api import Gradebook
    course = Path(course_dir).expanduser().resolve()
    result = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for assignment in gb.assignments:
            per_student = result.setdefault(assignment.name, {})
            for submission in assignment.submissions:
                marks = per_student.setdefault(submission.student_id, {})
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        key = grade.name[2:].replace("_", ".")
                        marks[key] = grade.score >= grade.max_score > 0
    return result


def report(course_dir) -> str:
    """A table per assignment: one row per learner, ✅/❌ per exercise."""
    lines = []
    for assignment, students in sorted(solved(course_dir).items()):
        keys = sorted({k for marks in students.values() for k in marks}, key=lambda k: tuple(map(int, k.split("."))))
        lines.append(f"{assignment}: " + "  ".join(keys))
        for student, marks in sorted(students.items()):
            cells = "  ".join(("✅" if marks.get(k) else "❌").center(len(k)) for k in keys)
            lines.append(f"  {student:<16} {cells}   {sum(marks.values())}/{len(keys)}")
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("make", "report"):
        raise SystemExit("usage: python -m inferlab.classroom make|report COURSE_DIR")
    if argv[0] == "report":
        print(report(argv[1]))
        return
    names = make_course(argv[1])
    print(f"wrote {len(names)} source assignments ({', '.join(names)}) and nbgrader_config.py in {argv[1]}")
    print(f"next: cd {argv[1]} && nbgrader generate_assignment {names[0]}")


if __name__ == "__main__":
    main()
