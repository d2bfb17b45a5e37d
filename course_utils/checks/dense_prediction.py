"""Checks for chapter 17 (Dense prediction): a transposed convolution in NumPy, box IoU and non-maximum
suppression, a U-Net decoder block, the mean IoU of a segmentation.

References: ``torch.nn.functional.conv_transpose2d`` for the transposed convolution; ``torchvision.ops.box_iou``
and ``torchvision.ops.nms`` for boxes (the NMS reference visits equal scores lower index first, as the exercise
asks: torchvision is given the rank of each box in that order as its score, see ``reference_nms``); torch's
functional ``conv_transpose2d``, ``cat``, ``conv2d`` and ``relu`` with the same weights for the decoder block (the
probe ``learner_decoder_block`` builds the learner's block where it lives, loads the weights sent to it by name
and sends back the output); a confusion matrix counted here with ``torch.bincount`` for the mean IoU (the tests
show it agrees with torchmetrics' ``MulticlassJaccardIndex``).
"""
import numpy as np
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from course_utils.checks import common, learner

# --------------------------------------------------------------------------- exercise 1: transposed convolution

# (name, (N, C, H, W), (F, KH, KW), stride, padding, output_padding, dilation)
CONV_TRANSPOSE_CASES = (
    ("stride 1", (2, 3, 4, 5), (2, 3, 3), 1, 0, 0, 1),
    ("stride 2", (1, 2, 3, 3), (3, 3, 3), 2, 0, 0, 1),
    ("stride 2, padding 1", (2, 3, 4, 3), (2, 3, 3), 2, 1, 0, 1),
    ("stride 2, padding 1, output_padding 1", (1, 2, 3, 4), (4, 3, 3), 2, 1, 1, 1),
    ("stride 3, 2x3 kernel", (2, 2, 3, 2), (3, 2, 3), 3, 0, 0, 1),
    ("dilation 2, padding 1", (1, 3, 4, 4), (2, 3, 3), 1, 1, 0, 2),
    ("stride 2, dilation 2, padding 2, output_padding 1", (1, 2, 4, 3), (3, 3, 2), 2, 2, 1, 2),
)


def _conv_transpose_inputs(index, x_shape, filter_shape):
    rng = np.random.default_rng(170 + index)
    N, C, H, W = x_shape
    num_filters, KH, KW = filter_shape
    x = rng.normal(size=(N, C, H, W))
    w = rng.normal(size=(C, num_filters, KH, KW))  # (C, F, KH, KW): torch's layout for a transposed convolution
    b = rng.normal(size=num_filters)  # non-zero: a forgotten bias shows
    return x, w, b


def _torch_conv_transpose(x, w, b, stride, padding, output_padding, dilation):
    return F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=stride,
                              padding=padding, output_padding=output_padding, dilation=dilation).numpy()


def check_conv_transpose2d(conv_transpose2d):
    """``conv_transpose2d(x, w, b, stride, padding, output_padding, dilation)`` against ``F.conv_transpose2d``."""
    for index, (name, x_shape, filter_shape, stride, padding, output_padding, dilation) in enumerate(
            CONV_TRANSPOSE_CASES):
        x, w, b = _conv_transpose_inputs(index, x_shape, filter_shape)
        case = (f"case '{name}': x {x.shape}, w {w.shape}, stride={stride}, padding={padding}, "
                f"output_padding={output_padding}, dilation={dilation}")
        expected = _torch_conv_transpose(x, w, b, stride, padding, output_padding, dilation)
        received = common.call(conv_transpose2d, x.copy(), w.copy(), b.copy(), stride=stride, padding=padding,
                               output_padding=output_padding, dilation=dilation, case=case)
        received = common.as_numpy(received) if received is not None else received
        if received is None or getattr(received, "dtype", object) == object:
            raise AssertionError(f"{case}: should return a NumPy array of shape {expected.shape}; got "
                                 f"{common.type_name(received)}")
        if received.shape != expected.shape:
            raise AssertionError(f"{case}: output has shape {received.shape}, expected {expected.shape}: H_out = "
                                 f"(H - 1)*stride - 2*padding + dilation*(K - 1) + output_padding + 1 (the padding "
                                 f"is cropped from the output, not added)")
        flipped = _torch_conv_transpose(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b, stride, padding,
                                        output_padding, dilation)
        if np.allclose(received, flipped, rtol=1e-6, atol=1e-8) and not np.allclose(flipped, expected):
            raise AssertionError(f"{case}: the output is that of the kernel rotated by 180 degrees: each input "
                                 f"pixel x[n, c, i, j] adds x * w[c, f, u, v] to out[n, f, i*S + u*D - P, "
                                 f"j*S + v*D - P], with the kernel as it is (flip it only when you write the "
                                 f"transposed convolution as a convolution of the zero-stuffed input)")
        common.assert_close(received, expected, case, rtol=1e-6, atol=1e-8)
    common.passed("conv_transpose2d", len(CONV_TRANSPOSE_CASES))


# --------------------------------------------------------------------------- exercise 2: box IoU and NMS

def _random_boxes(count, seed, scale=20.0):
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * scale  # (count, 2)
    sides = torch.rand(count, 2, generator=generator) * scale / 2 + 0.5  # (count, 2): never empty
    return torch.cat([corner, corner + sides], dim=1)  # (count, 4)


def _iou_cases():
    return (
        ("random boxes", _random_boxes(7, 0), _random_boxes(5, 1)),
        ("touching boxes (IoU 0)", torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]]),
         torch.tensor([[2.0, 0.0, 4.0, 2.0], [1.0, 1.0, 3.0, 3.0]])),
        ("identical boxes (IoU 1)", torch.tensor([[1.0, 2.0, 5.0, 4.0]]), torch.tensor([[1.0, 2.0, 5.0, 4.0]])),
        ("one box inside another", torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
         torch.tensor([[2.0, 3.0, 4.0, 8.0], [0.0, 0.0, 5.0, 10.0]])),
        ("no boxes on one side", torch.zeros(0, 4), _random_boxes(3, 2)),
        ("one box against many", _random_boxes(1, 3), _random_boxes(6, 4)),
    )


def check_box_iou(box_iou):
    """``box_iou(boxes1, boxes2)`` against ``torchvision.ops.box_iou`` on random boxes and edge cases."""
    cases = _iou_cases()
    for name, boxes1, boxes2 in cases:
        case = f"case '{name}': boxes1 {tuple(boxes1.shape)}, boxes2 {tuple(boxes2.shape)}"
        expected = torchvision.ops.box_iou(boxes1, boxes2)
        received = common.call(box_iou, boxes1.clone(), boxes2.clone(), case=case)
        if not isinstance(received, torch.Tensor):
            raise AssertionError(f"{case}: should return a tensor of shape {tuple(expected.shape)}; got a "
                                 f"{common.type_name(received)}")
        common.assert_close(received, expected, case, what="iou", rtol=1e-5, atol=1e-6)
    common.passed("box_iou", len(cases))


def reference_nms(boxes, scores, iou_threshold):
    """``torchvision.ops.nms`` with equal scores visited lower index first: the boxes are put in that order and
    given their rank as score (NMS uses scores only to order the boxes), the kept indices mapped back."""
    order = torch.argsort(scores, descending=True, stable=True)  # (N,)
    ranks = torch.arange(len(boxes), 0, -1, dtype=torch.float32)  # (N,): strictly decreasing
    return order[torchvision.ops.nms(boxes[order].float(), ranks, iou_threshold)]


def _nms_cases():
    generator = torch.Generator().manual_seed(7)
    random_boxes = _random_boxes(40, 5, scale=12.0)
    random_scores = torch.rand(40, generator=generator)
    at_threshold = torch.tensor([[0.0, 0.0, 4.0, 1.0], [1.0, 0.0, 4.0, 1.0], [10.0, 0.0, 12.0, 2.0]])  # IoU 0.75
    identical = torch.tensor([[0.0, 0.0, 3.0, 3.0]] * 3 + [[5.0, 5.0, 8.0, 8.0]] * 2)
    clusters = torch.cat([_random_boxes(6, 8, scale=3.0), _random_boxes(6, 9, scale=3.0) + 30.0])
    return (
        ("40 random boxes, threshold 0.5", random_boxes, random_scores, 0.5),
        ("40 random boxes, threshold 0.2", random_boxes, random_scores, 0.2),
        ("two clusters, scores in no order", clusters, torch.rand(12, generator=generator), 0.3),
        ("IoU exactly at the threshold (0.75): not suppressed", at_threshold, torch.tensor([0.9, 0.8, 0.7]), 0.75),
        ("identical boxes with identical scores", identical, torch.tensor([0.5, 0.5, 0.5, 0.7, 0.7]), 0.5),
        ("touching boxes", torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0]]), torch.tensor([0.6, 0.9]),
         0.0),
        ("one box", torch.tensor([[1.0, 1.0, 3.0, 4.0]]), torch.tensor([0.3]), 0.5),
        ("no boxes", torch.zeros(0, 4), torch.zeros(0), 0.5),
    )


def check_nms(nms):
    """``nms(boxes, scores, iou_threshold)``: the indices ``torchvision.ops.nms`` keeps, by decreasing score (equal
    scores: lower index first), on random boxes and edge cases."""
    cases = _nms_cases()
    for name, boxes, scores, threshold in cases:
        case = f"case '{name}': {len(boxes)} boxes, iou_threshold={threshold}"
        expected = [int(i) for i in reference_nms(boxes, scores, threshold)]
        received = common.call(nms, boxes.clone(), scores.clone(), threshold, case=case)
        if not isinstance(received, torch.Tensor) or received.dtype != torch.int64 or received.ndim != 1:
            what = (f"a tensor of dtype {received.dtype} and shape {tuple(received.shape)}"
                    if isinstance(received, torch.Tensor) else f"a {common.type_name(received)}")
            raise AssertionError(f"{case}: should return an int64 tensor (K,) of kept indices, as "
                                 f"torchvision.ops.nms; got {what}")
        received = [int(i) for i in received]
        if received == expected:
            continue
        if sorted(received) == sorted(expected):
            raise AssertionError(f"{case}: kept the right boxes {sorted(expected)} but in the order {received}; "
                                 f"expected {expected} (by decreasing score, equal scores lower index first)")
        hint = ""
        inclusive = [int(i) for i in _nms_suppressing_at_threshold(boxes, scores, threshold)]
        if received == inclusive:
            hint = (" (a box is suppressed only when its IoU with a kept box is strictly greater than the "
                    "threshold: > not >=)")
        elif len(set(scores.tolist())) < len(scores) and sorted(set(received)) != sorted(expected):
            hint = " (among equal scores the lower index goes first: torch.argsort(..., stable=True))"
        raise AssertionError(f"{case}: kept {received}, expected {expected}{hint}")
    common.passed("nms", len(cases))


def _nms_suppressing_at_threshold(boxes, scores, threshold):
    """The mistake ``>=``: what torchvision keeps with a threshold a hair below."""
    return reference_nms(boxes, scores, float(np.nextafter(np.float32(threshold), np.float32(-1))))


# --------------------------------------------------------------------------- exercise 3: a U-Net decoder block

def _decoder_parameters(in_channels, skip_channels, out_channels, seed):
    """The weights a case loads into the learner's block, by name: ``{name: tensor}``."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {"up.weight": (in_channels, out_channels, 2, 2), "up.bias": (out_channels,),
              "conv1.weight": (out_channels, out_channels + skip_channels, 3, 3), "conv1.bias": (out_channels,),
              "conv2.weight": (out_channels, out_channels, 3, 3), "conv2.bias": (out_channels,)}
    parameters = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:])) if name.endswith("weight") and not name.startswith("up") else in_channels
        scale = 1.5 / np.sqrt(fan_in) if name.endswith("weight") else 0.2
        parameters[name] = (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).float()
    return parameters


def learner_decoder_block(DecoderBlock, in_channels, skip_channels, out_channels, parameters, x, skip, case):
    """Build the learner's ``DecoderBlock(in_channels, skip_channels, out_channels)``, load ``parameters`` (by
    name) into it and run it on ``(x, skip)``.

    Returns ``{"not_module": type name}``, ``{"parameters": {name: shape}}`` when the block's parameters are not
    exactly those of ``parameters`` (names and shapes), or ``{"output": tensor or type name}``.
    """
    block = common.call(DecoderBlock, in_channels, skip_channels, out_channels, case=case)
    if not isinstance(block, nn.Module):
        return {"not_module": type(block).__name__}
    found = {name: list(p.shape) for name, p in block.named_parameters()}
    if found != {name: list(p.shape) for name, p in parameters.items()}:
        return {"parameters": found}
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(parameters[name])
        block.eval()
        out = common.call(block, x.clone(), skip.clone(), case=case)
    return {"output": out.detach().cpu() if isinstance(out, torch.Tensor) else type(out).__name__}


def reference_decoder_block(parameters, x, skip, skip_first=False):
    """The block with torch's functional operations: transposed convolution, concatenation, two conv + ReLU."""
    up = F.conv_transpose2d(x, parameters["up.weight"], parameters["up.bias"], stride=2)  # (N, F, 2H, 2W)
    joined = torch.cat([skip, up] if skip_first else [up, skip], dim=1)  # (N, F + C_skip, 2H, 2W)
    hidden = F.relu(F.conv2d(joined, parameters["conv1.weight"], parameters["conv1.bias"], padding=1))
    return F.relu(F.conv2d(hidden, parameters["conv2.weight"], parameters["conv2.bias"], padding=1))


# (in_channels, skip_channels, out_channels, (N, H, W) of x)
DECODER_CASES = ((8, 4, 6, (2, 3, 5)), (6, 6, 6, (1, 4, 4)), (5, 3, 2, (2, 2, 3)))


def check_decoder_block(DecoderBlock):
    """``DecoderBlock(in_channels, skip_channels, out_channels)``: up (ConvTranspose2d 2x2, stride 2), cat
    [upsampled, skip], conv1 + ReLU, conv2 + ReLU; against torch's functional operations with the same weights."""
    for index, (in_channels, skip_channels, out_channels, (N, H, W)) in enumerate(DECODER_CASES):
        case = (f"DecoderBlock({in_channels}, {skip_channels}, {out_channels}) on x ({N}, {in_channels}, {H}, {W}) "
                f"and skip ({N}, {skip_channels}, {2 * H}, {2 * W})")
        parameters = _decoder_parameters(in_channels, skip_channels, out_channels, seed=index)
        generator = torch.Generator().manual_seed(100 + index)
        x = torch.randn(N, in_channels, H, W, generator=generator)
        skip = torch.randn(N, skip_channels, 2 * H, 2 * W, generator=generator)
        found = learner.run(learner_decoder_block, DecoderBlock, in_channels, skip_channels, out_channels,
                            parameters, x, skip, case)
        if "not_module" in found:
            raise AssertionError(f"{case}: DecoderBlock(...) should build an nn.Module; got a {found['not_module']}")
        if "parameters" in found:
            expected = {name: list(p.shape) for name, p in parameters.items()}
            have = found["parameters"]
            wrong = [f"{name} of shape {tuple(have[name])}" if name in have else f"no {name}"
                     for name in expected if have.get(name) != expected[name]]
            extra = sorted(set(have) - set(expected))
            hint = (" (conv1 reads the concatenation: out_channels + skip_channels input channels)"
                    if have.get("conv1.weight", [None, None])[1:2] == [out_channels] else "")
            wanted = ", ".join(f"{name} {tuple(shape)}" for name, shape in expected.items())
            raise AssertionError(f"{case}: the block's parameters should be exactly {wanted}; found "
                                 f"{', '.join(wrong) if wrong else 'those'}"
                                 f"{' and also ' + ', '.join(extra) if extra else ''}{hint}")
        expected = reference_decoder_block(parameters, x, skip)
        received = found["output"]
        if not isinstance(received, torch.Tensor):
            raise AssertionError(f"{case}: forward(x, skip) should return a tensor {tuple(expected.shape)}; got a "
                                 f"{received}")
        if tuple(received.shape) != tuple(expected.shape):
            raise AssertionError(f"{case}: output has shape {tuple(received.shape)}, expected "
                                 f"{tuple(expected.shape)} (upsample x2, then concatenate the skip)")
        swapped = reference_decoder_block(parameters, x, skip, skip_first=True)
        if torch.allclose(received, swapped, rtol=1e-4, atol=1e-5):
            raise AssertionError(f"{case}: the output is that of torch.cat([skip, upsampled]); the upsampled map "
                                 f"comes first: torch.cat([upsampled, skip], dim=1)")
        common.assert_close(received, expected, case, rtol=1e-4, atol=1e-5)
    common.passed("DecoderBlock", len(DECODER_CASES))


# --------------------------------------------------------------------------- exercise 4: mean IoU

def reference_iou_per_class(pred, target, num_classes):
    """IoU of each class over the whole set, from a confusion matrix counted with ``torch.bincount``; NaN where a
    class is in neither ``pred`` nor ``target``."""
    counts = torch.bincount((target.reshape(-1) * num_classes + pred.reshape(-1)), minlength=num_classes**2)
    confusion = counts.reshape(num_classes, num_classes).double()  # (K, K): [true, predicted]
    both = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - both
    return torch.where(union > 0, both / union.clamp(min=1), torch.tensor(float("nan"), dtype=torch.float64))


def reference_mean_iou(pred, target, num_classes):
    """The mean over the classes 1 .. K-1 present in ``pred`` or ``target`` (background and absent classes out)."""
    iou = reference_iou_per_class(pred, target, num_classes)[1:]
    return float(iou[~iou.isnan()].mean())


def _mean_iou_cases():
    generator = torch.Generator().manual_seed(17)
    target = torch.randint(0, 4, (3, 8, 8), generator=generator)
    noisy = torch.where(torch.rand(3, 8, 8, generator=generator) < 0.7, target,
                        torch.randint(0, 4, (3, 8, 8), generator=generator))
    absent_target = torch.randint(0, 5, (2, 6, 6), generator=generator)
    absent_target[absent_target == 3] = 1
    absent_pred = torch.where(torch.rand(2, 6, 6, generator=generator) < 0.6, absent_target, 2 * torch.ones_like(
        absent_target))
    # images of very different object sizes: the mean over images of per-image IoU is not the dataset's IoU
    sizes_target = torch.zeros(2, 10, 10, dtype=torch.int64)
    sizes_target[0, :8, :8] = 1
    sizes_target[1, 4:6, 4:6] = 1
    sizes_target[1, 0:2, 7:10] = 2
    sizes_pred = sizes_target.clone()
    sizes_pred[0, :8, :7] = 1
    sizes_pred[0, :8, 7] = 0
    sizes_pred[1, 4:6, 4:6] = 0
    sizes_pred[1, 4, 4] = 1
    # mostly background predicted right: including it raises the mean
    background_target = torch.zeros(1, 12, 12, dtype=torch.int64)
    background_target[0, 2:5, 2:5] = 1
    background_target[0, 7:10, 6:11] = 2
    background_pred = torch.roll(background_target, shifts=1, dims=2)
    return (
        ("random maps, 4 classes", noisy, target, 4),
        ("class 3 in neither prediction nor target (5 classes)", absent_pred, absent_target, 5),
        ("a large and a small object (per-image mean differs)", sizes_pred, sizes_target, 3),
        ("mostly background, objects shifted by one pixel", background_pred, background_target, 3),
        ("a perfect prediction", target, target, 4),
    )


def _mean_iou_variants(pred, target, num_classes):
    """What the usual mistakes compute: ``{hint: value}``."""
    iou = reference_iou_per_class(pred, target, num_classes)
    per_image = []
    for p, t in zip(pred, target):
        image_iou = reference_iou_per_class(p, t, num_classes)[1:]
        per_image.append(float(image_iou[~image_iou.isnan()].mean()) if (~image_iou.isnan()).any() else 0.0)
    return {
        "classes absent from both prediction and target are left out of the mean, not counted as IoU 0":
            float(iou[1:].nan_to_num(0.0).mean()),
        "the background (class 0) is left out of the mean": float(iou[~iou.isnan()].mean()),
        "the IoU of each class is taken over the whole set (intersections and unions summed over the images), "
        "not averaged image by image": float(np.mean(per_image)),
    }


def check_mean_iou(mean_iou):
    """``mean_iou(pred, target, num_classes)``: the dataset-wide IoU of each class 1 .. K-1, averaged over the
    classes present in the prediction or the target, against a confusion matrix."""
    cases = _mean_iou_cases()
    for name, pred, target, num_classes in cases:
        case = f"case '{name}': pred and target {tuple(pred.shape)}, num_classes={num_classes}"
        expected = reference_mean_iou(pred, target, num_classes)
        received = common.call(mean_iou, pred.clone(), target.clone(), num_classes, case=case)
        if isinstance(received, torch.Tensor) and received.numel() == 1:
            received = received.item()
        if isinstance(received, np.ndarray) and received.size == 1:
            received = received.item()
        if not isinstance(received, (float, int, np.floating)) or isinstance(received, bool):
            raise AssertionError(f"{case}: should return the mean IoU as a float; got a "
                                 f"{common.type_name(received)}")
        received = float(received)
        if abs(received - expected) <= 1e-6:
            continue
        hint = next((f" ({what})" for what, value in _mean_iou_variants(pred, target, num_classes).items()
                     if abs(value - expected) > 1e-6 and abs(received - value) <= 1e-6), "")
        raise AssertionError(f"{case}: mean IoU is {received:.6f}, expected {expected:.6f}{hint}")
    common.passed("mean_iou", len(cases))
