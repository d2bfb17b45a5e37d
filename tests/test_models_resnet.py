"""The CIFAR-style ResNets of ``course_utils.models.resnet``.

References in plain sight: the widely used CIFAR-10 ResNet-18 (kuangliu/pytorch-cifar: 11,173,962 parameters and
555,422,720 multiply-accumulates per 32x32 image, counted here with ``torch.utils.flop_counter``), and torchvision's
ImageNet ResNets with their stem swapped for a 3x3 convolution with stride 1 and no max pool, compared operation by
operation with ``check_same_architecture``.
"""
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from course_utils.checks.architectures import check_same_architecture
from course_utils.models import resnet
from course_utils.tracing import capture_outputs


def count_parameters(model):
    return sum(parameter.numel() for parameter in model.parameters())


def torchvision_with_cifar_stem(name, num_classes=10):
    """torchvision's ImageNet network with the stem of a 32x32 one: conv1 3x3 / 1, no max pool."""
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def test_cifar_resnet18_with_10_classes_has_11173962_parameters():
    count = count_parameters(resnet.resnet18(num_classes=10))
    assert count == 11_173_962, f"expected 11,173,962 parameters, got {count:,}"


def test_cifar_resnet18_does_555422720_macs_on_a_32x32_image():
    model = resnet.resnet18(num_classes=10).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32))
    macs = counter.get_total_flops() // 2  # one multiply-accumulate is two FLOPs
    assert macs == 555_422_720, f"expected 555,422,720 MACs, got {macs:,}"


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_is_torchvisions_network_with_a_3x3_stem_and_no_max_pool(name, capsys):
    model = getattr(resnet, name)(num_classes=10)
    check_same_architecture(model, torchvision_with_cifar_stem(name), (2, 3, 32, 32), name=name)
    assert "paired by name" in capsys.readouterr().out, "the parameter names should be torchvision's"


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_a_small_grey_network_maps_digits_to_finite_logits(name):
    model = getattr(resnet, name)(num_classes=10, in_channels=1, width=8).eval()
    with torch.no_grad():
        logits = model(torch.randn(4, 1, 28, 28))  # (N, C, H, W): the bundled digits' shape
    assert logits.shape == (4, 10), f"{name}: expected logits of shape (4, 10), got {tuple(logits.shape)}"
    assert torch.isfinite(logits).all(), f"{name}: the logits have NaN or inf values"


@pytest.mark.parametrize("width, expected", [(64, (512, 4, 4)), (16, (128, 4, 4))])
def test_the_last_stage_has_8_times_the_width_on_a_4x4_map(width, expected):
    model = resnet.resnet18(width=width).eval()
    maps = capture_outputs(model, torch.randn(1, 3, 32, 32), ["layer4"])  # {"layer4": (N, C, H, W)}
    shape = tuple(maps["layer4"].shape[1:])
    assert shape == expected, f"width {width}: layer4 gives {shape}, expected {expected}"


def test_bottleneck_stage_outputs_4_times_its_planes():
    model = resnet.resnet50(width=8)
    assert model.fc.in_features == 8 * 8 * 4, f"fc takes {model.fc.in_features} features, expected 256"


@pytest.mark.parametrize("name, block", [("resnet18", resnet.BasicBlock), ("resnet50", resnet.Bottleneck)])
def test_zero_init_residual_makes_every_block_without_projection_the_identity(name, block):
    model = getattr(resnet, name)(width=8, zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, block) and m.downsample is None]
    assert blocks, f"{name} has no block without a projection"
    for module in blocks:
        channels = module.conv1.in_channels
        x = torch.rand(2, channels, 8, 8)  # non-negative, as after the previous block's ReLU
        with torch.no_grad():
            out = module(x)
        assert torch.allclose(out, x), f"{name}: a zero-initialised block should return its input"


def test_the_blocks_of_the_package_are_torchvisions(capsys):
    """The same blocks as torchvision's, with the projection torchvision's _make_layer gives."""
    downsample = nn.Sequential(resnet.conv1x1(16, 32, stride=2), nn.BatchNorm2d(32))
    reference_downsample = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
    reference = torchvision.models.resnet.Bottleneck(16, 8, stride=2, downsample=reference_downsample)
    check_same_architecture(resnet.Bottleneck(16, 8, stride=2, downsample=downsample), reference, (2, 16, 9, 9))
    assert "paired by name" in capsys.readouterr().out


def test_rejects_a_network_without_four_stages():
    with pytest.raises(ValueError, match=r"layers must give the blocks of 4 stages"):
        resnet.ResNet(resnet.BasicBlock, (2, 2, 2))
