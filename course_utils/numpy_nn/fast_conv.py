"""Fast 2-D convolution in pure NumPy: every kernel tap is a shifted window of one flat array.

The fast companion of ``course_utils.numpy_nn.conv`` (chapter 01, ``notebooks/01_convolution.ipynb``):
same arguments, same results as ``torch.nn.functional.conv2d``, no compiled code of its own.
Shape letters: N batch, C input channels, H, W input size, F filters, KH, KW kernel size,
H_out, W_out output size; S stride, P padding, D dilation; Hp = H + 2*PH, Wp = W + 2*PW.

Why im2col is slow
------------------
im2col copies every receptive field into a matrix with KH*KW times as many numbers as
the input (for a 3x3 kernel, 9 copies of every pixel), then runs one matrix product.
On a CPU the product itself is as fast as PyTorch's convolution; writing and reading the
big matrix (memory traffic) is what makes im2col 3-5 times slower.

The trick: shifted flat windows ("implicit GEMM by flat offset")
----------------------------------------------------------------
Pad the input and lay it out channels-first with everything else flattened into one long
axis, ``x_flat[c, m]`` with ``m = (n*Hp + y)*Wp + z`` (image n, padded row y, column z)::

    x_flat: (C, M),  M = N*Hp*Wp

For stride 1, output ``(n, i, j)`` at flat position ``m = (n*Hp + i)*Wp + j`` reads, for tap
``(u, v)`` of the kernel, the input at ``(n, i + u*DH, j + v*DW)``, which is flat position
``m + offset[u, v]`` with ``offset[u, v] = u*DH*Wp + v*DW``: the same offset for every output.
So tap (u, v) of all outputs at once is ``x_flat[:, offset : offset + M]``, a plain slice
of ``x_flat``, no copy::

    out_flat[:, m] = sum over taps (u, v) of  w[:, :, u, v] @ x_flat[:, m + offset[u, v]]
    #      (F, M)                             (F, C)        (C, M) shifted

Positions ``m`` whose column ``j >= W_out`` or row ``i >= H_out`` read across a row or
image border: they are garbage, computed and thrown away (for a 3x3 kernel, padding 1 on
32x32 images, 13% extra work). That is the price of one offset per tap for all outputs.

Blocks that stay in the cache
-----------------------------
Summing KH*KW products of (F, C) @ (C, M) as written above reads and writes the whole
(F, M) result KH*KW times, and each product is a short one (C terms). Instead the long
axis is cut into blocks of a few thousand positions; for one block the KH*KW windows
are stacked (one cheap contiguous copy each, into a buffer that stays in the CPU cache)
into ``cols`` of shape (KH*KW*C, block), and one matrix product
``cols.T @ w_stacked``, (block, KH*KW*C) @ (KH*KW*C, F), gives the block's output, one row
per position (``w_stacked[k*C + c, f] = w[f, c, u, v]`` for tap k = u*KW + v). The numbers
are those of im2col, but only one block of the big matrix ever exists.

The backward pass reuses the same machinery:

* ``db[f]`` = ``dout[:, f]`` summed;
* ``dw[:, :, u, v] = dout_flat @ (x_flat's window for tap (u, v)).T``, summed block by
  block with the same stacked windows: ``dw_stacked += cols @ dout_flat[:, block].T``
  (``dout_flat`` is ``dout`` spread onto the padded flat grid, zero at the garbage positions);
* ``dx`` is a transposed convolution: input position ``q`` receives
  ``w[:, :, u, v].T @ dout_flat[:, q - offset[u, v]]`` from every tap, i.e. the forward
  machinery again, with (F, C) weights per tap and negative offsets (made
  non-negative by putting ``max(offset)`` zeros in front of ``dout_flat``).

Strides above 1 break the single offset (output j reads input j*SW), so they take a
general path: the same channels-first im2col, built one tap at a time from strided views.

NumPy's matrix product calls its BLAS (OpenBLAS for the pip wheels), which uses every
core; run ``benchmarks/numpy_conv.py`` to compare with PyTorch on your machine.
"""
from typing import NamedTuple, Tuple

import numpy as np

# the argument checks are chapter 01's, so both versions refuse bad input with the same messages
from course_utils.numpy_nn.conv import _check_inputs, _real_array, conv_output_size

# Bytes of the per-block ``cols`` buffer: big enough for an efficient matrix product and
# few calls (each wakes the BLAS threads), small enough to stay in the last-level cache.
# On the benchmark layer (2-core CPU, shared and busy), 16 MB was the best or within noise
# of the best of 2 to 64 MB.
_BLOCK_BYTES = 16 * 2**20


class FastConv2dCache(NamedTuple):
    """What ``conv2d_forward_fast`` keeps for ``conv2d_backward_fast``."""

    x_flat: np.ndarray  # (C, N*Hp*Wp) the zero-padded input, channels first, in the compute dtype
    w: np.ndarray  # (F, C, KH, KW) in the compute dtype
    x_shape: Tuple[int, int, int, int]  # (N, C, H, W)
    stride: Tuple[int, int]  # (SH, SW)
    padding: Tuple[int, int]  # (PH, PW)
    dilation: Tuple[int, int]  # (DH, DW)


# --------------------------------------------------------------------------- checks

def _output_size(cache):
    N, C, H, W = cache.x_shape
    F, _, KH, KW = cache.w.shape
    H_out = conv_output_size(H, KH, cache.stride[0], cache.padding[0], cache.dilation[0])
    W_out = conv_output_size(W, KW, cache.stride[1], cache.padding[1], cache.dilation[1])
    return H_out, W_out


def _check_dout(dout, cache):
    if not isinstance(cache, FastConv2dCache):
        raise TypeError(
            f"cache must be the FastConv2dCache returned by conv2d_forward_fast; got {type(cache).__name__}"
        )
    _real_array(dout, 4, "(N, F, H_out, W_out)", "dout")
    N = cache.x_shape[0]
    F = cache.w.shape[0]
    H_out, W_out = _output_size(cache)
    if dout.shape != (N, F, H_out, W_out):
        raise ValueError(
            f"dout must have the forward output's shape (N, F, H_out, W_out) = {(N, F, H_out, W_out)}; "
            f"got {dout.shape}"
        )
    return H_out, W_out


# --------------------------------------------------------------------------- the flat layout

def _pad_flat(x, padding, dtype):
    """Zero-pad and flatten channels first: (N, C, H, W) -> (C, N*Hp*Wp)."""
    N, C, H, W = x.shape
    PH, PW = padding
    Hp, Wp = H + 2 * PH, W + 2 * PW
    x_flat = np.zeros((C, N * Hp * Wp), dtype=dtype)  # (C, M)
    grid = x_flat.reshape(C, N, Hp, Wp)  # (C, N, Hp, Wp), a view
    grid[:, :, PH:PH + H, PW:PW + W] = x.transpose(1, 0, 2, 3)  # (C, N, H, W)
    return x_flat


def _tap_offsets(kernel_size, dilation, Wp):
    """Flat offset of every kernel tap, in (u, v) row-major order: ``u*DH*Wp + v*DW``."""
    KH, KW = kernel_size
    DH, DW = dilation
    return [u * DH * Wp + v * DW for u in range(KH) for v in range(KW)]


def _shifted_windows(src, offsets, M):
    """Yield ``(start, stop, cols)`` block by block over the positions ``0 .. M - 1``.

    ``cols`` (K*B, stop - start) stacks the K shifted windows of the block:
    ``cols[k*B:(k+1)*B] = src[:, start + offsets[k] : stop + offsets[k]]``. It is one buffer
    reused for every block (about ``_BLOCK_BYTES``), so it stays in the CPU cache.

    Args:
        src: array (B, L) with ``L >= M + max(offsets)``.
        offsets: K non-negative ints.
        M: number of positions.
    """
    B = src.shape[0]
    K = len(offsets)
    block = max(256, _BLOCK_BYTES // (K * B * src.itemsize))  # positions per block
    block = min(block, M)
    cols = np.empty((K * B, block), dtype=src.dtype)  # (K*B, block)
    for start in range(0, M, block):
        stop = min(M, start + block)
        cols_block = cols[:, :stop - start]  # (K*B, stop - start)
        for k, offset in enumerate(offsets):
            # tap k of this block: a contiguous slice of every row of src
            cols_block[k * B:(k + 1) * B] = src[:, start + offset:stop + offset]  # (B, stop - start)
        yield start, stop, cols_block


def _shifted_matmul(w_stacked, src, offsets, out_rows):
    """``out_rows[m] = (the K windows of src at m, stacked) @ w_stacked`` for every row m.

    That is ``out_rows[m, :] = sum_k src[:, m + offsets[k]] @ w_stacked[k*B:(k+1)*B]``.
    Positions are the rows of the product, ``cols.T @ w_stacked`` (``cols.T`` is a view):
    OpenBLAS splits that shape between its threads with less waiting for each other than
    ``w_stacked.T @ cols``, which matters on a busy machine; the arithmetic is the same.

    Args:
        w_stacked: array (K*B, A): the K per-tap (B, A) weight matrices stacked.
        src: array (B, L) with ``L >= out_rows.shape[0] + max(offsets)``.
        offsets: K non-negative ints.
        out_rows: array (M, A), written in place (a C-contiguous slice).
    """
    for start, stop, cols in _shifted_windows(src, offsets, out_rows.shape[0]):
        np.matmul(cols.T, w_stacked, out=out_rows[start:stop])  # (stop - start, K*B) @ (K*B, A)


# --------------------------------------------------------------------------- forward

def conv2d_forward_fast(x, w, b, stride=1, padding=0, dilation=1):
    """2-D convolution (cross-correlation) as ``torch.nn.functional.conv2d``, fast, in NumPy.

    Stride 1 (any padding, dilation, kernel) uses shifted flat windows (see the module
    docstring); other strides use a channels-first im2col built one tap at a time.

    Args:
        x: input, array (N, C, H, W).
        w: filters, array (F, C, KH, KW).
        b: biases, array (F,).
        stride: int or pair (SH, SW), each >= 1.
        padding: int or pair (PH, PW), each >= 0; zeros added on both sides.
        dilation: int or pair (DH, DW), each >= 1.

    Returns:
        out: array (N, F, H_out, W_out) with
            H_out = floor((H + 2*PH - DH*(KH - 1) - 1) / SH) + 1, and W_out likewise;
            dtype float32 when x, w and b are float32 (or smaller), float64 when one is float64.
        cache: ``FastConv2dCache`` for ``conv2d_backward_fast``.

    Raises:
        TypeError: x, w or b is not a NumPy array of real numbers, or stride, padding,
            dilation is not an int or a pair of ints.
        ValueError: wrong number of dimensions, channels of x and w differ, b is not (F,),
            an empty array, a negative padding, a stride or dilation below 1, or a
            (dilated) kernel larger than the padded input.
    """
    H_out, W_out, stride, padding, dilation = _check_inputs(x, w, b, stride, padding, dilation)
    dtype = np.result_type(x, w, b, np.float32)
    w = w.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)
    x_flat = _pad_flat(x, padding, dtype)  # (C, M), M = N*Hp*Wp
    cache = FastConv2dCache(x_flat, w, x.shape, stride, padding, dilation)
    if stride == (1, 1):
        valid = _forward_flat(x_flat, cache, H_out, W_out)  # (N, F, H_out, W_out), a view
    else:
        valid = _forward_strided(x_flat, cache, H_out, W_out)  # (N, F, H_out, W_out), a view
    out = np.empty((x.shape[0], w.shape[0], H_out, W_out), dtype=dtype)  # (N, F, H_out, W_out)
    np.add(valid, b[:, None, None], out=out)  # copies to contiguous NCHW and adds the bias in one pass
    return out, cache


def _forward_flat(x_flat, cache, H_out, W_out):
    """Stride 1: the stacked shifted windows times the stacked weights, block by block.

    Returns the valid outputs as a view (N, F, H_out, W_out) of the (M, F) result.
    """
    N, C, H, W = cache.x_shape
    F, _, KH, KW = cache.w.shape
    (PH, PW), dilation = cache.padding, cache.dilation
    Hp, Wp = H + 2 * PH, W + 2 * PW
    M = N * Hp * Wp
    offsets = _tap_offsets((KH, KW), dilation, Wp)
    # row k*C + c holds w[:, c, u, v] for tap k = u*KW + v, matching the stacked windows
    w_stacked = cache.w.transpose(2, 3, 1, 0).reshape(KH * KW * C, F)  # (KH*KW*C, F)
    out_rows = np.empty((M, F), dtype=x_flat.dtype)  # (M, F)
    # the last max(offset) positions would read past the end; they are all garbage positions
    _shifted_matmul(w_stacked, x_flat, offsets, out_rows[:M - offsets[-1]])
    out_grid = out_rows.reshape(N, Hp, Wp, F)  # (N, Hp, Wp, F)
    return out_grid[:, :H_out, :W_out].transpose(0, 3, 1, 2)  # (N, F, H_out, W_out), a view


def _strided_cols(x_flat, cache, H_out, W_out):
    """Channels-first im2col for any stride: (C, M) -> (KH*KW*C, N*H_out*W_out)."""
    N, C, H, W = cache.x_shape
    F, _, KH, KW = cache.w.shape
    (SH, SW), (PH, PW), (DH, DW) = cache.stride, cache.padding, cache.dilation
    x_grid = x_flat.reshape(C, N, H + 2 * PH, W + 2 * PW)  # (C, N, Hp, Wp)
    cols = np.empty((KH * KW, C, N, H_out, W_out), dtype=x_flat.dtype)  # (KH*KW, C, N, H_out, W_out)
    for u in range(KH):
        for v in range(KW):
            rows = slice(u * DH, u * DH + SH * (H_out - 1) + 1, SH)  # H_out rows
            columns = slice(v * DW, v * DW + SW * (W_out - 1) + 1, SW)  # W_out columns
            cols[u * KW + v] = x_grid[:, :, rows, columns]  # (C, N, H_out, W_out)
    return cols.reshape(KH * KW * C, N * H_out * W_out)  # (KH*KW*C, N*H_out*W_out), no copy


def _forward_strided(x_flat, cache, H_out, W_out):
    """Any stride: one matrix product on the channels-first im2col; returns a view (N, F, H_out, W_out)."""
    N = cache.x_shape[0]
    F, C, KH, KW = cache.w.shape
    cols = _strided_cols(x_flat, cache, H_out, W_out)  # (KH*KW*C, N*H_out*W_out)
    w_stacked = cache.w.transpose(2, 3, 1, 0).reshape(KH * KW * C, F)  # (KH*KW*C, F)
    out_rows = cols.T @ w_stacked  # (N*H_out*W_out, F), positions as rows as in the flat path
    out_grid = out_rows.reshape(N, H_out, W_out, F)  # (N, H_out, W_out, F)
    return out_grid.transpose(0, 3, 1, 2)  # (N, F, H_out, W_out), a view


# --------------------------------------------------------------------------- backward

def conv2d_backward_fast(dout, cache):
    """Backward pass of ``conv2d_forward_fast``: the gradients of x, w and b.

    Args:
        dout: upstream gradient, array (N, F, H_out, W_out).
        cache: the ``FastConv2dCache`` returned by ``conv2d_forward_fast``.

    Returns:
        dx: array (N, C, H, W), gradient with respect to x.
        dw: array (F, C, KH, KW), gradient with respect to w.
        db: array (F,), gradient with respect to b.
        All three in the forward pass's compute dtype (float32 or float64).

    Raises:
        TypeError: cache is not a ``FastConv2dCache``, or dout is not a real array.
        ValueError: dout does not have the forward output's shape.
    """
    H_out, W_out = _check_dout(dout, cache)
    dout = dout.astype(cache.x_flat.dtype, copy=False)
    db = dout.sum(axis=(0, 2, 3))  # (F,)
    if cache.stride == (1, 1):
        dx, dw = _backward_flat(dout, cache, H_out, W_out)
    else:
        dx, dw = _backward_strided(dout, cache, H_out, W_out)
    return dx, dw, db


def _backward_flat(dout, cache, H_out, W_out):
    """Stride 1: dw from the stacked windows of x, dx as a transposed convolution on the flat grid."""
    N, C, H, W = cache.x_shape
    F, _, KH, KW = cache.w.shape
    (PH, PW), dilation = cache.padding, cache.dilation
    Hp, Wp = H + 2 * PH, W + 2 * PW
    M = N * Hp * Wp
    offsets = _tap_offsets((KH, KW), dilation, Wp)
    reach = offsets[-1]  # the largest offset
    x_flat = cache.x_flat  # (C, M)

    # dout on the padded flat grid, zero at garbage positions, after `reach` leading zeros
    dout_flat = np.zeros((F, reach + M), dtype=dout.dtype)  # (F, reach + M)
    dout_grid = dout_flat[:, reach:].reshape(F, N, Hp, Wp)  # (F, N, Hp, Wp), a view
    dout_grid[:, :, :H_out, :W_out] = dout.transpose(1, 0, 2, 3)  # (F, N, H_out, W_out)

    # dw = sum over positions m of dout_flat[:, m] (x's K windows at m)^T, block by block;
    # blocks keep each product short, which also keeps the BLAS threads from waiting on each other
    used = M - reach  # positions past this are garbage (zero in dout_flat)
    dout_used = dout_flat[:, reach:reach + used]  # (F, used)
    # (computed transposed, (KH*KW*C, F): the product shape OpenBLAS threads split best)
    dw_stacked = np.zeros((KH * KW * C, F), dtype=dout.dtype)  # (KH*KW*C, F)
    product = np.empty_like(dw_stacked)  # (KH*KW*C, F)
    for start, stop, cols in _shifted_windows(x_flat, offsets, used):
        np.matmul(cols, dout_used[:, start:stop].T, out=product)  # (KH*KW*C, stop - start) @ (stop - start, F)
        dw_stacked += product
    dw = dw_stacked.reshape(KH, KW, C, F).transpose(3, 2, 0, 1)  # (F, C, KH, KW), a view
    dw = np.ascontiguousarray(dw)  # (F, C, KH, KW)

    # dx_rows[q] = sum_k dout_flat[:, reach + q - offset_k] @ w[:, :, u, v]: the forward
    # machinery with (F, C) weights per tap and offsets reach - offset_k >= 0
    w_stacked_t = cache.w.transpose(2, 3, 0, 1).reshape(KH * KW * F, C)  # (KH*KW*F, C)
    dx_rows = np.empty((M, C), dtype=dout.dtype)  # (M, C)
    _shifted_matmul(w_stacked_t, dout_flat, [reach - offset for offset in offsets], dx_rows)
    dx_grid = dx_rows.reshape(N, Hp, Wp, C)  # (N, Hp, Wp, C)
    dx = dx_grid[:, PH:PH + H, PW:PW + W].transpose(0, 3, 1, 2)  # (N, C, H, W), a view
    return np.ascontiguousarray(dx), dw  # the padding's gradient is dropped


def _backward_strided(dout, cache, H_out, W_out):
    """Any stride: matrix products on the im2col matrix, then col2im one tap at a time."""
    N, C, H, W = cache.x_shape
    F, _, KH, KW = cache.w.shape
    (SH, SW), (PH, PW), (DH, DW) = cache.stride, cache.padding, cache.dilation
    cols = _strided_cols(cache.x_flat, cache, H_out, W_out)  # (KH*KW*C, N*H_out*W_out)
    dout_rows = dout.transpose(1, 0, 2, 3).reshape(F, N * H_out * W_out)  # (F, N*H_out*W_out)
    dw_taps = dout_rows @ cols.T  # (F, KH*KW*C)
    dw = np.ascontiguousarray(dw_taps.reshape(F, KH, KW, C).transpose(0, 3, 1, 2))  # (F, C, KH, KW)
    w_taps = cache.w.transpose(0, 2, 3, 1).reshape(F, KH * KW * C)  # (F, KH*KW*C)
    dcols = w_taps.T @ dout_rows  # (KH*KW*C, N*H_out*W_out)
    dcols = dcols.reshape(KH * KW, C, N, H_out, W_out)  # (KH*KW, C, N, H_out, W_out)
    dx_grid = np.zeros((C, N, H + 2 * PH, W + 2 * PW), dtype=dout.dtype)  # (C, N, Hp, Wp)
    for u in range(KH):
        for v in range(KW):
            # the pixels one tap reads are distinct, so a strided slice adds them all at once
            rows = slice(u * DH, u * DH + SH * (H_out - 1) + 1, SH)  # H_out rows
            columns = slice(v * DW, v * DW + SW * (W_out - 1) + 1, SW)  # W_out columns
            dx_grid[:, :, rows, columns] += dcols[u * KW + v]  # (C, N, H_out, W_out)
    dx = dx_grid[:, :, PH:PH + H, PW:PW + W].transpose(1, 0, 2, 3)  # (N, C, H, W), a view
    return np.ascontiguousarray(dx), dw  # the padding's gradient is dropped
