"""NumPy pooling layers against torch.nn.functional (forward) and autograd (backward)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.gradcheck import numerical_gradient_array, rel_error
from course_utils.numpy_nn import pooling

# (kernel, stride, padding): square, default stride, overlapping, gaps, padded, rectangular
GEOMETRIES = [
    (2, None, 0),
    (3, 1, 1),
    (3, 2, 0),
    (2, 3, 0),
    (4, 2, 2),
    ((2, 3), (1, 2), (1, 0)),
]


def torch_pool(pool, x, dout, **kwargs):
    """(out, dx) from torch in float64: the reference of every test here."""
    xt = torch.tensor(x, requires_grad=True)
    out = pool(xt, **kwargs)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("kernel, stride, padding", GEOMETRIES)
def test_max_pool_matches_torch_forward_and_backward(rng, kernel, stride, padding):
    x = rng.standard_normal((2, 3, 9, 10))
    out, cache = pooling.max_pool2d_forward(x, kernel, stride, padding)
    dout = rng.standard_normal(out.shape)
    expected_out, expected_dx = torch_pool(F.max_pool2d, x, dout, kernel_size=kernel, stride=stride, padding=padding)
    np.testing.assert_allclose(out, expected_out, rtol=0, atol=0)
    np.testing.assert_allclose(pooling.max_pool2d_backward(dout, cache), expected_dx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding", GEOMETRIES)
def test_naive_max_pool_equals_vectorised(rng, kernel, stride, padding):
    x = rng.standard_normal((2, 2, 8, 9))
    out, _ = pooling.max_pool2d_forward(x, kernel, stride, padding)
    np.testing.assert_array_equal(pooling.max_pool2d_forward_naive(x, kernel, stride, padding), out)


def test_max_pool_on_the_4x4_example():
    x = np.array([[1, 3, 2, 1], [4, 6, 5, 0], [3, 1, 1, 2], [0, 2, 8, 7]], dtype=np.float64)[None, None]  # (1, 1, 4, 4)
    out, _ = pooling.max_pool2d_forward(x, 2)
    np.testing.assert_array_equal(out[0, 0], [[6, 5], [3, 8]])


def test_max_pool_ties_send_the_gradient_to_the_first_maximum_like_torch():
    x = np.ones((1, 1, 4, 4))  # every window is one big tie
    out, cache = pooling.max_pool2d_forward(x, 3, 1)
    dout = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    _, expected_dx = torch_pool(F.max_pool2d, x, dout, kernel_size=3, stride=1)
    dx = pooling.max_pool2d_backward(dout, cache)
    np.testing.assert_array_equal(dx, expected_dx)
    assert np.count_nonzero(dx) == 4  # each window's top-left element: one element per window


def test_max_pool_padding_never_wins():
    x = -np.ones((1, 1, 3, 3))
    out, cache = pooling.max_pool2d_forward(x, 2, 2, 1)
    np.testing.assert_array_equal(out, -np.ones((1, 1, 2, 2)))
    assert pooling.max_pool2d_backward(np.ones_like(out), cache).sum() == 4


def test_max_pool_backward_matches_centred_differences(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    out, cache = pooling.max_pool2d_forward(x, 3, 2, 1)
    dout = rng.standard_normal(out.shape)
    numerical = numerical_gradient_array(lambda z: pooling.max_pool2d_forward(z, 3, 2, 1)[0], x, dout)
    assert rel_error(pooling.max_pool2d_backward(dout, cache), numerical) < 1e-8


def test_max_pool_keeps_float32():
    x = np.ones((1, 1, 4, 4), dtype=np.float32)
    out, cache = pooling.max_pool2d_forward(x, 2)
    assert out.dtype == np.float32
    assert pooling.max_pool2d_backward(np.ones_like(out), cache).dtype == np.float32


@pytest.mark.parametrize("kernel, stride, padding", GEOMETRIES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_matches_torch_forward_and_backward(rng, kernel, stride, padding, count_include_pad):
    x = rng.standard_normal((2, 3, 9, 10))
    out, cache = pooling.avg_pool2d_forward(x, kernel, stride, padding, count_include_pad=count_include_pad)
    dout = rng.standard_normal(out.shape)
    expected_out, expected_dx = torch_pool(
        F.avg_pool2d, x, dout, kernel_size=kernel, stride=stride, padding=padding, count_include_pad=count_include_pad
    )
    np.testing.assert_allclose(out, expected_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pooling.avg_pool2d_backward(dout, cache), expected_dx, rtol=1e-12, atol=1e-12)


def test_global_avg_pool_matches_adaptive_avg_pool(rng):
    x = rng.standard_normal((2, 4, 5, 7))
    out, cache = pooling.global_avg_pool_forward(x)
    dout = rng.standard_normal(out.shape)
    expected_out, expected_dx = torch_pool(F.adaptive_avg_pool2d, x, dout, output_size=1)
    np.testing.assert_allclose(out, expected_out, rtol=1e-12)
    np.testing.assert_allclose(pooling.global_avg_pool_backward(dout, cache), expected_dx, rtol=1e-12)


def test_concat_pool_is_max_then_avg_along_channels(rng):
    x = rng.standard_normal((2, 3, 4, 6))
    x[0, 1] = 1.0  # a channel that is one big tie
    out, cache = pooling.concat_pool_forward(x)
    assert out.shape == (2, 6, 1, 1)
    dout = rng.standard_normal(out.shape)

    def reference(xt):
        return torch.cat([F.adaptive_max_pool2d(xt, 1), F.adaptive_avg_pool2d(xt, 1)], dim=1)  # (N, 2C, 1, 1)

    expected_out, expected_dx = torch_pool(reference, x, dout)
    np.testing.assert_allclose(out, expected_out, rtol=1e-12)
    np.testing.assert_allclose(pooling.concat_pool_backward(dout, cache), expected_dx, rtol=1e-12, atol=1e-15)


def test_pool_output_size_formula():
    assert pooling.pool_output_size(224, 2, 2) == 112
    assert pooling.pool_output_size(112, 3, 2, 1) == 56  # ResNet's stem max pool
    assert pooling.pool_output_size(7, 2, 2) == 3  # the floor drops the last row


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize(
    "x, kwargs, error, message",
    [
        ([[1.0]], {"kernel_size": 2}, TypeError, "NumPy array of shape"),
        (np.zeros((4, 4)), {"kernel_size": 2}, ValueError, r"\(N, C, H, W\); got 2 dimensions"),
        (np.zeros((1, 1, 4, 4), dtype=np.int64), {"kernel_size": 2}, TypeError, "floating-point.*int64"),
        (np.zeros((1, 1, 4, 4)), {"kernel_size": 2.0}, TypeError, "kernel_size must be an int"),
        (np.zeros((1, 1, 4, 4)), {"kernel_size": 0}, ValueError, "kernel_size must be an int >= 1"),
        (np.zeros((1, 1, 4, 4)), {"kernel_size": 2, "stride": 0}, ValueError, "stride must be an int >= 1"),
        (np.zeros((1, 1, 4, 4)), {"kernel_size": 2, "padding": 2}, ValueError, "at most half the kernel"),
        (np.zeros((1, 1, 4, 4)), {"kernel_size": 5}, ValueError, "does not fit an input of size"),
        (np.zeros((1, 1, 4, 4)), {"kernel_size": (2, 2, 2)}, ValueError, r"must be an int or a pair \(height, width\)"),
        (np.zeros((0, 1, 4, 4)), {"kernel_size": 2}, ValueError, "must not be empty"),
    ],
)
@pytest.mark.parametrize("forward", [pooling.max_pool2d_forward, pooling.avg_pool2d_forward])
def test_bad_input_raises_a_clear_error(forward, x, kwargs, error, message):
    with pytest.raises(error, match=message):
        forward(x, **kwargs)


def test_backward_rejects_a_dout_of_the_wrong_shape():
    out, cache = pooling.max_pool2d_forward(np.zeros((1, 1, 4, 4)), 2)
    with pytest.raises(ValueError, match=r"dout has shape \(1, 1, 4, 4\) but the forward output had shape \(1, 1, 2, 2\)"):
        pooling.max_pool2d_backward(np.zeros((1, 1, 4, 4)), cache)


def test_backward_rejects_the_cache_of_another_layer():
    _, cache = pooling.avg_pool2d_forward(np.zeros((1, 1, 4, 4)), 2)
    with pytest.raises(TypeError, match="MaxPool2dCache returned by max_pool2d_forward; got AvgPool2dCache"):
        pooling.max_pool2d_backward(np.zeros((1, 1, 2, 2)), cache)
    _, cache = pooling.global_avg_pool_forward(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="needs concat_pool_forward's"):
        pooling.concat_pool_backward(np.zeros((1, 2, 1, 1)), cache)


def test_global_pools_reject_a_non_4d_input():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        pooling.global_avg_pool_forward(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        pooling.concat_pool_forward(np.zeros((3, 4, 4)))
