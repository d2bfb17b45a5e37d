"""Stochastic gradient descent with momentum in NumPy (introduced in ``notebooks/04_numpy_cnn.ipynb``).

Parameters, gradients and velocities are dicts of arrays with the same keys and shapes
(e.g. ``{"conv1.weight": (F, C, KH, KW), ...}``). One step is ``torch.optim.SGD``'s
rule with ``momentum=mu``, ``dampening=0``, ``nesterov=False``::

    v <- mu * v + g          (the velocity: a running sum of past gradients)
    p <- p - lr * v

This is PyTorch's form, not the one of Sutskever et al. (2013), ``v <- mu * v + lr * g;
p <- p - v``: the two agree while ``lr`` is constant and differ after ``lr`` changes.
Starting from ``v = 0`` the first step is plain SGD, as PyTorch's first step
(which sets ``v = g``).
"""
import numbers

import numpy as np


def sgd_momentum_init(params):
    """Zero velocities for ``params``: a dict with the same keys, arrays of zeros of the same shapes.

    Args:
        params: dict name -> float array (any shape).

    Returns:
        dict name -> array of zeros shaped like ``params[name]``.
    """
    _check_dict(params, "params")
    return {name: np.zeros_like(value) for name, value in params.items()}


def sgd_momentum_step(params, grads, velocity, lr, momentum=0.9):
    """One SGD-with-momentum step, in place, as ``torch.optim.SGD(params, lr, momentum)``.

    For every name: ``velocity[name] = momentum * velocity[name] + grads[name]`` then
    ``params[name] -= lr * velocity[name]``.

    Args:
        params: dict name -> float array; updated in place.
        grads: dict name -> float array shaped like ``params[name]`` (dL/dp).
        velocity: dict name -> float array shaped like ``params[name]``; updated in place
            (start from ``sgd_momentum_init(params)``).
        lr: learning rate, a number > 0.
        momentum: a number in [0, 1); 0 gives plain SGD.

    Returns:
        None (``params`` and ``velocity`` change in place).

    Raises:
        TypeError, ValueError: dicts with different keys or shapes, or lr / momentum out of range.
    """
    _check_dict(params, "params")
    for name, other in (("grads", grads), ("velocity", velocity)):
        _check_dict(other, name)
        if set(other) != set(params):
            raise ValueError(f"{name} must have the keys of params {sorted(params)}; got {sorted(other)}")
        for key, value in other.items():
            if value.shape != params[key].shape:
                raise ValueError(f"{name}[{key!r}] has shape {value.shape}, params[{key!r}] has {params[key].shape}; "
                                 "they must match")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
        raise ValueError(f"lr must be a number > 0; got {lr!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be a number in [0, 1); got {momentum!r}")
    for name, p in params.items():
        v = velocity[name]
        v *= momentum
        v += grads[name]  # v = momentum * v + g
        p -= lr * v  # PyTorch's rule: the learning rate multiplies the velocity, not the gradient inside it


def _check_dict(value, name):
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict name -> NumPy array; got {type(value).__name__}")
    for key, array in value.items():
        if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
            got = type(array).__name__ + (f" of dtype {array.dtype}" if isinstance(array, np.ndarray) else "")
            raise TypeError(f"{name}[{key!r}] must be a floating-point NumPy array; got {got}")
