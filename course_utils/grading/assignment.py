"""Step 0 of ``course-grade``: the assignment and the submissions to grade.

``load_assignment`` reads ``solutions/<name>.ipynb``: its check cells, hidden ones included, and the
modules they import (which the grader imports before any learner's code runs). ``find_submissions``
lists ``<dir>/<learner>/<name>.ipynb`` and ``<dir>/<learner>.ipynb``.
"""
import dataclasses
import importlib.util
import pathlib

import nbformat

from course_utils.grading.names import imported_names
from course_utils.grading.release import course_metadata, is_check_cell, validate_checks


@dataclasses.dataclass
class Check:
    """One graded check cell of the solution notebook."""
    check_id: str
    points: float
    hidden: bool
    source: str
    position: int  # index of the cell in the solution notebook


@dataclasses.dataclass
class Assignment:
    """What grading one assignment needs, read before any learner's code runs."""
    name: str
    solution: nbformat.NotebookNode
    checks: list
    entry_modules: list  # the modules the check cells import, e.g. ["course_utils.checks.convolution"]

    @property
    def max_points(self):
        return sum(c.points for c in self.checks)


def load_assignment(solutions_dir, name):
    """Read ``solutions/<name>.ipynb``: its checks, and the sources of the packages the checks import."""
    path = pathlib.Path(solutions_dir) / f"{pathlib.Path(name).stem}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"no solution notebook {path}")
    solution = nbformat.read(path, as_version=4)
    validate_checks(solution, path.name)
    checks = []
    for position, cell in enumerate(solution.cells):
        if is_check_cell(cell):
            meta = course_metadata(cell)
            checks.append(Check(meta["check_id"], meta["points"], bool(meta.get("hidden")), cell.source, position))
    if not checks:
        raise ValueError(f"{path} has no check cells (cells with metadata course.check_id)")
    imported = set().union(*(imported_names(check.source) for check in checks))
    entry = sorted(name for name in imported if _is_module(name))
    return Assignment(path.stem, solution, checks, entry)


def _is_module(name):
    """Whether ``name`` is an importable module (``from a.b import c`` also gives ``a.b.c``, maybe a function)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def find_submissions(submissions_dir, assignment):
    """``[(learner, path or None)]``: ``<dir>/<learner>/<assignment>.ipynb`` or ``<dir>/<learner>.ipynb``."""
    submissions_dir = pathlib.Path(submissions_dir)
    if not submissions_dir.is_dir():
        raise FileNotFoundError(f"submissions folder {submissions_dir} does not exist")
    found = {}
    for entry in sorted(submissions_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            notebook = entry / f"{assignment}.ipynb"
            found[entry.name] = notebook if notebook.is_file() or notebook.is_symlink() else None
        elif entry.suffix == ".ipynb" and entry.stem not in found:
            found[entry.stem] = entry
    return sorted(found.items())

