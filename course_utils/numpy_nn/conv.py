"""2-D convolution in NumPy, forward and backward (introduced in ``notebooks/01_convolution.ipynb``).

Deep-learning "convolution" is cross-correlation (the kernel is not flipped), exactly
as ``torch.nn.functional.conv2d`` computes it::

    out[n, f, i, j] = b[f] + sum_{c, u, v} w[f, c, u, v] * x_pad[n, c, i*SH + u*DH, j*SW + v*DW]

where ``x_pad`` is ``x`` with ``PH`` rows of zeros above and below and ``PW`` columns of
zeros left and right. Along one axis the output length is::

    H_out = floor((H + 2*PH - DH*(KH - 1) - 1) / SH) + 1

Layout: NCHW for activations, PyTorch's (F, C, KH, KW) for weights, (F,) for the bias.
Shape letters: N batch, C input channels, H, W input height and width, F filters,
KH, KW kernel height and width, H_out, W_out output height and width; S stride,
P padding, D dilation.

Two versions of each pass, side by side (STYLE.md, guideline 7):

* ``conv2d_forward_naive`` / ``conv2d_backward_naive``: readable loops over every
  output position, the definition written down;
* ``conv2d_forward`` / ``conv2d_backward``: im2col. ``sliding_window_view`` gathers every
  receptive field into one matrix, one matrix product does the rest; the backward
  pass scatters the gradient back (col2im) with one vectorised add per kernel offset.

Each forward returns ``(out, cache)`` and each backward takes ``(dout, cache)``; the
caches of both versions are the same ``Conv2dCache``, so either backward accepts
either forward's cache.
"""
import numbers
from typing import NamedTuple, Optional, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Conv2dCache(NamedTuple):
    """What a forward pass keeps for its backward pass."""

    x: np.ndarray  # (N, C, H, W) the input, unpadded
    w: np.ndarray  # (F, C, KH, KW)
    b: np.ndarray  # (F,)
    stride: Tuple[int, int]  # (SH, SW)
    padding: Tuple[int, int]  # (PH, PW)
    dilation: Tuple[int, int]  # (DH, DW)
    cols: Optional[np.ndarray] = None  # (N*H_out*W_out, C*KH*KW) im2col matrix; None from the naive forward


# --------------------------------------------------------------------------- sizes and checks

def conv_output_size(n, k, stride=1, padding=0, dilation=1):
    """Output length of a convolution along one axis.

    Args:
        n: input length (H or W), an int >= 1.
        k: kernel length (KH or KW), an int >= 1.
        stride: step between two windows, an int >= 1.
        padding: zeros added on *each* side, an int >= 0.
        dilation: spacing between kernel taps, an int >= 1; the kernel then spans
            ``dilation * (k - 1) + 1`` inputs.

    Returns:
        ``floor((n + 2*padding - dilation*(k - 1) - 1) / stride) + 1``, an int >= 1.

    Raises:
        TypeError: an argument is not an int.
        ValueError: an argument is out of range, or the (dilated) kernel is larger
            than the padded input.
    """
    n = _int_at_least(n, 1, "input length n")
    k = _int_at_least(k, 1, "kernel length k")
    stride = _int_at_least(stride, 1, "stride")
    padding = _int_at_least(padding, 0, "padding")
    dilation = _int_at_least(dilation, 1, "dilation")
    span = dilation * (k - 1) + 1  # inputs covered by one dilated kernel
    if span > n + 2 * padding:
        raise ValueError(
            f"the kernel spans {span} inputs (k={k}, dilation={dilation}) but the padded input has only "
            f"{n + 2 * padding} (n={n}, padding={padding}); expected a kernel no larger than the padded input"
        )
    return (n + 2 * padding - span) // stride + 1


def _int_at_least(value, minimum, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value}")
    return int(value)


def _pair(value, minimum, name):
    """``(a, b)`` from an int or a pair of ints, each ``>= minimum``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width); got {value!r}")
        return (_int_at_least(value[0], minimum, f"{name}[0]"), _int_at_least(value[1], minimum, f"{name}[1]"))
    value = _int_at_least(value, minimum, name)
    return (value, value)


def _real_array(value, ndim, shape_text, name):
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of shape {shape_text}; got {type(value).__name__}")
    if value.dtype == bool or not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers (a float or int dtype); got dtype {value.dtype}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {shape_text}; got {value.ndim}, shape {value.shape}")
    return value


def _check_inputs(x, w, b, stride, padding, dilation):
    """Validate the arguments of a forward pass; return the output size and the pairs."""
    _real_array(x, 4, "(N, C, H, W)", "x")
    _real_array(w, 4, "(F, C, KH, KW)", "w")
    _real_array(b, 1, "(F,)", "b")
    N, C, H, W = x.shape
    F, C_w, KH, KW = w.shape
    if C_w != C:
        raise ValueError(f"w has {C_w} input channels (w.shape[1]) but x has {C} (x.shape[1]); they must match")
    if b.shape != (F,):
        raise ValueError(f"b must have shape (F,) = ({F},), one bias per filter; got {b.shape}")
    if 0 in x.shape or 0 in w.shape:
        raise ValueError(f"x and w must not be empty; got x {x.shape}, w {w.shape}")
    stride = _pair(stride, 1, "stride")
    padding = _pair(padding, 0, "padding")
    dilation = _pair(dilation, 1, "dilation")
    H_out = conv_output_size(H, KH, stride[0], padding[0], dilation[0])
    W_out = conv_output_size(W, KW, stride[1], padding[1], dilation[1])
    return H_out, W_out, stride, padding, dilation


def _check_dout(dout, cache):
    if not isinstance(cache, Conv2dCache):
        raise TypeError(f"cache must be the Conv2dCache returned by a conv2d forward pass; got {type(cache).__name__}")
    _real_array(dout, 4, "(N, F, H_out, W_out)", "dout")
    N, C, H, W = cache.x.shape
    F, _, KH, KW = cache.w.shape
    H_out = conv_output_size(H, KH, cache.stride[0], cache.padding[0], cache.dilation[0])
    W_out = conv_output_size(W, KW, cache.stride[1], cache.padding[1], cache.dilation[1])
    if dout.shape != (N, F, H_out, W_out):
        raise ValueError(f"dout must have the forward output's shape (N, F, H_out, W_out) = "
                         f"{(N, F, H_out, W_out)}; got {dout.shape}")
    return H_out, W_out


def _pad(x, padding):
    """Zero-pad the last two axes: (N, C, H, W) -> (N, C, H + 2*PH, W + 2*PW)."""
    PH, PW = padding
    return np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))


# --------------------------------------------------------------------------- naive loops

def conv2d_forward_naive(x, w, b, stride=1, padding=0, dilation=1):
    """2-D convolution (cross-correlation) with explicit loops, as ``torch.nn.functional.conv2d``.

    Args:
        x: input, array (N, C, H, W).
        w: filters, array (F, C, KH, KW).
        b: biases, array (F,).
        stride: int or pair (SH, SW), each >= 1.
        padding: int or pair (PH, PW), each >= 0; zeros added on both sides.
        dilation: int or pair (DH, DW), each >= 1.

    Returns:
        out: array (N, F, H_out, W_out) with
            H_out = floor((H + 2*PH - DH*(KH - 1) - 1) / SH) + 1, and W_out likewise.
        cache: ``Conv2dCache`` for ``conv2d_backward_naive`` (or ``conv2d_backward``).

    Raises:
        TypeError, ValueError: on arrays of the wrong type or number of dimensions,
            mismatched channels or bias, bad stride/padding/dilation, or a kernel
            larger than the padded input.
    """
    H_out, W_out, stride, padding, dilation = _check_inputs(x, w, b, stride, padding, dilation)
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    (SH, SW), (DH, DW) = stride, dilation
    x_pad = _pad(x, padding)  # (N, C, H + 2*PH, W + 2*PW)
    out = np.zeros((N, F, H_out, W_out), dtype=np.result_type(x, w, b))
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    # the receptive field of out[n, f, i, j]: every DH-th row from i*SH, KH of them
                    rows = slice(i * SH, i * SH + DH * (KH - 1) + 1, DH)
                    cols = slice(j * SW, j * SW + DW * (KW - 1) + 1, DW)
                    window = x_pad[n, :, rows, cols]  # (C, KH, KW)
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out, Conv2dCache(x, w, b, stride, padding, dilation)


def conv2d_backward_naive(dout, cache):
    """Backward pass of a 2-D convolution, with the same loops as the naive forward.

    Every output ``out[n, f, i, j]`` adds ``w[f] * window`` to itself, so it sends
    ``dout[n, f, i, j] * w[f]`` back to its window of ``x_pad`` and
    ``dout[n, f, i, j] * window`` to ``w[f]``; ``b[f]`` gets the sum of ``dout[:, f]``.

    Args:
        dout: upstream gradient, array (N, F, H_out, W_out).
        cache: the ``Conv2dCache`` returned by the forward pass.

    Returns:
        dx: array (N, C, H, W), gradient with respect to x.
        dw: array (F, C, KH, KW), gradient with respect to w.
        db: array (F,), gradient with respect to b.
    """
    H_out, W_out = _check_dout(dout, cache)
    x, w = cache.x, cache.w
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    (SH, SW), (PH, PW), (DH, DW) = cache.stride, cache.padding, cache.dilation
    x_pad = _pad(x, cache.padding)  # (N, C, H + 2*PH, W + 2*PW)
    dtype = np.result_type(dout, x, w, np.float32)
    dx_pad = np.zeros(x_pad.shape, dtype=dtype)  # (N, C, H + 2*PH, W + 2*PW)
    dw = np.zeros(w.shape, dtype=dtype)  # (F, C, KH, KW)
    db = dout.sum(axis=(0, 2, 3)).astype(dtype)  # (F,)
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    rows = slice(i * SH, i * SH + DH * (KH - 1) + 1, DH)
                    cols = slice(j * SW, j * SW + DW * (KW - 1) + 1, DW)
                    dw[f] += dout[n, f, i, j] * x_pad[n, :, rows, cols]  # (C, KH, KW)
                    dx_pad[n, :, rows, cols] += dout[n, f, i, j] * w[f]  # (C, KH, KW)
    dx = np.ascontiguousarray(dx_pad[:, :, PH:PH + H, PW:PW + W])  # (N, C, H, W): the padding's gradient is dropped
    return dx, dw, db


# --------------------------------------------------------------------------- vectorised (im2col)

def _im2col(x, kernel_size, stride, padding, dilation):
    """Every receptive field of ``x`` as one row of a matrix.

    Args:
        x: array (N, C, H, W).
        kernel_size: (KH, KW); stride, padding, dilation: pairs.

    Returns:
        array (N*H_out*W_out, C*KH*KW); row ``(n*H_out + i)*W_out + j`` holds the
        window of output position (i, j) of image n, in (C, KH, KW) order.
    """
    N, C, H, W = x.shape
    KH, KW = kernel_size
    (SH, SW), (DH, DW) = stride, dilation
    x_pad = _pad(x, padding)  # (N, C, Hp, Wp), Hp = H + 2*PH
    span = (DH * (KH - 1) + 1, DW * (KW - 1) + 1)  # extent of one dilated kernel
    # a view, no copy: one window of size `span` at every position of x_pad
    windows = sliding_window_view(x_pad, span, axis=(2, 3))  # (N, C, Hp-span_h+1, Wp-span_w+1, span_h, span_w)
    # keep every SH-th/SW-th window and every DH-th/DW-th tap: still a view
    windows = windows[:, :, ::SH, ::SW, ::DH, ::DW]  # (N, C, H_out, W_out, KH, KW)
    H_out, W_out = windows.shape[2], windows.shape[3]
    windows = windows.transpose(0, 2, 3, 1, 4, 5)  # (N, H_out, W_out, C, KH, KW)
    return windows.reshape(N * H_out * W_out, C * KH * KW)  # (N*H_out*W_out, C*KH*KW): the copy happens here


def conv2d_forward(x, w, b, stride=1, padding=0, dilation=1):
    """2-D convolution (cross-correlation), vectorised with im2col and one matrix product.

    Same arguments, result and errors as ``conv2d_forward_naive``:

    Args:
        x: input, array (N, C, H, W).
        w: filters, array (F, C, KH, KW).
        b: biases, array (F,).
        stride: int or pair (SH, SW), each >= 1.
        padding: int or pair (PH, PW), each >= 0; zeros added on both sides.
        dilation: int or pair (DH, DW), each >= 1.

    Returns:
        out: array (N, F, H_out, W_out) with
            H_out = floor((H + 2*PH - DH*(KH - 1) - 1) / SH) + 1, and W_out likewise.
        cache: ``Conv2dCache`` (holding the im2col matrix) for ``conv2d_backward``.
    """
    H_out, W_out, stride, padding, dilation = _check_inputs(x, w, b, stride, padding, dilation)
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    cols = _im2col(x, (KH, KW), stride, padding, dilation)  # (N*H_out*W_out, C*KH*KW)
    w_rows = w.reshape(F, C * KH * KW)  # (F, C*KH*KW)
    out = cols @ w_rows.T + b  # (N*H_out*W_out, F)
    out = out.reshape(N, H_out, W_out, F)  # (N, H_out, W_out, F)
    out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (N, F, H_out, W_out)
    return out, Conv2dCache(x, w, b, stride, padding, dilation, cols)


def conv2d_backward(dout, cache):
    """Backward pass of a 2-D convolution, vectorised (matrix products, then col2im).

    With ``cols`` the im2col matrix and ``out = cols @ w_rows.T + b``:
    ``dw_rows = dout_rows.T @ cols``, ``db = dout summed over N, H_out, W_out`` and
    ``dcols = dout_rows @ w_rows``; col2im then adds each column of ``dcols`` back to the
    input pixel it was copied from, one vectorised add per kernel offset (u, v).

    Args:
        dout: upstream gradient, array (N, F, H_out, W_out).
        cache: the ``Conv2dCache`` returned by the forward pass.

    Returns:
        dx: array (N, C, H, W), gradient with respect to x.
        dw: array (F, C, KH, KW), gradient with respect to w.
        db: array (F,), gradient with respect to b.
    """
    H_out, W_out = _check_dout(dout, cache)
    x, w = cache.x, cache.w
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    (SH, SW), (PH, PW), (DH, DW) = cache.stride, cache.padding, cache.dilation
    cols = cache.cols
    if cols is None:  # a cache from the naive forward
        cols = _im2col(x, (KH, KW), cache.stride, cache.padding, cache.dilation)  # (N*H_out*W_out, C*KH*KW)
    dtype = np.result_type(dout, x, w, np.float32)
    dout_rows = dout.transpose(0, 2, 3, 1).reshape(N * H_out * W_out, F).astype(dtype)  # (N*H_out*W_out, F)
    db = dout_rows.sum(axis=0)  # (F,)
    dw = (dout_rows.T @ cols).reshape(F, C, KH, KW)  # (F, C*KH*KW) -> (F, C, KH, KW)
    dcols = dout_rows @ w.reshape(F, C * KH * KW)  # (N*H_out*W_out, C*KH*KW)
    dcols = dcols.reshape(N, H_out, W_out, C, KH, KW)  # (N, H_out, W_out, C, KH, KW)
    # col2im: tap (u, v) of the window at (i, j) read x_pad[:, :, i*SH + u*DH, j*SW + v*DW];
    # for a fixed (u, v) those pixels are distinct, so a strided slice adds them all at once.
    dx_pad = np.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=dtype)  # (N, C, Hp, Wp)
    for u in range(KH):
        for v in range(KW):
            rows = slice(u * DH, u * DH + SH * (H_out - 1) + 1, SH)  # H_out rows
            columns = slice(v * DW, v * DW + SW * (W_out - 1) + 1, SW)  # W_out columns
            dx_pad[:, :, rows, columns] += dcols[:, :, :, :, u, v].transpose(0, 3, 1, 2)  # (N, C, H_out, W_out)
    dx = np.ascontiguousarray(dx_pad[:, :, PH:PH + H, PW:PW + W])  # (N, C, H, W): the padding's gradient is dropped
    return dx, dw, db
