"""How a check reaches the learner's code: in the learner's own process, or across the grader's boundary.

A check is written once. It touches the learner's code only through two calls:

* ``call(function, args, kwargs)`` (what ``common.call`` uses): run the learner's function, class or model;
* ``run(probe, *args, **kwargs)``: run ``probe``, a module-level function of a check module that handles the
  learner's objects (traces a model's operations, trains it for an epoch ...) and returns plain data.

**In the learner's notebook** the check's arguments are the learner's own objects, so both calls simply call.

**Under ``course-grade``** the check runs in the grader's process and its arguments are ``LearnerObject`` handles
of objects that live in the learner's kernel. ``call`` and ``run`` then send a request to the kernel: the name or
handle of the learner's object, and the arguments as plain data (``plain_data``: arrays as raw bytes with dtype
and shape, numbers, strings, containers; never pickles). The kernel (``serve``) runs the learner's function, or
the probe of its own copy of the check module, on those arguments and sends back plain data: the result, the
arguments the learner changed in place, the printed output, or the learner's exception (its type and message).
The inputs, the references, the comparison and the verdict stay in the grader's process: whatever the
learner's code does to numpy, torch or the course package in its kernel can change only what comes back, which
the check then compares with the reference it computed itself.

Objects that are not plain data (a model a learner's class returns, the cache of a forward pass) stay in the
kernel and come back as new ``LearnerObject`` handles, which later requests can pass back. ``loopback`` runs
the same protocol in one process (every request and reply encoded to bytes and back): the tests use it to show
that each check gives the same verdicts in both modes.
"""
import contextlib
import importlib
import io
import itertools
import sys
import threading

from course_utils.checks import plain_data

OUTPUT_CHARS = 20_000  # printed output of one request that is sent back


LearnerError = plain_data.LearnerError


class LearnerObject:
    """A handle, in the grader's process, of an object in the learner's kernel (a function, a class, a model)."""

    def __init__(self, session, reference, description):
        self._session = session
        self._reference = reference  # {"name": "conv2d"} or {"handle": 3}
        self._description = description  # {"type": "function", "name": "conv2d", "callable": True, ...}

    @property
    def __name__(self):
        return self._description.get("name") or self._reference.get("name") or self._description.get("type", "object")

    @property
    def type_name(self):
        """The class name of the object in the kernel (``"function"``, ``"BasicBlock"`` ...)."""
        return self._description.get("type", "object")

    @property
    def is_module(self):
        """Whether the object is an ``nn.Module`` instance."""
        return bool(self._description.get("module"))

    def __call__(self, *args, **kwargs):
        return self._session.call(self, args, kwargs)

    def __repr__(self):
        return f"<learner's {self.type_name} {self.__name__!r}>"


def is_learner_object(value):
    return isinstance(value, LearnerObject)


def _contains_learner_object(value, depth=0):
    if isinstance(value, LearnerObject):
        return True
    if depth > 8:
        return False
    if isinstance(value, (tuple, list)):
        return any(_contains_learner_object(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_contains_learner_object(v, depth + 1) for v in value.values())
    return False


def _session_of(values):
    stack = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, LearnerObject):
            return value._session
        if isinstance(value, (tuple, list)):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
    return None


def call(function, args=(), kwargs=None):
    """``function(*args, **kwargs)``, in the learner's kernel when ``function`` is a ``LearnerObject``."""
    kwargs = kwargs or {}
    if isinstance(function, LearnerObject):
        return function._session.call(function, tuple(args), kwargs)
    return function(*args, **kwargs)


def run(probe, *args, **kwargs):
    """``probe(*args, **kwargs)`` where the learner's objects among the arguments live.

    ``probe`` must be a module-level function of a ``course_utils`` module that returns plain data; under the
    grader it runs in the kernel (its own copy there), on the objects the handles stand for.
    """
    session = _session_of(list(args) + list(kwargs.values()))
    if session is None:
        return probe(*args, **kwargs)
    return session.probe(f"{probe.__module__}:{probe.__qualname__}", args, kwargs)


rebuild_error = plain_data.rebuild_error
describe_error = plain_data.describe_error


# --------------------------------------------------------------------------- the kernel's side

class Server:
    """Serves the grader's requests in the learner's kernel, on the objects of ``namespace`` (the user's).

    ``serve(header, buffers)`` returns ``(reply header, reply buffers)``; it never raises.
    """

    def __init__(self, namespace):
        self.namespace = namespace
        self.handles = {}  # handle -> object kept for later requests
        self.numbers = itertools.count(1)

    def keep(self, obj):
        """Keep ``obj`` for later requests; its description with the new handle."""
        handle = next(self.numbers)
        self.handles[handle] = obj
        return dict(self.describe(obj), handle=handle)

    @staticmethod
    def describe(obj):
        """What the grader may know of an object that stays here: its type's name, callable, a module or not."""
        description = {"type": type(obj).__name__, "callable": callable(obj)}
        name = getattr(obj, "__name__", None)
        if isinstance(name, str):
            description["name"] = name[:200]
        torch = sys.modules.get("torch")  # not imported: the object cannot be a module (and no import is slow)
        description["module"] = bool(torch is not None and isinstance(obj, torch.nn.Module))
        return description

    def resolve(self, reference):
        if "handle" in reference:
            if reference["handle"] not in self.handles:
                raise LookupError(f"unknown handle {reference['handle']!r}")
            return self.handles[reference["handle"]]
        name = reference.get("name")
        if not isinstance(name, str) or name not in self.namespace:
            raise NameError(f"name '{name}' is not defined")
        return self.namespace[name]

    def serve(self, header, buffers):
        output = io.StringIO()
        try:
            request = plain_data.decode(header, buffers, remote=lambda body: self.resolve(body["ref"]))
            if not isinstance(request, dict):
                raise plain_data.PlainDataError("a request is a dict")
            operation = request.get("operation")
            if operation == "release":
                for handle in request.get("handles", ()):
                    self.handles.pop(handle, None)
                return plain_data.encode({"ok": True})
            if operation == "describe":
                target = self.resolve(request["target"])
                return plain_data.encode({"ok": True, "description": self.describe(target)})
            args, kwargs = request.get("args", ()), request.get("kwargs", {})
            if operation == "call":
                target = request["target"]  # decoded from the reference: the learner's object itself
            elif operation == "probe":
                module_name, _, qualname = str(request.get("probe")).partition(":")
                if not (module_name.startswith("course_utils.") and qualname.startswith("learner_")
                        and qualname.isidentifier()):
                    raise plain_data.PlainDataError(f"not a probe: {request.get('probe')!r}")
                target = getattr(importlib.import_module(module_name), qualname)
            else:
                raise plain_data.PlainDataError(f"unknown operation {operation!r}")
        except Exception as error:
            return plain_data.encode({"ok": False, "grader_error": describe_error(error)})
        before = {}
        for position, value in list(enumerate(args)) + list(kwargs.items()):
            if _mutable(value):
                try:
                    before[position] = plain_data.to_bytes(*plain_data.encode(value))
                except Exception:
                    pass
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                result = target(*args, **kwargs)
        except BaseException as error:  # the learner's exception, KeyboardInterrupt included (a time-out)
            if isinstance(error, KeyboardInterrupt):
                return plain_data.encode({"ok": False, "interrupted": True, "output": output.getvalue()[-OUTPUT_CHARS:]})
            if isinstance(error, SystemExit):
                error = RuntimeError(f"SystemExit({error.code!r}) was raised")
            return plain_data.encode({"ok": False, "error": describe_error(error),
                                      "output": output.getvalue()[-OUTPUT_CHARS:]})
        changed = []
        for position, value in list(enumerate(args)) + list(kwargs.items()):
            if position in before:
                try:
                    after = plain_data.encode(value)
                    if plain_data.to_bytes(*after) != before[position]:
                        changed.append([position, value])
                except Exception:
                    pass
        try:
            return plain_data.encode({"ok": True, "result": result, "changed": changed,
                                      "output": output.getvalue()[-OUTPUT_CHARS:]}, keep=self.keep)
        except Exception as error:
            return plain_data.encode({"ok": False, "error": {
                "type": "TypeError", "message": f"the result could not be sent to the grader: {describe_error(error)['message']}"},
                "output": output.getvalue()[-OUTPUT_CHARS:]})


def _mutable(value):
    import numpy as np

    if isinstance(value, (np.ndarray, list, dict)):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


# --------------------------------------------------------------------------- the grader's side

class KernelFailure(BaseException):
    """The kernel did not answer a request (it died, timed out, or sent something that is not a reply)."""


class Session:
    """The grader's end of the protocol; ``exchange(header, buffers)`` carries a request to the kernel and back.

    Subclasses implement ``exchange``: ``Loopback`` (in-process) and the grader's kernel connection
    (``course_utils.grading.execute``).
    """

    def exchange(self, header, buffers):  # pragma: no cover - abstract
        raise NotImplementedError

    def handle(self, name):
        """The handle of the learner's ``name``; ``NameError`` when the learner's namespace has no such name."""
        reply = self._request({"operation": "describe", "target": {"name": name}})
        description = reply.get("description")
        if not isinstance(description, dict):
            raise KernelFailure("the kernel's description of a name is not valid")
        return LearnerObject(self, {"name": name}, dict(description, name=name))

    def _refer(self, value):
        if isinstance(value, LearnerObject):
            if value._session is not self:
                raise plain_data.PlainDataError("a handle of another session")
            return {"ref": value._reference}
        return None

    def _request(self, request):
        header, buffers = plain_data.encode(request, refer=self._refer)
        reply_header, reply_buffers = self.exchange(header, buffers)
        try:
            reply = plain_data.decode(reply_header, reply_buffers,
                                      remote=lambda body: LearnerObject(self, {"handle": body.get("handle")}, body)
                                      if isinstance(body.get("handle"), int) else _invalid(body))
        except plain_data.PlainDataError as error:
            raise KernelFailure(f"the kernel's reply is not valid plain data: {error}") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise KernelFailure("the kernel's reply is not a reply")
        output = reply.get("output")
        if isinstance(output, str) and output:
            print(output, end="" if output.endswith("\n") else "\n")
        if reply.get("interrupted"):
            raise KernelFailure("the learner's code was interrupted")
        if "grader_error" in reply:
            info = reply["grader_error"] if isinstance(reply["grader_error"], dict) else {}
            if info.get("type") == "NameError":
                raise NameError(str(info.get("message", ""))[:500])
            raise KernelFailure(f"the kernel could not serve the request: {info.get('type')}: {info.get('message')}")
        if not reply["ok"]:
            raise rebuild_error(reply.get("error") if isinstance(reply.get("error"), dict) else {})
        return reply

    def call(self, target, args, kwargs):
        reply = self._request({"operation": "call", "target": target, "args": tuple(args),
                               "kwargs": dict(kwargs)})
        _apply_changes(args, kwargs, reply.get("changed"))
        return reply.get("result")

    def probe(self, name, args, kwargs):
        reply = self._request({"operation": "probe", "probe": name, "args": tuple(args), "kwargs": dict(kwargs)})
        _apply_changes(args, kwargs, reply.get("changed"))
        return reply.get("result")


def _invalid(body):
    raise plain_data.PlainDataError(f"invalid object reference {body!r:.80}")


def _apply_changes(args, kwargs, changed):
    """Copy what the learner changed in place into the grader's arguments, so the check sees it as in-process."""
    if not isinstance(changed, list):
        return
    for entry in changed:
        if not (isinstance(entry, list) and len(entry) == 2):
            continue
        position, value = entry
        if type(position) is int and 0 <= position < len(args):
            original = args[position]
        elif isinstance(position, str) and position in kwargs:
            original = kwargs[position]
        else:
            continue
        _update_in_place(original, value)


def _update_in_place(original, value):
    import numpy as np

    if isinstance(original, np.ndarray) and isinstance(value, np.ndarray):
        if original.shape == value.shape and original.flags.writeable:
            original[...] = value
    elif isinstance(original, dict) and isinstance(value, dict):
        for key in list(original):
            if key not in value:
                del original[key]
        for key, item in value.items():
            current = original.get(key)
            same_array = (isinstance(current, np.ndarray) and isinstance(item, np.ndarray)
                          and current.shape == item.shape and current.dtype == item.dtype)
            if same_array or (isinstance(current, (dict, list)) and type(item) is type(current)):
                _update_in_place(current, item)
            else:  # a new entry, or one the learner replaced by another shape or type: the learner's value
                original[key] = item
    elif isinstance(original, list) and isinstance(value, list):
        original[:] = value
    else:
        try:
            import torch
        except ImportError:  # pragma: no cover
            return
        if isinstance(original, torch.Tensor) and isinstance(value, torch.Tensor) and original.shape == value.shape:
            with torch.no_grad():
                original.copy_(value)


class Loopback(Session):
    """The protocol in one process: a ``Server`` on ``namespace``, every message encoded to bytes and back.

    ``with Loopback({"conv2d": my_conv2d}) as learner: check(learner.conv2d)`` runs ``check`` as the grader
    would, without a kernel.
    """

    def __init__(self, namespace):
        self.server = Server(dict(namespace))
        self._lock = threading.Lock()

    def exchange(self, header, buffers):
        with self._lock:
            request = plain_data.from_bytes(plain_data.to_bytes(header, buffers))
            reply = self.server.serve(*request)
            return plain_data.from_bytes(plain_data.to_bytes(*reply))

    def __getattr__(self, name):
        if name.startswith("_") or name in ("server",):
            raise AttributeError(name)
        return self.handle(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.handles.clear()
        return False
