"""Learners' networks for ``tests/test_architecture_zoo.py``: torchvision's families written out in plain PyTorch.

Each class is one torchvision block or network written the way a learner would write it after reading the paper:
its own attribute names and nesting (no ``nn.Sequential`` named as torchvision's), functional activations, global
pooling as a mean. Every one computes exactly what the torchvision class next to it in the tests computes, given
the same weights; the check copies the reference's weights in, so the values these classes are built with do not
matter. Networks take their block as an argument (as torchvision's do), so that a test can swap in a block with
one mistake.

Sources read for each family (torchvision 0.29, ``torchvision/models``): ``resnet.py``, ``densenet.py``,
``mobilenetv2.py``, ``mobilenetv3.py``, ``shufflenetv2.py``, ``efficientnet.py``, ``convnext.py``,
``vision_transformer.py`` and ``torchvision/ops/misc.py`` (``Conv2dNormActivation``, ``SqueezeExcitation``).

Shape letters: N batch, C channels, H, W height and width; ViT: S tokens, D width, H heads (``num_heads``).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------- ResNet, ResNeXt (He et al. 2016)

class ResidualBlock(nn.Module):
    """ResNet's basic block (Fig. 2 of the paper): two 3x3 convolutions, batch norms, and a shortcut.

    The projection shortcut (a strided 1x1 convolution and a batch norm, option B of section 3.3) is used where the
    block changes the shape; torchvision keeps it in ``downsample``, a ``Sequential`` named ``0`` and ``1``.
    """

    expansion = 1  # output channels per ``planes``

    def __init__(self, in_channels, planes, stride=1):
        super().__init__()
        self.first_conv = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.first_norm = nn.BatchNorm2d(planes)
        self.second_conv = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.second_norm = nn.BatchNorm2d(planes)
        self.shortcut_conv, self.shortcut_norm = None, None
        if stride != 1 or in_channels != planes:
            self.shortcut_conv = nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False)
            self.shortcut_norm = nn.BatchNorm2d(planes)

    def shortcut(self, x):
        if self.shortcut_conv is None:
            return x
        return self.shortcut_norm(self.shortcut_conv(x))

    def forward(self, x):
        out = self.first_conv(x)
        out = self.first_norm(out)
        out = F.relu(out)
        out = self.second_conv(out)
        out = self.second_norm(out)
        out = out + self.shortcut(x)
        return F.relu(out)


class ResidualBlockShortcutFirst(ResidualBlock):
    """The same block with the projection shortcut registered before the main path in ``__init__``."""

    def __init__(self, in_channels, planes, stride=1):
        nn.Module.__init__(self)  # not ResidualBlock.__init__: the order of registration is the point
        self.shortcut_conv, self.shortcut_norm = None, None
        if stride != 1 or in_channels != planes:
            self.shortcut_conv = nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False)
            self.shortcut_norm = nn.BatchNorm2d(planes)
        self.first_conv = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.first_norm = nn.BatchNorm2d(planes)
        self.second_conv = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.second_norm = nn.BatchNorm2d(planes)


class ResidualBlockShortcutComputedFirst(ResidualBlockShortcutFirst):
    """The shortcut registered first and also computed first in ``forward``: the branches run in the other order."""

    def forward(self, x):
        identity = self.shortcut(x)
        out = self.first_conv(x)
        out = self.first_norm(out)
        out = torch.relu(out)
        out = self.second_conv(out)
        out = self.second_norm(out)
        out = identity + out
        return torch.relu(out)


class BottleneckBlock(nn.Module):
    """ResNet-50's bottleneck (Fig. 5 right): 1x1 down to ``width``, 3x3 (strided, grouped for ResNeXt), 1x1 up.

    The stride sits on the 3x3 convolution, as in torchvision ("ResNet v1.5"), not on the first 1x1 of the paper.
    ``width = planes * width_per_group / 64 * cardinality``: ``planes`` for ResNet, ``2 * planes`` for ResNeXt-50
    32x4d (Xie et al. 2017, Table 1).
    """

    expansion = 4
    cardinality = 1  # groups of the 3x3 convolution
    width_per_group = 64

    def __init__(self, in_channels, planes, stride=1):
        super().__init__()
        width = planes * self.width_per_group // 64 * self.cardinality
        out_channels = planes * self.expansion
        self.reduce = nn.Conv2d(in_channels, width, 1, bias=False)
        self.reduce_norm = nn.BatchNorm2d(width)
        self.spatial = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=self.cardinality, bias=False)
        self.spatial_norm = nn.BatchNorm2d(width)
        self.expand = nn.Conv2d(width, out_channels, 1, bias=False)
        self.expand_norm = nn.BatchNorm2d(out_channels)
        self.projection = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.ModuleDict({
                "conv": nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                "norm": nn.BatchNorm2d(out_channels),
            })

    def forward(self, x):
        out = F.relu(self.reduce_norm(self.reduce(x)))
        out = F.relu(self.spatial_norm(self.spatial(out)))
        out = self.expand_norm(self.expand(out))
        identity = x if self.projection is None else self.projection["norm"](self.projection["conv"](x))
        return F.relu(out + identity)


class ResNeXtBlock(BottleneckBlock):
    """ResNeXt-50 32x4d's block: 32 groups of 4 channels per 64 ``planes`` in the 3x3 convolution."""

    cardinality = 32
    width_per_group = 4


class ResNet(nn.Module):
    """ResNet (Table 1 of the paper): a 7x7 stem, four stages of ``block``, global average pooling, a classifier.

    ``blocks_per_stage``: [2, 2, 2, 2] with ``ResidualBlock`` is ResNet-18, [3, 4, 6, 3] with ``BottleneckBlock``
    ResNet-50; the tests use one block per stage to stay fast.
    """

    def __init__(self, block, blocks_per_stage, num_classes=10):
        super().__init__()
        self.stem_conv = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.stem_norm = nn.BatchNorm2d(64)
        stages, in_channels = [], 64
        for index, (planes, num_blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage)):
            blocks = []
            for position in range(num_blocks):
                stride = 2 if index > 0 and position == 0 else 1  # each stage after the first halves H and W
                blocks.append(block(in_channels, planes, stride))
                in_channels = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        x = self.stem_conv(x)
        x = self.stem_norm(x)
        x = F.relu(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        for stage in self.stages:
            x = stage(x)
        x = x.mean((2, 3))  # global average pooling: (N, C, H, W) -> (N, C)
        return self.classifier(x)


# --------------------------------------------------------------------------- DenseNet (Huang et al. 2017)

class DenseLayer(nn.Module):
    """DenseNet-BC's layer: BN-ReLU-Conv(1x1, 4k)-BN-ReLU-Conv(3x3, k); returns only the k new channels."""

    def __init__(self, in_channels, growth_rate, bottleneck_factor=4):
        super().__init__()
        inner = bottleneck_factor * growth_rate
        self.norm_in = nn.BatchNorm2d(in_channels)
        self.bottleneck = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.norm_inner = nn.BatchNorm2d(inner)
        self.grow = nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False)

    def forward(self, x):
        x = F.relu(self.norm_in(x))
        x = self.bottleneck(x)
        x = F.relu(self.norm_inner(x))
        return self.grow(x)  # (N, growth_rate, H, W)


class DenseBlockOfList(nn.Module):
    """A dense block keeping a list of feature maps and concatenating all of them before each layer (torchvision)."""

    def __init__(self, num_layers, in_channels, growth_rate):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_channels + i * growth_rate, growth_rate) for i in range(num_layers))

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)  # (N, C + num_layers * growth_rate, H, W)


class DenseBlockGrowing(DenseBlockOfList):
    """The same block growing one tensor: ``x = cat([x, layer(x)])`` after each layer (as in d2l)."""

    def forward(self, x):
        for layer in self.layers:
            new = layer(x)  # (N, growth_rate, H, W)
            x = torch.cat([x, new], 1)  # old channels first, then the new ones
        return x


class DenseNet(nn.Module):
    """DenseNet-BC (Table 1 of the paper): a 7x7 stem, dense blocks joined by compressing transitions, a classifier.

    ``compression`` is the paper's theta (section 3): each transition keeps ``int(C * compression)`` channels.
    DenseNet-121 is ``DenseNet(32, (6, 12, 24, 16), 64)``.
    """

    def __init__(self, growth_rate, block_config, num_init_features, num_classes=10, block=DenseBlockOfList,
                 compression=0.5):
        super().__init__()
        self.stem_conv = nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False)
        self.stem_norm = nn.BatchNorm2d(num_init_features)
        self.blocks, self.transition_norms, self.transition_convs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        channels = num_init_features
        for index, num_layers in enumerate(block_config):
            self.blocks.append(block(num_layers, channels, growth_rate))
            channels += num_layers * growth_rate
            if index < len(block_config) - 1:
                compressed = int(channels * compression)
                self.transition_norms.append(nn.BatchNorm2d(channels))
                self.transition_convs.append(nn.Conv2d(channels, compressed, 1, bias=False))
                channels = compressed
        self.final_norm = nn.BatchNorm2d(channels)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = F.relu(self.stem_norm(self.stem_conv(x)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index < len(self.transition_convs):
                x = self.transition_convs[index](F.relu(self.transition_norms[index](x)))
                x = F.avg_pool2d(x, 2)
        x = F.relu(self.final_norm(x))
        x = F.adaptive_avg_pool2d(x, 1)  # (N, C, 1, 1)
        x = x.flatten(1)  # (N, C)
        return self.classifier(x)


# --------------------------------------------------------------------------- MobileNetV2 (Sandler et al. 2018)

def relu6_as_clamp(x):
    return torch.clamp(x, 0, 6)


def relu6_as_hardtanh(x):
    return F.hardtanh(x, 0.0, 6.0)


class InvertedResidualV2(nn.Module):
    """MobileNetV2's inverted residual (Table 1 of the paper): 1x1 expand, 3x3 depthwise, linear 1x1 projection.

    ``activation``: ReLU6 in any writing (``F.relu6``, ``nn.ReLU6()``, ``torch.clamp(x, 0, 6)``, ...).
    No activation after the projection: the bottleneck is linear (section 3.2).
    """

    def __init__(self, in_channels, out_channels, stride, expand_ratio, activation=F.relu6):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.activation = activation
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand, self.expand_norm = None, None
        if expand_ratio != 1:
            self.expand = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self.expand_norm = nn.BatchNorm2d(hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.depthwise_norm = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.project_norm = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        out = x
        if self.expand is not None:
            out = self.activation(self.expand_norm(self.expand(out)))
        out = self.activation(self.depthwise_norm(self.depthwise(out)))
        out = self.project_norm(self.project(out))
        if self.use_residual:
            out = x + out
        return out


# torchvision's mobilenet_v2(width_mult=0.25): every count of Table 2 times 0.25, rounded to a multiple of 8
MOBILENET_V2_QUARTER = dict(
    stem_channels=8,
    setting=[(1, 8, 1, 1), (6, 8, 2, 2), (6, 8, 3, 2), (6, 16, 4, 2), (6, 24, 3, 1), (6, 40, 3, 2), (6, 80, 1, 1)],
    last_channels=1280,  # never below 1280
)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Table 2): a strided 3x3 stem, the inverted residuals of ``setting``, a 1x1 to ``last_channels``.

    ``setting`` rows are the paper's (t, c, n, s): expansion, output channels, repeats, stride of the first.
    """

    def __init__(self, stem_channels, setting, last_channels, num_classes=10, dropout=0.2, activation=F.relu6,
                 block=InvertedResidualV2):
        super().__init__()
        self.activation = activation
        self.dropout = dropout
        self.stem = nn.Conv2d(3, stem_channels, 3, stride=2, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(stem_channels)
        blocks, channels = [], stem_channels
        for expand_ratio, out_channels, repeats, stride in setting:
            for index in range(repeats):
                blocks.append(block(channels, out_channels, stride if index == 0 else 1, expand_ratio, activation))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(channels, last_channels, 1, bias=False)
        self.head_norm = nn.BatchNorm2d(last_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, x):
        x = self.activation(self.stem_norm(self.stem(x)))
        x = self.blocks(x)
        x = self.activation(self.head_norm(self.head(x)))
        x = self.pool(x)  # (N, C, 1, 1)
        x = F.dropout(x, self.dropout, self.training)  # dropout before flattening: the same values
        x = torch.flatten(x, 1)  # (N, C)
        return self.classifier(x)


# --------------------------------------------------------------------------- MobileNetV3 (Howard et al. 2019)

def hard_swish(x):
    """h-swish(x) = x * ReLU6(x + 3) / 6 (section 5.2 of the paper), written out."""
    return x * F.relu6(x + 3.0) / 6.0


def hard_sigmoid(x):
    """h-sigmoid(x) = ReLU6(x + 3) / 6, written out."""
    return F.relu6(x + 3.0) / 6.0


# MobileNetV3-Small, Table 2 of the paper: (in, kernel, expanded, out, squeeze channels or 0 for no SE,
# hard-swish?, stride). The squeeze widths are torchvision's: expanded // 4 rounded to a multiple of 8.
MOBILENET_V3_SMALL = [
    (16, 3, 16, 16, 8, False, 2),
    (16, 3, 72, 24, 0, False, 2),
    (24, 3, 88, 24, 0, False, 1),
    (24, 5, 96, 40, 24, True, 2),
    (40, 5, 240, 40, 64, True, 1),
    (40, 5, 240, 40, 64, True, 1),
    (40, 5, 120, 48, 32, True, 1),
    (48, 5, 144, 48, 40, True, 1),
    (48, 5, 288, 96, 72, True, 2),
    (96, 5, 576, 96, 144, True, 1),
    (96, 5, 576, 96, 144, True, 1),
]
MOBILENET_V3_EPS = 1e-3  # torchvision's batch norms in MobileNetV3 use eps=0.001


class MobileNetV3Block(nn.Module):
    """MobileNetV3's bottleneck: 1x1 expand, kxk depthwise, squeeze-and-excitation, linear 1x1 projection.

    The squeeze-and-excitation (Hu et al. 2018) is written with ``nn.Linear`` on the pooled (N, C) vector, where
    torchvision uses 1x1 convolutions on (N, C, 1, 1): the same weights without their trailing 1s.
    """

    def __init__(self, in_channels, kernel_size, expanded, out_channels, squeeze, use_hardswish, stride,
                 hardswish=F.hardswish, hardsigmoid=F.hardsigmoid):
        super().__init__()
        self.activation = hardswish if use_hardswish else F.relu
        self.gate = hardsigmoid
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand, self.expand_norm = None, None
        if expanded != in_channels:
            self.expand = nn.Conv2d(in_channels, expanded, 1, bias=False)
            self.expand_norm = nn.BatchNorm2d(expanded, eps=MOBILENET_V3_EPS)
        self.depthwise = nn.Conv2d(expanded, expanded, kernel_size, stride=stride, padding=kernel_size // 2,
                                   groups=expanded, bias=False)
        self.depthwise_norm = nn.BatchNorm2d(expanded, eps=MOBILENET_V3_EPS)
        self.se_reduce, self.se_expand = None, None
        if squeeze:
            self.se_reduce = nn.Linear(expanded, squeeze)
            self.se_expand = nn.Linear(squeeze, expanded)
        self.project = nn.Conv2d(expanded, out_channels, 1, bias=False)
        self.project_norm = nn.BatchNorm2d(out_channels, eps=MOBILENET_V3_EPS)

    def excitation(self, x):
        """The per-channel scale in (0, 1) computed from ``x`` (N, C, H, W): shape (N, C)."""
        s = x.mean((2, 3))  # squeeze: (N, C)
        s = F.relu(self.se_reduce(s))  # (N, squeeze)
        return self.gate(self.se_expand(s))  # (N, C)

    def forward(self, x):
        out = x
        if self.expand is not None:
            out = self.activation(self.expand_norm(self.expand(out)))
        out = self.activation(self.depthwise_norm(self.depthwise(out)))
        if self.se_reduce is not None:
            out = out * self.excitation(out)[:, :, None, None]  # (N, C, 1, 1) broadcast over H, W
        out = self.project_norm(self.project(out))
        if self.use_residual:
            out = out + x
        return out


class MobileNetV3BlockWrittenOut(MobileNetV3Block):
    """The same block with h-swish and h-sigmoid written out with ReLU6 (composite operations in steps)."""

    def __init__(self, *args):
        super().__init__(*args, hardswish=hard_swish, hardsigmoid=hard_sigmoid)


class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small (Table 2): a strided 3x3 stem, the bottlenecks of the table, 1x1 to 576, a 2-layer head."""

    def __init__(self, num_classes=10, table=MOBILENET_V3_SMALL, block=MobileNetV3Block, dropout=0.2):
        super().__init__()
        self.dropout = dropout
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(16, eps=MOBILENET_V3_EPS)
        self.blocks = nn.ModuleList(block(*row) for row in table)
        last_in = table[-1][3]
        self.last = nn.Conv2d(last_in, 6 * last_in, 1, bias=False)
        self.last_norm = nn.BatchNorm2d(6 * last_in, eps=MOBILENET_V3_EPS)
        self.hidden = nn.Linear(6 * last_in, 1024)
        self.classifier = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = F.hardswish(self.stem_norm(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        x = F.hardswish(self.last_norm(self.last(x)))
        x = x.mean((2, 3), keepdim=True)  # (N, C, 1, 1)
        x = x.flatten(1)  # (N, C)
        x = F.hardswish(self.hidden(x))
        x = F.dropout(x, self.dropout, self.training)
        return self.classifier(x)


# --------------------------------------------------------------------------- ShuffleNetV2 (Ma et al. 2018)

def channel_shuffle(x, groups):
    """Interleave the channels of ``groups`` groups (section 3 of ShuffleNet v1): (N, C, H, W) -> the same shape."""
    N, C, H, W = x.shape
    x = x.view(N, groups, C // groups, H, W)  # (N, groups, C/groups, H, W)
    x = x.transpose(1, 2)  # (N, C/groups, groups, H, W)
    return x.reshape(N, C, H, W)  # (N, C, H, W)


def channel_shuffle_permuted(x, groups):
    """The same shuffle written with ``reshape``, ``permute`` and ``flatten``."""
    N, C, H, W = x.shape
    x = x.reshape(N, groups, -1, H, W)  # (N, groups, C/groups, H, W)
    x = x.permute(0, 2, 1, 3, 4)  # (N, C/groups, groups, H, W)
    return x.flatten(1, 2)  # (N, C, H, W)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit (Fig. 3 c and d): split (or, to downsample, copy) the channels, one branch each, concatenate,
    shuffle. ``out_channels // 2`` channels per branch."""

    def __init__(self, in_channels, out_channels, stride, shuffle=channel_shuffle):
        super().__init__()
        self.stride = stride
        self.shuffle = shuffle
        half = out_channels // 2
        if stride > 1:  # the left branch: depthwise 3x3 then 1x1
            self.left_depthwise = nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1,
                                            groups=in_channels, bias=False)
            self.left_depthwise_norm = nn.BatchNorm2d(in_channels)
            self.left_pointwise = nn.Conv2d(in_channels, half, 1, bias=False)
            self.left_pointwise_norm = nn.BatchNorm2d(half)
        right_in = in_channels if stride > 1 else half
        self.right_reduce = nn.Conv2d(right_in, half, 1, bias=False)
        self.right_reduce_norm = nn.BatchNorm2d(half)
        self.right_depthwise = nn.Conv2d(half, half, 3, stride=stride, padding=1, groups=half, bias=False)
        self.right_depthwise_norm = nn.BatchNorm2d(half)
        self.right_expand = nn.Conv2d(half, half, 1, bias=False)
        self.right_expand_norm = nn.BatchNorm2d(half)

    def left(self, x):
        x = self.left_depthwise_norm(self.left_depthwise(x))  # no activation after a depthwise convolution
        return F.relu(self.left_pointwise_norm(self.left_pointwise(x)))

    def right(self, x):
        x = F.relu(self.right_reduce_norm(self.right_reduce(x)))
        x = self.right_depthwise_norm(self.right_depthwise(x))
        return F.relu(self.right_expand_norm(self.right_expand(x)))

    def forward(self, x):
        if self.stride == 1:
            C = x.shape[1]
            kept, processed = x[:, :C // 2], x[:, C // 2:]  # channel split: two (N, C/2, H, W)
            out = torch.cat([kept, self.right(processed)], 1)
        else:
            out = torch.cat([self.left(x), self.right(x)], 1)
        return self.shuffle(out, 2)


class ShuffleUnitPermuted(ShuffleUnit):
    """The same unit shuffling with ``reshape``/``permute``/``flatten``."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__(in_channels, out_channels, stride, shuffle=channel_shuffle_permuted)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 (Table 5): 3x3 stem and max pooling, three stages of units, a 1x1 convolution, a classifier.

    ``repeats`` units per stage, ``channels`` = (stem, stage 2, stage 3, stage 4, last): for the 1x size
    (4, 8, 4) and (24, 116, 232, 464, 1024).
    """

    def __init__(self, repeats, channels, num_classes=10, unit=ShuffleUnit):
        super().__init__()
        self.stem = nn.Conv2d(3, channels[0], 3, stride=2, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(channels[0])
        stages, in_channels = [], channels[0]
        for num_units, out_channels in zip(repeats, channels[1:4]):
            units = [unit(in_channels, out_channels, 2)]
            units += [unit(out_channels, out_channels, 1) for _ in range(num_units - 1)]
            stages.append(nn.Sequential(*units))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.last = nn.Conv2d(in_channels, channels[4], 1, bias=False)
        self.last_norm = nn.BatchNorm2d(channels[4])
        self.classifier = nn.Linear(channels[4], num_classes)

    def forward(self, x):
        x = F.relu(self.stem_norm(self.stem(x)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        x = self.stages(x)
        x = F.relu(self.last_norm(self.last(x)))
        x = x.mean((2, 3))  # (N, C)
        return self.classifier(x)


# --------------------------------------------------------------------------- EfficientNet-B0 (Tan and Le 2019)

def silu_written_out(x):
    """SiLU (swish) as x * sigmoid(x)."""
    return x * torch.sigmoid(x)


class MBConv(nn.Module):
    """EfficientNet's MBConv: 1x1 expand, kxk depthwise, squeeze-and-excitation, linear 1x1 projection, with SiLU.

    The squeeze width is a quarter of the block's *input* channels (torchvision: ``max(1, in // 4)``); the
    squeeze-and-excitation is written with ``nn.Linear`` on (N, C). Stochastic depth is the identity in eval mode.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, expand_ratio, activation=F.silu):
        super().__init__()
        expanded = in_channels * expand_ratio
        squeeze = max(1, in_channels // 4)
        self.activation = activation
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand, self.expand_norm = None, None
        if expanded != in_channels:
            self.expand = nn.Conv2d(in_channels, expanded, 1, bias=False)
            self.expand_norm = nn.BatchNorm2d(expanded)
        self.depthwise = nn.Conv2d(expanded, expanded, kernel_size, stride=stride, padding=kernel_size // 2,
                                   groups=expanded, bias=False)
        self.depthwise_norm = nn.BatchNorm2d(expanded)
        self.se_reduce = nn.Linear(expanded, squeeze)
        self.se_expand = nn.Linear(squeeze, expanded)
        self.project = nn.Conv2d(expanded, out_channels, 1, bias=False)
        self.project_norm = nn.BatchNorm2d(out_channels)

    def excitation(self, x):
        """The per-channel scale computed from ``x`` (N, C, H, W): shape (N, C, 1, 1)."""
        s = x.mean((2, 3), keepdim=True)  # (N, C, 1, 1)
        s = s.flatten(1)  # (N, C)
        s = self.activation(self.se_reduce(s))  # (N, squeeze)
        s = torch.sigmoid(self.se_expand(s))  # (N, C)
        return s.view(s.shape[0], -1, 1, 1)  # (N, C, 1, 1)

    def forward(self, x):
        out = x
        if self.expand is not None:
            out = self.activation(self.expand_norm(self.expand(out)))
        out = self.activation(self.depthwise_norm(self.depthwise(out)))
        out = out * self.excitation(out)
        out = self.project_norm(self.project(out))
        if self.use_residual:
            out = out + x
        return out


# EfficientNet-B0, Table 1 of the paper: (expand ratio, kernel, stride, in, out, layers)
EFFICIENTNET_B0 = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]


class EfficientNetB0(nn.Module):
    """EfficientNet-B0: a strided 3x3 stem, the MBConv stages of Table 1, 1x1 to 1280, dropout 0.2, a classifier."""

    def __init__(self, num_classes=10, table=EFFICIENTNET_B0, block=MBConv, dropout=0.2):
        super().__init__()
        self.dropout = dropout
        self.stem = nn.Conv2d(3, table[0][3], 3, stride=2, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(table[0][3])
        stages = []
        for expand_ratio, kernel_size, stride, in_channels, out_channels, layers in table:
            blocks = [block(in_channels, out_channels, kernel_size, stride, expand_ratio)]
            blocks += [block(out_channels, out_channels, kernel_size, 1, expand_ratio) for _ in range(layers - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(table[-1][4], 1280, 1, bias=False)
        self.head_norm = nn.BatchNorm2d(1280)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = F.silu(self.stem_norm(self.stem(x)))
        x = self.stages(x)
        x = F.silu(self.head_norm(self.head(x)))
        x = x.mean((2, 3), keepdim=True)  # (N, C, 1, 1)
        x = x.flatten(1)  # (N, C): flattened before the dropout this time
        x = F.dropout(x, self.dropout, self.training)
        return self.classifier(x)


# --------------------------------------------------------------------------- ConvNeXt (Liu et al. 2022)

class ChannelsFirstLayerNorm(nn.Module):
    """Layer norm over the channels of (N, C, H, W), written out: mean and biased variance over dim 1."""

    def __init__(self, num_channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))  # (C,)
        self.bias = nn.Parameter(torch.zeros(num_channels))  # (C,)
        self.eps = eps

    def forward(self, x):
        mean = x.mean(1, keepdim=True)  # (N, 1, H, W)
        variance = ((x - mean) ** 2).mean(1, keepdim=True)  # (N, 1, H, W)
        x = (x - mean) / torch.sqrt(variance + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]  # (C, 1, 1) broadcast


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block (Fig. 4 of the paper): 7x7 depthwise, layer norm, 4x wide MLP with GELU, layer scale.

    Channels last for the norm and the MLP, as torchvision (``permute``, ``nn.LayerNorm``, ``nn.Linear``). The
    layer scale has shape (C,) where torchvision's is (C, 1, 1).
    """

    def __init__(self, dim, layer_scale=1e-6):
        super().__init__()
        self.depthwise = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.widen = nn.Linear(dim, 4 * dim)
        self.activation = nn.GELU()
        self.narrow = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))  # (C,)

    def forward(self, x):
        out = self.depthwise(x)
        out = out.permute(0, 2, 3, 1)  # (N, H, W, C)
        out = self.norm(out)
        out = self.widen(out)  # (N, H, W, 4C)
        out = self.activation(out)
        out = self.narrow(out)  # (N, H, W, C)
        out = out * self.gamma  # the layer scale, over the last axis
        out = out.permute(0, 3, 1, 2)  # (N, C, H, W)
        return x + out


class ConvNeXtBlockChannelsFirst(nn.Module):
    """The same block channels first: 1x1 convolutions for the MLP and a hand-written layer norm over dim 1."""

    def __init__(self, dim, layer_scale=1e-6):
        super().__init__()
        self.depthwise = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = ChannelsFirstLayerNorm(dim)
        self.widen = nn.Conv2d(dim, 4 * dim, 1)
        self.activation = nn.GELU()
        self.narrow = nn.Conv2d(4 * dim, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))  # (C,)

    def forward(self, x):
        out = self.depthwise(x)
        out = self.norm(out)
        out = self.widen(out)  # (N, 4C, H, W)
        out = self.activation(out)
        out = self.narrow(out)  # (N, C, H, W)
        out = self.gamma[:, None, None] * out  # (C, 1, 1) broadcast
        return x + out


class ConvNeXt(nn.Module):
    """ConvNeXt: a 4x4 patchify stem, stages of blocks joined by (norm, 2x2 strided convolution), norm, classifier.

    ``stages`` rows are (channels, blocks); ConvNeXt-Tiny is ((96, 3), (192, 3), (384, 9), (768, 3)).
    """

    def __init__(self, stages, num_classes=10, block=ConvNeXtBlockChannelsFirst):
        super().__init__()
        first = stages[0][0]
        self.stem = nn.Conv2d(3, first, 4, stride=4)
        self.stem_norm = ChannelsFirstLayerNorm(first)
        self.stages = nn.ModuleList()
        self.downsample_norms, self.downsamples = nn.ModuleList(), nn.ModuleList()
        for index, (channels, num_blocks) in enumerate(stages):
            self.stages.append(nn.Sequential(*(block(channels) for _ in range(num_blocks))))
            if index < len(stages) - 1:
                self.downsample_norms.append(ChannelsFirstLayerNorm(channels))
                self.downsamples.append(nn.Conv2d(channels, stages[index + 1][0], 2, stride=2))
        last = stages[-1][0]
        self.head_norm = nn.LayerNorm(last, eps=1e-6)  # on the pooled (N, C): the same as torchvision's LayerNorm2d
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        x = self.stem_norm(self.stem(x))
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index < len(self.downsamples):
                x = self.downsamples[index](self.downsample_norms[index](x))
        x = x.mean((2, 3))  # (N, C)
        x = self.head_norm(x)
        return self.classifier(x)


# --------------------------------------------------------------------------- ViT (Dosovitskiy et al. 2021)

class SelfAttention(nn.Module):
    """Multi-head self-attention written out: one packed q, k, v projection, softmax(q k^T / sqrt(hd)) v, merge.

    The packed ``qkv`` weight (3D, D) and bias (3D,) hold q, k, v in this order, as ``nn.MultiheadAttention``'s
    ``in_proj_weight`` and ``in_proj_bias``.
    """

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def split_heads(self, qkv):
        """(N, S, 3D) -> q, k, v, each (N, H, S, hd)."""
        N, S, _ = qkv.shape
        head_dim = qkv.shape[-1] // (3 * self.num_heads)
        qkv = qkv.reshape(N, S, 3, self.num_heads, head_dim)  # (N, S, 3, H, hd)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, N, H, S, hd)
        return qkv[0], qkv[1], qkv[2]

    def attend(self, q, k, v):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (N, H, S, S)
        weights = scores.softmax(dim=-1)  # each query's weights over the keys sum to 1
        return weights @ v  # (N, H, S, hd)

    def forward(self, x):
        N, S, D = x.shape
        q, k, v = self.split_heads(self.qkv(x))
        heads = self.attend(q, k, v)  # (N, H, S, hd)
        heads = heads.transpose(1, 2).reshape(N, S, D)  # (N, S, D)
        return self.out(heads)


class SelfAttentionSDPA(SelfAttention):
    """The same attention with ``F.scaled_dot_product_attention`` for the softmax part."""

    def attend(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)  # (N, H, S, hd)


class TorchAttention(nn.Module):
    """``nn.MultiheadAttention`` under the learner's name, called on (N, S, D) with ``batch_first``."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, x):
        out, _ = self.attention(x, x, x, need_weights=False)
        return out  # (N, S, D)


class TransformerBlock(nn.Module):
    """A pre-norm encoder block (Eq. 2 and 3 of the ViT paper): x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim, num_heads, mlp_dim, dropout=0.0, attention=SelfAttention):
        super().__init__()
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attention = attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x):
        y = self.attention(self.norm1(x))
        y = F.dropout(y, self.dropout, self.training)
        x = x + y
        y = F.gelu(self.fc1(self.norm2(x)))  # (N, S, mlp_dim)
        y = F.dropout(y, self.dropout, self.training)
        y = self.fc2(y)
        y = F.dropout(y, self.dropout, self.training)
        return x + y


class TorchEncoderLayer(nn.Module):
    """The same block as ``nn.TransformerEncoderLayer`` (pre-norm, GELU, layer-norm eps 1e-6)."""

    def __init__(self, dim, num_heads, mlp_dim, dropout=0.0, attention=None):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, num_heads, mlp_dim, dropout=dropout, activation="gelu",
                                                layer_norm_eps=1e-6, batch_first=True, norm_first=True)

    def forward(self, x):
        return self.layer(x)


class ViT(nn.Module):
    """Vision Transformer: strided-convolution patch embedding, class token, position embedding, blocks, head.

    ViT-B/16 is ``ViT(224, 16, 12, 12, 768, 3072)``; the tests use 32x32 images, 8x8 patches, D = 32.
    """

    def __init__(self, image_size=32, patch_size=8, num_layers=2, num_heads=4, dim=32, mlp_dim=64, num_classes=10,
                 dropout=0.0, attention=SelfAttention, block=TransformerBlock):
        super().__init__()
        num_patches = (image_size // patch_size) ** 2
        self.dropout = dropout
        self.patch_embedding = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))  # (1, 1, D)
        self.position_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)  # (1, S + 1, D)
        self.blocks = nn.ModuleList(block(dim, num_heads, mlp_dim, dropout, attention) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def embed(self, x):
        """Images (N, 3, H, W) -> tokens (N, S + 1, D), class token first, position embedding added."""
        N = x.shape[0]
        x = self.patch_embedding(x)  # (N, D, H/p, W/p)
        x = x.flatten(2)  # (N, D, S)
        x = x.transpose(1, 2)  # (N, S, D)
        cls = self.cls_token.expand(N, -1, -1)  # (N, 1, D)
        x = torch.cat([cls, x], dim=1)  # (N, S + 1, D)
        return x + self.position_embedding

    def forward(self, x):
        x = self.embed(x)
        x = F.dropout(x, self.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        x = x[:, 0]  # the class token: (N, D)
        return self.head(x)
