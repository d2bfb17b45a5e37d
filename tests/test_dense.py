"""course_utils.dense (chapter 17) against torch, torchvision and pycocotools, and its errors."""
import contextlib
import io
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from torch.nn import functional as F

from course_utils import dense
from course_utils.data import make_shapes


# --------------------------------------------------------------------------- upsampling

def test_overlap_counts_are_the_transposed_convolution_of_ones_with_a_kernel_of_ones():
    for kernel_size, stride, size in ((3, 2, 5), (4, 2, 3), (3, 1, 4), (2, 3, 2)):
        expected = F.conv_transpose2d(torch.ones(1, 1, size, size), torch.ones(1, 1, kernel_size, kernel_size),
                                      stride=stride)[0, 0]
        assert np.array_equal(dense.overlap_counts(kernel_size, stride, size), expected.numpy().astype(np.int64))


@pytest.mark.parametrize("arguments", [(0, 2, 3), (3, 2.0, 3), (3, 2, -1), (True, 1, 2)])
def test_overlap_counts_refuses_sizes_that_are_not_positive_ints(arguments):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        dense.overlap_counts(*arguments)


# --------------------------------------------------------------------------- segmentation

def test_decoder_block_is_transposed_conv_concatenation_and_two_relu_convs():
    torch.manual_seed(0)
    block = dense.UNetDecoderBlock(6, 4, 5)
    x, skip = torch.randn(2, 6, 3, 4), torch.randn(2, 4, 6, 8)
    up = F.conv_transpose2d(x, block.up.weight, block.up.bias, stride=2)
    hidden = F.relu(F.conv2d(torch.cat([up, skip], 1), block.conv1.weight, block.conv1.bias, padding=1))
    expected = F.relu(F.conv2d(hidden, block.conv2.weight, block.conv2.bias, padding=1))
    assert torch.allclose(block(x, skip), expected, atol=1e-6)


def test_decoder_block_refuses_a_skip_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"the skip must be twice the input's height and width"):
        dense.UNetDecoderBlock(6, 4, 5)(torch.randn(1, 6, 3, 3), torch.randn(1, 4, 5, 5))


def test_unet_keeps_the_input_size_and_refuses_sizes_it_cannot_halve():
    unet = dense.UNet(3, 6, widths=(4, 8, 16))
    assert unet(torch.randn(2, 3, 16, 12)).shape == (2, 6, 16, 12)
    with pytest.raises(ValueError, match="divisible by 4"):
        unet(torch.randn(1, 3, 10, 12))
    with pytest.raises(ValueError, match="at least two stages"):
        dense.UNet(widths=(8,))


def test_aspp_keeps_the_size_and_sees_further_than_a_3x3_convolution():
    aspp = dense.ASPP(4, 6, rates=(2, 4))
    x = torch.randn(1, 4, 17, 17, requires_grad=True)
    out = aspp(x)
    assert out.shape == (1, 6, 17, 17)
    out[0, :, 8, 8].sum().backward()
    assert (x.grad[0].abs().sum(0) > 0).all()  # the pooling branch: every pixel matters


def test_fpn_equals_torchvision_feature_pyramid_network_with_the_same_weights():
    torch.manual_seed(0)
    ours = dense.FPN([4, 8, 16], 6)
    theirs = torchvision.ops.FeaturePyramidNetwork([4, 8, 16], 6)
    with torch.no_grad():
        for level in range(3):
            theirs.inner_blocks[level][0].weight.copy_(ours.lateral[level].weight)
            theirs.inner_blocks[level][0].bias.copy_(ours.lateral[level].bias + 0.1)
            ours.lateral[level].bias.add_(0.1)  # non-zero biases
            theirs.layer_blocks[level][0].weight.copy_(ours.output[level].weight)
            theirs.layer_blocks[level][0].bias.copy_(ours.output[level].bias)
    features = [torch.randn(2, 4, 15, 15), torch.randn(2, 8, 8, 8), torch.randn(2, 16, 3, 3)]
    expected = theirs(OrderedDict((str(i), f) for i, f in enumerate(features)))
    for mine, reference in zip(ours(features), expected.values()):
        assert torch.allclose(mine, reference, atol=1e-6)
    with pytest.raises(ValueError, match="expects 3 feature maps"):
        ours(features[:2])


def test_confusion_matrix_and_iou_per_class():
    target = np.array([[0, 1, 1], [2, 2, 0]])
    pred = np.array([[0, 1, 2], [2, 2, 1]])
    confusion = dense.confusion_matrix(pred, target, 4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    iou = dense.iou_per_class(confusion)
    assert np.allclose(iou[:3], [1 / 2, 1 / 3, 2 / 3]) and np.isnan(iou[3])


def test_confusion_matrix_and_iou_per_class_refuse_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        dense.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(TypeError, match="integer class indices"):
        dense.confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        dense.confusion_matrix(np.full((2, 2), 2), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match="square"):
        dense.iou_per_class(np.zeros((2, 3)))


# --------------------------------------------------------------------------- boxes

def random_boxes(count, seed):
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * 30
    return torch.cat([corner, corner + torch.rand(count, 2, generator=generator) * 15 + 0.5], dim=1)


def test_box_iou_and_nms_equal_torchvision():
    boxes, scores = random_boxes(60, 0), torch.rand(60, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(dense.box_iou(boxes, boxes[:7]), torchvision.ops.box_iou(boxes, boxes[:7]))
    for threshold in (0.1, 0.4, 0.8):
        assert torch.equal(dense.nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


def test_nms_visits_equal_scores_lower_index_first_and_handles_no_boxes():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]] * 3)
    assert dense.nms(boxes, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0]
    empty = dense.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)


def test_box_helpers_refuse_bad_input():
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        dense.box_iou(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="torch tensor"):
        dense.box_iou(np.zeros((3, 4)), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"scores must be a tensor of shape \(3,\)"):
        dense.nms(torch.zeros(3, 4), torch.zeros(2), 0.5)


def test_detection_canvases_place_each_tile_and_its_box():
    shapes = make_shapes(8, size=16, seed=0)
    images, targets = dense.detection_canvases(shapes)
    assert images.shape == (2, 3, 32, 32) and len(targets) == 2
    for canvas in range(2):
        for tile in range(4):
            row, col = divmod(tile, 2)
            index = canvas * 4 + tile
            assert torch.equal(images[canvas, :, 16 * row:16 * row + 16, 16 * col:16 * col + 16],
                               torch.from_numpy(shapes.images[index]))
            expected = shapes.boxes[index] + np.array([16 * col, 16 * row, 16 * col, 16 * row])
            assert np.array_equal(targets[canvas]["boxes"][tile].numpy(), expected)
            assert int(targets[canvas]["labels"][tile]) == shapes.labels[index]
    with pytest.raises(ValueError, match="multiple of grid"):
        dense.detection_canvases(make_shapes(6, size=16, seed=0))


# --------------------------------------------------------------------------- the detector

def test_centernet_targets_loss_and_decoding_round_trip():
    targets = [{"boxes": torch.tensor([[4.0, 8.0, 20.0, 16.0]]), "labels": torch.tensor([2])}]
    encoded = dense.centernet_targets(targets, num_classes=3, map_size=(8, 8), stride=4)
    assert encoded["heatmap"].shape == (1, 3, 8, 8) and int(encoded["centre"].sum()) == 1
    assert float(encoded["heatmap"][0, 2, 3, 3]) == 1.0  # centre (12, 12) px is cell (3, 3)
    # outputs that are exactly the targets decode back to the box
    logits = torch.logit(encoded["heatmap"].clamp(1e-6, 1 - 1e-6))
    outputs = {"heatmap": logits, "size": encoded["size"], "offset": encoded["offset"]}
    decoded = dense.decode_centernet(outputs, stride=4, max_detections=1)[0]
    assert torch.allclose(decoded["boxes"], targets[0]["boxes"]) and decoded["labels"].tolist() == [2]
    losses = dense.centernet_loss(outputs, encoded)
    assert float(losses["size"]) == 0.0 and float(losses["offset"]) == 0.0 and losses["loss"].requires_grad is False
    model = dense.CenterNet(num_classes=3, width=8)
    out = model(torch.randn(2, 3, 32, 32))
    assert out["heatmap"].shape == (2, 3, 8, 8) and out["size"].shape == (2, 2, 8, 8)
    dense.centernet_loss(out, dense.centernet_targets(targets * 2, 3, (8, 8)))["loss"].backward()


def coco_ap(predictions, targets, num_classes):
    """AP at IoU 0.5 per class from pycocotools' COCOeval, run directly."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = {"images": [{"id": i} for i in range(len(targets))],
             "categories": [{"id": c} for c in range(num_classes)], "annotations": []}
    for i, target in enumerate(targets):
        for (x0, y0, x1, y1), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            truth["annotations"].append({"id": len(truth["annotations"]) + 1, "image_id": i, "category_id": label,
                                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                         "iscrowd": 0})
    found = [{"image_id": i, "category_id": label, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}
             for i, p in enumerate(predictions)
             for (x0, y0, x1, y1), score, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist())]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = truth
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(found), "bbox")
        evaluation.params.iouThrs = np.array([0.5])
        evaluation.evaluate()
        evaluation.accumulate()
    return evaluation.eval["precision"][0, :, :, 0, -1].mean(axis=0)


def noisy_detections(seed, images=30, num_classes=3, coarse_scores=False):
    generator = torch.Generator().manual_seed(seed)
    predictions, targets = [], []
    for _ in range(images):
        count = int(torch.randint(1, 5, (1,), generator=generator))
        truth = random_boxes(count, int(torch.randint(0, 10**6, (1,), generator=generator)))
        labels = torch.randint(0, num_classes, (count,), generator=generator)
        found = int(torch.randint(1, 8, (1,), generator=generator))
        source = torch.randint(0, count, (found,), generator=generator)
        boxes = truth[source] + torch.randn(found, 4, generator=generator) * 2
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 0.1)
        found_labels = torch.where(torch.rand(found, generator=generator) < 0.8, labels[source],
                                   torch.randint(0, num_classes, (found,), generator=generator))
        scores = torch.rand(found, generator=generator)
        if coarse_scores:
            scores = (scores * 4).round() / 4  # many equal scores
        predictions.append({"boxes": boxes, "scores": scores, "labels": found_labels})
        targets.append({"boxes": truth, "labels": labels})
    return predictions, targets


@pytest.mark.parametrize("seed, coarse_scores", [(0, False), (0, True), (1, False), (2, True)])
def test_average_precision_equals_pycocotools(seed, coarse_scores):
    predictions, targets = noisy_detections(seed, coarse_scores=coarse_scores)
    mean, per_class = dense.average_precision(predictions, targets, iou_threshold=0.5)
    expected = coco_ap(predictions, targets, 3)
    assert np.allclose([per_class[c] for c in range(3)], expected, atol=1e-9)
    assert np.isclose(mean, expected.mean(), atol=1e-9)


def test_average_precision_refuses_lists_of_different_lengths():
    with pytest.raises(ValueError, match="same images"):
        dense.average_precision([], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])


# --------------------------------------------------------------------------- super-resolution and heads

def test_espcn_shapes_and_residual_start_at_bicubic():
    x = torch.rand(2, 1, 8, 10)
    assert dense.ESPCN(scale=3, channels=1, width=8)(x).shape == (2, 1, 24, 30)
    bicubic = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    assert torch.allclose(dense.ESPCN(2, 1, 8, residual=True)(x), bicubic, atol=1e-6)
    with pytest.raises(ValueError, match=r"ESPCN expects \(N, 1, H, W\)"):
        dense.ESPCN(2, 1, 8)(torch.rand(2, 3, 8, 8))


def test_psnr_is_ten_log10_of_one_over_the_mse():
    target = torch.zeros(2, 1, 4, 4)
    prediction = torch.full((2, 1, 4, 4), 0.1)
    assert torch.allclose(dense.psnr(prediction, target), torch.tensor([20.0, 20.0]))
    with pytest.raises(ValueError, match="same shape"):
        dense.psnr(prediction, target[:1])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        dense.psnr(prediction[0], target[0])


def test_hydranet_outputs_and_its_weighted_loss():
    torch.manual_seed(0)
    model = dense.HydraNet(num_classes=5, width=8)
    out = model(torch.rand(3, 3, 16, 16))
    assert out["label"].shape == (3, 5) and out["mask"].shape == (3, 6, 16, 16)
    labels, masks = torch.tensor([0, 2, 4]), torch.randint(0, 6, (3, 16, 16))
    parts = dense.hydra_loss(out, labels, masks, label_weight=0.3, mask_weight=2.0)
    assert torch.isclose(parts["loss"], 0.3 * F.cross_entropy(out["label"], labels)
                         + 2.0 * F.cross_entropy(out["mask"], masks))
