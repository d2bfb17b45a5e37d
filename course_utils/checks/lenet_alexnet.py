"""Checks for chapter 06, LeNet and AlexNet (``solutions/06_lenet_alexnet.ipynb``).

* ``check_lenet5(LeNet5)``: the learner's LeNet-5 against the layer table of LeCun et al. (1998), Fig. 2, with
  every C3 map connected to all six S2 maps and C5 as a 400 -> 120 linear layer or a 5x5 convolution on the
  5x5 maps (the same 48,120 parameters): operations, output shapes and parameters of every layer.
* ``check_alexnet(AlexNet)``: the learner's AlexNet against ``torchvision.models.alexnet(weights=None)``, the
  single-tower variant (64-192-384-256-256 filters, no local response normalisation), with
  ``course_utils.checks.architectures.check_same_architecture``: parameters, operations and outputs with the
  reference's weights copied in.
"""
import torch
import torchvision

from course_utils.checks import common
from course_utils.checks.architectures import Layer, check_layer_table, check_same_architecture

LENET5_INPUT = (2, 1, 32, 32)  # (N, C, H, W): MNIST digits padded from 28x28 to 32x32, as in the paper
ALEXNET_INPUT = (1, 3, 224, 224)  # (N, C, H, W): torchvision's AlexNet input


def conv_parameters(in_channels, out_channels, kernel_size):
    """Weights and biases of a convolution: (KH * KW * C_in + 1) * F."""
    return (kernel_size * kernel_size * in_channels + 1) * out_channels


def linear_parameters(in_features, out_features):
    """Weights and biases of a linear layer: (in + 1) * out."""
    return (in_features + 1) * out_features


def lenet5_table(num_classes=10):
    """LeNet-5's layers as ``Layer(operation, output shape, parameters)`` rows, from the paper's Fig. 2.

    tanh after C1, C3, C5 and F6; average pooling (S2, S4) without trainable coefficients; C5 may be a
    ``Linear(400, 120)`` after a flatten or a ``Conv2d(16, 120, 5)`` on the 16x5x5 maps.
    """
    conv = (("kernel_size", 5), ("stride", 1), ("padding", 0))  # 5x5 kernels, no padding ("valid")
    subsampling = (("kernel_size", 2), ("stride", 2), ("padding", 0))  # non-overlapping 2x2 windows
    return [
        Layer("conv2d", (6, 28, 28), conv_parameters(1, 6, 5), conv),  # C1: 6 maps 28x28, 5x5 kernels
        Layer("tanh", (6, 28, 28)),
        Layer("avg_pool2d", (6, 14, 14), geometry=subsampling),  # S2: 2x2 subsampling
        Layer("conv2d", (16, 10, 10), conv_parameters(6, 16, 5), conv),  # C3: 16 maps 10x10
        Layer("tanh", (16, 10, 10)),
        Layer("avg_pool2d", (16, 5, 5), geometry=subsampling),  # S4
        Layer(("linear", "conv2d"), (120,), linear_parameters(16 * 5 * 5, 120)),  # C5: 120 units
        Layer("tanh", (120,)),
        Layer("linear", (84,), linear_parameters(120, 84)),  # F6: 84 units
        Layer("tanh", (84,)),
        Layer("linear", (num_classes,), linear_parameters(84, num_classes)),  # output (the paper's RBF units)
    ]


def _build(make_model):
    """The learner's network from a class or function called without arguments (or the network itself).

    Under the grader ``make_model`` is a handle of the learner's object, and so is the network it returns.
    """
    if common.is_module(make_model):
        return make_model
    name = getattr(make_model, "__name__", "the model")
    return common.call(make_model, case=f"building the network with {name}()")


def check_lenet5(LeNet5):
    """``LeNet5()`` (a class or function, 10 classes) follows the paper's table: operations, shapes, parameters."""
    model = _build(LeNet5)
    check_layer_table(model, lenet5_table(10), LENET5_INPUT, name="LeNet-5 against the paper's layer table")


def check_alexnet(AlexNet):
    """``AlexNet()`` (a class or function, 1,000 classes) is ``torchvision.models.alexnet``: same parameters,
    operations and outputs."""
    model = _build(AlexNet)
    torch.manual_seed(0)
    reference = torchvision.models.alexnet(weights=None)
    check_same_architecture(model, reference, ALEXNET_INPUT, name="AlexNet against torchvision.models.alexnet")
