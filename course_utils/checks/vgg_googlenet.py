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
``make_layers`` lays it out. Before the comparison every reference gets convolution weights and batch-norm
statistics drawn so that activations keep their scale through the whole network (torchvision's GoogLeNet
initialisation, std 0.01, shrinks them towards zero, where a wrong layer would hardly change the numbers).
"""
import math

import torch
import torchvision
from torch import nn
from torchvision.models.googlenet import Inception as TorchvisionInception

from course_utils.checks import common
from course_utils.checks.architectures import check_same_architecture

VGG11_ARCH = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))  # (num_convs, out_channels) per block, config "A"
VGG16_ARCH = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))  # config "D"


def _scale_preserving_(model, seed=0):
    """Redraw ``model``'s convolutions and batch norms so activations keep their scale; return the model.

    Convolutions get He-normal weights (std sqrt(2 / fan_in), He et al. 2015) and small random biases; batch norms
    get random affine parameters and running statistics, so that eval-mode batch norm is not the identity (a
    missing or misconfigured one then changes the numbers). Linear layers keep their initialisation (redrawing
    VGG's 100-million-weight classifier would only cost time) but get random biases.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)  # in [0.5, 1.5)
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(0.1 * torch.randn(shape, generator=generator))
    return model


def _build(builder, *args, case, what):
    """Call the learner's builder (a function or a class); it must return an ``nn.Module``."""
    model = common.call(builder, *args, case=case)
    if not isinstance(model, nn.Module):
        raise AssertionError(f"{case}: {what} should return an nn.Module; got {type(model).__name__}")
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
        reference = _scale_preserving_(reference_vgg_block(num_convs, in_channels, out_channels))
        check_same_architecture(block, reference, (2, in_channels, size, size), name=case)
    common.passed("vgg_block", len(cases))


def check_vgg16(VGG):
    """``VGG(VGG16_ARCH, num_classes=10)`` against ``torchvision.models.vgg16(num_classes=10)`` on 32x32 inputs.

    torchvision's VGG ends in a 7x7 adaptive average pooling, so a 32x32 input (1x1 after the last block, repeated
    to 7x7) runs the very same layers as a 224x224 one, much faster.
    """
    case = f"VGG-16: VGG({VGG16_ARCH}, num_classes=10) against torchvision.models.vgg16(num_classes=10)"
    model = _build(VGG, VGG16_ARCH, 10, case=case, what="VGG")
    reference = _scale_preserving_(torchvision.models.vgg16(weights=None, num_classes=10))
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
        reference = _scale_preserving_(TorchvisionInception(*channels), seed=1)
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
    _scale_preserving_(reference, seed=2)
    check_same_architecture(model, reference, (2, 3, 64, 64), name=case)
    common.passed("GoogLeNet", 1)
