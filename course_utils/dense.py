"""Dense prediction: upsampling, segmentation, detection and super-resolution (``notebooks/17_dense_prediction.ipynb``).

What chapter 17 builds in the open and later code reuses, read top to bottom:

* upsampling: ``overlap_counts`` (how many taps of a transposed convolution land on each output pixel: the
  checkerboard pattern of Odena et al. 2016, Distill "Deconvolution and Checkerboard Artifacts");
* segmentation: ``DoubleConv``, ``UNetDecoderBlock`` and ``UNet`` (Ronneberger et al. 2015, arXiv:1505.04597),
  ``ASPP`` (Chen et al. 2017, arXiv:1706.05587), ``FPN`` (Lin et al. 2016, arXiv:1612.03144; the same
  computation as ``torchvision.ops.FeaturePyramidNetwork``), ``confusion_matrix`` and ``iou_per_class``;
* detection: ``box_iou``, ``nms``, ``detection_canvases`` (the shapes tiled into images of several objects), the
  small anchor-free detector ``CenterNet`` (a centre heat map, box sizes and sub-cell offsets: Zhou et al. 2019,
  arXiv:1904.07850), ``centernet_targets``, ``centernet_loss``, ``decode_centernet`` and ``average_precision``
  (COCO-style AP at one IoU threshold, written to follow pycocotools' ``COCOeval``);
* super-resolution: ``ESPCN`` (Shi et al. 2016, arXiv:1609.05158) and ``psnr``;
* one backbone, several heads: ``HydraNet`` and ``hydra_loss``.

Shape letters as in the README: N batch, C channels, H, W height and width, F filters; boxes are (x_min, y_min,
x_max, y_max) in pixels, max exclusive (torchvision's ``xyxy``).
"""
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# --------------------------------------------------------------------------- upsampling


def overlap_counts(kernel_size, stride, input_size):
    """How many taps of a transposed convolution land on each output pixel (no padding, no dilation).

    Input pixel ``i`` of a transposed convolution writes its kernel to output rows ``i*S .. i*S + K - 1``; where
    ``K`` is not a multiple of ``S`` the writes overlap unevenly, which is the checkerboard of Odena et al. (2016).

    Args:
        kernel_size: K >= 1 (square kernel).
        stride: S >= 1.
        input_size: H >= 1 (square input).

    Returns:
        int64 array (H_out, H_out), H_out = (H - 1)*S + K: the number of (input pixel, kernel tap) pairs per pixel.
    """
    for name, value in (("kernel_size", kernel_size), ("stride", stride), ("input_size", input_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    size = (input_size - 1) * stride + kernel_size
    per_axis = np.zeros(size, dtype=np.int64)  # (H_out,)
    for i in range(input_size):
        per_axis[i * stride:i * stride + kernel_size] += 1
    return np.outer(per_axis, per_axis)  # (H_out, H_out): the count of a 2-D kernel is the product of both axes'


# --------------------------------------------------------------------------- segmentation: U-Net, ASPP, FPN


class DoubleConv(nn.Module):
    """Two 3x3 convolutions (padding 1, sizes kept), each followed by batch norm and ReLU: U-Net's unit."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class UNetDecoderBlock(nn.Module):
    """One step up a U-Net: upsample x2 with a 2x2 stride-2 transposed convolution, concatenate the skip, two
    3x3 convolutions with ReLU (the exercise of chapter 17).

    ``forward(x, skip)``: x (N, in_channels, H, W), skip (N, skip_channels, 2H, 2W) -> (N, out_channels, 2H, 2W).
    """

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv1 = nn.Conv2d(out_channels + skip_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x, skip):
        x = self.up(x)  # (N, out_channels, 2H, 2W)
        if x.shape[-2:] != skip.shape[-2:]:
            raise ValueError(f"the upsampled input is {tuple(x.shape[-2:])} but the skip is {tuple(skip.shape[-2:])}; "
                             f"the skip must be twice the input's height and width")
        x = torch.cat([x, skip], dim=1)  # (N, out_channels + skip_channels, 2H, 2W): upsampled first, then skip
        x = F.relu(self.conv1(x))
        return F.relu(self.conv2(x))


class UNet(nn.Module):
    """A small U-Net: an encoder of ``DoubleConv`` stages halved by max pooling, a decoder of
    ``UNetDecoderBlock``s that concatenate the encoder's maps, a 1x1 convolution to class scores.

    ``forward``: (N, in_channels, H, W) -> (N, num_classes, H, W); H and W divisible by 2**(len(widths) - 1).
    """

    def __init__(self, in_channels=3, num_classes=6, widths=(16, 32, 64)):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths needs at least two stages (one down, one up); got {widths!r}")
        self.widths = tuple(widths)
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoder.append(DoubleConv(channels, width))
            channels = width
        self.decoder = nn.ModuleList(
            UNetDecoderBlock(widths[i + 1], widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x):
        factor = 2 ** (len(self.widths) - 1)
        if x.ndim != 4 or x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"UNet expects (N, C, H, W) with H and W divisible by {factor}; got {tuple(x.shape)}")
        skips = []
        for index, stage in enumerate(self.encoder):
            if index > 0:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            skips.append(x)
        x = skips.pop()  # the bottleneck, (N, widths[-1], H / factor, W / factor)
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3, Chen et al. 2017, arXiv:1706.05587, section 3.3).

    Parallel branches see the same map at several scales: a 1x1 convolution, 3x3 convolutions dilated by each of
    ``rates`` (padding = rate, so every branch keeps H, W) and a global average pool broadcast back; their outputs
    are concatenated and mixed by a 1x1 convolution. (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(self, in_channels, out_channels, rates=(2, 4, 6)):
        super().__init__()
        self.branches = nn.ModuleList([nn.Conv2d(in_channels, out_channels, 1)])
        for rate in rates:
            self.branches.append(nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate))
        self.pool_branch = nn.Conv2d(in_channels, out_channels, 1)
        self.project = nn.Conv2d(out_channels * (len(rates) + 2), out_channels, 1)

    def forward(self, x):
        N, C, H, W = x.shape
        outputs = [F.relu(branch(x)) for branch in self.branches]  # each (N, out_channels, H, W)
        pooled = F.relu(self.pool_branch(x.mean(dim=(2, 3), keepdim=True)))  # (N, out_channels, 1, 1)
        outputs.append(pooled.expand(-1, -1, H, W))  # (N, out_channels, H, W)
        return F.relu(self.project(torch.cat(outputs, dim=1)))


class FPN(nn.Module):
    """Feature pyramid network (Lin et al. 2016, arXiv:1612.03144, section 3), top-down with lateral connections.

    Each input map gets a 1x1 lateral convolution to ``out_channels``; from the coarsest map down, the running
    top-down map is upsampled (nearest, to the finer map's size) and added to the finer lateral; a 3x3 convolution
    smooths every sum. The same computation as ``torchvision.ops.FeaturePyramidNetwork`` without extra blocks
    (its ``inner_blocks[i][0]`` and ``layer_blocks[i][0]`` are ``lateral[i]`` and ``output[i]`` here).

    ``forward(features)``: a list of maps, finest first, (N, in_channels_list[i], H_i, W_i) -> a list of
    (N, out_channels, H_i, W_i).
    """

    def __init__(self, in_channels_list, out_channels):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels_list)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels_list)

    def forward(self, features):
        if len(features) != len(self.lateral):
            raise ValueError(f"FPN expects {len(self.lateral)} feature maps, finest first; got {len(features)}")
        top_down = self.lateral[-1](features[-1])
        outputs = [self.output[-1](top_down)]
        for index in range(len(features) - 2, -1, -1):
            lateral = self.lateral[index](features[index])
            top_down = lateral + F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.output[index](top_down))
        return outputs


def confusion_matrix(pred, target, num_classes):
    """Pixel counts of (true class, predicted class) over a whole set of label maps.

    Args:
        pred, target: integer tensors or arrays of the same shape, e.g. (N, H, W), values in [0, num_classes).
        num_classes: K.

    Returns:
        int64 array (K, K); entry [t, p] counts the pixels of true class t predicted as p.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape; got {pred.shape} and {target.shape}")
    if not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(target.dtype, np.integer)):
        raise TypeError(f"pred and target must hold integer class indices; got {pred.dtype} and {target.dtype}")
    for name, values in (("pred", pred), ("target", target)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds classes outside [0, {num_classes}): {values.min()} .. {values.max()}")
    flat = target.reshape(-1) * num_classes + pred.reshape(-1)  # (pixels,): one index per (true, predicted) pair
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)  # (K, K)


def iou_per_class(confusion):
    """IoU of each class from a confusion matrix: TP / (TP + FP + FN), NaN where the class is absent from both.

    Args:
        confusion: array (K, K) of pixel counts, [true, predicted].

    Returns:
        float64 array (K,).
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square (K, K) matrix; got shape {confusion.shape}")
    true_positive = np.diag(confusion).astype(np.float64)  # (K,)
    union = confusion.sum(0) + confusion.sum(1) - true_positive  # (K,): predicted + true - both
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


# --------------------------------------------------------------------------- detection: boxes


def _check_boxes(boxes, name):
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor of shape (N, 4); got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) (x_min, y_min, x_max, y_max); got {tuple(boxes.shape)}")


def box_iou(boxes1, boxes2):
    """Intersection over union of every pair of boxes, as ``torchvision.ops.box_iou``.

    Args:
        boxes1: tensor (N, 4), boxes2: tensor (M, 4), as (x_min, y_min, x_max, y_max), max exclusive: a box's
            area is (x_max - x_min) * (y_max - y_min), no "+1".

    Returns:
        tensor (N, M).
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])  # (N,)
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])  # (M,)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    sides = (bottom_right - top_left).clamp(min=0)  # (N, M, 2): zero where the boxes do not overlap
    intersection = sides[..., 0] * sides[..., 1]  # (N, M)
    return intersection / (area1[:, None] + area2[None, :] - intersection)


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``.

    Boxes are visited by decreasing score (equal scores: lower index first); each box still standing is kept and
    removes every later box whose IoU with it is strictly greater than ``iou_threshold``.

    Args:
        boxes: tensor (N, 4); scores: tensor (N,); iou_threshold: float.

    Returns:
        int64 tensor (K,): indices of the kept boxes, by decreasing score.
    """
    _check_boxes(boxes, "boxes")
    if not isinstance(scores, torch.Tensor) or scores.shape != (boxes.shape[0],):
        raise ValueError(f"scores must be a tensor of shape ({boxes.shape[0]},); got "
                         f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}")
    order = torch.argsort(scores, descending=True, stable=True)  # (N,)
    iou = box_iou(boxes, boxes)  # (N, N)
    removed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for index in order.tolist():
        if removed[index]:
            continue
        keep.append(index)
        removed |= iou[index] > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def detection_canvases(shapes, grid=2):
    """Tile single-shape images into canvases of ``grid * grid`` shapes each, for detection.

    Args:
        shapes: a ``course_utils.data.Shapes`` of N images (3, S, S), N a multiple of grid**2.
        grid: tiles per side.

    Returns:
        images: float32 tensor (N / grid**2, 3, grid*S, grid*S);
        targets: a list of dicts ``{"boxes": float32 (grid**2, 4), "labels": int64 (grid**2,)}``, one per canvas.
    """
    N, C, S, _ = shapes.images.shape
    per_canvas = grid * grid
    if N % per_canvas:
        raise ValueError(f"the number of shapes ({N}) must be a multiple of grid**2 = {per_canvas}")
    tiles = torch.from_numpy(shapes.images).reshape(N // per_canvas, grid, grid, C, S, S)  # (M, g, g, C, S, S)
    images = tiles.permute(0, 3, 1, 4, 2, 5).reshape(N // per_canvas, C, grid * S, grid * S)  # (M, C, gS, gS)
    rows, cols = np.divmod(np.arange(per_canvas), grid)  # (g*g,) each: tile position in the canvas
    shift = np.stack([cols, rows, cols, rows], axis=1) * S  # (g*g, 4): x, y, x, y offsets
    boxes = shapes.boxes.reshape(-1, per_canvas, 4) + shift  # (M, g*g, 4)
    labels = shapes.labels.reshape(-1, per_canvas)  # (M, g*g)
    targets = [{"boxes": torch.from_numpy(b.astype(np.float32)), "labels": torch.from_numpy(l)}
               for b, l in zip(boxes, labels)]
    return images.contiguous(), targets


# --------------------------------------------------------------------------- detection: an anchor-free detector


class CenterNet(nn.Module):
    """A small CenterNet (Zhou et al. 2019, arXiv:1904.07850): a stride-4 backbone and three 1-channel-per-output
    heads on its map.

    ``forward``: images (N, 3, H, W) -> dict of ``heatmap`` logits (N, num_classes, H/4, W/4) (one peak per object
    centre), ``size`` (N, 2, H/4, W/4) (box width and height in pixels, read at the peak) and ``offset``
    (N, 2, H/4, W/4) (the centre's position inside its cell, in cells, in [0, 1)).
    """

    stride = 4

    def __init__(self, num_classes=5, width=32):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, stride=2, padding=1), nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            # dilated convolutions widen the receptive field to a whole shape without shrinking the map
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.BatchNorm2d(width), nn.ReLU(),
        )
        self.heatmap = nn.Conv2d(width, num_classes, 1)
        self.size = nn.Conv2d(width, 2, 1)
        self.offset = nn.Conv2d(width, 2, 1)
        # start every heat map near sigmoid = 0.01: almost every cell is background (CenterNet, section 4, after
        # the focal-loss paper, Lin et al. 2017, arXiv:1708.02002, section 4.1)
        nn.init.constant_(self.heatmap.bias, -4.6)

    def forward(self, x):
        features = self.backbone(x)  # (N, width, H/4, W/4)
        return {"heatmap": self.heatmap(features), "size": self.size(features), "offset": self.offset(features)}


def centernet_targets(targets, num_classes, map_size, stride=4):
    """The training targets of ``CenterNet`` for a batch.

    Each object puts a Gaussian of peak 1 at its centre cell in its class's heat map (sigma = a sixth of the box's
    mean side, in cells; overlapping Gaussians keep the maximum), its width and height (pixels) and the centre's
    fraction inside the cell at that cell.

    Args:
        targets: list of N dicts with ``boxes`` (M, 4) and ``labels`` (M,).
        num_classes: K; map_size: (H_map, W_map); stride: pixels per cell.

    Returns:
        dict of ``heatmap`` (N, K, H_map, W_map), ``size`` (N, 2, H_map, W_map), ``offset`` (N, 2, H_map, W_map),
        ``centre`` (N, H_map, W_map) bool: the cells where ``size`` and ``offset`` are defined.
    """
    H_map, W_map = map_size
    N = len(targets)
    heatmap = torch.zeros(N, num_classes, H_map, W_map)
    size = torch.zeros(N, 2, H_map, W_map)
    offset = torch.zeros(N, 2, H_map, W_map)
    centre = torch.zeros(N, H_map, W_map, dtype=torch.bool)
    rows = torch.arange(H_map, dtype=torch.float32)[:, None]  # (H_map, 1)
    cols = torch.arange(W_map, dtype=torch.float32)[None, :]  # (1, W_map)
    for n, target in enumerate(targets):
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            cx, cy = (box[0] + box[2]) / 2 / stride, (box[1] + box[3]) / 2 / stride  # centre, in cells
            i, j = min(int(cy), H_map - 1), min(int(cx), W_map - 1)
            sigma = max(((box[2] - box[0]) + (box[3] - box[1])) / 2 / stride / 6, 0.5)
            gaussian = torch.exp(-((rows - i) ** 2 + (cols - j) ** 2) / (2 * sigma**2))  # (H_map, W_map)
            heatmap[n, label] = torch.maximum(heatmap[n, label], gaussian)
            size[n, :, i, j] = torch.tensor([box[2] - box[0], box[3] - box[1]])
            offset[n, :, i, j] = torch.tensor([cx - j, cy - i])
            centre[n, i, j] = True
    return {"heatmap": heatmap, "size": size, "offset": offset, "centre": centre}


def centernet_loss(outputs, targets, size_weight=0.1, offset_weight=1.0):
    """CenterNet's training loss (Zhou et al. 2019, equations 1-3): focal loss on the heat map plus L1 on the sizes
    and offsets at the object centres, each normalised by the number of objects.

    Args:
        outputs: ``CenterNet``'s dict; targets: ``centernet_targets``'s dict (same map size).
        size_weight, offset_weight: the weights of the L1 terms (the paper's lambda_size = 0.1, lambda_off = 1).

    Returns:
        dict of ``loss`` (the weighted sum, differentiable) and its ``heatmap``, ``size``, ``offset`` terms.
    """
    probability = torch.sigmoid(outputs["heatmap"].float()).clamp(1e-4, 1 - 1e-4)  # (N, K, H, W), float32 always
    target = targets["heatmap"]
    is_peak = target.eq(1).float()
    num_objects = is_peak.sum().clamp(min=1.0)
    # penalty-reduced focal loss: alpha = 2, beta = 4 (equation 1)
    positive = is_peak * (1 - probability) ** 2 * torch.log(probability)
    negative = (1 - is_peak) * (1 - target) ** 4 * probability**2 * torch.log(1 - probability)
    heatmap_loss = -(positive + negative).sum() / num_objects
    centre = targets["centre"][:, None].float()  # (N, 1, H, W)
    size_loss = (centre * (outputs["size"].float() - targets["size"]).abs()).sum() / num_objects
    offset_loss = (centre * (outputs["offset"].float() - targets["offset"]).abs()).sum() / num_objects
    loss = heatmap_loss + size_weight * size_loss + offset_weight * offset_loss
    return {"loss": loss, "heatmap": heatmap_loss.detach(), "size": size_loss.detach(),
            "offset": offset_loss.detach()}


def decode_centernet(outputs, stride=4, max_detections=20):
    """Boxes from ``CenterNet``'s outputs: heat-map peaks (a cell that equals the 3x3 maximum around it) stand in
    for non-maximum suppression (Zhou et al. 2019, section 4).

    Args:
        outputs: ``CenterNet``'s dict for N images.
        stride: pixels per cell; max_detections: the highest-scoring peaks kept per image.

    Returns:
        a list of N dicts ``{"boxes": (D, 4), "scores": (D,), "labels": (D,)}``, by decreasing score.
    """
    heat = torch.sigmoid(outputs["heatmap"].float())  # (N, K, H, W)
    N, K, H, W = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)  # (N, K, H, W): zero off the peaks
    scores, flat = peaks.reshape(N, -1).topk(min(max_detections, K * H * W), dim=1)  # (N, D) each
    labels, cell = flat // (H * W), flat % (H * W)  # (N, D) each
    i, j = cell // W, cell % W
    detections = []
    for n in range(N):
        offset = outputs["offset"][n, :, i[n], j[n]].float()  # (2, D)
        size = outputs["size"][n, :, i[n], j[n]].float().clamp(min=0)  # (2, D): a box has no negative side
        cx = (j[n] + offset[0]) * stride
        cy = (i[n] + offset[1]) * stride
        boxes = torch.stack([cx - size[0] / 2, cy - size[1] / 2, cx + size[0] / 2, cy + size[1] / 2], dim=1)
        detections.append({"boxes": boxes.detach().cpu(), "scores": scores[n].detach().cpu(),
                           "labels": labels[n].detach().cpu()})
    return detections


def average_precision(predictions, targets, iou_threshold=0.5, max_detections=100):
    """COCO-style mean average precision at one IoU threshold, written to follow pycocotools' ``COCOeval``.

    Per class: each image's detections (the ``max_detections`` highest-scoring) are matched by decreasing score,
    each to the not-yet-matched ground-truth box of highest IoU, if that IoU >= ``iou_threshold``; all images'
    detections are then ranked by score, precision is made non-increasing in recall and read at the 101 recalls
    0, 0.01, ..., 1 (0 past the highest recall reached); AP is their mean. The mean is over the classes that have
    ground truth.

    Args:
        predictions: list of dicts ``{"boxes": (D, 4), "scores": (D,), "labels": (D,)}``, one per image.
        targets: list of dicts ``{"boxes": (G, 4), "labels": (G,)}``, same length.

    Returns:
        (mean AP, {class: AP}).
    """
    if len(predictions) != len(targets):
        raise ValueError(f"predictions and targets must list the same images; got {len(predictions)} and "
                         f"{len(targets)}")
    classes = sorted({int(c) for t in targets for c in t["labels"].tolist()})
    recall_points = np.linspace(0.0, 1.0, 101)
    per_class = {}
    for c in classes:
        scores, matched, num_truth = [], [], 0
        for prediction, target in zip(predictions, targets):
            truth = target["boxes"][target["labels"] == c].float()  # (G_c, 4)
            num_truth += len(truth)
            mine = prediction["labels"] == c
            order = torch.argsort(prediction["scores"][mine], descending=True, stable=True)[:max_detections]
            boxes, image_scores = prediction["boxes"][mine][order].float(), prediction["scores"][mine][order]
            taken = torch.zeros(len(truth), dtype=torch.bool)
            iou = box_iou(boxes, truth) if len(truth) and len(boxes) else torch.zeros(len(boxes), len(truth))
            for d in range(len(boxes)):
                # as COCOeval.evaluateImg: the untaken truth of highest IoU >= the threshold (the last one on ties)
                best, best_iou = -1, min(iou_threshold, 1 - 1e-10)
                for g in range(len(truth)):
                    if not taken[g] and float(iou[d, g]) >= best_iou:
                        best, best_iou = g, float(iou[d, g])
                if best >= 0:
                    taken[best] = True
                matched.append(best >= 0)
            scores.extend(image_scores.tolist())
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
        hits = np.asarray(matched, dtype=np.float64)[order]
        true_positives, false_positives = np.cumsum(hits), np.cumsum(1.0 - hits)
        recall = true_positives / num_truth
        precision = true_positives / np.maximum(true_positives + false_positives, np.finfo(np.float64).eps)
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope: best precision at any higher recall
        where = np.searchsorted(recall, recall_points, side="left")
        sampled = np.where(where < len(precision), precision[np.minimum(where, len(precision) - 1)], 0.0)
        per_class[c] = float(sampled.mean()) if len(hits) else 0.0
    return (float(np.mean(list(per_class.values()))) if per_class else float("nan")), per_class


# --------------------------------------------------------------------------- super-resolution


class ESPCN(nn.Module):
    """Efficient sub-pixel convolution network (Shi et al. 2016, arXiv:1609.05158, section 2.2).

    All convolutions run at the low resolution; the last one outputs ``channels * scale**2`` maps that
    ``nn.PixelShuffle(scale)`` rearranges into the high-resolution image:
    (N, channels, H, W) -> (N, channels, scale*H, scale*W).

    ``residual=True`` adds the bicubic upsampling of the input to the output, so that the network learns only what
    bicubic interpolation misses (residual learning, as in VDSR: Kim et al. 2016, arXiv:1511.04587); the last
    convolution then starts at zero, so the untrained network is bicubic interpolation.
    """

    def __init__(self, scale=2, channels=1, width=32, residual=False):
        super().__init__()
        self.scale, self.residual = scale, residual
        self.conv1 = nn.Conv2d(channels, width, 5, padding=2)
        self.conv2 = nn.Conv2d(width, width // 2, 3, padding=1)
        self.conv3 = nn.Conv2d(width // 2, channels * scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        if residual:
            nn.init.zeros_(self.conv3.weight)
            nn.init.zeros_(self.conv3.bias)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.conv1.in_channels:
            raise ValueError(f"ESPCN expects (N, {self.conv1.in_channels}, H, W); got {tuple(x.shape)}")
        out = torch.tanh(self.conv1(x))  # the paper uses tanh
        out = torch.tanh(self.conv2(out))
        out = self.conv3(out)  # (N, channels * scale**2, H, W)
        out = self.shuffle(out)  # (N, channels, scale*H, scale*W)
        if self.residual:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


def psnr(prediction, target, max_value=1.0):
    """Peak signal-to-noise ratio in dB, 10 log10(max_value**2 / MSE), of each image of a batch.

    Args:
        prediction, target: tensors (N, C, H, W) of the same shape.

    Returns:
        tensor (N,).
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target must have the same shape; got {tuple(prediction.shape)} and "
                         f"{tuple(target.shape)}")
    if prediction.ndim != 4:
        raise ValueError(f"psnr expects (N, C, H, W) batches; got {prediction.ndim} dimensions")
    mse = ((prediction.float() - target.float()) ** 2).mean(dim=(1, 2, 3))  # (N,)
    return 10 * torch.log10(max_value**2 / mse)


# --------------------------------------------------------------------------- one backbone, several heads


class HydraNet(nn.Module):
    """A shared encoder with a classification head and a segmentation head.

    ``forward``: images (N, 3, H, W) -> dict of ``label`` logits (N, num_classes) and ``mask`` logits
    (N, num_classes + 1, H, W) (class 0 is the background). H and W divisible by 4.
    """

    def __init__(self, num_classes=5, width=32):
        super().__init__()
        self.encoder = nn.Sequential(
            DoubleConv(3, width // 2), nn.MaxPool2d(2),
            DoubleConv(width // 2, width), nn.MaxPool2d(2),
        )
        self.classify = nn.Linear(width, num_classes)
        self.segment = nn.Conv2d(width, num_classes + 1, 1)

    def forward(self, x):
        features = self.encoder(x)  # (N, width, H/4, W/4)
        label = self.classify(features.mean(dim=(2, 3)))  # (N, num_classes)
        mask = F.interpolate(self.segment(features), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"label": label, "mask": mask}


def hydra_loss(outputs, labels, masks, label_weight=1.0, mask_weight=1.0, mask_class_weights=None):
    """``label_weight * cross_entropy(labels) + mask_weight * pixel-wise cross_entropy(masks)``.

    ``mask_class_weights`` (num_classes + 1,) weighs the pixels of each class in the mask term (``F.cross_entropy``'s
    ``weight``), e.g. less for the background that covers most pixels.

    Returns:
        dict of ``loss`` (differentiable) and its unweighted ``label`` and ``mask`` terms.
    """
    label_loss = F.cross_entropy(outputs["label"], labels)
    mask_loss = F.cross_entropy(outputs["mask"], masks, weight=mask_class_weights)
    return {"loss": label_weight * label_loss + mask_weight * mask_loss, "label": label_loss.detach(),
            "mask": mask_loss.detach()}
