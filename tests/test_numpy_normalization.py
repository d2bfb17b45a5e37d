"""course_utils.numpy_nn.normalization against nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm and autograd."""
import numpy as np
import pytest
import torch

from course_utils.gradcheck import numerical_gradient_array, rel_error
from course_utils.numpy_nn import normalization as norm


def maps(shape=(4, 3, 5, 6), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape) * rng.uniform(0.5, 3, size=(1, shape[1], 1, 1)) + 1.0  # (N, C, H, W)


def affine(C, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2, size=C), rng.normal(size=C)


def torch_batchnorm(C, gamma, beta, momentum):
    bn = torch.nn.BatchNorm2d(C, momentum=momentum).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
    return bn


# --------------------------------------------------------------------------- batch norm

def test_fresh_state_matches_batchnorm2d():
    state = norm.batchnorm2d_state(3)
    bn = torch.nn.BatchNorm2d(3)
    np.testing.assert_array_equal(state["running_mean"], bn.running_mean.numpy())
    np.testing.assert_array_equal(state["running_var"], bn.running_var.numpy())


@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_batchnorm_matches_batchnorm2d_over_three_train_steps_then_eval(momentum):
    C = 3
    gamma, beta = affine(C)
    state = norm.batchnorm2d_state(C)
    bn = torch_batchnorm(C, gamma, beta, momentum).train()
    for step in range(3):
        x = maps(seed=step)
        out, _ = norm.batchnorm2d_forward(x, gamma, beta, state, train=True, momentum=momentum)
        with torch.no_grad():
            np.testing.assert_allclose(out, bn(torch.tensor(x)).numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state["running_mean"], bn.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(state["running_var"], bn.running_var.numpy(), rtol=1e-12)
    bn.eval()
    x = maps(seed=9)
    saved = {key: value.copy() for key, value in state.items()}
    out, _ = norm.batchnorm2d_forward(x, gamma, beta, state, train=False, momentum=momentum)
    with torch.no_grad():
        np.testing.assert_allclose(out, bn(torch.tensor(x)).numpy(), rtol=1e-10, atol=1e-12)
    for key in saved:
        np.testing.assert_array_equal(state[key], saved[key])


def test_batchnorm_train_output_has_zero_mean_unit_biased_variance_per_channel():
    x = maps()
    out, _ = norm.batchnorm2d_forward(x, np.ones(3), np.zeros(3), norm.batchnorm2d_state(3), eps=1e-12)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-9)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_backward_matches_autograd(train):
    x = maps((3, 2, 4, 4))
    gamma, beta = affine(2)
    dout = np.random.default_rng(5).normal(size=x.shape)
    state = {"running_mean": np.array([0.3, -0.2]), "running_var": np.array([1.5, 0.7])}
    x_t, g_t, b_t = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    rm, rv = torch.tensor(state["running_mean"]), torch.tensor(state["running_var"])
    torch.nn.functional.batch_norm(x_t, rm, rv, g_t, b_t, training=train).backward(torch.tensor(dout))
    _, cache = norm.batchnorm2d_forward(x, gamma, beta, state, train=train)
    dx, dgamma, dbeta = norm.batchnorm2d_backward(dout, cache)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(dgamma, g_t.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(dbeta, b_t.grad.numpy(), rtol=1e-10)


def test_batchnorm_backward_matches_centred_differences():
    x = maps((2, 2, 3, 3))
    gamma, beta = affine(2)
    dout = np.random.default_rng(6).normal(size=x.shape)

    def f(z):
        return norm.batchnorm2d_forward(z, gamma, beta, norm.batchnorm2d_state(2))[0]

    _, cache = norm.batchnorm2d_forward(x, gamma, beta, norm.batchnorm2d_state(2))
    dx, _, _ = norm.batchnorm2d_backward(dout, cache)
    assert rel_error(dx, numerical_gradient_array(f, x, dout)) < 1e-6


def test_batchnorm_rejects_bad_input():
    gamma, beta = affine(3)
    state = norm.batchnorm2d_state(3)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\); got shape \(4, 3\)"):
        norm.batchnorm2d_forward(np.ones((4, 3)), gamma, beta, state)
    with pytest.raises(ValueError, match=r"gamma must be a NumPy array of shape \(3,\); got \(2,\)"):
        norm.batchnorm2d_forward(maps(), gamma[:2], beta, state)
    with pytest.raises(TypeError, match="state must be a dict with 'running_mean' and 'running_var'"):
        norm.batchnorm2d_forward(maps(), gamma, beta, {})
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        norm.batchnorm2d_forward(np.ones((1, 3, 1, 1)), gamma, beta, state)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\]"):
        norm.batchnorm2d_forward(maps(), gamma, beta, state, momentum=1.5)
    with pytest.raises(ValueError, match="C must be a positive int"):
        norm.batchnorm2d_state(0)
    _, cache = norm.batchnorm2d_forward(maps(), gamma, beta, state)
    with pytest.raises(ValueError, match="dout must be an array of the forward output's shape"):
        norm.batchnorm2d_backward(np.ones((1, 3, 5, 6)), cache)


def test_batchnorm_passes_the_chapter_checks():
    from course_utils.checks import activations_normalization as checks

    checks.check_batchnorm2d_forward(norm.batchnorm2d_forward)
    checks.check_batchnorm2d_backward(norm.batchnorm2d_forward, norm.batchnorm2d_backward)


# --------------------------------------------------------------------------- layer norm and group norm

def test_layernorm_matches_nn_layernorm_over_c_h_w():
    x = maps()
    N, C, H, W = x.shape
    rng = np.random.default_rng(2)
    gamma, beta = rng.normal(size=(C, H, W)), rng.normal(size=(C, H, W))
    ln = torch.nn.LayerNorm([C, H, W]).double()
    with torch.no_grad():
        ln.weight.copy_(torch.tensor(gamma))
        ln.bias.copy_(torch.tensor(beta))
        expected = ln(torch.tensor(x)).numpy()
    np.testing.assert_allclose(norm.layernorm_forward(x, gamma, beta), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_groupnorm_matches_nn_groupnorm(groups):
    x = maps((3, 6, 4, 5))
    gamma, beta = affine(6)
    gn = torch.nn.GroupNorm(groups, 6).double()
    with torch.no_grad():
        gn.weight.copy_(torch.tensor(gamma))
        gn.bias.copy_(torch.tensor(beta))
        expected = gn(torch.tensor(x)).numpy()
    np.testing.assert_allclose(norm.groupnorm_forward(x, gamma, beta, groups), expected, rtol=1e-10, atol=1e-12)


def test_layer_and_group_norm_of_an_image_do_not_depend_on_the_rest_of_the_batch():
    x = maps((4, 6, 3, 3))
    gamma, beta = affine(6)
    alone = norm.groupnorm_forward(x[:1], gamma, beta, 3)
    np.testing.assert_allclose(norm.groupnorm_forward(x, gamma, beta, 3)[:1], alone, rtol=1e-12)


def test_layer_and_group_norm_reject_bad_input():
    x = maps((2, 6, 3, 3))
    gamma, beta = affine(6)
    with pytest.raises(ValueError, match="num_groups must be a positive int dividing C=6; got 4"):
        norm.groupnorm_forward(x, gamma, beta, 4)
    with pytest.raises(ValueError, match=r"gamma must be a NumPy array of shape \(6, 3, 3\); got \(6,\)"):
        norm.layernorm_forward(x, gamma, beta)
    with pytest.raises(TypeError, match=r"x must be a floating-point NumPy array of shape \(N, C, H, W\)"):
        norm.layernorm_forward(np.ones((2, 6, 3, 3), dtype=int), gamma, beta)
