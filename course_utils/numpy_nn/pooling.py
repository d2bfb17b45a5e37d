"""Pooling layers in NumPy, NCHW (introduced in ``notebooks/02_pooling.ipynb``).

Every layer is a pair ``forward(x, ...) -> (out, cache)`` and ``backward(dout, cache) -> dx``.

Shapes: x (N, C, H, W) -> out (N, C, OH, OW), with, along each axis,

    OH = floor((H + 2 * padding - kernel) / stride) + 1

(``torch.nn.functional.max_pool2d``/``avg_pool2d`` with ``ceil_mode=False`` and no dilation).
``stride`` defaults to the kernel size (non-overlapping windows), as in PyTorch.

* Max pooling pads with ``-inf`` (a padded element never wins) and sends each output's
  gradient to ONE element of its window: the first maximum in row-major order inside the
  window, which is what ``np.argmax`` returns and what PyTorch's CPU kernel picks on ties.
  Where windows overlap, an input that wins several windows receives the sum of their gradients.
* Average pooling pads with zeros and, like PyTorch's default ``count_include_pad=True``,
  always divides by ``KH * KW``; with ``count_include_pad=False`` it divides by the number of
  real (non-padded) elements in each window.
* Global average pooling, (N, C, H, W) -> (N, C, 1, 1), is ``nn.AdaptiveAvgPool2d(1)``.
* Concat pooling, (N, C, H, W) -> (N, 2C, 1, 1), is global max pooling then global average
  pooling, concatenated along channels in that order (fastai's ``AdaptiveConcatPool2d``).
"""
from typing import NamedTuple, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from course_utils.numpy_nn.conv import _pair  # stride, padding and kernel size as (along H, along W), checked

__all__ = [
    "MaxPool2dCache",
    "AvgPool2dCache",
    "GlobalPoolCache",
    "pool_output_size",
    "max_pool2d_forward_naive",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "global_avg_pool_forward",
    "global_avg_pool_backward",
    "concat_pool_forward",
    "concat_pool_backward",
]




class MaxPool2dCache(NamedTuple):
    """What ``max_pool2d_forward`` keeps for its backward pass."""

    x_shape: Tuple[int, int, int, int]  # (N, C, H, W)
    padding: Tuple[int, int]  # (PH, PW)
    rows: np.ndarray  # (N, C, OH, OW) row of each window's winner, in the padded input
    cols: np.ndarray  # (N, C, OH, OW) column of each window's winner, in the padded input
    dtype: np.dtype  # dtype of x


class AvgPool2dCache(NamedTuple):
    """What ``avg_pool2d_forward`` keeps for its backward pass."""

    x_shape: Tuple[int, int, int, int]  # (N, C, H, W)
    kernel: Tuple[int, int]  # (KH, KW)
    stride: Tuple[int, int]  # (SH, SW)
    padding: Tuple[int, int]  # (PH, PW)
    divisor: np.ndarray  # (OH, OW) what each window's sum was divided by


class GlobalPoolCache(NamedTuple):
    """What ``global_avg_pool_forward`` and ``concat_pool_forward`` keep for their backward passes."""

    x_shape: Tuple[int, int, int, int]  # (N, C, H, W)
    winner: np.ndarray = None  # (N, C) flat index h*W + w of each channel's maximum; concat pooling only


# --------------------------------------------------------------------------- argument checking

def _check_input(x):
    """Raise unless ``x`` is a floating-point NumPy array of shape (N, C, H, W)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a NumPy array of shape (N, C, H, W); got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got {x.ndim} dimensions, shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must hold floating-point numbers (float32 or float64); got dtype {x.dtype}")
    if 0 in x.shape:
        raise ValueError(f"x must not be empty; got shape {x.shape}")


def _check_dout(dout, expected_shape):
    if not isinstance(dout, np.ndarray):
        raise TypeError(f"dout must be a NumPy array of shape {expected_shape}; got {type(dout).__name__}")
    if dout.shape != tuple(expected_shape):
        raise ValueError(f"dout has shape {dout.shape} but the forward output had shape {tuple(expected_shape)}")


def _check_cache(cache, kind, forward_name):
    if not isinstance(cache, kind):
        raise TypeError(f"cache must be the {kind.__name__} returned by {forward_name}; got {type(cache).__name__}")


def pool_output_size(n, kernel, stride, padding=0):
    """Output length along one axis: ``floor((n + 2 * padding - kernel) / stride) + 1``."""
    return (n + 2 * padding - kernel) // stride + 1


def _pool_geometry(x, kernel_size, stride, padding):
    """Validate the arguments of a 2-D pooling; return ((KH, KW), (SH, SW), (PH, PW), (OH, OW))."""
    _check_input(x)
    N, C, H, W = x.shape
    KH, KW = _pair(kernel_size, 1, "kernel_size")
    SH, SW = _pair(kernel_size if stride is None else stride, 1, "stride")
    PH, PW = _pair(padding, 0, "padding")
    # PyTorch's rule: a window may not lie entirely in the padding
    if PH > KH // 2 or PW > KW // 2:
        raise ValueError(
            f"padding must be at most half the kernel size (kernel {(KH, KW)} allows at most "
            f"{(KH // 2, KW // 2)}); got padding {(PH, PW)}"
        )
    OH, OW = pool_output_size(H, KH, SH, PH), pool_output_size(W, KW, SW, PW)
    if OH < 1 or OW < 1:
        raise ValueError(
            f"a {(KH, KW)} window with padding {(PH, PW)} does not fit an input of size {(H, W)}: "
            f"the output would be {(OH, OW)}"
        )
    return (KH, KW), (SH, SW), (PH, PW), (OH, OW)


def _windows(xp, kernel, stride, out_size):
    """Every pooling window of the padded input ``xp`` as a view: (N, C, OH, OW, KH, KW)."""
    (KH, KW), (SH, SW), (OH, OW) = kernel, stride, out_size
    windows = sliding_window_view(xp, (KH, KW), axis=(2, 3))  # (N, C, HP-KH+1, WP-KW+1, KH, KW)
    return windows[:, :, : SH * (OH - 1) + 1 : SH, : SW * (OW - 1) + 1 : SW]  # (N, C, OH, OW, KH, KW)


# --------------------------------------------------------------------------- max pooling

def max_pool2d_forward_naive(x, kernel_size, stride=None, padding=0):
    """Max pooling with explicit loops over the output; the readable version of ``max_pool2d_forward``.

    Args and returns as ``max_pool2d_forward``, except that it returns only ``out`` (N, C, OH, OW).
    """
    (KH, KW), (SH, SW), (PH, PW), (OH, OW) = _pool_geometry(x, kernel_size, stride, padding)
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)), constant_values=-np.inf)  # (N, C, H+2PH, W+2PW)
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    for i in range(OH):
        for j in range(OW):
            window = xp[:, :, i * SH : i * SH + KH, j * SW : j * SW + KW]  # (N, C, KH, KW)
            out[:, :, i, j] = window.max(axis=(2, 3))
    return out


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling, vectorised with ``sliding_window_view``.

    Args:
        x: float array (N, C, H, W).
        kernel_size: int or (KH, KW).
        stride: int or (SH, SW); ``None`` means the kernel size.
        padding: int or (PH, PW), at most half the kernel; padded elements are ``-inf``.

    Returns:
        out: array (N, C, OH, OW), ``OH = floor((H + 2 PH - KH) / SH) + 1`` (same for W).
        cache: a ``MaxPool2dCache``: the input shape, the padding and, for each output, the
            row and column (in the padded input) of the element that won.
    """
    kernel, stride, pad, out_size = _pool_geometry(x, kernel_size, stride, padding)
    N, C, H, W = x.shape
    (KH, KW), (SH, SW), (PH, PW), (OH, OW) = kernel, stride, pad, out_size
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)), constant_values=-np.inf)  # (N, C, H+2PH, W+2PW)
    windows = _windows(xp, kernel, stride, out_size).reshape(N, C, OH, OW, KH * KW)  # (N, C, OH, OW, KH*KW)
    # np.argmax returns the first maximum in row-major window order: PyTorch's choice on ties
    winner = windows.argmax(axis=-1)  # (N, C, OH, OW)
    out = np.take_along_axis(windows, winner[..., None], axis=-1)[..., 0]  # (N, C, OH, OW)
    rows = np.arange(OH)[:, None] * SH + winner // KW  # (N, C, OH, OW), row in the padded input
    cols = np.arange(OW)[None, :] * SW + winner % KW  # (N, C, OH, OW), column in the padded input
    cache = MaxPool2dCache(x.shape, (PH, PW), rows, cols, x.dtype)
    return out, cache


def max_pool2d_backward(dout, cache):
    """Backward pass of max pooling: each output's gradient goes to the one element that won.

    Args:
        dout: upstream gradient (N, C, OH, OW).
        cache: from ``max_pool2d_forward``.

    Returns:
        dx: array (N, C, H, W); zero everywhere except at winners, which receive the sum of
        ``dout`` over every window they won (windows overlap when stride < kernel).
    """
    _check_cache(cache, MaxPool2dCache, "max_pool2d_forward")
    N, C, H, W = cache.x_shape
    PH, PW = cache.padding
    rows, cols = cache.rows, cache.cols
    _check_dout(dout, rows.shape)
    dxp = np.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=np.result_type(dout.dtype, cache.dtype))
    n = np.arange(N)[:, None, None, None]  # (N, 1, 1, 1), broadcast against (N, C, OH, OW)
    c = np.arange(C)[None, :, None, None]  # (1, C, 1, 1)
    # np.add.at, not `dxp[...] += dout`: the same winner may appear in several windows
    np.add.at(dxp, (n, c, rows, cols), dout)
    return dxp[:, :, PH : PH + H, PW : PW + W]  # (N, C, H, W); -inf padding never wins, so nothing is lost


# --------------------------------------------------------------------------- average pooling

def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Average pooling.

    Args:
        x: float array (N, C, H, W).
        kernel_size: int or (KH, KW).
        stride: int or (SH, SW); ``None`` means the kernel size.
        padding: int or (PH, PW), at most half the kernel; padded elements are zeros.
        count_include_pad: divide by ``KH * KW`` (True, PyTorch's default) or by the number of
            real elements in each window (False).

    Returns:
        out: array (N, C, OH, OW), ``OH = floor((H + 2 PH - KH) / SH) + 1`` (same for W).
        cache: an ``AvgPool2dCache``: the input shape, the geometry and the divisor of each output (OH, OW).
    """
    kernel, stride, pad, out_size = _pool_geometry(x, kernel_size, stride, padding)
    N, C, H, W = x.shape
    (KH, KW), (PH, PW) = kernel, pad
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))  # (N, C, H+2PH, W+2PW)
    sums = _windows(xp, kernel, stride, out_size).sum(axis=(-2, -1))  # (N, C, OH, OW)
    if count_include_pad:
        divisor = np.full(out_size, KH * KW, dtype=x.dtype)  # (OH, OW)
    else:
        real = np.pad(np.ones((1, 1, H, W), dtype=x.dtype), ((0, 0), (0, 0), (PH, PH), (PW, PW)))  # (1, 1, HP, WP)
        divisor = _windows(real, kernel, stride, out_size).sum(axis=(-2, -1))[0, 0]  # (OH, OW)
    out = sums / divisor
    cache = AvgPool2dCache(x.shape, kernel, stride, pad, divisor)
    return out.astype(x.dtype, copy=False), cache


def avg_pool2d_backward(dout, cache):
    """Backward pass of average pooling: each output spreads ``dout / divisor`` over its window.

    Args:
        dout: upstream gradient (N, C, OH, OW).
        cache: from ``avg_pool2d_forward``.

    Returns:
        dx: array (N, C, H, W).
    """
    _check_cache(cache, AvgPool2dCache, "avg_pool2d_forward")
    N, C, H, W = cache.x_shape
    (KH, KW), (SH, SW), (PH, PW) = cache.kernel, cache.stride, cache.padding
    divisor = cache.divisor
    _check_dout(dout, (N, C) + divisor.shape)
    OH, OW = divisor.shape
    share = dout / divisor  # (N, C, OH, OW): what each element of a window receives
    dxp = np.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=share.dtype)
    # one strided slice per kernel offset (KH*KW slices) instead of one loop step per output
    for a in range(KH):
        for b in range(KW):
            dxp[:, :, a : a + SH * (OH - 1) + 1 : SH, b : b + SW * (OW - 1) + 1 : SW] += share
    return dxp[:, :, PH : PH + H, PW : PW + W]  # (N, C, H, W); gradient landing on padding is dropped


# --------------------------------------------------------------------------- global pooling

def global_avg_pool_forward(x):
    """Global average pooling (``nn.AdaptiveAvgPool2d(1)``): the mean of each channel.

    Args:
        x: float array (N, C, H, W), any H and W.

    Returns:
        out: array (N, C, 1, 1).
        cache: a ``GlobalPoolCache`` holding the input shape.
    """
    _check_input(x)
    out = x.mean(axis=(2, 3), keepdims=True)  # (N, C, 1, 1)
    return out, GlobalPoolCache(x.shape)


def global_avg_pool_backward(dout, cache):
    """Backward pass of global average pooling: every pixel gets ``dout / (H * W)``.

    Args:
        dout: upstream gradient (N, C, 1, 1).
        cache: from ``global_avg_pool_forward``.

    Returns:
        dx: array (N, C, H, W).
    """
    _check_cache(cache, GlobalPoolCache, "global_avg_pool_forward")
    N, C, H, W = cache.x_shape
    _check_dout(dout, (N, C, 1, 1))
    return np.broadcast_to(dout / (H * W), (N, C, H, W)).copy()  # (N, C, H, W)


def concat_pool_forward(x):
    """Concat pooling: global max and global average, concatenated along channels.

    Args:
        x: float array (N, C, H, W), any H and W.

    Returns:
        out: array (N, 2C, 1, 1); channels ``[:C]`` are the maxima, ``[C:]`` the means.
        cache: a ``GlobalPoolCache``: the input shape and, per channel, the flat index ``h * W + w``
            of the first maximum.
    """
    _check_input(x)
    N, C, H, W = x.shape
    flat = x.reshape(N, C, H * W)  # (N, C, H*W)
    winner = flat.argmax(axis=-1)  # (N, C), first maximum in row-major order, as PyTorch
    maxima = np.take_along_axis(flat, winner[..., None], axis=-1)  # (N, C, 1)
    means = flat.mean(axis=-1, keepdims=True)  # (N, C, 1)
    out = np.concatenate([maxima, means], axis=1)[..., None]  # (N, 2C, 1, 1)
    return out, GlobalPoolCache(x.shape, winner)


def concat_pool_backward(dout, cache):
    """Backward pass of concat pooling: the max half to each channel's winner, the mean half to every pixel.

    Args:
        dout: upstream gradient (N, 2C, 1, 1).
        cache: from ``concat_pool_forward``.

    Returns:
        dx: array (N, C, H, W).
    """
    _check_cache(cache, GlobalPoolCache, "concat_pool_forward")
    if cache.winner is None:
        raise ValueError("this cache comes from global_avg_pool_forward; concat_pool_backward needs concat_pool_forward's")
    N, C, H, W = cache.x_shape
    _check_dout(dout, (N, 2 * C, 1, 1))
    d_max = dout[:, :C, 0, 0]  # (N, C)
    d_mean = dout[:, C:, 0, 0]  # (N, C)
    dx = np.broadcast_to((d_mean / (H * W))[..., None], (N, C, H * W)).copy()  # (N, C, H*W)
    n, c = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")  # (N, C) each
    dx[n, c, cache.winner] += d_max
    return dx.reshape(N, C, H, W)  # (N, C, H, W)
