"""Checks for the exercises of ``solutions/07_vgg_nin_googlenet.ipynb``: VGG and GoogLeNet, against torchvision.

The learner writes

* ``vgg_block(num_convs, in_channels, out_channels)``: ``num_convs`` times (3x3 convolution, padding 1, ReLU),
  then a 2x2 max pooling with stride 2 (Simonyan & Zisserman 2015, section 2.1);
* ``VGG(conv_arch, num_classes)``: one ``vgg_block`` per ``(num_convs, out_channels)`` of ``conv_arch``, then
  torchvision's head (7x7 adaptive average pooling, three linear layers with ReLU and dropout 0.5); checked as
  VGG-16 (``VGG16_ARCH``);
* ``Inception(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)``: four branches concatenated along
  the channels, every convolution a ``BasicConv2d`` (conv without bias, batch norm with eps 0.001, ReLU), and the
  "5x5" branch a 3x3 convolution as in torchvision (pytorch/vision issue #906);
* ``GoogLeNet(num_classes)``: torchvision's ``googlenet(aux_logits=False, transform_input=False)``.

Every check calls ``course_utils.checks.architectures.check_same_architecture``: parameter shapes, the sequence
of operations of one forward pass, then every operation's output with the reference's weights copied in. The
references are torchvision's modules, and for the VGG block a block laid out as ``torchvision.models.vgg``'s
``make_layers`` lays it out. The check itself redraws the reference's weights and batch-norm statistics so that
activations keep their scale through the whole network (torchvision's GoogLeNet initialisation, std 0.01, would
shrink them towards zero, where a wrong layer would hardly change the numbers).
"""
import torchvision
from torch import nn
from torchvision.models.googlenet import Inception as TorchvisionInception

from course_utils.checks import common
from course_utils.checks.architectures import check_same_architecture

VGG11_ARCH = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))  # (num_convs, out_channels) per block, config "A"
VGG16_ARCH = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))  # config "D"


def _build(builder, *args, case, what):
    """Call the learner's builder (a function or a class); it must return an ``nn.Module``."""
    model = common.call(builder, *args, case=case)
    if not common.is_module(model):
        raise AssertionError(f"{case}: {what} should return an nn.Module; got {common.type_name(model)}")
    return model


def reference_vgg_block(num_convs, in_channels, out_channels):
    """A VGG block laid out as ``torchvision.models.vgg.make_layers`` lays one out."""
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def check_vgg_block(vgg_block):
    """``vgg_block(num_convs, in_channels, out_channels)`` against the torchvision layout, on four cases.

    Cases (num_convs, in_channels, out_channels, input size): (1, 3, 8, 16), (2, 8, 16, 16), (3, 4, 6, 15) (an odd
    size: the pooling floors) and (2, 64, 128, 32), VGG-16's second block.
    """
    cases = [(1, 3, 8, 16), (2, 8, 16, 16), (3, 4, 6, 15), (2, 64, 128, 32)]
    for num_convs, in_channels, out_channels, size in cases:
        case = f"vgg_block({num_convs}, {in_channels}, {out_channels}) on a {size}x{size} input"
        block = _build(vgg_block, num_convs, in_channels, out_channels, case=case, what="vgg_block")
        reference = reference_vgg_block(num_convs, in_channels, out_channels)
        check_same_architecture(block, reference, (2, in_channels, size, size), name=case)
    common.passed("vgg_block", len(cases))


def check_vgg16(VGG):
    """``VGG(VGG16_ARCH, num_classes=10)`` against ``torchvision.models.vgg16(num_classes=10)`` on 32x32 inputs.

    torchvision's VGG ends in a 7x7 adaptive average pooling, so a 32x32 input (1x1 after the last block, repeated
    to 7x7) runs the very same layers as a 224x224 one, much faster.
    """
    case = f"VGG-16: VGG({VGG16_ARCH}, num_classes=10) against torchvision.models.vgg16(num_classes=10)"
    model = _build(VGG, VGG16_ARCH, 10, case=case, what="VGG")
    reference = torchvision.models.vgg16(weights=None, num_classes=10)
    check_same_architecture(model, reference, (2, 3, 32, 32), name=case)
    common.passed("VGG-16", 1)


def check_inception(Inception):
    """``Inception(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`` against torchvision's.

    Cases: GoogLeNet's block 3a (192, 64, 96, 128, 16, 32, 32) on an 8x8 input, and a small block with every branch
    a different width (8, 4, 3, 5, 2, 6, 7) on a 7x7 input, so that a wrong concatenation order shows.
    """
    cases = [((192, 64, 96, 128, 16, 32, 32), 8), ((8, 4, 3, 5, 2, 6, 7), 7)]
    for channels, size in cases:
        case = f"Inception{channels} on a {size}x{size} input"
        block = _build(Inception, *channels, case=case, what="Inception")
        reference = TorchvisionInception(*channels)
        check_same_architecture(block, reference, (2, channels[0], size, size), name=case)
    common.passed("Inception", len(cases))


def check_googlenet(GoogLeNet):
    """``GoogLeNet(num_classes=10)`` against ``torchvision.models.googlenet(aux_logits=False, transform_input=False)``.

    On a 64x64 input (the network ends in a global average pooling, so any input of at least 32x32 runs every
    layer); every one of its operations is compared.
    """
    case = "GoogLeNet(num_classes=10) against torchvision.models.googlenet(aux_logits=False) on a 64x64 input"
    model = _build(GoogLeNet, 10, case=case, what="GoogLeNet")
    reference = torchvision.models.googlenet(weights=None, num_classes=10, aux_logits=False, transform_input=False,
                                             init_weights=True)
    check_same_architecture(model, reference, (2, 3, 64, 64), name=case)
    common.passed("GoogLeNet", 1)
