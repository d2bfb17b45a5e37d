"""Fully connected (linear) layer and flatten in NumPy (introduced in ``notebooks/04_numpy_cnn.ipynb``).

A linear layer maps each row of a batch with one matrix product, as ``torch.nn.Linear``::

    out[n, o] = b[o] + sum_i x[n, i] * w[o, i]          i.e.  out = x @ w.T + b

Layout: PyTorch's, ``w`` (OUT, IN) and ``b`` (OUT,), so weights copy to and from
``nn.Linear`` unchanged. Shape letters: N batch, IN input features, OUT output features;
for flatten, N, C, H, W as everywhere else. The backward pass follows from the
product rule, one matrix product per gradient::

    dx = dout @ w        (N, IN)
    dw = dout.T @ x      (OUT, IN)
    db = sum_n dout[n]   (OUT,)

``dw`` and ``db`` are *sums* over the batch: when the loss is a mean over the batch, the
1/N is already inside ``dout`` (see ``losses.cross_entropy_backward``).

Each forward returns ``(out, cache)`` and each backward takes ``(dout, cache)``.
"""
import numpy as np


def _float_array(value, ndim, shape_text, name):
    if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
        got = type(value).__name__ + (f" of dtype {value.dtype}" if isinstance(value, np.ndarray) else "")
        raise TypeError(f"{name} must be a floating-point NumPy array of shape {shape_text}; got {got}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {shape_text}; got shape {value.shape}")
    return value


# --------------------------------------------------------------------------- linear

def linear_forward(x, w, b):
    """Affine map ``out = x @ w.T + b``, as ``torch.nn.functional.linear``.

    Args:
        x: input, float array (N, IN).
        w: weights, float array (OUT, IN) (PyTorch's ``nn.Linear.weight`` layout).
        b: biases, float array (OUT,).

    Returns:
        out: array (N, OUT).
        cache: ``(x, w)`` for ``linear_backward``.

    Raises:
        TypeError: an argument is not a floating-point NumPy array.
        ValueError: wrong number of dimensions, or IN / OUT do not match.
    """
    _float_array(x, 2, "(N, IN)", "x")
    _float_array(w, 2, "(OUT, IN)", "w")
    _float_array(b, 1, "(OUT,)", "b")
    N, IN = x.shape
    OUT, IN_w = w.shape
    if IN_w != IN:
        raise ValueError(f"w has {IN_w} input features (w.shape[1]) but x has {IN} (x.shape[1]); they must match")
    if b.shape != (OUT,):
        raise ValueError(f"b must have shape (OUT,) = ({OUT},), one bias per output; got {b.shape}")
    out = x @ w.T + b  # (N, OUT)
    return out, (x, w)


def linear_backward(dout, cache):
    """Backward pass of ``linear_forward``.

    Args:
        dout: upstream gradient, float array (N, OUT).
        cache: ``(x, w)`` from ``linear_forward``.

    Returns:
        dx: array (N, IN), ``dout @ w``.
        dw: array (OUT, IN), ``dout.T @ x`` (summed over the batch).
        db: array (OUT,), ``dout`` summed over the batch.
    """
    if not isinstance(cache, tuple) or len(cache) != 2:
        raise TypeError(f"cache must be the (x, w) pair returned by linear_forward; got {type(cache).__name__}")
    x, w = cache
    _float_array(dout, 2, "(N, OUT)", "dout")
    N, OUT = x.shape[0], w.shape[0]
    if dout.shape != (N, OUT):
        raise ValueError(f"dout must have the forward output's shape (N, OUT) = {(N, OUT)}; got {dout.shape}")
    dx = dout @ w  # (N, OUT) @ (OUT, IN) -> (N, IN)
    dw = dout.T @ x  # (OUT, N) @ (N, IN) -> (OUT, IN)
    db = dout.sum(axis=0)  # (OUT,)
    return dx, dw, db


# --------------------------------------------------------------------------- flatten

def flatten_forward(x):
    """Flatten every example to one row, as ``torch.flatten(x, 1)`` (C-order: channel, then row, then column).

    Args:
        x: float array (N, ...), usually (N, C, H, W).

    Returns:
        out: array (N, C*H*W) (the product of all non-batch dimensions).
        cache: the input shape, for ``flatten_backward``.
    """
    _float_array(x, None, "(N, ...)", "x")
    if x.ndim < 1:
        raise ValueError(f"x must have a batch dimension (N, ...); got a scalar of shape {x.shape}")
    N = x.shape[0]
    return x.reshape(N, -1), x.shape  # (N, C*H*W)


def flatten_backward(dout, cache):
    """Backward pass of ``flatten_forward``: reshape the gradient back.

    Args:
        dout: upstream gradient, array (N, C*H*W).
        cache: the input shape from ``flatten_forward``.

    Returns:
        dx: array of the forward input's shape, e.g. (N, C, H, W).
    """
    x_shape = tuple(cache)
    _float_array(dout, 2, "(N, C*H*W)", "dout")
    expected = (x_shape[0], int(np.prod(x_shape[1:], dtype=np.int64)))
    if dout.shape != expected:
        raise ValueError(f"dout must have the forward output's shape {expected}; got {dout.shape}")
    return dout.reshape(x_shape)  # (N, C, H, W)
