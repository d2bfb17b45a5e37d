"""Checks for the exercises of ``solutions/09_densenet.ipynb``: DenseNet's parts and DenseNet-121, against torchvision.

The learner writes (Huang et al. 2017, "Densely Connected Convolutional Networks", section 3, DenseNet-BC)

* ``DenseLayer(in_channels, growth_rate, bn_size)``: batch norm, ReLU, 1x1 convolution to ``bn_size * growth_rate``
  channels (the bottleneck), batch norm, ReLU, 3x3 convolution (padding 1) to ``growth_rate`` channels, both
  convolutions without bias; it takes a tensor (N, C, H, W) and returns only the new features
  (N, growth_rate, H, W);
* ``DenseBlock(num_layers, in_channels, growth_rate, bn_size)``: ``num_layers`` dense layers, layer i seeing the
  concatenation of the block's input and the outputs of layers 0..i-1 (in that order, along the channels); returns
  that concatenation after the last layer, (N, in_channels + num_layers * growth_rate, H, W);
* ``Transition(in_channels, out_channels)``: batch norm, ReLU, 1x1 convolution without bias to ``out_channels``
  (DenseNet-BC's compression: half the channels), 2x2 average pooling with stride 2;
* ``DenseNet(growth_rate, block_config, num_init_features, bn_size, num_classes)``: torchvision's DenseNet-BC, with
  the same keyword arguments; checked as DenseNet-121 and as a small DenseNet-BC of other sizes.

The references are torchvision's own modules: ``torchvision.models.densenet._DenseLayer``, ``_DenseBlock`` and
``_Transition`` (with ``drop_rate=0``), ``torchvision.models.densenet121`` and ``torchvision.models.DenseNet``, all
with ``weights=None``. Every check calls ``course_utils.checks.architectures.check_same_architecture``: parameters
paired through the operations that use them (the learner's names and nesting are free), then every operation's
output with the reference's redrawn weights copied in. So the classic ``x = torch.cat([x, layer(x)], 1)`` loop and
torchvision's list of features, modules or ``torch.nn.functional`` calls, are all accepted; a concatenation in
another order, a swapped batch norm and ReLU, a missing bottleneck, a max pool for the average pool, a transition
that does not compress, or a wrong growth rate is named in the message.
"""
import torchvision
from torchvision.models.densenet import _DenseBlock, _DenseLayer, _Transition

from course_utils.checks import common
from course_utils.checks.architectures import check_same_architecture

DENSENET121 = {"growth_rate": 32, "block_config": (6, 12, 24, 16), "num_init_features": 64, "bn_size": 4}
SMALL_DENSENET = {"growth_rate": 12, "block_config": (3, 4, 2), "num_init_features": 24, "bn_size": 2}


def _build(builder, *args, case, what, **kwargs):
    """Call the learner's builder (a function or a class); it must return an ``nn.Module``."""
    model = common.call(builder, *args, case=case, **kwargs)
    if not common.is_module(model):
        raise AssertionError(f"{case}: {what} should return an nn.Module; got {common.type_name(model)}")
    return model


def check_dense_layer(DenseLayer):
    """``DenseLayer(in_channels, growth_rate, bn_size)`` against torchvision's ``_DenseLayer``, on three cases.

    Cases (in_channels, growth_rate, bn_size, input size): (64, 32, 4, 8), the first layer of DenseNet-121;
    (24, 12, 2, 7), another growth rate and bottleneck width on an odd size; (20, 6, 3, 6).
    """
    cases = [(64, 32, 4, 8), (24, 12, 2, 7), (20, 6, 3, 6)]
    for in_channels, growth_rate, bn_size, size in cases:
        case = f"DenseLayer({in_channels}, growth_rate={growth_rate}, bn_size={bn_size}) on a {size}x{size} input"
        layer = _build(DenseLayer, in_channels, growth_rate, bn_size, case=case, what="DenseLayer")
        reference = _DenseLayer(in_channels, growth_rate=growth_rate, bn_size=bn_size, drop_rate=0.0)
        check_same_architecture(layer, reference, (2, in_channels, size, size), name=case)
    common.passed("DenseLayer", len(cases))


def check_dense_block(DenseBlock):
    """``DenseBlock(num_layers, in_channels, growth_rate, bn_size)`` against torchvision's ``_DenseBlock``.

    Cases (num_layers, in_channels, growth_rate, bn_size, input size): (3, 16, 8, 4, 8); (2, 10, 6, 2, 5);
    (6, 64, 32, 4, 8), the first block of DenseNet-121 (64 + 6·32 = 256 channels out). torchvision's argument order
    is ``_DenseBlock(num_layers, num_input_features, bn_size, growth_rate, drop_rate)``; the exercise's is the
    order above.
    """
    cases = [(3, 16, 8, 4, 8), (2, 10, 6, 2, 5), (6, 64, 32, 4, 8)]
    for num_layers, in_channels, growth_rate, bn_size, size in cases:
        case = (f"DenseBlock({num_layers}, {in_channels}, growth_rate={growth_rate}, bn_size={bn_size}) on a "
                f"{size}x{size} input")
        block = _build(DenseBlock, num_layers, in_channels, growth_rate, bn_size, case=case, what="DenseBlock")
        reference = _DenseBlock(num_layers, in_channels, bn_size=bn_size, growth_rate=growth_rate, drop_rate=0.0)
        check_same_architecture(block, reference, (2, in_channels, size, size), name=case)
    common.passed("DenseBlock", len(cases))


def check_transition(Transition):
    """``Transition(in_channels, out_channels)`` against torchvision's ``_Transition``, on three cases.

    Cases (in_channels, out_channels, input size): (256, 128, 8), DenseNet-121's first transition; (16, 8, 8);
    (12, 5, 7), an output width that is not half and an odd size (the pooling floors).
    """
    cases = [(256, 128, 8), (16, 8, 8), (12, 5, 7)]
    for in_channels, out_channels, size in cases:
        case = f"Transition({in_channels}, {out_channels}) on a {size}x{size} input"
        transition = _build(Transition, in_channels, out_channels, case=case, what="Transition")
        reference = _Transition(in_channels, out_channels)
        check_same_architecture(transition, reference, (2, in_channels, size, size), name=case)
    common.passed("Transition", len(cases))


def check_densenet121(DenseNet):
    """``DenseNet(**sizes, num_classes=10)`` against torchvision: DenseNet-121, then a small DenseNet-BC.

    1. ``DenseNet(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4, num_classes=10)``
       against ``torchvision.models.densenet121(weights=None, num_classes=10)``;
    2. ``DenseNet(growth_rate=12, block_config=(3, 4, 2), num_init_features=24, bn_size=2, num_classes=5)`` against
       ``torchvision.models.DenseNet`` with the same arguments, so that a size written into the model instead of
       read from its arguments shows.

    On 32x32 inputs: the network ends in a global average pooling, so a small input runs every layer (DenseNet-121's
    blocks at 8x8, 4x4, 2x2 and 1x1), much faster than 224x224.
    """
    cases = [("DenseNet-121", DENSENET121, 10, lambda: torchvision.models.densenet121(weights=None, num_classes=10)),
             ("a small DenseNet-BC", SMALL_DENSENET, 5, lambda: torchvision.models.DenseNet(num_classes=5,
                                                                                           **SMALL_DENSENET))]
    for title, sizes, num_classes, build_reference in cases:
        arguments = ", ".join(f"{name}={value}" for name, value in sizes.items())
        case = f"{title}: DenseNet({arguments}, num_classes={num_classes})"
        model = _build(DenseNet, case=case, what="DenseNet", num_classes=num_classes, **sizes)
        check_same_architecture(model, build_reference(), (2, 3, 32, 32), name=case)
    common.passed("DenseNet-121", len(cases))
