"""Small checks for the grader's tests (``tests/test_grade.py``): NumPy only, so kernels start fast."""
import numpy as np

from course_utils.checks import common


def check_add(add):
    """``add(a, b)`` must equal ``np.add`` on three cases."""
    for case, (a, b) in enumerate([(1.0, 2.0), (np.arange(3.0), np.ones(3)), (np.eye(2), -np.eye(2))]):
        received = common.call(add, a, b, case=f"case {case}")
        common.assert_close(received, np.add(a, b), case=f"case {case}")
    common.passed("add", 3)


def check_square(square):
    """``square(x)`` must equal ``x * x``, compared with ``np.allclose``."""
    x = np.linspace(-2.0, 2.0, 5)
    received = common.call(square, x, case="linspace")
    assert np.allclose(received, np.multiply(x, x)), f"square(x) is {received!r}, expected {x * x!r}"
    common.passed("square", 1)


def check_double(double):
    """``double(x)`` must equal ``2 * x``."""
    received = common.call(double, 3.0, case="x=3")
    common.assert_equal(received, 6.0, case="x=3")
    common.passed("double", 1)
