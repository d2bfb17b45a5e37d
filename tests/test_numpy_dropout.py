"""course_utils.numpy_nn.dropout: inverted scaling, the mask in the cache, eval mode, autograd with the same mask."""
import numpy as np
import pytest
import torch

from course_utils.numpy_nn import dropout as drop


def test_dropout_keeps_about_one_minus_p_and_scales_the_kept_units():
    x = np.random.default_rng(0).normal(size=(200, 10, 3, 3)) + 2.0  # (N, C, H, W)
    out, cache = drop.dropout_forward(x, p=0.3, train=True, rng=np.random.default_rng(1))
    mask = cache["mask"]
    assert mask.shape == x.shape and set(np.unique(mask)) == {0.0, 1.0}
    assert abs(mask.mean() - 0.7) < 0.01
    np.testing.assert_allclose(out, x * mask / 0.7)
    assert abs(out.mean() - x.mean()) < 0.05  # inverted scaling keeps the expectation


def test_dropout_backward_matches_autograd_with_the_same_mask():
    x = np.random.default_rng(0).normal(size=(4, 6))
    dout = np.random.default_rng(1).normal(size=x.shape)
    _, cache = drop.dropout_forward(x, p=0.5, train=True, rng=np.random.default_rng(2))
    x_t = torch.tensor(x, requires_grad=True)
    (x_t * torch.tensor(cache["mask"]) / 0.5).backward(torch.tensor(dout))
    np.testing.assert_allclose(drop.dropout_backward(dout, cache), x_t.grad.numpy())


def test_dropout_is_the_identity_in_eval_mode():
    x = np.random.default_rng(0).normal(size=(3, 4))
    out, cache = drop.dropout_forward(x, p=0.9, train=False)
    np.testing.assert_array_equal(out, x)
    assert cache["mask"] is None
    np.testing.assert_array_equal(drop.dropout_backward(x, cache), x)


def test_dropout_with_the_same_seed_draws_the_same_mask():
    x = np.ones((5, 5))
    a, _ = drop.dropout_forward(x, 0.5, True, np.random.default_rng(3))
    b, _ = drop.dropout_forward(x, 0.5, True, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_dropout_rejects_bad_arguments():
    x = np.ones((2, 2))
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\)"):
        drop.dropout_forward(x, p=1.0)
    with pytest.raises(TypeError, match="x must be a floating-point NumPy array"):
        drop.dropout_forward([1.0], p=0.5)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        drop.dropout_forward(x, p=0.5, rng=0)
    _, cache = drop.dropout_forward(x, 0.5, True, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"dout must have the shape of the forward input \(2, 2\)"):
        drop.dropout_backward(np.ones(3), cache)


def test_dropout_passes_the_chapter_check():
    from course_utils.checks import activations_normalization as checks

    checks.check_dropout(drop.dropout_forward, drop.dropout_backward)
