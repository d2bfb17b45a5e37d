"""The chapter 17 checks pass on right answers written in different ways and fail on the usual mistakes, in process
and in split mode (as ``course-grade`` runs them) with the same message.

Right answers: the transposed convolution as a scatter (loops and one tap at a time), as a convolution of the
zero-stuffed input with the flipped kernel, and as the input gradient of chapter 01's convolution; box IoU
vectorised and with loops; NMS with a Python list and with a shrinking index tensor; the decoder block with
functional or module ReLUs; the mean IoU from a confusion matrix, from torchmetrics and with a loop over classes.
Each wrong answer changes one thing.
"""
import numpy as np
import pytest
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from course_utils.checks import dense_prediction as checks
from course_utils.numpy_nn.conv import conv2d_backward, conv2d_forward
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


class StubBlock(nn.Module):
    def __init__(self, in_channels, skip_channels, out_channels):
        raise NotImplementedError("exercise: replace this line with your code")


@pytest.mark.parametrize("check, answer", [
    (checks.check_conv_transpose2d, stub), (checks.check_box_iou, stub), (checks.check_nms, stub),
    (checks.check_decoder_block, StubBlock), (checks.check_mean_iou, stub)],
    ids=["conv_transpose2d", "box_iou", "nms", "decoder block", "mean_iou"])
def test_every_check_fails_on_the_stub_of_the_unsolved_exercise(check, answer):
    assert_same_failure(check, {"learner_answer": answer}, "not implemented yet")


# --------------------------------------------------------------------------- transposed convolution

def conv_transpose2d(x, w, b, stride=1, padding=0, output_padding=0, dilation=1, flip=False, swap_channels=False,
                     crop=True, bias=True, use_output_padding=True):
    """A scatter, one kernel tap at a time: right, or with one thing changed."""
    if flip:
        w = w[:, :, ::-1, ::-1]
    if swap_channels:
        w = w.transpose(1, 0, 2, 3)  # reads (C, F) as (F, C)
    N, C, H, W = x.shape
    _, num_filters, KH, KW = w.shape
    output_padding = output_padding if use_output_padding else 0
    H_full = (H - 1) * stride + dilation * (KH - 1) + 1 + output_padding
    W_full = (W - 1) * stride + dilation * (KW - 1) + 1 + output_padding
    out = np.zeros((N, num_filters, H_full, W_full))
    for u in range(KH):
        for v in range(KW):
            rows = slice(u * dilation, u * dilation + (H - 1) * stride + 1, stride)
            cols = slice(v * dilation, v * dilation + (W - 1) * stride + 1, stride)
            out[:, :, rows, cols] += np.einsum("nchw,cf->nfhw", x, w[:, :, u, v])
    if crop:
        H_out = H_full - 2 * padding
        W_out = W_full - 2 * padding
        out = out[:, :, padding:padding + H_out, padding:padding + W_out]
    else:
        out = np.pad(out, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    return out + (b[None, :, None, None] if bias else 0.0)


def conv_transpose2d_loops(x, w, b, stride=1, padding=0, output_padding=0, dilation=1):
    """Every input pixel and tap written out, into an output that is cropped on the fly."""
    N, C, H, W = x.shape
    _, num_filters, KH, KW = w.shape
    H_out = (H - 1) * stride - 2 * padding + dilation * (KH - 1) + output_padding + 1
    W_out = (W - 1) * stride - 2 * padding + dilation * (KW - 1) + output_padding + 1
    out = np.tile(b[None, :, None, None], (N, 1, H_out, W_out)).astype(np.float64)
    for i in range(H):
        for j in range(W):
            for u in range(KH):
                for v in range(KW):
                    r, s = i * stride + u * dilation - padding, j * stride + v * dilation - padding
                    if 0 <= r < H_out and 0 <= s < W_out:
                        out[:, :, r, s] += x[:, :, i, j] @ w[:, :, u, v]
    return out


def conv_transpose2d_by_zero_stuffing(x, w, b, stride=1, padding=0, output_padding=0, dilation=1, flip=True):
    """Insert stride - 1 zeros between input pixels, pad, convolve with the flipped kernel, channels swapped."""
    N, C, H, W = x.shape
    _, num_filters, KH, KW = w.shape
    stuffed = np.zeros((N, C, (H - 1) * stride + 1, (W - 1) * stride + 1))
    stuffed[:, :, ::stride, ::stride] = x
    ph, pw = dilation * (KH - 1) - padding, dilation * (KW - 1) - padding
    stuffed = np.pad(stuffed, ((0, 0), (0, 0), (ph, ph + output_padding), (pw, pw + output_padding)))
    kernel = w[:, :, ::-1, ::-1] if flip else w
    kernel = np.ascontiguousarray(kernel.transpose(1, 0, 2, 3))  # (F, C, KH, KW)
    return F.conv2d(torch.from_numpy(stuffed), torch.from_numpy(kernel), torch.from_numpy(b),
                    dilation=dilation).numpy()


def conv_transpose2d_as_gradient(x, w, b, stride=1, padding=0, output_padding=0, dilation=1):
    """The input gradient of chapter 01's convolution with weights w, whose input has the output's size."""
    N, C, H, W = x.shape
    _, num_filters, KH, KW = w.shape
    H_out = (H - 1) * stride - 2 * padding + dilation * (KH - 1) + output_padding + 1
    W_out = (W - 1) * stride - 2 * padding + dilation * (KW - 1) + output_padding + 1
    _, cache = conv2d_forward(np.zeros((N, num_filters, H_out, W_out)), w, np.zeros(C), stride, padding, dilation)
    dx, _, _ = conv2d_backward(x, cache)
    return dx + b[None, :, None, None]


def strided_like_a_convolution(x, w, b, stride=1, padding=0, output_padding=0, dilation=1):
    """The stride applied to the input: a strided convolution, which shrinks instead of growing."""
    kernel = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return F.conv2d(torch.from_numpy(x), torch.from_numpy(kernel), torch.from_numpy(b), stride=stride,
                    padding=padding, dilation=dilation).numpy()


@pytest.mark.parametrize("answer", [conv_transpose2d, conv_transpose2d_loops, conv_transpose2d_by_zero_stuffing,
                                    conv_transpose2d_as_gradient],
                         ids=["scatter per tap", "loops", "zero stuffing", "chapter 01's input gradient"])
def test_conv_transpose_check_passes_on_right_answers(answer):
    assert split_verdict(checks.check_conv_transpose2d, {"conv_transpose2d": answer}) is None


@pytest.mark.parametrize("answer, message", [
    (lambda *a, **k: conv_transpose2d(*a, **k, flip=True),
     r"case 'stride 1'.*kernel rotated by 180 degrees"),
    (lambda *a, **k: conv_transpose2d_by_zero_stuffing(*a, **k, flip=False),
     r"case 'stride 1'.*kernel rotated by 180 degrees"),
    (strided_like_a_convolution, r"case 'stride 1'.*output has shape \(2, 2, 2, 3\), expected \(2, 2, 6, 7\)"),
    (lambda *a, **k: conv_transpose2d(*a, **k, crop=False),
     r"case 'stride 2, padding 1'.*output has shape \(2, 2, 11, 9\), expected \(2, 2, 7, 5\).*cropped"),
    (lambda *a, **k: conv_transpose2d(*a, **k, swap_channels=True), r"case 'stride 1'.*raised"),
    (lambda *a, **k: conv_transpose2d(*a, **k, bias=False),
     r"case 'stride 1'.*: output\[0, 0, 0, 0\] is 2.06985, expected 2.55941"),
    (lambda *a, **k: conv_transpose2d(*a, **k, use_output_padding=False),
     r"case 'stride 2, padding 1, output_padding 1'.*output has shape \(1, 4, 5, 7\), expected \(1, 4, 6, 8\)"),
], ids=["kernel flipped in the scatter", "kernel not flipped in the zero-stuffed convolution",
        "stride applied to the input", "padding added instead of cropped", "channel axes swapped", "no bias",
        "output_padding ignored"])
def test_conv_transpose_check_fails_on_a_mistake(answer, message):
    assert_same_failure(checks.check_conv_transpose2d, {"conv_transpose2d": answer}, message)


# --------------------------------------------------------------------------- box IoU

def box_iou(boxes1, boxes2, plus_one=0.0, subtract=True):
    area1 = (boxes1[:, 2] - boxes1[:, 0] + plus_one) * (boxes1[:, 3] - boxes1[:, 1] + plus_one)
    area2 = (boxes2[:, 2] - boxes2[:, 0] + plus_one) * (boxes2[:, 3] - boxes2[:, 1] + plus_one)
    low = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    high = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    sides = (high - low + plus_one).clamp(min=0)
    intersection = sides[..., 0] * sides[..., 1]
    union = area1[:, None] + area2[None, :] - (intersection if subtract else 0.0)
    return intersection / union


def box_iou_loops(boxes1, boxes2):
    out = torch.zeros(len(boxes1), len(boxes2))
    for i, (a0, a1, a2, a3) in enumerate(boxes1.tolist()):
        for j, (b0, b1, b2, b3) in enumerate(boxes2.tolist()):
            inter = max(0.0, min(a2, b2) - max(a0, b0)) * max(0.0, min(a3, b3) - max(a1, b1))
            out[i, j] = inter / ((a2 - a0) * (a3 - a1) + (b2 - b0) * (b3 - b1) - inter)
    return out


@pytest.mark.parametrize("answer", [box_iou, box_iou_loops], ids=["vectorised", "loops"])
def test_box_iou_check_passes_on_right_answers(answer):
    assert split_verdict(checks.check_box_iou, {"box_iou": answer}) is None


@pytest.mark.parametrize("answer, message", [
    (lambda a, b: box_iou(a, b, plus_one=1.0), r"case 'random boxes'.*iou\[0, 1\] is 0.342162, expected 0.277783"),
    (lambda a, b: box_iou(a, b, subtract=False), r"case 'random boxes'.*iou\[0, 1\]"),
    (lambda a, b: box_iou(a, b).T, r"case 'random boxes'.*iou has shape \(5, 7\), expected \(7, 5\)"),
    (lambda a, b: box_iou(a, b).tolist(), r"should return a tensor of shape \(7, 5\); got a list"),
], ids=["+1 pixel convention", "union without subtracting the intersection", "transposed", "a list"])
def test_box_iou_check_fails_on_a_mistake(answer, message):
    assert_same_failure(checks.check_box_iou, {"box_iou": answer}, message)


# --------------------------------------------------------------------------- NMS

def nms(boxes, scores, iou_threshold, inclusive=False, sort=True, ties="lower index first"):
    if not sort:
        order = list(range(len(boxes)))
    elif ties == "lower index first":
        order = torch.argsort(scores, descending=True, stable=True).tolist()
    else:  # equal scores visited higher index first
        order = sorted(range(len(boxes)), key=lambda i: (-float(scores[i]), -i))
    iou = box_iou(boxes, boxes)
    keep, removed = [], set()
    for i in order:
        if i in removed:
            continue
        keep.append(i)
        for j in order:
            if j != i and (iou[i, j] >= iou_threshold if inclusive else iou[i, j] > iou_threshold):
                removed.add(j)
    return torch.tensor(keep, dtype=torch.int64)


def nms_shrinking(boxes, scores, iou_threshold):
    """Written differently: keep the best, drop what it covers, repeat on what is left."""
    order = sorted(range(len(boxes)), key=lambda i: (-float(scores[i]), i))
    remaining = torch.tensor(order, dtype=torch.int64)
    keep = []
    while len(remaining):
        best = remaining[0]
        keep.append(int(best))
        iou = box_iou_loops(boxes[best][None], boxes[remaining[1:]])[0] if len(remaining) > 1 else torch.zeros(0)
        remaining = remaining[1:][iou <= iou_threshold]
    return torch.tensor(keep, dtype=torch.int64)


@pytest.mark.parametrize("answer", [nms, nms_shrinking], ids=["list of kept indices", "shrinking index tensor"])
def test_nms_check_passes_on_right_answers(answer):
    assert split_verdict(checks.check_nms, {"nms": answer}) is None


@pytest.mark.parametrize("answer, message", [
    (lambda b, s, t: nms(b, s, t, inclusive=True),
     r"case 'IoU exactly at the threshold.*kept \[0, 2\], expected \[0, 1, 2\].*strictly greater"),
    (lambda b, s, t: nms(b, s, t, sort=False), r"case '40 random boxes, threshold 0.5'.*kept"),
    (lambda b, s, t: nms(b, s, t, ties="higher index first"),
     r"case 'identical boxes with identical scores'.*kept \[4, 2\], expected \[3, 0\].*lower index goes first"),
    (lambda b, s, t: torch.sort(nms(b, s, t)).values, r"kept the right boxes .* but in the order"),
    (lambda b, s, t: nms(b, s, t).tolist(), r"should return an int64 tensor \(K,\) of kept indices"),
], ids=["suppressing with >=", "not sorting by score", "unstable tie order", "indices sorted instead of by score",
        "a list"])
def test_nms_check_fails_on_a_mistake(answer, message):
    assert_same_failure(checks.check_nms, {"nms": answer}, message)


def test_the_nms_reference_is_torchvision_when_scores_differ():
    boxes, scores = checks._random_boxes(30, 11, scale=10.0), torch.rand(30, generator=torch.Generator().manual_seed(1))
    import torchvision

    assert torch.equal(checks.reference_nms(boxes, scores, 0.4), torchvision.ops.nms(boxes, scores, 0.4))


# --------------------------------------------------------------------------- decoder block

class DecoderBlock(nn.Module):
    def __init__(self, in_channels, skip_channels, out_channels, mode="right"):
        super().__init__()
        self.mode = mode
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        conv1_in = out_channels if mode == "add" else out_channels + skip_channels
        self.conv1 = nn.Conv2d(conv1_in, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x, skip):
        up = x if self.mode == "no upsampling" else self.up(x)
        if self.mode == "add":
            joined = up + skip
        elif self.mode == "skip first":
            joined = torch.cat([skip, up], dim=1)
        else:
            joined = torch.cat([up, skip], dim=1)
        hidden = F.relu(self.conv1(joined))
        out = self.conv2(hidden)
        return out if self.mode == "no last relu" else F.relu(out)


class DecoderBlockModules(nn.Module):
    """Written differently: ReLU modules, the layers defined in another order, torch.concat."""

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(skip_channels + out_channels, out_channels, kernel_size=3, padding=1)
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x, skip):
        return self.relu(self.conv2(self.relu(self.conv1(torch.concat((self.up(x), skip), dim=1)))))


class DecoderBlockUpsample(nn.Module):
    """Bilinear upsampling and a 1x1 convolution instead of the transposed convolution the exercise asks for."""

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, out_channels, 1)
        self.conv1 = nn.Conv2d(out_channels + skip_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x, skip):
        x = F.interpolate(self.reduce(x), scale_factor=2, mode="bilinear")
        return F.relu(self.conv2(F.relu(self.conv1(torch.cat([x, skip], 1)))))


def with_mode(mode):
    class Block(DecoderBlock):
        def __init__(self, in_channels, skip_channels, out_channels):
            super().__init__(in_channels, skip_channels, out_channels, mode=mode)
    Block.__name__ = "DecoderBlock"
    return Block


@pytest.mark.parametrize("answer", [DecoderBlock, DecoderBlockModules], ids=["functional ReLU", "modules"])
def test_decoder_block_check_passes_on_right_answers(answer):
    assert split_verdict(checks.check_decoder_block, {"DecoderBlock": answer}) is None


@pytest.mark.parametrize("answer, message", [
    (with_mode("add"), r"DecoderBlock\(8, 4, 6\).*conv1.weight of shape \(6, 6, 3, 3\).*conv1 reads the "
                       r"concatenation"),
    (with_mode("skip first"), r"DecoderBlock\(8, 4, 6\).*torch.cat\(\[skip, upsampled\]\)"),
    (with_mode("no upsampling"), r"DecoderBlock\(8, 4, 6\).*raised RuntimeError"),
    (with_mode("no last relu"), r"DecoderBlock\(8, 4, 6\).*output\["),
    (DecoderBlockUpsample, r"no up.weight, no up.bias and also reduce.bias, reduce.weight"),
], ids=["skip added instead of concatenated", "concatenation in the wrong order", "no upsampling",
        "no ReLU after conv2", "bilinear upsampling instead of the transposed convolution"])
def test_decoder_block_check_fails_on_a_mistake(answer, message):
    assert_same_failure(checks.check_decoder_block, {"DecoderBlock": answer}, message)


def test_decoder_block_check_refuses_a_function_that_is_not_a_module():
    assert_same_failure(checks.check_decoder_block, {"DecoderBlock": lambda i, s, o: (lambda x, k: x)},
                        r"should build an nn.Module; got a function")


# --------------------------------------------------------------------------- mean IoU

def mean_iou(pred, target, num_classes, absent_as_zero=False, background=False, per_image=False):
    if per_image:
        return float(np.mean([mean_iou(p, t, num_classes) for p, t in zip(pred, target)]))
    values = []
    for c in range(0 if background else 1, num_classes):
        intersection = ((pred == c) & (target == c)).sum().item()
        union = ((pred == c) | (target == c)).sum().item()
        if union:
            values.append(intersection / union)
        elif absent_as_zero:
            values.append(0.0)
    return sum(values) / len(values)


def mean_iou_confusion(pred, target, num_classes):
    confusion = np.zeros((num_classes, num_classes))
    np.add.at(confusion, (target.numpy().ravel(), pred.numpy().ravel()), 1)
    both = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - both
    present = union[1:] > 0
    return float((both[1:][present] / union[1:][present]).mean())


def mean_iou_torchmetrics(pred, target, num_classes):
    per_class = torchmetrics.classification.MulticlassJaccardIndex(num_classes, average="none")(pred, target)
    present = torch.stack([((pred == c) | (target == c)).any() for c in range(num_classes)])
    return per_class[1:][present[1:]].mean()


@pytest.mark.parametrize("answer", [mean_iou, mean_iou_confusion, mean_iou_torchmetrics],
                         ids=["loop over classes", "confusion matrix", "torchmetrics"])
def test_mean_iou_check_passes_on_right_answers(answer):
    assert split_verdict(checks.check_mean_iou, {"mean_iou": answer}) is None


@pytest.mark.parametrize("answer, message", [
    (lambda p, t, k: mean_iou(p, t, k, absent_as_zero=True),
     r"case 'class 3 in neither.*absent from both prediction and target are left out of the mean"),
    (lambda p, t, k: mean_iou(p, t, k, background=True), r"case 'random maps.*background \(class 0\) is left out"),
    (lambda p, t, k: mean_iou(p, t, k, per_image=True),
     r"case 'random maps.*not averaged image by image"),
    (lambda p, t, k: torch.tensor([mean_iou(p, t, k)] * 2), r"should return the mean IoU as a float; got a Tensor"),
], ids=["absent classes counted as 0", "background included", "averaged per image", "a tensor of two values"])
def test_mean_iou_check_fails_on_a_mistake(answer, message):
    assert_same_failure(checks.check_mean_iou, {"mean_iou": answer}, message)


def test_the_mean_iou_reference_agrees_with_torchmetrics_where_every_class_is_present():
    for name, pred, target, num_classes in checks._mean_iou_cases():
        present = torch.stack([((pred == c) | (target == c)).any() for c in range(num_classes)])
        if present.all():
            expected = torchmetrics.classification.MulticlassJaccardIndex(num_classes, average="none")(pred, target)
            assert torch.allclose(checks.reference_iou_per_class(pred, target, num_classes).float(), expected), name
