"""course_utils.numpy_nn.losses against torch: torch.softmax, F.cross_entropy, autograd; and centred differences."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.gradcheck import numerical_gradient, rel_error
from course_utils.numpy_nn import losses


def logits_and_labels(N=5, K=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, K)) * 2, rng.integers(0, K, size=N)


# --------------------------------------------------------------------------- softmax

def test_softmax_and_log_softmax_match_torch():
    logits, _ = logits_and_labels()
    np.testing.assert_allclose(losses.softmax(logits), torch.softmax(torch.tensor(logits), 1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        losses.log_softmax(logits), torch.log_softmax(torch.tensor(logits), 1).numpy(), rtol=1e-12
    )


def test_softmax_is_finite_on_huge_logits_where_the_naive_form_is_nan():
    logits = np.array([[1000.0, 999.0, -1000.0]])
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.isnan(naive).any()
    with np.errstate(over="raise", invalid="raise"):
        probs = losses.softmax(logits)
    np.testing.assert_allclose(probs, torch.softmax(torch.tensor(logits), 1).numpy(), rtol=1e-12, atol=1e-300)


def test_softmax_works_along_any_axis():
    logits, _ = logits_and_labels()
    np.testing.assert_allclose(losses.softmax(logits, axis=0), torch.softmax(torch.tensor(logits), 0).numpy())


def test_softmax_rejects_integer_input():
    with pytest.raises(TypeError, match="logits must be a floating-point NumPy array"):
        losses.softmax(np.arange(4))


# --------------------------------------------------------------------------- cross-entropy

def test_cross_entropy_matches_torch_mean_over_the_batch():
    logits, labels = logits_and_labels()
    loss, _ = losses.cross_entropy_forward(logits, labels)
    assert isinstance(loss, float)
    assert loss == pytest.approx(F.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item(), rel=1e-12)


def test_cross_entropy_backward_matches_autograd_and_centred_differences():
    logits, labels = logits_and_labels()
    _, cache = losses.cross_entropy_forward(logits, labels)
    dlogits = losses.cross_entropy_backward(cache)
    logits_t = torch.tensor(logits, requires_grad=True)
    F.cross_entropy(logits_t, torch.tensor(labels)).backward()
    np.testing.assert_allclose(dlogits, logits_t.grad.numpy(), rtol=1e-10, atol=1e-14)
    numeric = numerical_gradient(lambda z: losses.cross_entropy_forward(z, labels)[0], logits.copy())
    assert rel_error(dlogits, numeric) < 1e-7


def test_cross_entropy_backward_scales_with_dloss():
    logits, labels = logits_and_labels()
    _, cache = losses.cross_entropy_forward(logits, labels)
    np.testing.assert_allclose(losses.cross_entropy_backward(cache, 3.0), 3 * losses.cross_entropy_backward(cache))


def test_cross_entropy_is_finite_on_huge_logits():
    logits = np.array([[1000.0, -1000.0], [0.0, 2000.0]])
    labels = np.array([1, 1])
    loss, cache = losses.cross_entropy_forward(logits, labels)
    assert loss == pytest.approx(F.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item())
    assert np.isfinite(losses.cross_entropy_backward(cache)).all()


def test_cross_entropy_rejects_bad_labels_and_shapes():
    logits, labels = logits_and_labels(N=3, K=4)
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        losses.cross_entropy_forward(logits[0], labels)
    with pytest.raises(TypeError, match=r"labels must be an integer NumPy array of shape \(3,\)"):
        losses.cross_entropy_forward(logits, labels.astype(float))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        losses.cross_entropy_forward(logits, labels[:2])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        losses.cross_entropy_forward(logits, np.array([0, 1, 4]))


def test_softmax_and_cross_entropy_pass_the_chapter_checks():
    from course_utils.checks import activations_normalization as checks

    checks.check_softmax(losses.softmax)
    checks.check_cross_entropy(losses.cross_entropy_forward, losses.cross_entropy_backward)
