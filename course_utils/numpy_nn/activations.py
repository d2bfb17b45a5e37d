"""Activation functions and their derivatives in NumPy (introduced in ``notebooks/03_activations_normalization.ipynb``).

Every activation acts elementwise, so the input ``x`` may have any shape (an (N, D)
batch of vectors, an (N, C, H, W) batch of feature maps, ...); the output and every
gradient have the shape of ``x``. Each is a pair

* ``<name>_forward(x, ...) -> (out, cache)``
* ``<name>_backward(dout, cache) -> dx``, with ``dx = dout * f'(x)`` (the chain rule).

The formulas, and the PyTorch function each one matches:

=============  ==============================================================  =========================
name           f(x)                                                            PyTorch
=============  ==============================================================  =========================
sigmoid        1 / (1 + exp(-x))                                               ``torch.sigmoid``
tanh           (exp(x) - exp(-x)) / (exp(x) + exp(-x))                         ``torch.tanh``
relu           max(0, x)                                                       ``F.relu``
leaky_relu     x if x > 0 else negative_slope * x                              ``F.leaky_relu``
elu            x if x > 0 else alpha * (exp(x) - 1)                            ``F.elu``
gelu           x * Phi(x) = x/2 * (1 + erf(x / sqrt 2))  (Hendrycks & Gimpel)  ``F.gelu``
gelu, "tanh"   x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))               ``F.gelu(approximate="tanh")``
=============  ==============================================================  =========================

At x = 0, where ReLU-like functions have no derivative, the backward passes use the
value PyTorch uses: 0 for ReLU, ``negative_slope`` for leaky ReLU, ``alpha`` for ELU.
"""
import math

import numpy as np
from scipy.special import erf

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_COEF = 0.044715  # Hendrycks & Gimpel (2016), eq. for the tanh approximation


def _check_input(x, name="x"):
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        got = type(x).__name__ + (f" of dtype {x.dtype}" if isinstance(x, np.ndarray) else "")
        raise TypeError(f"{name} must be a floating-point NumPy array; got {got}")


def _check_dout(dout, x):
    _check_input(dout, "dout")
    if dout.shape != x.shape:
        raise ValueError(f"dout must have the shape of the forward input {x.shape}; got {dout.shape}")


# --------------------------------------------------------------------------- sigmoid and tanh

def sigmoid_forward(x):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, computed without overflow.

    Args:
        x: float array of any shape.

    Returns:
        out: array shaped like ``x``, in (0, 1).
        cache: ``out`` (the derivative is written in terms of it).
    """
    _check_input(x)
    # exp of a negative number never overflows: use exp(-|x|) on both sides
    z = np.exp(-np.abs(x))  # same shape as x, in (0, 1]
    out = np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))
    return out, out


def sigmoid_backward(dout, cache):
    """``dx = dout * s * (1 - s)`` with ``s = sigmoid(x)``; at most 1/4, reached at x = 0.

    Args:
        dout: upstream gradient, shaped like the forward input.
        cache: from ``sigmoid_forward``.

    Returns:
        dx: shaped like ``dout``.
    """
    out = cache
    _check_dout(dout, out)
    return dout * out * (1.0 - out)


def tanh_forward(x):
    """Hyperbolic tangent.

    Args:
        x: float array of any shape.

    Returns:
        out: array shaped like ``x``, in (-1, 1).
        cache: ``out``.
    """
    _check_input(x)
    out = np.tanh(x)
    return out, out


def tanh_backward(dout, cache):
    """``dx = dout * (1 - tanh(x)^2)``; at most 1, reached at x = 0.

    Args:
        dout: upstream gradient, shaped like the forward input.
        cache: from ``tanh_forward``.

    Returns:
        dx: shaped like ``dout``.
    """
    out = cache
    _check_dout(dout, out)
    return dout * (1.0 - out**2)


# --------------------------------------------------------------------------- ReLU family

def relu_forward(x):
    """Rectified linear unit ``max(0, x)``.

    Args:
        x: float array of any shape.

    Returns:
        out: array shaped like ``x``.
        cache: ``x``.
    """
    _check_input(x)
    return np.maximum(x, 0.0), x


def relu_backward(dout, cache):
    """``dx = dout * [x > 0]``: no gradient at all where the unit is off (a "dead" unit never learns).

    Args:
        dout: upstream gradient, shaped like the forward input.
        cache: from ``relu_forward``.

    Returns:
        dx: shaped like ``dout``.
    """
    x = cache
    _check_dout(dout, x)
    return dout * (x > 0)


def leaky_relu_forward(x, negative_slope=0.01):
    """Leaky ReLU: ``x`` for x > 0, ``negative_slope * x`` otherwise (Maas et al., 2013).

    Args:
        x: float array of any shape.
        negative_slope: slope for negative inputs, a float >= 0 (PyTorch's default 0.01).

    Returns:
        out: array shaped like ``x``.
        cache: ``(x, negative_slope)``.
    """
    _check_input(x)
    if not isinstance(negative_slope, (int, float)) or isinstance(negative_slope, bool) or negative_slope < 0:
        raise ValueError(f"negative_slope must be a number >= 0; got {negative_slope!r}")
    return np.where(x > 0, x, negative_slope * x), (x, negative_slope)


def leaky_relu_backward(dout, cache):
    """``dx = dout`` where x > 0, ``negative_slope * dout`` elsewhere: never exactly zero when the slope is not.

    Args:
        dout: upstream gradient, shaped like the forward input.
        cache: from ``leaky_relu_forward``.

    Returns:
        dx: shaped like ``dout``.
    """
    x, negative_slope = cache
    _check_dout(dout, x)
    return np.where(x > 0, dout, negative_slope * dout)


def elu_forward(x, alpha=1.0):
    """Exponential linear unit: ``x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise (Clevert et al., 2016).

    Args:
        x: float array of any shape.
        alpha: the value ELU tends to for x -> -inf is ``-alpha``; a float > 0.

    Returns:
        out: array shaped like ``x``.
        cache: ``(x, out, alpha)``.
    """
    _check_input(x)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ValueError(f"alpha must be a number > 0; got {alpha!r}")
    # expm1 of min(x, 0): accurate near 0 and no overflow warning for large positive x
    out = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))
    return out, (x, out, alpha)


def elu_backward(dout, cache):
    """``dx = dout`` where x > 0, ``dout * alpha * exp(x) = dout * (out + alpha)`` elsewhere.

    Args:
        dout: upstream gradient, shaped like the forward input.
        cache: from ``elu_forward``.

    Returns:
        dx: shaped like ``dout``.
    """
    x, out, alpha = cache
    _check_dout(dout, x)
    return np.where(x > 0, dout, dout * (out + alpha))


# --------------------------------------------------------------------------- GELU

def gelu_forward(x, approximate="none"):
    """Gaussian error linear unit ``x * Phi(x)``, Phi the standard normal CDF (Hendrycks & Gimpel, 2016).

    Args:
        x: float array of any shape.
        approximate: ``"none"`` for the exact erf form ``x/2 * (1 + erf(x/sqrt(2)))``,
            ``"tanh"`` for ``x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))``
            (the names of ``torch.nn.functional.gelu``).

    Returns:
        out: array shaped like ``x``.
        cache: ``(x, approximate)``.
    """
    _check_input(x)
    if approximate == "none":
        out = 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    elif approximate == "tanh":
        out = 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_COEF * x**3)))
    else:
        raise ValueError(f"approximate must be 'none' or 'tanh'; got {approximate!r}")
    return out.astype(x.dtype, copy=False), (x, approximate)


def gelu_backward(dout, cache):
    """Derivative of GELU times ``dout``.

    Exact form: ``d/dx [x Phi(x)] = Phi(x) + x phi(x)``, phi the standard normal density.
    Tanh form, with ``u = sqrt(2/pi) (x + 0.044715 x^3)`` and ``t = tanh(u)``:
    ``0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)``.

    Args:
        dout: upstream gradient, shaped like the forward input.
        cache: from ``gelu_forward``.

    Returns:
        dx: shaped like ``dout``.
    """
    x, approximate = cache
    _check_dout(dout, x)
    if approximate == "none":
        cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi)
        local = cdf + x * pdf
    else:
        t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_COEF * x**3))
        local = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_COEF * x**2)
    return (dout * local).astype(dout.dtype, copy=False)
