"""``course_utils.numpy_nn.optim``: SGD with momentum, step for step against ``torch.optim.SGD``."""
import numpy as np
import pytest
import torch

from course_utils.numpy_nn.optim import sgd_momentum_init, sgd_momentum_step


def test_init_gives_zeros_of_every_shape():
    velocity = sgd_momentum_init({"w": np.ones((2, 3)), "b": np.ones(4, dtype=np.float32)})
    assert velocity["w"].shape == (2, 3) and velocity["b"].dtype == np.float32
    assert not velocity["w"].any() and not velocity["b"].any()


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_steps_match_torch_sgd_including_a_learning_rate_change(momentum):
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    velocity = sgd_momentum_init(params)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    optimizer = torch.optim.SGD(list(tensors.values()), lr=0.1, momentum=momentum)
    for lr in (0.1, 0.1, 0.02, 0.02):
        grads = {k: rng.normal(size=v.shape) for k, v in params.items()}
        for k, t in tensors.items():
            t.grad = torch.from_numpy(grads[k].copy())
        optimizer.param_groups[0]["lr"] = lr
        optimizer.step()
        sgd_momentum_step(params, grads, velocity, lr, momentum)
        for k, t in tensors.items():
            np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_step_updates_in_place():
    p = np.ones(3)
    params, velocity = {"p": p}, {"p": np.zeros(3)}
    sgd_momentum_step(params, {"p": np.ones(3)}, velocity, lr=0.5, momentum=0.9)
    assert params["p"] is p
    np.testing.assert_allclose(p, 0.5)
    np.testing.assert_allclose(velocity["p"], 1.0)


def test_step_rejects_mismatched_keys_and_shapes():
    params = {"w": np.ones(2)}
    with pytest.raises(ValueError, match="grads must have the keys of params"):
        sgd_momentum_step(params, {"v": np.ones(2)}, {"w": np.zeros(2)}, 0.1)
    with pytest.raises(ValueError, match=r"velocity\['w'\] has shape \(3,\)"):
        sgd_momentum_step(params, {"w": np.ones(2)}, {"w": np.zeros(3)}, 0.1)


def test_step_rejects_bad_hyperparameters_and_types():
    params, grads, velocity = {"w": np.ones(2)}, {"w": np.ones(2)}, {"w": np.zeros(2)}
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        sgd_momentum_step(params, grads, velocity, lr=0)
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\)"):
        sgd_momentum_step(params, grads, velocity, lr=0.1, momentum=1.0)
    with pytest.raises(TypeError, match=r"params\['w'\] must be a floating-point NumPy array"):
        sgd_momentum_step({"w": [1.0, 2.0]}, grads, velocity, lr=0.1)
    with pytest.raises(TypeError, match="params must be a dict"):
        sgd_momentum_init([np.ones(2)])
