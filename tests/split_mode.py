"""Running a check as ``course-grade`` runs it, for the tests of every chapter's checks.

Under the grader a check runs in the grader's process on handles of the learner's objects;
``course_utils.checks.learner.Loopback`` runs that protocol in this process, every message encoded to bytes
and back. Right answers must pass there too, and wrong ones fail with the message they get in the learner's
notebook.
"""
import re
import types

import pytest

from course_utils.checks import learner


def renamed(value, name):
    """A function under the learner's ``name`` (a lambda's ``__name__`` is ``<lambda>``); anything else as it is."""
    if not isinstance(value, types.FunctionType):
        return value
    function = types.FunctionType(value.__code__, value.__globals__, name, value.__defaults__, value.__closure__)
    function.__kwdefaults__ = value.__kwdefaults__
    return function


def split_mode(check, *functions, **kwargs):
    """Run ``check`` on handles of ``functions`` (named by their ``__name__``; an instance, such as a network,
    by its position) in a ``learner.Loopback`` session."""
    names = [function.__name__ if isinstance(function, (types.FunctionType, type)) else f"object_{position}"
             for position, function in enumerate(functions)]
    namespace = {}
    for name, function in zip(names, functions):  # one function may be passed twice, two under one name not
        assert namespace.setdefault(name, function) is function, "the functions need distinct names"
    with learner.Loopback(namespace) as session:
        return check(*(session.handle(name) for name in names), **kwargs)


def failure(check, *args, **kwargs):
    """The message of the ``AssertionError`` that ``check(*args, **kwargs)`` raises."""
    with pytest.raises(AssertionError) as raised:
        check(*args, **kwargs)
    return str(raised.value)


def verdict(check, *arguments):
    """The message of the ``AssertionError`` that ``check(*arguments)`` raises, or None when it passes."""
    try:
        check(*arguments)
    except AssertionError as error:
        return str(error)
    return None


def split_verdict(check, namespace):
    """``verdict`` of ``check`` on handles of ``namespace``'s objects (the learner's names, in argument order)."""
    with learner.Loopback({name: renamed(value, name) for name, value in namespace.items()}) as session:
        return verdict(check, *(session.handle(name) for name in namespace))


def assert_same_failure(check, namespace, message):
    """``check`` fails on ``namespace``'s objects in-process and in split mode, with the same message, ``message``."""
    in_process = verdict(check, *(renamed(value, name) for name, value in namespace.items()))
    assert in_process is not None and re.search(message, in_process, re.S), in_process
    assert split_verdict(check, namespace) == in_process
