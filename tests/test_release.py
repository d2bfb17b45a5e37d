"""The release command: solutions/ -> exercises/, and its --check mode."""
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_utils.grading import release
from course_utils.grading.constants import EXERCISES_DIR, SOLUTIONS_DIR


def solution_notebook():
    exercise = new_code_cell(
        'def double(x):\n'
        '    """Return 2 x."""\n'
        '    ### BEGIN SOLUTION\n'
        '    y = x + x\n'
        '    return y\n'
        '    ### END SOLUTION\n'
    )
    exercise.outputs = [new_output("stream", name="stdout", text="hello\n")]
    exercise.execution_count = 3
    check = new_code_cell('"""Check."""\nassert double(2) == 4', metadata={"course": {"check_id": "t-double", "points": 2}})
    hidden = new_code_cell('assert double(3) == 6', metadata={"course": {"check_id": "t-hidden", "points": 1, "hidden": True}})
    answer = new_markdown_cell("Why?\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION")
    return new_notebook(cells=[new_markdown_cell("# Title"), exercise, check, hidden, answer])


def test_solution_region_becomes_a_stub_keeping_signature_and_docstring():
    exercise = release.make_exercise(solution_notebook())
    source = exercise.cells[1].source
    assert source == 'def double(x):\n    """Return 2 x."""\n    ' + release.CODE_STUB
    assert "x + x" not in source and "BEGIN" not in source


def test_outputs_cleared_hidden_checks_dropped_markdown_answer_replaced():
    exercise = release.make_exercise(solution_notebook())
    assert [c.metadata.get("course", {}).get("check_id") for c in exercise.cells] == [None, None, "t-double", None]
    assert exercise.cells[1].outputs == [] and exercise.cells[1].execution_count is None
    assert exercise.cells[3].source == "Why?\n\n" + release.MARKDOWN_STUB


def test_the_stub_raises_not_implemented():
    namespace = {}
    exec(release.make_exercise(solution_notebook()).cells[1].source, namespace)
    with pytest.raises(NotImplementedError):
        namespace["double"](2)


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n### END SOLUTION", "without a '### BEGIN SOLUTION'"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside another solution region"),
])
def test_unbalanced_markers_are_refused_naming_the_cell(source, message):
    notebook = new_notebook(cells=[new_code_cell("pass"), new_code_cell(source)])
    with pytest.raises(release.ReleaseError, match=f"nb, cell 1.*{message}"):
        release.make_exercise(notebook, "nb")


@pytest.mark.parametrize("metadata, message", [
    ({"check_id": "a", "points": 0}, "needs positive 'points'"),
    ({"check_id": "a", "points": True}, "needs positive 'points'"),
    ({"check_id": "a b", "points": 1}, "check_id must be letters"),
])
def test_bad_check_metadata_is_refused(metadata, message):
    notebook = new_notebook(cells=[new_code_cell("check()", metadata={"course": metadata})])
    with pytest.raises(release.ReleaseError, match=message):
        release.make_exercise(notebook, "nb")


def test_repeated_check_ids_are_refused():
    meta = {"course": {"check_id": "same", "points": 1}}
    notebook = new_notebook(cells=[new_code_cell("a()", metadata=meta), new_code_cell("b()", metadata=meta)])
    with pytest.raises(release.ReleaseError, match="'same' repeats cell 0"):
        release.make_exercise(notebook, "nb")


def test_release_then_check_in_folders(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(solution_notebook(), solutions / "01_demo.ipynb")
    assert release.release(solutions, exercises, check=True) == [f"{exercises / '01_demo.ipynb'} is missing"]
    assert release.release(solutions, exercises) == []
    assert release.release(solutions, exercises, check=True) == []
    # a hand edit of the exercise is caught
    (exercises / "01_demo.ipynb").write_text((exercises / "01_demo.ipynb").read_text().replace("Title", "Edited"))
    assert "out of date" in release.release(solutions, exercises, check=True)[0]
    # an exercise without a solution is caught
    release.release(solutions, exercises)
    (exercises / "99_orphan.ipynb").write_text("{}")
    assert "has no solution notebook" in release.release(solutions, exercises, check=True)[0]


def test_main_exit_codes(tmp_path, capsys):
    solutions, exercises = tmp_path / "s", tmp_path / "e"
    solutions.mkdir()
    nbformat.write(solution_notebook(), solutions / "01_demo.ipynb")
    args = ["--solutions", str(solutions), "--exercises", str(exercises)]
    assert release.main(args + ["--check"]) == 1
    assert release.main(args) == 0
    assert release.main(args + ["--check"]) == 0
    assert release.main(args + ["no_such_notebook"]) == 2
    assert "no solution notebook named" in capsys.readouterr().err


def test_command_line_help_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "course_utils.grading.release", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--check" in result.stdout, result.stderr


def test_repository_exercises_are_up_to_date():
    assert release.release(SOLUTIONS_DIR, EXERCISES_DIR, check=True) == []
