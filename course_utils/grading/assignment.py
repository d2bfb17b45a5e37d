"""Step 0 of ``course-grade``: the assignment and the submissions to grade.

``load_assignment`` reads ``solutions/<name>.ipynb`` (its check cells, hidden ones included) and,
before any learner's code runs, the sources the kernels will need: the check packages, the kernel
side (``kernel.py``) and its sandbox (``sandbox.py``), so that a learner who edits a file on disk
changes nothing. ``find_submissions`` lists ``<dir>/<learner>/<name>.ipynb`` and ``<dir>/<learner>.ipynb``.
"""
import dataclasses
import importlib.util
import pathlib
import sys

import nbformat

from course_utils.grading import kernel, sandbox
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
    sources: dict  # module name -> (file name, source, is package): the check packages, read once
    entry_modules: list  # the modules of those packages that the check cells import
    kernel_source: str  # kernel.py, read once: what the start-up file of every kernel runs
    sandbox_source: str  # sandbox.py, read once: the limits and the Landlock sandbox the kernel applies

    @property
    def max_points(self):
        return sum(c.points for c in self.checks)


def _package_sources(top_name):
    """``{module name: (file, source, is package)}`` for every ``.py`` file of package ``top_name``."""
    spec = importlib.util.find_spec(top_name)
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return {}
    if not spec.submodule_search_locations:
        origin = pathlib.Path(spec.origin)
        return {top_name: (str(origin), origin.read_text(encoding="utf-8"), False)} if origin.suffix == ".py" else {}
    sources = {}
    for root in spec.submodule_search_locations:
        root = pathlib.Path(root)
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join((top_name,) + (parts[:-1] if is_package else parts))
            sources[name] = (str(path), path.read_text(encoding="utf-8"), is_package)
    return sources


def _read_source(module):
    return pathlib.Path(module.__file__).read_text(encoding="utf-8")


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
    imported = [imported_names(check.source) for check in checks]
    packages = {"course_utils"} | {name.partition(".")[0] for names in imported for name in names}
    stdlib = getattr(sys, "stdlib_module_names", set())
    sources = {}
    for package in sorted(packages - set(stdlib) - {"numpy", "torch", "torchvision", "scipy"}):
        sources.update(_package_sources(package))
    entry = sorted(set().union(*(names & sources.keys() for names in imported)))
    return Assignment(path.stem, solution, checks, sources, entry, _read_source(kernel), _read_source(sandbox))


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
            found[entry.name] = notebook if notebook.is_file() else None
        elif entry.suffix == ".ipynb" and entry.stem not in found:
            found[entry.stem] = entry
    return sorted(found.items())

