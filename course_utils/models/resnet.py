"""ResNet for small images (CIFAR-style: a 3x3 stem, no max pool), reused by chapters 13 to 18.

Chapter 08 (``notebooks/08_resnet.ipynb``) builds the residual blocks and ResNet-18/34/50 in the open and proves
them identical to torchvision's. This file keeps the version for 32x32 images that later chapters train and look
inside:

* chapter 13 (Transfer learning), 14 (Visualising CNNs: its ReLUs are not in place, so that a forward hook on a
  batch norm keeps that layer's own output), 15 (Training recipes), 16 (Robustness and fairness), 17 (Dense
  prediction: its stages as a backbone) and 18 (Scaling up).

The blocks, names and initialisation are torchvision's (``torchvision/models/resnet.py``; He et al., "Deep Residual
Learning for Image Recognition", CVPR 2016, Table 1), with the stride of a downsampling bottleneck on its 3x3
convolution ("ResNet v1.5", as torchvision). Only the stem differs: ImageNet's 7x7 convolution with stride 2 and
3x3 max pool would shrink a 32x32 image to 8x8 before the first stage, so the stem here is one 3x3 convolution with
stride 1 and no pooling, as in the widely used CIFAR-10 ResNet-18 (kuangliu/pytorch-cifar): 11,173,962 parameters
and 555,422,720 multiply-accumulates per 32x32 image with 10 classes (``tests/test_models_resnet.py``).

Shape letters: N images, C channels, H height, W width.

Usage::

    from course_utils.models.resnet import resnet18

    model = resnet18(num_classes=10)                     # 3-channel 32x32 inputs
    logits = model(torch.randn(8, 3, 32, 32))            # (8, 10)
    digits = resnet18(num_classes=10, in_channels=1, width=16)   # a small one for grey digits
"""
import torch
from torch import nn

__all__ = ["conv3x3", "conv1x1", "BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]


# --------------------------------------------------------------------------- helpers

def conv3x3(in_planes, out_planes, stride=1):
    """3x3 convolution, padding 1, no bias (the batch norm after it has one): H -> floor((H - 1) / stride) + 1."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    """1x1 convolution, no bias: it mixes channels at each pixel (and, with a stride, keeps every stride-th pixel)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


# --------------------------------------------------------------------------- blocks

class BasicBlock(nn.Module):
    """y = ReLU(F(x) + shortcut(x)) with F = conv3x3-BN-ReLU-conv3x3-BN (He et al. 2016, Figure 2).

    ``downsample`` is the projection shortcut (1x1 convolution + BN, the paper's option B), given when the block
    changes the shape; otherwise the shortcut is the identity.
    """

    expansion = 1  # output channels = planes * expansion

    def __init__(self, in_planes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()  # not in place: a hook on bn1 or bn2 keeps that layer's own output
        self.downsample = downsample

    def forward(self, x):  # x: (N, in_planes, H, W)
        identity = x if self.downsample is None else self.downsample(x)  # (N, planes, H / stride, W / stride)
        out = self.conv1(x)  # (N, planes, H / stride, W / stride)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = out + identity  # the residual connection: the block only has to learn F(x) = y - x
        out = self.relu(out)  # after the addition, as in the paper (chapter 08 section 5 moves it)
        return out


class Bottleneck(nn.Module):
    """y = ReLU(F(x) + shortcut(x)) with F = 1x1 (reduce to ``planes``) - 3x3 - 1x1 (restore to 4 * planes).

    He et al. 2016, Figure 5: the 1x1 convolutions change the channels, so that the 3x3 runs on 4 times fewer.
    A downsampling block strides its 3x3 (torchvision's "v1.5"; the paper's released models strided the first 1x1).
    """

    expansion = 4

    def __init__(self, in_planes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):  # x: (N, in_planes, H, W)
        identity = x if self.downsample is None else self.downsample(x)  # (N, 4 * planes, H / stride, W / stride)
        out = self.conv1(x)  # (N, planes, H, W)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)  # (N, planes, H / stride, W / stride)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv3(out)  # (N, 4 * planes, H / stride, W / stride)
        out = self.bn3(out)
        out = out + identity
        out = self.relu(out)
        return out


# --------------------------------------------------------------------------- the network

class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem, four stages of residual blocks, global average pooling, a linear classifier.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: outputs of the classifier.
        in_channels: channels of the input images (3 for colour, 1 for grey digits).
        width: channels of the stem and the first stage (64 as in the paper); stages 2-4 have 2, 4 and 8 times as many
            (times ``block.expansion`` at their output). A smaller width makes a network small enough for a CPU.
        zero_init_residual: start every block's last batch norm at 0, so that each block starts as the identity
            (Goyal et al. 2017, "Accurate, Large Minibatch SGD", section 5.1); off by default, as in torchvision.
    """

    def __init__(self, block, layers, num_classes=10, in_channels=3, width=64, zero_init_residual=False):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must give the blocks of 4 stages, e.g. (2, 2, 2, 2); got {layers!r}")
        self.in_planes = width
        self.conv1 = conv3x3(in_channels, width)  # ImageNet's stem is 7x7 / 2 then a 3x3 / 2 max pool
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)

        # torchvision's initialisation: He et al. 2015 (fan out) for convolutions, identity batch norms
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def _make_layer(self, block, planes, blocks, stride=1):
        """One stage: ``blocks`` blocks, the first with ``stride`` and, where the shape changes, a projection."""
        downsample = None
        if stride != 1 or self.in_planes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.in_planes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.in_planes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):  # x: (N, in_channels, 32, 32)
        x = self.conv1(x)  # (N, width, 32, 32)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.layer1(x)  # (N, width * expansion, 32, 32)
        x = self.layer2(x)  # (N, 2 * width * expansion, 16, 16)
        x = self.layer3(x)  # (N, 4 * width * expansion, 8, 8)
        x = self.layer4(x)  # (N, 8 * width * expansion, 4, 4)
        x = self.avgpool(x)  # (N, 8 * width * expansion, 1, 1)
        x = torch.flatten(x, 1)  # (N, 8 * width * expansion)
        x = self.fc(x)  # (N, num_classes)
        return x


# --------------------------------------------------------------------------- builders

def resnet18(num_classes=10, in_channels=3, width=64, **options):
    """ResNet-18 for 32x32 images: BasicBlocks, 2-2-2-2 (11,173,962 parameters with 10 classes and width 64)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, width, **options)


def resnet34(num_classes=10, in_channels=3, width=64, **options):
    """ResNet-34 for 32x32 images: BasicBlocks, 3-4-6-3."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, width, **options)


def resnet50(num_classes=10, in_channels=3, width=64, **options):
    """ResNet-50 for 32x32 images: Bottlenecks, 3-4-6-3."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, width, **options)
