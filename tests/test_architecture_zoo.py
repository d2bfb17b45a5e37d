"""``check_same_architecture`` across torchvision's zoo: right networks pass, wrong ones are named where wrong.

Families: ResNet-18/50, ResNeXt-50 (32x4d), DenseNet-121, MobileNetV2, MobileNetV3-Small, ShuffleNetV2 (x1.0),
EfficientNet-B0, ConvNeXt-Tiny and ViT-B/16. The references are torchvision's own classes (``weights=None``): its
blocks, small configurations of its networks (one block per stage, narrow widths, 32x32 or 64x64 inputs) and, where
that is cheap, the full-size network at a small input. The learners' networks (``tests/zoo_networks.py``) are the
same networks written differently: other names and nesting, functional activations, ReLU6 written four ways, a
mean for global pooling, squeeze-and-excitation with ``nn.Linear``, a hand-written layer norm and attention.

Each wrong network below is one of those with one mistake, written next to its test. The check copies the
reference's (redrawn) weights into the learner's model, so neither model's own initial values matter.

Every test runs twice: in-process (as in a learner's notebook) and split (as under the grader: the learner's
model behind ``course_utils.checks.learner.Loopback``, reached only through plain-data messages), with the same
verdict and the same message.
"""
import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import convnext, densenet, efficientnet, mobilenetv2, mobilenetv3, resnet, shufflenetv2
from torchvision.models import vision_transformer

import zoo_networks as zoo
from course_utils.checks import architectures, learner
from course_utils.checks.architectures import check_same_architecture as check_in_process

SMALL = (2, 3, 32, 32)  # (N, C, H, W) for the small configurations
MEDIUM = (2, 3, 64, 64)  # for the full-size networks, and where 32x32 would leave 1x1 maps too early


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The networks are small: one thread is as fast as two, and spins far less when other processes hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def seeded():
    """Every network is built from the same seed: a failure reproduces."""
    torch.manual_seed(0)


MODE = ["in-process"]


@pytest.fixture(autouse=True, params=["in-process", "split"])
def mode(request):
    """Each test in both modes of the check: in the learner's process, and split as under the grader."""
    MODE[0] = request.param
    yield request.param
    MODE[0] = "in-process"


def check_same_architecture(model, reference, input_shape, name="architecture"):
    if MODE[0] == "in-process":
        return check_in_process(model, reference, input_shape, name=name)
    with learner.Loopback({"model": model}) as kernel:
        return check_in_process(kernel.handle("model"), reference, input_shape, name=name)


def passes(model, reference, input_shape, name):
    check_same_architecture(model, reference, input_shape, name=name)


# --------------------------------------------------------------------------- torchvision's references, small

def torchvision_resnet(block=resnet.BasicBlock, **options):
    return resnet.ResNet(block, [1, 1, 1, 1], num_classes=10, **options)


def torchvision_basic_block(in_channels, planes, stride=1):
    downsample = None
    if stride != 1 or in_channels != planes:
        downsample = nn.Sequential(resnet.conv1x1(in_channels, planes, stride), nn.BatchNorm2d(planes))
    return resnet.BasicBlock(in_channels, planes, stride, downsample)


def torchvision_bottleneck(in_channels, planes, stride=1, groups=1, base_width=64):
    out_channels = planes * resnet.Bottleneck.expansion
    downsample = nn.Sequential(resnet.conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    return resnet.Bottleneck(in_channels, planes, stride, downsample, groups=groups, base_width=base_width)


def torchvision_densenet():
    return densenet.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10)


def torchvision_mobilenet_v2():
    return torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10)


def torchvision_mobilenet_v3_block(*row):
    """torchvision's MobileNetV3 bottleneck for a row (in, kernel, expanded, out, use SE, "RE" or "HS", stride)."""
    config = mobilenetv3.InvertedResidualConfig(*row, dilation=1, width_mult=1.0)
    return mobilenetv3.InvertedResidual(config, partial(nn.BatchNorm2d, eps=0.001, momentum=0.01))


def torchvision_mbconv(expand_ratio, kernel, stride, in_channels, out_channels):
    config = efficientnet.MBConvConfig(expand_ratio, kernel, stride, in_channels, out_channels, 1)
    return efficientnet.MBConv(config, 0.0, nn.BatchNorm2d)


def torchvision_shufflenet():
    return shufflenetv2.ShuffleNetV2([2, 2, 2], [24, 16, 32, 64, 128], num_classes=10)


def torchvision_convnext():
    return convnext.ConvNeXt([convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)], num_classes=10)


def torchvision_vit(dropout=0.0):
    return vision_transformer.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                                                mlp_dim=64, num_classes=10, dropout=dropout)


def learner_convnext(block=zoo.ConvNeXtBlockChannelsFirst):
    return zoo.ConvNeXt([(16, 1), (32, 1)], block=block)


# --------------------------------------------------------------------------- right networks pass

COPY = None  # the learner's model is a deep copy of the reference

SAME_NETWORKS = [
    # ResNet-18, ResNet-50, ResNeXt-50 32x4d
    pytest.param(lambda: torchvision_basic_block(16, 16), COPY, (2, 16, 8, 8), id="basic-block-copy"),
    pytest.param(lambda: torchvision_basic_block(16, 32, 2), COPY, (2, 16, 8, 8), id="basic-block-downsampling-copy"),
    pytest.param(lambda: torchvision_basic_block(16, 32, 2), lambda: zoo.ResidualBlock(16, 32, 2), (2, 16, 8, 8),
                 id="basic-block-own-names"),
    pytest.param(lambda: torchvision_basic_block(16, 32, 2), lambda: zoo.ResidualBlockShortcutFirst(16, 32, 2),
                 (2, 16, 8, 8), id="basic-block-shortcut-registered-first"),
    pytest.param(lambda: torchvision_basic_block(16, 32, 2), lambda: zoo.ResidualBlockShortcutComputedFirst(16, 32, 2),
                 (2, 16, 8, 8), id="basic-block-shortcut-registered-and-computed-first"),
    pytest.param(torchvision_resnet, COPY, SMALL, id="resnet-1111-copy"),
    pytest.param(torchvision_resnet, lambda: zoo.ResNet(zoo.ResidualBlock, [1, 1, 1, 1]), SMALL,
                 id="resnet-1111-own-names"),
    pytest.param(torchvision_resnet, lambda: zoo.ResNet(zoo.ResidualBlockShortcutComputedFirst, [1, 1, 1, 1]), SMALL,
                 id="resnet-1111-shortcuts-first"),
    pytest.param(lambda: torchvision.models.resnet18(num_classes=10), COPY, MEDIUM, id="resnet18-copy"),
    pytest.param(lambda: torchvision.models.resnet18(num_classes=10),
                 lambda: zoo.ResNet(zoo.ResidualBlock, [2, 2, 2, 2]), MEDIUM, id="resnet18-own-names"),
    pytest.param(lambda: torchvision_bottleneck(64, 32, 2), COPY, (2, 64, 8, 8), id="bottleneck-copy"),
    pytest.param(lambda: torchvision_bottleneck(64, 32, 2), lambda: zoo.BottleneckBlock(64, 32, 2), (2, 64, 8, 8),
                 id="bottleneck-own-names"),
    pytest.param(lambda: torchvision_resnet(resnet.Bottleneck), lambda: zoo.ResNet(zoo.BottleneckBlock, [1, 1, 1, 1]),
                 SMALL, id="resnet50-1111-own-names"),
    pytest.param(lambda: torchvision_bottleneck(64, 32, 1, groups=32, base_width=4), lambda: zoo.ResNeXtBlock(64, 32),
                 (2, 64, 8, 8), id="resnext-block-own-names"),
    pytest.param(lambda: torchvision_resnet(resnet.Bottleneck, groups=32, width_per_group=4), COPY, SMALL,
                 id="resnext50-1111-copy"),
    pytest.param(lambda: torchvision_resnet(resnet.Bottleneck, groups=32, width_per_group=4),
                 lambda: zoo.ResNet(zoo.ResNeXtBlock, [1, 1, 1, 1]), SMALL, id="resnext50-1111-own-names"),
    # DenseNet-121
    pytest.param(torchvision_densenet, COPY, SMALL, id="densenet-small-copy"),
    pytest.param(torchvision_densenet, lambda: zoo.DenseNet(8, (2, 2), 16), SMALL,
                 id="densenet-small-list-of-features"),
    pytest.param(torchvision_densenet, lambda: zoo.DenseNet(8, (2, 2), 16, block=zoo.DenseBlockGrowing), SMALL,
                 id="densenet-small-growing-concatenation"),
    pytest.param(lambda: torchvision.models.densenet121(num_classes=10), COPY, SMALL, id="densenet121-copy"),
    pytest.param(lambda: torchvision.models.densenet121(num_classes=10), lambda: zoo.DenseNet(32, (6, 12, 24, 16), 64),
                 SMALL, id="densenet121-own-names"),
    # MobileNetV2: ReLU6 as a module, F.relu6, torch.clamp and F.hardtanh
    pytest.param(lambda: mobilenetv2.InvertedResidual(16, 16, 1, 6), COPY, (2, 16, 8, 8), id="inverted-residual-copy"),
    pytest.param(lambda: mobilenetv2.InvertedResidual(16, 16, 1, 6),
                 lambda: zoo.InvertedResidualV2(16, 16, 1, 6, activation=nn.ReLU6()), (2, 16, 8, 8),
                 id="inverted-residual-nn-relu6"),
    pytest.param(lambda: mobilenetv2.InvertedResidual(16, 16, 1, 6),
                 lambda: zoo.InvertedResidualV2(16, 16, 1, 6, activation=F.relu6), (2, 16, 8, 8),
                 id="inverted-residual-f-relu6"),
    pytest.param(lambda: mobilenetv2.InvertedResidual(16, 24, 2, 6),
                 lambda: zoo.InvertedResidualV2(16, 24, 2, 6, activation=zoo.relu6_as_clamp), (2, 16, 8, 8),
                 id="inverted-residual-clamp"),
    pytest.param(lambda: mobilenetv2.InvertedResidual(16, 24, 2, 6),
                 lambda: zoo.InvertedResidualV2(16, 24, 2, 6, activation=zoo.relu6_as_hardtanh), (2, 16, 8, 8),
                 id="inverted-residual-hardtanh"),
    pytest.param(lambda: mobilenetv2.InvertedResidual(16, 8, 1, 1), lambda: zoo.InvertedResidualV2(16, 8, 1, 1),
                 (2, 16, 8, 8), id="inverted-residual-without-expansion"),
    pytest.param(torchvision_mobilenet_v2, COPY, SMALL, id="mobilenet-v2-quarter-copy"),
    pytest.param(torchvision_mobilenet_v2, lambda: zoo.MobileNetV2(**zoo.MOBILENET_V2_QUARTER), SMALL,
                 id="mobilenet-v2-quarter-own-names"),
    pytest.param(torchvision_mobilenet_v2,
                 lambda: zoo.MobileNetV2(**zoo.MOBILENET_V2_QUARTER, activation=zoo.relu6_as_clamp), SMALL,
                 id="mobilenet-v2-quarter-clamp"),
    # MobileNetV3-Small
    pytest.param(lambda: torchvision_mobilenet_v3_block(24, 5, 96, 40, True, "HS", 2), COPY, (2, 24, 16, 16),
                 id="mobilenet-v3-block-copy"),
    pytest.param(lambda: torchvision_mobilenet_v3_block(24, 5, 96, 40, True, "HS", 2),
                 lambda: zoo.MobileNetV3Block(24, 5, 96, 40, 24, True, 2), (2, 24, 16, 16),
                 id="mobilenet-v3-block-linear-se"),
    pytest.param(lambda: torchvision_mobilenet_v3_block(40, 5, 240, 40, True, "HS", 1),
                 lambda: zoo.MobileNetV3BlockWrittenOut(40, 5, 240, 40, 64, True, 1), (2, 40, 8, 8),
                 id="mobilenet-v3-block-hard-swish-written-out"),
    pytest.param(lambda: torchvision.models.mobilenet_v3_small(num_classes=10), COPY, MEDIUM,
                 id="mobilenet-v3-small-copy"),
    pytest.param(lambda: torchvision.models.mobilenet_v3_small(num_classes=10), lambda: zoo.MobileNetV3Small(),
                 MEDIUM, id="mobilenet-v3-small-own-names"),
    # ShuffleNetV2 x1.0
    pytest.param(lambda: shufflenetv2.InvertedResidual(24, 48, 2), COPY, (2, 24, 16, 16), id="shuffle-unit-copy"),
    pytest.param(lambda: shufflenetv2.InvertedResidual(24, 48, 2), lambda: zoo.ShuffleUnit(24, 48, 2),
                 (2, 24, 16, 16), id="shuffle-unit-downsampling-own-names"),
    pytest.param(lambda: shufflenetv2.InvertedResidual(48, 48, 1), lambda: zoo.ShuffleUnitPermuted(48, 48, 1),
                 (2, 48, 8, 8), id="shuffle-unit-split-permuted-shuffle"),
    pytest.param(torchvision_shufflenet, COPY, MEDIUM, id="shufflenet-small-copy"),
    pytest.param(torchvision_shufflenet, lambda: zoo.ShuffleNetV2((2, 2, 2), (24, 16, 32, 64, 128)), MEDIUM,
                 id="shufflenet-small-own-names"),
    pytest.param(lambda: torchvision.models.shufflenet_v2_x1_0(num_classes=10), COPY, MEDIUM, id="shufflenet-x1-copy"),
    pytest.param(lambda: torchvision.models.shufflenet_v2_x1_0(num_classes=10),
                 lambda: zoo.ShuffleNetV2((4, 8, 4), (24, 116, 232, 464, 1024), unit=zoo.ShuffleUnitPermuted), MEDIUM,
                 id="shufflenet-x1-own-names"),
    # EfficientNet-B0
    pytest.param(lambda: torchvision_mbconv(6, 3, 1, 16, 16), COPY, (2, 16, 8, 8), id="mbconv-copy"),
    pytest.param(lambda: torchvision_mbconv(6, 3, 1, 16, 16), lambda: zoo.MBConv(16, 16, 3, 1, 6), (2, 16, 8, 8),
                 id="mbconv-linear-se"),
    pytest.param(lambda: torchvision_mbconv(6, 5, 2, 16, 24),
                 lambda: zoo.MBConv(16, 24, 5, 2, 6, activation=zoo.silu_written_out), (2, 16, 8, 8),
                 id="mbconv-silu-written-out"),
    pytest.param(lambda: torchvision_mbconv(1, 3, 1, 32, 16), lambda: zoo.MBConv(32, 16, 3, 1, 1), (2, 32, 8, 8),
                 id="mbconv-without-expansion"),
    pytest.param(lambda: torchvision.models.efficientnet_b0(num_classes=10), COPY, MEDIUM, id="efficientnet-b0-copy"),
    pytest.param(lambda: torchvision.models.efficientnet_b0(num_classes=10), lambda: zoo.EfficientNetB0(), MEDIUM,
                 id="efficientnet-b0-own-names"),
    # ConvNeXt-Tiny
    pytest.param(lambda: convnext.CNBlock(16, 1e-6, 0.0), COPY, (2, 16, 8, 8), id="convnext-block-copy"),
    pytest.param(lambda: convnext.CNBlock(16, 1e-6, 0.0), lambda: zoo.ConvNeXtBlock(16), (2, 16, 8, 8),
                 id="convnext-block-channels-last"),
    pytest.param(lambda: convnext.CNBlock(16, 1e-6, 0.0), lambda: zoo.ConvNeXtBlockChannelsFirst(16), (2, 16, 8, 8),
                 id="convnext-block-channels-first-1x1-convs-own-layer-norm"),
    pytest.param(torchvision_convnext, COPY, SMALL, id="convnext-small-copy"),
    pytest.param(torchvision_convnext, learner_convnext, SMALL, id="convnext-small-channels-first"),
    pytest.param(torchvision_convnext, lambda: learner_convnext(zoo.ConvNeXtBlock), SMALL,
                 id="convnext-small-channels-last-blocks"),
    # ViT-B/16
    pytest.param(lambda: vision_transformer.EncoderBlock(4, 32, 64, 0.0, 0.0), COPY, (2, 17, 32),
                 id="encoder-block-copy"),
    pytest.param(lambda: vision_transformer.EncoderBlock(4, 32, 64, 0.0, 0.0), lambda: zoo.TransformerBlock(32, 4, 64),
                 (2, 17, 32), id="encoder-block-attention-written-out"),
    pytest.param(torchvision_vit, COPY, SMALL, id="vit-small-copy"),
    pytest.param(torchvision_vit, lambda: zoo.ViT(), SMALL, id="vit-small-attention-written-out"),
    pytest.param(torchvision_vit, lambda: zoo.ViT(attention=zoo.SelfAttentionSDPA), SMALL,
                 id="vit-small-scaled-dot-product-attention"),
    pytest.param(torchvision_vit, lambda: zoo.ViT(attention=zoo.TorchAttention), SMALL,
                 id="vit-small-nn-multihead-attention"),
    pytest.param(torchvision_vit, lambda: zoo.ViT(block=zoo.TorchEncoderLayer), SMALL,
                 id="vit-small-nn-transformer-encoder-layer"),
    pytest.param(lambda: torchvision_vit(dropout=0.1), lambda: zoo.ViT(dropout=0.1), SMALL, id="vit-small-dropout"),
]


@pytest.mark.parametrize("make_reference, make_learner, input_shape", SAME_NETWORKS)
def test_the_same_network_written_differently_passes(make_reference, make_learner, input_shape, request):
    reference = make_reference()
    learner = copy.deepcopy(reference) if make_learner is COPY else make_learner()
    passes(learner, reference, input_shape, name=request.node.callspec.id)


def test_the_check_changes_neither_the_learners_model_nor_the_reference():
    """Both keep every parameter and buffer (running statistics, batch counts) and their training mode."""
    reference, learner = torchvision_resnet(), zoo.ResNet(zoo.ResidualBlock, [1, 1, 1, 1])
    learner.train()
    before = {who: copy.deepcopy(model.state_dict()) for who, model in (("learner", learner), ("reference", reference))}
    passes(learner, reference, SMALL, name="ResNet")
    for who, model in (("learner", learner), ("reference", reference)):
        after = model.state_dict()
        changed = [name for name, value in before[who].items() if not torch.equal(value, after[name])]
        assert not changed, f"the check changed the {who}'s {changed[:3]}"
    assert learner.training and reference.training, "the check left a model in eval mode"


def test_the_check_runs_on_a_machine_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    passes(zoo.MBConv(16, 16, 3, 1, 6), torchvision_mbconv(6, 3, 1, 16, 16), (2, 16, 8, 8), name="MBConv")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_learners_model_on_the_gpu_is_checked_and_stays_there():
    learner = zoo.MBConv(16, 16, 3, 1, 6).cuda()
    passes(learner, torchvision_mbconv(6, 3, 1, 16, 16), (2, 16, 8, 8), name="MBConv")
    assert all(p.is_cuda for p in learner.parameters()), "the check moved the learner's model off the GPU"


# --------------------------------------------------------------------------- ResNet, ResNeXt: wrong networks

def rejected(learner, reference, input_shape, match):
    with pytest.raises(AssertionError, match=match):
        check_same_architecture(learner, reference, input_shape, name="zoo")


def test_a_relu_before_the_residual_addition_is_rejected():
    class ReluBeforeAddition(zoo.ResidualBlock):
        def forward(self, x):
            out = F.relu(self.first_norm(self.first_conv(x)))
            out = F.relu(self.second_norm(self.second_conv(out)))  # the mistake: ReLU before the addition
            return F.relu(out + self.shortcut(x))

    rejected(zoo.ResNet(ReluBeforeAddition, [1, 1, 1, 1]), torchvision_resnet(), SMALL,
             match=r"add \(layer1\.0, BasicBlock\).*relu \(stages\.0\.0, ReluBeforeAddition\)")


def test_a_projection_shortcut_without_its_batch_norm_is_rejected():
    class ShortcutWithoutNorm(zoo.ResidualBlock):
        def __init__(self, in_channels, planes, stride=1):
            super().__init__(in_channels, planes, stride)
            self.shortcut_norm = None  # the mistake: the projection is a bare 1x1 convolution

        def shortcut(self, x):
            return x if self.shortcut_conv is None else self.shortcut_conv(x)

    rejected(zoo.ResNet(ShortcutWithoutNorm, [1, 1, 1, 1]), torchvision_resnet(), SMALL, match=r"downsample|shortcut")


def test_a_batch_norm_used_twice_is_rejected():
    """With torchvision's identity batch norms the two would agree: the check's redrawn statistics tell them apart."""
    class NormUsedTwice(zoo.ResidualBlock):
        def forward(self, x):
            out = F.relu(self.first_norm(self.first_conv(x)))
            out = self.first_norm(self.second_conv(out))  # the mistake: first_norm again, second_norm unused
            return F.relu(out + self.shortcut(x))

    rejected(zoo.ResNet(NormUsedTwice, [1, 1, 1, 1]), torchvision_resnet(), SMALL,
             match=r"stages\.0\.0\.(first|second)_norm|layer1\.0\.bn[12]")


def test_a_batch_norm_without_affine_parameters_is_rejected():
    class NormWithoutAffine(zoo.ResidualBlock):
        def __init__(self, in_channels, planes, stride=1):
            super().__init__(in_channels, planes, stride)
            self.first_norm = nn.BatchNorm2d(planes, affine=False)  # the mistake: no weight, no bias

    rejected(zoo.ResNet(NormWithoutAffine, [1, 1, 1, 1]), torchvision_resnet(), SMALL,
             match=r"reference's parameter layer\d\.0\.bn1\.(weight|bias) .* has no counterpart")


def test_a_bias_where_the_reference_has_none_is_rejected():
    class ConvWithBias(zoo.ResidualBlock):
        def __init__(self, in_channels, planes, stride=1):
            super().__init__(in_channels, planes, stride)
            self.first_conv = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1)  # the mistake: bias=True

    rejected(zoo.ResNet(ConvWithBias, [1, 1, 1, 1]), torchvision_resnet(), SMALL,
             match=r"learner's parameter stages\.\d\.0\.first_conv\.bias .* has no counterpart")


def test_a_stride_on_the_first_1x1_instead_of_the_3x3_is_rejected():
    """torchvision's Bottleneck is "ResNet v1.5": the 3x3 convolution strides; striding the 1x1 keeps every shape."""
    class StrideOnTheFirst1x1(zoo.BottleneckBlock):
        def __init__(self, in_channels, planes, stride=1):
            super().__init__(in_channels, planes, stride)
            width = self.reduce.out_channels
            self.reduce = nn.Conv2d(in_channels, width, 1, stride=stride, bias=False)  # the mistake
            self.spatial = nn.Conv2d(width, width, 3, padding=1, bias=False)

    rejected(zoo.ResNet(StrideOnTheFirst1x1, [1, 1, 1, 1]), torchvision_resnet(resnet.Bottleneck), SMALL,
             match=r"conv2d \(layer2\.0\.conv1, Conv2d\).*stride")


def test_a_resnext_block_without_groups_is_rejected():
    class UngroupedResNeXtBlock(zoo.ResNeXtBlock):
        def __init__(self, in_channels, planes, stride=1):
            super().__init__(in_channels, planes, stride)
            width = self.spatial.in_channels
            self.spatial = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)  # the mistake: groups=1

    rejected(zoo.ResNet(UngroupedResNeXtBlock, [1, 1, 1, 1]),
             torchvision_resnet(resnet.Bottleneck, groups=32, width_per_group=4), SMALL,
             match=r"layer\d\.0\.conv2\.weight|spatial\.weight")


def test_an_extra_dropout_before_the_classifier_is_rejected():
    class ResNetWithDropout(zoo.ResNet):
        def forward(self, x):
            x = F.max_pool2d(F.relu(self.stem_norm(self.stem_conv(x))), kernel_size=3, stride=2, padding=1)
            for stage in self.stages:
                x = stage(x)
            x = x.mean((2, 3))  # (N, C)
            x = F.dropout(x, 0.5, self.training)  # the mistake: torchvision's ResNet has no dropout
            return self.classifier(x)

    rejected(ResNetWithDropout(zoo.ResidualBlock, [1, 1, 1, 1]), torchvision_resnet(), SMALL,
             match=r"dropout .*(no counterpart|where the reference applies)|extra operation")


def test_an_activation_computed_and_thrown_away_is_rejected():
    class ReluNotAssigned(zoo.ResidualBlock):
        def forward(self, x):
            out = self.first_norm(self.first_conv(x))
            F.relu(out)  # the mistake: the result is not assigned
            out = self.second_norm(self.second_conv(out))
            return F.relu(out + self.shortcut(x))

    rejected(zoo.ResNet(ReluNotAssigned, [1, 1, 1, 1]), torchvision_resnet(), SMALL,
             match=r"relu \(stages\.0\.0, ReluNotAssigned\).* never reaches the model's output")


# --------------------------------------------------------------------------- DenseNet: wrong networks

def test_a_dense_block_concatenating_new_before_old_is_rejected():
    class NewFeaturesFirst(zoo.DenseBlockGrowing):
        def forward(self, x):
            for layer in self.layers:
                x = torch.cat([layer(x), x], 1)  # the mistake: [new, old] instead of [old, new]
            return x

    rejected(zoo.DenseNet(8, (2, 2), 16, block=NewFeaturesFirst), torchvision_densenet(), SMALL,
             match=r"cat \(features\.denseblock1\.denselayer2, _DenseLayer\)")


def test_a_transition_without_compression_is_rejected():
    rejected(zoo.DenseNet(8, (2, 2), 16, compression=1.0), torchvision_densenet(), SMALL,
             match=r"transition|transition_(norm|conv)s")


# --------------------------------------------------------------------------- MobileNetV2: wrong networks

def mobilenet_v2_with(block=zoo.InvertedResidualV2, **changes):
    return zoo.MobileNetV2(**zoo.MOBILENET_V2_QUARTER, block=block, **changes)


def test_a_relu6_after_the_linear_projection_is_rejected():
    class ActivatedProjection(zoo.InvertedResidualV2):
        def forward(self, x):
            out = x
            if self.expand is not None:
                out = self.activation(self.expand_norm(self.expand(out)))
            out = self.activation(self.depthwise_norm(self.depthwise(out)))
            out = self.activation(self.project_norm(self.project(out)))  # the mistake: the bottleneck is linear
            return x + out if self.use_residual else out

    rejected(mobilenet_v2_with(ActivatedProjection), torchvision_mobilenet_v2(), SMALL,
             match=r"relu6 \(blocks\.0, ActivatedProjection\)|features\.1\.conv\.2")


def test_the_redrawn_weights_take_relu6_inputs_above_6():
    """Without values above 6 a ReLU in place of a ReLU6 would differ by its kind alone."""
    reference = torchvision_mobilenet_v2()
    x = torch.randn(*SMALL)
    redrawn = architectures.redraw_parameters_(copy.deepcopy(reference), x)
    largest = []
    for module in redrawn.modules():
        if isinstance(module, nn.ReLU6):
            module.register_forward_pre_hook(lambda module, inputs: largest.append(float(inputs[0].max())))
    with torch.no_grad():
        redrawn.eval()(x)
    assert max(largest) > 6, f"the largest input of the {len(largest)} ReLU6 is {max(largest):.3g}, not above 6"


def test_a_relu_instead_of_relu6_is_rejected():
    rejected(mobilenet_v2_with(activation=F.relu), torchvision_mobilenet_v2(), SMALL,
             match=r"hardtanh \(features\.0\.2, ReLU6\).*relu")


def test_a_missing_dropout_is_rejected():
    class WithoutDropout(zoo.MobileNetV2):
        def forward(self, x):
            x = self.activation(self.stem_norm(self.stem(x)))
            x = self.blocks(x)
            x = self.activation(self.head_norm(self.head(x)))
            x = torch.flatten(self.pool(x), 1)  # (N, C); the mistake: no dropout before the classifier
            return self.classifier(x)

    learner = WithoutDropout(**zoo.MOBILENET_V2_QUARTER)
    rejected(learner, torchvision_mobilenet_v2(), SMALL, match=r"dropout \(classifier\.0, Dropout\)")


def test_a_dropout_with_the_wrong_probability_is_rejected():
    rejected(mobilenet_v2_with(dropout=0.5), torchvision_mobilenet_v2(), SMALL,
             match=r"dropout .*p=0\.5.*p=0\.2")


# --------------------------------------------------------------------------- MobileNetV3-Small: wrong networks

def test_squeeze_and_excitation_of_the_block_input_is_rejected():
    """In the first block (16 channels, no expansion) the input and the depthwise output have the same channels."""
    class ExcitationOfTheInput(zoo.MobileNetV3Block):
        def forward(self, x):
            out = F.relu(self.depthwise_norm(self.depthwise(x)))
            out = out * self.excitation(x)[:, :, None, None]  # the mistake: the scale is computed from x
            return self.project_norm(self.project(out))

    rejected(ExcitationOfTheInput(16, 3, 16, 16, 8, False, 2),
             torchvision_mobilenet_v3_block(16, 3, 16, 16, True, "RE", 2), (2, 16, 16, 16),
             match=r"block\.1\.avgpool|wrong tensor")


def test_a_relu_instead_of_hard_swish_is_rejected():
    class ReluInsteadOfHardSwish(zoo.MobileNetV3Block):
        def __init__(self, *row):
            super().__init__(*row)
            self.activation = F.relu  # the mistake: the "HS" rows use hard-swish

    rejected(ReluInsteadOfHardSwish(24, 5, 96, 40, 24, True, 2),
             torchvision_mobilenet_v3_block(24, 5, 96, 40, True, "HS", 2), (2, 24, 16, 16),
             match=r"hardswish \(block\.0\.2, Hardswish\).*relu")


# --------------------------------------------------------------------------- EfficientNet-B0: wrong networks

def test_squeeze_and_excitation_of_the_mbconv_input_is_rejected():
    class ExcitationOfTheInput(zoo.MBConv):
        def forward(self, x):
            out = self.activation(self.depthwise_norm(self.depthwise(x)))
            out = out * self.excitation(x)  # the mistake: the scale is computed from the block's input
            return self.project_norm(self.project(out))

    rejected(ExcitationOfTheInput(32, 16, 3, 1, 1), torchvision_mbconv(1, 3, 1, 32, 16), (2, 32, 8, 8),
             match=r"block\.1\.avgpool|wrong tensor")


def test_squeeze_and_excitation_without_its_sigmoid_is_rejected():
    class ExcitationWithoutSigmoid(zoo.MBConv):
        def excitation(self, x):
            s = x.mean((2, 3))  # (N, C)
            s = self.se_expand(self.activation(self.se_reduce(s)))  # the mistake: no sigmoid gate
            return s[:, :, None, None]  # (N, C, 1, 1)

    rejected(ExcitationWithoutSigmoid(16, 16, 3, 1, 6), torchvision_mbconv(6, 3, 1, 16, 16), (2, 16, 8, 8),
             match=r"sigmoid \(block\.2\.scale_activation, Sigmoid\)")


def test_a_squeeze_and_excitation_computed_but_not_applied_is_rejected():
    class ExcitationNotApplied(zoo.MBConv):
        def forward(self, x):
            out = self.activation(self.expand_norm(self.expand(x)))
            out = self.activation(self.depthwise_norm(self.depthwise(out)))
            scale = self.excitation(out)  # noqa: F841 - the mistake: computed, never multiplied in
            out = self.project_norm(self.project(out))
            return out + x

    rejected(ExcitationNotApplied(16, 16, 3, 1, 6), torchvision_mbconv(6, 3, 1, 16, 16), (2, 16, 8, 8),
             match=r"never reaches the model's output")


# --------------------------------------------------------------------------- ShuffleNetV2: wrong networks

def test_a_channel_shuffle_with_groups_and_channels_swapped_is_rejected():
    def swapped_shuffle(x, groups):
        N, C, H, W = x.shape
        x = x.view(N, C // groups, groups, H, W)  # the mistake: (N, C/groups, groups, ...) before the transpose
        x = x.transpose(1, 2)  # (N, groups, C/groups, H, W)
        return x.reshape(N, C, H, W)  # (N, C, H, W)

    learner = zoo.ShuffleNetV2((2, 2, 2), (24, 16, 32, 64, 128), unit=partial(zoo.ShuffleUnit, shuffle=swapped_shuffle))
    rejected(learner, torchvision_shufflenet(), MEDIUM, match=r"stage2\.1\.branch2\.0|stages\.0\.1\.right_reduce")


# --------------------------------------------------------------------------- ConvNeXt-Tiny: wrong networks

def test_a_convnext_block_without_layer_scale_is_rejected():
    class WithoutLayerScale(zoo.ConvNeXtBlockChannelsFirst):
        def __init__(self, dim):
            super().__init__(dim)
            del self.gamma  # the mistake: no layer scale

        def forward(self, x):
            out = self.narrow(self.activation(self.widen(self.norm(self.depthwise(x)))))
            return x + out

    rejected(learner_convnext(WithoutLayerScale), torchvision_convnext(), SMALL, match=r"layer_scale")


def test_a_layer_scale_applied_after_the_residual_addition_is_rejected():
    class LayerScaleAfterAddition(zoo.ConvNeXtBlockChannelsFirst):
        def forward(self, x):
            out = self.narrow(self.activation(self.widen(self.norm(self.depthwise(x)))))
            return self.gamma[:, None, None] * (x + out)  # the mistake: scales the sum, shortcut included

    rejected(learner_convnext(LayerScaleAfterAddition), torchvision_convnext(), SMALL,
             match=r"(mul|add) \(features\.1\.0, CNBlock\)|stages\.0\.0, LayerScaleAfterAddition")


def test_a_gelu_in_its_tanh_form_is_rejected():
    class TanhGelu(zoo.ConvNeXtBlockChannelsFirst):
        def __init__(self, dim):
            super().__init__(dim)
            self.activation = nn.GELU(approximate="tanh")  # the mistake: torchvision's GELU is exact

    rejected(learner_convnext(TanhGelu), torchvision_convnext(), SMALL,
             match=r"gelu \(.*features\.1\.0\.block\.4|approximate='tanh'")


def test_a_depthwise_convolution_without_its_bias_is_rejected():
    class DepthwiseWithoutBias(zoo.ConvNeXtBlockChannelsFirst):
        def __init__(self, dim):
            super().__init__(dim)
            self.depthwise = nn.Conv2d(dim, dim, 7, padding=3, groups=dim, bias=False)  # the mistake

    rejected(learner_convnext(DepthwiseWithoutBias), torchvision_convnext(), SMALL,
             match=r"reference's parameter features\.\d\.0\.block\.0\.bias")


# --------------------------------------------------------------------------- ViT-B/16: wrong networks

def test_a_position_embedding_not_added_is_rejected():
    class WithoutPositions(zoo.ViT):
        def embed(self, x):
            x = self.patch_embedding(x).flatten(2).transpose(1, 2)  # (N, S, D)
            cls = self.cls_token.expand(x.shape[0], -1, -1)  # (N, 1, D)
            return torch.cat([cls, x], dim=1)  # (N, S + 1, D); the mistake: no position embedding

    rejected(WithoutPositions(), torchvision_vit(), SMALL, match=r"pos_embedding|position_embedding")


def test_a_class_token_taken_from_the_wrong_end_is_rejected():
    class LastToken(zoo.ViT):
        def forward(self, x):
            x = self.embed(x)
            for block in self.blocks:
                x = block(x)
            x = self.norm(x)[:, -1]  # (N, D); the mistake: the class token is the first token
            return self.head(x)

    rejected(LastToken(), torchvision_vit(), SMALL, match=r"linear \(heads\.head, Linear\)")


def test_attention_heads_split_wrongly_are_rejected():
    class HeadsSplitWrongly(zoo.SelfAttention):
        def split_heads(self, qkv):
            N, S, _ = qkv.shape
            head_dim = qkv.shape[-1] // (3 * self.num_heads)
            qkv = qkv.reshape(N, S, 3, head_dim, self.num_heads)  # the mistake: (hd, H) instead of (H, hd)
            qkv = qkv.permute(2, 0, 4, 1, 3)  # (3, N, H, S, hd)
            return qkv[0], qkv[1], qkv[2]

    rejected(zoo.ViT(attention=HeadsSplitWrongly), torchvision_vit(), SMALL,
             match=r"encoder_layer_0\.self_attention|blocks\.0\.attention")


def test_a_softmax_over_the_queries_is_rejected():
    class SoftmaxOverQueries(zoo.SelfAttention):
        def attend(self, q, k, v):
            scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (N, H, S, S)
            return scores.softmax(dim=-2) @ v  # the mistake: normalised over the queries, not the keys

    rejected(zoo.ViT(attention=SoftmaxOverQueries), torchvision_vit(), SMALL,
             match=r"encoder_layer_0\.self_attention|blocks\.0\.attention")


def test_a_vit_dropout_with_the_wrong_probability_is_rejected():
    rejected(zoo.ViT(dropout=0.2), torchvision_vit(dropout=0.1), SMALL, match=r"dropout .*p=0\.2.*p=0\.1")
