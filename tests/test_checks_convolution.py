"""The chapter-01 checks pass a correct answer and fail typical wrong ones, with a useful message.

The correct answers here are written from torch (``torch.nn.functional.conv2d`` and
autograd), not from ``course_utils.numpy_nn``; each wrong answer is the correct one
with one typical mistake.
"""
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.checks import convolution as checks
from split_mode import failure, split_mode


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


# --------------------------------------------------------------------------- output size

def correct_output_size(n, k, stride=1, padding=0, dilation=1):
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def stub_output_size(n, k, stride=1, padding=0, dilation=1):
    raise NotImplementedError("exercise: replace this line with your code")


def test_output_size_check_passes_a_correct_answer(capsys):
    checks.check_conv_output_size(correct_output_size)
    assert "✓ conv_output_size: all 14 cases passed." in capsys.readouterr().out


def test_output_size_check_accepts_numpy_integers():
    checks.check_conv_output_size(lambda n, k, stride, padding, dilation: np.int64(
        correct_output_size(n, k, stride, padding, dilation)))


def test_output_size_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match=r"stub_output_size is not implemented yet \(n=6, k=3\)"):
        checks.check_conv_output_size(stub_output_size)


OUTPUT_SIZE_MISTAKES = [
    (lambda n, k, stride, padding, dilation: (n + 2 * padding - dilation * (k - 1) - 1) / stride + 1,
     r"n=6, k=3: output size should be an int .* got float 4.0, expected 4. Hint: use floor division `//`"),
    (lambda n, k, stride, padding, dilation: (n + 2 * padding - k) // stride + 1,
     r"n=9, k=3, dilation 2: output size is 7, expected 5 .* Hint: did you forget the dilation"),
    (lambda n, k, stride, padding, dilation: (n + padding - dilation * (k - 1) - 1) // stride + 1,
     r"padding 1 \('same'\): output size is 6, expected 7 .* Hint: padding adds p zeros on each side"),
    (lambda n, k, stride, padding, dilation: (n + 2 * padding - dilation * (k - 1) - 1) // stride,
     r"n=6, k=3: output size is 3, expected 4 .* Hint: did you forget the \+1"),
    (lambda n, k, stride, padding, dilation: n + 2 * padding - dilation * (k - 1),
     r"n=7, k=3, stride 2: output size is 5, expected 3 .* Hint: did you ignore the stride"),
    (lambda n, k, stride, padding, dilation: int(np.ceil((n + 2 * padding - dilation * (k - 1) - 1) / stride)) + 1,
     r"n=6, k=3, stride 2 \(the floor drops the last row\): output size is 3, expected 2"),
]
OUTPUT_SIZE_IDS = ["true division", "no dilation", "padding once", "no +1", "no stride", "ceil"]


@pytest.mark.parametrize("wrong, fragment", OUTPUT_SIZE_MISTAKES, ids=OUTPUT_SIZE_IDS)
def test_output_size_check_fails_on_typical_mistakes(wrong, fragment):
    with pytest.raises(AssertionError, match=fragment):
        checks.check_conv_output_size(wrong)


def test_output_size_check_reports_a_crash_as_a_failed_case():
    def crashes(n, k, stride=1, padding=0, dilation=1):
        raise ZeroDivisionError("oops")

    with pytest.raises(AssertionError, match="n=6, k=3: crashes raised ZeroDivisionError: oops"):
        checks.check_conv_output_size(crashes)


# --------------------------------------------------------------------------- forward

def correct_forward(x, w, b, stride=1, padding=0, dilation=1):
    """torch's conv2d on NumPy arrays; the cache holds what torch autograd needs."""
    out = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                   stride=stride, padding=padding, dilation=dilation)
    return out.numpy(), (x, w, b, stride, padding, dilation)


def stub_forward(x, w, b, stride=1, padding=0, dilation=1):
    raise NotImplementedError("exercise: replace this line with your code")


def flipped_kernel(x, w, b, stride=1, padding=0, dilation=1):
    return correct_forward(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b, stride, padding, dilation)


def no_bias(x, w, b, stride=1, padding=0, dilation=1):
    return correct_forward(x, w, np.zeros_like(b), stride, padding, dilation)


def stride_ignored(x, w, b, stride=1, padding=0, dilation=1):
    return correct_forward(x, w, b, 1, padding, dilation)


def dilation_ignored(x, w, b, stride=1, padding=0, dilation=1):
    return correct_forward(x, w, b, stride, padding, 1)


def padding_before_only(x, w, b, stride=1, padding=0, dilation=1):
    PH, PW = _pair(padding)
    return correct_forward(np.pad(x, ((0, 0), (0, 0), (PH, 0), (PW, 0))), w, b, stride, 0, dilation)


def padding_twice_after(x, w, b, stride=1, padding=0, dilation=1):
    PH, PW = _pair(padding)
    return correct_forward(np.pad(x, ((0, 0), (0, 0), (0, 2 * PH), (0, 2 * PW))), w, b, stride, 0, dilation)


def first_channel_only(x, w, b, stride=1, padding=0, dilation=1):
    return correct_forward(np.ascontiguousarray(x[:, :1]), np.ascontiguousarray(w[:, :1]), b, stride, padding, dilation)


def output_only(x, w, b, stride=1, padding=0, dilation=1):
    return correct_forward(x, w, b, stride, padding, dilation)[0]


def float32_inside(x, w, b, stride=1, padding=0, dilation=1):
    """Correct, but computed in float32: must pass (the tolerance allows float32)."""
    out, cache = correct_forward(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32),
                                 stride, padding, dilation)
    return out, cache


def changes_x_in_place(x, w, b, stride=1, padding=0, dilation=1):
    result = correct_forward(x, w, b, stride, padding, dilation)
    x *= 2
    return result


def test_forward_check_passes_a_correct_answer(capsys):
    checks.check_conv2d_forward(correct_forward)
    assert "✓ correct_forward: all 18 cases passed." in capsys.readouterr().out


def test_forward_check_passes_a_correct_answer_computed_in_float32():
    checks.check_conv2d_forward(float32_inside)


def test_forward_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="stub_forward is not implemented yet"):
        checks.check_conv2d_forward(stub_forward)


FORWARD_MISTAKES = [
    (flipped_kernel, r"case 'the 6x6 example, vertical and horizontal edge kernels': output\[0, 0, 0, 0\] is 5, "
                     r"expected -5 .* Hint: did you flip the kernel\?"),
    (no_bias, r"case 'the 6x6 example, vertical and horizontal edge kernels': output\[0, 1, 0, 0\] is -7, "
              r"expected -6 .* Hint: did you forget the bias\?"),
    (first_channel_only, r"case 'stride 2, padding 1': output\[0, 0, 0, 0\] is .* expected .* "
                         r"Hint: did you sum over the input channels\?"),
    (stride_ignored, r"case 'stride 2': output has shape \(1, 1, 5, 5\), expected \(1, 1, 3, 3\). "
                     r"Hint: did you ignore the stride\?"),
    (dilation_ignored, r"case 'dilation 2': output has shape \(1, 1, 7, 6\), expected \(1, 1, 5, 4\). "
                       r"Hint: did you ignore the dilation\?"),
    (padding_before_only, r"case 'one channel, padding 1 \('same'\)': output has shape \(1, 1, 5, 5\), "
                          r"expected \(1, 1, 6, 6\). Hint: padding goes on both sides"),
    (padding_twice_after, r"case 'one channel, padding 1 \('same'\)': output\[0, 0, 0, 0\] is .* "
                          r"Hint: padding goes on both sides, PH rows above and PH below"),
    (output_only, r"case 'the 6x6 example.*': output_only should return a pair \(out, cache\); got ndarray"),
    (changes_x_in_place, r"case 'the 6x6 example.*': the function changed its input x in place"),
]


@pytest.mark.parametrize("wrong, fragment", FORWARD_MISTAKES, ids=lambda value: getattr(value, "__name__", "message"))
def test_forward_check_fails_on_typical_mistakes(wrong, fragment):
    with pytest.raises(AssertionError, match=fragment):
        checks.check_conv2d_forward(wrong)


def test_forward_check_catches_a_mistake_seen_only_in_random_cases():
    """A forward that is right for every fixed case but wrong once both padding and dilation are pairs."""
    def wrong_on_mixed_pairs(x, w, b, stride=1, padding=0, dilation=1):
        if isinstance(padding, tuple) and isinstance(dilation, tuple) and padding[0] != padding[1]:
            padding = padding[::-1]
        return correct_forward(x, w, b, stride, padding, dilation)

    with pytest.raises(AssertionError, match=r"case 'random .*': output"):
        checks.check_conv2d_forward(wrong_on_mixed_pairs)


def test_forward_check_names_itself_as_asked(capsys):
    checks.check_conv2d_forward(correct_forward, check_name="conv2d_forward_naive")
    assert "✓ conv2d_forward_naive: all 18 cases passed." in capsys.readouterr().out


# --------------------------------------------------------------------------- backward

def correct_backward(dout, cache):
    """Gradients of sum(dout * conv2d(x, w, b)) by torch autograd."""
    x, w, b, stride, padding, dilation = cache
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = F.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation)
    (out * torch.from_numpy(dout)).sum().backward()
    return xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def stub_backward(dout, cache):
    raise NotImplementedError("exercise: replace this line with your code")


def dw_flipped(dout, cache):
    dx, dw, db = correct_backward(dout, cache)
    return dx, np.ascontiguousarray(dw[:, :, ::-1, ::-1]), db


def db_not_summed_over_positions(dout, cache):
    dx, dw, db = correct_backward(dout, cache)
    return dx, dw, dout.sum(axis=0)  # (F, H_out, W_out)


def db_first_image_only(dout, cache):
    dx, dw, db = correct_backward(dout, cache)
    return dx, dw, dout[0].sum(axis=(1, 2))  # (F,), batch not summed


def dx_with_the_kernel_flipped(dout, cache):
    x, w, b, stride, padding, dilation = cache
    _, dw, db = correct_backward(dout, cache)
    dx, _, _ = correct_backward(dout, (x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b, stride, padding, dilation))
    return dx, dw, db


def dx_padding_not_cropped(dout, cache):
    x, w, b, stride, padding, dilation = cache
    PH, PW = _pair(padding)
    x_pad = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    dx_pad, dw, db = correct_backward(dout, (x_pad, w, b, stride, 0, dilation))
    return dx_pad, dw, db


def dw_averaged_over_the_batch(dout, cache):
    dx, dw, db = correct_backward(dout, cache)
    return dx, dw / cache[0].shape[0], db


def returns_a_list(dout, cache):
    return list(correct_backward(dout, cache))


def test_backward_check_passes_a_correct_answer(capsys):
    checks.check_conv2d_backward(correct_forward, correct_backward)
    assert "✓ correct_backward: all 10 cases passed." in capsys.readouterr().out


def test_backward_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="stub_backward is not implemented yet"):
        checks.check_conv2d_backward(correct_forward, stub_backward)


def test_backward_check_fails_on_a_stub_forward():
    with pytest.raises(AssertionError, match="stub_forward is not implemented yet"):
        checks.check_conv2d_backward(stub_forward, correct_backward)


def test_backward_check_fails_on_a_wrong_forward_first():
    with pytest.raises(AssertionError, match=r"forward output\[.*Hint: fix the forward pass first: did you flip"):
        checks.check_conv2d_backward(flipped_kernel, correct_backward)


BACKWARD_MISTAKES = [
    (dw_flipped, r"case 'one 5x5 channel, 3x3 kernel': dw\[0, 0, 0, 0\] is .* expected .* "
                 r"Hint: dw looks rotated by 180 degrees"),
    (db_not_summed_over_positions, r"case 'one 5x5 channel, 3x3 kernel': db has shape \(1, 3, 3\), expected \(1,\). "
                                   r"Hint: db\[f\] is dout\[:, f\] summed over the batch and every output position"),
    (db_first_image_only, r"case '3 channels, 2 filters, batch 2': db\[0\] is .* Hint: db\[f\] is dout\[:, f\] summed"),
    (dx_with_the_kernel_flipped, r"case 'one 5x5 channel, 3x3 kernel': dx\[0, 0, 0, 0\] is .* "
                                 r"Hint: dx sends dout back through the kernel exactly as the forward used it"),
    (dx_padding_not_cropped, r"case 'stride 2, padding 1': dx has shape \(2, 2, 9, 8\), expected \(2, 2, 7, 6\). "
                             r"Hint: dx must have the shape of x: crop the padding off"),
    (dw_averaged_over_the_batch, r"case '3 channels, 2 filters, batch 2': dw\[.*Hint: dw sums over the images"),
    (returns_a_list, r"returns_a_list should return a triple \(dx, dw, db\); got list"),
]


@pytest.mark.parametrize("wrong, fragment", BACKWARD_MISTAKES, ids=lambda value: getattr(value, "__name__", "message"))
def test_backward_check_fails_on_typical_mistakes(wrong, fragment):
    with pytest.raises(AssertionError, match=fragment):
        checks.check_conv2d_backward(correct_forward, wrong)


def test_hints_never_make_a_wrong_answer_pass():
    """Every wrong answer above fails even where its hint cannot apply (fixed seed, other random cases)."""
    for wrong in (dw_flipped, db_first_image_only, dx_with_the_kernel_flipped, dw_averaged_over_the_batch):
        with pytest.raises(AssertionError):
            checks.check_conv2d_backward(correct_forward, wrong, seed=7)
    for wrong in (flipped_kernel, no_bias, stride_ignored, first_channel_only, padding_before_only):
        with pytest.raises(AssertionError):
            checks.check_conv2d_forward(wrong, seed=7)


# --------------------------------------------------------------------------- under the grader (split mode)

def test_split_mode_passes_the_correct_answers(capsys):
    split_mode(checks.check_conv_output_size, correct_output_size)
    split_mode(checks.check_conv2d_forward, correct_forward, check_name="conv2d_forward_naive")
    split_mode(checks.check_conv2d_forward, float32_inside)
    split_mode(checks.check_conv2d_backward, correct_forward, correct_backward)
    out = capsys.readouterr().out
    assert "✓ conv_output_size: all 14 cases passed." in out
    assert "✓ conv2d_forward_naive: all 18 cases passed." in out
    assert "✓ correct_backward: all 10 cases passed." in out


@pytest.mark.parametrize("wrong", [wrong for wrong, _ in OUTPUT_SIZE_MISTAKES] + [stub_output_size],
                         ids=OUTPUT_SIZE_IDS + ["stub"])
def test_split_mode_fails_output_size_mistakes_with_the_same_message(wrong):
    expected = failure(checks.check_conv_output_size, wrong)
    assert failure(split_mode, checks.check_conv_output_size, wrong) == expected


def returns_an_object(x, w, b, stride=1, padding=0, dilation=1):
    """(out, cache) in an object that is not plain data: under the grader it stays behind a handle."""
    out, cache = correct_forward(x, w, b, stride, padding, dilation)
    return types.SimpleNamespace(out=out, cache=cache)


@pytest.mark.parametrize("wrong", [wrong for wrong, _ in FORWARD_MISTAKES] + [stub_forward, returns_an_object],
                         ids=lambda value: value.__name__)
def test_split_mode_fails_forward_mistakes_with_the_same_message(wrong):
    expected = failure(checks.check_conv2d_forward, wrong)
    assert failure(split_mode, checks.check_conv2d_forward, wrong) == expected


@pytest.mark.parametrize("forward, backward", [(correct_forward, wrong) for wrong, _ in BACKWARD_MISTAKES]
                         + [(flipped_kernel, correct_backward), (correct_forward, stub_backward)],
                         ids=lambda value: value.__name__)
def test_split_mode_fails_backward_mistakes_with_the_same_message(forward, backward):
    expected = failure(checks.check_conv2d_backward, forward, backward)
    assert failure(split_mode, checks.check_conv2d_backward, forward, backward) == expected
