"""The checks of chapter 04 (a whole CNN in NumPy) pass a correct answer and fail a stub and wrong answers.

The correct answers are written here with PyTorch (``torch.nn.functional`` and autograd on
tensors that share memory with the NumPy arrays), not with ``course_utils.numpy_nn``; each
wrong answer changes one thing a learner plausibly gets wrong.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.checks import numpy_cnn as checks
from split_mode import failure, split_mode


# --------------------------------------------------------------------------- correct answers (PyTorch)

def relu(h):
    return F.relu(h)


def max_pool(h):
    return F.max_pool2d(h, 2)


def flatten(h):
    return torch.flatten(h, 1)  # (N, F2*H/4*W/4), channel-major as in PyTorch


def make_forward(relu1=relu, relu2=relu, pool=max_pool, flat=flatten, conv2_bias=True):
    """A ``cnn_forward`` built from torch ops.

    The caches are ``(network, params, x)``: ``network(params, x) -> (logits, tensors)`` builds the autograd
    graph again for ``torch_backward``. Under the grader the NumPy arrays cross as plain data and ``network``,
    a function, stays in the learner's process behind a handle.
    """

    def network(params, x):
        tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
        h = F.conv2d(torch.from_numpy(x), tensors["conv1.weight"], tensors["conv1.bias"], padding=1)
        h = pool(relu1(h))
        h = F.conv2d(h, tensors["conv2.weight"], tensors["conv2.bias"] if conv2_bias else None, padding=1)
        h = pool(relu2(h))
        return F.linear(flat(h), tensors["fc.weight"], tensors["fc.bias"]), tensors

    def cnn_forward(params, x):
        logits, _ = network(params, x)
        return logits.detach().numpy(), (network, params, x)

    return cnn_forward


def make_backward(scale=1.0):
    def cnn_backward(dlogits, caches):
        network, params, x = caches
        logits, tensors = network(params, x)
        logits.backward(torch.from_numpy(dlogits))
        return {name: scale * tensor.grad.numpy() for name, tensor in tensors.items()}

    return cnn_backward


torch_forward = make_forward()
torch_backward = make_backward()


def sgd_momentum_step(params, grads, velocity, lr, momentum):
    for name in params:
        v = torch.from_numpy(velocity[name])  # shares memory: updates velocity[name] in place
        v.mul_(momentum).add_(torch.from_numpy(grads[name]))
        torch.from_numpy(params[name]).sub_(lr * v)


def cross_entropy_and_grad(logits, y):
    z = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(z, torch.from_numpy(y))
    loss.backward()
    return loss.item(), z.grad.numpy()


def make_train_steps(step=sgd_momentum_step, accumulate=False, reset_velocity=False, loss_after=False,
                     grad_scale=1.0):
    def train_steps(params, batches, lr, momentum):
        velocity = {name: np.zeros_like(value) for name, value in params.items()}
        total = {name: np.zeros_like(value) for name, value in params.items()}
        losses = []
        for x, y in batches:
            if reset_velocity:
                velocity = {name: np.zeros_like(value) for name, value in params.items()}
            logits, caches = torch_forward(params, x)
            loss, dlogits = cross_entropy_and_grad(logits, y)
            grads = torch_backward(dlogits * grad_scale, caches)
            if accumulate:  # gradients never zeroed: each step uses the sum of all gradients so far
                for name in grads:
                    total[name] += grads[name]
                grads = {name: value.copy() for name, value in total.items()}
            step(params, grads, velocity, lr, momentum)
            if loss_after:
                loss, _ = cross_entropy_and_grad(torch_forward(params, x)[0], y)
            losses.append(loss)
        return losses

    return train_steps


def stub(name):
    """The exercise notebook's version of ``name``: it raises ``NotImplementedError``."""

    def function(*args, **kwargs):
        raise NotImplementedError("exercise: replace this line with your code")

    function.__name__ = name
    return function


# --------------------------------------------------------------------------- cnn_forward

def test_forward_check_passes_the_torch_network(capsys):
    checks.check_cnn_forward(torch_forward)
    assert "✓ cnn_forward" in capsys.readouterr().out


def test_forward_check_fails_the_stub():
    with pytest.raises(AssertionError, match="cnn_forward is not implemented yet"):
        checks.check_cnn_forward(stub("cnn_forward"))


def test_forward_check_fails_without_the_second_relu():
    with pytest.raises(AssertionError, match=r"logits\[.*expected"):
        checks.check_cnn_forward(make_forward(relu2=lambda h: h))


def test_forward_check_fails_average_pooling():
    with pytest.raises(AssertionError, match=r"logits\[.*expected"):
        checks.check_cnn_forward(make_forward(pool=lambda h: F.avg_pool2d(h, 2)))


def test_forward_check_fails_a_channels_last_flatten():
    nhwc = lambda h: h.permute(0, 2, 3, 1).reshape(len(h), -1)  # noqa: E731  (N, H/4*W/4*F2): wrong order
    with pytest.raises(AssertionError, match=r"logits\[.*expected"):
        checks.check_cnn_forward(make_forward(flat=nhwc))


def test_forward_check_fails_a_missing_bias():
    with pytest.raises(AssertionError, match=r"logits\[.*expected"):
        checks.check_cnn_forward(make_forward(conv2_bias=False))


def test_forward_check_fails_a_forward_without_padding():
    def no_padding(params, x):
        h = F.max_pool2d(F.relu(F.conv2d(torch.from_numpy(x), torch.from_numpy(params["conv1.weight"]))), 2)
        return h.flatten(1).numpy(), None

    with pytest.raises(AssertionError, match="logits has shape"):
        checks.check_cnn_forward(no_padding)


def test_forward_check_reports_a_crash_as_a_failed_case():
    def crashes(params, x):
        return params["conv1.weight"] @ x, None

    with pytest.raises(AssertionError, match=r"N=2, .*raised ValueError"):
        checks.check_cnn_forward(crashes)


# --------------------------------------------------------------------------- cnn_backward

def test_backward_check_passes_autograd(capsys):
    checks.check_cnn_backward(torch_forward, torch_backward)
    assert "✓ cnn_backward: all 4 cases passed" in capsys.readouterr().out


def test_backward_check_fails_the_stub():
    with pytest.raises(AssertionError, match="cnn_backward is not implemented yet"):
        checks.check_cnn_backward(torch_forward, stub("cnn_backward"))


def test_backward_check_fails_when_the_forward_is_a_stub():
    with pytest.raises(AssertionError, match="cnn_forward is not implemented yet"):
        checks.check_cnn_backward(stub("cnn_forward"), torch_backward)


def test_backward_check_sends_a_wrong_forward_back_to_its_own_check():
    with pytest.raises(AssertionError, match="pass check_cnn_forward first"):
        checks.check_cnn_backward(make_forward(pool=lambda h: F.avg_pool2d(h, 2)), torch_backward)


def test_backward_check_fails_a_missing_relu_mask():
    # forward value of ReLU, gradient of the identity: the backward skips the mask [x > 0]
    unmasked = lambda h: h + (F.relu(h) - h).detach()  # noqa: E731
    with pytest.raises(AssertionError, match=r"grads\['conv1\.(weight|bias)'\]"):
        checks.check_cnn_backward(make_forward(relu1=unmasked, relu2=unmasked), torch_backward)


def test_backward_check_fails_a_pool_gradient_spread_over_the_window():
    # forward value of max-pooling, gradient of average-pooling (every element gets 1/4)
    spread = lambda h: F.avg_pool2d(h, 2) + (F.max_pool2d(h, 2) - F.avg_pool2d(h, 2)).detach()  # noqa: E731
    with pytest.raises(AssertionError, match=r"grads\['conv"):
        checks.check_cnn_backward(make_forward(pool=spread), torch_backward)


def test_backward_check_fails_gradients_averaged_twice_over_the_batch():
    with pytest.raises(AssertionError, match=r"grads\['conv1\.weight'\]"):
        checks.check_cnn_backward(torch_forward, make_backward(scale=1 / 2))  # the first case has N=2


def only_fc(dlogits, caches):
    grads = torch_backward(dlogits, caches)
    return {"fc.weight": grads["fc.weight"], "fc.bias": grads["fc.bias"]}


def test_backward_check_fails_missing_gradients():
    with pytest.raises(AssertionError, match="gradients' names are"):
        checks.check_cnn_backward(torch_forward, only_fc)


# --------------------------------------------------------------------------- sgd_momentum_step

def test_sgd_check_passes_the_torch_rule(capsys):
    checks.check_sgd_momentum_step(sgd_momentum_step)
    assert "✓ sgd_momentum_step: all 3 cases passed" in capsys.readouterr().out


def test_sgd_check_fails_the_stub():
    with pytest.raises(AssertionError, match="sgd_momentum_step is not implemented yet"):
        checks.check_sgd_momentum_step(stub("sgd_momentum_step"))


def stale_velocity(params, grads, velocity, lr, momentum):
    for name in params:
        params[name] -= lr * (grads[name] + momentum * velocity[name])


def test_sgd_check_fails_a_velocity_that_is_never_updated():
    with pytest.raises(AssertionError, match=r"step 1: velocity\['w'\]"):
        checks.check_sgd_momentum_step(stale_velocity)


def test_sgd_check_fails_an_update_with_the_old_velocity():
    def wrong_order(params, grads, velocity, lr, momentum):
        for name in params:
            params[name] -= lr * velocity[name]  # should use the new velocity
            velocity[name] = momentum * velocity[name] + grads[name]

    with pytest.raises(AssertionError, match=r"step 1: params\['w'\]"):
        checks.check_sgd_momentum_step(wrong_order)


def test_sgd_check_fails_an_ascent_step():
    def plus(params, grads, velocity, lr, momentum):
        for name in params:
            velocity[name] = momentum * velocity[name] + grads[name]
            params[name] += lr * velocity[name]

    with pytest.raises(AssertionError, match=r"step 1: params\['w'\]"):
        checks.check_sgd_momentum_step(plus)


def sutskever(params, grads, velocity, lr, momentum):
    """v = mu v + lr g; p -= v: the same as PyTorch's rule for a constant lr, not after it changes."""
    for name in params:
        velocity[name] = momentum * velocity[name] + lr * grads[name]
        params[name] -= velocity[name]


def test_sgd_check_fails_the_sutskever_form_once_the_learning_rate_changes():
    with pytest.raises(AssertionError, match=r"velocity\['w'\]"):
        checks.check_sgd_momentum_step(sutskever)


def returns_only(params, grads, velocity, lr, momentum):
    new_velocity = {name: momentum * velocity[name] + grads[name] for name in params}
    return {name: params[name] - lr * new_velocity[name] for name in params}, new_velocity


def test_sgd_check_fails_a_step_that_returns_new_arrays_without_storing_them():
    with pytest.raises(AssertionError, match=r"step 1: params\['w'\]"):
        checks.check_sgd_momentum_step(returns_only)


# --------------------------------------------------------------------------- train_steps

def test_training_problem_is_learnable_by_the_reference():
    params, batches = checks.make_training_problem()
    for _, lr, momentum in checks.TRAIN_CASES:
        losses, _ = checks.reference_training(params, batches, lr, momentum)
        assert losses[-1] < 0.5 * losses[0], f"lr={lr}, momentum={momentum}: losses {losses}"


def test_train_check_passes_a_torch_loop(capsys):
    checks.check_train_steps(make_train_steps())
    assert "✓ train_steps: all 2 cases passed" in capsys.readouterr().out


def test_train_check_fails_the_stub():
    with pytest.raises(AssertionError, match="train_steps is not implemented yet"):
        checks.check_train_steps(stub("train_steps"))


def test_train_check_fails_gradients_that_are_never_zeroed():
    # step 2 updates with g1 + g2 instead of g2: the loss of step 3 is the first to differ
    with pytest.raises(AssertionError, match=r"step 3: loss is .* expected"):
        checks.check_train_steps(make_train_steps(accumulate=True))


def test_train_check_fails_a_velocity_reset_every_step():
    with pytest.raises(AssertionError, match=r"momentum 0\.9, step 3: loss is .* expected"):
        checks.check_train_steps(make_train_steps(reset_velocity=True))


def test_train_check_fails_losses_measured_after_the_step():
    with pytest.raises(AssertionError, match=r"step 1: loss is .* expected"):
        checks.check_train_steps(make_train_steps(loss_after=True))


def test_train_check_fails_gradients_summed_instead_of_averaged_over_the_batch():
    with pytest.raises(AssertionError, match=r"step 2: loss is .* expected"):
        checks.check_train_steps(make_train_steps(grad_scale=8.0))  # N = 8 per batch


def test_train_check_fails_an_ascent_step_because_the_loss_grows():
    def plus(params, grads, velocity, lr, momentum):
        for name in params:
            velocity[name] = momentum * velocity[name] + grads[name]
            params[name] += lr * velocity[name]

    with pytest.raises(AssertionError, match="the loss did not decrease"):
        checks.check_train_steps(make_train_steps(step=plus))


def test_train_check_fails_a_loop_that_returns_nothing():
    def no_losses(params, batches, lr, momentum):
        make_train_steps()(params, batches, lr, momentum)

    with pytest.raises(AssertionError, match="returned 0 losses for 8 batches"):
        checks.check_train_steps(no_losses)


# --------------------------------------------------------------------------- under the grader (split mode)

def sgd_rebinding_the_arrays(params, grads, velocity, lr, momentum):
    """Correct, but stores new arrays in the dicts instead of updating the old ones in place."""
    for name in params:
        velocity[name] = momentum * velocity[name] + grads[name]
        params[name] = params[name] - lr * velocity[name]


def test_split_mode_passes_the_correct_answers(capsys):
    split_mode(checks.check_cnn_forward, torch_forward)
    split_mode(checks.check_cnn_backward, torch_forward, torch_backward)  # a function inside the caches
    split_mode(checks.check_sgd_momentum_step, sgd_momentum_step)  # updates the arrays in place
    split_mode(checks.check_sgd_momentum_step, sgd_rebinding_the_arrays)
    split_mode(checks.check_train_steps, make_train_steps())
    out = capsys.readouterr().out
    for line in ("✓ cnn_forward", "✓ cnn_backward: all 4 cases passed", "✓ sgd_momentum_step: all 3 cases passed",
                 "✓ train_steps: all 2 cases passed"):
        assert line in out


# (id, check, the learner's functions): the wrong answers of the tests above
WRONG_ANSWERS = [
    ("forward stub", checks.check_cnn_forward, (stub("cnn_forward"),)),
    ("forward without the second relu", checks.check_cnn_forward, (make_forward(relu2=lambda h: h),)),
    ("forward without a bias", checks.check_cnn_forward, (make_forward(conv2_bias=False),)),
    ("backward stub", checks.check_cnn_backward, (torch_forward, stub("cnn_backward"))),
    ("backward after a wrong forward", checks.check_cnn_backward,
     (make_forward(pool=lambda h: F.avg_pool2d(h, 2)), torch_backward)),
    ("backward averaged twice", checks.check_cnn_backward, (torch_forward, make_backward(scale=1 / 2))),
    ("backward missing gradients", checks.check_cnn_backward, (torch_forward, only_fc)),
    ("sgd stub", checks.check_sgd_momentum_step, (stub("sgd_momentum_step"),)),
    ("sgd stale velocity", checks.check_sgd_momentum_step, (stale_velocity,)),
    ("sgd sutskever", checks.check_sgd_momentum_step, (sutskever,)),
    ("sgd returns new arrays", checks.check_sgd_momentum_step, (returns_only,)),
    ("train stub", checks.check_train_steps, (stub("train_steps"),)),
    ("train gradients never zeroed", checks.check_train_steps, (make_train_steps(accumulate=True),)),
    ("train loss after the step", checks.check_train_steps, (make_train_steps(loss_after=True),)),
]


@pytest.mark.parametrize("check, functions", [(check, functions) for _, check, functions in WRONG_ANSWERS],
                         ids=[name for name, _, _ in WRONG_ANSWERS])
def test_split_mode_fails_wrong_answers_with_the_same_message(check, functions):
    expected = failure(check, *functions)
    assert failure(split_mode, check, *functions) == expected
