"""Checks for the exercises of chapter 02, pooling and receptive fields (``solutions/02_pooling.ipynb``).

References, all independent of ``course_utils``:

* pooling forward passes: ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` (``count_include_pad=True``);
* pooling backward passes: torch autograd through the same functions, in float64;
* receptive fields: measured, not computed by formula. Each stack is rebuilt from
  ``torch.nn.functional.conv1d`` with all-ones kernels (a pooling window has the same geometry
  as a convolution); the gradient of one output unit with respect to the input is non-zero
  exactly on the input pixels connected to it, so the first and last such pixel give its
  receptive field, the shift between two neighbouring units gives the jump, and running the
  real input size through the stack gives the output size.
"""
import numpy as np
import torch
import torch.nn.functional as F

from course_utils.checks import common, learner

# the 4x4 -> 2x2 example of the lecture (a 2x2 window, stride 2)
EXAMPLE_4X4 = np.array(
    [[1.0, 3.0, 2.0, 1.0],
     [4.0, 6.0, 5.0, 0.0],
     [3.0, 1.0, 1.0, 2.0],
     [0.0, 2.0, 8.0, 7.0]]
)[None, None]  # (1, 1, 4, 4)

# Tolerance of every value comparison (as in chapter 01): the data are float64, so a correct answer is off by
# about 1e-15 (about 1e-7 if computed in float32) and a wrong one by about 0.1 or more.
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _as_pair(result, name):
    """``(out, cache)`` from a forward pass, or a clear failure when it returned something else."""
    if isinstance(result, tuple) and len(result) == 2:
        return result
    raise AssertionError(f"{name} should return a pair (out, cache); got {common.type_name(result)}")


def _pool_cases(seed):
    """(case name, x, kernel, stride, padding) for the pooling checks; stride None means 'default'."""
    rng = np.random.default_rng(seed)
    return [
        ("the 4x4 example, kernel 2, stride 2", EXAMPLE_4X4.copy(), 2, 2, 0),
        ("x (2, 3, 8, 8), kernel 2, default stride", rng.standard_normal((2, 3, 8, 8)), 2, None, 0),
        ("x (2, 2, 9, 7), kernel 3, stride 2 (overlapping)", rng.standard_normal((2, 2, 9, 7)), 3, 2, 0),
        ("x (1, 2, 7, 7) all negative, kernel 3, stride 1, padding 1", rng.standard_normal((1, 2, 7, 7)) - 4.0, 3, 1, 1),
        ("x (2, 1, 6, 10) all negative, kernel 2, stride 2, padding 1", -rng.random((2, 1, 6, 10)) - 0.5, 2, 2, 1),
        ("x (1, 1, 9, 9), kernel 3, default stride", rng.standard_normal((1, 1, 9, 9)), 3, None, 0),
        ("x (1, 3, 11, 11), kernel 2, stride 3 (gaps)", rng.standard_normal((1, 3, 11, 11)), 2, 3, 0),
        ("x (2, 2, 10, 10), kernel 4, stride 2, padding 2", rng.standard_normal((2, 2, 10, 10)), 4, 2, 2),
    ]


def _call_forward(forward, x, kernel, stride, padding, case):
    if stride is None:  # exercise the default
        result = common.call(forward, x.copy(), kernel, padding=padding, case=case)
    else:
        result = common.call(forward, x.copy(), kernel, stride=stride, padding=padding, case=case)
    return _as_pair(result, getattr(forward, "__name__", "the forward pass"))


def _torch_pool(kind, x, kernel, stride, padding, dout=None):
    """Reference output (and, with ``dout``, input gradient) from torch in float64."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    out = pool(xt, kernel, stride=stride, padding=padding)  # stride None: torch's default, the kernel
    if dout is None:
        return out.detach().numpy(), None
    out.backward(torch.tensor(dout, dtype=torch.float64))
    return out.detach().numpy(), xt.grad.numpy()


def check_max_pool2d_forward(max_pool2d_forward):
    """``max_pool2d_forward(x, kernel_size, stride=None, padding=0) -> (out, cache)`` against ``F.max_pool2d``."""
    cases = _pool_cases(seed=2)
    for case, x, kernel, stride, padding in cases:
        out, _ = _call_forward(max_pool2d_forward, x, kernel, stride, padding, case)
        expected, _ = _torch_pool("max", x, kernel, stride, padding)
        common.assert_close(out, expected, case, what="out", **TOL)
    common.passed("max_pool2d_forward", len(cases))


def check_max_pool2d_backward(max_pool2d_forward, max_pool2d_backward):
    """``max_pool2d_backward(dout, cache) -> dx`` against autograd through ``F.max_pool2d``.

    Includes inputs with ties, where the whole gradient of a window must go to its FIRST
    maximum in row-major order (as ``np.argmax`` and PyTorch on the CPU do).
    """
    rng = np.random.default_rng(3)
    ties = rng.integers(0, 3, size=(2, 2, 6, 6)).astype(np.float64)  # (2, 2, 6, 6), many equal values
    cases = _pool_cases(seed=4) + [
        ("x (2, 2, 6, 6) with ties, kernel 2, stride 2", ties, 2, 2, 0),
        ("x (2, 2, 6, 6) with ties, kernel 3, stride 1 (overlapping)", ties, 3, 1, 0),
    ]
    for case, x, kernel, stride, padding in cases:
        out, cache = _call_forward(max_pool2d_forward, x, kernel, stride, padding, case)
        expected_out, _ = _torch_pool("max", x, kernel, stride, padding)
        common.assert_close(out, expected_out, case, what="out of max_pool2d_forward", **TOL)
        dout = rng.standard_normal(expected_out.shape)  # (N, C, OH, OW)
        dx = common.call(max_pool2d_backward, dout.copy(), cache, case=case)
        _, expected_dx = _torch_pool("max", x, kernel, stride, padding, dout)
        try:
            common.assert_close(dx, expected_dx, case, what="dx", **TOL)
        except AssertionError as error:
            raise AssertionError(f"{error}{_max_backward_hint(dx, x, kernel, stride, padding, dout, case)}") from None
    common.passed("max_pool2d_backward", len(cases))


def _max_backward_hint(dx, x, kernel, stride, padding, dout, case):
    """A sentence for a typical wrong max-pool gradient (empty when none fits)."""
    # every element of each window receiving the window's gradient: average pooling's backward times KH*KW
    _, spread = _torch_pool("avg", x, kernel, stride, padding, dout)
    spread = spread * kernel * kernel
    if np.shape(common.as_numpy(dx)) == spread.shape and np.allclose(common.as_numpy(dx), spread):
        return " (hint: only the maximum of each window receives its gradient, not every element)"
    if "ties" in case:
        return " (hint: on ties, the gradient goes to the FIRST maximum of the window in row-major order, as np.argmax picks)"
    if stride is not None and stride < kernel:
        return " (hint: windows overlap here, so one input can win several windows: add their gradients, don't overwrite)"
    return ""


def check_avg_pool2d(avg_pool2d_forward, avg_pool2d_backward):
    """Average pooling forward and backward against ``F.avg_pool2d`` (count_include_pad=True) and autograd."""
    rng = np.random.default_rng(5)
    cases = _pool_cases(seed=6)
    for case, x, kernel, stride, padding in cases:
        out, cache = _call_forward(avg_pool2d_forward, x, kernel, stride, padding, case)
        expected_out, _ = _torch_pool("avg", x, kernel, stride, padding)
        common.assert_close(out, expected_out, case, what="out", **TOL)
        dout = rng.standard_normal(expected_out.shape)  # (N, C, OH, OW)
        dx = common.call(avg_pool2d_backward, dout.copy(), cache, case=case)
        _, expected_dx = _torch_pool("avg", x, kernel, stride, padding, dout)
        common.assert_close(dx, expected_dx, case, what="dx", **TOL)
    common.passed("avg_pool2d forward and backward", len(cases))


# --------------------------------------------------------------------------- receptive field

def _layer(kind, kernel, stride=1, padding=0, dilation=1):
    return {"kind": kind, "kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation}


def _rf_cases():
    """(case name, layers, input size); every layer fits its input."""
    conv3 = _layer("conv", 3, padding=1)
    pool2 = _layer("maxpool", 2, stride=2)
    cases = [
        ("three 3x3 convolutions, input 32", [conv3, conv3, conv3], 32),
        ("one 7x7 convolution, padding 3, input 32", [_layer("conv", 7, padding=3)], 32),
        ("VGG blocks (conv3, conv3, maxpool2) x 2, input 32", [conv3, conv3, pool2, conv3, conv3, pool2], 32),
        (
            "ResNet stem (conv7 s2 p3, maxpool3 s2 p1) then conv3, conv3 s2, input 224",
            [_layer("conv", 7, 2, 3), _layer("maxpool", 3, 2, 1), conv3, _layer("conv", 3, 2, 1)],
            224,
        ),
        ("dilated convolutions (d=2, then d=4), input 64", [_layer("conv", 3, 1, 2, 2), _layer("conv", 3, 1, 4, 4)], 64),
        (
            "AlexNet-like (conv11 s4 p2, maxpool3 s2, conv5 p2, avgpool3 s2), input 227",
            [_layer("conv", 11, 4, 2), _layer("maxpool", 3, 2), _layer("conv", 5, 1, 2), _layer("avgpool", 3, 2)],
            227,
        ),
        ("a 1x1 conv with stride 2, then a 3x3 conv, input 15", [_layer("conv", 1, 2), _layer("conv", 3)], 15),
    ]
    rng = np.random.default_rng(7)
    while len(cases) < 10:  # three random stacks of 3 to 5 layers
        layers = []
        for _ in range(rng.integers(3, 6)):
            kernel = int(rng.choice([1, 2, 3, 5]))
            layers.append(_layer(
                str(rng.choice(["conv", "maxpool", "avgpool"])), kernel, int(rng.integers(1, 3)),
                int(rng.integers(0, kernel // 2 + 1)), int(rng.choice([1, 1, 2])),
            ))
        if _measured_sizes(layers, 48)[-1] >= 1:
            cases.append((f"random stack {len(cases) - 6} of {len(layers)} layers, input 48", layers, 48))
    return cases


def _stack(x, layers, stop):
    """Run ``layers[:stop]`` on ``x`` (N, 1, L) as all-ones 1-D convolutions; return every output."""
    outputs = []
    for layer in layers[:stop]:
        ones = torch.ones(1, 1, layer["kernel"], dtype=torch.float64)  # (F=1, C=1, K)
        x = F.conv1d(x, ones, stride=layer["stride"], padding=layer["padding"], dilation=layer["dilation"])
        outputs.append(x)
    return outputs


def _measured_sizes(layers, input_size):
    """Output length after each layer, by running a real input (0 where the stack stops fitting)."""
    x = torch.zeros(1, 1, input_size, dtype=torch.float64)
    sizes = []
    for layer in layers:
        try:
            x = _stack(x, [layer], 1)[0]
        except RuntimeError:  # torch refuses a window larger than its padded input
            return sizes + [0] * (len(layers) - len(sizes))
        sizes.append(x.shape[-1])
    return sizes


def measured_receptive_field(layers, input_size):
    """The empirical reference: a list of dicts (receptive_field, jump, output_size, start), one per layer."""
    sizes = _measured_sizes(layers, input_size)
    # a probe long enough that a unit in the middle of every layer sees no border:
    # four times a bound on the receptive field, plus room for a few units
    bound, jump = 1, 1
    for layer in layers:
        bound += layer["dilation"] * layer["kernel"] * jump
        jump *= layer["stride"]
    probe = 4 * bound + 4 * jump + 64
    x = torch.zeros(1, 1, probe, dtype=torch.float64, requires_grad=True)
    outputs = _stack(x, layers, len(layers))
    rows = []
    for size, y in zip(sizes, outputs):
        unit = y.shape[-1] // 2
        spans = []
        for u in (unit, unit + 1):
            (grad,) = torch.autograd.grad(y[0, 0, u], x, retain_graph=True)
            touched = torch.nonzero(grad[0, 0]).flatten()  # input pixels that reach unit u
            spans.append((int(touched.min()), int(touched.max())))
        (first, last), (next_first, next_last) = spans
        assert first > 0 and next_last < probe - 1, "the probe input is too short for this stack"
        jump = next_first - first
        rows.append({
            "receptive_field": last - first + 1,
            "jump": jump,
            "output_size": size,
            "start": (first + last) / 2 - unit * jump,  # centre of unit 0, extrapolated back from the middle
        })
    return rows


RF_KEYS = ("receptive_field", "jump", "output_size", "start")  # the fields of one row


def learner_receptive_field(receptive_field, layers, input_size, case):
    """Call the learner's ``receptive_field(layers, input_size)`` where it lives; return its rows as plain data.

    One entry per row: ``("dict", row)`` for a dict, ``("object", fields, text)`` for another object (a named
    tuple, a dataclass), ``fields`` holding the attributes of ``RF_KEYS`` it has and ``text`` its repr (80
    characters at most), so that the check reads either kind of row in the same way in the learner's notebook
    and under the grader.
    """
    rows = common.call(receptive_field, layers, input_size, case=case)
    try:
        rows = list(rows)
    except TypeError:
        raise AssertionError(f"{case}: expected a list of rows, got {type(rows).__name__}") from None
    return [("dict", row) if isinstance(row, dict)
            else ("object", {key: getattr(row, key) for key in RF_KEYS if hasattr(row, key)}, f"{row!r:.80}")
            for row in rows]


def _field(row, key, case, index):
    """Field ``key`` of a row as ``learner_receptive_field`` describes it."""
    if not (isinstance(row, tuple) and len(row) in (2, 3) and isinstance(row[1], dict)):
        raise AssertionError(f"{case}: row {index} could not be read back")
    if row[0] == "dict":
        if key not in row[1]:
            raise AssertionError(f"{case}: row {index} has no key {key!r}; its keys are {sorted(row[1])}")
        return row[1][key]
    if key not in row[1]:
        raise AssertionError(f"{case}: row {index} should be a dict with key {key!r}; got {row[2]}")
    return row[1][key]


def _rf_hint(key, received, layers):
    """A sentence for a typical wrong receptive field (empty when none fits)."""
    if key != "receptive_field":
        return ""
    spans = [layer["dilation"] * (layer["kernel"] - 1) + 1 for layer in layers]
    if received == 1 + sum(span - 1 for span in spans):
        return " (hint: each layer adds (k_eff - 1) * jump, where the jump is the product of the earlier strides)"
    if received == 1 + sum(layer["kernel"] - 1 for layer in layers):
        return " (hint: did you forget the dilation? a dilated kernel spans d * (k - 1) + 1 pixels)"
    jump, late = 1, 1
    for layer, span in zip(layers, spans):
        jump *= layer["stride"]
        late += (span - 1) * jump
    if received == late:
        return " (hint: a layer's own stride only affects the layers after it: update the jump after the receptive field)"
    return ""


def check_receptive_field(receptive_field):
    """``receptive_field(layers, input_size)`` against receptive fields measured with gradients.

    ``layers`` is a list of dicts with keys kind, kernel, stride, padding, dilation; the function
    returns one row per layer, each a dict with keys receptive_field, jump, output_size and start
    (the centre of the first output unit's receptive field, in input pixel coordinates). The learner's function
    runs in ``learner_receptive_field``, which sends its rows back as plain data.
    """
    cases = _rf_cases()
    for case, layers, input_size in cases:
        rows = learner.run(learner_receptive_field, receptive_field, [dict(layer) for layer in layers], input_size,
                           case)
        if not isinstance(rows, list):
            raise AssertionError(f"{case}: the rows could not be read back")
        common.assert_equal(len(rows), len(layers), case, what="number of rows (one per layer)")
        expected = measured_receptive_field(layers, input_size)
        for index, (row, want) in enumerate(zip(rows, expected)):
            where = f"{case}, layer {index} ({layers[index]['kind']} k={layers[index]['kernel']} "
            where += f"s={layers[index]['stride']} p={layers[index]['padding']} d={layers[index]['dilation']})"
            for key in ("receptive_field", "jump", "output_size"):
                received = _field(row, key, case, index)
                if received != want[key]:
                    hint = _rf_hint(key, received, layers[: index + 1])
                    raise AssertionError(f"{where}: {key} is {received!r}, expected {want[key]!r}{hint}")
            start = _field(row, "start", case, index)
            if not isinstance(start, (int, float, np.integer, np.floating)) or abs(start - want["start"]) > 1e-9:
                raise AssertionError(f"{where}: start is {start!r}, expected {want['start']!r}")
    common.passed("receptive_field", len(cases))
