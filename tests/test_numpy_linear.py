"""``course_utils.numpy_nn.linear``: linear and flatten layers, against ``torch.nn.functional`` and autograd."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.gradcheck import numerical_gradient_array, rel_error
from course_utils.numpy_nn.linear import flatten_backward, flatten_forward, linear_backward, linear_forward


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_linear_forward_matches_torch_linear(rng):
    x, w, b = rng.normal(size=(5, 7)), rng.normal(size=(3, 7)), rng.normal(size=3)
    out, _ = linear_forward(x, w, b)
    expected = F.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)).numpy()
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_linear_forward_keeps_float32(rng):
    x, w, b = (rng.normal(size=s).astype(np.float32) for s in ((2, 4), (3, 4), (3,)))
    assert linear_forward(x, w, b)[0].dtype == np.float32


def test_linear_backward_matches_autograd(rng):
    x, w, b, dout = rng.normal(size=(4, 6)), rng.normal(size=(2, 6)), rng.normal(size=2), rng.normal(size=(4, 2))
    _, cache = linear_forward(x, w, b)
    dx, dw, db = linear_backward(dout, cache)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    F.linear(xt, wt, bt).backward(torch.from_numpy(dout))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_linear_backward_matches_centred_differences(rng):
    x, w, b, dout = rng.normal(size=(3, 5)), rng.normal(size=(4, 5)), rng.normal(size=4), rng.normal(size=(3, 4))
    dx, dw, db = linear_backward(dout, linear_forward(x, w, b)[1])
    assert rel_error(dx, numerical_gradient_array(lambda z: linear_forward(z, w, b)[0], x, dout)) < 1e-8
    assert rel_error(dw, numerical_gradient_array(lambda z: linear_forward(x, z, b)[0], w, dout)) < 1e-8
    assert rel_error(db, numerical_gradient_array(lambda z: linear_forward(x, w, z)[0], b, dout)) < 1e-8


def test_linear_forward_rejects_mismatched_features(rng):
    with pytest.raises(ValueError, match="input features"):
        linear_forward(rng.normal(size=(2, 5)), rng.normal(size=(3, 4)), rng.normal(size=3))


def test_linear_forward_rejects_a_wrong_bias(rng):
    with pytest.raises(ValueError, match=r"b must have shape \(OUT,\) = \(3,\)"):
        linear_forward(rng.normal(size=(2, 4)), rng.normal(size=(3, 4)), rng.normal(size=4))


def test_linear_forward_rejects_images_that_were_not_flattened(rng):
    with pytest.raises(ValueError, match=r"x must have 2 dimensions \(N, IN\)"):
        linear_forward(rng.normal(size=(2, 1, 2, 2)), rng.normal(size=(3, 4)), rng.normal(size=3))


def test_linear_forward_rejects_non_float_arrays(rng):
    with pytest.raises(TypeError, match="floating-point NumPy array"):
        linear_forward(np.ones((2, 4), dtype=np.int64), rng.normal(size=(3, 4)), rng.normal(size=3))
    with pytest.raises(TypeError, match="got list"):
        linear_forward([[1.0]], rng.normal(size=(3, 1)), rng.normal(size=3))


def test_linear_backward_rejects_a_wrong_dout(rng):
    _, cache = linear_forward(rng.normal(size=(2, 4)), rng.normal(size=(3, 4)), rng.normal(size=3))
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape"):
        linear_backward(rng.normal(size=(2, 4)), cache)
    with pytest.raises(TypeError, match="cache must be the"):
        linear_backward(rng.normal(size=(2, 3)), None)


def test_flatten_matches_torch_flatten_and_backward_restores_the_shape(rng):
    x = rng.normal(size=(2, 3, 4, 5))
    out, cache = flatten_forward(x)
    np.testing.assert_array_equal(out, torch.flatten(torch.from_numpy(x), 1).numpy())
    assert out.shape == (2, 60)
    dout = rng.normal(size=(2, 60))
    np.testing.assert_array_equal(flatten_backward(dout, cache), dout.reshape(2, 3, 4, 5))


def test_flatten_backward_rejects_a_wrong_dout(rng):
    _, cache = flatten_forward(rng.normal(size=(2, 3, 4, 5)))
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape \(2, 60\)"):
        flatten_backward(rng.normal(size=(2, 59)), cache)


def test_flatten_forward_rejects_non_arrays():
    with pytest.raises(TypeError, match="floating-point NumPy array"):
        flatten_forward([1.0, 2.0])
