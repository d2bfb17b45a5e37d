"""Fast 2-D convolution in pure NumPy: im2col in the matrix product's own layout, one cache-sized block at a time.

The fast companion of ``course_utils.numpy_nn.conv`` (chapter 01, ``notebooks/01_convolution.ipynb``):
same arguments, same results as ``torch.nn.functional.conv2d``, no compiled code of its own.
Shape letters: N batch, C input channels, H, W input size, F filters, KH, KW kernel size,
H_out, W_out output size; S stride, P padding, D dilation; Hp = H + 2*PH, Wp = W + 2*PW.

Why the plain im2col is slow
----------------------------
im2col copies every receptive field into a matrix with KH*KW times as many numbers as
the input (for a 3x3 kernel, 9 copies of every pixel), then runs one matrix product.
Built with ``sliding_window_view`` on NCHW data, the copy gathers runs of KW numbers at a
time, writes the whole big matrix to memory, and the product reads it back: memory traffic,
not arithmetic, makes it 3-5 times slower than the product alone.

What this version does instead
------------------------------
1. The padded input is stored **channels last**, ``x_pad[n, y, z, c]`` (N, Hp, Wp, C), in a
   buffer whose border is zero. For one output position (n, i, j) and one kernel row u, the
   KW taps of all C channels, ``x_pad[n, i*SH + u*DH, j*SW + v*DW, :]`` for v = 0 .. KW-1,
   are then **one contiguous run** of KW*C numbers when DW = 1 (for 3x3 and C = 64: 192
   numbers), so the whole im2col matrix is a single strided view of ``x_pad``
   (``np.lib.stride_tricks.as_strided``, shape (N, H_out, W_out, KH, KW*C), no copy)
   and copying it moves long runs, at the speed of a plain memory copy.
2. The copy goes into ``cols`` of shape (positions, KH*KW*C), C-contiguous: exactly the
   layout in which NumPy's BLAS multiplies fastest, ``cols @ w_mat`` with
   ``w_mat[(u*KW + v)*C + c, f] = w[f, c, u, v]``, (positions, KH*KW*C) @ (KH*KW*C, F).
   On this course's CPU the other orientations of the same product
   (``w_mat.T @ cols.T``, a transposed ``cols``) take 1.3-1.4 times as long.
3. The positions are cut into **blocks** of whole images (or rows of one image) whose
   ``cols`` holds at most ``_BLOCK_BYTES``: the big matrix never exists at once, and few
   blocks keep the number of matrix-product calls (each one wakes the BLAS threads) small.
4. The product's rows are channels-last outputs (position, F); each block is turned back
   into NCHW, bias added, with one copy into the returned array, in channel groups small
   enough for the cache (``_copy_channels_first``).

The backward pass reuses the same machinery:

* ``db[f]`` = ``dout[:, f]`` summed;
* for stride 1, ``dx`` is a convolution of ``dout`` (zero-padded by D*(K-1), channels last)
  with the kernel flipped and its F and C swapped: the forward machinery again, one product
  ``dcols @ w_flip``, (positions, KH*KW*F) @ (KH*KW*F, C), per block. The same ``dcols``
  blocks give ``dw`` as well, ``dw_flip += dcols.T @ x_rows`` with ``x_rows`` (positions, C)
  the channels-last input (unpadded): one im2col copy for both gradients;
* for other strides, ``dw_mat += cols.T @ dout_rows`` on the forward's ``cols`` blocks, and
  ``dcols = dout_rows @ w_mat.T`` put back by col2im (one strided add per kernel tap, as
  chapter 01's ``conv2d_backward``).

A workspace (optional)
----------------------
Each call allocates its buffers (the padded input, ``cols``, ...). A training loop calling
one layer again and again can pass a ``Conv2dWorkspace`` made once for that layer's shapes:
the buffers are then reused (on a virtual machine a fresh large array costs a page fault per
4 KiB it touches). Nothing is kept between calls otherwise. The padded input lives in the
workspace and the forward's cache points at it, so a cache is only good until the next
forward call with the same workspace; ``conv2d_backward_fast`` refuses a cache whose input was
overwritten, with a message. One workspace per layer.

NumPy's matrix product calls its BLAS (OpenBLAS for the pip wheels), which uses every
core; run ``benchmarks/numpy_conv.py`` to compare with the matrix product alone and with PyTorch.
"""
from typing import NamedTuple, Optional, Tuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

# the argument checks are chapter 01's, so both versions refuse bad input with the same messages
from course_utils.numpy_nn.conv import _check_inputs, _real_array, conv_output_size

# Bytes of the per-block ``cols`` buffer. Smaller blocks stay in the cache, but each block is
# one matrix-product call, which wakes and synchronises the BLAS threads: on the course's
# shared 2-core machine blocks of 2-4 MB made the products 3-10 times slower, and 24-32 MB
# blocks (3 blocks of 10-11 images for the benchmark layer) were as fast as one product.
_BLOCK_BYTES = 32 * 2**20

# Channels copied together when switching between NCHW and NHWC (see ``_copy_channels_last``):
# measured on the benchmark layer, 8 channels at a time was the fastest of 4 to 64 into
# channels last, and all 64 at once the fastest back into channels first.
_GROUP_TO_LAST = 8
_GROUP_TO_FIRST = 64


class Conv2dWorkspace:
    """Buffers reused by ``conv2d_forward_fast`` and ``conv2d_backward_fast`` for one layer's shapes.

    Make one per layer and pass it to both passes (``workspace=``); calls with other
    shapes, settings or dtype are refused with a ``ValueError``. A forward's cache is good
    until the next forward call with the same workspace (the padded input lives here).

    Args:
        x_shape: (N, C, H, W) of the input.
        w_shape: (F, C, KH, KW) of the filters.
        stride, padding, dilation: as in ``conv2d_forward_fast``.
        dtype: the compute dtype, float32 (default) or float64: ``np.result_type(x, w, b,
            np.float32)`` of the arrays the layer will get.

    Raises:
        TypeError, ValueError: the shapes or settings are not a valid convolution (the
            messages of ``conv2d_forward_fast``), or dtype is not float32 or float64.
    """

    def __init__(self, x_shape, w_shape, stride=1, padding=0, dilation=1, dtype=np.float32):
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64 (the compute dtype); got {dtype}")
        x_shape, w_shape = _shape_tuple(x_shape, "x_shape"), _shape_tuple(w_shape, "w_shape")
        # zero-stride stand-ins: the same checks as a real call, without allocating the arrays
        x, w, b = (np.broadcast_to(np.zeros((), dtype), shape) for shape in (x_shape, w_shape, w_shape[:1]))
        _, _, stride, padding, dilation = _check_inputs(x, w, b, stride, padding, dilation)
        self.key = (x_shape, w_shape, stride, padding, dilation, dtype)
        self.generation = 0  # forward calls so far; a cache remembers the one that made it
        self._arrays = {}

    def __repr__(self):
        x_shape, w_shape, stride, padding, dilation, dtype = self.key
        return (f"Conv2dWorkspace(x_shape={x_shape}, w_shape={w_shape}, stride={stride}, "
                f"padding={padding}, dilation={dilation}, dtype={dtype.name})")

    def check(self, key):
        """Raise ``ValueError`` unless ``key`` = (x_shape, w_shape, stride, padding, dilation, dtype) is ours."""
        if key != self.key:
            names = ("x shape", "w shape", "stride", "padding", "dilation", "dtype")
            differ = ", ".join(f"{name} {mine} (this call: {theirs})"
                               for name, mine, theirs in zip(names, self.key, key) if mine != theirs)
            raise ValueError(f"the workspace was made for another layer: {differ}; make a Conv2dWorkspace "
                             f"per layer with that layer's shapes, settings and dtype (or pass workspace=None)")

    def array(self, name, shape, zero_border=False):
        """The buffer ``name`` of ``shape`` (uninitialised, or all zeros when first made with ``zero_border``)."""
        array = self._arrays.get(name)
        if array is None or array.shape != shape:
            make = np.zeros if zero_border else np.empty
            array = self._arrays[name] = make(shape, dtype=self.key[-1])
        return array


class FastConv2dCache(NamedTuple):
    """What ``conv2d_forward_fast`` keeps for ``conv2d_backward_fast``."""

    x_pad: np.ndarray  # (N, Hp, Wp, C) the zero-padded input, channels last, in the compute dtype
    w: np.ndarray  # (F, C, KH, KW) in the compute dtype
    x_shape: Tuple[int, int, int, int]  # (N, C, H, W)
    stride: Tuple[int, int]  # (SH, SW)
    padding: Tuple[int, int]  # (PH, PW)
    dilation: Tuple[int, int]  # (DH, DW)
    workspace: Optional[Conv2dWorkspace] = None  # where x_pad lives, if the forward got one
    generation: int = 0  # the workspace's forward call that wrote x_pad


# --------------------------------------------------------------------------- checks

def _shape_tuple(shape, name):
    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise TypeError(f"{name} must be a tuple of 4 ints; got {shape!r}")
    return tuple(int(size) for size in shape)


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
    if cache.workspace is not None and cache.workspace.generation != cache.generation:
        raise ValueError(
            "this cache's padded input lives in its workspace, and a later conv2d_forward_fast call with the "
            f"same workspace ({cache.workspace!r}) has overwritten it; use one workspace per layer and call "
            "the backward pass before the next forward pass of that layer"
        )
    return H_out, W_out


def _workspace(workspace, key):
    """The caller's workspace, checked against this call, or a fresh one for this call only."""
    if workspace is None:
        fresh = Conv2dWorkspace.__new__(Conv2dWorkspace)  # the call's arguments are already checked
        fresh.key, fresh.generation, fresh._arrays = key, 0, {}
        return fresh
    if not isinstance(workspace, Conv2dWorkspace):
        raise TypeError(f"workspace must be a Conv2dWorkspace or None; got {type(workspace).__name__}")
    workspace.check(key)
    return workspace


# --------------------------------------------------------------------------- layouts and windows

def _copy_channels_last(dst, src):
    """``dst[n, y, z, c] = src[n, c, y, z]``: (N, C, H, W) into an (N, H, W, C) view.

    One image and ``_GROUP_TO_LAST`` channels at a time: the group's rows are read in order
    and written in short runs while both stay in the cache (a single ``copyto`` of the whole
    transposed array took 1.7 times as long on the benchmark layer).
    """
    N, C = src.shape[:2]
    for n in range(N):
        for c0 in range(0, C, _GROUP_TO_LAST):
            c1 = min(C, c0 + _GROUP_TO_LAST)
            np.copyto(dst[n, :, :, c0:c1], src[n, c0:c1].transpose(1, 2, 0))  # (H, W, c1 - c0)


def _copy_channels_first(dst, src, bias=None):
    """``dst[n, c, y, z] = src[n, y, z, c] (+ bias[c])``: (N, H, W, C) into an (N, C, H, W) view."""
    N, C = dst.shape[:2]
    for n in range(N):
        for c0 in range(0, C, _GROUP_TO_FIRST):
            c1 = min(C, c0 + _GROUP_TO_FIRST)
            group = src[n, :, :, c0:c1].transpose(2, 0, 1)  # (c1 - c0, H, W), a view
            if bias is None:
                np.copyto(dst[n, c0:c1], group)
            else:
                np.add(group, bias[c0:c1, None, None], out=dst[n, c0:c1])


def _windows(src, origin, out_size, kernel_size, stride, dilation):
    """The im2col matrix of ``src`` as a strided view, no copy.

    ``view[n, i, j, u, v*C + c] = src[n, y0 + i*SH + u*DH, z0 + j*SW + v*DW, c]`` for
    ``(y0, z0) = origin``: shape (N, H_out, W_out, KH, KW*C) when DW = 1 (the KW taps of a row
    are adjacent in memory), else (N, H_out, W_out, KH, KW, C). Either way, copied into a
    C-contiguous array and reshaped to (N*H_out*W_out, KH*KW*C) it is the im2col matrix with
    columns in (u, v, c) order.

    Args:
        src: C-contiguous array (N, Hs, Ws, C), channels last, large enough for every window.
    """
    N, _, _, C = src.shape
    (y0, z0), (H_out, W_out), (KH, KW) = origin, out_size, kernel_size
    (SH, SW), (DH, DW) = stride, dilation
    sN, sY, sZ, sC = src.strides
    base = src[:, y0:, z0:]  # (N, Hs - y0, Ws - z0, C), a view with src's strides
    if DW == 1:
        return as_strided(base, (N, H_out, W_out, KH, KW * C), (sN, sY * SH, sZ * SW, sY * DH, sC), writeable=False)
    return as_strided(base, (N, H_out, W_out, KH, KW, C), (sN, sY * SH, sZ * SW, sY * DH, sZ * DW, sC),
                      writeable=False)


def _blocks(N, H_out, row_bytes):
    """Split the output rows (n, i) into blocks of about ``_BLOCK_BYTES`` of ``cols`` each.

    Whole images when one fits (``row_bytes`` is the ``cols`` size of one output row),
    spread evenly over the fewest blocks, else rows of one image.

    Returns:
        (rows, blocks): the most output rows a block holds, and a list of
        ``(n0, n1, i0, i1)`` (images n0 .. n1-1, output rows i0 .. i1-1).
    """
    rows = max(1, _BLOCK_BYTES // row_bytes)  # output rows (n, i) per block at most
    if rows >= H_out:
        count = -(-N // (rows // H_out))  # fewest blocks of whole images
        images = -(-N // count)  # images per block, spread evenly
        return images * H_out, [(n0, min(N, n0 + images), 0, H_out) for n0 in range(0, N, images)]
    return rows, [(n, n + 1, i0, min(H_out, i0 + rows)) for n in range(N) for i0 in range(0, H_out, rows)]


def _gather(windows, block, cols_buffer):
    """Copy one block of the window view into ``cols_buffer``; return it as (positions, KH*KW*C)."""
    n0, n1, i0, i1 = block
    part = windows[n0:n1, i0:i1]  # (n1 - n0, i1 - i0, W_out, KH, KW*C) or (..., KH, KW, C), a view
    count = part.shape[0] * part.shape[1] * part.shape[2]
    cols = cols_buffer[:count]  # (count, KH*KW*C)
    np.copyto(cols.reshape(part.shape), part)  # a view of cols in the window's shape
    return cols


def _block_rows(rows, block, W_out):
    """(count, A) rows of a block as (n1 - n0, i1 - i0, W_out, A), a view."""
    n0, n1, i0, i1 = block
    return rows.reshape(n1 - n0, i1 - i0, W_out, rows.shape[1])


# --------------------------------------------------------------------------- forward

def conv2d_forward_fast(x, w, b, stride=1, padding=0, dilation=1, workspace=None):
    """2-D convolution (cross-correlation) as ``torch.nn.functional.conv2d``, fast, in NumPy.

    Blocks of a channels-last im2col matrix, each multiplied by the filters in one matrix
    product (see the module docstring); any stride, padding and dilation.

    Args:
        x: input, array (N, C, H, W).
        w: filters, array (F, C, KH, KW).
        b: biases, array (F,).
        stride: int or pair (SH, SW), each >= 1.
        padding: int or pair (PH, PW), each >= 0; zeros added on both sides.
        dilation: int or pair (DH, DW), each >= 1.
        workspace: ``None`` (buffers allocated for this call), or a ``Conv2dWorkspace`` made
            for these shapes, settings and dtype, whose buffers are reused.

    Returns:
        out: C-contiguous array (N, F, H_out, W_out) with
            H_out = floor((H + 2*PH - DH*(KH - 1) - 1) / SH) + 1, and W_out likewise;
            dtype float32 when x, w and b are float32 (or smaller), float64 when one is float64.
        cache: ``FastConv2dCache`` for ``conv2d_backward_fast``.

    Raises:
        TypeError: x, w or b is not a NumPy array of real numbers, stride, padding,
            dilation is not an int or a pair of ints, or workspace is not a ``Conv2dWorkspace``.
        ValueError: wrong number of dimensions, channels of x and w differ, b is not (F,),
            an empty array, a negative padding, a stride or dilation below 1, a (dilated)
            kernel larger than the padded input, or a workspace made for another layer.
    """
    H_out, W_out, stride, padding, dilation = _check_inputs(x, w, b, stride, padding, dilation)
    dtype = np.result_type(x, w, b, np.float32)
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    (PH, PW) = padding
    work = _workspace(workspace, (x.shape, w.shape, stride, padding, dilation, dtype))
    w = w.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)

    x_pad = work.array("x_pad", (N, H + 2 * PH, W + 2 * PW, C), zero_border=True)  # (N, Hp, Wp, C)
    _copy_channels_last(x_pad[:, PH:PH + H, PW:PW + W], x)  # only the interior is written: the border stays 0
    # row (u*KW + v)*C + c holds w[:, c, u, v], matching the window's column order
    w_mat = w.transpose(2, 3, 1, 0).reshape(KH * KW * C, F)  # (KH*KW*C, F), a copy
    windows = _windows(x_pad, (0, 0), (H_out, W_out), (KH, KW), stride, dilation)  # (N, H_out, W_out, KH, ...)

    capacity, blocks = _blocks(N, H_out, W_out * KH * KW * C * x_pad.itemsize)
    cols_buffer = work.array("cols", (capacity * W_out, KH * KW * C))  # (positions, KH*KW*C)
    rows_buffer = work.array("out_rows", (capacity * W_out, F))  # (positions, F)
    out = np.empty((N, F, H_out, W_out), dtype=dtype)  # (N, F, H_out, W_out)
    for block in blocks:
        cols = _gather(windows, block, cols_buffer)  # (count, KH*KW*C)
        rows = np.matmul(cols, w_mat, out=rows_buffer[:len(cols)])  # (count, F), channels-last outputs
        n0, n1, i0, i1 = block
        _copy_channels_first(out[n0:n1, :, i0:i1], _block_rows(rows, block, W_out), bias=b)

    work.generation += 1
    cache = FastConv2dCache(x_pad, w, x.shape, stride, padding, dilation, workspace, work.generation)
    return out, cache


# --------------------------------------------------------------------------- backward

def conv2d_backward_fast(dout, cache, workspace=None):
    """Backward pass of ``conv2d_forward_fast``: the gradients of x, w and b.

    Args:
        dout: upstream gradient, array (N, F, H_out, W_out).
        cache: the ``FastConv2dCache`` returned by ``conv2d_forward_fast``.
        workspace: ``None``, or the layer's ``Conv2dWorkspace`` (the one its forward got, or
            another made for the same shapes), whose buffers are reused.

    Returns:
        dx: C-contiguous array (N, C, H, W), gradient with respect to x.
        dw: C-contiguous array (F, C, KH, KW), gradient with respect to w.
        db: array (F,), gradient with respect to b.
        All three in the forward pass's compute dtype (float32 or float64).

    Raises:
        TypeError: cache is not a ``FastConv2dCache``, dout is not a real array, or
            workspace is not a ``Conv2dWorkspace``.
        ValueError: dout does not have the forward output's shape, the workspace was made
            for another layer, or a later forward call with the cache's workspace has
            overwritten the cache's input.
    """
    _check_dout(dout, cache)
    dtype = cache.x_pad.dtype
    work = _workspace(workspace, (cache.x_shape, cache.w.shape, cache.stride, cache.padding, cache.dilation, dtype))
    db = dout.sum(axis=(0, 2, 3), dtype=dtype)  # (F,)
    if cache.stride == (1, 1):
        dx, dw = _backward_transposed(dout, cache, work)
    else:
        dx, dw = _backward_col2im(dout, cache, work)
    return dx, dw, db


def _backward_transposed(dout, cache, work):
    """Stride 1: one im2col of ``dout`` gives both dx and dw.

    dx is ``dout``, zero-padded by Q = D*(K - 1) into ``dout_pad``, convolved with the kernel
    flipped and its F and C swapped::

        dx[n, c, y, z] = sum_{u, v, f} dout_pad[n, y + PH + u*DH, z + PW + v*DW, f] * w[f, c, KH-1-u, KW-1-v]

    so with ``dcols`` the im2col of ``dout_pad`` at origin (PH, PW) (one row per input
    position (n, y, z), columns (u, v, f)), ``dx_rows = dcols @ w_flip``. The same ``dcols``
    gives dw: ``dw[f, c, KH-1-u, KW-1-v] = sum over positions of dcols[:, (u, v, f)] * x_rows[:, c]``,
    i.e. ``dw_flip = dcols.T @ x_rows``, (KH*KW*F, positions) @ (positions, C), the positions
    where x_pad is padding contributing nothing.
    """
    N, C, H, W = cache.x_shape
    F, _, KH, KW = cache.w.shape
    (PH, PW), (DH, DW) = cache.padding, cache.dilation
    _, _, H_out, W_out = dout.shape
    QH, QW = DH * (KH - 1), DW * (KW - 1)  # zeros each side: every window that touches dout
    dout_pad = work.array("dout_pad", (N, H_out + 2 * QH, W_out + 2 * QW, F), zero_border=True)
    _copy_channels_last(dout_pad[:, QH:QH + H_out, QW:QW + W_out], dout)  # the border stays 0
    # row (u*KW + v)*F + f holds w[f, :, KH-1-u, KW-1-v]
    w_flip = cache.w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(KH * KW * F, C)  # (KH*KW*F, C), a copy
    windows = _windows(dout_pad, (PH, PW), (H, W), (KH, KW), (1, 1), (DH, DW))  # (N, H, W, KH, ...), a view
    capacity, blocks = _blocks(N, H, W * KH * KW * F * dout_pad.itemsize)
    cols_buffer = work.array("dx_cols", (capacity * W, KH * KW * F))  # (positions, KH*KW*F)
    rows_buffer = work.array("dx_rows", (capacity * W, C))  # (positions, C)
    x_rows = work.array("x_rows", (N, H, W, C))  # (N, H, W, C): x channels last, contiguous
    np.copyto(x_rows, cache.x_pad[:, PH:PH + H, PW:PW + W])  # runs of W*C numbers
    x_rows = x_rows.reshape(N * H * W, C)  # (N*H*W, C), a view
    dw_flip = np.zeros((KH * KW * F, C), dtype=dout_pad.dtype)  # (KH*KW*F, C), rows in (u, v, f) order
    product = work.array("dw_product", (KH * KW * F, C))  # (KH*KW*F, C)
    dx = np.empty((N, C, H, W), dtype=dout_pad.dtype)  # (N, C, H, W)
    for block in blocks:
        dcols = _gather(windows, block, cols_buffer)  # (count, KH*KW*F)
        rows = np.matmul(dcols, w_flip, out=rows_buffer[:len(dcols)])  # (count, C)
        n0, n1, i0, i1 = block
        _copy_channels_first(dx[n0:n1, :, i0:i1], _block_rows(rows, block, W))
        first = (n0 * H + i0) * W  # the block's first position (n0, i0, 0)
        np.matmul(dcols.T, x_rows[first:first + len(dcols)], out=product)  # (KH*KW*F, count) @ (count, C)
        dw_flip += product
    dw = dw_flip.reshape(KH, KW, F, C)[::-1, ::-1].transpose(2, 3, 0, 1)  # (F, C, KH, KW), a view
    return dx, np.ascontiguousarray(dw)


def _backward_col2im(dout, cache, work):
    """Any stride: dw from the forward's im2col blocks, dx by ``dcols = dout_rows @ w_rows`` and col2im.

    ``dw_mat += cols.T @ dout_rows`` block by block; ``dcols`` (positions, KH*KW*C) is added
    back onto the padded input, one strided add per kernel tap (the pixels one tap reads are
    distinct, so a slice adds them all at once), as chapter 01's ``conv2d_backward``.
    """
    N, C, H, W = cache.x_shape
    F, _, KH, KW = cache.w.shape
    (SH, SW), (PH, PW), (DH, DW) = cache.stride, cache.padding, cache.dilation
    _, _, H_out, W_out = dout.shape
    dout_rows = work.array("dout_rows", (N, H_out, W_out, F))  # (N, H_out, W_out, F), dout channels last
    _copy_channels_last(dout_rows, dout)
    x_pad = cache.x_pad  # (N, Hp, Wp, C)
    windows = _windows(x_pad, (0, 0), (H_out, W_out), (KH, KW), cache.stride, cache.dilation)
    capacity, blocks = _blocks(N, H_out, W_out * KH * KW * C * x_pad.itemsize)
    cols_buffer = work.array("cols", (capacity * W_out, KH * KW * C))  # (positions, KH*KW*C)
    dcols_buffer = work.array("dcols", (capacity * W_out, KH * KW * C))  # (positions, KH*KW*C)
    # columns in (u, v, c) order, as the windows'
    w_rows = cache.w.transpose(0, 2, 3, 1).reshape(F, KH * KW * C)  # (F, KH*KW*C), a copy
    dw_mat = np.zeros((KH * KW * C, F), dtype=x_pad.dtype)  # (KH*KW*C, F), rows in (u, v, c) order
    product = work.array("dw_product_strided", (KH * KW * C, F))  # (KH*KW*C, F)
    dx_pad = work.array("dx_pad", x_pad.shape)  # (N, Hp, Wp, C)
    dx_pad.fill(0)
    for block in blocks:
        n0, n1, i0, i1 = block
        cols = _gather(windows, block, cols_buffer)  # (count, KH*KW*C)
        block_dout = dout_rows[n0:n1, i0:i1].reshape(len(cols), F)  # (count, F), a view: whole rows
        np.matmul(cols.T, block_dout, out=product)  # (KH*KW*C, count) @ (count, F)
        dw_mat += product
        dcols = np.matmul(block_dout, w_rows, out=dcols_buffer[:len(cols)])  # (count, KH*KW*C)
        dcols = dcols.reshape(n1 - n0, i1 - i0, W_out, KH, KW, C)  # (images, rows, W_out, KH, KW, C)
        for u in range(KH):
            for v in range(KW):
                rows = slice(i0 * SH + u * DH, (i1 - 1) * SH + u * DH + 1, SH)  # i1 - i0 rows
                columns = slice(v * DW, v * DW + SW * (W_out - 1) + 1, SW)  # W_out columns
                dx_pad[n0:n1, rows, columns] += dcols[:, :, :, u, v]  # (images, rows, W_out, C)
    dw = np.ascontiguousarray(dw_mat.reshape(KH, KW, C, F).transpose(3, 2, 0, 1))  # (F, C, KH, KW)
    dx = np.empty((N, C, H, W), dtype=x_pad.dtype)  # (N, C, H, W)
    _copy_channels_first(dx, dx_pad[:, PH:PH + H, PW:PW + W])  # the padding's gradient is dropped
    return dx, dw
