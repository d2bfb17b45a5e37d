"""The chapter 02 checks fail on stubs and typical wrong answers, and pass on correct answers written here with torch.

The correct answers below use ``torch.nn.functional`` and autograd, never ``course_utils.numpy_nn``,
so a check that passes them is not just agreeing with the package.
"""
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.checks import pooling as checks
from split_mode import failure, split_mode


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


# --------------------------------------------------------------------------- correct answers, from torch

@dataclass
class TorchCache:
    """What the torch-based forward passes below keep: autograd does the backward pass."""

    x: torch.Tensor  # (N, C, H, W), requires_grad
    out: torch.Tensor  # (N, C, OH, OW)
    kernel: int
    stride: int  # the stride actually used (the kernel when None was passed)
    padding: int


def torch_forward(pool, x, kernel_size, stride, padding):
    xt = torch.tensor(x, requires_grad=True)
    out = pool(xt, kernel_size, stride=stride, padding=padding)
    return out.detach().numpy(), TorchCache(xt, out, kernel_size, kernel_size if stride is None else stride, padding)


def torch_max_forward(x, kernel_size, stride=None, padding=0):
    return torch_forward(F.max_pool2d, x, kernel_size, stride, padding)


def torch_avg_forward(x, kernel_size, stride=None, padding=0):
    return torch_forward(F.avg_pool2d, x, kernel_size, stride, padding)


def torch_backward(dout, cache):
    (dx,) = torch.autograd.grad(cache.out, cache.x, torch.tensor(dout))
    return dx.numpy()


torch_max_backward = torch_avg_backward = torch_backward  # autograd does the work for both


def torch_receptive_field(layers, input_size):
    """Output sizes from real nn.Conv1d layers; receptive field, jump and start from the recurrence."""
    x = torch.zeros(1, 1, input_size)
    jump, field, start, rows = 1, 1, 0.0, []
    for layer in layers:
        k, s, p, d = layer["kernel"], layer["stride"], layer["padding"], layer["dilation"]
        x = torch.nn.Conv1d(1, 1, k, stride=s, padding=p, dilation=d)(x)
        start += ((d * (k - 1)) / 2 - p) * jump
        field += d * (k - 1) * jump
        jump *= s
        rows.append({"receptive_field": field, "jump": jump, "output_size": x.shape[-1], "start": start})
    return rows


# --------------------------------------------------------------------------- plausible wrong answers

def mean_instead_of_max(x, kernel_size, stride=None, padding=0):
    return torch_avg_forward(x, kernel_size, stride, padding)


def max_stride_one(x, kernel_size, stride=None, padding=0):
    return torch_max_forward(x, kernel_size, 1, padding)  # the stride is ignored


def max_padding_ignored(x, kernel_size, stride=None, padding=0):
    return torch_max_forward(x, kernel_size, stride, 0)


def max_zero_padding(x, kernel_size, stride=None, padding=0):
    """Pads with zeros instead of -inf: wrong wherever a window of negative values touches the border."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    return torch_max_forward(xp, kernel_size, stride, 0)


def max_backward_every_element(dout, cache):
    """Sends each window's gradient to every element of the window."""
    x = torch.zeros(cache.x.shape, dtype=torch.float64, requires_grad=True)
    k = cache.kernel
    spread = F.avg_pool2d(x, k, stride=cache.stride, padding=cache.padding) * k * k  # window sums
    (dx,) = torch.autograd.grad(spread, x, torch.tensor(dout))
    return dx.numpy()


def _winner_loops(dout, cache, update):
    """Loop over windows of the -inf padded input; ``update(dxp_window, window, g)`` writes each window's share."""
    x = cache.x.detach().numpy()
    k, s, p = cache.kernel, cache.stride, cache.padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)  # (N, C, H+2P, W+2P)
    dxp = np.zeros_like(xp)
    N, C, H, W = x.shape
    for n in range(N):
        for c in range(C):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    rows, cols = slice(i * s, i * s + k), slice(j * s, j * s + k)
                    update(dxp[n, c, rows, cols], xp[n, c, rows, cols], dout[n, c, i, j])
    return dxp[:, :, p : p + H, p : p + W]


def max_backward_all_ties(dout, cache):
    """Sends each window's gradient to every element equal to the maximum (wrong on ties)."""

    def update(dx_window, window, g):
        dx_window += (window == window.max()) * g

    return _winner_loops(dout, cache, update)


def max_backward_overwrites(dout, cache):
    """Writes (=) instead of adding (+=): an input that wins two overlapping windows keeps only one gradient."""

    def update(dx_window, window, g):
        dx_window[np.unravel_index(np.argmax(window), window.shape)] = g

    return _winner_loops(dout, cache, update)


def avg_count_exclude_pad(x, kernel_size, stride=None, padding=0):
    xt = torch.tensor(x, requires_grad=True)
    out = F.avg_pool2d(xt, kernel_size, stride=stride, padding=padding, count_include_pad=False)
    return out.detach().numpy(), TorchCache(xt, out, kernel_size, stride or kernel_size, padding)


def avg_padding_ignored(x, kernel_size, stride=None, padding=0):
    return torch_avg_forward(x, kernel_size, stride, 0)


def avg_backward_not_divided(dout, cache):
    return torch_backward(dout, cache) * cache.kernel * cache.kernel


def avg_backward_wrong_stride(dout, cache):
    """Spreads the gradient as if the stride were the kernel size (right only for non-overlapping windows)."""
    x = torch.zeros(cache.x.shape, dtype=torch.float64, requires_grad=True)
    pooled = F.avg_pool2d(x, cache.kernel, padding=cache.padding)
    if pooled.shape != cache.out.shape:  # the learner's code would crash or mis-index; a zero gradient is as wrong
        return np.zeros(cache.x.shape)
    (dx,) = torch.autograd.grad(pooled, x, torch.tensor(dout))
    return dx.numpy()


def rf_jump_not_multiplied(layers, input_size):
    rows = torch_receptive_field(layers, input_size)
    field = 1
    for row, layer in zip(rows, layers):
        field += layer["dilation"] * (layer["kernel"] - 1)  # as if every earlier stride were 1
        row["receptive_field"] = field
    return rows


def rf_jump_updated_first(layers, input_size):
    rows = torch_receptive_field(layers, input_size)
    field, jump = 1, 1
    for row, layer in zip(rows, layers):
        jump *= layer["stride"]
        field += layer["dilation"] * (layer["kernel"] - 1) * jump
        row["receptive_field"] = field
    return rows


def rf_dilation_ignored(layers, input_size):
    return torch_receptive_field([{**layer, "dilation": 1} for layer in layers], input_size)


def rf_padding_ignored_in_start(layers, input_size):
    rows = torch_receptive_field(layers, input_size)
    start, jump = 0.0, 1
    for row, layer in zip(rows, layers):
        start += (layer["dilation"] * (layer["kernel"] - 1)) / 2 * jump
        jump *= layer["stride"]
        row["start"] = start
    return rows


def rf_stride_ignored_in_size(layers, input_size):
    rows = torch_receptive_field(layers, input_size)
    size = input_size
    for row, layer in zip(rows, layers):
        size = size + 2 * layer["padding"] - layer["dilation"] * (layer["kernel"] - 1)
        row["output_size"] = size
    return rows


def rf_includes_input_row(layers, input_size):
    return [{"receptive_field": 1, "jump": 1, "output_size": input_size, "start": 0.0}] + torch_receptive_field(
        layers, input_size
    )


# --------------------------------------------------------------------------- max pooling, forward

def test_max_forward_check_passes_torch(capsys):
    checks.check_max_pool2d_forward(torch_max_forward)
    assert "max_pool2d_forward: all 8 cases passed" in capsys.readouterr().out


def test_max_forward_check_fails_on_stub():
    with pytest.raises(AssertionError, match="stub is not implemented yet"):
        checks.check_max_pool2d_forward(stub)


def test_max_forward_check_fails_on_mean_instead_of_max():
    with pytest.raises(AssertionError, match=r"the 4x4 example.*out\[0, 0, 0, 0\] is 3.5, expected 6"):
        checks.check_max_pool2d_forward(mean_instead_of_max)


def test_max_forward_check_fails_on_ignored_stride():
    with pytest.raises(AssertionError, match=r"the 4x4 example.*out has shape \(1, 1, 3, 3\), expected \(1, 1, 2, 2\)"):
        checks.check_max_pool2d_forward(max_stride_one)


def test_max_forward_check_fails_on_ignored_padding():
    with pytest.raises(AssertionError, match=r"padding 1: out has shape \(1, 2, 5, 5\), expected \(1, 2, 7, 7\)"):
        checks.check_max_pool2d_forward(max_padding_ignored)


def test_max_forward_check_fails_on_zero_padding():
    with pytest.raises(AssertionError, match=r"all negative, kernel 3, stride 1, padding 1: out\[0, 0, 0, 0\] is 0, expected"):
        checks.check_max_pool2d_forward(max_zero_padding)


def test_max_forward_check_fails_when_no_cache_is_returned():
    with pytest.raises(AssertionError, match="should return a pair"):
        checks.check_max_pool2d_forward(lambda x, k, stride=None, padding=0: torch_max_forward(x, k, stride, padding)[0])


# --------------------------------------------------------------------------- max pooling, backward

def test_max_backward_check_passes_torch(capsys):
    checks.check_max_pool2d_backward(torch_max_forward, torch_max_backward)
    assert "max_pool2d_backward: all 10 cases passed" in capsys.readouterr().out


def test_max_backward_check_fails_on_stub():
    with pytest.raises(AssertionError, match="stub is not implemented yet"):
        checks.check_max_pool2d_backward(torch_max_forward, stub)


def test_max_backward_check_fails_on_stub_forward():
    with pytest.raises(AssertionError, match="stub is not implemented yet"):
        checks.check_max_pool2d_backward(stub, torch_max_backward)


def test_max_backward_check_fails_on_gradient_to_every_element():
    with pytest.raises(AssertionError, match=r"the 4x4 example.*dx\[.*not every element"):
        checks.check_max_pool2d_backward(torch_max_forward, max_backward_every_element)


def test_max_backward_check_fails_on_gradient_to_every_tied_maximum():
    with pytest.raises(AssertionError, match=r"with ties, kernel 2, stride 2: dx\[.*FIRST maximum"):
        checks.check_max_pool2d_backward(torch_max_forward, max_backward_all_ties)


def test_max_backward_check_fails_on_overwriting_overlaps():
    with pytest.raises(AssertionError, match=r"stride 2 \(overlapping\): dx\[.*add their gradients"):
        checks.check_max_pool2d_backward(torch_max_forward, max_backward_overwrites)


def test_max_backward_check_fails_on_wrong_forward():
    with pytest.raises(AssertionError, match=r"the 4x4 example.*out of max_pool2d_forward\[0, 0, 0, 0\] is 3.5"):
        checks.check_max_pool2d_backward(mean_instead_of_max, torch_max_backward)


# --------------------------------------------------------------------------- average pooling

def test_avg_check_passes_torch(capsys):
    checks.check_avg_pool2d(torch_avg_forward, torch_avg_backward)
    assert "avg_pool2d forward and backward: all 8 cases passed" in capsys.readouterr().out


def test_avg_check_fails_on_stubs():
    with pytest.raises(AssertionError, match="stub is not implemented yet"):
        checks.check_avg_pool2d(stub, torch_avg_backward)
    with pytest.raises(AssertionError, match="stub is not implemented yet"):
        checks.check_avg_pool2d(torch_avg_forward, stub)


def test_avg_check_fails_on_max_instead_of_mean():
    with pytest.raises(AssertionError, match=r"the 4x4 example.*out\[0, 0, 0, 0\] is 6, expected 3.5"):
        checks.check_avg_pool2d(torch_max_forward, torch_max_backward)


def test_avg_check_fails_on_excluding_padding_from_the_count():
    with pytest.raises(AssertionError, match=r"padding 1: out\[0, 0, 0, 0\] is .*, expected"):
        checks.check_avg_pool2d(avg_count_exclude_pad, torch_avg_backward)


def test_avg_check_fails_on_ignored_padding():
    with pytest.raises(AssertionError, match=r"padding 1: out has shape \(1, 2, 5, 5\), expected \(1, 2, 7, 7\)"):
        checks.check_avg_pool2d(avg_padding_ignored, torch_avg_backward)


def test_avg_check_fails_on_backward_not_divided_by_window_size():
    with pytest.raises(AssertionError, match=r"the 4x4 example.*dx\[0, 0, 0, 0\]"):
        checks.check_avg_pool2d(torch_avg_forward, avg_backward_not_divided)


def test_avg_check_fails_on_backward_with_wrong_stride():
    with pytest.raises(AssertionError, match=r"kernel 3, stride 2 \(overlapping\): dx\["):
        checks.check_avg_pool2d(torch_avg_forward, avg_backward_wrong_stride)


# --------------------------------------------------------------------------- receptive field

def test_rf_check_passes_torch_and_recurrence(capsys):
    checks.check_receptive_field(torch_receptive_field)
    assert "receptive_field: all 10 cases passed" in capsys.readouterr().out


def test_rf_check_fails_on_stub():
    with pytest.raises(AssertionError, match="stub is not implemented yet"):
        checks.check_receptive_field(stub)


def test_rf_check_fails_when_jump_is_not_multiplied():
    with pytest.raises(AssertionError, match=r"VGG blocks.*layer 3 .*receptive_field is 8, expected 10.*product of the earlier strides"):
        checks.check_receptive_field(rf_jump_not_multiplied)


def test_rf_check_fails_when_jump_is_updated_before_the_field():
    with pytest.raises(AssertionError, match=r"VGG blocks.*layer 2 .*receptive_field is 7, expected 6.*update the jump after"):
        checks.check_receptive_field(rf_jump_updated_first)


def test_rf_check_fails_when_dilation_is_ignored():
    with pytest.raises(AssertionError, match=r"dilated convolutions.*layer 0 .*receptive_field is 3, expected 5.*dilation"):
        checks.check_receptive_field(rf_dilation_ignored)


def test_rf_check_fails_when_padding_is_ignored_in_start():
    with pytest.raises(AssertionError, match=r"three 3x3 convolutions.*layer 0 .*start is 1.0, expected 0.0"):
        checks.check_receptive_field(rf_padding_ignored_in_start)


def test_rf_check_fails_when_stride_is_ignored_in_output_size():
    with pytest.raises(AssertionError, match=r"VGG blocks.*layer 2 .*output_size is 31, expected 16"):
        checks.check_receptive_field(rf_stride_ignored_in_size)


def test_rf_check_fails_on_an_extra_input_row():
    with pytest.raises(AssertionError, match=r"number of rows \(one per layer\) is 4, expected 3"):
        checks.check_receptive_field(rf_includes_input_row)


def test_rf_check_fails_on_rows_without_the_keys():
    with pytest.raises(AssertionError, match="has no key 'receptive_field'"):
        checks.check_receptive_field(lambda layers, n: [{"rf": 1} for _ in layers])


# --------------------------------------------------------------------------- the empirical reference itself

def test_measured_receptive_field_of_three_3x3_convolutions_is_7():
    conv3 = {"kind": "conv", "kernel": 3, "stride": 1, "padding": 1, "dilation": 1}
    rows = checks.measured_receptive_field([conv3] * 3, 32)
    assert [row["receptive_field"] for row in rows] == [3, 5, 7]
    assert [row["output_size"] for row in rows] == [32, 32, 32]


def test_measured_jump_is_the_product_of_strides():
    conv = {"kind": "conv", "kernel": 3, "stride": 2, "padding": 1, "dilation": 1}
    rows = checks.measured_receptive_field([conv] * 3, 64)
    assert [row["jump"] for row in rows] == [2, 4, 8]


# --------------------------------------------------------------------------- under the grader (split mode)

@dataclass
class Row:
    """A receptive-field row as an object with attributes rather than a dict."""

    receptive_field: int
    jump: int
    output_size: int
    start: float


def rf_rows_as_objects(layers, input_size):
    return [Row(**row) for row in torch_receptive_field(layers, input_size)]


def rf_rows_from_a_generator(layers, input_size):
    return (row for row in torch_receptive_field(layers, input_size))


def rf_rows_without_start(layers, input_size):
    return [Row(row["receptive_field"], row["jump"], row["output_size"], None)
            for row in torch_receptive_field(layers, input_size)]


def rf_rows_of_tuples(layers, input_size):
    return [tuple(row.values()) for row in torch_receptive_field(layers, input_size)]


def rf_rows_without_keys(layers, input_size):
    return [{"rf": 1} for _ in layers]


class PoolCache(NamedTuple):
    """A cache as ``course_utils.numpy_nn`` keeps one: a named tuple (``MaxPool2dCache``)."""

    x: np.ndarray  # (N, C, H, W)
    kernel: int
    stride: int
    padding: int
    pool: str  # "max" or "avg"


def named_tuple_max_forward(x, kernel_size, stride=None, padding=0):
    out = F.max_pool2d(torch.from_numpy(x), kernel_size, stride=stride, padding=padding)
    return out.numpy(), PoolCache(x, kernel_size, kernel_size if stride is None else stride, padding, "max")


def named_tuple_backward(dout, cache):
    """Reads the cache by attribute: it fails unless the named tuple comes back as itself."""
    xt = torch.tensor(cache.x, requires_grad=True)
    pool = F.max_pool2d if cache.pool == "max" else F.avg_pool2d
    (dx,) = torch.autograd.grad(pool(xt, cache.kernel, stride=cache.stride, padding=cache.padding), xt,
                                torch.tensor(dout))
    return dx.numpy()


def test_split_mode_keeps_a_named_tuple_cache_on_the_learners_side(capsys):
    split_mode(checks.check_max_pool2d_backward, named_tuple_max_forward, named_tuple_backward)
    assert "max_pool2d_backward: all 10 cases passed" in capsys.readouterr().out


def test_split_mode_passes_the_correct_answers(capsys):
    split_mode(checks.check_max_pool2d_forward, torch_max_forward)
    split_mode(checks.check_max_pool2d_backward, torch_max_forward, torch_max_backward)
    split_mode(checks.check_avg_pool2d, torch_avg_forward, torch_avg_backward)
    split_mode(checks.check_receptive_field, torch_receptive_field)
    out = capsys.readouterr().out
    for line in ("max_pool2d_forward: all 8 cases passed", "max_pool2d_backward: all 10 cases passed",
                 "avg_pool2d forward and backward: all 8 cases passed", "receptive_field: all 10 cases passed"):
        assert line in out


@pytest.mark.parametrize("rows", [rf_rows_as_objects, rf_rows_from_a_generator], ids=lambda f: f.__name__)
def test_rf_check_accepts_rows_as_objects_and_a_generator_in_both_modes(rows):
    checks.check_receptive_field(rows)
    split_mode(checks.check_receptive_field, rows)


@pytest.mark.parametrize("check, functions", [
    (checks.check_max_pool2d_forward, (stub,)),
    (checks.check_max_pool2d_forward, (mean_instead_of_max,)),
    (checks.check_max_pool2d_forward, (max_stride_one,)),
    (checks.check_max_pool2d_forward, (max_padding_ignored,)),
    (checks.check_max_pool2d_forward, (max_zero_padding,)),
    (checks.check_max_pool2d_backward, (torch_max_forward, stub)),
    (checks.check_max_pool2d_backward, (torch_max_forward, max_backward_every_element)),
    (checks.check_max_pool2d_backward, (torch_max_forward, max_backward_all_ties)),
    (checks.check_max_pool2d_backward, (torch_max_forward, max_backward_overwrites)),
    (checks.check_max_pool2d_backward, (mean_instead_of_max, torch_max_backward)),
    (checks.check_avg_pool2d, (torch_max_forward, torch_max_backward)),
    (checks.check_avg_pool2d, (avg_count_exclude_pad, torch_avg_backward)),
    (checks.check_avg_pool2d, (torch_avg_forward, avg_backward_not_divided)),
    (checks.check_avg_pool2d, (torch_avg_forward, avg_backward_wrong_stride)),
    (checks.check_receptive_field, (stub,)),
    (checks.check_receptive_field, (rf_jump_not_multiplied,)),
    (checks.check_receptive_field, (rf_jump_updated_first,)),
    (checks.check_receptive_field, (rf_dilation_ignored,)),
    (checks.check_receptive_field, (rf_padding_ignored_in_start,)),
    (checks.check_receptive_field, (rf_stride_ignored_in_size,)),
    (checks.check_receptive_field, (rf_includes_input_row,)),
    (checks.check_receptive_field, (rf_rows_without_keys,)),
    (checks.check_receptive_field, (rf_rows_without_start,)),
    (checks.check_receptive_field, (rf_rows_of_tuples,)),
], ids=lambda value: "-".join(f.__name__ for f in value) if isinstance(value, tuple) else value.__name__)
def test_split_mode_fails_wrong_answers_with_the_same_message(check, functions):
    expected = failure(check, *functions)
    assert failure(split_mode, check, *functions) == expected
