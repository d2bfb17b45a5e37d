"""course_utils.numpy_nn.activations against torch (values) and autograd plus centred differences (gradients)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.gradcheck import numerical_gradient_array, rel_error
from course_utils.numpy_nn import activations as act

# (name, numpy forward, numpy backward, keyword arguments, torch reference)
ACTIVATIONS = [
    ("sigmoid", act.sigmoid_forward, act.sigmoid_backward, {}, torch.sigmoid),
    ("tanh", act.tanh_forward, act.tanh_backward, {}, torch.tanh),
    ("relu", act.relu_forward, act.relu_backward, {}, F.relu),
    ("leaky_relu", act.leaky_relu_forward, act.leaky_relu_backward, {"negative_slope": 0.1},
     lambda t: F.leaky_relu(t, 0.1)),
    ("elu", act.elu_forward, act.elu_backward, {"alpha": 1.5}, lambda t: F.elu(t, 1.5)),
    ("gelu", act.gelu_forward, act.gelu_backward, {}, F.gelu),
    ("gelu_tanh", act.gelu_forward, act.gelu_backward, {"approximate": "tanh"},
     lambda t: F.gelu(t, approximate="tanh")),
]
IDS = [a[0] for a in ACTIVATIONS]


def inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 5)) * 3  # (N, C, H, W)
    x[0, 0, 0, :3] = (0.0, 1e-12, -1e-12)  # at and around the kink
    return x


@pytest.mark.parametrize("name, forward, backward, kwargs, reference", ACTIVATIONS, ids=IDS)
def test_forward_matches_torch(name, forward, backward, kwargs, reference):
    x = inputs()
    out, _ = forward(x, **kwargs)
    np.testing.assert_allclose(out, reference(torch.tensor(x)).numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, forward, backward, kwargs, reference", ACTIVATIONS, ids=IDS)
def test_backward_matches_autograd_including_at_zero(name, forward, backward, kwargs, reference):
    x = inputs()
    dout = np.random.default_rng(1).normal(size=x.shape)
    _, cache = forward(x, **kwargs)
    x_t = torch.tensor(x, requires_grad=True)
    reference(x_t).backward(torch.tensor(dout))
    np.testing.assert_allclose(backward(dout, cache), x_t.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, forward, backward, kwargs, reference", ACTIVATIONS, ids=IDS)
def test_backward_matches_centred_differences(name, forward, backward, kwargs, reference):
    x = np.random.default_rng(2).normal(size=(3, 7)) + 0.05  # away from the kinks at 0
    dout = np.random.default_rng(3).normal(size=x.shape)
    _, cache = forward(x, **kwargs)
    numeric = numerical_gradient_array(lambda z: forward(z, **kwargs)[0], x, dout)
    assert rel_error(backward(dout, cache), numeric) < 1e-7


@pytest.mark.parametrize("name, forward, backward, kwargs, reference", ACTIVATIONS, ids=IDS)
def test_float32_input_gives_float32_output(name, forward, backward, kwargs, reference):
    x = inputs().astype(np.float32)
    out, cache = forward(x, **kwargs)
    assert out.dtype == np.float32
    assert backward(np.ones_like(x), cache).dtype == np.float32


def test_sigmoid_does_not_overflow_on_large_inputs():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise", invalid="raise"):
        out, _ = act.sigmoid_forward(x)
    np.testing.assert_allclose(out, torch.sigmoid(torch.tensor(x)).numpy(), rtol=1e-12, atol=1e-300)


def test_sigmoid_derivative_is_at_most_a_quarter():
    out, cache = act.sigmoid_forward(np.linspace(-10, 10, 2001))
    assert act.sigmoid_backward(np.ones_like(out), cache).max() == pytest.approx(0.25)


def test_relu_backward_is_zero_for_negative_inputs():
    x = np.array([-2.0, -1e-9, 0.0, 3.0])
    _, cache = act.relu_forward(x)
    np.testing.assert_array_equal(act.relu_backward(np.ones(4), cache), [0.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("forward", [act.relu_forward, act.sigmoid_forward, act.tanh_forward, act.gelu_forward])
def test_forward_rejects_integer_and_list_inputs(forward):
    with pytest.raises(TypeError, match="floating-point NumPy array"):
        forward(np.arange(3))
    with pytest.raises(TypeError, match="floating-point NumPy array"):
        forward([1.0, 2.0])


def test_backward_rejects_dout_of_the_wrong_shape():
    _, cache = act.relu_forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"dout must have the shape of the forward input \(2, 3\); got \(3, 2\)"):
        act.relu_backward(np.ones((3, 2)), cache)


def test_bad_parameters_are_rejected():
    x = np.ones(3)
    with pytest.raises(ValueError, match="negative_slope must be a number >= 0"):
        act.leaky_relu_forward(x, negative_slope=-0.1)
    with pytest.raises(ValueError, match="alpha must be a number > 0"):
        act.elu_forward(x, alpha=0)
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        act.gelu_forward(x, approximate="erf")


def test_leaky_relu_and_gelu_pass_the_chapter_checks():
    from course_utils.checks import activations_normalization as checks

    checks.check_leaky_relu(act.leaky_relu_forward, act.leaky_relu_backward)
    checks.check_gelu(act.gelu_forward, act.gelu_backward)
