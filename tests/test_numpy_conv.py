"""course_utils.numpy_nn.conv, checked against torch.nn.functional.conv2d and torch autograd."""
import itertools

import numpy as np
import pytest
import torch

from course_utils.numpy_nn.conv import (
    Conv2dCache,
    conv2d_backward,
    conv2d_backward_naive,
    conv2d_forward,
    conv2d_forward_naive,
    conv_output_size,
)

FORWARDS = {"naive": conv2d_forward_naive, "vectorised": conv2d_forward}
PAIRS = {"naive": (conv2d_forward_naive, conv2d_backward_naive), "vectorised": (conv2d_forward, conv2d_backward)}

# A grid of configurations: x shape (N, C, H, W), w shape (F, C, KH, KW), stride, padding, dilation.
GRID = [
    ((1, 1, 5, 5), (1, 1, 3, 3), 1, 0, 1),
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1, 1),
    ((1, 2, 8, 8), (3, 2, 3, 3), 2, 0, 1),
    ((1, 2, 8, 9), (3, 2, 3, 3), 2, 1, 1),
    ((2, 1, 7, 5), (2, 1, 2, 3), (2, 1), (1, 0), 1),
    ((1, 3, 9, 9), (2, 3, 3, 3), 1, 0, 2),
    ((1, 1, 9, 7), (1, 1, 3, 2), (1, 3), 2, (2, 1)),
    ((3, 2, 4, 4), (5, 2, 1, 1), 1, 0, 1),
    ((1, 2, 4, 5), (2, 2, 4, 5), 1, 0, 1),
    ((1, 1, 1, 1), (1, 1, 3, 3), 1, 1, 1),
    ((2, 2, 10, 8), (2, 2, 5, 3), 3, 2, 1),
    ((1, 1, 6, 6), (1, 1, 3, 3), 4, 0, 1),
]


def _random_grid(count, seed=0):
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        N, C, F = (int(v) for v in rng.integers(1, 4, size=3))
        H, W = (int(v) for v in rng.integers(1, 11, size=2))
        KH, KW = (int(v) for v in rng.integers(1, 5, size=2))
        stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
        padding = tuple(int(v) for v in rng.integers(0, 3, size=2))
        dilation = tuple(int(v) for v in rng.integers(1, 3, size=2))
        if all(d * (k - 1) + 1 <= n + 2 * p for n, k, p, d in zip((H, W), (KH, KW), padding, dilation)):
            configs.append(((N, C, H, W), (F, C, KH, KW), stride, padding, dilation))
    return configs


CONFIGS = GRID + _random_grid(20)


def torch_reference(x, w, b, dout, stride, padding, dilation):
    """out, dx, dw, db from torch autograd on sum(dout * conv2d(x, w, b))."""
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation)
    if dout is not None:
        (out * torch.from_numpy(dout)).sum().backward()
        return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()
    return out.detach().numpy(), None, None, None


def _data(x_shape, w_shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])


# --------------------------------------------------------------------------- conv_output_size

@pytest.mark.parametrize("n, k, stride, padding, dilation", [
    (n, k, s, p, d)
    for n, k, s, p, d in itertools.product([1, 5, 6, 7, 32], [1, 2, 3, 5], [1, 2, 3], [0, 1, 2], [1, 2])
    if d * (k - 1) + 1 <= n + 2 * p
])
def test_conv_output_size_matches_nn_conv2d(n, k, stride, padding, dilation):
    layer = torch.nn.Conv2d(1, 1, (1, k), stride=(1, stride), padding=(0, padding), dilation=(1, dilation))
    expected = layer(torch.zeros(1, 1, 1, n)).shape[-1]
    assert conv_output_size(n, k, stride, padding, dilation) == expected


def test_conv_output_size_floors_the_division():
    assert conv_output_size(6, 3, stride=2) == 2  # (6 - 3) / 2 + 1 = 2.5 -> 2
    assert isinstance(conv_output_size(6, 3, stride=2), int)


@pytest.mark.parametrize("args, error, fragment", [
    ((5, 3, 0), ValueError, "stride must be an int >= 1; got 0"),
    ((5, 3, 1, -1), ValueError, "padding must be an int >= 0; got -1"),
    ((5, 3, 1, 0, 0), ValueError, "dilation must be an int >= 1; got 0"),
    ((0, 3), ValueError, "input length n must be an int >= 1; got 0"),
    ((5, 0), ValueError, "kernel length k must be an int >= 1"),
    ((5, 6), ValueError, "the kernel spans 6 inputs .* the padded input has only 5"),
    ((5, 3, 1, 0, 3), ValueError, r"the kernel spans 7 inputs \(k=3, dilation=3\)"),
    ((5.0, 3), TypeError, "input length n must be an int; got float 5.0"),
    ((5, 3, 1.5), TypeError, "stride must be an int; got float"),
    ((5, 3, True), TypeError, "stride must be an int; got bool"),
])
def test_conv_output_size_rejects_bad_arguments(args, error, fragment):
    with pytest.raises(error, match=fragment):
        conv_output_size(*args)


# --------------------------------------------------------------------------- forward

@pytest.mark.parametrize("version", FORWARDS)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", CONFIGS)
def test_forward_matches_torch(version, x_shape, w_shape, stride, padding, dilation):
    x, w, b = _data(x_shape, w_shape)
    expected = torch_reference(x, w, b, None, stride, padding, dilation)[0]
    out, cache = FORWARDS[version](x, w, b, stride=stride, padding=padding, dilation=dilation)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    assert isinstance(cache, Conv2dCache)


@pytest.mark.parametrize("version", FORWARDS)
def test_forward_of_the_6x6_example_matches_scipy_correlate2d(version):
    import scipy.signal

    image = np.array([[3, 0, 1, 2, 7, 4], [1, 5, 8, 9, 3, 1], [2, 7, 2, 5, 1, 3],
                      [0, 1, 3, 1, 7, 8], [4, 2, 1, 6, 2, 8], [2, 4, 5, 2, 3, 9]], dtype=np.float64)
    kernel = np.array([[1, 0, -1]] * 3, dtype=np.float64)
    out, _ = FORWARDS[version](image[None, None], kernel[None, None], np.zeros(1))
    np.testing.assert_array_equal(out[0, 0], scipy.signal.correlate2d(image, kernel, mode="valid"))
    assert out[0, 0, 0, 0] == -5  # 3 + 1 + 2 - (1 + 8 + 2)


@pytest.mark.parametrize("version", FORWARDS)
def test_forward_keeps_integer_inputs_exact(version):
    x = np.arange(16).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2), dtype=np.int64)
    out, _ = FORWARDS[version](x, w, np.zeros(1, dtype=np.int64))
    assert out.dtype.kind == "i"
    assert out[0, 0, 0, 0] == 0 + 1 + 4 + 5


@pytest.mark.parametrize("version", FORWARDS)
def test_forward_keeps_float32(version):
    x, w, b = (a.astype(np.float32) for a in _data((1, 2, 5, 5), (3, 2, 3, 3)))
    out, _ = FORWARDS[version](x, w, b)
    assert out.dtype == np.float32


@pytest.mark.parametrize("version", FORWARDS)
def test_forward_does_not_change_its_inputs(version):
    x, w, b = _data((2, 2, 6, 6), (3, 2, 3, 3))
    copies = (x.copy(), w.copy(), b.copy())
    FORWARDS[version](x, w, b, stride=2, padding=1)
    for array, copy in zip((x, w, b), copies):
        np.testing.assert_array_equal(array, copy)


BAD_FORWARD_INPUTS = [
    ("x 3-D", dict(x=np.zeros((1, 5, 5))), ValueError, r"x must have 4 dimensions \(N, C, H, W\); got 3"),
    ("w 3-D", dict(w=np.zeros((1, 3, 3))), ValueError, r"w must have 4 dimensions \(F, C, KH, KW\); got 3"),
    ("b 2-D", dict(b=np.zeros((2, 1))), ValueError, r"b must have 1 dimensions \(F,\); got 2"),
    ("x a list", dict(x=[[[[1.0]]]]), TypeError, "x must be a NumPy array of shape .* got list"),
    ("x a tensor", dict(x=torch.zeros(1, 2, 5, 5)), TypeError, "x must be a NumPy array .* got Tensor"),
    ("x complex", dict(x=np.zeros((1, 2, 5, 5), dtype=complex)), TypeError, "real numbers .* complex128"),
    ("x bool", dict(x=np.zeros((1, 2, 5, 5), dtype=bool)), TypeError, "got dtype bool"),
    ("channels", dict(x=np.zeros((1, 3, 5, 5))), ValueError, r"w has 2 input channels .* x has 3"),
    ("bias length", dict(b=np.zeros(3)), ValueError, r"b must have shape \(F,\) = \(2,\).* got \(3,\)"),
    ("kernel too large", dict(x=np.zeros((1, 2, 2, 5))), ValueError, "the kernel spans 3 inputs .* has only 2"),
    ("stride 0", dict(stride=0), ValueError, "stride must be an int >= 1; got 0"),
    ("stride pair", dict(stride=(1, 0)), ValueError, r"stride\[1\] must be an int >= 1; got 0"),
    ("stride triple", dict(stride=(1, 1, 1)), ValueError, "stride must be an int or a pair"),
    ("negative padding", dict(padding=-1), ValueError, "padding must be an int >= 0; got -1"),
    ("float padding", dict(padding=0.5), TypeError, "padding must be an int; got float"),
    ("dilation 0", dict(dilation=0), ValueError, "dilation must be an int >= 1"),
]


@pytest.mark.parametrize("version", FORWARDS)
@pytest.mark.parametrize("label, change, error, fragment", BAD_FORWARD_INPUTS, ids=[c[0] for c in BAD_FORWARD_INPUTS])
def test_forward_rejects_bad_input_with_a_clear_message(version, label, change, error, fragment):
    arguments = dict(x=np.zeros((1, 2, 5, 5)), w=np.zeros((2, 2, 3, 3)), b=np.zeros(2))
    arguments.update(change)
    with pytest.raises(error, match=fragment):
        FORWARDS[version](**arguments)


# --------------------------------------------------------------------------- backward

@pytest.mark.parametrize("version", PAIRS)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", CONFIGS)
def test_backward_matches_torch_autograd(version, x_shape, w_shape, stride, padding, dilation):
    forward, backward = PAIRS[version]
    x, w, b = _data(x_shape, w_shape)
    out, cache = forward(x, w, b, stride=stride, padding=padding, dilation=dilation)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    _, dx_ref, dw_ref, db_ref = torch_reference(x, w, b, dout, stride, padding, dilation)
    dx, dw, db = backward(dout, cache)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, db_ref, rtol=1e-10, atol=1e-12)


def test_backward_passes_match_numerical_gradients():
    from course_utils.gradcheck import numerical_gradient_array, rel_error

    x, w, b = _data((2, 2, 5, 4), (3, 2, 3, 2))
    settings = dict(stride=(2, 1), padding=1, dilation=(1, 2))
    out, cache = conv2d_forward(x, w, b, **settings)
    dout = np.random.default_rng(2).standard_normal(out.shape)
    dx_num = numerical_gradient_array(lambda z: conv2d_forward(z, w, b, **settings)[0], x, dout)
    dw_num = numerical_gradient_array(lambda z: conv2d_forward(x, z, b, **settings)[0], w, dout)
    db_num = numerical_gradient_array(lambda z: conv2d_forward(x, w, z, **settings)[0], b, dout)
    for backward in (conv2d_backward, conv2d_backward_naive):
        dx, dw, db = backward(dout, cache)
        assert rel_error(dx, dx_num) < 1e-7
        assert rel_error(dw, dw_num) < 1e-7
        assert rel_error(db, db_num) < 1e-7


def test_either_backward_accepts_either_forwards_cache():
    x, w, b = _data((1, 2, 6, 6), (2, 2, 3, 3))
    _, naive_cache = conv2d_forward_naive(x, w, b, stride=2, padding=1)
    _, fast_cache = conv2d_forward(x, w, b, stride=2, padding=1)
    dout = np.ones((1, 2, 3, 3))
    for first, second in zip(conv2d_backward(dout, naive_cache), conv2d_backward_naive(dout, fast_cache)):
        np.testing.assert_allclose(first, second, rtol=1e-12)


@pytest.mark.parametrize("version", PAIRS)
def test_backward_rejects_a_dout_of_the_wrong_shape(version):
    forward, backward = PAIRS[version]
    x, w, b = _data((1, 2, 6, 6), (2, 2, 3, 3))
    _, cache = forward(x, w, b)
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape .* \(1, 2, 4, 4\); got \(1, 2, 6, 6\)"):
        backward(np.zeros((1, 2, 6, 6)), cache)
    with pytest.raises(ValueError, match="dout must have 4 dimensions"):
        backward(np.zeros((2, 4, 4)), cache)


@pytest.mark.parametrize("version", PAIRS)
def test_backward_rejects_something_else_than_a_cache(version):
    _, backward = PAIRS[version]
    with pytest.raises(TypeError, match="cache must be the Conv2dCache returned by a conv2d forward pass; got tuple"):
        backward(np.zeros((1, 1, 2, 2)), (np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3))))
