"""Grade a class's submissions of one assignment: ``course-grade`` (or ``python -m course_utils.grade``).

Usage::

    course-grade SUBMISSIONS_DIR --assignment 01_convolution \\
        [--out grades.csv] [--feedback DIR] [--jobs N] [--timeout S]

A submission is ``SUBMISSIONS_DIR/<learner>/<assignment>.ipynb`` or
``SUBMISSIONS_DIR/<learner>.ipynb``; a learner folder without the notebook is graded
"missing". The walkthrough for instructors is ``docs/grading.md``. For each submission:

1. **Rebuild.** The learner's code cells are kept; every check cell comes from
   ``solutions/<assignment>.ipynb`` by its ``check_id`` (hidden checks included). A check
   cell the learner edited, deleted, moved or split is put back in its released place and
   the feedback says so.
2. **Execute** the rebuilt notebook with nbval (one ``pytest --nbval-lax`` process per
   submission, forked from a server that imported pytest once, ``--jobs`` at a time) in a
   private temporary folder holding only that notebook, with a per-cell time-out, an overall
   time-out, a memory and a CPU limit, an output limit and, where Linux offers Landlock, a
   file-system sandbox (see
   ``course_utils.grade_kernel``, which also keeps the checks out of the learner's reach,
   and ``course_utils.grade_plugin``, which reports each cell to the grader).
3. **Score.** A check scores its points when its cell raised nothing *and* published the
   grader's secret token for that check; otherwise zero, with the reason (the check's
   message, or the cell it depended on that timed out or failed, or the kernel's death).
   stderr output and warnings cost nothing.
4. **Write** the gradebook CSV (one row per learner, a final row of pass rates) and one
   Markdown feedback file per learner, after every submission has finished.
"""
import argparse
import ast
import concurrent.futures
import csv
import dataclasses
import hashlib
import hmac
import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time

import nbformat

from course_utils.release import course_metadata, is_check_cell, strip_solution, validate_checks

REPO_DIR = pathlib.Path(__file__).resolve().parents[1]
KERNEL_SOURCE_FILE = pathlib.Path(__file__).with_name("grade_kernel.py")
TOKEN_MIME = "application/x-course-grader-token"


@dataclasses.dataclass
class Check:
    check_id: str
    points: float
    hidden: bool
    source: str
    position: int  # index of the cell in the solution notebook


@dataclasses.dataclass
class Assignment:
    name: str
    solution: nbformat.NotebookNode
    checks: list
    sources: dict  # module name -> (file name, source, is package): the check packages, read once
    entry_modules: list  # the modules of those packages that the check cells import
    kernel_source: str

    @property
    def max_points(self):
        return sum(c.points for c in self.checks)


@dataclasses.dataclass
class CheckResult:
    check_id: str
    points: float
    max_points: float
    hidden: bool
    passed: bool
    message: str = ""
    excerpt: str = ""


@dataclasses.dataclass
class LearnerResult:
    learner: str
    path: str
    status: str
    checks: list
    notes: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self):
        return sum(c.points for c in self.checks)

    @property
    def max_points(self):
        return sum(c.max_points for c in self.checks)


@dataclasses.dataclass
class Options:
    cell_timeout: float = 120.0
    submission_timeout: float = 900.0
    memory_mb: int = 8192
    output_chars: int = 2_000_000
    jobs: int = 1
    allow_read: tuple = ()
    show_hidden_messages: bool = False


# --------------------------------------------------------------------------- the assignment


def _imported_top_names(source):
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def _imported_modules(source, known):
    """Full names of the modules in ``known`` that ``source`` imports (``from a.b import c`` gives a.b, a.b.c)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name in known}


def _package_sources(top_name):
    """``{module name: (file, source, is package)}`` for every ``.py`` file of package ``top_name``."""
    import importlib.util

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
    packages = {"course_utils"}
    for check in checks:
        packages |= _imported_top_names(check.source)
    stdlib = getattr(sys, "stdlib_module_names", set())
    sources = {}
    for package in sorted(packages - set(stdlib) - {"numpy", "torch", "torchvision", "scipy"}):
        sources.update(_package_sources(package))
    entry = sorted(set().union(*(_imported_modules(c.source, sources) for c in checks)))
    return Assignment(path.stem, solution, checks, sources, entry, KERNEL_SOURCE_FILE.read_text(encoding="utf-8"))


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


# --------------------------------------------------------------------------- rebuilding


def _normalise(source):
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _defined_names(source):
    """Names a cell binds at its top level (functions, classes, assignments, imports)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        tree = ast.parse(TransformerManager().transform_cell(source))
    except Exception:  # a cell with a syntax error: what it meant to define, for the feedback
        found = re.findall(r"^(?:def|class)\s+(\w+)|^(\w+)\s*=", source, re.M)
        return {a or b for a, b in found}
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).partition(".")[0] for a in node.names}
        else:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    names.add(sub.id)
    return names


def _used_names(source):
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _check_id(cell):
    """The check id of a submitted cell, or None (a learner's notebook may hold any metadata)."""
    metadata = cell.get("metadata")
    course = metadata.get("course") if isinstance(metadata, dict) else None
    check_id = course.get("check_id") if isinstance(course, dict) else None
    return check_id if isinstance(check_id, str) else None


def _released_source(cell):
    try:
        return strip_solution(cell.source, cell.cell_type, "cell")
    except ValueError:
        return cell.source


def rebuild(submission, assignment):
    """The notebook to execute: learner's code cells, check cells from the solution placed by id.

    Returns ``(notebook, cells, notes)``; ``cells[k]`` describes code cell ``k`` of the rebuilt
    notebook: ``("check", Check)`` or ``("learner", number in the submission (1-based), names)``.
    """
    solution_cells = assignment.solution.cells
    checks_by_id = {c.check_id: c for c in assignment.checks}
    learner_cells = [c for c in submission.get("cells", []) if isinstance(c, dict)]

    def find_anchor(solution_cell):
        """Where the learner's notebook has this cell of the released notebook: same id, else same text."""
        cell_id = solution_cell.get("id")
        for index, cell in enumerate(learner_cells):
            if cell_id and cell.get("id") == cell_id and _check_id(cell) is None:
                return index
        texts = {_normalise(solution_cell.source), _normalise(_released_source(solution_cell))}
        for index, cell in enumerate(learner_cells):
            if cell.get("cell_type") == solution_cell.cell_type and _check_id(cell) is None and \
                    _normalise(str(cell.get("source", ""))) in texts:
                return index
        return None

    anchors = {}
    for position, cell in enumerate(solution_cells):
        if not is_check_cell(cell):
            anchors[position] = find_anchor(cell)

    replace_at, insert_before, notes = {}, {}, []
    for check in assignment.checks:
        occurrences = [i for i, c in enumerate(learner_cells) if _check_id(c) == check.check_id]
        previous = [anchors[p] for p in range(check.position - 1, -1, -1) if anchors.get(p) is not None]
        low = previous[0] if previous else -1
        following = [anchors[p] for p in range(check.position + 1, len(solution_cells))
                     if anchors.get(p) is not None and anchors[p] > low]
        high = following[0] if following else len(learner_cells)
        if len(occurrences) == 1 and low < occurrences[0] < high:
            replace_at[occurrences[0]] = check
            if _normalise(str(learner_cells[occurrences[0]].get("source", ""))) != _normalise(check.source):
                notes.append(f"check `{check.check_id}` was edited; it was restored from the released assignment")
            continue
        insert_before.setdefault(high, []).append(check)
        if check.hidden and not occurrences:
            continue
        if not occurrences:
            notes.append(f"check `{check.check_id}` was deleted; it was restored from the released assignment")
        elif len(occurrences) > 1:
            notes.append(f"check `{check.check_id}` was split or copied into {len(occurrences)} cells; "
                         "it was restored from the released assignment")
        else:
            notes.append(f"check `{check.check_id}` was moved; it was put back in its released place")

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = []

    def add(source, description):
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["course_grader"] = {"index": len(cells)}
        notebook.cells.append(cell)
        cells.append(description)

    def add_check(check):
        add(f"__course_grader__.run_check({check.check_id!r}, {check.source!r})", ("check", check))

    for index, cell in enumerate(learner_cells + [None]):
        for check in insert_before.get(index, []):
            add_check(check)
        if cell is None:
            break
        if index in replace_at:
            add_check(replace_at[index])
        elif _check_id(cell) in checks_by_id:
            continue  # an edited, moved or split copy: the original is placed instead
        elif cell.get("cell_type") == "code":
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else str(source)
            add(source, ("learner", index + 1, _defined_names(source)))
    return notebook, cells, notes


# --------------------------------------------------------------------------- running one submission


def _read_paths(assignment, extra):
    paths = {"/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/opt",
             sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             str(REPO_DIR / "course_utils"), os.environ.get("COURSE_DATA_DIR", str(REPO_DIR / "data"))}
    paths |= {os.path.realpath(p) for p in list(paths)}
    paths |= set(site.getsitepackages())
    for filename, _, is_package in assignment.sources.values():
        paths.add(os.path.dirname(filename))
    paths |= {str(pathlib.Path(p).resolve()) for p in extra}
    return sorted(p for p in paths if p and os.path.exists(p))


def _descendants(root_pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    ppid = int(file.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(pid):
    """SIGKILL process ``pid`` and all its descendants (the caller reaps ``pid``)."""
    for victim in [pid] + _descendants(pid):
        try:
            os.kill(victim, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# pytest, nbval and jupyter_client take over a second of CPU to import: a fork server imports them
# once, and each submission's pytest process is forked from it (on platforms without fork servers,
# each submission runs ``python -m pytest`` instead).
PRELOAD = ["pytest", "nbval.plugin", "nbval.kernel", "jupyter_client", "nbformat", "course_utils.grade_plugin",
           "course_utils.grade"]
_CONTEXT = []


def _fork_server():
    if not _CONTEXT:
        import multiprocessing

        context = None
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
        _CONTEXT.append(context)
    return _CONTEXT[0]


def _helper_pids():
    """The fork server and multiprocessing's resource tracker: children of ours that must outlive a run."""
    from multiprocessing import forkserver, resource_tracker

    pids = (getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None),
            getattr(getattr(resource_tracker, "_resource_tracker", None), "_pid", None))
    return {pid for pid in pids if pid}


def _pytest_child(args, env, cwd, log_path, report_writer):
    """Body of a forked pytest process: a new session, the submission's environment, pytest's main."""
    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ["COURSE_GRADER_REPORT_FD"] = str(os.dup(report_writer.fileno()))
    report_writer.close()
    code = 3
    try:
        import pytest

        code = int(pytest.main(args))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _tail_reader(stream, keep=20_000):
    buffer = bytearray()

    def read():
        for chunk in iter(lambda: stream.read(65536), b""):
            buffer.extend(chunk)
            if len(buffer) > 2 * keep:
                del buffer[:-keep]
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, buffer


def _report_reader(fd, limit=100_000):
    records = []

    def read():
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as file:
            for line in file:
                if len(records) >= limit:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, records


_RUNNING = set()  # process ids of the nbval runs of the submissions being graded now


def _copy_matplotlib_font_cache(target):
    """Give the private MPLCONFIGDIR the grader's font cache, so matplotlib does not rebuild it every time."""
    cache = os.environ.get("MPLCONFIGDIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "matplotlib")
    target.mkdir(parents=True, exist_ok=True)
    for path in pathlib.Path(cache).glob("fontlist-*.json") if os.path.isdir(cache) else []:
        try:
            shutil.copy(path, target / path.name)
        except OSError:
            pass


def execute(notebook, assignment, options, key):
    """Run the rebuilt notebook under nbval in a private folder; return ``(records, event, log)``."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="course-grade-"))
    try:
        os.chmod(work, 0o700)
        notebook_path = work / f"{assignment.name}.ipynb"
        nbformat.write(notebook, notebook_path)
        (work / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        startup = work / ".ipython" / "profile_default" / "startup" / "00-course-grader.py"
        startup.parent.mkdir(parents=True)
        params_path = work / ".course-grader-params.json"
        params = {
            "key": key,
            "startup_file": str(startup),
            "sources": assignment.sources,
            "preload": ["numpy"] + (["torch"] if any("torch" in c.source for c in assignment.solution.cells) else []),
            "entry_modules": assignment.entry_modules,
            "guard": sorted({n.partition(".")[0] for n in assignment.sources}),
            "memory_bytes": options.memory_mb * 2**20 if options.memory_mb else None,
            "cpu_seconds": int(options.submission_timeout * 4) + 60,
            "file_bytes": 256 * 2**20,
            "output_chars": options.output_chars,
            "read_paths": _read_paths(assignment, options.allow_read),
            "write_paths": [str(work), "/dev"],
        }
        params_path.write_text(json.dumps(params), encoding="utf-8")
        startup.write_text(
            "def _course_grader_start():\n"
            "    import builtins\n"
            "    namespace = {'__name__': '__course_grader_boot__', '__builtins__': dict(builtins.__dict__)}\n"
            f"    exec(compile({assignment.kernel_source!r}, '<course-grader>', 'exec'), namespace)\n"
            "    namespace['boot']()\n"
            "_course_grader_start()\n"
            "del _course_grader_start\n",
            encoding="utf-8")
        _copy_matplotlib_font_cache(work / ".matplotlib")
        env = dict(os.environ)
        threads = max(1, (os.cpu_count() or 1) // max(1, options.jobs))
        env.update({
            "HOME": str(work), "TMPDIR": str(work), "IPYTHONDIR": str(work / ".ipython"),
            "MPLCONFIGDIR": str(work / ".matplotlib"), "MPLBACKEND": "Agg",
            "JUPYTER_RUNTIME_DIR": str(work / ".jupyter"), "JUPYTER_CONFIG_DIR": str(work / ".jupyter"),
            "JUPYTER_PLATFORM_DIRS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "COURSE_GRADER_PARAMS": str(params_path),
        })
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(name, str(threads))
        args = ["-c", str(work / "pytest.ini"), "--rootdir", str(work),
                "-p", "nbval.plugin", "-p", "course_utils.grade_plugin", "-p", "no:cacheprovider",
                "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={options.cell_timeout:g}",
                "-q", str(notebook_path)]
        context, event = _fork_server(), None
        if context is not None:
            reader, writer = context.Pipe(duplex=False)
            log_path = work / ".pytest.log"
            process = context.Process(target=_pytest_child, args=(args, env, str(work), str(log_path), writer))
            process.start()
            writer.close()
            _RUNNING.add(process.pid)
            report_thread, records = _report_reader(os.dup(reader.fileno()))
            reader.close()
            process.join(options.submission_timeout)
            if process.exitcode is None:
                event = "time-limit"
                _kill_tree(process.pid)
                process.join()
            _RUNNING.discard(process.pid)
            report_thread.join(timeout=10)
            with open(log_path, "rb") as file:
                file.seek(max(0, os.path.getsize(log_path) - 20_000))
                log = file.read().decode("utf-8", "replace")
            return records, event, log
        read_fd, write_fd = os.pipe()
        env["COURSE_GRADER_REPORT_FD"] = str(write_fd)
        process = subprocess.Popen([sys.executable, "-m", "pytest"] + args, cwd=work, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        _RUNNING.add(process.pid)
        log_thread, log = _tail_reader(process.stdout)
        report_thread, records = _report_reader(read_fd)
        try:
            process.wait(timeout=options.submission_timeout)
        except subprocess.TimeoutExpired:
            event = "time-limit"
            _kill_tree(process.pid)
            process.wait()
        _RUNNING.discard(process.pid)
        report_thread.join(timeout=10)
        log_thread.join(timeout=1)
        return records, event, bytes(log[-20_000:]).decode("utf-8", "replace")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _failure_reason(record, options):
    kind, message = record.get("kind"), record.get("message") or ""
    if kind == "timeout":
        return f"the check timed out after {options.cell_timeout:g} s"
    if kind == "kernel-died":
        return f"the kernel died while the check ran ({message})"
    if kind == "kernel-dead":
        return "not run: the kernel had stopped earlier"
    return message or "the check failed"


def score(assignment, cells, records, event, options, key, log=""):
    """Turn the per-cell reports into ``(check results, status, notes)``."""
    by_index = {}
    for record in records:
        if isinstance(record.get("index"), int):
            by_index.setdefault(record["index"], record)
    notes, status, stopped = [], "completed", None
    for index, (kind, *rest) in enumerate(cells):
        record = by_index.get(index)
        where = "a check cell" if kind == "check" else f"cell {rest[0]}"
        if record and record.get("kind") == "timeout" and status == "completed":
            status = "cell-timeout"
            notes.append(f"{where} timed out after {options.cell_timeout:g} s and was interrupted")
        if record and record.get("kind") == "kernel-died" and stopped is None:
            status, stopped = "kernel-died", f"{where}: {record.get('message')}"
            notes.append(f"the kernel died in {stopped}; the cells after it did not run")
    errors = [(rest[0], by_index[i]) for i, (kind, *rest) in enumerate(cells) if kind == "learner"
              and by_index.get(i) and by_index[i].get("kind") == "error"]
    for number, record in errors[:5]:
        first_line = (record.get("message") or "an error").splitlines()[0][:300]
        notes.append(f"cell {number} raised {first_line}")
    if len(errors) > 5:
        notes.append(f"{len(errors) - 5} more of your cells raised errors")
    if event == "time-limit":
        status = "time-limit"
        notes.append(f"the submission ran past the overall limit of {options.submission_timeout:g} s and was stopped")
    start_failure = next((r for r in records if r.get("kind") == "kernel-start"), None)
    if start_failure is not None:
        status = "grader-error"
        notes.append(f"the kernel could not be started: {start_failure.get('message')}")
    if not records and event is None:
        status = "grader-error"
        notes.append("nbval reported no cell; its log ends with:\n" + log[-2000:])

    results = []
    definers = {}  # name -> (number of the learner cell, its record) for the latest definition so far
    for index, (kind, *rest) in enumerate(cells):
        record = by_index.get(index)
        if kind == "learner":
            number, names = rest
            for name in names:
                definers[name] = (number, record)
            continue
        check = rest[0]
        expected = hmac.new(key.encode(), check.check_id.encode(), hashlib.sha256).hexdigest()
        passed = bool(record and record.get("ok") and any(hmac.compare_digest(str(t), expected)
                                                             for t in record.get("tokens", [])))
        message = ""
        if not passed:
            if record is None:
                message = {"time-limit": "not run: the submission was stopped at the overall time limit"}.get(
                    event, f"not run: the kernel had stopped ({stopped})" if stopped else "not run")
            elif record.get("ok"):
                message = "the check did not report a result to the grader (its code was changed at run time?)"
            elif record.get("kind") == "kernel-dead" and stopped:
                message = f"not run: the kernel died earlier, in {stopped}"
            else:
                message = _failure_reason(record, options)
                causes = []
                for name in sorted(_used_names(check.source)):
                    number, dep = definers.get(name, (None, None))
                    if dep is not None and not dep.get("ok") and dep.get("kind") in ("timeout", "error", "kernel-died"):
                        what = (f"timed out after {options.cell_timeout:g} s" if dep["kind"] == "timeout"
                                else f"failed with {dep.get('message')}")
                        causes.append(f"it depends on `{name}` from cell {number}, which {what}")
                if causes and record.get("kind") == "error":
                    message = "; ".join(dict.fromkeys(causes)) + f" (the check said: {message})"
                elif "NameError" in message:
                    name = re.search(r"name '([^']+)' is not defined", message)
                    if name:
                        message += f" (is `{name[1]}` missing or renamed in your notebook?)"
        results.append(CheckResult(check.check_id, check.points if passed else 0, check.points, check.hidden,
                                   passed, message, (record or {}).get("excerpt", "")))
    return results, status, notes


def grade_submission(learner, path, assignment, options):
    """Grade one learner's notebook; never raises."""
    start = time.monotonic()

    def zero(status, note):
        checks = [CheckResult(c.check_id, 0, c.points, c.hidden, False, note) for c in assignment.checks]
        return LearnerResult(learner, str(path or ""), status, checks, [note], time.monotonic() - start)

    if path is None:
        return zero("missing", f"no {assignment.name}.ipynb was submitted")
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8", errors="replace")
        submission = nbformat.reads(text, as_version=4)
        if not isinstance(submission, dict) or not isinstance(submission.get("cells"), list):
            raise ValueError("it has no list of cells")
    except Exception as error:
        return zero("invalid-notebook", f"the notebook could not be read: {type(error).__name__}: {error}"[:500])
    try:
        notebook, cells, notes = rebuild(submission, assignment)
        for attempt in range(2):  # a kernel that fails to start before any learner code ran gets a second try
            key = secrets.token_hex(32)
            records, event, log = execute(notebook, assignment, options, key)
            checks, status, run_notes = score(assignment, cells, records, event, options, key, log)
            if status != "grader-error":
                break
        return LearnerResult(learner, str(path), status, checks, notes + run_notes, time.monotonic() - start)
    except Exception as error:  # a grader bug must not stop the class's grading
        return zero("grader-error", f"the grader failed on this submission: {type(error).__name__}: {error}")


# --------------------------------------------------------------------------- outputs


def _number(value):
    return int(value) if float(value).is_integer() else round(float(value), 2)


def write_gradebook(results, assignment, path):
    """One row per learner (per-check points, total, max, percent, status, notes), then pass rates."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [c.check_id for c in assignment.checks]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["learner"] + ids + ["total", "max", "percent", "status", "notes"])
        for result in results:
            points = {c.check_id: c.points for c in result.checks}
            percent = 100 * result.total / result.max_points if result.max_points else 0
            writer.writerow([result.learner] + [_number(points[i]) for i in ids] +
                            [_number(result.total), _number(result.max_points), round(percent, 1), result.status,
                             " | ".join(n.splitlines()[0] for n in result.notes)])
        graded = [r for r in results if r.status != "missing"] or results
        rates = []
        for check_id in ids:
            passed = sum(1 for r in graded for c in r.checks if c.check_id == check_id and c.passed)
            rates.append(f"{100 * passed / len(graded):.0f}%" if graded else "")
        mean = (sum(100 * r.total / r.max_points for r in graded if r.max_points) / len(graded)) if graded else 0
        writer.writerow(["pass rate"] + rates + ["", "", round(mean, 1), f"{len(graded)} graded", ""])


def _safe_name(learner):
    return re.sub(r"[^A-Za-z0-9._@-]", "_", learner) or "learner"


def feedback_markdown(result, assignment, options):
    percent = 100 * result.total / result.max_points if result.max_points else 0
    lines = [f"# {assignment.name}: feedback for {result.learner}", "",
             f"**Score: {_number(result.total)} / {_number(result.max_points)}** ({percent:.0f}%) "
             f"— status: {result.status}", ""]
    if result.notes:
        lines += ["## What happened while grading", ""] + [f"- {note}" for note in result.notes] + [""]
    lines += ["## Checks", "", "| check | points | result |", "|---|---|---|"]
    for check in result.checks:
        label = f"`{check.check_id}`" + (" (hidden)" if check.hidden else "")
        lines.append(f"| {label} | {_number(check.points)} / {_number(check.max_points)} | "
                     f"{'passed' if check.passed else 'failed'} |")
    failed = [c for c in result.checks if not c.passed]
    if failed:
        lines += ["", "## Why checks failed", ""]
        for check in failed:
            message = check.message
            if check.hidden and not options.show_hidden_messages and not message.startswith("not run"):
                message = "this hidden check failed (its message is not shown)"
            lines += [f"### `{check.check_id}`", "", "```", message.strip()[:3000] or "failed", "```", ""]
    return "\n".join(lines) + "\n"


def write_feedback(results, assignment, folder, options):
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for result in results:
        (folder / f"{_safe_name(result.learner)}.md").write_text(feedback_markdown(result, assignment, options),
                                                                 encoding="utf-8")


# --------------------------------------------------------------------------- the command


def _become_subreaper():
    try:
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the kernels come to us
    except Exception:
        pass


def grade_class(submissions_dir, assignment_name, solutions_dir=REPO_DIR / "solutions", options=None,
                out=None, feedback=None, progress=None):
    """Grade every submission; write the gradebook and feedback; return the list of ``LearnerResult``."""
    options = options or Options()
    assignment = load_assignment(solutions_dir, assignment_name)
    submissions = find_submissions(submissions_dir, assignment.name)
    from course_utils.grade_plugin import child_pids, kill_leftovers

    _become_subreaper()
    earlier_children = set(child_pids())  # when called from a notebook or a test: not ours to stop
    results = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, options.jobs))
    try:
        futures = [pool.submit(grade_submission, learner, path, assignment, options) for learner, path in submissions]
        for future in futures:
            result = future.result()
            results.append(result)
            if progress:
                progress(result)
    finally:  # also on Ctrl-C: no kernel is left running
        pool.shutdown(wait=False, cancel_futures=True)
        for pid in list(_RUNNING):
            _kill_tree(pid)
        pool.shutdown(wait=True)
    # what a kernel left running (a daemon that escaped its session) is stopped before the outputs are written
    kill_leftovers(spare=earlier_children | _helper_pids())
    if out is not None:
        write_gradebook(results, assignment, out)
    if feedback is not None:
        write_feedback(results, assignment, feedback, options)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="course-grade", description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=pathlib.Path, help="folder of submissions (<learner>/<assignment>.ipynb)")
    parser.add_argument("--assignment", required=True, help="assignment name, e.g. 01_convolution")
    parser.add_argument("--out", type=pathlib.Path, help="gradebook CSV (default: <assignment>_grades.csv)")
    parser.add_argument("--feedback", type=pathlib.Path, help="feedback folder (default: <assignment>_feedback/)")
    parser.add_argument("--jobs", type=int, default=max(1, os.cpu_count() or 1), help="submissions run at once")
    parser.add_argument("--timeout", type=float, default=120, help="time limit per cell, seconds (default 120)")
    parser.add_argument("--submission-timeout", type=float, default=900,
                        help="time limit for a whole submission, seconds (default 900)")
    parser.add_argument("--memory-mb", type=int, default=8192,
                        help="address-space limit per kernel, MiB (default 8192)")
    parser.add_argument("--solutions", type=pathlib.Path, default=REPO_DIR / "solutions",
                        help="folder of the solution notebooks (default: the course's solutions/)")
    parser.add_argument("--allow-read", action="append", default=[], metavar="PATH",
                        help="another folder the learners' code may read (repeatable)")
    parser.add_argument("--show-hidden-messages", action="store_true", help="show hidden checks' failure messages")
    args = parser.parse_args(argv)
    name = pathlib.Path(args.assignment).stem
    options = Options(cell_timeout=args.timeout, submission_timeout=args.submission_timeout, memory_mb=args.memory_mb,
                      jobs=args.jobs, allow_read=tuple(args.allow_read), show_hidden_messages=args.show_hidden_messages)
    out = args.out or pathlib.Path(f"{name}_grades.csv")
    feedback = args.feedback or pathlib.Path(f"{name}_feedback")

    def progress(result):
        print(f"{result.learner}: {_number(result.total)}/{_number(result.max_points)} {result.status} "
              f"({result.seconds:.1f} s)", flush=True)

    try:
        results = grade_class(args.submissions, name, args.solutions, options, out, feedback, progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"course-grade: {error}", file=sys.stderr)
        return 2
    print(f"graded {len(results)} submissions; gradebook {out}, feedback in {feedback}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
