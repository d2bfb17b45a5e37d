"""The notebooks as files: exercises fail every check, lectures and solutions are committed executed.

nbval (in the README's test command) executes every lecture and solution notebook and
fails on any error, so every check passes on its solution. Here each generated exercise
notebook is executed with its solution regions stubbed out, and every graded check cell
must fail there with an AssertionError (not a NameError or a crash of the notebook).
"""
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]
LECTURES = sorted((REPO / "notebooks").glob("*.ipynb"))
SOLUTIONS = sorted((REPO / "solutions").glob("*.ipynb"))
EXERCISES = sorted((REPO / "exercises").glob("*.ipynb"))


def check_cells(notebook):
    return [(i, c) for i, c in enumerate(notebook.cells) if "check_id" in c.metadata.get("course", {})]


def names(paths):
    return [p.name for p in paths]


@pytest.mark.parametrize("path", EXERCISES, ids=names(EXERCISES))
def test_every_check_fails_on_the_unsolved_exercise(path):
    notebook = nbformat.read(path, as_version=4)
    checks = check_cells(notebook)
    assert checks, f"{path.name} has no graded check cell"
    NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for index, cell in checks:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        check_id = cell.metadata["course"]["check_id"]
        assert errors, f"{path.name}: check {check_id} (cell {index}) passed on the unsolved exercise"
        assert errors[0].ename == "AssertionError", (
            f"{path.name}: check {check_id} (cell {index}) should fail with AssertionError, "
            f"got {errors[0].ename}: {errors[0].evalue}")


@pytest.mark.parametrize("path", LECTURES + SOLUTIONS, ids=names(LECTURES) + names(SOLUTIONS))
def test_lectures_and_solutions_are_committed_executed(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code" and c.source.strip()]
    unexecuted = [i for i, c in enumerate(notebook.cells) if c in code and c.execution_count is None]
    assert not unexecuted, f"{path.name}: cells {unexecuted} have no outputs; run scripts/execute_notebooks.py"
    errors = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"
              and any(o.output_type == "error" for o in c.outputs)]
    assert not errors, f"{path.name}: cells {errors} were committed with an error"


@pytest.mark.parametrize("path", EXERCISES, ids=names(EXERCISES))
def test_exercises_are_committed_clean(path):
    notebook = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), f"{path.name} has outputs"
    assert "BEGIN SOLUTION" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", LECTURES + SOLUTIONS + EXERCISES,
                         ids=names(LECTURES) + names(SOLUTIONS) + names(EXERCISES))
def test_nothing_is_downloaded_by_default(path):
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            code = line.split("#", 1)[0]
            assert not re.search(r"download\s*=\s*True|pretrained\s*=\s*True|\bweights\s*=\s*(?!None\b)['\"A-Z]", code), (
                f"{path.name}, cell {index} downloads by default: {line.strip()!r}; make it an opt-in, commented line")


def test_every_solution_has_a_lecture_and_the_chapters_are_numbered():
    lectures = {p.stem for p in LECTURES}
    for solution in SOLUTIONS:
        assert solution.stem in lectures, f"solutions/{solution.name} has no lecture notebooks/{solution.name}"
    for path in LECTURES + SOLUTIONS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+", path.stem), f"{path.name} must be named NN_topic.ipynb"
