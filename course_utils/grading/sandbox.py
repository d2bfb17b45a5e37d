"""Limits of a learner's kernel while ``course-grade`` runs it: rlimits, an output cap and the Landlock sandbox.

The kernel side (``kernel.py``) applies them before the first cell of a submission runs:

* ``set_limits``: the address-space (``RLIMIT_AS``), CPU-seconds and written-file-size limits;
* ``CappedStream``: stdout and stderr pass on only so many characters;
* ``restrict_files``: where the Linux kernel offers Landlock, the process (and all it starts) may read
  only the folders the grader names and write only its private working folder.

Which values and folders apply to a submission is decided by the grader (``execute.py``). Like
``kernel.py``, this module is run in the kernel from the source the grader read before grading started,
never imported from disk there, so it imports nothing but the standard library.
"""
import ctypes
import os
import resource


def set_limits(memory_bytes=None, cpu_seconds=None, file_bytes=None):
    """Set the soft and hard ``RLIMIT_AS``, ``RLIMIT_CPU`` and ``RLIMIT_FSIZE`` of this process (None: unchanged)."""
    for kind, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CPU, cpu_seconds),
                        (resource.RLIMIT_FSIZE, file_bytes)):
        if value:
            try:
                resource.setrlimit(kind, (int(value), int(value)))
            except (ValueError, OSError):
                pass


class CappedStream:
    """Forward writes to ``stream`` until the shared ``budget[0]`` characters are spent, then drop them (once noted).

    stdout and stderr share one ``budget`` (a one-element list), so the cap is on their sum.
    """

    def __init__(self, stream, budget):
        self._stream, self._budget = stream, budget

    def write(self, text):
        if self._budget[0] <= 0:
            return len(text)
        self._budget[0] -= len(text)
        if self._budget[0] <= 0:
            self._stream.write(text[: len(text) + self._budget[0]])
            self._stream.write("\n[course-grade: output limit reached, the rest of the output is dropped]\n")
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _syscall():
    """libc's ``syscall``, returning a C long (the Landlock calls have no libc wrappers)."""
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long
    return syscall


def landlock_abi():
    """The Landlock ABI version this Linux kernel offers (0 when it has none)."""
    try:
        return max(0, int(_syscall()(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))))  # create_ruleset(VERSION)
    except Exception:
        return 0


def restrict_files(read_paths, write_paths):
    """Allow reading only ``read_paths`` and writing only ``write_paths``; return a note saying what was done."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = _syscall()
        abi = landlock_abi()
        if abi < 1:
            return "no Landlock in this Linux kernel: file access is not sandboxed"
        handled = (1 << 13) - 1  # ABI 1: execute, write, read file/dir, remove, make ...
        if abi >= 2:
            handled |= 1 << 13  # refer
        if abi >= 3:
            handled |= 1 << 14  # truncate
        read_access = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
        attr = ctypes.c_uint64(handled)
        ruleset = syscall(444, ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
        if ruleset < 0:
            return f"Landlock ruleset failed (errno {ctypes.get_errno()})"

        class PathBeneath(ctypes.Structure):
            _pack_ = 1
            _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

        for paths, access in ((read_paths, read_access), (write_paths, handled)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                allowed = access if os.path.isdir(path) else access & ((1 << 0) | (1 << 1) | (1 << 2) | (1 << 14))
                rule = PathBeneath(allowed & handled, fd)
                syscall(445, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0))
                os.close(fd)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS, required by landlock_restrict_self
        if syscall(446, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return f"Landlock restrict_self failed (errno {ctypes.get_errno()})"
        os.close(ruleset)
        return f"Landlock ABI {abi}"
    except Exception as error:  # a sandbox we cannot install must not stop grading
        return f"Landlock unavailable: {error!r}"
