"""Step 2 of ``course-grade``: execute one rebuilt notebook under nbval, in isolation, and collect the reports.

Each submission runs in its own ``pytest --nbval-lax`` process (forked from a server that imported
pytest once, or started with ``python -m pytest`` where there are no fork servers), in a new session
and a private temporary folder holding only that notebook (``HOME``, ``TMPDIR``, the IPython and
Jupyter folders point there), with a per-cell and an overall time-out. The kernel's start-up file runs
``kernel.py``, which applies the limits and the Landlock sandbox of ``sandbox.py`` chosen here: memory,
CPU seconds, file size, output, and the folders it may read and write. The pytest plugin
(``plugin.py``) reports each cell through a pipe the kernel does not hold.
"""
import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import tempfile
import threading

import nbformat

from course_utils.grading.constants import REPO_DIR, REPORT_FD_ENV, TOKEN_MIME
from course_utils.grading.processes import kill_tree


def _read_paths(assignment, extra):
    """The folders a learner's kernel may read under Landlock: Python, the course package, its data, ``extra``."""
    paths = {"/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/opt",
             sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             str(REPO_DIR / "course_utils"), os.environ.get("COURSE_DATA_DIR", str(REPO_DIR / "data"))}
    paths |= {os.path.realpath(p) for p in list(paths)}
    paths |= set(site.getsitepackages())
    for filename, _, is_package in assignment.sources.values():
        paths.add(os.path.dirname(filename))
    paths |= {str(pathlib.Path(p).resolve()) for p in extra}
    return sorted(p for p in paths if p and os.path.exists(p))


# pytest, nbval and jupyter_client take over a second of CPU to import: a fork server imports them
# once, and each submission's pytest process is forked from it (on platforms without fork servers,
# each submission runs ``python -m pytest`` instead).
PLUGIN = "course_utils.grading.plugin"  # the pytest plugin that reports each cell (plugin.py)
PRELOAD = ["pytest", "nbval.plugin", "nbval.kernel", "jupyter_client", "nbformat", PLUGIN,
           __name__]  # this module: the forked processes run its _pytest_child
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
    os.environ[REPORT_FD_ENV] = str(os.dup(report_writer.fileno()))
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


RUNNING = set()  # process ids of the nbval runs of the submissions being graded now


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
            "token_mime": TOKEN_MIME,
            "startup_file": str(startup),
            "sandbox_source": assignment.sandbox_source,
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
            f"    namespace['boot']({str(params_path)!r})\n"
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
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        })
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(name, str(threads))
        args = ["-c", str(work / "pytest.ini"), "--rootdir", str(work),
                "-p", "nbval.plugin", "-p", PLUGIN, "-p", "no:cacheprovider",
                "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={options.cell_timeout:g}",
                "-q", str(notebook_path)]
        context, event = _fork_server(), None
        if context is not None:
            reader, writer = context.Pipe(duplex=False)
            log_path = work / ".pytest.log"
            process = context.Process(target=_pytest_child, args=(args, env, str(work), str(log_path), writer))
            process.start()
            writer.close()
            RUNNING.add(process.pid)
            report_thread, records = _report_reader(os.dup(reader.fileno()))
            reader.close()
            process.join(options.submission_timeout)
            if process.exitcode is None:
                event = "time-limit"
                kill_tree(process.pid)
                process.join()
            RUNNING.discard(process.pid)
            report_thread.join(timeout=10)
            with open(log_path, "rb") as file:
                file.seek(max(0, os.path.getsize(log_path) - 20_000))
                log = file.read().decode("utf-8", "replace")
            return records, event, log
        read_fd, write_fd = os.pipe()
        env[REPORT_FD_ENV] = str(write_fd)
        process = subprocess.Popen([sys.executable, "-m", "pytest"] + args, cwd=work, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        RUNNING.add(process.pid)
        log_thread, log = _tail_reader(process.stdout)
        report_thread, records = _report_reader(read_fd)
        try:
            process.wait(timeout=options.submission_timeout)
        except subprocess.TimeoutExpired:
            event = "time-limit"
            kill_tree(process.pid)
            process.wait()
        RUNNING.discard(process.pid)
        report_thread.join(timeout=10)
        log_thread.join(timeout=1)
        return records, event, bytes(log[-20_000:]).decode("utf-8", "replace")
    finally:
        shutil.rmtree(work, ignore_errors=True)

