"""course_utils.gradcheck against gradients known in closed form and from torch autograd."""
import numpy as np
import pytest
import torch

from course_utils.gradcheck import numerical_gradient, numerical_gradient_array, rel_error


def test_rel_error_is_zero_for_equal_arrays_and_symmetric():
    a = np.array([1.0, -2.0, 3.0])
    b = np.array([1.1, -2.0, 2.9])
    assert rel_error(a, a) == 0.0
    assert rel_error(a, b) == rel_error(b, a)
    assert rel_error(a, b) == pytest.approx(0.1 / 2.1)


def test_rel_error_refuses_different_shapes():
    with pytest.raises(ValueError, match=r"same shape; got \(2,\) and \(3,\)"):
        rel_error(np.zeros(2), np.zeros(3))


def test_numerical_gradient_of_a_quadratic():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    grad = numerical_gradient(lambda z: np.sum(z**2), x)
    assert rel_error(grad, 2 * x) < 1e-8
    assert np.array_equal(x, [[1.0, -2.0], [0.5, 3.0]]), "x must be restored"


def test_numerical_gradient_array_matches_torch_autograd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    dout = rng.normal(size=(3, 4))
    numeric = numerical_gradient_array(np.tanh, x, dout)
    xt = torch.tensor(x, requires_grad=True)
    torch.tanh(xt).backward(torch.tensor(dout))
    assert rel_error(numeric, xt.grad.numpy()) < 1e-7


def test_numerical_gradient_refuses_integer_arrays():
    with pytest.raises(TypeError, match="floating-point NumPy array.*int64"):
        numerical_gradient(np.sum, np.arange(3))


def test_numerical_gradient_array_checks_dout_shape():
    with pytest.raises(ValueError, match=r"dout has shape \(2,\) but f\(x\) has shape \(3,\)"):
        numerical_gradient_array(np.tanh, np.zeros(3), np.zeros(2))
