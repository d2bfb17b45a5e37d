"""The shared check helpers name the case, the index, the expected and the received value."""
import numpy as np
import pytest
import torch

from course_utils.checks import common


def test_assert_close_passes_within_tolerance():
    common.assert_close(np.array([1.0, 2.0]) + 1e-9, torch.tensor([1.0, 2.0]), case="tiny")


def test_assert_close_names_case_index_and_values():
    with pytest.raises(AssertionError, match=r"case 'b': output\[1, 0\] is 9, expected 3 \(1 of 4 elements"):
        common.assert_close(np.array([[1.0, 2.0], [9.0, 4.0]]), np.array([[1.0, 2.0], [3.0, 4.0]]), case="case 'b'")


def test_assert_close_reports_shape_mismatch():
    with pytest.raises(AssertionError, match=r"k: output has shape \(2, 3\), expected \(3, 2\)"):
        common.assert_close(np.zeros((2, 3)), np.zeros((3, 2)), case="k")


def test_assert_close_reports_nan():
    with pytest.raises(AssertionError, match=r"k: output\[1\] is nan"):
        common.assert_close(np.array([0.0, np.nan]), np.zeros(2), case="k")


def test_assert_close_refuses_none():
    with pytest.raises(AssertionError, match="should be an array of shape"):
        common.assert_close(None, np.zeros(2), case="k")


def test_call_reports_a_stub_as_not_implemented():
    def conv(x):
        raise NotImplementedError

    with pytest.raises(AssertionError, match=r"conv is not implemented yet \(case 1\)"):
        common.call(conv, 1, case="case 1")


def test_call_reports_a_crash_with_its_type():
    def conv(x):
        return x[5]

    with pytest.raises(AssertionError, match="case 2: conv raised IndexError"):
        common.call(conv, [1], case="case 2")


def test_call_refuses_a_non_function():
    with pytest.raises(AssertionError, match="expected a function, got int"):
        common.call(3, case="c")


def test_passed_prints_one_line(capsys):
    common.passed("my check", 5)
    assert capsys.readouterr().out.strip() == "✓ my check: all 5 cases passed."


def test_assert_equal_refuses_objects_that_claim_to_equal_anything():
    class Anything:
        def __eq__(self, other):
            return True

        def __ne__(self, other):
            return False

    with pytest.raises(AssertionError, match="should be a int, got a Anything"):
        common.assert_equal(Anything(), 3, case="k")
    with pytest.raises(AssertionError, match="should be a tuple"):
        common.assert_equal((1, Anything()), (1, 2), case="k")
    common.assert_equal(np.int64(3), 3, case="k")
    common.assert_equal((2, 3), (2, 3), case="k")
