"""Kernel side of ``course-grade``: runs in the learner's kernel before any of the learner's code.

The grader (``execute.py``) does not import this module in the kernel. It reads this file's
source and that of ``sandbox.py`` once, before grading starts (``assignment.py``), writes this
one into an IPython start-up file of each submission's private IPython directory and the other
into the parameters file, so a learner who edits the files on disk changes nothing.
``boot(params_path)`` then, before the first cell of the notebook runs:

* reads its parameters (a secret key, the token's MIME type, limits, the sources of the
  sandbox and of the check packages) from a file it deletes at once, and applies the
  per-submission limits of ``sandbox.py`` (``RLIMIT_AS`` memory, CPU seconds, size of a
  written file, output) and, where the Linux kernel offers it, a Landlock file-system
  sandbox: the learner's code reads only the Python installation, the course package and
  its data, and writes only its private working folder, so it can neither open other
  learners' submissions and the solutions nor write into the gradebook;
* imports the modules the checks rely on (numpy, torch, ...) and takes a snapshot of the
  attributes of those modules, of the classes they define and of ``builtins``;
* installs ``__course_grader__`` in ``builtins``; every check cell of the notebook that
  is executed is replaced by one call ``__course_grader__.run_check(check_id, source)``.

``run_check`` puts the snapshot back (a learner's ``np.allclose = lambda *a, **k: True``
or ``torch.Tensor.__sub__ = ...`` is undone), imports the check package afresh from the
sources kept in memory into modules that are never entered in ``sys.modules`` (so a
patched ``course_utils.checks`` is not the one used), runs the check cell's code in a
private namespace that holds the learner's names, restores the snapshot again after each
call of a learner's function, and only when the check returned publishes an HMAC of the
check id under the grader's private MIME type. The grader counts a check as passed only
when that token is in the cell's output and the cell raised nothing; a learner cannot
print it without the key, which exists only inside this module's closures.

Standard library only: nothing of ``course_utils`` is imported in the kernel before the checks.
"""
import builtins
import functools
import hashlib
import hmac
import importlib.machinery
import importlib.util
import json
import os
import sys
import types
import warnings

_MISSING = object()
# Modules (and their sub-modules) whose attributes are restored before every check.
GUARDED = ("builtins", "numpy", "torch", "torchvision", "scipy", "math", "operator", "functools",
           "itertools", "copy", "inspect", "types", "random", "importlib", "course_utils")


def _guarded(name, extra):
    top = name.partition(".")[0]
    return top in GUARDED or top in extra


def _fingerprint(namespace, keys):
    """The identities of ``namespace[key]`` for ``keys``, computed in C (no learner ``__eq__`` is called)."""
    return tuple(map(id, map(namespace.get, keys)))


class _Snapshot:
    """The attributes of the guarded modules and of the classes they define, at boot time.

    ``restore`` first compares identities (fast, in C) and walks a namespace key by key
    only where something changed, so it costs a few milliseconds even with torch loaded.
    """

    def __init__(self, extra):
        self.modules, self.classes, self.sys_modules = [], [], {}
        seen_classes = set()
        for name, module in list(sys.modules.items()):
            if module is None or not _guarded(name, extra):
                continue
            self.sys_modules[name] = module
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            self.modules.append(self._entry(namespace, name))
            for value in list(namespace.values()):
                defined_here = isinstance(value, type) and getattr(value, "__module__", None) == name
                if defined_here and id(value) not in seen_classes:
                    seen_classes.add(id(value))
                    self.classes.append(self._entry(value, name))
        self.meta_path = list(sys.meta_path)
        # torch keeps global module hooks in dicts that a learner could fill to alter every model's output.
        hooks = sys.modules.get("torch.nn.modules.module")
        self.hook_dicts = [(d, dict(d)) for n, d in vars(hooks).items()
                           if n.startswith("_global_") and isinstance(d, dict)] if hooks else []

    @staticmethod
    def _entry(owner, name):
        """``[module dict or class, module name, saved attributes, their keys, their identities]``."""
        mapping = owner if isinstance(owner, dict) else owner.__dict__
        saved = dict(mapping)
        keys = tuple(saved)
        return [owner, name, saved, keys, _fingerprint(mapping, keys)]

    def restore(self):
        """Undo every change made since the snapshot to the guarded attributes."""
        modules = sys.modules
        for name, module in self.sys_modules.items():
            if modules.get(name) is not module:
                modules[name] = module
        for entry in self.modules:
            namespace, name, saved, keys, ids = entry
            if len(namespace) == len(keys) and _fingerprint(namespace, keys) == ids:
                continue
            for key, value in saved.items():
                if namespace.get(key, _MISSING) is not value:
                    namespace[key] = value
            for key in [k for k in namespace if k not in saved]:
                value = namespace[key]
                if isinstance(key, str) and modules.get(f"{name}.{key}") is value:
                    saved[key] = value  # a sub-module imported since: part of the pristine state now
                elif not (isinstance(key, str) and key.startswith("__")):
                    del namespace[key]
            entry[3] = tuple(saved)
            entry[4] = _fingerprint(namespace, entry[3])
        for entry in self.classes:
            cls, _, saved, keys, ids = entry
            current = cls.__dict__
            if len(current) == len(keys) and _fingerprint(current, keys) == ids:
                continue
            for key, value in saved.items():
                if current.get(key, _MISSING) is not value:
                    try:
                        type.__setattr__(cls, key, value)
                    except (TypeError, AttributeError):
                        pass
            for key in [k for k in current if k not in saved]:
                try:
                    type.__delattr__(cls, key)
                except (TypeError, AttributeError):
                    pass
        sys.meta_path[:] = self.meta_path
        for hooks, saved in self.hook_dicts:
            if len(hooks) != len(saved) or any(hooks.get(k, _MISSING) is not v for k, v in saved.items()):
                hooks.clear()
                hooks.update(saved)


class _SourceLoader:
    """Finds and loads the check packages from sources kept in memory (never from disk)."""

    def __init__(self, sources):
        self.sources = sources  # module name -> (file name, source text, is a package)
        self.code = {}  # module name -> compiled code (immutable: compiled once, executed afresh each check)

    def find_spec(self, name, path=None, target=None):
        if name not in self.sources:
            return None
        filename, _, is_package = self.sources[name]
        spec = importlib.machinery.ModuleSpec(name, self, origin=filename, is_package=is_package)
        if is_package:
            spec.submodule_search_locations = []
        spec.has_location = True
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__spec__.name
        filename, source, _ = self.sources[name]
        module.__file__ = filename
        if name not in self.code:
            self.code[name] = compile(source, filename, "exec", dont_inherit=True, optimize=0)
        exec(self.code[name], module.__dict__)


def _module_from_source(name, filename, source):
    """A module run from ``source`` (kept in memory) with its own copy of the boot-time builtins, like this one."""
    module = types.ModuleType(name)
    module.__file__ = filename
    module.__builtins__ = dict(builtins.__dict__)  # a learner's later patch of ``builtins`` does not reach it
    exec(compile(source, filename, "exec", dont_inherit=True, optimize=0), module.__dict__)
    return module


def boot(params_path):
    """Set up the grader inside the kernel; called by the start-up file before any learner code."""
    with open(params_path, encoding="utf-8") as file:
        params = json.load(file)
    for path in (params_path, params["startup_file"]):
        try:
            os.remove(path)
        except OSError:
            pass
    key = params.pop("key").encode()
    token_mime = params["token_mime"]
    sandbox = _module_from_source("course_grader_sandbox", "<course-grader sandbox>", params.pop("sandbox_source"))
    sources = {name: tuple(entry) for name, entry in params["sources"].items()}
    fresh_tops = {name.partition(".")[0] for name in sources}

    sandbox.set_limits(memory_bytes=params.get("memory_bytes"), cpu_seconds=params.get("cpu_seconds"),
                       file_bytes=params.get("file_bytes"))

    for name in params.get("preload", []):
        try:
            __import__(name)
        except Exception:
            pass
    loader = _SourceLoader(sources)

    from IPython import get_ipython

    shell = get_ipython()
    user_ns = shell.user_ns
    display_pub = shell.display_pub
    pristine_builtins = dict(builtins.__dict__)
    original_import = builtins.__import__

    def load_fresh(cache, name, fromlist, level, globals_):
        """Import ``name`` from the in-memory sources into ``cache``, leaving ``sys.modules`` as it was."""
        hidden = {n: m for n, m in list(sys.modules.items()) if n.partition(".")[0] in fresh_tops}
        for n in hidden:
            del sys.modules[n]
        sys.modules.update(cache)
        sys.meta_path.insert(0, loader)
        try:
            return original_import(name, globals_, None, fromlist, level)
        finally:
            sys.meta_path.remove(loader)
            for n in [n for n in sys.modules if n.partition(".")[0] in fresh_tops]:
                cache[n] = sys.modules.pop(n)
            sys.modules.update(hidden)

    def private_builtins(cache):
        """A copy of the boot-time builtins whose ``__import__`` serves the check packages afresh."""
        namespace = dict(pristine_builtins)

        def checked_import(name, globals_=None, locals_=None, fromlist=(), level=0):
            if level == 0 and name.partition(".")[0] in fresh_tops:
                return load_fresh(cache, name, fromlist, level, globals_)
            return original_import(name, globals_, locals_, fromlist, level)

        namespace["__import__"] = checked_import
        return namespace

    # Load the check packages once so that everything they import is loaded (and snapshot) now.
    warm_cache = {}
    for name in params.get("entry_modules", []):
        try:
            load_fresh(warm_cache, name, ("__name__",), 0, None)
        except Exception:
            pass
    del warm_cache

    sandbox_note = sandbox.restrict_files(params.get("read_paths", []), params.get("write_paths", []))
    budget = [int(params.get("output_chars", 0)) or 10**12]
    sys.stdout = sandbox.CappedStream(sys.stdout, budget)
    sys.stderr = sandbox.CappedStream(sys.stderr, budget)

    restore_holder = []

    def guard(function):
        """Wrap a learner's function so the snapshot is put back after every call."""
        @functools.wraps(function)
        def guarded(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            finally:
                restore_holder[0]()
        return guarded

    def run_check(check_id, source):
        """Run one check cell's code against the learner's names; publish the token if it passes."""
        sys.last_type = sys.last_value = sys.last_traceback = None  # free what a failed cell kept alive
        if hasattr(sys, "last_exc"):
            sys.last_exc = None
        snapshot.restore()
        cache = {}
        namespace = {}
        for name, value in list(user_ns.items()):
            if name.startswith("_"):
                continue
            if isinstance(value, types.FunctionType) and getattr(value, "__module__", None) == "__main__":
                value = guard(value)
            namespace[name] = value
        namespace["__builtins__"] = private_builtins(cache)
        namespace["__name__"] = "__main__"
        code = compile(source, f"<check {check_id}>", "exec", dont_inherit=True, optimize=0)
        try:
            exec(code, namespace)
        finally:
            snapshot.restore()
        token = hmac.new(key, check_id.encode(), hashlib.sha256).hexdigest()
        display_pub.publish(data={token_mime: token, "text/plain": ""}, metadata={})

    grader = types.SimpleNamespace(run_check=run_check, sandbox=sandbox_note)
    builtins.__course_grader__ = grader
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated module attributes warn when looked at
        snapshot = _Snapshot(set(params.get("guard", [])))
    restore_holder.append(snapshot.restore)
