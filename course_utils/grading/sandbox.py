"""Limits of a learner's kernel while ``course-grade`` runs it: rlimits and the Landlock sandbox.

``kernel.py`` applies them in the kernel process before ipykernel starts (so before any thread exists, and
every thread and child process inherits them):

* ``set_limits``: the address-space (``RLIMIT_AS``), CPU-seconds and written-file-size limits;
* ``restrict``: where the Linux kernel offers Landlock, the process may read only the folders the grader
  names and write only its private working folder; with Landlock ABI 6 or later (Linux 6.12) it also cannot
  send a signal to, nor connect to an abstract Unix socket of, any process outside its own sandbox (the
  grader, other learners' kernels). Landlock also keeps every sandboxed process from ptrace-ing, and so
  from reading the memory or ``/proc/<pid>/environ`` of, a process outside its sandbox (ABI 1 and later).
* ``isolation``: which of these this machine provides, in words, for the gradebook and ``docs/grading.md``.

Which values and folders apply to a submission is decided by the grader (``execute.py``). Standard
library only.
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


SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # Landlock ABI 6


def isolation(abi=None):
    """What the Landlock of this Linux kernel keeps a learner's kernel from doing, in words."""
    abi = landlock_abi() if abi is None else abi
    if abi < 1:
        return ("none: this Linux kernel has no Landlock, so a learner's kernel can read and write what the "
                "grader's user can and signal the grader's processes (run one job at a time, as a separate user)")
    if abi < 6:
        return (f"Landlock ABI {abi}: files sandboxed and no ptrace of other processes, but signals are not "
                "scoped (Linux 6.12 or later is needed): a learner's kernel could signal the grader's processes")
    return (f"Landlock ABI {abi}: files sandboxed; no signal, ptrace or abstract Unix socket reaches a process "
            "outside the learner's own kernel")


def restrict(read_paths, write_paths):
    """Allow reading only ``read_paths``, writing only ``write_paths``, signals only inside; return a note."""
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
        if abi >= 5:
            handled |= 1 << 15  # ioctl on devices
        read_access = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir

        class RulesetAttr(ctypes.Structure):
            _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                        ("scoped", ctypes.c_uint64)]

        scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
        attr = RulesetAttr(handled, 0, scoped)
        size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
        ruleset = syscall(444, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
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
                allowed = access if os.path.isdir(path) else access & ((1 << 0) | (1 << 1) | (1 << 2) | (1 << 14)
                                                                       | (1 << 15))
                rule = PathBeneath(allowed & handled, fd)
                syscall(445, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0))
                os.close(fd)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS, required by landlock_restrict_self
        if syscall(446, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return f"Landlock restrict_self failed (errno {ctypes.get_errno()})"
        os.close(ruleset)
        return isolation(abi)
    except Exception as error:  # a sandbox we cannot install must not stop grading
        return f"Landlock unavailable: {error!r}"
