"""Checks for chapter 01, convolution (``solutions/01_convolution.ipynb``).

Every check compares the learner's function with an independent reference, never
with ``course_utils.numpy_nn``:

* output sizes: the output shape of ``torch.nn.Conv2d``;
* the forward pass: ``scipy.signal.correlate2d`` (one channel, one filter) and
  ``torch.nn.functional.conv2d`` (everything else), in float64;
* the backward pass: torch autograd through ``torch.nn.functional.conv2d``.

A failure names the case, the expected and the received value or shape, and adds a
hint when the wrong answer has a typical signature (a flipped kernel, a missing bias,
an ignored stride...). Hints only add words to a failure: they never let a case pass.
"""
import numbers

import numpy as np
import scipy.signal
import torch

from course_utils.checks import common

# Tolerance of every value comparison: float64 data, so a correct answer in float64
# is off by about 1e-15 and one computed in float32 by about 1e-6; a wrong one by about 1.
RTOL, ATOL = 1e-5, 1e-5

# The classic 6x6 example input (Andrew Ng's deep-learning course) and a vertical-edge kernel.
EXAMPLE_6X6 = np.array(
    [[3, 0, 1, 2, 7, 4],
     [1, 5, 8, 9, 3, 1],
     [2, 7, 2, 5, 1, 3],
     [0, 1, 3, 1, 7, 8],
     [4, 2, 1, 6, 2, 8],
     [2, 4, 5, 2, 3, 9]],
    dtype=np.float64,
)
VERTICAL_EDGE = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], dtype=np.float64)


# --------------------------------------------------------------------------- output size

# (case name, n, k, stride, padding, dilation)
OUTPUT_SIZE_CASES = [
    ("n=6, k=3", 6, 3, 1, 0, 1),
    ("n=5, k=5 (kernel as large as the input)", 5, 5, 1, 0, 1),
    ("n=7, k=1 (1x1 kernel)", 7, 1, 1, 0, 1),
    ("n=7, k=3, padding 1 ('same')", 7, 3, 1, 1, 1),
    ("n=8, k=5, padding 2 ('same')", 8, 5, 1, 2, 1),
    ("n=7, k=3, stride 2", 7, 3, 2, 0, 1),
    ("n=6, k=3, stride 2 (the floor drops the last row)", 6, 3, 2, 0, 1),
    ("n=10, k=3, stride 3, padding 1", 10, 3, 3, 1, 1),
    ("n=224, k=7, stride 2, padding 3 (ResNet stem)", 224, 7, 2, 3, 1),
    ("n=227, k=11, stride 4 (AlexNet conv1)", 227, 11, 4, 0, 1),
    ("n=9, k=3, dilation 2", 9, 3, 1, 0, 2),
    ("n=10, k=3, stride 2, padding 2, dilation 2", 10, 3, 2, 2, 2),
    ("n=5, k=4, stride 3, padding 1, dilation 2", 5, 4, 3, 1, 2),
    ("n=1, k=3, padding 1", 1, 3, 1, 1, 1),
]


def _reference_output_size(n, k, stride, padding, dilation):
    """Length of the last axis of ``nn.Conv2d``'s output on a (1, 1, 1, n) input."""
    layer = torch.nn.Conv2d(1, 1, kernel_size=(1, k), stride=(1, stride), padding=(0, padding),
                            dilation=(1, dilation), bias=False)
    with torch.no_grad():
        return int(layer(torch.zeros(1, 1, 1, n)).shape[-1])


def _output_size_hint(received, n, k, stride, padding, dilation):
    span = dilation * (k - 1) + 1
    if isinstance(received, float) and received == (n + 2 * padding - span) / stride + 1:
        return "use floor division `//`: a window that does not fit entirely is dropped"
    guesses = [
        ((n + 2 * padding - k) // stride + 1, dilation > 1,
         "did you forget the dilation? k taps with dilation d span d*(k-1)+1 inputs"),
        ((n + padding - span) // stride + 1, padding > 0,
         "padding adds p zeros on each side, 2p in total"),
        ((n + 2 * padding - span) // stride, True, "did you forget the +1 (the first window)?"),
        (n + 2 * padding - span + 1, stride > 1, "did you ignore the stride?"),
        (n - span + 1, padding > 0, "did you ignore the padding?"),
    ]
    for value, relevant, hint in guesses:
        if relevant and received == value:
            return hint
    return ""


def check_conv_output_size(fn):
    """``fn(n, k, stride, padding, dilation)`` against ``nn.Conv2d``'s output size on 14 cases."""
    for case, n, k, stride, padding, dilation in OUTPUT_SIZE_CASES:
        expected = _reference_output_size(n, k, stride, padding, dilation)
        received = common.call(fn, n, k, stride=stride, padding=padding, dilation=dilation, case=case)
        hint = _output_size_hint(received, n, k, stride, padding, dilation)
        if isinstance(received, bool) or not isinstance(received, numbers.Integral) or not common.is_plain_value(received):
            raise AssertionError(
                f"{case}: output size should be an int (it is used as an array size); "
                f"got {common.type_name(received)} {received!r}, expected {expected}"
                + (f". Hint: {hint}" if hint else "")
            )
        if received != expected:
            raise AssertionError(
                f"{case}: output size is {received!r}, expected {expected} "
                f"(n={n}, k={k}, stride={stride}, padding={padding}, dilation={dilation})"
                + (f". Hint: {hint}" if hint else "")
            )
    common.passed("conv_output_size", len(OUTPUT_SIZE_CASES))


# --------------------------------------------------------------------------- references

def _torch_conv2d(x, w, b, stride, padding, dilation):
    """``torch.nn.functional.conv2d`` on NumPy arrays, in float64; returns a NumPy array."""
    with torch.no_grad():
        out = torch.nn.functional.conv2d(
            torch.from_numpy(np.array(x, dtype=np.float64, order="C")),  # a copy: torch refuses negative strides
            torch.from_numpy(np.array(w, dtype=np.float64, order="C")),
            None if b is None else torch.from_numpy(np.array(b, dtype=np.float64)),
            stride=stride, padding=padding, dilation=dilation,
        )
    return out.numpy()


def _scipy_conv2d(x, w, b, padding):
    """``scipy.signal.correlate2d`` for one image, one channel, one filter, stride 1, no dilation.

    ``padding`` is 0 ('valid') or (K - 1) / 2 for an odd square kernel ('same').
    """
    mode = "valid" if padding == 0 else "same"
    out = scipy.signal.correlate2d(x[0, 0], w[0, 0], mode=mode, boundary="fill", fillvalue=0)  # (H_out, W_out)
    return (out + b[0])[None, None]  # (1, 1, H_out, W_out)


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


# --------------------------------------------------------------------------- forward

# name, x shape (N, C, H, W), w shape (F, C, KH, KW), stride, padding, dilation
FORWARD_CASES = [
    ("one 5x5 channel, 3x3 kernel, bias", (1, 1, 5, 5), (1, 1, 3, 3), 1, 0, 1),
    ("one channel, padding 1 ('same')", (1, 1, 6, 6), (1, 1, 3, 3), 1, 1, 1),
    ("non-square 5x7 input, 2x3 kernel", (1, 1, 5, 7), (1, 1, 2, 3), 1, 0, 1),
    ("stride 2", (1, 1, 7, 7), (1, 1, 3, 3), 2, 0, 1),
    ("stride 2, padding 1", (1, 2, 8, 6), (2, 2, 3, 3), 2, 1, 1),
    ("asymmetric stride (2, 1), padding (0, 1)", (1, 1, 7, 6), (1, 1, 3, 3), (2, 1), (0, 1), 1),
    ("padding (2, 0)", (1, 1, 5, 6), (1, 1, 3, 3), 1, (2, 0), 1),
    ("dilation 2", (1, 1, 9, 8), (1, 1, 3, 3), 1, 0, 2),
    ("dilation (1, 2), padding 2", (1, 2, 6, 7), (2, 2, 3, 3), 1, 2, (1, 2)),
    ("3 channels, 4 filters, batch 2", (2, 3, 6, 5), (4, 3, 3, 3), 1, 0, 1),
    ("1x1 kernel, 3 channels, 2 filters", (2, 3, 4, 5), (2, 3, 1, 1), 1, 0, 1),
    ("kernel as large as the input", (1, 2, 4, 4), (3, 2, 4, 4), 1, 0, 1),
    ("stride 3, floor drops a row and a column", (1, 1, 8, 9), (1, 1, 3, 2), 3, 0, 1),
]
N_RANDOM_FORWARD = 4


def _random_config(rng):
    """A random valid configuration: shapes, stride, padding and dilation as pairs."""
    while True:
        N, C, F = rng.integers(1, 3), rng.integers(1, 4), rng.integers(1, 4)
        H, W = rng.integers(4, 10, size=2)
        KH, KW = rng.integers(1, 4, size=2)
        stride = tuple(int(s) for s in rng.integers(1, 4, size=2))
        padding = tuple(int(p) for p in rng.integers(0, 3, size=2))
        dilation = tuple(int(d) for d in rng.integers(1, 3, size=2))
        if all(d * (k - 1) + 1 <= n + 2 * p for n, k, p, d in zip((H, W), (KH, KW), padding, dilation)):
            x_shape = (int(N), int(C), int(H), int(W))
            w_shape = (int(F), int(C), int(KH), int(KW))
            name = f"random {x_shape} * {w_shape}, stride {stride}, padding {padding}, dilation {dilation}"
            return name, x_shape, w_shape, stride, padding, dilation


def _forward_cases(n_random, seed):
    """Every forward case with its data: (name, x, w, b, stride, padding, dilation, reference name)."""
    rng = np.random.default_rng(seed)
    example_w = np.stack([VERTICAL_EDGE, VERTICAL_EDGE.T])[:, None]  # (2, 1, 3, 3): vertical, horizontal edges
    cases = [("the 6x6 example, vertical and horizontal edge kernels", EXAMPLE_6X6[None, None].copy(),
              example_w, np.array([0.0, 1.0]), 1, 0, 1)]
    configs = FORWARD_CASES + [_random_config(rng) for _ in range(n_random)]
    for name, x_shape, w_shape, stride, padding, dilation in configs:
        x = rng.standard_normal(x_shape)
        w = rng.standard_normal(w_shape)
        b = rng.standard_normal(w_shape[0])
        cases.append((name, x, w, b, stride, padding, dilation))
    return cases


def _reference_forward(x, w, b, stride, padding, dilation):
    """scipy for one channel/filter/image at stride 1 without dilation, torch otherwise."""
    simple = x.shape[:2] == (1, 1) and w.shape[:2] == (1, 1) and stride == 1 and dilation == 1
    square_odd = w.shape[2] == w.shape[3] and w.shape[2] % 2 == 1
    if simple and (padding == 0 or (square_odd and padding == (w.shape[2] - 1) // 2)):
        return _scipy_conv2d(x, w, b, padding)
    return _torch_conv2d(x, w, b, stride, padding, dilation)


def _forward_hint(received, x, w, b, stride, padding, dilation):
    """A hint when ``received`` looks like a typical wrong forward pass; '' otherwise."""
    received = common.as_numpy(received)
    if received.dtype == object:
        return ""
    (SH, SW), (PH, PW), (DH, DW) = _pair(stride), _pair(padding), _pair(dilation)
    # (hint, how to compute the typical wrong answer, whether it can differ from the right one here)
    candidates = [
        ("did you flip the kernel? Deep-learning 'convolution' is cross-correlation: multiply each window by "
         "w[f] as given, not by w[f] rotated by 180 degrees",
         lambda: _torch_conv2d(x, w[:, :, ::-1, ::-1], b, stride, padding, dilation), True),
        ("did you forget the bias? Add b[f] to every output of filter f",
         lambda: _torch_conv2d(x, w, None, stride, padding, dilation), True),
        ("did you sum over the input channels? out[n, f, i, j] sums w[f, c] * window[c] over every channel c",
         lambda: _torch_conv2d(x[:, :1], w[:, :1], b, stride, padding, dilation), x.shape[1] > 1),
        ("did you ignore the stride? Window (i, j) starts at row i*SH, column j*SW of the padded input",
         lambda: _torch_conv2d(x, w, b, 1, padding, dilation), (SH, SW) != (1, 1)),
        ("did you ignore the padding? Pad x with PH zero rows above and below, PW zero columns left and right",
         lambda: _torch_conv2d(x, w, b, stride, 0, dilation), (PH, PW) != (0, 0)),
        ("did you ignore the dilation? Tap (u, v) of the kernel reads row u*DH, column v*DW of the window",
         lambda: _torch_conv2d(x, w, b, stride, padding, 1), (DH, DW) != (1, 1)),
        ("padding goes on both sides: PH rows above *and* below, PW columns left *and* right",
         lambda: _torch_conv2d(np.pad(x, ((0, 0), (0, 0), (PH, 0), (PW, 0))), w, b, stride, 0, dilation),
         (PH, PW) != (0, 0)),
        ("padding goes on both sides: PH rows above *and* below, PW columns left *and* right",
         lambda: _torch_conv2d(np.pad(x, ((0, 0), (0, 0), (0, PH), (0, PW))), w, b, stride, 0, dilation),
         (PH, PW) != (0, 0)),
        ("padding goes on both sides, PH rows above and PH below: not 2*PH on one side",
         lambda: _torch_conv2d(np.pad(x, ((0, 0), (0, 0), (0, 2 * PH), (0, 2 * PW))), w, b, stride, 0, dilation),
         (PH, PW) != (0, 0)),
    ]
    shape_hint = ""
    for hint, wrong, relevant in candidates:
        if not relevant:
            continue
        try:
            value = wrong()
        except RuntimeError:  # this wrong answer is impossible here (kernel larger than the input)
            continue
        if value.shape == received.shape:
            try:
                if np.allclose(received.astype(np.float64), value, rtol=RTOL, atol=ATOL):
                    return hint
            except (TypeError, ValueError):
                return ""
            shape_hint = shape_hint or hint
    expected_shape = _torch_conv2d(x, w, b, stride, padding, dilation).shape
    return shape_hint if received.shape != expected_shape else ""


def _unpack_pair(result, case, name):
    if not (isinstance(result, tuple) and len(result) == 2):
        raise AssertionError(f"{case}: {name} should return a pair (out, cache); got {common.type_name(result)}"
                             + (f" of length {len(result)}" if isinstance(result, tuple) else ""))
    return result


def _assert_unchanged(arrays, copies, case):
    for what, array, copy in zip(("x", "w", "b", "dout"), arrays, copies):
        if not np.array_equal(array, copy):
            raise AssertionError(f"{case}: the function changed its input {what} in place; work on a copy")


def _with_hint(assertion, hint):
    """Re-raise a failed comparison with a hint added (same test, longer message)."""
    message = str(assertion) + (f". Hint: {hint}" if hint else "")
    return AssertionError(message)


def check_conv2d_forward(fn, check_name=None, n_random=N_RANDOM_FORWARD, seed=0):
    """``fn(x, w, b, stride=, padding=, dilation=) -> (out, cache)`` against torch and scipy.

    Cases: the 6x6 example, 13 fixed cases (stride, an asymmetric stride pair, padding,
    dilation, several channels, filters and images, non-square inputs and kernels, bias)
    and ``n_random`` random ones, all float64.
    """
    name = check_name or getattr(fn, "__name__", "conv2d forward")
    cases = _forward_cases(n_random, seed)
    for case, x, w, b, stride, padding, dilation in cases:
        expected = _reference_forward(x, w, b, stride, padding, dilation)
        copies = (x.copy(), w.copy(), b.copy())
        result = common.call(fn, x, w, b, stride=stride, padding=padding, dilation=dilation, case=f"case '{case}'")
        out, _ = _unpack_pair(result, f"case '{case}'", name)
        _assert_unchanged((x, w, b), copies, f"case '{case}'")
        try:
            common.assert_close(out, expected, f"case '{case}'", what="output", rtol=RTOL, atol=ATOL)
        except AssertionError as error:
            raise _with_hint(error, _forward_hint(out, x, w, b, stride, padding, dilation)) from None
    common.passed(name, len(cases))


# --------------------------------------------------------------------------- backward

# name, x shape (N, C, H, W), w shape (F, C, KH, KW), stride, padding, dilation
BACKWARD_CASES = [
    ("one 5x5 channel, 3x3 kernel", (1, 1, 5, 5), (1, 1, 3, 3), 1, 0, 1),
    ("non-square 4x6 input, 2x3 kernel, 2 filters", (1, 1, 4, 6), (2, 1, 2, 3), 1, 0, 1),
    ("3 channels, 2 filters, batch 2", (2, 3, 5, 5), (2, 3, 3, 3), 1, 0, 1),
    ("stride 2, padding 1", (2, 2, 7, 6), (3, 2, 3, 3), 2, 1, 1),
    ("asymmetric stride (2, 1), padding (1, 0)", (1, 2, 7, 5), (2, 2, 3, 2), (2, 1), (1, 0), 1),
    ("dilation 2, padding 2", (1, 1, 7, 7), (2, 1, 3, 3), 1, 2, 2),
    ("stride 3, floor drops a row and a column", (2, 1, 8, 9), (1, 1, 3, 2), 3, 0, 1),
]
N_RANDOM_BACKWARD = 3


def _torch_gradients(x, w, b, dout, stride, padding, dilation, flip_kernel=False):
    """Torch autograd: (out, dx, dw, db) of sum(dout * conv2d(x, w, b)), float64."""
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w[:, :, ::-1, ::-1].copy() if flip_kernel else w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    out = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation)
    (out * torch.from_numpy(dout)).sum().backward()
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def _backward_cases(n_random, seed):
    rng = np.random.default_rng(seed)
    configs = BACKWARD_CASES + [_random_config(rng) for _ in range(n_random)]
    cases = []
    for name, x_shape, w_shape, stride, padding, dilation in configs:
        x = rng.standard_normal(x_shape)
        w = rng.standard_normal(w_shape)
        b = rng.standard_normal(w_shape[0])
        cases.append((name, x, w, b, stride, padding, dilation))
    return cases


def _gradient_hint(what, received, expected, x, w, b, dout, stride, padding, dilation):
    received = common.as_numpy(received)
    if received.dtype == object:
        return ""
    (PH, PW) = _pair(padding)
    N, C, H, W = x.shape

    def same(value):
        try:
            return received.shape == value.shape and np.allclose(received.astype(np.float64), value,
                                                                 rtol=RTOL, atol=ATOL)
        except (TypeError, ValueError):
            return False

    if what == "dx":
        if received.shape == (N, C, H + 2 * PH, W + 2 * PW) and (PH, PW) != (0, 0):
            return "dx must have the shape of x: crop the padding off, dx_pad[:, :, PH:PH+H, PW:PW+W]"
        if same(_torch_gradients(x, w, b, dout, stride, padding, dilation, flip_kernel=True)[1]):
            return ("dx sends dout back through the kernel exactly as the forward used it: "
                    "dx_pad[n, :, window] += dout[n, f, i, j] * w[f] (a *full convolution* of dout with w, "
                    "i.e. a cross-correlation with w rotated by 180 degrees). Did you flip it the wrong way?")
    if what == "dw":
        if same(expected[:, :, ::-1, ::-1]):
            return "dw looks rotated by 180 degrees: dw[f] += dout[n, f, i, j] * window, with the window as read"
        if N > 1 and same(expected / N):
            return "dw sums over the images of the batch; did you average?"
        if N > 1 and same(_torch_gradients(x[:1], w, b, dout[:1], stride, padding, dilation)[2]):
            return "dw sums the contributions of every image in the batch, not only the first"
    if what == "db":
        return ("db[f] is dout[:, f] summed over the batch and every output position: "
                "dout.sum(axis=(0, 2, 3)), shape (F,)")
    return ""


def check_conv2d_backward(forward, backward, check_name=None, n_random=N_RANDOM_BACKWARD, seed=1):
    """``backward(dout, cache) -> (dx, dw, db)`` against torch autograd.

    ``forward(x, w, b, stride=, padding=, dilation=) -> (out, cache)`` is called first
    (its output is checked too), then ``backward`` on a random upstream gradient
    ``dout``; dx, dw and db are compared with the gradients of ``sum(dout * out)``
    that torch autograd computes. 7 fixed cases and ``n_random`` random ones, float64.
    """
    name = check_name or getattr(backward, "__name__", "conv2d backward")
    cases = _backward_cases(n_random, seed)
    rng = np.random.default_rng(seed + 1000)
    for case, x, w, b, stride, padding, dilation in cases:
        label = f"case '{case}'"
        expected_out = _torch_conv2d(x, w, b, stride, padding, dilation)
        dout = rng.standard_normal(expected_out.shape)
        _, dx_ref, dw_ref, db_ref = _torch_gradients(x, w, b, dout, stride, padding, dilation)
        copies = (x.copy(), w.copy(), b.copy(), dout.copy())

        result = common.call(forward, x, w, b, stride=stride, padding=padding, dilation=dilation, case=label)
        out, cache = _unpack_pair(result, label, getattr(forward, "__name__", "the forward pass"))
        try:
            common.assert_close(out, expected_out, label, what="forward output", rtol=RTOL, atol=ATOL)
        except AssertionError as error:
            raise _with_hint(error, "fix the forward pass first: " + (
                _forward_hint(out, x, w, b, stride, padding, dilation) or "its output is wrong")) from None

        grads = common.call(backward, dout, cache, case=label)
        if not (isinstance(grads, tuple) and len(grads) == 3):
            raise AssertionError(f"{label}: {name} should return a triple (dx, dw, db); got {common.type_name(grads)}"
                                 + (f" of length {len(grads)}" if isinstance(grads, tuple) else ""))
        _assert_unchanged((x, w, b, dout), copies, label)
        for what, received, expected in zip(("dx", "dw", "db"), grads, (dx_ref, dw_ref, db_ref)):
            try:
                common.assert_close(received, expected, label, what=what, rtol=RTOL, atol=ATOL)
            except AssertionError as error:
                hint = _gradient_hint(what, received, expected, x, w, b, dout, stride, padding, dilation)
                raise _with_hint(error, hint) from None
    common.passed(name, len(cases))
