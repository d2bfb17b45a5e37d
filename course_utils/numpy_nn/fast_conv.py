"""Fast 2-D convolution in pure NumPy: im2col a few images at a time, in the cache, on every core.

The fast companion of ``course_utils.numpy_nn.conv`` (chapter 01, ``notebooks/01_convolution.ipynb``):
same arguments, same results as ``torch.nn.functional.conv2d``, no compiled code of its own.
Shape letters: N batch, C input channels, H, W input size, F filters, KH, KW kernel size,
H_out, W_out output size; S stride, P padding, D dilation; Hp = H + 2*PH, Wp = W + 2*PW;
Q = D*(K - 1), the extent of a dilated kernel minus one (QH, QW).

Why the plain im2col is slow
----------------------------
im2col copies every receptive field into a matrix with KH*KW times as many numbers as
the input (for a 3x3 kernel, 9 copies of every pixel), then runs one matrix product.
Built for the whole batch at once, that matrix is far larger than the processor's cache:
the copy writes it to memory and the product reads it back, and the rows of the product's
result are (position, filter), so the output must be transposed to (N, F, H_out, W_out)
afterwards. Memory traffic, not arithmetic, makes it 3-5 times slower than the product alone.

What this version does instead
------------------------------
1. **A few images at a time, in NCHW.** For one image, the im2col matrix ``cols`` has
   shape (C*KH*KW, H_out*W_out) (for 64 channels, 3x3 and 32x32 outputs: 2.4 MB, which
   stays in the cache), and ``w.reshape(F, C*KH*KW) @ cols`` is (F, H_out*W_out): already
   that image's output in NCHW order. No layout change before or after, and the copy is
   read back from the cache. Chunks hold whole images (several, when they are small) or,
   for large images, a band of output rows, up to ``_CHUNK_BYTES`` of ``cols`` each.
2. **Stride 1: wrapped rows.** The padded image is stored flat, ``x_flat[c, y*Wp + z]``.
   Output (i, j) reads ``x_flat[c, (i + u*DH)*Wp + j + v*DW]`` at tap (u, v). If j ran over
   all Wp columns of a padded row instead of the W_out real ones, the inputs of tap (u, v)
   for all positions would be **one contiguous run** of H_out*Wp numbers starting at
   ``u*DH*Wp + v*DW``, so ``cols`` is a single strided view (``as_strided``, shape
   (C, KH, KW, H_out*Wp), no copy) whose copy moves long runs, at the speed of a plain
   memory copy. The product then computes Wp - W_out extra "wrapped" columns per output
   row (they read across the row's end: 2 of 34 for the benchmark layer, 6% more
   arithmetic), and the copy into the output drops them while adding the bias.
   Other strides use the windows view (C, KH, KW, H_out, W_out), runs of W_out numbers,
   and need no dropped columns.
3. **Every core.** NumPy's matrix product runs on every core through its BLAS (OpenBLAS
   in the pip wheels), but the copies around it run on one; between two products the
   BLAS threads wait for the next, busy, and on the course's 2-core machine they took the
   core the copy needed (profiled on the benchmark layer: the copies of a forward took
   20 ms between products instead of 3.6 ms). So the chunks are shared out over as many
   Python threads as the BLAS has, each running its chunks' copies and products
   (NumPy releases the GIL in both), while the BLAS is limited to one thread per product
   (``threadpoolctl``, restored afterwards). Chunk k goes to thread k % T and the threads'
   weight gradients are summed in thread order: the same numbers on every run. With one
   BLAS thread, one chunk, or no ``threadpoolctl``, the chunks run in the calling thread
   and the BLAS keeps its threads. The BLAS limit is process-wide: while a call runs, other
   threads' NumPy products get one BLAS thread too, so call these functions from one thread
   at a time (a training loop does).

The backward pass reuses the same machinery, one image chunk at a time:

* ``db[f]`` = ``dout[:, f]`` summed;
* stride 1: ``dx`` is a convolution of ``dout``, zero-padded, with the kernel flipped and its
  F and C swapped: the wrapped rows again, ``w_flip @ dcols``, (C, F*KH*KW) @ (F*KH*KW,
  H*Wq) with Wq = W + QW. The same ``dcols`` give ``dw_flip += dcols @ x_wrapped.T``,
  (F*KH*KW, H*Wq) @ (H*Wq, C), with ``x_wrapped`` the image laid out H rows of Wq, zeros in
  the wrapped columns: one im2col copy for both gradients;
* other strides: the forward's ``cols`` again, ``dw += dout @ cols.T``, and ``dcols =
  w_mat.T @ dout`` put back by col2im (one strided add per kernel tap, as chapter 01's
  ``conv2d_backward``).

A workspace (optional)
----------------------
Each call allocates its buffers (the padded input, each thread's ``cols``, ...). A training
loop calling one layer again and again can pass a ``Conv2dWorkspace`` made once for that
layer's shapes: the buffers are then reused (on a virtual machine a fresh large array costs a
page fault per 4 KiB it touches). Nothing is kept between calls otherwise. The padded input
lives in the workspace and the forward's cache points at it, so a cache is only good until
the next forward call with the same workspace; ``conv2d_backward_fast`` refuses a cache whose
input was overwritten, with a message. One workspace per layer.

``benchmarks/numpy_conv.py`` compares both passes with their matrix products alone and with
PyTorch.
"""
import contextlib
import functools
import threading
from typing import NamedTuple, Optional, Tuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

# the argument checks are chapter 01's, so both versions refuse bad input with the same messages
from course_utils.numpy_nn.conv import _check_inputs, _real_array, conv_output_size

# Bytes of one chunk's ``cols``: small enough that two threads' chunks stay in the cache while
# the product reads them back, large enough that the Python work per chunk is negligible.
# Measured on the benchmark layer (one image: 2.4 MB of ``cols``) by
# ``benchmarks/numpy_conv.py --chunk-sizes 0.5,1,2,4,8,16,64``: 4 MiB (one image per chunk) gave
# the forward nearest its floor, 1.01x (backward 1.00x), against 1.14x (0.99x) at 2 MiB (half
# images), 1.37x (1.13x) at 8 MiB (3 images) and 1.61x (1.31x) at 64 MiB.
_CHUNK_BYTES = 4 * 2**20

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

    x_pad: np.ndarray  # (N, C, Hp, Wp) the zero-padded input in the compute dtype (a view of a flat buffer)
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


# --------------------------------------------------------------------------- threads

@functools.lru_cache(maxsize=None)
def _blas_controller():
    """threadpoolctl's handle on NumPy's BLAS, or None (no threadpoolctl, or no BLAS it can limit)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    controller = ThreadpoolController().select(user_api="blas")
    return controller if controller.lib_controllers else None


def _blas_threads():
    """How many threads NumPy's matrix product uses now: 1 when that cannot be found or changed."""
    controller = _blas_controller()
    if controller is None:
        return 1
    return max(1, max(lib.num_threads for lib in controller.lib_controllers))


def _run_in_threads(tasks):
    """Call each of ``tasks`` (functions of no argument) at once, one thread each, the BLAS on one thread.

    The first task runs in the calling thread. The first error raised by any task is raised
    again here, once all of them have finished. A single task runs alone, the BLAS keeping
    its threads.
    """
    if len(tasks) == 1:
        tasks[0]()
        return
    errors = [None] * len(tasks)

    def run(k):
        try:
            tasks[k]()
        except BaseException as error:  # re-raised in the calling thread below
            errors[k] = error

    controller = _blas_controller()
    with controller.limit(limits=1) if controller is not None else contextlib.nullcontext():
        threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(1, len(tasks))]
        for thread in threads:
            thread.start()
        run(0)
        for thread in threads:
            thread.join()
    for error in errors:
        if error is not None:
            raise error


def _chunks(N, rows, row_bytes):
    """Split the images and their rows into chunks of about ``_CHUNK_BYTES`` of ``cols`` each, per thread.

    Args:
        N: images.
        rows: rows per image (output rows for the forward, input rows for dx).
        row_bytes: bytes of ``cols`` for one such row.

    Returns:
        A list, one entry per thread, of lists of chunks ``(n0, n1, r0, r1)``: images
        n0 .. n1-1, rows r0 .. r1-1. Whole images when one fits, spread evenly over the
        fewest chunks, chunk k to thread k % T; else bands of rows of one image, every band
        of image n to thread n % T (so one thread adds up each image's col2im). T is the
        BLAS's thread count, at most one thread per chunk (per image for bands).
    """
    band = max(1, _CHUNK_BYTES // row_bytes)  # rows per chunk at most
    if band >= rows:
        count = -(-N // (band // rows))  # fewest chunks of whole images
        per_chunk = -(-N // count)  # images per chunk, spread evenly
        chunks = [(n0, min(N, n0 + per_chunk), 0, rows) for n0 in range(0, N, per_chunk)]
        threads = min(_blas_threads(), len(chunks))
        return [chunks[k::threads] for k in range(threads)]
    threads = min(_blas_threads(), N)
    return [[(n, n + 1, r0, min(rows, r0 + band)) for n in range(k, N, threads) for r0 in range(0, rows, band)]
            for k in range(threads)]


def _largest(chunks):
    """The most images and the most rows of any chunk: the sizes of a thread's buffers."""
    every = [chunk for thread in chunks for chunk in thread]
    return max(n1 - n0 for n0, n1, _, _ in every), max(r1 - r0 for _, _, r0, r1 in every)


def _part(buffer, shape):
    """The first numbers of a flat ``buffer`` as a C-contiguous array of ``shape``, a view."""
    return buffer[:int(np.prod(shape))].reshape(shape)


# --------------------------------------------------------------------------- layouts and windows

def _paste(dst, src, top, left):
    """``dst[..., top + y, left + z] = src[..., y, z]`` where both exist (``top``, ``left`` may be negative)."""
    y0, z0 = max(0, -top), max(0, -left)  # first row, column of src that lands in dst
    rows = min(src.shape[-2] - y0, dst.shape[-2] - (top + y0))
    columns = min(src.shape[-1] - z0, dst.shape[-1] - (left + z0))
    dst[..., top + y0:top + y0 + rows, left + z0:left + z0 + columns] = src[..., y0:y0 + rows, z0:z0 + columns]


def _wrapped_windows(flat, row_width, first_row, rows, kernel_size, dilation):
    """The stride-1 im2col of ``flat`` over whole padded rows, as a strided view, no copy.

    ``view[n, c, u, v, p] = flat[n, c, (first_row + u*DH)*row_width + v*DW + p]`` for
    p in [0, rows*row_width): output position (i, j) is p = (i - first_row)*row_width + j,
    and the columns j >= the real output width are the wrapped ones, to be dropped.

    Args:
        flat: C-contiguous array (images, channels, length), each channel an image of rows of
            ``row_width`` numbers, followed by at least DW*(KW - 1) numbers of slack: the
            wrapped columns of the last row read into it.

    Returns:
        View (images, channels, KH, KW, rows*row_width).
    """
    (KH, KW), (DH, DW) = kernel_size, dilation
    sN, sC, s1 = flat.strides
    base = flat[:, :, first_row * row_width:]  # a view with flat's strides
    return as_strided(base, (flat.shape[0], flat.shape[1], KH, KW, rows * row_width),
                      (sN, sC, DH * row_width * s1, DW * s1, s1), writeable=False)


def _windows(x_pad, first_row, rows, out_width, kernel_size, stride, dilation):
    """The im2col of ``x_pad`` for output rows first_row .. first_row+rows-1, as a strided view, no copy.

    ``view[n, c, u, v, i, j] = x_pad[n, c, (first_row + i)*SH + u*DH, j*SW + v*DW]``.

    Args:
        x_pad: array (images, C, Hp, Wp).

    Returns:
        View (images, C, KH, KW, rows, out_width).
    """
    (KH, KW), (SH, SW), (DH, DW) = kernel_size, stride, dilation
    sN, sC, sY, sZ = x_pad.strides
    base = x_pad[:, :, first_row * SH:]  # a view with x_pad's strides
    return as_strided(base, (x_pad.shape[0], x_pad.shape[1], KH, KW, rows, out_width),
                      (sN, sC, sY * DH, sZ * DW, sY * SH, sZ * SW), writeable=False)


# --------------------------------------------------------------------------- forward

def conv2d_forward_fast(x, w, b, stride=1, padding=0, dilation=1, workspace=None):
    """2-D convolution (cross-correlation) as ``torch.nn.functional.conv2d``, fast, in NumPy.

    Chunks of a few images, each copied into an im2col matrix that stays in the cache and
    multiplied by the filters, on as many threads as NumPy's BLAS uses (see the module
    docstring); any stride, padding and dilation.

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
    (PH, PW), (DH, DW) = padding, dilation
    Hp, Wp = H + 2 * PH, W + 2 * PW
    work = _workspace(workspace, (x.shape, w.shape, stride, padding, dilation, dtype))
    w = w.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)
    w_mat = w.reshape(F, C * KH * KW)  # (F, C*KH*KW), columns in (c, u, v) order, as the windows'
    bias = b[:, None, None]  # (F, 1, 1)

    # (N, C, Hp*Wp + slack): each padded channel flat, then DW*(KW-1) zeros the last wrapped columns read
    x_flat = work.array("x_pad", (N, C, Hp * Wp + DW * (KW - 1)), zero_border=True)
    x_pad = x_flat[:, :, :Hp * Wp].reshape(N, C, Hp, Wp)  # (N, C, Hp, Wp), a view
    out = np.empty((N, F, H_out, W_out), dtype=dtype)  # (N, F, H_out, W_out)
    wrapped = stride == (1, 1)
    row_width = Wp if wrapped else W_out  # columns of cols per output row
    chunks = _chunks(N, H_out, row_width * C * KH * KW * x_flat.itemsize)
    images, rows = _largest(chunks)

    def forward_chunks(k):
        cols_buffer = work.array(f"cols{k}", (images * C * KH * KW * rows * row_width,))
        rows_buffer = work.array(f"out_rows{k}", (images * F * rows * row_width,))
        for n0, n1, i0, i1 in chunks[k]:
            if i0 == 0:  # the chunk's first band: pad its images (only the interior is written)
                x_pad[n0:n1, :, PH:PH + H, PW:PW + W] = x[n0:n1]
            if wrapped:
                windows = _wrapped_windows(x_flat[n0:n1], Wp, i0, i1 - i0, (KH, KW), dilation)
            else:
                windows = _windows(x_pad[n0:n1], i0, i1 - i0, W_out, (KH, KW), stride, dilation)
            cols = _part(cols_buffer, windows.shape)  # (images, C, KH, KW, positions...)
            np.copyto(cols, windows)
            positions = (i1 - i0) * row_width
            product = _part(rows_buffer, (n1 - n0, F, positions))  # (images, F, positions)
            np.matmul(w_mat, cols.reshape(n1 - n0, C * KH * KW, positions), out=product)
            product = product.reshape(n1 - n0, F, i1 - i0, row_width)  # (images, F, rows, row_width)
            np.add(product[..., :W_out], bias, out=out[n0:n1, :, i0:i1])  # the wrapped columns dropped

    _run_in_threads([functools.partial(forward_chunks, k) for k in range(len(chunks))])
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
    dout = np.ascontiguousarray(dout, dtype=dtype)  # (N, F, H_out, W_out)
    db = dout.sum(axis=(0, 2, 3))  # (F,)
    if cache.stride == (1, 1):
        dx, dw = _backward_wrapped(dout, cache, work)
    else:
        dx, dw = _backward_col2im(dout, cache, work)
    return dx, dw, db


def _backward_wrapped(dout, cache, work):
    """Stride 1: one wrapped-rows im2col of the padded ``dout`` gives both dx and dw.

    dx is ``dout`` convolved with the kernel flipped and its F and C swapped::

        dx[n, c, y, z] = sum_{u, v, f} dout_pad[n, f, y + u*DH, z + v*DW] * w[f, c, KH-1-u, KW-1-v]

    with ``dout_pad[n, f, r, s] = dout[n, f, r - (QH - PH), s - (QW - PW)]`` (zero outside),
    of Hq = H + QH rows and Wq = W + QW columns. So with ``dcols`` its wrapped-rows im2col
    (rows (f, u, v), one column per position (y, z) of H rows of Wq), ``dx = w_flip @ dcols``
    with its wrapped columns dropped, and ``dw_flip[(f, u, v), c] = sum over positions of
    dcols[(f, u, v), p] * x_wrapped[c, p]``: ``dcols @ x_wrapped.T``, where x_wrapped is x
    laid out in rows of Wq, zero in the wrapped columns (so they contribute nothing).
    """
    N, C, H, W = cache.x_shape
    F, _, KH, KW = cache.w.shape
    (PH, PW), (DH, DW) = cache.padding, cache.dilation
    _, _, H_out, W_out = dout.shape
    QH, QW = DH * (KH - 1), DW * (KW - 1)
    Hq, Wq = H + QH, W + QW
    dtype = cache.x_pad.dtype
    # w_flip[c, f, u, v] = w[f, c, KH-1-u, KW-1-v]: (C, F*KH*KW), a copy
    w_flip = np.ascontiguousarray(cache.w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(C, F * KH * KW)
    dx = np.empty((N, C, H, W), dtype=dtype)  # (N, C, H, W)
    chunks = _chunks(N, H, Wq * F * KH * KW * dx.itemsize)
    images, rows = _largest(chunks)
    dw_flips = [None] * len(chunks)  # each thread's (F*KH*KW, C)

    def backward_chunks(k):
        # (images, F, Hq*Wq + slack) and (images, C, H*Wq): zero where nothing is pasted, made once
        dout_flat = work.array(f"dout_pad{k}", (images, F, Hq * Wq + QW), zero_border=True)
        x_wrapped = work.array(f"x_wrapped{k}", (images, C, H * Wq), zero_border=True)
        cols_buffer = work.array(f"dcols{k}", (images * F * KH * KW * rows * Wq,))
        rows_buffer = work.array(f"dx_rows{k}", (images * C * rows * Wq,))
        product_buffer = work.array(f"dw_product{k}", (images * F * KH * KW * C,))
        dw_flip = np.zeros((F * KH * KW, C), dtype=dtype)  # rows in (f, u, v) order
        for n0, n1, y0, y1 in chunks[k]:
            count, positions = n1 - n0, (y1 - y0) * Wq
            if y0 == 0:  # the chunk's first band: lay out its images' dout and x
                _paste(dout_flat[:count, :, :Hq * Wq].reshape(count, F, Hq, Wq), dout[n0:n1], QH - PH, QW - PW)
                x_wrapped[:count].reshape(count, C, H, Wq)[..., :W] = cache.x_pad[n0:n1, :, PH:PH + H, PW:PW + W]
            windows = _wrapped_windows(dout_flat[:count], Wq, y0, y1 - y0, (KH, KW), (DH, DW))
            dcols = _part(cols_buffer, windows.shape)  # (images, F, KH, KW, positions)
            np.copyto(dcols, windows)
            dcols = dcols.reshape(count, F * KH * KW, positions)
            dx_rows = np.matmul(w_flip, dcols, out=_part(rows_buffer, (count, C, positions)))  # (images, C, positions)
            dx[n0:n1, :, y0:y1] = dx_rows.reshape(count, C, y1 - y0, Wq)[..., :W]  # the wrapped columns dropped
            x_band = x_wrapped[:count, :, y0 * Wq:y1 * Wq]  # (images, C, positions)
            product = np.matmul(dcols, x_band.transpose(0, 2, 1),
                                out=_part(product_buffer, (count, F * KH * KW, C)))  # (images, F*KH*KW, C)
            dw_flip += product.sum(axis=0) if count > 1 else product[0]
        dw_flips[k] = dw_flip

    _run_in_threads([functools.partial(backward_chunks, k) for k in range(len(chunks))])
    dw_flip = functools.reduce(np.add, dw_flips)  # in thread order: the same sum on every run
    dw = dw_flip.reshape(F, KH, KW, C)[:, ::-1, ::-1].transpose(0, 3, 1, 2)  # (F, C, KH, KW), a view
    return dx, np.ascontiguousarray(dw)


def _backward_col2im(dout, cache, work):
    """Any stride: dw from the forward's im2col chunks, dx by ``dcols = w_mat.T @ dout`` and col2im.

    ``dw_mat += dout_rows @ cols.T`` chunk by chunk; ``dcols`` (C*KH*KW, positions) is added
    back onto the padded input, one strided add per kernel tap (the pixels one tap reads are
    distinct, so a slice adds them all at once), as chapter 01's ``conv2d_backward``.
    """
    N, C, H, W = cache.x_shape
    F, _, KH, KW = cache.w.shape
    (SH, SW), (PH, PW), (DH, DW) = cache.stride, cache.padding, cache.dilation
    _, _, H_out, W_out = dout.shape
    x_pad = cache.x_pad  # (N, C, Hp, Wp)
    dtype = x_pad.dtype
    w_mat = cache.w.reshape(F, C * KH * KW)  # (F, C*KH*KW), columns in (c, u, v) order
    dx = np.empty((N, C, H, W), dtype=dtype)  # (N, C, H, W)
    chunks = _chunks(N, H_out, W_out * C * KH * KW * dx.itemsize)
    images, rows = _largest(chunks)
    dw_mats = [None] * len(chunks)  # each thread's (F, C*KH*KW)

    def backward_chunks(k):
        cols_buffer = work.array(f"cols{k}", (images * C * KH * KW * rows * W_out,))
        dcols_buffer = work.array(f"dcols{k}", (images * C * KH * KW * rows * W_out,))
        product_buffer = work.array(f"dw_product{k}", (images * F * C * KH * KW,))
        dx_pad = work.array(f"dx_pad{k}", (images,) + x_pad.shape[1:])  # (images, C, Hp, Wp)
        dw_mat = np.zeros((F, C * KH * KW), dtype=dtype)
        for n0, n1, i0, i1 in chunks[k]:
            count, positions = n1 - n0, (i1 - i0) * W_out
            windows = _windows(x_pad[n0:n1], i0, i1 - i0, W_out, (KH, KW), (SH, SW), (DH, DW))
            cols = _part(cols_buffer, windows.shape)  # (images, C, KH, KW, rows, W_out)
            np.copyto(cols, windows)
            cols = cols.reshape(count, C * KH * KW, positions)
            block_dout = dout[n0:n1, :, i0:i1].reshape(count, F, positions)  # (images, F, positions), a view
            product = np.matmul(block_dout, cols.transpose(0, 2, 1),
                                out=_part(product_buffer, (count, F, C * KH * KW)))  # (images, F, C*KH*KW)
            dw_mat += product.sum(axis=0) if count > 1 else product[0]
            dcols = np.matmul(w_mat.T, block_dout, out=_part(dcols_buffer, (count, C * KH * KW, positions)))
            dcols = dcols.reshape(count, C, KH, KW, i1 - i0, W_out)  # (images, C, KH, KW, rows, W_out)
            pad = dx_pad[:count]
            if i0 == 0:
                pad.fill(0)
            for u in range(KH):
                for v in range(KW):
                    rows_read = slice(i0 * SH + u * DH, (i1 - 1) * SH + u * DH + 1, SH)  # i1 - i0 rows
                    columns = slice(v * DW, v * DW + SW * (W_out - 1) + 1, SW)  # W_out columns
                    pad[:, :, rows_read, columns] += dcols[:, :, u, v]  # (images, C, rows, W_out)
            if i1 == H_out:  # the image's last band: its gradient is complete
                dx[n0:n1] = pad[:, :, PH:PH + H, PW:PW + W]  # the padding's gradient is dropped
        dw_mats[k] = dw_mat

    _run_in_threads([functools.partial(backward_chunks, k) for k in range(len(chunks))])
    dw_mat = functools.reduce(np.add, dw_mats)  # in thread order: the same sum on every run
    return dx, dw_mat.reshape(F, C, KH, KW)
