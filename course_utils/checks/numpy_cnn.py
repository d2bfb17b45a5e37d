"""Checks for the exercises of ``solutions/04_numpy_cnn.ipynb``: a whole CNN in NumPy.

The network of the chapter, in PyTorch terms (padding 1 keeps H and W, each pool halves them)::

    conv1 (F1, C, 3, 3) -> ReLU -> max-pool 2 -> conv2 (F2, F1, 3, 3) -> ReLU -> max-pool 2
        -> flatten (N, F2 * H/4 * W/4) -> fc (K, F2 * H/4 * W/4)

Parameters are a dict of NumPy arrays named as PyTorch's ``state_dict`` names them
(``PARAM_NAMES``). Every check compares the learner's NumPy code with a reference built
here from ``torch.nn.functional`` (``conv2d``, ``relu``, ``max_pool2d``, ``linear``,
``cross_entropy``), autograd and ``torch.optim.SGD``, never with ``course_utils.numpy_nn``.
Everything runs in float64, so a correct answer matches to about 1e-12.
"""
import copy

import numpy as np
import torch
import torch.nn.functional as F

from course_utils.checks import common

PARAM_NAMES = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias")
RTOL, ATOL = 1e-6, 1e-9


# --------------------------------------------------------------------------- the reference (PyTorch)

def reference_logits(params, x):
    """The chapter's network in PyTorch: ``params`` dict of float64 tensors, x (N, C, H, W) -> logits (N, K)."""
    h = F.conv2d(x, params["conv1.weight"], params["conv1.bias"], padding=1)  # (N, F1, H, W)
    h = F.relu(h)
    h = F.max_pool2d(h, 2)  # (N, F1, H/2, W/2)
    h = F.conv2d(h, params["conv2.weight"], params["conv2.bias"], padding=1)  # (N, F2, H/2, W/2)
    h = F.relu(h)
    h = F.max_pool2d(h, 2)  # (N, F2, H/4, W/4)
    h = torch.flatten(h, 1)  # (N, F2*H/4*W/4)
    return F.linear(h, params["fc.weight"], params["fc.bias"])  # (N, K)


def make_problem(rng, N, C, H, W, F1, F2, K):
    """Random float64 parameters (PyTorch's default scale), inputs and labels for one case."""
    def uniform(shape, fan_in):
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape)

    D = F2 * (H // 4) * (W // 4)
    params = {
        "conv1.weight": uniform((F1, C, 3, 3), C * 9),
        "conv1.bias": uniform((F1,), C * 9),
        "conv2.weight": uniform((F2, F1, 3, 3), F1 * 9),
        "conv2.bias": uniform((F2,), F1 * 9),
        "fc.weight": uniform((K, D), D),
        "fc.bias": uniform((K,), D),
    }
    x = rng.normal(size=(N, C, H, W))
    y = rng.integers(0, K, size=N).astype(np.int64)
    return params, x, y


def _torch_params(params, requires_grad=False):
    return {name: torch.tensor(value, dtype=torch.float64, requires_grad=requires_grad)
            for name, value in params.items()}


# (N, C, H, W, F1, F2, K): a tiny case, a non-square one with 3 input channels, and MNIST's size
FORWARD_CASES = ((2, 1, 8, 8, 2, 3, 4), (3, 3, 12, 8, 4, 5, 10), (4, 1, 28, 28, 8, 16, 10))


def _check_grads_dict(grads, params, case):
    if not isinstance(grads, dict):
        raise AssertionError(f"{case}: cnn_backward should return a dict name -> gradient; "
                             f"got {common.type_name(grads)}")
    if set(grads) != set(params):
        raise AssertionError(f"{case}: the gradients' names are {sorted(grads)}, expected {sorted(params)}")


def _run_forward(cnn_forward, params, x, case):
    """Call the learner's forward on copies; return (logits, caches)."""
    result = common.call(cnn_forward, copy.deepcopy(params), x.copy(), case=case)
    if not isinstance(result, tuple) or len(result) != 2:
        raise AssertionError(f"{case}: cnn_forward should return (logits, caches); got {common.type_name(result)}")
    return result


# --------------------------------------------------------------------------- forward

def check_cnn_forward(cnn_forward):
    """``cnn_forward(params, x) -> (logits, caches)`` against the network built from ``torch.nn.functional``."""
    rng = np.random.default_rng(40)
    for shape in FORWARD_CASES:
        N, C, H, W, F1, F2, K = shape
        case = f"N={N}, C={C}, H={H}, W={W}, F1={F1}, F2={F2}, K={K}"
        params, x, _ = make_problem(rng, *shape)
        logits, _ = _run_forward(cnn_forward, params, x, case)
        with torch.no_grad():
            expected = reference_logits(_torch_params(params), torch.from_numpy(x))
        common.assert_close(logits, expected, case, what="logits", rtol=RTOL, atol=ATOL)
    common.passed("cnn_forward", len(FORWARD_CASES))


# --------------------------------------------------------------------------- backward

def check_cnn_backward(cnn_forward, cnn_backward):
    """``cnn_backward(dlogits, caches) -> grads`` against PyTorch autograd.

    ``cnn_forward`` must pass ``check_cnn_forward`` first: its caches feed the backward.
    Two upstream gradients per shape: a random one, and the gradient of the mean
    cross-entropy, ``(softmax(logits) - onehot(y)) / N``.
    """
    rng = np.random.default_rng(41)
    n_cases = 0
    for shape in FORWARD_CASES[:2]:
        N, C, H, W, F1, F2, K = shape
        for upstream in ("random dlogits", "cross-entropy dlogits"):
            case = f"{upstream}, N={N}, C={C}, H={H}, W={W}, F1={F1}, F2={F2}, K={K}"
            params, x, y = make_problem(rng, *shape)
            logits, caches = _run_forward(cnn_forward, params, x, case)
            tensors = _torch_params(params, requires_grad=True)
            expected_logits = reference_logits(tensors, torch.from_numpy(x))
            try:
                common.assert_close(logits, expected_logits, case, what="logits", rtol=RTOL, atol=ATOL)
            except AssertionError as error:
                raise AssertionError(f"cnn_forward is wrong, so its caches cannot be trusted; "
                                     f"pass check_cnn_forward first ({error})") from None
            if upstream == "random dlogits":
                dlogits = torch.from_numpy(rng.normal(size=(N, K)))
                loss = (expected_logits * dlogits).sum()
            else:
                loss = F.cross_entropy(expected_logits, torch.from_numpy(y))
                dlogits = torch.autograd.grad(loss, expected_logits, retain_graph=True)[0]
            loss.backward()
            grads = common.call(cnn_backward, dlogits.detach().numpy().copy(), caches, case=case)
            _check_grads_dict(grads, params, case)
            for name in PARAM_NAMES:
                common.assert_close(grads[name], tensors[name].grad, case, what=f"grads[{name!r}]",
                                    rtol=RTOL, atol=ATOL)
            n_cases += 1
    common.passed("cnn_backward", n_cases)


# --------------------------------------------------------------------------- SGD with momentum

# (case, learning rate of each step, momentum)
SGD_CASES = (
    ("momentum 0.9, lr 0.1", (0.1, 0.1, 0.1), 0.9),
    ("momentum 0 (plain SGD), lr 0.5", (0.5, 0.5), 0.0),
    ("momentum 0.5, lr 0.1 then 0.01 (a schedule)", (0.1, 0.1, 0.01, 0.01), 0.5),
)


def check_sgd_momentum_step(sgd_momentum_step):
    """``sgd_momentum_step(params, grads, velocity, lr, momentum)`` against ``torch.optim.SGD(momentum=...)``.

    The step updates ``params`` and ``velocity`` (dicts of arrays) in place:
    ``v = momentum * v + g; p -= lr * v``. Several steps in a row, velocity starting at zero;
    after each one, every parameter and every velocity is compared with PyTorch's
    parameters and ``momentum_buffer``.
    """
    rng = np.random.default_rng(42)
    shapes = {"w": (3, 2), "b": (4,)}
    for case, lrs, momentum in SGD_CASES:
        params = {name: rng.normal(size=shape) for name, shape in shapes.items()}
        velocity = {name: np.zeros(shape) for name, shape in shapes.items()}
        tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
        optimizer = torch.optim.SGD(list(tensors.values()), lr=lrs[0], momentum=momentum)
        for step, lr in enumerate(lrs):
            grads = {name: rng.normal(size=shape) for name, shape in shapes.items()}
            for group in optimizer.param_groups:
                group["lr"] = lr
            for name, tensor in tensors.items():
                tensor.grad = torch.from_numpy(grads[name].copy())
            optimizer.step()
            where = f"{case}, step {step + 1}"
            common.call(sgd_momentum_step, params, {k: g.copy() for k, g in grads.items()}, velocity, lr, momentum,
                        case=where)
            for name, tensor in tensors.items():
                common.assert_close(params[name], tensor, where, what=f"params[{name!r}]", rtol=RTOL, atol=ATOL)
                # PyTorch's velocity; plain SGD (momentum 0) keeps none, and then v = g
                buffer = optimizer.state[tensor].get("momentum_buffer") if momentum else tensor.grad
                common.assert_close(velocity[name], buffer, where, what=f"velocity[{name!r}]", rtol=RTOL, atol=ATOL)
    common.passed("sgd_momentum_step", len(SGD_CASES))


# --------------------------------------------------------------------------- the training loop

def make_training_problem(seed=43, batches=4, N=8, K=3, size=8, epochs=2):
    """A tiny learnable problem: K classes, each a fixed random 8x8 pattern plus noise.

    Returns:
        params: dict of float64 arrays for a network with F1=3, F2=4 (``make_problem``).
        batches: list of ``batches * epochs`` pairs (x (N, 1, size, size) float64, y (N,) int64);
            the same ``batches`` pairs repeated ``epochs`` times, as a loop over epochs sees them.
    """
    rng = np.random.default_rng(seed)
    params, _, _ = make_problem(rng, N, 1, size, size, 3, 4, K)
    patterns = rng.normal(size=(K, 1, size, size))  # (K, 1, H, W)
    data = []
    for _ in range(batches):
        y = rng.integers(0, K, size=N).astype(np.int64)  # (N,)
        x = 2.0 * patterns[y] + 0.5 * rng.normal(size=(N, 1, size, size))  # (N, 1, H, W)
        data.append((x, y))
    return params, data * epochs


def reference_training(params, batches, lr, momentum):
    """PyTorch's run: the losses (before each step) and the final parameters, as NumPy."""
    tensors = _torch_params(params, requires_grad=True)
    optimizer = torch.optim.SGD(list(tensors.values()), lr=lr, momentum=momentum)
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(reference_logits(tensors, torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, {name: tensor.detach().numpy() for name, tensor in tensors.items()}


TRAIN_CASES = (("lr 0.05, momentum 0.9", 0.05, 0.9), ("lr 0.2, momentum 0 (plain SGD)", 0.2, 0.0))


def check_train_steps(train_steps):
    """``train_steps(params, batches, lr, momentum) -> losses`` against the same run in PyTorch.

    On a tiny fixed problem (``make_training_problem``), from the same initial parameters
    and on the same batches: the loss must decrease, the loss of every step (computed on its
    batch *before* the update, as ``loss.item()`` in a PyTorch loop) must match
    ``torch.optim.SGD`` with autograd, and so must the parameters left in ``params``.
    """
    for case, lr, momentum in TRAIN_CASES:
        initial, batches = make_training_problem()
        expected_losses, expected_params = reference_training(initial, batches, lr, momentum)
        params = copy.deepcopy(initial)
        copied = [(x.copy(), y.copy()) for x, y in batches]
        losses = common.call(train_steps, params, copied, lr, momentum, case=case)
        losses = common.as_numpy(losses if losses is not None else []).astype(np.float64).ravel()
        if len(losses) != len(batches):
            raise AssertionError(f"{case}: train_steps returned {len(losses)} losses for {len(batches)} batches; "
                                 "expected one loss per step")
        if not losses[-1] < losses[0]:
            raise AssertionError(f"{case}: the loss did not decrease: {losses[0]:.6g} at the first step, "
                                 f"{losses[-1]:.6g} at the last (PyTorch: {expected_losses[0]:.6g} -> "
                                 f"{expected_losses[-1]:.6g})")
        for step, (received, expected) in enumerate(zip(losses, expected_losses), start=1):
            if not abs(received - expected) <= ATOL + RTOL * abs(expected):
                raise AssertionError(f"{case}, step {step}: loss is {received:.10g}, expected {expected:.10g} "
                                     f"(PyTorch on the same batch; tolerance atol={ATOL:g} + rtol={RTOL:g}*|expected|)")
        for name in PARAM_NAMES:
            common.assert_close(params[name], expected_params[name], f"{case}, after {len(batches)} steps",
                                what=f"params[{name!r}]", rtol=RTOL, atol=ATOL)
    common.passed("train_steps", len(TRAIN_CASES))
