"""Checks for the exercises of ``solutions/03_activations_normalization.ipynb``.

Every reference is PyTorch: ``F.leaky_relu``, ``F.gelu``, ``torch.softmax``,
``F.cross_entropy``, ``nn.BatchNorm2d`` and autograd for the gradients; dropout, whose
mask is random, is checked against ``x * mask / (1 - p)`` differentiated by autograd
with the learner's own mask. Inputs are float64, tolerances ``rtol=1e-6, atol=1e-8``
unless a case says otherwise.
"""
import numpy as np
import torch
import torch.nn.functional as F

from course_utils.checks import common

RTOL, ATOL = 1e-6, 1e-8


def _rng(seed):
    return np.random.default_rng(seed)


def _grad(function, x, dout):
    """Autograd's ``d sum(dout * function(x)) / dx``; x and dout are NumPy arrays."""
    x_t = torch.tensor(x, requires_grad=True)
    function(x_t).backward(torch.tensor(dout))
    return x_t.grad.numpy()


def _unpack_forward(result, case, name):
    if not isinstance(result, tuple) or len(result) != 2:
        raise AssertionError(f"{case}: {name} should return a pair (out, cache); got {common.type_name(result)}")
    return result


def _elementwise_cases(seed):
    """Inputs for elementwise activations: fixed values around 0 and random batches."""
    rng = _rng(seed)
    return [
        ("fixed values", np.array([-3.0, -1.0, -0.5, -1e-3, 0.25, 0.5, 1.0, 3.0])),
        ("random (4, 10)", rng.normal(size=(4, 10)) * 2),
        ("random (2, 3, 5, 5) feature maps", rng.normal(size=(2, 3, 5, 5)) * 3),
    ]


# --------------------------------------------------------------------------- activations

def check_leaky_relu(leaky_relu_forward, leaky_relu_backward):
    """``leaky_relu_forward(x, negative_slope) -> (out, cache)`` and ``leaky_relu_backward(dout, cache) -> dx``
    against ``F.leaky_relu`` and its autograd gradient, for slopes 0.01, 0.2 and 0 (plain ReLU)."""
    n = 0
    for seed, slope in enumerate((0.01, 0.2, 0.0)):
        for name, x in _elementwise_cases(seed):
            case = f"{name}, negative_slope={slope}"
            out, cache = _unpack_forward(
                common.call(leaky_relu_forward, x.copy(), slope, case=case), case, "leaky_relu_forward"
            )
            expected = F.leaky_relu(torch.tensor(x), slope).numpy()
            common.assert_close(out, expected, case, "output", RTOL, ATOL)
            dout = _rng(7).normal(size=x.shape)
            dx = common.call(leaky_relu_backward, dout.copy(), cache, case=case)
            expected_dx = _grad(lambda t: F.leaky_relu(t, slope), x, dout)
            common.assert_close(dx, expected_dx, case, "dx", RTOL, ATOL)
            n += 1
    common.passed("leaky ReLU forward and backward", n)


def check_gelu(gelu_forward, gelu_backward):
    """``gelu_forward(x) -> (out, cache)`` (exact erf form) and ``gelu_backward(dout, cache) -> dx``
    against ``F.gelu`` and its autograd gradient."""
    n = 0
    for name, x in _elementwise_cases(3) + [("wide range", np.linspace(-8, 8, 41))]:
        case = name
        out, cache = _unpack_forward(common.call(gelu_forward, x.copy(), case=case), case, "gelu_forward")
        common.assert_close(out, F.gelu(torch.tensor(x)).numpy(), case, "output", RTOL, ATOL)
        dout = _rng(11).normal(size=x.shape)
        dx = common.call(gelu_backward, dout.copy(), cache, case=case)
        common.assert_close(dx, _grad(F.gelu, x, dout), case, "dx", RTOL, ATOL)
        n += 1
    common.passed("GELU forward and backward", n)


# --------------------------------------------------------------------------- softmax and cross-entropy

def _logit_cases():
    rng = _rng(5)
    return [
        ("random (4, 10)", rng.normal(size=(4, 10))),
        ("one row (1, 3)", np.array([[1.0, 2.0, 3.0]])),
        ("large logits (3, 5), up to 1000", rng.normal(size=(3, 5)) * 10 + np.array([[1000.0], [-1000.0], [500.0]])),
        ("confident (2, 4)", np.array([[50.0, 0.0, -50.0, 10.0], [0.0, 0.0, 0.0, 800.0]])),
    ]


def check_softmax(softmax):
    """``softmax(logits) -> probs`` over the last axis of (N, K) logits against ``torch.softmax``,
    including logits in the hundreds and thousands, where the naive formula overflows."""
    n = 0
    for case, logits in _logit_cases():
        with np.errstate(over="ignore", invalid="ignore"):  # a naive softmax overflows: report it as NaN
            probs = common.call(softmax, logits.copy(), case=case)
        expected = torch.softmax(torch.tensor(logits), dim=-1).numpy()
        common.assert_close(probs, expected, case, "probabilities", RTOL, ATOL)
        n += 1
    common.passed("stable softmax", n)


def check_cross_entropy(cross_entropy_forward, cross_entropy_backward):
    """``cross_entropy_forward(logits, labels) -> (loss, cache)``, the mean over the batch, and
    ``cross_entropy_backward(cache) -> dlogits`` against ``F.cross_entropy`` and autograd."""
    n = 0
    rng = _rng(6)
    for case, logits in _logit_cases():
        N, K = logits.shape
        labels = rng.integers(0, K, size=N)
        with np.errstate(over="ignore", invalid="ignore"):
            result = common.call(cross_entropy_forward, logits.copy(), labels.copy(), case=case)
        loss, cache = _unpack_forward(result, case, "cross_entropy_forward")
        logits_t = torch.tensor(logits, requires_grad=True)
        expected = F.cross_entropy(logits_t, torch.tensor(labels))  # mean over the batch
        expected.backward()
        if np.ndim(common.as_numpy(loss)) != 0:
            raise AssertionError(
                f"{case}: loss should be a scalar (the mean over the batch); got shape {np.shape(loss)}"
            )
        common.assert_close(float(loss), expected.item(), case, "loss", RTOL, ATOL)
        dlogits = common.call(cross_entropy_backward, cache, case=case)
        common.assert_close(dlogits, logits_t.grad.numpy(), case, "dlogits", RTOL, ATOL)
        n += 1
    common.passed("cross-entropy forward and backward", n)


# --------------------------------------------------------------------------- batch norm

def _bn_cases():
    """(case, x shape, momentum): several shapes, a batch of 2, a 1x1 map, a larger momentum."""
    return [("(4, 3, 5, 5)", (4, 3, 5, 5), 0.1), ("(2, 5, 3, 4)", (2, 5, 3, 4), 0.1),
            ("(8, 2, 1, 1)", (8, 2, 1, 1), 0.1), ("(3, 4, 2, 3), momentum=0.3", (3, 4, 2, 3), 0.3)]


def _torch_bn(C, gamma, beta, running_mean, running_var, momentum):
    bn = torch.nn.BatchNorm2d(C, momentum=momentum, eps=1e-5).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
        bn.running_mean.copy_(torch.tensor(running_mean))
        bn.running_var.copy_(torch.tensor(running_var))
    return bn


def check_batchnorm2d_forward(batchnorm2d_forward):
    """``batchnorm2d_forward(x, gamma, beta, state, train, momentum, eps) -> (out, cache)`` against
    ``nn.BatchNorm2d``: two training steps (output, then ``state["running_mean"]`` and
    ``state["running_var"]``), then evaluation mode (output; the state must not change)."""
    n = 0
    for i, (name, shape, momentum) in enumerate(_bn_cases()):
        rng = _rng(20 + i)
        N, C, H, W = shape
        gamma, beta = rng.uniform(0.5, 2.0, size=C), rng.normal(size=C)
        state = {"running_mean": rng.normal(size=C), "running_var": rng.uniform(0.5, 2.0, size=C)}
        bn = _torch_bn(C, gamma, beta, state["running_mean"], state["running_var"], momentum)
        for step in (1, 2):
            case = f"{name}, train mode, step {step}"
            x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=(1, C, 1, 1)) + rng.normal(size=(1, C, 1, 1))
            out, _ = _unpack_forward(
                common.call(batchnorm2d_forward, x.copy(), gamma.copy(), beta.copy(), state,
                            train=True, momentum=momentum, eps=1e-5, case=case),
                case, "batchnorm2d_forward")
            bn.train()
            with torch.no_grad():
                expected = bn(torch.tensor(x)).numpy()
            common.assert_close(out, expected, case, "output", RTOL, ATOL)
            for key in ("running_mean", "running_var"):
                common.assert_close(state[key], getattr(bn, key).numpy(), case, f'state["{key}"]', RTOL, ATOL)
            n += 1
        case = f"{name}, eval mode"
        x = rng.normal(size=shape) * 2 + 1
        before = {key: np.array(value, copy=True) for key, value in state.items()}
        out, _ = _unpack_forward(
            common.call(batchnorm2d_forward, x.copy(), gamma.copy(), beta.copy(), state,
                        train=False, momentum=momentum, eps=1e-5, case=case),
            case, "batchnorm2d_forward")
        bn.eval()
        with torch.no_grad():
            expected = bn(torch.tensor(x)).numpy()
        common.assert_close(out, expected, case, "output (normalised with the running statistics)", RTOL, ATOL)
        for key in ("running_mean", "running_var"):
            common.assert_close(state[key], before[key], case, f'state["{key}"] (must not change in eval mode)', 0, 0)
        n += 1
    common.passed("batch norm forward (train and eval, running statistics)", n)


def check_batchnorm2d_backward(batchnorm2d_forward, batchnorm2d_backward):
    """``batchnorm2d_backward(dout, cache) -> (dx, dgamma, dbeta)`` after a training-mode
    ``batchnorm2d_forward``, against autograd through ``F.batch_norm(training=True)``."""
    n = 0
    for i, (name, shape, momentum) in enumerate(_bn_cases()):
        rng = _rng(40 + i)
        N, C, H, W = shape
        case = f"{name}, train mode"
        x = rng.normal(size=shape) * 2 + 0.5
        gamma, beta = rng.uniform(0.5, 2.0, size=C), rng.normal(size=C)
        dout = rng.normal(size=shape)
        state = {"running_mean": np.zeros(C), "running_var": np.ones(C)}
        _, cache = _unpack_forward(
            common.call(batchnorm2d_forward, x.copy(), gamma.copy(), beta.copy(), state,
                        train=True, momentum=momentum, eps=1e-5, case=case),
            case, "batchnorm2d_forward")
        grads = common.call(batchnorm2d_backward, dout.copy(), cache, case=case)
        if not isinstance(grads, tuple) or len(grads) != 3:
            raise AssertionError(
                f"{case}: batchnorm2d_backward should return (dx, dgamma, dbeta); got {common.type_name(grads)}"
            )
        x_t, g_t, b_t = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
        F.batch_norm(x_t, None, None, g_t, b_t, training=True, eps=1e-5).backward(torch.tensor(dout))
        for what, received, expected in zip(("dx", "dgamma", "dbeta"), grads, (x_t.grad, g_t.grad, b_t.grad)):
            common.assert_close(received, expected.numpy(), case, what, 1e-5, 1e-7)
        n += 1
    common.passed("batch norm backward", n)


# --------------------------------------------------------------------------- dropout

def check_dropout(dropout_forward, dropout_backward):
    """``dropout_forward(x, p, train, rng) -> (out, cache)`` with ``cache["mask"]`` (1 kept, 0 dropped)
    and ``dropout_backward(dout, cache) -> dx``: inverted scaling ``x * mask / (1 - p)`` in training,
    the identity in evaluation, a kept fraction near ``1 - p``, the gradient of autograd."""
    n = 0
    for p in (0.2, 0.5, 0.8):
        rng = _rng(int(p * 10))
        x = rng.normal(size=(100, 50, 2, 2)) + 1.0  # (N, C, H, W), 20,000 units
        dout = rng.normal(size=x.shape)
        case = f"train mode, p={p}"
        out, cache = _unpack_forward(
            common.call(dropout_forward, x.copy(), p, True, _rng(99), case=case), case, "dropout_forward")
        if not isinstance(cache, dict) or "mask" not in cache:
            raise AssertionError(f"{case}: cache should be a dict with the key 'mask'; got {common.type_name(cache)}")
        mask = common.as_numpy(cache["mask"])
        common.assert_shape(mask, x.shape, case, 'cache["mask"]')
        keep = mask != 0
        kept = keep.mean()
        # binomial standard deviation of the kept fraction; 6 of them is never reached by chance
        tolerance = 6 * np.sqrt(p * (1 - p) / x.size)
        if abs(kept - (1 - p)) > tolerance:
            raise AssertionError(
                f"{case}: fraction of kept units is {kept:.4f}, expected 1 - p = {1 - p:.4f} "
                f"(within {tolerance:.4f}); p is the probability of dropping a unit"
            )
        keep_t = torch.tensor(keep, dtype=torch.float64)
        x_t = torch.tensor(x, requires_grad=True)
        expected = x_t * keep_t / (1 - p)  # inverted dropout: E[out] = x
        expected.backward(torch.tensor(dout))
        common.assert_close(out, expected.detach().numpy(), case, "output (x * mask / (1 - p))", RTOL, ATOL)
        dx = common.call(dropout_backward, dout.copy(), cache, case=case)
        common.assert_close(dx, x_t.grad.numpy(), case, "dx", RTOL, ATOL)
        n += 1
        case = f"eval mode, p={p}"
        out, cache = _unpack_forward(
            common.call(dropout_forward, x.copy(), p, False, _rng(99), case=case), case, "dropout_forward")
        common.assert_close(out, x, case, "output (the identity in eval mode)", 0, 0)
        dx = common.call(dropout_backward, dout.copy(), cache, case=case)
        common.assert_close(dx, dout, case, "dx (the identity in eval mode)", 0, 0)
        n += 1
    common.passed("inverted dropout forward and backward", n)
