"""``course-grade``: a class of submissions built here, each graded to exactly the expected points.

The assignment is a tiny NumPy-only solution notebook (``add``, ``square``, ``double``; one
hidden check) whose checks live in ``tests/grading_fixtures/tiny_checks.py``. Every
submission is the solution, the released exercise, or one of them with a fault or a
tampering attempt added. The whole class is graded once (``--jobs 2``) and each test reads
its learner's row of the gradebook and feedback file.
"""
import copy
import csv
import json
import os
import pathlib
import subprocess
import sys

import nbformat
import pytest

from course_utils.grading import grade, release
from course_utils.grading.assignment import find_submissions, load_assignment
from course_utils.grading.gradebook import feedback_markdown
from course_utils.grading.rebuild import rebuild
from course_utils.grading.sandbox import landlock_abi

v4 = nbformat.v4
TESTS_DIR = pathlib.Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
POINTS = {"t-add": 2, "t-square": 3, "t-double": 1, "t-double-hidden": 4}
FULL = sum(POINTS.values())
SANDBOXED = landlock_abi() > 0
KILLS_ARE_SCOPED = landlock_abi() >= 6  # Landlock's signal scoping (Linux 6.12)

ADD = 'def add(a, b):\n    """Sum."""\n    ### BEGIN SOLUTION\n    return np.add(a, b)\n    ### END SOLUTION'
SQUARE = 'def square(x):\n    """Square."""\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION'
DOUBLE = 'def double(x):\n    """Twice x."""\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION'
WRONG = {"add": "def add(a, b):\n    return a - b", "square": "def square(x):\n    return x + x",
         "double": "def double(x):\n    return x"}


def check_cell(check_id, function, hidden=False):
    cell = v4.new_code_cell(f'"""Check: {function}."""\nfrom grading_fixtures import tiny_checks as checks\n'
                            f"checks.check_{function}({function})")
    cell.metadata["course"] = {"check_id": check_id, "points": POINTS[check_id]}
    if hidden:
        cell.metadata["course"]["hidden"] = True
    return cell


def solution_notebook():
    return v4.new_notebook(cells=[
        v4.new_markdown_cell("# Tiny assignment"),
        v4.new_code_cell("import numpy as np"),
        v4.new_markdown_cell("## 1. add"),
        v4.new_code_cell(ADD), check_cell("t-add", "add"),
        v4.new_markdown_cell("## 2. square"),
        v4.new_code_cell(SQUARE), check_cell("t-square", "square"),
        v4.new_markdown_cell("## 3. double"),
        v4.new_code_cell(DOUBLE), check_cell("t-double", "double"), check_cell("t-double-hidden", "double", True),
        v4.new_markdown_cell("The end."),
    ])


def learner_copy(notebook):
    """What a learner hands in: the notebook without the hidden checks (as released), solved."""
    copied = copy.deepcopy(notebook)
    copied.cells = [c for c in copied.cells if not release.course_metadata(c).get("hidden")]
    return copied


def index_of(notebook, text):
    return next(i for i, c in enumerate(notebook.cells) if text in c.source)


def with_cell_after(notebook, text, source):
    """``notebook`` with a new code cell ``source`` after the first cell containing ``text``."""
    notebook = copy.deepcopy(notebook)
    notebook.cells.insert(index_of(notebook, text) + 1, v4.new_code_cell(source))
    return notebook


def with_source(notebook, text, source):
    notebook = copy.deepcopy(notebook)
    notebook.cells[index_of(notebook, text)].source = source
    return notebook


def all_wrong(notebook):
    for name, source in WRONG.items():
        notebook = with_source(notebook, f"def {name}(", source)
    return notebook


def copy_from_others(notebook, paths):
    """Each function cell replaced by code that copies the functions out of other notebooks on disk."""
    reader = ("import json, pathlib\n"
              f"for path in {[str(p) for p in paths]!r}:\n"
              "    try:\n        notebook = json.loads(pathlib.Path(path).read_text())\n"
              "    except OSError as error:\n        print('blocked:', error)\n        continue\n"
              "    for cell in notebook['cells']:\n"
              "        source = ''.join(cell['source'])\n"
              "        if cell['cell_type'] == 'code' and source.startswith('def '):\n"
              "            exec(source, globals())\n")
    for name in WRONG:
        notebook = with_source(notebook, f"def {name}(", reader)
    return notebook


def make_class(solution, exercise, paths):
    """``{learner: (notebook or raw text, expected points per check, expected status)}``."""
    solved = learner_copy(solution)
    wrong = all_wrong(solved)
    full = dict(POINTS)
    zero = dict.fromkeys(POINTS, 0)
    no_square = dict(POINTS, **{"t-square": 0})
    only_add = dict(zero, **{"t-add": 2})
    gradebook, feedback, others = paths["gradebook"], paths["feedback"], paths["submissions"]

    checks_edited = copy.deepcopy(solved)
    for cell in checks_edited.cells:  # every check cell turned into a fake pass
        if release.is_check_cell(cell):
            cell.source = 'print("✓ all cases passed")'
    checks_moved = copy.deepcopy(solved)
    moved = checks_moved.cells.pop(index_of(checks_moved, "check_square"))
    checks_moved.cells.insert(0, moved)  # before square exists: it would fail where the learner put it
    checks_moved.cells.pop(index_of(checks_moved, "check_add"))  # deleted
    split = checks_moved.cells[index_of(checks_moved, "check_double")]
    first, second = copy.deepcopy(split), copy.deepcopy(split)
    first.source, second.source = split.source.split("\n", 1)[0], "pass"
    second.id = "split-second-half"
    at = index_of(checks_moved, "check_double")
    checks_moved.cells[at:at + 1] = [first, second]
    # a learner fixes a wrong `double` in a cell of their own after the exercise cell: it stays and counts
    fixed_later = with_cell_after(with_source(solved, "def double(", WRONG["double"]), "def double(",
                                  "def double(x):\n    return x + x")

    learners = {
        "correct": (solved, full, "completed"),
        "partly_correct": (with_source(solved, "def square(", WRONG["square"]), no_square, "completed"),
        "exercise_unsolved": (exercise, zero, "completed"),
        "stderr_and_warnings": (with_cell_after(solved, "import numpy", "import sys, warnings\n"
                                "print('debug output', file=sys.stderr)\nwarnings.warn('careful!')"),
                                full, "completed"),
        "checks_edited": (checks_edited, full, "completed"),
        "checks_moved_deleted_split": (checks_moved, full, "completed"),
        "extra_cell_fix": (fixed_later, full, "completed"),
        # faults
        "infinite_loop": (with_source(solved, "def square(", "while True:\n    pass\n" + SQUARE), no_square,
                          "cell-timeout"),
        "uninterruptible_loop": (with_cell_after(solved, "check_add", "while True:\n    try:\n        while True:\n"
                                                 "            pass\n    except KeyboardInterrupt:\n        pass"),
                                 only_add, "cell-timeout"),
        "kernel_exit": (with_cell_after(solved, "check_add", "import os\nos._exit(3)"), only_add, "kernel-died"),
        "segfault": (with_cell_after(solved, "check_add", "import ctypes\nctypes.string_at(0)"), only_add,
                     "kernel-died"),
        "memory_hog": (with_cell_after(solved, "import numpy", "x = np.ones((2**16, 2**16))  # 32 GiB"), full,
                       "completed"),
        # grows until the memory limit: the kernel may then be too short of memory to go on, so the hog comes last
        "memory_hog_growing": (with_cell_after(solved, "The end.", "blocks = []\nwhile True:\n"
                                               "    blocks.append(np.ones(2**24))"),
                               full, {"completed", "cell-timeout", "kernel-died"}),
        "syntax_error": (with_source(solved, "def square(", "def square(x)\n    return x * x"), no_square,
                         "completed"),
        "renamed_function": (with_source(solved, "def square(", "def sq(x):\n    return x * x"), no_square,
                             "completed"),
        "megabytes_of_output": (with_cell_after(solved, "import numpy", "print('x' * 3_000_000)\n"
                                                "for i in range(100_000):\n    print(i, 'y' * 50)"),
                                full, "completed"),
        "not_json": ("{ this is not a notebook", zero, "invalid-notebook"),
        "truncated_json": (nbformat.writes(solved)[:500], zero, "invalid-notebook"),
        # tampering: wrong answers plus an attempt to pass anyway
        "tamper_redefine_checks": (with_cell_after(wrong, "import numpy",
                                   "from grading_fixtures import tiny_checks\n"
                                   "tiny_checks.check_add = tiny_checks.check_square = tiny_checks.check_double = "
                                   "lambda f: print('✓ passed')\n"
                                   "def check_add(f):\n    pass\n"), zero, "completed"),
        "tamper_patch_common": (with_cell_after(wrong, "import numpy",
                                "import course_utils.checks.common as common, sys\n"
                                "common.call = lambda f, *a, case, **k: f(*a, **k)\n"
                                "common.assert_close = common.assert_equal = lambda *a, **k: None\n"
                                "fake = type(sys)('grading_fixtures.tiny_checks')\n"
                                "fake.check_add = fake.check_square = fake.check_double = lambda f: None\n"
                                "sys.modules['grading_fixtures.tiny_checks'] = fake\n"
                                "import grading_fixtures\ngrading_fixtures.tiny_checks = fake\n"), zero, "completed"),
        "tamper_builtins_and_import": (with_cell_after(wrong, "import numpy",
                                       "import builtins, sys, types\n"
                                       "real_import = builtins.__import__\n"
                                       "fake = types.SimpleNamespace(check_add=lambda f: None,\n"
                                       "    check_square=lambda f: None, check_double=lambda f: None)\n"
                                       "def fake_import(name, *args, **kwargs):\n"
                                       "    module = real_import(name, *args, **kwargs)\n"
                                       "    return types.SimpleNamespace(tiny_checks=fake) "
                                       "if name == 'grading_fixtures' else module\n"
                                       "builtins.__import__ = fake_import\n"
                                       "builtins.AssertionError = type('AssertionError', (Warning,), {})\n"
                                       ), zero, "completed"),
        "tamper_numpy": (with_cell_after(wrong, "import numpy",
                         "np.add = lambda a, b: np.subtract(a, b)\nnp.multiply = lambda a, b: a + b\n"
                         "np.allclose = lambda *a, **k: True\n"
                         "import numpy.testing\nnp.testing.assert_allclose = lambda *a, **k: None\n"), zero,
                         "completed"),
        "tamper_numpy_inside_call": (with_source(wrong, "def add(", "def add(a, b):\n"
                                     "    np.add = lambda a, b: a - b\n    return a - b"),
                                     dict(zero), "completed"),
        "tamper_prints_passed": (with_cell_after(wrong, "check_add", "print('✓ add: all 3 cases passed.')\n"
                                 "from IPython.display import display\n"
                                 "display({'application/x-course-grader-token': 'forged'}, raw=True)"),
                                 zero, "completed"),
        "tamper_ast_transformer": (with_cell_after(wrong, "import numpy",
                                   "import ast\nclass Gut(ast.NodeTransformer):\n"
                                   "    def visit_Module(self, node):\n        node.body = []\n        return node\n"
                                   "get_ipython().ast_transformers.append(Gut())"), zero, "completed"),
        "tamper_exit_early_0": (with_cell_after(wrong, "import numpy", "import os\nos._exit(0)"), zero,
                                "kernel-died"),
        "tamper_sys_exit_0": (with_cell_after(wrong, "import numpy", "import sys\nsys.exit(0)"), zero,
                              "completed"),
        "tamper_writes_outputs": (with_cell_after(wrong, "import numpy",
                                  "import pathlib\nfor target, text in [\n"
                                  f"        ({str(gradebook)!r}, 'tamper_writes_outputs,2,3,1,4,10,10,100,ok\\n'),\n"
                                  f"        ({str(feedback / 'correct.md')!r}, 'you failed'),\n"
                                  f"        ({str(feedback / 'planted.md')!r}, 'planted')]:\n"
                                  "    try:\n        pathlib.Path(target).parent.mkdir(parents=True, exist_ok=True)\n"
                                  "        pathlib.Path(target).write_text(text)\n"
                                  "    except OSError as error:\n        print('blocked:', error)\n"),
                                  zero, "completed"),
        "tamper_reads_others": (copy_from_others(wrong, [others / "correct" / "tiny.ipynb",
                                                         paths["solutions"] / "tiny.ipynb"]), zero, "completed"),
        # attacks on the grader's design (issue 10): each one gains nothing, the checks run in the grader
        "tamper_replace_grader_object": (with_cell_after(wrong, "import numpy",
                                         "import builtins, types\n"
                                         "builtins.__course_grader__ = types.SimpleNamespace(\n"
                                         "    run_check=lambda *a, **k: print('✓ passed'))\n"), zero, "completed"),
        "tamper_input_transformer": (with_cell_after(wrong, "import numpy",
                                     "def gut(lines):\n"
                                     "    return ['pass\\n'] if any('check' in line for line in lines) else lines\n"
                                     "get_ipython().input_transformers_cleanup.append(gut)"), zero, "completed"),
        "tamper_key_hunt_and_custom_exc": (with_cell_after(wrong, "import numpy",
                                           "import gc\n"
                                           "found = [o for o in gc.get_objects() if isinstance(o, (str, bytes))\n"
                                           "         and len(o) in (32, 64)][:100]\n"
                                           "get_ipython().set_custom_exc((Exception,), lambda *a, **k: print('ok'))\n"
                                           "from IPython.display import display\n"
                                           "for token in found:\n"
                                           "    display({'application/x-course-grader-token': str(token)}, raw=True)"),
                                           zero, "completed"),
        "tamper_frames": (with_source(wrong, "def add(", "def add(a, b):\n    import sys\n"
                                      "    frame = sys._getframe(1)\n    while frame is not None:\n"
                                      "        for name in ('expected', 'reference', 'want'):\n"
                                      "            if name in frame.f_locals:\n"
                                      "                return frame.f_locals[name]\n"
                                      "        frame = frame.f_back\n    return a - b"), zero, "completed"),
        "tamper_callable_objects": (with_cell_after(wrong, "import numpy",
                                    "class Yes:\n    def __call__(self, *args, **kwargs):\n        return True\n"
                                    "np.allclose = Yes()\nnp.add = Yes()\nimport numpy.testing\n"
                                    "np.testing.assert_allclose = Yes()\n"), zero, "completed"),
        "tamper_lying_array": (with_source(with_source(wrong, "def add(",
                                           "class Liar(np.ndarray):\n"
                                           "    def __array_ufunc__(self, *args, **kwargs):\n        return True\n"
                                           "    def __eq__(self, other):\n        return True\n"
                                           "    __ne__ = lambda self, other: False\n"
                                           "def add(a, b):\n    return np.asarray(a - b, dtype=float).view(Liar)"),
                                           "def square(", "def square(x):\n    return (x + x).view(Liar)"),
                               zero, "completed"),
        "tamper_lying_scalar": (with_source(wrong, "def double(",
                                            "class Always(np.float64):\n"
                                            "    def __eq__(self, other):\n        return True\n"
                                            "    def __ne__(self, other):\n        return False\n"
                                            "def double(x):\n    return Always(x)"), zero, "completed"),
        "tamper_setprofile_and_trace": (with_cell_after(wrong, "import numpy",
                                        "import sys, threading\n"
                                        "def spy(frame, event, arg):\n"
                                        "    if 'expected' in frame.f_locals:\n"
                                        "        frame.f_locals['received'] = frame.f_locals['expected']\n"
                                        "    return spy\n"
                                        "sys.setprofile(spy)\nsys.settrace(spy)\nthreading.setprofile(spy)"),
                                        zero, "completed"),
        "tamper_fast_sigalrm": (with_cell_after(wrong, "import numpy",
                                "import signal\nticks = [0]\n"
                                "def tick(*args):\n    ticks[0] += 1\n"
                                "signal.signal(signal.SIGALRM, tick)\n"
                                "signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)"), zero, "completed"),
        "tamper_torch_reference": (with_cell_after(wrong, "import numpy",
                                   "import torch\nfrom torch.overrides import TorchFunctionMode\n"
                                   "class Zeros(TorchFunctionMode):\n"
                                   "    def __torch_function__(self, func, types, args=(), kwargs=None):\n"
                                   "        result = func(*args, **(kwargs or {}))\n"
                                   "        return torch.zeros_like(result) if isinstance(result, torch.Tensor) "
                                   "else result\n"
                                   "Zeros().__enter__()\n"
                                   "library = torch.library.Library('aten', 'IMPL')\n"
                                   "library.impl('mul.Tensor', lambda a, b: a + b, 'CPU')"), zero, "completed"),
        "tamper_kernel_memory_and_proc": (with_cell_after(wrong, "import numpy",
                                          "import os\nfor name in ('mem', 'environ', 'maps'):\n"
                                          "    try:\n        with open(f'/proc/{os.getppid()}/{name}', 'rb') as f:\n"
                                          "            print(name, f.read(100))\n"
                                          "    except OSError as error:\n        print('blocked:', error)"),
                                          zero, "completed"),
        # a learner's function that never returns, when the check calls it
        "loop_inside_function": (with_source(solved, "def square(", "def square(x):\n    while True:\n        pass"),
                                 no_square, "cell-timeout"),
        "uninterruptible_function": (with_source(solved, "def square(",
                                                 "def square(x):\n    while True:\n        try:\n"
                                                 "            while True:\n                pass\n"
                                                 "        except KeyboardInterrupt:\n            pass"),
                                     only_add, "cell-timeout"),
        # faults of a correct submission: every check still scores
        "fault_stdout_closed": (with_cell_after(solved, "import numpy", "import sys\nsys.stdout.close()\n"
                                                "sys.stderr.close()"), full, "completed"),
        "fault_lone_surrogate": (with_cell_after(solved, "import numpy", 'text = "\ud800 unpaired"'), full,
                                 "completed"),
        "fault_deletes_working_folder": (with_cell_after(solved, "import numpy",
                                         "import os, shutil\nshutil.rmtree(os.getcwd())"), full, "completed"),
        "fault_fills_working_folder": (with_cell_after(solved, "import numpy",
                                       "with open('filler.bin', 'wb') as f:\n"
                                       "    for _ in range(300):\n        f.write(bytes(2**20))"), full,
                                       "completed"),
        "fault_changes_directory": (with_cell_after(solved, "import numpy", "import os\nos.chdir('/')"), full,
                                    "completed"),
    }
    if KILLS_ARE_SCOPED:
        # every process it can see is sent SIGKILL, unless the sandbox is missing: then it says so (and fails)
        learners["tamper_kills_everyone"] = (with_cell_after(wrong, "import numpy",
                                             "import os, signal\ntry:\n    os.kill(os.getppid(), 0)\n"
                                             "    raise SystemExit('NOT SANDBOXED: not killing anything')\n"
                                             "except PermissionError:\n    pass\n"
                                             "for pid in [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
                                             "    if pid != os.getpid():\n        try:\n"
                                             "            os.kill(pid, signal.SIGKILL)\n"
                                             "        except OSError:\n            pass"), zero, "completed")
    return learners


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    paths = {"solutions": root / "solutions", "submissions": root / "submissions",
             "gradebook": root / "out" / "grades.csv", "feedback": root / "out" / "feedback"}
    paths["solutions"].mkdir()
    solution = solution_notebook()
    nbformat.write(solution, paths["solutions"] / "tiny.ipynb")
    exercise = release.make_exercise(solution, "tiny.ipynb")
    learners = make_class(solution, exercise, paths)
    # the reading tamperer must come after the learner it copies from, so it finds a finished file
    for learner, (notebook, _, _) in learners.items():
        folder = paths["submissions"] / learner
        folder.mkdir(parents=True)
        # json.dumps escapes a lone surrogate as \ud800, as a notebook file written by Jupyter may hold it
        text = notebook if isinstance(notebook, str) else json.dumps(notebook)
        (folder / "tiny.ipynb").write_text(text, encoding="utf-8")
    (paths["submissions"] / "no_submission").mkdir()
    # links: to the solution, to a classmate's notebook, to a classmate's folder; a hard link to the solution
    (paths["submissions"] / "link_to_solution").mkdir()
    (paths["submissions"] / "link_to_solution" / "tiny.ipynb").symlink_to(paths["solutions"] / "tiny.ipynb")
    (paths["submissions"] / "link_to_classmate").mkdir()
    (paths["submissions"] / "link_to_classmate" / "tiny.ipynb").symlink_to(paths["submissions"] / "correct" / "tiny.ipynb")
    (paths["submissions"] / "linked_folder").symlink_to(paths["submissions"] / "correct", target_is_directory=True)
    (paths["submissions"] / "flat_link.ipynb").symlink_to(paths["solutions"] / "tiny.ipynb")
    (paths["submissions"] / "hard_link").mkdir()
    os.link(paths["solutions"] / "tiny.ipynb", paths["submissions"] / "hard_link" / "tiny.ipynb")
    options = grade.Options(cell_timeout=5, submission_timeout=90, memory_mb=4096, jobs=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(TESTS_DIR))
        patch.setenv("PYTHONPATH", str(TESTS_DIR))
        results = grade.grade_class(paths["submissions"], "tiny", paths["solutions"], options,
                                    out=paths["gradebook"], feedback=paths["feedback"])
    with open(paths["gradebook"], newline="", encoding="utf-8") as file:
        rows = {row["learner"]: row for row in csv.DictReader(file)}
    return {"learners": learners, "rows": rows, "paths": paths, "results": {r.learner: r for r in results}}


def feedback_of(graded, learner):
    return (graded["paths"]["feedback"] / f"{learner}.md").read_text(encoding="utf-8")


LEARNERS = list(make_class(solution_notebook(), solution_notebook(),
                           {"gradebook": pathlib.Path("g"), "feedback": pathlib.Path("f"),
                            "submissions": pathlib.Path("s"), "solutions": pathlib.Path("o")}))


@pytest.mark.parametrize("learner", LEARNERS)
def test_gradebook_gives_exactly_the_expected_points(graded, learner):
    _, expected, status = graded["learners"][learner]
    if learner in ("tamper_reads_others",) and not SANDBOXED:
        pytest.skip("no Landlock in this Linux kernel: reading other files cannot be prevented")
    row = graded["rows"][learner]
    assert {check_id: float(row[check_id]) for check_id in POINTS} == expected, feedback_of(graded, learner)
    assert float(row["total"]) == sum(expected.values())
    assert float(row["max"]) == FULL
    assert row["status"] in ({status} if isinstance(status, str) else status), feedback_of(graded, learner)


@pytest.mark.parametrize("learner", ["tamper_redefine_checks", "tamper_patch_common", "tamper_builtins_and_import",
                                     "tamper_numpy", "tamper_numpy_inside_call", "tamper_prints_passed",
                                     "tamper_replace_grader_object", "tamper_input_transformer",
                                     "tamper_key_hunt_and_custom_exc", "tamper_frames", "tamper_callable_objects",
                                     "tamper_lying_array", "tamper_setprofile_and_trace", "tamper_fast_sigalrm",
                                     "tamper_torch_reference", "tamper_kernel_memory_and_proc"]
                         + (["tamper_kills_everyone"] if KILLS_ARE_SCOPED else []))
def test_tampering_checks_still_run_and_report_the_real_failure(graded, learner):
    """The wrong ``add`` fails the genuine check (with its message), not a crash of the tampering."""
    add = next(c for c in graded["results"][learner].checks if c.check_id == "t-add")
    assert "case 0: output[] is -1, expected 3" in add.message, add.message


@pytest.mark.parametrize("learner", ["link_to_solution", "link_to_classmate", "linked_folder", "flat_link",
                                     "hard_link"])
def test_links_are_never_followed(graded, learner):
    """A submission that is a symbolic or hard link (to the solution, a classmate's file or folder) is not read."""
    row = graded["rows"][learner]
    assert (row["status"], float(row["total"])) == ("invalid-notebook", 0), row
    text = feedback_of(graded, learner)
    assert "link" in text and "def add" not in text and "np.add(a, b)" not in text


def test_faults_keep_the_points_and_are_explained(graded):
    """Closed stdout, a lone surrogate, a deleted or filled working folder, another working directory: full marks."""
    assert "I/O operation on closed file" in feedback_of(graded, "fault_stdout_closed") or \
        graded["rows"]["fault_stdout_closed"]["total"] == str(FULL)
    assert "not valid Unicode" in feedback_of(graded, "fault_lone_surrogate")
    assert "deleted its working folder" in feedback_of(graded, "fault_deletes_working_folder")
    assert "File too large" in feedback_of(graded, "fault_fills_working_folder")


@pytest.mark.skipif(not KILLS_ARE_SCOPED, reason="Landlock signal scoping needs Linux 6.12 or later")
def test_a_kernel_that_signals_everyone_stops_nobody(graded):
    """The killer scored zero, everyone else was graded, and the gradebook was written."""
    assert "NOT SANDBOXED" not in feedback_of(graded, "tamper_kills_everyone")
    assert graded["rows"]["correct"]["total"] == str(FULL)
    assert all(r.status != "grader-error" for r in graded["results"].values())


def test_missing_submission_is_listed_with_zero(graded):
    row = graded["rows"]["no_submission"]
    assert (row["status"], float(row["total"])) == ("missing", 0)


def test_gradebook_ends_with_pass_rates_over_submitted_notebooks(graded):
    rows = list(graded["rows"].values())
    assert rows[-1]["learner"] == "pass rate"
    graded_rows = [r for r in rows[:-1] if r["status"] != "missing"]
    passed = sum(1 for r in graded_rows if float(r["t-add"]) > 0)
    assert rows[-1]["t-add"] == f"{100 * passed / len(graded_rows):.0f}%"


def test_feedback_lists_each_check_with_points_and_failure_message(graded):
    text = feedback_of(graded, "partly_correct")
    assert "**Score: 7 / 10**" in text
    assert "| `t-add` | 2 / 2 | passed |" in text
    assert "| `t-square` | 0 / 3 | failed |" in text
    assert "square(x) is array([-4., -2.,  0.,  2.,  4.])" in text  # the check's own message
    assert "(hidden)" in text


def test_restored_check_cells_are_reported(graded):
    edited = feedback_of(graded, "checks_edited")
    assert "check `t-add` was edited" in edited and "check `t-double` was edited" in edited
    moved = feedback_of(graded, "checks_moved_deleted_split")
    assert "check `t-square` was moved" in moved
    assert "check `t-add` was deleted" in moved
    assert "check `t-double` was split" in moved
    assert "t-double-hidden" not in moved.split("## Checks")[0]  # hidden checks are not "restored"


def test_timeout_reason_names_the_cell_the_check_depends_on(graded):
    text = feedback_of(graded, "infinite_loop")
    assert "timed out after 5 s" in text
    assert "depends on `square` from cell" in text


def test_kernel_death_is_explained(graded):
    assert "exited with status 3" in feedback_of(graded, "kernel_exit")
    assert "SIGSEGV" in feedback_of(graded, "segfault")
    assert "exited with status 0" in feedback_of(graded, "tamper_exit_early_0")


def test_memory_hog_hits_the_memory_limit_and_the_rest_is_graded(graded):
    assert "MemoryError" in feedback_of(graded, "memory_hog")


def test_syntax_error_and_renamed_function_are_explained(graded):
    assert "SyntaxError" in feedback_of(graded, "syntax_error")
    assert "`square` missing or renamed" in feedback_of(graded, "renamed_function")


def test_unreadable_notebook_is_reported(graded):
    assert "could not be read" in feedback_of(graded, "not_json")


def test_learner_cannot_write_the_gradebook_or_feedback(graded):
    assert graded["rows"]["tamper_writes_outputs"]["total"] == "0"
    assert "you failed" not in feedback_of(graded, "correct")
    if SANDBOXED:
        assert not (graded["paths"]["feedback"] / "planted.md").exists()


def test_grading_runs_in_a_private_folder(graded):
    """Nothing of the grader's temporary folders is left behind, and each run had its own."""
    assert all(r.seconds > 0 for r in graded["results"].values())


# ------------------------------------------------------------------ rebuilding, without a kernel


def test_rebuild_keeps_learner_cells_and_takes_checks_from_the_solution(tmp_path):
    solution = solution_notebook()
    nbformat.write(solution, tmp_path / "tiny.ipynb")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(TESTS_DIR))
        assignment = load_assignment(tmp_path, "tiny")
    submission = with_cell_after(learner_copy(solution), "def add(", "extra = 1")
    notebook, cells, notes = rebuild(submission, assignment)
    kinds = [(kind, rest[0].check_id if kind == "check" else rest[0]) for kind, *rest in cells]
    assert [k for k in kinds if k[0] == "check"] == [("check", i) for i in POINTS]
    assert "extra = 1" in [c.source for c in notebook.cells]
    assert notes == []
    assert "grading_fixtures.tiny_checks" in assignment.entry_modules


def test_rebuild_places_a_deleted_check_by_the_released_text_when_cell_ids_are_gone(tmp_path):
    solution = solution_notebook()
    nbformat.write(solution, tmp_path / "tiny.ipynb")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(TESTS_DIR))
        assignment = load_assignment(tmp_path, "tiny")
    exercise = release.make_exercise(solution, "tiny.ipynb")
    exercise.cells.pop(index_of(exercise, "check_add"))
    exercise.cells.insert(index_of(exercise, "def add("), v4.new_code_cell("x = 1"))
    exercise.cells[0].metadata["course"] = "not a dict"  # learners' metadata can be anything
    for cell in exercise.cells:
        cell.pop("id", None)
    notebook, cells, notes = rebuild(exercise, assignment)
    sources = [c.source for c in notebook.cells]
    assert sources.index("x = 1") < index_of(notebook, "check_add(") == index_of(notebook, "def add(") + 1
    assert notes == ["check `t-add` was deleted; it was restored from the released assignment"]


def test_submissions_are_found_in_folders_and_as_flat_files(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "tiny.ipynb").write_text("{}")
    (tmp_path / "ben.ipynb").write_text("{}")
    (tmp_path / "cat").mkdir()
    assert find_submissions(tmp_path, "tiny") == [
        ("ann", tmp_path / "ann" / "tiny.ipynb"), ("ben", tmp_path / "ben.ipynb"), ("cat", None)]


def test_command_line_help_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "course_utils.grading.grade", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--assignment" in result.stdout and "--jobs" in result.stdout


def test_the_command_says_how_the_kernels_are_isolated(tmp_path):
    """Before grading, course-grade prints which protection this machine's Linux gives (Landlock ABI, or none)."""
    (tmp_path / "submissions").mkdir()
    result = subprocess.run([sys.executable, "-m", "course_utils.grading.grade", str(tmp_path / "submissions"),
                             "--assignment", "no_such_assignment", "--solutions", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no solution notebook" in result.stderr
    assert "isolation of the learners' kernels: " + ("Landlock ABI" if SANDBOXED else "none") in result.stdout


# ------------------------------------------------------------------ the course's own notebooks

SOLUTIONS = sorted((REPO_DIR / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("solution_path", SOLUTIONS or [None], ids=lambda p: p.stem if p else "none")
def test_course_exercises_score_zero_and_solutions_full(solution_path, tmp_path):
    if solution_path is None:
        pytest.skip("no solution notebook in solutions/ yet")
    solution = nbformat.read(solution_path, as_version=4)
    submissions = tmp_path / "submissions"
    for learner, notebook in (("solution", learner_copy(solution)),
                              ("exercise", release.make_exercise(solution, solution_path.name))):
        (submissions / learner).mkdir(parents=True)
        nbformat.write(notebook, submissions / learner / solution_path.name)
    options = grade.Options(cell_timeout=600, submission_timeout=1800, jobs=2)
    results = {r.learner: r for r in grade.grade_class(submissions, solution_path.stem, solution_path.parent, options)}
    assert results["solution"].total == results["solution"].max_points, feedback_markdown(
        results["solution"], load_assignment(solution_path.parent, solution_path.stem), options)
    assert all(check.points == 0 for check in results["exercise"].checks)
