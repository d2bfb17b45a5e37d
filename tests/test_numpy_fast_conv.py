"""course_utils.numpy_nn.fast_conv, checked against torch.nn.functional.conv2d and torch autograd.

No timings here: the speed is measured by ``benchmarks/numpy_conv.py``.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.numpy_nn import conv2d_backward_fast, conv2d_forward_fast, fast_conv
from course_utils.numpy_nn.fast_conv import Conv2dWorkspace, FastConv2dCache

# x shape (N, C, H, W), w shape (F, C, KH, KW), stride, padding, dilation
GRID = [
    ((1, 1, 5, 5), (1, 1, 3, 3), 1, 0, 1),
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1, 1),
    ((3, 4, 8, 8), (5, 4, 3, 3), 1, 2, 1),
    ((2, 3, 9, 7), (2, 3, 3, 2), 1, (1, 0), 1),
    ((2, 2, 6, 9), (3, 2, 2, 4), 1, (0, 2), (1, 2)),
    ((1, 3, 9, 9), (2, 3, 3, 3), 1, 0, 2),
    ((2, 2, 11, 10), (3, 2, 3, 3), 1, 3, (3, 2)),
    ((3, 2, 4, 4), (5, 2, 1, 1), 1, 0, 1),
    ((2, 3, 5, 5), (2, 3, 1, 1), 1, 1, 1),
    ((1, 2, 4, 5), (2, 2, 4, 5), 1, 0, 1),
    ((1, 1, 1, 1), (1, 1, 3, 3), 1, 1, 1),
    ((2, 3, 7, 7), (4, 3, 7, 7), 1, 3, 1),
    ((1, 2, 8, 8), (3, 2, 3, 3), 2, 0, 1),
    ((1, 2, 8, 9), (3, 2, 3, 3), 2, 1, 1),
    ((2, 1, 7, 5), (2, 1, 2, 3), (2, 1), (1, 0), 1),
    ((1, 1, 9, 7), (1, 1, 3, 2), (1, 3), 2, (2, 1)),
    ((2, 2, 10, 8), (2, 2, 5, 3), 3, 2, 1),
    ((1, 1, 6, 6), (1, 1, 3, 3), 4, 0, 1),
    ((2, 3, 12, 12), (4, 3, 3, 3), 2, 2, 2),
    ((2, 3, 16, 16), (8, 3, 7, 7), 2, 3, 1),
]


def _ids(config):
    x_shape, w_shape, stride, padding, dilation = config
    return f"x{x_shape}-w{w_shape}-s{stride}-p{padding}-d{dilation}"


def _random_case(config, dtype, seed=0):
    x_shape, w_shape, _, _, _ = config
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)  # (N, C, H, W)
    w = rng.standard_normal(w_shape).astype(dtype)  # (F, C, KH, KW)
    b = rng.standard_normal(w_shape[0]).astype(dtype)  # (F,)
    return x, w, b


def _torch_reference(x, w, b, stride, padding, dilation, dout=None):
    """torch.nn.functional.conv2d and, given dout, the autograd gradients (dx, dw, db)."""
    x_t, w_t, b_t = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    out_t = F.conv2d(x_t, w_t, b_t, stride=stride, padding=padding, dilation=dilation)
    if dout is None:
        return out_t.detach().numpy()
    grads = torch.autograd.grad(out_t, (x_t, w_t, b_t), torch.from_numpy(dout))
    return out_t.detach().numpy(), [g.numpy() for g in grads]


def _tolerance(dtype, reference):
    """rtol, atol for comparing with torch: float32 sums rounded in another order differ by ~1e-6 relative."""
    scale = max(1.0, float(np.abs(reference).max()))
    if dtype == np.float32:
        return 1e-4, 1e-5 * scale
    return 1e-10, 1e-12 * scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("config", GRID, ids=_ids)
def test_forward_matches_torch_conv2d(config, dtype):
    _, _, stride, padding, dilation = config
    x, w, b = _random_case(config, dtype)
    out, _ = conv2d_forward_fast(x, w, b, stride=stride, padding=padding, dilation=dilation)
    expected = _torch_reference(x, w, b, stride, padding, dilation)
    assert out.shape == expected.shape, f"shape {out.shape}, expected {expected.shape}"
    assert out.dtype == dtype, f"dtype {out.dtype}, expected {np.dtype(dtype)}"
    assert out.flags.c_contiguous, "out should be a C-contiguous (N, F, H_out, W_out) array"
    rtol, atol = _tolerance(dtype, expected)
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("config", GRID, ids=_ids)
def test_backward_matches_torch_autograd(config, dtype):
    _, _, stride, padding, dilation = config
    x, w, b = _random_case(config, dtype)
    out, cache = conv2d_forward_fast(x, w, b, stride=stride, padding=padding, dilation=dilation)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)  # (N, F, H_out, W_out)
    _, expected = _torch_reference(x, w, b, stride, padding, dilation, dout)
    received = conv2d_backward_fast(dout, cache)
    for name, grad, reference, like in zip(("dx", "dw", "db"), received, expected, (x, w, b)):
        assert grad.shape == like.shape, f"{name} has shape {grad.shape}, expected {like.shape}"
        assert grad.dtype == dtype, f"{name} has dtype {grad.dtype}, expected {np.dtype(dtype)}"
        rtol, atol = _tolerance(dtype, reference)
        np.testing.assert_allclose(grad, reference, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("stride", [1, 2], ids=["wrapped-rows", "strided"])
def test_the_benchmark_layer_matches_torch(stride):
    """The benchmark's configuration, smaller batch: C = F = 64, 3x3, padding 1, float32."""
    config = ((2, 64, 32, 32), (64, 64, 3, 3), stride, 1, 1)
    x, w, b = _random_case(config, np.float32)
    w /= 24.0  # 1/sqrt(C*KH*KW), as in a trained network: outputs of order 1
    out, cache = conv2d_forward_fast(x, w, b, stride=stride, padding=1)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)  # (N, F, H_out, W_out)
    expected_out, expected_grads = _torch_reference(x, w, b, stride, 1, 1, dout)
    np.testing.assert_allclose(out, expected_out, rtol=1e-4, atol=1e-4)
    for name, grad, reference in zip(("dx", "dw", "db"), conv2d_backward_fast(dout, cache), expected_grads):
        np.testing.assert_allclose(grad, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max(), err_msg=name)


@pytest.mark.parametrize("stride", [1, 2], ids=["wrapped-rows", "strided"])
def test_results_do_not_depend_on_the_chunk_size(monkeypatch, stride):
    """Both paths work chunk by chunk; the tiniest chunks (one output row each) give the same numbers."""
    config = ((3, 4, 10, 9), (5, 4, 3, 3), 1, 1, (1, 2))
    x, w, b = _random_case(config, np.float64)
    out, cache = conv2d_forward_fast(x, w, b, stride=stride, padding=1, dilation=(1, 2))
    dout = np.random.default_rng(1).standard_normal(out.shape)  # (N, F, H_out, W_out)
    grads = conv2d_backward_fast(dout, cache)
    monkeypatch.setattr(fast_conv, "_CHUNK_BYTES", 1)  # the minimum chunk: one row of one image
    out_small, cache_small = conv2d_forward_fast(x, w, b, stride=stride, padding=1, dilation=(1, 2))
    np.testing.assert_allclose(out_small, out, rtol=1e-12, atol=1e-12)
    for name, grad, grad_small in zip(("dx", "dw", "db"), grads, conv2d_backward_fast(dout, cache_small)):
        np.testing.assert_allclose(grad_small, grad, rtol=1e-12, atol=1e-12, err_msg=name)


def test_mixed_dtypes_compute_in_the_wider_float():
    config = ((1, 2, 5, 5), (3, 2, 3, 3), 1, 1, 1)
    x, w, b = _random_case(config, np.float32)
    out, cache = conv2d_forward_fast(x, w.astype(np.float64), b, padding=1)
    assert out.dtype == np.float64
    dx, dw, db = conv2d_backward_fast(np.ones(out.shape, dtype=np.float32), cache)
    assert (dx.dtype, dw.dtype, db.dtype) == (np.float64,) * 3
    expected = _torch_reference(*(a.astype(np.float64) for a in (x, w, b)), 1, 1, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_integer_input_is_computed_in_float64():
    x = np.arange(2 * 1 * 4 * 4).reshape(2, 1, 4, 4)  # (N, C, H, W), int64
    w = np.ones((1, 1, 3, 3), dtype=np.int64)  # (F, C, KH, KW)
    b = np.zeros(1, dtype=np.int64)  # (F,)
    out, _ = conv2d_forward_fast(x, w, b, padding=1)
    expected = _torch_reference(*(a.astype(np.float64) for a in (x, w, b)), 1, 1, 1)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected)


def test_inputs_are_not_modified():
    config = ((2, 3, 6, 6), (4, 3, 3, 3), 1, 1, 1)
    x, w, b = _random_case(config, np.float32)
    copies = [a.copy() for a in (x, w, b)]
    out, cache = conv2d_forward_fast(x, w, b, padding=1)
    dout = np.ones(out.shape, dtype=np.float32)  # (N, F, H_out, W_out)
    conv2d_backward_fast(dout, cache)
    for name, a, a_copy in zip(("x", "w", "b"), (x, w, b), copies):
        np.testing.assert_array_equal(a, a_copy, err_msg=f"{name} was modified")
    np.testing.assert_array_equal(dout, 1.0, err_msg="dout was modified")


def test_non_contiguous_input_is_accepted():
    config = ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1)
    x, w, b = _random_case(config, np.float64)
    x_view = x.transpose(0, 1, 3, 2)  # (N, C, W, H) seen as (N, C, H, W): not C-contiguous
    out, _ = conv2d_forward_fast(x_view, w, b, padding=1)
    np.testing.assert_allclose(out, _torch_reference(np.ascontiguousarray(x_view), w, b, 1, 1, 1), rtol=1e-10)


# --------------------------------------------------------------------------- errors

def _valid():
    return _random_case(((1, 2, 5, 5), (3, 2, 3, 3), 1, 0, 1), np.float32)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda x, w, b: (x.tolist(), w, b), TypeError,
         r"x must be a NumPy array of shape \(N, C, H, W\); got list"),
        (lambda x, w, b: (x[0], w, b), ValueError, r"x must have 4 dimensions \(N, C, H, W\); got 3"),
        (lambda x, w, b: (x, w[:, :1], b), ValueError, r"w has 1 input channels .* but x has 2"),
        (lambda x, w, b: (x, w, b[:2]), ValueError, r"b must have shape \(F,\) = \(3,\).*got \(2,\)"),
        (lambda x, w, b: (x, w, b[:, None]), ValueError, r"b must have 1 dimensions \(F,\); got 2"),
        (lambda x, w, b: (x.astype(complex), w, b), TypeError, r"x must hold real numbers.*got dtype complex128"),
        (lambda x, w, b: (x > 0, w, b), TypeError, r"x must hold real numbers.*got dtype bool"),
        (lambda x, w, b: (x[:0], w, b), ValueError, r"must not be empty; got x \(0, 2, 5, 5\)"),
        (lambda x, w, b: (x[:, :, :2], w, b), ValueError, r"the kernel spans 3 inputs.*padded input has only 2"),
    ],
    ids=["x-not-array", "x-3d", "channels-differ", "bias-length", "bias-2d", "complex", "bool", "empty",
         "kernel-too-big"],
)
def test_forward_rejects_bad_arrays(change, error, message):
    with pytest.raises(error, match=message):
        conv2d_forward_fast(*change(*_valid()))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"stride": 0}, ValueError, r"stride must be an int >= 1; got 0"),
        ({"stride": (1, 0)}, ValueError, r"stride\[1\] must be an int >= 1; got 0"),
        ({"stride": 1.5}, TypeError, r"stride must be an int; got float 1.5"),
        ({"stride": (1, 2, 3)}, ValueError, r"stride must be an int or a pair \(height, width\); got \(1, 2, 3\)"),
        ({"padding": -1}, ValueError, r"padding must be an int >= 0; got -1"),
        ({"padding": "same"}, TypeError, r"padding must be an int; got str 'same'"),
        ({"dilation": (0, 1)}, ValueError, r"dilation\[0\] must be an int >= 1; got 0"),
        ({"dilation": True}, TypeError, r"dilation must be an int; got bool True"),
        ({"dilation": 3}, ValueError, r"the kernel spans 7 inputs.*padded input has only 5"),
    ],
    ids=["stride-0", "stride-pair-0", "stride-float", "stride-triple", "padding-negative", "padding-str",
         "dilation-0", "dilation-bool", "dilated-kernel-too-big"],
)
def test_forward_rejects_bad_settings(kwargs, error, message):
    with pytest.raises(error, match=message):
        conv2d_forward_fast(*_valid(), **kwargs)


def test_backward_rejects_a_dout_of_the_wrong_shape():
    out, cache = conv2d_forward_fast(*_valid())
    expected = r"dout must have the forward output's shape .* = \(1, 3, 3, 3\); got \(1, 3, 3, 4\)"
    with pytest.raises(ValueError, match=expected):
        conv2d_backward_fast(np.zeros((1, 3, 3, 4), dtype=np.float32), cache)


def test_backward_rejects_a_dout_that_is_not_an_array():
    out, cache = conv2d_forward_fast(*_valid())
    with pytest.raises(TypeError, match=r"dout must be a NumPy array .*got list"):
        conv2d_backward_fast(out.tolist(), cache)


def test_backward_rejects_another_cache():
    out, cache = conv2d_forward_fast(*_valid())
    with pytest.raises(TypeError, match=r"cache must be the FastConv2dCache .*got tuple"):
        conv2d_backward_fast(out, tuple(cache))


def test_forward_returns_a_fast_cache():
    _, cache = conv2d_forward_fast(*_valid(), stride=(1, 2), padding=(0, 1), dilation=1)
    assert isinstance(cache, FastConv2dCache)
    assert (cache.stride, cache.padding, cache.dilation) == ((1, 2), (0, 1), (1, 1))
    assert cache.x_pad.shape == (1, 2, 5, 7), "x_pad should be (N, C, Hp, Wp)"
    assert cache.workspace is None


# --------------------------------------------------------------------------- the optional workspace

@pytest.mark.parametrize("config", [GRID[1], GRID[4], GRID[13], GRID[18]], ids=_ids)
def test_a_reused_workspace_gives_the_same_results_as_none(config):
    """Two forward/backward rounds through one workspace equal the calls without one, bit for bit."""
    _, _, stride, padding, dilation = config
    settings = dict(stride=stride, padding=padding, dilation=dilation)
    x, w, b = _random_case(config, np.float32)
    out, cache = conv2d_forward_fast(x, w, b, **settings)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)  # (N, F, H_out, W_out)
    grads = conv2d_backward_fast(dout, cache)
    workspace = Conv2dWorkspace(x.shape, w.shape, **settings)
    for round_ in range(2):
        out_ws, cache_ws = conv2d_forward_fast(x, w, b, **settings, workspace=workspace)
        np.testing.assert_array_equal(out_ws, out, err_msg=f"forward, round {round_}")
        for name, grad, grad_ws in zip(("dx", "dw", "db"), grads,
                                       conv2d_backward_fast(dout, cache_ws, workspace=workspace)):
            np.testing.assert_array_equal(grad_ws, grad, err_msg=f"{name}, round {round_}")


def test_results_are_new_arrays_not_workspace_buffers():
    config = ((2, 3, 6, 6), (4, 3, 3, 3), 1, 1, 1)
    x, w, b = _random_case(config, np.float64)
    workspace = Conv2dWorkspace(x.shape, w.shape, padding=1, dtype=np.float64)
    first, cache = conv2d_forward_fast(x, w, b, padding=1, workspace=workspace)
    dx_first = conv2d_backward_fast(np.ones_like(first), cache, workspace=workspace)[0]
    kept, kept_dx = first.copy(), dx_first.copy()
    out, cache = conv2d_forward_fast(2 * x, w, b, padding=1, workspace=workspace)
    conv2d_backward_fast(np.full_like(out, 3.0), cache, workspace=workspace)
    np.testing.assert_array_equal(first, kept, err_msg="a later call changed an earlier output")
    np.testing.assert_array_equal(dx_first, kept_dx, err_msg="a later call changed an earlier dx")


def test_a_workspace_of_another_shape_is_refused():
    x, w, b = _valid()  # x (1, 2, 5, 5), w (3, 2, 3, 3)
    workspace = Conv2dWorkspace((1, 2, 6, 6), w.shape)
    with pytest.raises(ValueError, match=r"workspace was made for another layer: x shape \(1, 2, 6, 6\) "
                                         r"\(this call: \(1, 2, 5, 5\)\)"):
        conv2d_forward_fast(x, w, b, workspace=workspace)


def test_a_workspace_with_other_settings_or_dtype_is_refused():
    x, w, b = _valid()
    with pytest.raises(ValueError, match=r"padding \(1, 1\) \(this call: \(0, 0\)\)"):
        conv2d_forward_fast(x, w, b, workspace=Conv2dWorkspace(x.shape, w.shape, padding=1))
    with pytest.raises(ValueError, match=r"dtype float32 \(this call: float64\)"):
        conv2d_forward_fast(x.astype(np.float64), w, b, workspace=Conv2dWorkspace(x.shape, w.shape))


def test_backward_refuses_a_workspace_of_another_layer():
    x, w, b = _valid()
    out, cache = conv2d_forward_fast(x, w, b)
    with pytest.raises(ValueError, match=r"another layer: stride \(2, 2\) \(this call: \(1, 1\)\)"):
        conv2d_backward_fast(out, cache, workspace=Conv2dWorkspace(x.shape, w.shape, stride=2))


def test_a_cache_overwritten_by_a_later_forward_is_refused():
    x, w, b = _valid()
    workspace = Conv2dWorkspace(x.shape, w.shape)
    out, old_cache = conv2d_forward_fast(x, w, b, workspace=workspace)
    _, new_cache = conv2d_forward_fast(x, w, b, workspace=workspace)
    conv2d_backward_fast(out, new_cache, workspace=workspace)  # the newest cache is fine
    with pytest.raises(ValueError, match=r"later conv2d_forward_fast call with the same workspace .* overwritten"):
        conv2d_backward_fast(out, old_cache)


def test_workspace_argument_must_be_a_workspace():
    with pytest.raises(TypeError, match=r"workspace must be a Conv2dWorkspace or None; got dict"):
        conv2d_forward_fast(*_valid(), workspace={})


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        (((1, 2, 5), (3, 2, 3, 3)), {}, TypeError, r"x_shape must be a tuple of 4 ints; got \(1, 2, 5\)"),
        (((1, 2, 5, 5), (3, 4, 3, 3)), {}, ValueError, r"w has 4 input channels"),
        (((1, 2, 2, 2), (3, 2, 3, 3)), {}, ValueError, r"the kernel spans 3 inputs"),
        (((1, 2, 5, 5), (3, 2, 3, 3)), {"stride": 0}, ValueError, r"stride must be an int >= 1; got 0"),
        (((1, 2, 5, 5), (3, 2, 3, 3)), {"dtype": np.int64}, TypeError, r"dtype must be float32 or float64"),
    ],
    ids=["x-shape-3d", "channels-differ", "kernel-too-big", "stride-0", "int-dtype"],
)
def test_workspace_rejects_bad_layers(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        Conv2dWorkspace(*args, **kwargs)


# --------------------------------------------------------------------------- threads and chunks

THREAD_CASES = [GRID[1], GRID[6], GRID[13], GRID[16]]  # stride 1 (padding, dilation) and strided


@pytest.mark.parametrize("threads", [1, 2, 3], ids=["1-thread", "2-threads", "3-threads"])
@pytest.mark.parametrize("chunk_bytes", [1, None], ids=["row-bands", "whole-images"])
@pytest.mark.parametrize("config", THREAD_CASES, ids=_ids)
def test_results_do_not_depend_on_the_thread_count(monkeypatch, config, threads, chunk_bytes):
    """However the chunks are shared out (threads, bands of rows or whole images), the numbers agree with torch."""
    _, _, stride, padding, dilation = config
    settings = dict(stride=stride, padding=padding, dilation=dilation)
    x, w, b = _random_case(config, np.float64)
    x = np.concatenate([x, x[::-1] * 0.5, -x])  # 3x the images: more chunks than threads
    monkeypatch.setattr(fast_conv, "_blas_threads", lambda: threads)
    if chunk_bytes is not None:
        monkeypatch.setattr(fast_conv, "_CHUNK_BYTES", chunk_bytes)
    out, cache = conv2d_forward_fast(x, w, b, **settings)
    dout = np.random.default_rng(1).standard_normal(out.shape)  # (N, F, H_out, W_out)
    expected_out, expected = _torch_reference(x, w, b, stride, padding, dilation, dout)
    rtol, atol = _tolerance(np.float64, expected_out)
    np.testing.assert_allclose(out, expected_out, rtol=rtol, atol=atol)
    for name, grad, reference in zip(("dx", "dw", "db"), conv2d_backward_fast(dout, cache), expected):
        rtol, atol = _tolerance(np.float64, reference)
        np.testing.assert_allclose(grad, reference, rtol=rtol, atol=atol, err_msg=f"{name} with {threads} threads")


def test_the_same_call_gives_the_same_numbers_every_time():
    """The threads' weight gradients are summed in a fixed order: float32 results are bit for bit the same."""
    config = ((16, 8, 12, 12), (8, 8, 3, 3), 1, 1, 1)
    x, w, b = _random_case(config, np.float32)
    dout = np.random.default_rng(1).standard_normal((16, 8, 12, 12)).astype(np.float32)
    first = conv2d_backward_fast(dout, conv2d_forward_fast(x, w, b, padding=1)[1])
    for _ in range(5):
        again = conv2d_backward_fast(dout, conv2d_forward_fast(x, w, b, padding=1)[1])
        for name, a, b_ in zip(("dx", "dw", "db"), first, again):
            np.testing.assert_array_equal(a, b_, err_msg=name)


@pytest.mark.parametrize("chunk_bytes", [1, 10**4, 10**9], ids=["bands", "some-images", "all-images"])
@pytest.mark.parametrize("threads", [1, 2, 5])
def test_chunks_cover_every_row_once_and_keep_an_image_in_one_thread(monkeypatch, threads, chunk_bytes):
    monkeypatch.setattr(fast_conv, "_blas_threads", lambda: threads)
    monkeypatch.setattr(fast_conv, "_CHUNK_BYTES", chunk_bytes)
    N, rows = 7, 6
    chunks = fast_conv._chunks(N, rows, row_bytes=1000)
    assert 1 <= len(chunks) <= threads
    covered = np.zeros((N, rows), dtype=int)
    owner = {}
    for thread, thread_chunks in enumerate(chunks):
        assert thread_chunks, f"thread {thread} got no chunk"
        for n0, n1, r0, r1 in thread_chunks:
            covered[n0:n1, r0:r1] += 1
            for n in range(n0, n1):
                assert owner.setdefault(n, thread) == thread, f"image {n} is split over threads"
    np.testing.assert_array_equal(covered, 1, err_msg="every (image, row) exactly once")


def test_an_error_in_a_worker_thread_reaches_the_caller_and_the_blas_threads_come_back():
    controller = fast_conv._blas_controller()
    if controller is None:
        pytest.skip("threadpoolctl finds no BLAS to limit here")
    before = [lib.num_threads for lib in controller.lib_controllers]
    seen = []

    def fine():
        seen.append([lib.num_threads for lib in controller.lib_controllers])

    def broken():
        raise RuntimeError("worker failed")

    with pytest.raises(RuntimeError, match="worker failed"):
        fast_conv._run_in_threads([fine, broken, fine])
    assert seen == [[1] * len(before)] * 2, "each worker's BLAS runs on one thread"
    assert [lib.num_threads for lib in controller.lib_controllers] == before, "the BLAS threads were not restored"


def test_without_threadpoolctl_everything_runs_in_the_calling_thread(monkeypatch):
    config = ((6, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1)
    x, w, b = _random_case(config, np.float64)
    expected = _torch_reference(x, w, b, 1, 1, 1)
    monkeypatch.setattr(fast_conv, "_blas_controller", lambda: None)

    def no_threads(*args, **kwargs):
        raise AssertionError("a thread was started")

    monkeypatch.setattr(fast_conv.threading, "Thread", no_threads)
    out, cache = conv2d_forward_fast(x, w, b, padding=1)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    conv2d_backward_fast(np.ones_like(out), cache)


@pytest.mark.parametrize("config", [GRID[1], GRID[4], GRID[6]], ids=_ids)
def test_a_non_finite_input_spoils_only_the_outputs_that_read_it(config):
    """The wrapped columns read across the end of a row; what they compute is dropped, so an inf stays local."""
    _, _, stride, padding, dilation = config
    x, w, b = _random_case(config, np.float64)
    x[0, 0, 2, -1] = np.inf  # at the end of a row: the next row's wrapped columns read it
    x[-1, -1, -1, 0] = np.nan
    out, _ = conv2d_forward_fast(x, w, b, stride=stride, padding=padding, dilation=dilation)
    expected = _torch_reference(x, w, b, stride, padding, dilation)
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-10, atol=1e-12)


def test_threads_without_a_blas_limit_still_give_the_right_numbers(monkeypatch):
    """Should the BLAS be unreachable while threads are asked for, the threads run anyway, unlimited."""
    config = ((6, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1)
    x, w, b = _random_case(config, np.float64)
    monkeypatch.setattr(fast_conv, "_blas_controller", lambda: None)
    monkeypatch.setattr(fast_conv, "_blas_threads", lambda: 2)
    out, _ = conv2d_forward_fast(x, w, b, padding=1)
    np.testing.assert_allclose(out, _torch_reference(x, w, b, 1, 1, 1), rtol=1e-10, atol=1e-12)
