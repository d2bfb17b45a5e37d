"""Checks for the exercises of ``solutions/08_resnet.ipynb``: residual blocks and ResNet, against torchvision.

The learner writes

* ``BasicBlock(in_channels, planes, stride=1)``: y = ReLU(F(x) + shortcut(x)) with F = 3x3 conv (``stride``) - BN -
  ReLU - 3x3 conv - BN, and as shortcut the identity, or a projection (1x1 conv with ``stride`` + BN) where the shape
  changes (He et al. 2016, Figure 2 and option B of section 3.3);
* ``Bottleneck(in_channels, planes, stride=1)``: F = 1x1 conv to ``planes`` - BN - ReLU - 3x3 conv (``stride``) -
  BN - ReLU - 1x1 conv to ``4 * planes`` - BN, the same shortcuts (Figure 5, with the stride on the 3x3 as in
  torchvision);
* ``ResNet(block, layers, num_classes)``: torchvision's ResNet (7x7 stem with stride 2, 3x3 max pool, four stages of
  ``layers[i]`` blocks with 64, 128, 256, 512 planes, global average pooling, a linear classifier); checked as
  ResNet-18 with the learner's ``BasicBlock`` and as ResNet-50 with the learner's ``Bottleneck``;
* ``Block(in_channels, out_channels, stride=1, residual=True)``: the switch of the degradation experiment, a
  ``BasicBlock`` with ``residual=True`` and, with ``residual=False``, the same layers without any shortcut.

Every check calls ``course_utils.checks.architectures.check_same_architecture``: parameters paired through the
operations that use them (so the learner's names, nesting and order of registration are free), then every
operation's output with the reference's redrawn weights copied in. The references are torchvision's ``BasicBlock``,
``Bottleneck``, ``resnet18`` and ``resnet50``, each block given the projection that torchvision's ``_make_layer``
builds, and for the plain block an ``nn.Sequential`` of torch layers.
"""
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock as TorchvisionBasicBlock
from torchvision.models.resnet import Bottleneck as TorchvisionBottleneck

from course_utils.checks import common
from course_utils.checks.architectures import check_same_architecture, learner_pass

# (in_channels, planes, stride, input size): identity shortcuts, projections for channels, for stride, for both, and
# an odd size, where both paths must floor the same way
BASIC_BLOCK_CASES = [(8, 8, 1, 8), (8, 16, 1, 8), (8, 8, 2, 8), (8, 16, 2, 9), (64, 128, 2, 8)]
BOTTLENECK_CASES = [(16, 4, 1, 8), (8, 4, 1, 8), (16, 8, 2, 8), (16, 4, 2, 7), (256, 64, 1, 8)]
SWITCH_CASES = [(8, 8, 1, 8), (8, 16, 2, 8), (6, 12, 2, 7)]  # (in_channels, out_channels, stride, input size)


def _projection(in_channels, out_channels, stride):
    """The shortcut torchvision's ``ResNet._make_layer`` gives a block that changes the shape, else ``None``."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


def reference_basic_block(in_channels, planes, stride=1):
    """torchvision's ``BasicBlock``, with a projection shortcut where the shape changes."""
    return TorchvisionBasicBlock(in_channels, planes, stride, downsample=_projection(in_channels, planes, stride))


def reference_bottleneck(in_channels, planes, stride=1):
    """torchvision's ``Bottleneck`` (4 * planes out), with a projection shortcut where the shape changes."""
    downsample = _projection(in_channels, planes * TorchvisionBottleneck.expansion, stride)
    return TorchvisionBottleneck(in_channels, planes, stride, downsample=downsample)


def reference_plain_block(in_channels, out_channels, stride=1):
    """The plain counterpart of a BasicBlock: conv3x3 (stride) - BN - ReLU - conv3x3 - BN - ReLU, no shortcut."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def _check_blocks(name, builder, cases, reference_builder):
    for in_channels, planes, stride, size in cases:
        case = f"{name}({in_channels}, {planes}, stride={stride}) on a {size}x{size} input"
        block = common.call(builder, in_channels, planes, stride, case=case)
        reference = reference_builder(in_channels, planes, stride)
        check_same_architecture(block, reference, (2, in_channels, size, size), name=case)
    common.passed(name, len(cases))


def check_basic_block(BasicBlock):
    """``BasicBlock(in_channels, planes, stride)`` against torchvision's ``BasicBlock``, on five cases.

    Cases (in_channels, planes, stride, input size): (8, 8, 1, 8) with the identity shortcut; (8, 16, 1, 8),
    (8, 8, 2, 8) and (8, 16, 2, 9) with a projection because the channels, the size or both change (9x9: an odd
    size); (64, 128, 2, 8), the first block of ResNet-18's second stage.
    """
    _check_blocks("BasicBlock", BasicBlock, BASIC_BLOCK_CASES, reference_basic_block)


def check_bottleneck(Bottleneck):
    """``Bottleneck(in_channels, planes, stride)`` (4 * planes out) against torchvision's ``Bottleneck``.

    Cases (in_channels, planes, stride, input size): (16, 4, 1, 8) with the identity shortcut; (8, 4, 1, 8),
    (16, 8, 2, 8) and (16, 4, 2, 7) with a projection; (256, 64, 1, 8), a block of ResNet-50's first stage.
    """
    _check_blocks("Bottleneck", Bottleneck, BOTTLENECK_CASES, reference_bottleneck)


def check_resnet18(ResNet, BasicBlock):
    """``ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10)`` against ``torchvision.models.resnet18(num_classes=10)``.

    On a 64x64 input: the network ends in a global average pooling, so it runs every layer of the 224x224 network
    (2x2 maps after the last stage instead of 7x7), much faster.
    """
    case = "ResNet-18: ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10) against torchvision.models.resnet18"
    model = common.call(ResNet, BasicBlock, [2, 2, 2, 2], num_classes=10, case=case)
    reference = torchvision.models.resnet18(weights=None, num_classes=10)
    check_same_architecture(model, reference, (2, 3, 64, 64), name=case)
    common.passed("ResNet-18", 1)


def check_resnet50(ResNet, Bottleneck):
    """``ResNet(Bottleneck, [3, 4, 6, 3], num_classes=10)`` against ``torchvision.models.resnet50(num_classes=10)``.

    On a 64x64 input, as ``check_resnet18``; the stage widths must use ``Bottleneck.expansion`` (4).
    """
    case = "ResNet-50: ResNet(Bottleneck, [3, 4, 6, 3], num_classes=10) against torchvision.models.resnet50"
    model = common.call(ResNet, Bottleneck, [3, 4, 6, 3], num_classes=10, case=case)
    reference = torchvision.models.resnet50(weights=None, num_classes=10)
    check_same_architecture(model, reference, (2, 3, 64, 64), name=case)
    common.passed("ResNet-50", 1)


def _assert_no_sum_of_activations(block, input_shape, case):
    """A plain block adds no two tensors computed from its input: it has no shortcut, identity or other.

    The block's operations come from one traced eval-mode pass where the block lives (``learner_pass``); a block
    that is not a module, or that crashes, is left to ``check_same_architecture`` to report.
    """
    if not common.is_module(block):
        return
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))  # (N, C, H, W)
    traced = learner_pass(block, x, keep_outputs=False)
    operations, error = traced.operations, traced.error
    if error is not None:
        return  # check_same_architecture reports the crash
    for op in operations:
        if op.kind == "add" and len(op.inputs) >= 2:
            raise AssertionError(
                f"{case}: the plain block adds two tensors computed from its input ({op.where()}, output "
                f"{op.output_shape}): with residual=False the block has no shortcut at all, only the two "
                f"convolutions, their batch norms and ReLUs")


def check_plain_residual_switch(Block):
    """``Block(in_channels, out_channels, stride, residual)``: a ``BasicBlock`` when residual, else no shortcut.

    Cases (in_channels, out_channels, stride, input size): (8, 8, 1, 8), (8, 16, 2, 8) and (6, 12, 2, 7), each with
    ``residual=True`` (against torchvision's ``BasicBlock`` with its projection where the shape changes) and with
    ``residual=False`` (against conv3x3 - BN - ReLU - conv3x3 - BN - ReLU built from torch layers; the plain block
    must not add anything to its output, nor hold a projection).
    """
    count = 0
    for residual in (True, False):
        for in_channels, out_channels, stride, size in SWITCH_CASES:
            case = (f"Block({in_channels}, {out_channels}, stride={stride}, residual={residual}) "
                    f"on a {size}x{size} input")
            block = common.call(Block, in_channels, out_channels, stride, residual=residual, case=case)
            shape = (2, in_channels, size, size)
            if residual:
                reference = reference_basic_block(in_channels, out_channels, stride)
            else:
                _assert_no_sum_of_activations(block, shape, case)
                reference = reference_plain_block(in_channels, out_channels, stride)
            check_same_architecture(block, reference, shape, name=case)
            count += 1
    common.passed("Block (plain or residual)", count)
