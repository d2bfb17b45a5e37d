"""Numerical gradient checks for NumPy code (introduced in ``notebooks/01_convolution.ipynb``).

A backward pass written by hand is checked against centred differences::

    df/dx[i] ~= (f(x + h e_i) - f(x - h e_i)) / (2 h)

whose error shrinks like h^2. Compare with ``rel_error``; in float64 with
h = 1e-5 a correct backward pass gives about 1e-8 or less, a wrong one about 1e-1.
"""
import numpy as np


def rel_error(a, b, eps=1e-8):
    """Largest elementwise relative error ``|a - b| / max(eps, |a| + |b|)``.

    Args:
        a, b: arrays of the same shape (or broadcastable scalars).

    Returns:
        a Python float; 0.0 for identical arrays.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error needs arrays of the same shape; got {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(eps, np.abs(a) + np.abs(b))))


def numerical_gradient(f, x, h=1e-5):
    """Centred-difference gradient of a scalar function ``f`` at ``x``.

    Args:
        f: callable taking an array shaped like ``x`` and returning a scalar.
        x: float array of any shape; changed in place during the evaluation and
            restored afterwards.
        h: the step.

    Returns:
        array shaped like ``x`` holding df/dx.
    """
    x = _float_array(x, "x")
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + h
        f_plus = float(f(x))
        x[index] = saved - h
        f_minus = float(f(x))
        x[index] = saved
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad


def numerical_gradient_array(f, x, dout, h=1e-5):
    """Centred-difference vector-Jacobian product of an array-valued ``f``.

    Computes ``sum(dout * f(x))`` differentiated with respect to ``x``, which is what
    a backward pass returns when it is handed the upstream gradient ``dout``.

    Args:
        f: callable taking an array shaped like ``x`` and returning an array shaped like ``dout``.
        x: float array; changed in place during the evaluation and restored.
        dout: upstream gradient, shaped like ``f(x)``.

    Returns:
        array shaped like ``x``.
    """
    x = _float_array(x, "x")
    dout = np.asarray(dout)
    first = np.asarray(f(x))
    if first.shape != dout.shape:
        raise ValueError(f"dout has shape {dout.shape} but f(x) has shape {first.shape}; they must match")
    return numerical_gradient(lambda z: np.sum(np.asarray(f(z)) * dout), x, h)


def _float_array(x, name):
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"{name} must be a floating-point NumPy array (float64 recommended for gradient checks); "
            f"got {type(x).__name__}{'' if not isinstance(x, np.ndarray) else ' of dtype ' + str(x.dtype)}"
        )
    return x
