"""Write ``exercises/`` from ``solutions/`` (the single source of every exercise).

Usage::

    python -m course_utils.grading.release            # regenerate every exercise notebook
    python -m course_utils.grading.release --check    # exit 1 when exercises/ is out of date
    course-release [--check]                          # the same, as installed by the package

What the release does to each solution notebook:

* in code cells, every region between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
  (markers included) becomes ``raise NotImplementedError(...)`` at the marker's
  indentation, so a function keeps its signature and docstring;
* in Markdown cells, such a region becomes ``*Your answer here.*``;
* check cells marked hidden (``metadata.course.hidden: true``) are left out; the
  grader puts them back (see ``course_utils.grading.rebuild``);
* outputs and execution counts are cleared.

Check cells carry ``metadata.course = {"check_id": ..., "points": ...}``; the release
refuses a notebook whose check ids repeat or whose points are not positive numbers,
and one whose markers are unbalanced, naming the cell.
"""
import argparse
import copy
import pathlib
import re
import sys

import nbformat

from course_utils.grading.constants import EXERCISES_DIR, SOLUTIONS_DIR

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = 'raise NotImplementedError("exercise: replace this line with your code")'
MARKDOWN_STUB = "*Your answer here.*"
_MARKER = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>### (BEGIN|END) SOLUTION)\s*$")


class ReleaseError(ValueError):
    """A solution notebook cannot be released as it stands."""


def course_metadata(cell):
    """The ``course`` entry of a cell's metadata (an empty dict when it has none)."""
    return cell.get("metadata", {}).get("course", {})


def is_check_cell(cell):
    return "check_id" in course_metadata(cell)


def strip_solution(source, cell_type, where):
    """Replace every solution region of one cell's source; ``where`` names the cell in errors."""
    out, inside = [], False
    for number, line in enumerate(source.splitlines(), start=1):
        match = _MARKER.match(line)
        if match and match["marker"] == BEGIN:
            if inside:
                raise ReleaseError(f"{where}, line {number}: '{BEGIN}' inside another solution region")
            inside = True
            out.append(match["indent"] + (CODE_STUB if cell_type == "code" else MARKDOWN_STUB))
        elif match and match["marker"] == END:
            if not inside:
                raise ReleaseError(f"{where}, line {number}: '{END}' without a '{BEGIN}' before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ReleaseError(f"{where}: '{BEGIN}' is never closed by '{END}'")
    return "\n".join(out)


def validate_checks(notebook, name):
    """Raise ``ReleaseError`` unless every check cell has a unique id and positive points."""
    seen = {}
    for index, cell in enumerate(notebook.cells):
        if not is_check_cell(cell):
            continue
        meta = course_metadata(cell)
        check_id, points = meta["check_id"], meta.get("points")
        where = f"{name}, cell {index}"
        if cell.cell_type != "code":
            raise ReleaseError(f"{where}: check {check_id!r} must be a code cell")
        if not isinstance(check_id, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", check_id):
            raise ReleaseError(f"{where}: check_id must be letters, digits, '.', '_' or '-'; got {check_id!r}")
        if check_id in seen:
            raise ReleaseError(f"{where}: check_id {check_id!r} repeats cell {seen[check_id]}")
        if isinstance(points, bool) or not isinstance(points, (int, float)) or points <= 0:
            raise ReleaseError(f"{where}: check {check_id!r} needs positive 'points'; got {points!r}")
        if BEGIN in cell.source:
            raise ReleaseError(f"{where}: check {check_id!r} must not hold a solution region")
        seen[check_id] = index


def make_exercise(solution, name="notebook"):
    """Return the exercise notebook (a new ``NotebookNode``) made from a solution notebook."""
    validate_checks(solution, name)
    exercise = copy.deepcopy(solution)
    cells = []
    for index, cell in enumerate(exercise.cells):
        if course_metadata(cell).get("hidden"):
            continue
        if cell.cell_type in ("code", "markdown"):
            cell.source = strip_solution(cell.source, cell.cell_type, f"{name}, cell {index}")
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        cells.append(cell)
    exercise.cells = cells
    exercise.metadata.pop("widgets", None)
    return exercise


def render(notebook):
    """The notebook as the exact text written to disk."""
    return nbformat.writes(notebook, version=4) + "\n"


def release(solutions_dir, exercises_dir, check=False, names=None):
    """Write (or, with ``check``, compare) every exercise; return a list of problems found."""
    solutions_dir, exercises_dir = pathlib.Path(solutions_dir), pathlib.Path(exercises_dir)
    if not solutions_dir.is_dir():
        raise ReleaseError(f"solutions folder {solutions_dir} does not exist")
    sources = sorted(solutions_dir.glob("*.ipynb"))
    if names:
        wanted = {pathlib.Path(n).stem for n in names}
        missing = wanted - {p.stem for p in sources}
        if missing:
            raise ReleaseError(f"no solution notebook named {sorted(missing)} in {solutions_dir}")
        sources = [p for p in sources if p.stem in wanted]
    problems = []
    for source in sources:
        solution = nbformat.read(source, as_version=4)
        text = render(make_exercise(solution, source.name))
        target = exercises_dir / source.name
        if check:
            if not target.is_file():
                problems.append(f"{target} is missing")
            elif target.read_text(encoding="utf-8") != text:
                problems.append(f"{target} is out of date with {source}")
        else:
            exercises_dir.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    if check and not names:
        expected = {p.name for p in sources}
        for stale in sorted(exercises_dir.glob("*.ipynb")):
            if stale.name not in expected:
                problems.append(f"{stale} has no solution notebook in {solutions_dir}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m course_utils.grading.release",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names to release (default: all)")
    parser.add_argument("--check", action="store_true", help="fail when exercises/ is out of date, write nothing")
    parser.add_argument("--solutions", default=SOLUTIONS_DIR, type=pathlib.Path)
    parser.add_argument("--exercises", default=EXERCISES_DIR, type=pathlib.Path)
    args = parser.parse_args(argv)
    try:
        problems = release(args.solutions, args.exercises, check=args.check, names=args.names)
    except ReleaseError as error:
        print(f"release: {error}", file=sys.stderr)
        return 2
    if problems:
        print("exercises/ is out of date; run `python -m course_utils.grading.release`:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("exercises/ is up to date." if args.check else f"wrote exercises to {args.exercises}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
