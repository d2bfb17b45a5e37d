"""The chapter 03 checks fail on a stub and on plausible mistakes, and pass on a correct answer.

The correct answers here are written with torch (or plain NumPy formulas), never with
``course_utils.numpy_nn``, so a bug there cannot hide a bug in a check.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.checks import activations_normalization as checks
from split_mode import failure, split_mode


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


def torch_forward(function):
    """A NumPy (out, cache) forward and its backward, both computed by torch autograd.

    The cache holds the NumPy input and the extra arguments, (x, args): the backward runs ``function`` again
    under autograd, so the cache is plain data, as a NumPy learner's is.
    """

    def forward(x, *args):
        return function(torch.tensor(x), *args).numpy(), (x, args)

    def backward(dout, cache):
        x, args = cache
        x_t = torch.tensor(x, requires_grad=True)
        (dx,) = torch.autograd.grad(function(x_t, *args), x_t, torch.tensor(dout))
        return dx.numpy()

    return forward, backward


# --------------------------------------------------------------------------- leaky ReLU

def test_leaky_relu_check_passes_on_torch_autograd(capsys):
    forward, backward = torch_forward(F.leaky_relu)
    checks.check_leaky_relu(forward, backward)
    assert "✓ leaky ReLU" in capsys.readouterr().out


def test_leaky_relu_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_leaky_relu(stub, stub)


def test_leaky_relu_check_fails_when_the_slope_is_ignored():
    forward, backward = torch_forward(lambda x, slope: F.relu(x))
    with pytest.raises(AssertionError, match=r"negative_slope=0\.01: output"):
        checks.check_leaky_relu(forward, backward)


def relu_backward(dout, cache):
    """The ReLU gradient for a leaky ReLU: the slope dropped."""
    x, _ = cache
    return dout * (x > 0)


def test_leaky_relu_check_fails_when_backward_drops_the_slope():
    forward, _ = torch_forward(F.leaky_relu)
    with pytest.raises(AssertionError, match=r"negative_slope=0\.01: dx"):
        checks.check_leaky_relu(forward, relu_backward)


def test_leaky_relu_check_fails_when_backward_uses_the_output_sign_wrongly():
    forward, _ = torch_forward(F.leaky_relu)

    def backward(dout, cache):  # slope on the positive side: a swapped np.where
        x, _ = cache
        slope = 0.01
        return np.where(x > 0, slope * dout, dout)

    with pytest.raises(AssertionError, match="dx"):
        checks.check_leaky_relu(forward, backward)


# --------------------------------------------------------------------------- GELU

def test_gelu_check_passes_on_torch_autograd(capsys):
    checks.check_gelu(*torch_forward(F.gelu))
    assert "✓ GELU" in capsys.readouterr().out


def test_gelu_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_gelu(stub, stub)


def test_gelu_check_fails_on_the_tanh_approximation():
    # the approximation differs from the erf form by up to about 5e-4
    forward, backward = torch_forward(lambda x: F.gelu(x, approximate="tanh"))
    with pytest.raises(AssertionError, match="output"):
        checks.check_gelu(forward, backward)


def test_gelu_check_fails_when_backward_forgets_the_density_term():
    forward, _ = torch_forward(F.gelu)

    def backward(dout, cache):  # Phi(x) alone, the x * phi(x) term missing
        x, _ = cache
        return dout * torch.distributions.Normal(0.0, 1.0).cdf(torch.tensor(x)).numpy()

    with pytest.raises(AssertionError, match="dx"):
        checks.check_gelu(forward, backward)


def test_gelu_check_fails_on_a_sigmoid_approximation():
    forward, backward = torch_forward(lambda x: x * torch.sigmoid(1.702 * x))
    with pytest.raises(AssertionError, match="output"):
        checks.check_gelu(forward, backward)


# --------------------------------------------------------------------------- softmax and cross-entropy

def torch_softmax(logits):
    return torch.softmax(torch.tensor(logits), dim=-1).numpy()


def naive_softmax(logits):
    exp = np.exp(logits)  # overflows to inf for logits above about 709
    return exp / exp.sum(axis=-1, keepdims=True)


def test_softmax_check_passes_on_torch(capsys):
    checks.check_softmax(torch_softmax)
    assert "✓ stable softmax" in capsys.readouterr().out


def test_softmax_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_softmax(stub)


def test_softmax_check_fails_when_the_max_is_not_subtracted():
    with pytest.raises(AssertionError, match=r"large logits .*probabilities.* is nan"):
        checks.check_softmax(naive_softmax)


def test_softmax_check_fails_on_the_wrong_axis():
    with pytest.raises(AssertionError, match="probabilities"):
        checks.check_softmax(lambda z: torch.softmax(torch.tensor(z), dim=0).numpy())


def test_softmax_check_fails_when_the_min_is_subtracted():
    def softmax_minus_min(logits):  # exponents up to +2000 still overflow
        exp = np.exp(logits - logits.min(axis=-1, keepdims=True))
        return exp / exp.sum(axis=-1, keepdims=True)

    with pytest.raises(AssertionError, match="is nan"):
        checks.check_softmax(softmax_minus_min)


def torch_cross_entropy(reduction="mean"):
    """Cross-entropy forward and backward by torch; the cache is the NumPy (logits, labels)."""

    def loss_and_logits(logits, labels):
        logits_t = torch.tensor(logits, requires_grad=True)
        return F.cross_entropy(logits_t, torch.tensor(labels), reduction=reduction), logits_t

    def forward(logits, labels):
        loss, _ = loss_and_logits(logits, labels)
        return loss.detach().numpy(), (logits, labels)

    def backward(cache):
        loss, logits_t = loss_and_logits(*cache)
        (grad,) = torch.autograd.grad(loss, logits_t, torch.ones_like(loss))
        return grad.numpy()

    return forward, backward


def test_cross_entropy_check_passes_on_torch(capsys):
    checks.check_cross_entropy(*torch_cross_entropy())
    assert "✓ cross-entropy" in capsys.readouterr().out


def test_cross_entropy_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_cross_entropy(stub, stub)


def test_cross_entropy_check_fails_when_the_loss_is_summed_not_averaged():
    with pytest.raises(AssertionError, match=r"random \(4, 10\): loss.* is .*expected"):
        checks.check_cross_entropy(*torch_cross_entropy("sum"))


def test_cross_entropy_check_fails_when_the_loss_is_not_reduced():
    with pytest.raises(AssertionError, match="loss should be a scalar"):
        checks.check_cross_entropy(*torch_cross_entropy("none"))


def backward_sum(cache):
    """softmax - onehot, without the 1/N."""
    return torch_cross_entropy()[1](cache) * cache[0].shape[0]


def test_cross_entropy_check_fails_when_the_gradient_is_not_divided_by_n():
    forward, _ = torch_cross_entropy()
    with pytest.raises(AssertionError, match=r"random \(4, 10\): dlogits"):
        checks.check_cross_entropy(forward, backward_sum)


def test_cross_entropy_check_fails_on_a_naive_log_of_softmax():
    def forward(logits, labels):  # log(exp(z) / sum exp(z)): inf / inf on large logits
        probs = naive_softmax(logits)
        loss = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
        return loss, (probs, labels)

    def backward(cache):
        probs, labels = cache
        grad = probs.copy()
        grad[np.arange(len(labels)), labels] -= 1
        return grad / len(labels)

    with pytest.raises(AssertionError, match=r"large logits .*loss"):
        checks.check_cross_entropy(forward, backward)


# --------------------------------------------------------------------------- batch norm

def make_batchnorm(norm_correction=0, running_correction=1, batch_stats_in_train=True, momentum_swapped=False):
    """A NumPy batch norm built from torch.var_mean; the keyword arguments inject the classic mistakes."""

    def forward(x, gamma, beta, state, train=True, momentum=0.1, eps=1e-5):
        x_t = torch.tensor(x)
        if train:
            var, mean = torch.var_mean(x_t, dim=(0, 2, 3), correction=norm_correction)
            running_var = torch.var(x_t, dim=(0, 2, 3), correction=running_correction).numpy()
            new = momentum if not momentum_swapped else 1 - momentum
            state["running_mean"] = (1 - new) * state["running_mean"] + new * mean.numpy()
            state["running_var"] = (1 - new) * state["running_var"] + new * running_var
            if not batch_stats_in_train:
                mean, var = torch.tensor(state["running_mean"]), torch.tensor(state["running_var"])
        else:
            mean, var = torch.tensor(state["running_mean"]), torch.tensor(state["running_var"])
        x_hat = (x_t - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + eps)
        out = torch.tensor(gamma)[None, :, None, None] * x_hat + torch.tensor(beta)[None, :, None, None]
        return out.numpy(), (x_hat.numpy(), gamma, (var + eps).rsqrt().numpy())

    return forward


def batchnorm_backward_from_formula(dout, cache, with_mean_term=True):
    """The textbook formula in NumPy (Ioffe & Szegedy 2015, section 3)."""
    x_hat, gamma, inv_std = cache
    dxhat = dout * gamma[None, :, None, None]
    mean_term = dxhat.mean(axis=(0, 2, 3), keepdims=True) if with_mean_term else 0.0
    dx = inv_std[None, :, None, None] * (dxhat - mean_term - x_hat * (dxhat * x_hat).mean(axis=(0, 2, 3), keepdims=True))
    return dx, (dout * x_hat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))


def test_batchnorm_forward_check_passes_on_a_correct_batch_norm(capsys):
    checks.check_batchnorm2d_forward(make_batchnorm())
    assert "✓ batch norm forward" in capsys.readouterr().out


def test_batchnorm_forward_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_batchnorm2d_forward(stub)


def test_batchnorm_forward_check_fails_when_normalising_with_the_unbiased_variance():
    with pytest.raises(AssertionError, match=r"train mode, step 1: output"):
        checks.check_batchnorm2d_forward(make_batchnorm(norm_correction=1))


def test_batchnorm_forward_check_fails_when_running_var_uses_the_biased_variance():
    with pytest.raises(AssertionError, match=r'train mode, step 1: state\["running_var"\]'):
        checks.check_batchnorm2d_forward(make_batchnorm(running_correction=0))


def test_batchnorm_forward_check_fails_when_training_uses_the_running_statistics():
    with pytest.raises(AssertionError, match=r"train mode, step 1: output"):
        checks.check_batchnorm2d_forward(make_batchnorm(batch_stats_in_train=False))


def test_batchnorm_forward_check_fails_when_momentum_is_applied_the_wrong_way_round():
    with pytest.raises(AssertionError, match=r'train mode, step 1: state\["running_mean"\]'):
        checks.check_batchnorm2d_forward(make_batchnorm(momentum_swapped=True))


def test_batchnorm_forward_check_fails_when_eval_mode_uses_batch_statistics():
    correct = make_batchnorm()

    def always_train(x, gamma, beta, state, train=True, momentum=0.1, eps=1e-5):
        return correct(x, gamma, beta, state, True, momentum, eps)

    with pytest.raises(AssertionError, match=r"eval mode: output"):
        checks.check_batchnorm2d_forward(always_train)


def test_batchnorm_backward_check_passes_on_the_formula(capsys):
    checks.check_batchnorm2d_backward(make_batchnorm(), batchnorm_backward_from_formula)
    assert "✓ batch norm backward" in capsys.readouterr().out


def test_batchnorm_backward_check_passes_on_torch_autograd(capsys):
    def forward(x, gamma, beta, state, train=True, momentum=0.1, eps=1e-5):
        out = F.batch_norm(torch.tensor(x), None, None, torch.tensor(gamma), torch.tensor(beta), training=True, eps=eps)
        return out.numpy(), (x, gamma, beta, eps)

    def backward(dout, cache):
        x, gamma, beta, eps = cache
        inputs = [torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)]
        out = F.batch_norm(inputs[0], None, None, inputs[1], inputs[2], training=True, eps=eps)
        return tuple(g.numpy() for g in torch.autograd.grad(out, inputs, torch.tensor(dout)))

    checks.check_batchnorm2d_backward(forward, backward)
    assert "✓ batch norm backward" in capsys.readouterr().out


def test_batchnorm_backward_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_batchnorm2d_backward(make_batchnorm(), stub)


def backward_without_mean_term(dout, cache):
    return batchnorm_backward_from_formula(dout, cache, with_mean_term=False)


def test_batchnorm_backward_check_fails_when_the_mean_term_is_missing():
    with pytest.raises(AssertionError, match=r"train mode: dx"):
        checks.check_batchnorm2d_backward(make_batchnorm(), backward_without_mean_term)


def test_batchnorm_backward_check_fails_when_the_statistics_are_treated_as_constants():
    def backward(dout, cache):  # the eval-mode gradient used in training
        x_hat, gamma, inv_std = cache
        dx = dout * (gamma * inv_std)[None, :, None, None]
        return dx, (dout * x_hat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))

    with pytest.raises(AssertionError, match=r"train mode: dx"):
        checks.check_batchnorm2d_backward(make_batchnorm(), backward)


def test_batchnorm_backward_check_fails_when_dgamma_sums_over_the_batch_only():
    def backward(dout, cache):
        dx, _, dbeta = batchnorm_backward_from_formula(dout, cache)
        x_hat = cache[0]
        return dx, (dout * x_hat).sum(axis=0), dbeta  # (C, H, W) instead of (C,)

    with pytest.raises(AssertionError, match=r"dgamma has shape"):
        checks.check_batchnorm2d_backward(make_batchnorm(), backward)


# --------------------------------------------------------------------------- dropout

def make_dropout(inverted=True, keep_probability_is_p=False, scale_in_backward=True):
    """Inverted dropout from a NumPy Bernoulli mask; the keyword arguments inject the classic mistakes."""

    def forward(x, p=0.5, train=True, rng=None):
        if not train:
            return x.copy(), {"mask": None, "p": p, "train": False}
        keep_probability = p if keep_probability_is_p else 1 - p
        mask = (rng.random(x.shape) < keep_probability).astype(x.dtype)
        scale = 1 / (1 - p) if inverted else 1.0
        return x * mask * scale, {"mask": mask, "p": p, "train": True}

    def backward(dout, cache):
        if not cache["train"]:
            return dout.copy()
        scale = 1 / (1 - cache["p"]) if scale_in_backward else 1.0
        return dout * cache["mask"] * scale

    return forward, backward


def test_dropout_check_passes_on_inverted_dropout(capsys):
    checks.check_dropout(*make_dropout())
    assert "✓ inverted dropout" in capsys.readouterr().out


def test_dropout_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_dropout(stub, stub)


def test_dropout_check_fails_without_inverted_scaling():
    with pytest.raises(AssertionError, match=r"train mode, p=0\.2: output \(x \* mask / \(1 - p\)\)"):
        checks.check_dropout(*make_dropout(inverted=False, scale_in_backward=False))


def test_dropout_check_fails_when_p_is_taken_as_the_keep_probability():
    with pytest.raises(AssertionError, match=r"p=0\.2: fraction of kept units"):
        checks.check_dropout(*make_dropout(keep_probability_is_p=True))


def test_dropout_check_fails_when_backward_forgets_the_scaling():
    with pytest.raises(AssertionError, match=r"train mode, p=0\.2: dx"):
        checks.check_dropout(*make_dropout(scale_in_backward=False))


def dropout_always_train(x, p=0.5, train=True, rng=None):
    return make_dropout()[0](x, p, True, rng)


def dropout_tuple_cache(x, p=0.5, train=True, rng=None):
    out, cache = make_dropout()[0](x, p, train, rng)
    return out, (cache["mask"], p)


def test_dropout_check_fails_when_eval_mode_still_drops():
    with pytest.raises(AssertionError, match=r"eval mode, p=0\.2: output"):
        checks.check_dropout(dropout_always_train, make_dropout()[1])


def test_dropout_check_fails_when_the_mask_is_not_in_the_cache():
    with pytest.raises(AssertionError, match="cache should be a dict with the key 'mask'"):
        checks.check_dropout(dropout_tuple_cache, make_dropout()[1])


# --------------------------------------------------------------------------- under the grader (split mode)

def test_split_mode_passes_the_correct_answers(capsys):
    split_mode(checks.check_leaky_relu, *torch_forward(F.leaky_relu))
    split_mode(checks.check_gelu, *torch_forward(F.gelu))
    split_mode(checks.check_softmax, torch_softmax)
    split_mode(checks.check_cross_entropy, *torch_cross_entropy())
    split_mode(checks.check_batchnorm2d_forward, make_batchnorm())
    split_mode(checks.check_batchnorm2d_backward, make_batchnorm(), batchnorm_backward_from_formula)
    split_mode(checks.check_dropout, *make_dropout())  # the learner's generator crosses as its state
    out = capsys.readouterr().out
    for line in ("✓ leaky ReLU", "✓ GELU", "✓ stable softmax", "✓ cross-entropy", "✓ batch norm forward",
                 "✓ batch norm backward", "✓ inverted dropout"):
        assert line in out


# (id, check, the learner's functions): the wrong answers of the tests above
WRONG_ANSWERS = [
    ("leaky relu stub", checks.check_leaky_relu, (stub, stub)),
    ("leaky relu without slope", checks.check_leaky_relu, torch_forward(lambda x, slope: F.relu(x))),
    ("leaky relu backward without slope", checks.check_leaky_relu, (torch_forward(F.leaky_relu)[0], relu_backward)),
    ("gelu tanh approximation", checks.check_gelu, torch_forward(lambda x: F.gelu(x, approximate="tanh"))),
    ("naive softmax", checks.check_softmax, (naive_softmax,)),
    ("cross-entropy summed", checks.check_cross_entropy, torch_cross_entropy("sum")),
    ("cross-entropy not reduced", checks.check_cross_entropy, torch_cross_entropy("none")),
    ("cross-entropy gradient not divided", checks.check_cross_entropy, (torch_cross_entropy()[0], backward_sum)),
    ("batch norm stub", checks.check_batchnorm2d_forward, (stub,)),
    ("batch norm unbiased variance", checks.check_batchnorm2d_forward, (make_batchnorm(norm_correction=1),)),
    ("batch norm biased running variance", checks.check_batchnorm2d_forward, (make_batchnorm(running_correction=0),)),
    ("batch norm momentum swapped", checks.check_batchnorm2d_forward, (make_batchnorm(momentum_swapped=True),)),
    ("batch norm backward without mean term", checks.check_batchnorm2d_backward,
     (make_batchnorm(), backward_without_mean_term)),
    ("dropout stub", checks.check_dropout, (stub, stub)),
    ("dropout not inverted", checks.check_dropout, make_dropout(inverted=False, scale_in_backward=False)),
    ("dropout keep probability p", checks.check_dropout, make_dropout(keep_probability_is_p=True)),
    ("dropout backward without scaling", checks.check_dropout, make_dropout(scale_in_backward=False)),
    ("dropout in eval mode", checks.check_dropout, (dropout_always_train, make_dropout()[1])),
    ("dropout tuple cache", checks.check_dropout, (dropout_tuple_cache, make_dropout()[1])),
]


@pytest.mark.parametrize("check, functions", [(check, functions) for _, check, functions in WRONG_ANSWERS],
                         ids=[name for name, _, _ in WRONG_ANSWERS])
def test_split_mode_fails_wrong_answers_with_the_same_message(check, functions):
    expected = failure(check, *functions)
    assert failure(split_mode, check, *functions) == expected
