"""The grader's child processes: adopting the orphans, finding the children, stopping them.

``course-grade`` (``grade.py``) and its workers (``execute.py``) both start
processes (workers, kernels) that a learner's code may try to make outlive the grading: a daemon
that leaves its session is re-parented to the nearest subreaper, which then stops it.
"""
import os
import signal


def become_subreaper():
    """Make this process the parent of every orphan among its descendants, so ``kill_leftovers`` finds them."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def _children_by_parent():
    """``{parent pid: [child pids]}`` over every process in ``/proc``."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    ppid = int(file.read().rsplit(")", 1)[1].split()[1])  # the field after the state
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    return children


def child_pids():
    """The processes whose parent is this one."""
    return _children_by_parent().get(os.getpid(), [])


def descendants(root_pid):
    """Every process below ``root_pid``: its children, their children, ..."""
    children = _children_by_parent()
    found, todo = [], [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _sigkill(pids):
    """Send SIGKILL to each of ``pids``; return how many were still there to receive it."""
    killed = 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def kill_tree(pid):
    """SIGKILL process ``pid`` and all its descendants (the caller reaps ``pid``)."""
    _sigkill([pid] + descendants(pid))


def kill_leftovers(spare=()):
    """Kill (and reap) every child still running except the pids in ``spare``; return how many there were."""
    killed = 0
    for _ in range(50):
        children = [pid for pid in child_pids() if pid not in spare]
        if not children:
            break
        killed += _sigkill(children)
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    return killed


def helper_pids():
    """The fork server and multiprocessing's resource tracker: children of ours that must outlive a run."""
    from multiprocessing import forkserver, resource_tracker

    pids = (getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None),
            getattr(getattr(resource_tracker, "_resource_tracker", None), "_pid", None))
    return {pid for pid in pids if pid}
