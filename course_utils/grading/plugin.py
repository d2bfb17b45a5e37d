"""pytest plugin loaded by ``course-grade`` next to nbval (``-p course_utils.grading.plugin``).

It runs in the pytest process of one submission (started by ``execute.py``), which executes no
learner code, and:

* writes one JSON line per executed notebook cell (index of the cell in the graded
  notebook, passed or not, the error's name and message, the grader tokens found in the
  cell's output, a short excerpt of the output) to a pipe that only this process holds
  (the file descriptor in the environment variable ``constants.REPORT_FD_ENV``), so a learner's
  kernel can neither read nor forge the report by printing;
* notices at once when the kernel process dies (``os._exit``, a segfault, the memory or CPU
  limit) instead of waiting for the cell time-out, and names the exit status or signal;
* becomes the child subreaper of the processes it starts and, at the end, kills every
  process the kernel left behind (daemons that tried to outlive the grading).
"""
import json
import os
import signal
import time
from queue import Empty

import pytest

from course_utils.grading.constants import REPORT_FD_ENV, TOKEN_MIME
from course_utils.grading.processes import become_subreaper, kill_leftovers

EXCERPT_CHARS = 2000
_report = None


class KernelDied(RuntimeError):
    """The kernel process ended while a cell was running."""


def _exit_description(kernel):
    try:
        code = kernel.km.provisioner.process.poll()
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


def _patch_nbval():
    from nbval.kernel import RunningKernel

    original = RunningKernel.await_reply
    if getattr(original, "_course_grader", False):
        return

    def await_reply(self, msg_id, timeout=None):
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            step = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
            try:
                return original(self, msg_id, timeout=step)
            except Empty:
                if not self.km.is_alive():
                    raise KernelDied(_exit_description(self)) from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    await_reply._course_grader = True
    RunningKernel.await_reply = await_reply


def pytest_configure(config):
    global _report
    fd = os.environ.get(REPORT_FD_ENV)
    if fd is None:
        return
    _report = os.fdopen(int(fd), "w", encoding="utf-8", buffering=1)
    become_subreaper()
    _patch_nbval()
    try:  # a busy machine delays heartbeats; one missed second must not count as a dead kernel
        from jupyter_client.channels import HBChannel

        HBChannel.time_to_dead = 10.0
    except Exception:
        pass


def _write(record):
    if _report is not None:
        _report.write(json.dumps(record) + "\n")


def _excerpt(outputs):
    text = []
    for out in outputs or []:
        if out.get("output_type") == "stream":
            text.append(out.get("text", ""))
        elif out.get("output_type") in ("display_data", "execute_result"):
            text.append(str(out.get("data", {}).get("text/plain", "")))
        if sum(map(len, text)) > EXCERPT_CHARS:
            break
    joined = "".join(text)
    return joined[:EXCERPT_CHARS] + ("\n[...]" if len(joined) > EXCERPT_CHARS else "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    cell = getattr(item, "cell", None)
    if _report is None or cell is None or call.when not in ("setup", "call"):
        return
    if call.when == "setup" and call.excinfo is None:
        return
    outputs = getattr(item, "test_outputs", None) or []
    tokens = [out["data"][TOKEN_MIME] for out in outputs
              if out.get("output_type") == "display_data" and TOKEN_MIME in out.get("data", {})]
    error = next((out for out in outputs if out.get("output_type") == "error"), None)
    record = {"index": cell.get("metadata", {}).get("course_grader", {}).get("index"),
              "phase": call.when, "ok": call.excinfo is None, "tokens": tokens[:4],
              "excerpt": _excerpt(outputs), "kind": None, "message": None}
    if call.excinfo is not None:
        exc = call.excinfo.value
        message = str(getattr(exc, "args", [""])[0] if isinstance(exc, Exception) and exc.args else exc)
        if call.when == "setup":
            record["kind"], record["message"] = "kernel-start", f"{type(exc).__name__}: {message}"[:EXCERPT_CHARS]
        elif isinstance(exc, KernelDied):
            record["kind"], record["message"] = "kernel-died", str(exc)
        elif "Kernel dead on test start" in message:
            record["kind"], record["message"] = "kernel-dead", "the kernel was no longer running"
        elif "Timeout" in message:
            record["kind"], record["message"] = "timeout", message
        elif error is not None:
            record["kind"] = "error"
            record["message"] = f"{error.get('ename')}: {error.get('evalue')}"[:EXCERPT_CHARS]
        else:
            record["kind"], record["message"] = "error", message[:EXCERPT_CHARS]
    _write(record)
    item.test_outputs = None  # a flood of output is not kept for the whole run


def pytest_unconfigure(config):
    if _report is not None:
        kill_leftovers()
        _report.close()
