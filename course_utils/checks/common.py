"""Helpers shared by every chapter's checks: comparing arrays and reporting clearly.

``call`` is how a check runs the learner's code: directly in the learner's notebook, in the learner's kernel
under the grader (``course_utils.checks.learner``); a check never calls a learner's object any other way.
"""
import numpy as np

from course_utils.checks import learner


def as_numpy(value):
    """A NumPy array from a NumPy array, a torch tensor, a list or a scalar."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def call(function, *args, case, **kwargs):
    """Call the learner's function; turn a crash into an ``AssertionError`` naming ``case``.

    ``NotImplementedError`` (the stub of an unsolved exercise) is reported as
    "not implemented yet"; other exceptions keep their type and message.
    """
    if learner.is_learner_object(function):
        if not function._description.get("callable"):
            raise AssertionError(f"expected a function, got {function.type_name}")
    elif not callable(function):
        raise AssertionError(f"expected a function, got {type(function).__name__}")
    name = getattr(function, "__name__", "the function")
    if not isinstance(name, str):
        name = "the function"
    try:
        return learner.call(function, args, kwargs)
    except learner.KernelFailure:
        raise
    except NotImplementedError as error:
        raise AssertionError(f"{name} is not implemented yet ({case})") from error
    except AssertionError:
        raise
    except Exception as error:  # the learner's bug: report it as a failed case
        raise AssertionError(f"{case}: {name} raised {type(error).__name__}: {error}") from error


def is_module(value):
    """Whether ``value`` is an ``nn.Module`` instance: the learner's own, or a handle of one in the learner's kernel."""
    if learner.is_learner_object(value):
        return value.is_module
    import torch

    return isinstance(value, torch.nn.Module)


def type_name(value):
    """The class name of ``value``, or of the object a ``LearnerObject`` handle stands for."""
    return value.type_name if learner.is_learner_object(value) else type(value).__name__


def assert_shape(received, expected_shape, case, what="output"):
    received_shape = tuple(np.shape(as_numpy(received)))
    if received_shape != tuple(expected_shape):
        raise AssertionError(f"{case}: {what} has shape {received_shape}, expected {tuple(expected_shape)}")


def assert_close(received, expected, case, what="output", rtol=1e-5, atol=1e-6):
    """Assert ``received`` matches ``expected`` within ``atol + rtol * |expected|``.

    On failure the message names the case, the shapes or the first element that
    differs (its index, expected and received values) and how many elements differ.
    """
    expected = as_numpy(expected)
    received_array = as_numpy(received) if received is not None else None
    if received_array is None or received_array.dtype == object:
        raise AssertionError(f"{case}: {what} should be an array of shape {expected.shape}, got {received!r:.80}")
    assert_shape(received_array, expected.shape, case, what)
    received_array = received_array.astype(np.float64)
    expected = expected.astype(np.float64)
    if not np.all(np.isfinite(received_array)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(received_array))[0])
        raise AssertionError(f"{case}: {what}{list(bad)} is {received_array[bad]}, expected {expected[bad]:.6g}")
    wrong = np.abs(received_array - expected) > atol + rtol * np.abs(expected)
    if wrong.any():
        first = tuple(int(i) for i in np.argwhere(wrong)[0])
        raise AssertionError(
            f"{case}: {what}{list(first)} is {received_array[first]:.6g}, expected {expected[first]:.6g} "
            f"({int(wrong.sum())} of {wrong.size} elements differ by more than atol={atol:g} + rtol={rtol:g}*|expected|; "
            f"largest difference {np.abs(received_array - expected).max():.3g})"
        )


def is_plain_value(value):
    """True for built-in and NumPy scalars, strings and tuples/lists of them: values whose ``==`` we can trust."""
    if isinstance(value, (tuple, list)):
        return type(value) in (tuple, list) and all(is_plain_value(item) for item in value)
    return type(value) in (bool, int, float, str, type(None)) or (
        isinstance(value, (np.integer, np.floating, np.bool_)) and type(value).__module__ == "numpy")


def assert_equal(received, expected, case, what="result"):
    """Assert ``received == expected`` for plain values (ints, floats, strings, tuples of them).

    An object of another type is refused before comparing: its own ``__eq__`` could claim
    to equal anything.
    """
    if not is_plain_value(received):
        raise AssertionError(f"{case}: {what} should be a {type(expected).__name__}, got a {type(received).__name__}")
    if not (received == expected):
        raise AssertionError(f"{case}: {what} is {received!r}, expected {expected!r}")


def passed(check_name, n_cases):
    """Print the one-line summary of a check that passed."""
    print(f"✓ {check_name}: all {n_cases} cases passed.")
