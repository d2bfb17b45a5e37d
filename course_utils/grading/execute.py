"""Step 2 of ``course-grade``: run one rebuilt notebook, the learner's cells in a sandboxed kernel, the checks here.

Each submission is run by its own *worker* process of the grader (forked from a server that imported
jupyter_client, numpy and torch once). The worker

* starts the learner's kernel with ``python -m course_utils.grading.kernel`` (limits and Landlock sandbox
  applied before ipykernel starts, see ``kernel.py`` and ``sandbox.py``), in a private working folder that is
  its ``HOME`` and ``TMPDIR``, talking over Unix sockets in that folder;
* sends the learner's code cells to the kernel one at a time, each with a time-out (an interrupted cell fails;
  a kernel that cannot be interrupted is stopped and the remaining checks score zero), and notices at once
  when the kernel dies (``os._exit``, a segfault, the memory or CPU limit);
* runs every check cell **in the worker itself**, the grader's process: the check's code, its inputs, its
  references and its comparison never enter the kernel. The learner's names the check cell reads are bound
  to ``LearnerObject`` handles, and each call of the learner's code is a request to the kernel over a Jupyter
  comm carrying plain data only (``course_utils.checks.learner``). A check passes when its code raises nothing;
  what the kernel sends back can change only the learner's own outputs, never the verdict's logic;
* sends one record per cell to the grader's main process through a pipe the kernel does not hold.

The kernel's output is never written to disk by the grader, so a learner's lone surrogate, closed stdout or
deleted working folder cannot break the grading (a cell's text that is not valid Unicode is sent with the
invalid characters replaced, and the feedback says so).
"""
import builtins
import contextlib
import io
import os
import pathlib
import shutil
import signal
import site
import sys
import tempfile
import time
import uuid
from queue import Empty

from course_utils.checks.learner import KernelFailure, Session
from course_utils.grading.constants import REPO_DIR
from course_utils.grading.names import defined_names, used_names
from course_utils.grading.processes import become_subreaper, kill_leftovers, kill_tree

EXCERPT_CHARS = 2000  # output of a cell kept for the feedback
INTERRUPT_GRACE = 5.0  # seconds a cell has to stop after the interrupt before the kernel is stopped
START_TIMEOUT = 60.0


def _read_paths(assignment, extra):
    """The folders a learner's kernel may read under Landlock: Python, the course package, its data, ``extra``."""
    paths = {"/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/opt",
             sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             str(REPO_DIR / "course_utils"), os.environ.get("COURSE_DATA_DIR", str(REPO_DIR / "data"))}
    paths |= {os.path.realpath(p) for p in list(paths)}
    paths |= set(site.getsitepackages())
    for module in assignment.entry_modules:
        top = sys.modules.get(module.partition(".")[0])
        for folder in getattr(top, "__path__", []) or []:
            paths.add(os.path.dirname(os.path.realpath(folder)) if module.partition(".")[0] != "course_utils"
                      else os.path.realpath(folder))
    paths |= {str(pathlib.Path(p).resolve()) for p in extra}
    return sorted(p for p in paths if p and os.path.exists(p))


# --------------------------------------------------------------------------- the kernel's connection

class KernelSession(Session):
    """Requests of the checks to one learner's kernel, over the ``course-grader`` comm (see ``kernel.py``)."""

    def __init__(self, manager, client):
        self.manager, self.client = manager, client
        self.deadline = None  # monotonic time after which a request is interrupted

    def exchange(self, header, buffers):
        from course_utils.grading.kernel import COMM_TARGET

        client = self.client
        message = client.session.msg("comm_open", {"comm_id": uuid.uuid4().hex, "target_name": COMM_TARGET,
                                                   "data": {"header": header}})
        message["buffers"] = [bytes(b) for b in buffers]
        client.shell_channel.send(message)
        msg_id = message["header"]["msg_id"]
        reply, interrupted_at = None, None
        while True:
            try:
                incoming = client.get_iopub_msg(timeout=0.2)
            except Empty:
                if not self.manager.is_alive():
                    raise KernelFailure("the kernel died while the check ran its code") from None
                now = time.monotonic()
                if self.deadline is not None and now > self.deadline and interrupted_at is None:
                    self.manager.interrupt_kernel()
                    interrupted_at = now
                elif interrupted_at is not None and now > interrupted_at + INTERRUPT_GRACE:
                    raise KernelFailure("stuck") from None
                continue
            if incoming.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if incoming["msg_type"] == "comm_msg" and reply is None:
                data = incoming.get("content", {}).get("data", {})
                reply = (data.get("header") if isinstance(data, dict) else None, incoming.get("buffers") or [])
            elif incoming["msg_type"] == "status" and incoming["content"].get("execution_state") == "idle":
                break
        if interrupted_at is not None:
            raise KernelFailure("timed out")
        if reply is None:
            raise KernelFailure("the kernel sent no answer to the check's request (its comm handler was removed?)")
        return reply


# --------------------------------------------------------------------------- cells

def _clean_text(source):
    """``source`` with the characters that cannot be encoded (lone surrogates) replaced; and whether any were."""
    try:
        source.encode("utf-8")
        return source, False
    except UnicodeEncodeError:
        return source.encode("utf-8", "replace").decode("utf-8"), True


def _text_of(content):
    if "text" in content:
        return str(content["text"])
    data = content.get("data")
    return str(data.get("text/plain", "")) if isinstance(data, dict) else ""


class _Excerpt:
    def __init__(self):
        self.parts, self.size = [], 0

    def add(self, text):
        if self.size < EXCERPT_CHARS:
            self.parts.append(text[:EXCERPT_CHARS - self.size])
        self.size += len(text)

    def text(self):
        joined = "".join(self.parts)
        return joined + ("\n[...]" if self.size > EXCERPT_CHARS else "")


def _exit_description(manager):
    try:
        code = manager.provisioner.process.poll()
    except Exception:
        code = None
    if code is None:
        return "the kernel process ended"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the kernel process was killed by {name}"
    return f"the kernel process exited with status {code}"


def run_cell(manager, client, source, timeout):
    """Execute one learner cell; ``(record, kernel still usable)``."""
    record = {"ok": True, "kind": None, "message": None, "excerpt": ""}
    excerpt = _Excerpt()
    msg_id = client.execute(source, store_history=True, allow_stdin=False)
    deadline, interrupted_at, error = time.monotonic() + timeout, None, None
    while True:
        try:
            incoming = client.get_iopub_msg(timeout=0.2)
        except Empty:
            if not manager.is_alive():
                record.update(ok=False, kind="kernel-died", message=_exit_description(manager),
                              excerpt=excerpt.text())
                return record, False
            now = time.monotonic()
            if interrupted_at is None and now > deadline:
                manager.interrupt_kernel()
                interrupted_at = now
            elif interrupted_at is not None and now > interrupted_at + INTERRUPT_GRACE:
                record.update(ok=False, kind="timeout", message=f"Timeout after {timeout:g} s (not interruptible)",
                              excerpt=excerpt.text(), stuck=True)
                return record, False
            continue
        if incoming.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = incoming["msg_type"], incoming.get("content", {})
        if kind in ("stream", "display_data", "execute_result"):
            excerpt.add(_text_of(content))
        elif kind == "error":
            error = f"{content.get('ename')}: {content.get('evalue')}"
        elif kind == "status" and content.get("execution_state") == "idle":
            break
    record["excerpt"] = excerpt.text()
    if interrupted_at is not None:
        record.update(ok=False, kind="timeout", message=f"Timeout after {timeout:g} s")
    elif error is not None:
        record.update(ok=False, kind="error", message=error[:EXCERPT_CHARS])
    return record, True


def run_check(kernel, check, timeout):
    """Run one check cell here, the learner's names bound to handles in ``kernel``; return its record."""
    record = {"ok": False, "kind": "error", "message": None, "excerpt": "", "check": check.check_id}
    output = io.StringIO()
    kernel.deadline = time.monotonic() + timeout
    namespace = {"__name__": "__course_check__", "__builtins__": builtins}
    try:
        with contextlib.redirect_stdout(output):
            for name in sorted(used_names(check.source) - defined_names(check.source) - set(vars(builtins))):
                try:
                    namespace[name] = kernel.handle(name)
                except NameError:
                    pass  # not defined by the learner: the check's code raises NameError where it reads it
            exec(compile(check.source, f"<check {check.check_id}>", "exec", dont_inherit=True), namespace)
        record.update(ok=True, kind=None)
    except KernelFailure as failure:
        reason = str(failure)
        if reason in ("timed out", "stuck"):
            record.update(kind="timeout", message=f"Timeout after {timeout:g} s", stuck=reason == "stuck")
        elif not kernel.manager.is_alive():
            record.update(kind="kernel-died", message=_exit_description(kernel.manager))
        else:
            record["message"] = f"the kernel did not answer the check: {reason}"
    except Exception as error:
        try:
            message = f"{type(error).__name__}: {error}"
        except Exception:
            message = type(error).__name__
        record["message"] = message[:EXCERPT_CHARS]
    finally:
        kernel.deadline = None
    record["excerpt"] = output.getvalue()[-EXCERPT_CHARS:]
    return record


# --------------------------------------------------------------------------- one submission, in a worker

def _kernel_spec_manager(argv, env):
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class GraderKernelSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=argv, env=env, display_name="course-grade kernel", language="python",
                              interrupt_mode="signal")

    return GraderKernelSpecs()


def _start_kernel(root, work, params, env):
    """Start the sandboxed kernel; ``(manager, client)``; raises ``RuntimeError`` when it does not start."""
    import json

    from jupyter_client.manager import KernelManager

    params_path = root / "kernel-params.json"
    params_path.write_text(json.dumps(params), encoding="utf-8")
    argv = [sys.executable, "-m", "course_utils.grading.kernel", str(params_path), "-f", "{connection_file}"]
    manager = KernelManager(kernel_name="course-grade", transport="ipc", ip=str(work / ".kernel" / "socket"),
                            connection_file=str(root / "connection.json"),
                            kernel_spec_manager=_kernel_spec_manager(argv, {}))
    (work / ".kernel").mkdir()
    log = open(root / "kernel.log", "wb")
    manager.start_kernel(env=env, cwd=str(work), stdout=log, stderr=log, stdin=-3)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=START_TIMEOUT)
    except RuntimeError as error:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        log.close()
        tail = (root / "kernel.log").read_bytes()[-3000:].decode("utf-8", "replace")
        raise RuntimeError(f"{error}; the kernel's log ends with:\n{tail}") from None
    return manager, client


def _worker(plan, assignment, options, connection):
    """Body of a worker process: run the plan (``[(index, kind, source or Check)]``), send one record per cell."""
    os.setsid()
    become_subreaper()
    for module in assignment.entry_modules:  # the check packages, imported here before the kernel exists
        __import__(module)
    root = pathlib.Path(tempfile.mkdtemp(prefix="course-grade-"))
    work = root / "work"
    manager = client = None
    try:
        os.chmod(root, 0o700)
        work.mkdir()
        marker = work / ".course-grade-folder"  # gone at the end: the learner's code deleted the folder
        marker.write_text("the grader's working folder for one submission\n", encoding="utf-8")
        (work / ".matplotlib").mkdir()
        _copy_matplotlib_font_cache(work / ".matplotlib")
        threads = max(1, (os.cpu_count() or 1) // max(1, options.jobs))
        env = {key: value for key, value in os.environ.items() if not key.startswith(("JPY_", "JUPYTER_"))}
        env.update({"HOME": str(work), "TMPDIR": str(work), "IPYTHONDIR": str(work / ".ipython"),
                    "MPLCONFIGDIR": str(work / ".matplotlib"), "MPLBACKEND": "Agg",
                    "JUPYTER_RUNTIME_DIR": str(work / ".jupyter"), "JUPYTER_CONFIG_DIR": str(work / ".jupyter"),
                    "JUPYTER_PLATFORM_DIRS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                    "PYTHONDONTWRITEBYTECODE": "1"})
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(name, str(threads))
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:  # pragma: no cover
            pass
        params = {"memory_bytes": options.memory_mb * 2**20 if options.memory_mb else None,
                  "cpu_seconds": int(options.submission_timeout * 4) + 60, "file_bytes": 256 * 2**20,
                  "read_paths": _read_paths(assignment, options.allow_read) + [str(root / "connection.json")],
                  "write_paths": [str(work), "/dev"], "work_dir": str(work)}
        try:
            manager, client = _start_kernel(root, work, params, env)
        except Exception as error:
            connection.send({"index": plan[0][0] if plan else 0, "ok": False, "kind": "kernel-start",
                             "message": f"{type(error).__name__}: {error}"[:EXCERPT_CHARS], "excerpt": ""})
            return
        kernel = KernelSession(manager, client)
        alive = True
        for index, kind, item in plan:
            if not alive:
                connection.send({"index": index, "ok": False, "kind": "kernel-dead", "message": None, "excerpt": "",
                                 **({"check": item.check_id} if kind == "check" else {})})
                continue
            if kind == "check":
                record = run_check(kernel, item, options.cell_timeout)
                alive = record["kind"] != "kernel-died" and not record.get("stuck")
            else:
                source, replaced = _clean_text(item)
                record, alive = run_cell(manager, client, source, options.cell_timeout)
                if replaced:
                    record["replaced_text"] = True
            record["index"] = index
            connection.send(record)
        if not marker.is_file():
            connection.send({"index": None, "note": "the notebook deleted its working folder; the checks do not "
                                                    "need it, so grading went on"})
    finally:
        if client is not None:
            client.stop_channels()
        if manager is not None:
            try:
                manager.shutdown_kernel(now=True)
            except Exception:
                pass
        kill_leftovers()
        shutil.rmtree(root, ignore_errors=True)
        connection.send(None)
        connection.close()


def _copy_matplotlib_font_cache(target):
    """Give the private MPLCONFIGDIR the grader's font cache, so matplotlib does not rebuild it every time."""
    cache = os.environ.get("MPLCONFIGDIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "matplotlib")
    for path in pathlib.Path(cache).glob("fontlist-*.json") if os.path.isdir(cache) else []:
        try:
            shutil.copy(path, target / path.name)
        except OSError:
            pass


# --------------------------------------------------------------------------- the grader's main process

PRELOAD = ["numpy", "jupyter_client", "jupyter_client.manager", "torch", "course_utils.checks.learner",
           "course_utils.grading.kernel", __name__]
_CONTEXT = []
RUNNING = set()  # process ids of the workers running now


def _fork_server(modules=()):
    """The fork server the workers come from; it imports ``PRELOAD`` and the check ``modules`` once, at its start
    (before any learner's kernel exists)."""
    if not _CONTEXT:
        import multiprocessing

        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD + list(modules))
        else:  # pragma: no cover - Windows, macOS without fork servers
            context = multiprocessing.get_context("spawn")
        _CONTEXT.append(context)
    return _CONTEXT[0]


def execute(plan, assignment, options):
    """Run ``plan`` in a worker process; return ``(records, event)``; ``event`` is "time-limit" or None."""
    context = _fork_server(assignment.entry_modules)
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_worker, args=(plan, assignment, options, sender))
    process.start()
    sender.close()
    RUNNING.add(process.pid)
    records, event, done = [], None, False
    deadline = time.monotonic() + options.submission_timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                event = "time-limit"
                break
            if not receiver.poll(min(remaining, 1.0)):
                if not process.is_alive() and not receiver.poll(0):
                    break
                continue
            try:
                record = receiver.recv()
            except (EOFError, OSError):
                break
            if record is None:
                done = True
                break
            records.append(record)
    finally:
        if not done:
            kill_tree(process.pid)
        process.join(timeout=30)
        if process.is_alive():
            kill_tree(process.pid)
            process.join()
        RUNNING.discard(process.pid)
        receiver.close()
    return records, event
