"""The chapter 09 checks pass on correct DenseNet parts and fail on the usual mistakes.

The correct models are written out here in plain PyTorch (from Huang et al. 2017, section 3 and Table 1, and the
layout of torchvision's ``densenet.py``), independently of the check's references, which are torchvision's own
``_DenseLayer``, ``_DenseBlock``, ``_Transition``, ``densenet121`` and ``DenseNet``. Each right answer is written a
different way (modules with torchvision's names, ``torch.nn.functional`` with other names, ``nn.Sequential``, the
classic ``x = torch.cat([x, new], 1)`` loop or torchvision's list of features); each wrong one changes one thing.
"""
from collections import OrderedDict


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.checks import densenet as checks
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


# --------------------------------------------------------------------------- the dense layer

class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv with torchvision's names; each option is one mistake."""

    def __init__(self, in_channels, growth_rate, bn_size=4, relu_first=False, bottleneck=True, bias=False,
                 post_activation=False, return_concatenation=False, fixed_growth=None, fixed_bn_size=None):
        super().__init__()
        growth_rate = fixed_growth or growth_rate
        width = (fixed_bn_size or bn_size) * growth_rate  # the bottleneck's channels
        self.relu_first, self.bottleneck = relu_first, bottleneck
        self.post_activation, self.return_concatenation = post_activation, return_concatenation
        if bottleneck:
            self.norm1 = nn.BatchNorm2d(width if post_activation else in_channels)
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=bias)
        else:
            width = in_channels
        self.norm2 = nn.BatchNorm2d(growth_rate if post_activation else width)
        self.conv2 = nn.Conv2d(width, growth_rate, kernel_size=3, padding=1, bias=bias)

    def unit(self, x, norm, conv):
        if self.post_activation:
            return F.relu(norm(conv(x)))
        if self.relu_first:
            return conv(norm(F.relu(x)))
        return conv(F.relu(norm(x)))

    def forward(self, x):  # x: (N, C, H, W)
        new = self.unit(x, self.norm1, self.conv1) if self.bottleneck else x  # (N, bn_size*k, H, W)
        new = self.unit(new, self.norm2, self.conv2)  # (N, k, H, W)
        return torch.cat([x, new], 1) if self.return_concatenation else new


class FunctionalDenseLayer(nn.Module):
    """The same layer with other names, ReLU from torch.nn.functional and the parameters registered conv first."""

    def __init__(self, in_channels, growth_rate, bn_size=4):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
        self.grow = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.bn_in = nn.BatchNorm2d(in_channels)
        self.bn_mid = nn.BatchNorm2d(bn_size * growth_rate)

    def forward(self, x):
        x = F.relu(self.bn_in(x))
        x = self.squeeze(x)
        x = F.relu(self.bn_mid(x))
        return self.grow(x)


def sequential_dense_layer(in_channels, growth_rate, bn_size=4):
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, bn_size * growth_rate, kernel_size=1, bias=False),
        nn.BatchNorm2d(bn_size * growth_rate), nn.ReLU(inplace=True),
        nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False),
    )


@pytest.mark.parametrize("layer", [DenseLayer, FunctionalDenseLayer, sequential_dense_layer],
                         ids=["torchvision names", "functional, other names", "nn.Sequential"])
def test_dense_layer_check_passes_on_correct_layers_written_differently(layer, capsys):
    checks.check_dense_layer(layer)
    assert "DenseLayer: all 3 cases passed" in capsys.readouterr().out


def test_dense_layer_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match=r"not implemented yet \(DenseLayer\(64, growth_rate=32"):
        checks.check_dense_layer(stub)


def test_dense_layer_check_fails_on_relu_before_batch_norm():
    with pytest.raises(AssertionError, match=r"(?s)DenseLayer\(64, .*the reference's batch_norm \(norm1.*"
                                             r"learner's .*relu"):
        checks.check_dense_layer(lambda i, k, b: DenseLayer(i, k, b, relu_first=True))


def test_dense_layer_check_fails_on_conv_bn_relu_post_activation():
    with pytest.raises(AssertionError, match=r"parameter norm1\.weight \(paired by name\): the learner's has shape "
                                             r"\(128,\), the reference's \(64,\)"):
        checks.check_dense_layer(lambda i, k, b: DenseLayer(i, k, b, post_activation=True))


def test_dense_layer_check_fails_without_the_bottleneck_1x1_convolution():
    with pytest.raises(AssertionError, match=r"DenseLayer\(64, .*conv1\.weight of shape \(128, 64, 1, 1\).*learner's "
                                             r"model has 3 parameter tensors .*the reference 6"):
        checks.check_dense_layer(lambda i, k, b: DenseLayer(i, k, b, bottleneck=False))


def test_dense_layer_check_fails_on_a_growth_rate_written_in():
    with pytest.raises(AssertionError, match=r"DenseLayer\(24, growth_rate=12, bn_size=2\).*conv1\.weight.*learner's "
                                             r"has shape \(64, 24, 1, 1\), the reference's \(24, 24, 1, 1\)"):
        checks.check_dense_layer(lambda i, k, b: DenseLayer(i, k, b, fixed_growth=32))


def test_dense_layer_check_fails_on_a_bottleneck_of_4k_whatever_bn_size():
    with pytest.raises(AssertionError, match=r"DenseLayer\(24, growth_rate=12, bn_size=2\).*conv1\.weight.*learner's "
                                             r"has shape \(48, 24, 1, 1\)"):
        checks.check_dense_layer(lambda i, k, b: DenseLayer(i, k, b, fixed_bn_size=4))


def test_dense_layer_check_fails_on_convolutions_with_bias():
    with pytest.raises(AssertionError, match=r"the learner's parameter conv1\.bias of shape \(128,\) has no "
                                             r"counterpart"):
        checks.check_dense_layer(lambda i, k, b: DenseLayer(i, k, b, bias=True))


def test_dense_layer_check_fails_on_a_layer_returning_the_concatenation():
    with pytest.raises(AssertionError, match=r"the learner's cat \(the model's forward, DenseLayer\) \(output "
                                             r"\(2, 96, 8, 8\)\) has no counterpart"):
        checks.check_dense_layer(lambda i, k, b: DenseLayer(i, k, b, return_concatenation=True))


# --------------------------------------------------------------------------- the dense block

class DenseBlock(nn.Module):
    """The classic loop, ``x = torch.cat([x, layer(x)], 1)``; each option is one mistake."""

    def __init__(self, num_layers, in_channels, growth_rate, bn_size=4, layer=DenseLayer, new_first=False,
                 chain=False, drop_input=False):
        super().__init__()
        self.layers = nn.ModuleList(
            layer(growth_rate if chain and i else in_channels + i * growth_rate, growth_rate, bn_size)
            for i in range(num_layers))
        self.new_first, self.chain, self.drop_input = new_first, chain, drop_input

    def forward(self, x):  # x: (N, C, H, W)
        new_features, last = [], x
        for layer in self.layers:
            new = layer(last if self.chain else x)  # (N, k, H, W)
            new_features.append(new)
            last = new
            x = torch.cat([new, x] if self.new_first else [x, new], 1)  # (N, C + (i+1)*k, H, W)
        return torch.cat(new_features, 1) if self.drop_input else x


class ListDenseBlock(nn.ModuleDict):
    """torchvision's form: a list of features, each layer concatenating all of them; its names."""

    def __init__(self, num_layers, in_channels, growth_rate, bn_size=4):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)  # (N, C + num_layers*k, H, W)


@pytest.mark.parametrize("block", [
    DenseBlock, ListDenseBlock,
    lambda n, i, k, b: DenseBlock(n, i, k, b, layer=FunctionalDenseLayer),
    lambda n, i, k, b: DenseBlock(n, i, k, b, layer=sequential_dense_layer),
], ids=["classic cat loop", "list of features", "functional layers", "sequential layers"])
def test_dense_block_check_passes_on_correct_blocks_written_differently(block, capsys):
    checks.check_dense_block(block)
    assert "DenseBlock: all 3 cases passed" in capsys.readouterr().out


def test_dense_block_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_dense_block(stub)


def test_dense_block_check_fails_on_the_concatenation_in_the_wrong_order():
    with pytest.raises(AssertionError, match=r"(?s)DenseBlock\(3, 16, .*the reference's cat \(denselayer2.*in another "
                                             r"order"):
        checks.check_dense_block(lambda n, i, k, b: DenseBlock(n, i, k, b, new_first=True))


def test_dense_block_check_fails_on_layers_that_see_only_the_previous_layer():
    with pytest.raises(AssertionError, match=r"DenseBlock\(3, 16, .*denselayer2\.conv1\.weight of shape "
                                             r"\(32, 24, 1, 1\)"):
        checks.check_dense_block(lambda n, i, k, b: DenseBlock(n, i, k, b, chain=True))


def test_dense_block_check_fails_on_a_block_that_drops_its_input():
    with pytest.raises(AssertionError, match=r"DenseBlock\(3, 16, .*the learner's cat .* never reaches the model's "
                                             r"output"):
        checks.check_dense_block(lambda n, i, k, b: DenseBlock(n, i, k, b, drop_input=True))


def test_dense_block_check_fails_on_a_wrong_growth_rate():
    with pytest.raises(AssertionError, match=r"DenseBlock\(3, 16, growth_rate=8, bn_size=4\).*conv1\.weight of shape "
                                             r"\(64, 16, 1, 1\).*\(32, 16, 1, 1\)"):
        checks.check_dense_block(lambda n, i, k, b: DenseBlock(n, i, 2 * k, b))


def test_dense_block_check_fails_on_layers_with_relu_before_batch_norm():
    with pytest.raises(AssertionError, match=r"(?s)DenseBlock\(3, 16, .*batch_norm \(denselayer1\.norm1.*"
                                             r"learner's .*relu"):
        checks.check_dense_block(lambda n, i, k, b: DenseBlock(
            n, i, k, b, layer=lambda c, g, s: DenseLayer(c, g, s, relu_first=True)))


# --------------------------------------------------------------------------- the transition

class Transition(nn.Module):
    """BN-ReLU-1x1 conv-2x2 average pool, functional; each option is one mistake."""

    def __init__(self, in_channels, out_channels, compress=True, pool=F.avg_pool2d, relu_first=False, kernel_size=1):
        super().__init__()
        out_channels = out_channels if compress else in_channels
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.pool, self.relu_first = pool, relu_first

    def forward(self, x):  # x: (N, C, H, W)
        x = self.bn(F.relu(x)) if self.relu_first else F.relu(self.bn(x))
        x = self.conv(x)  # (N, F, H, W)
        return self.pool(x, 2)  # (N, F, H/2, W/2)


def sequential_transition(in_channels, out_channels):
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                         nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                         nn.AvgPool2d(kernel_size=2, stride=2))


@pytest.mark.parametrize("transition", [Transition, sequential_transition], ids=["functional", "nn.Sequential"])
def test_transition_check_passes_on_correct_transitions_written_differently(transition, capsys):
    checks.check_transition(transition)
    assert "Transition: all 3 cases passed" in capsys.readouterr().out


def test_transition_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_transition(stub)


def test_transition_check_fails_without_compression():
    with pytest.raises(AssertionError, match=r"Transition\(256, 128\).*conv\.weight of shape \(256, 256, 1, 1\).*"
                                             r"\(128, 256, 1, 1\)"):
        checks.check_transition(lambda i, o: Transition(i, o, compress=False))


def test_transition_check_fails_on_max_pooling():
    with pytest.raises(AssertionError, match=r"Transition\(256, 128\).*the reference's avg_pool2d .* applies "
                                             r"max_pool2d"):
        checks.check_transition(lambda i, o: Transition(i, o, pool=F.max_pool2d))


def test_transition_check_fails_on_relu_before_batch_norm():
    with pytest.raises(AssertionError, match=r"Transition\(256, 128\).*the reference's batch_norm.*learner's .*relu"):
        checks.check_transition(lambda i, o: Transition(i, o, relu_first=True))


def test_transition_check_fails_on_a_3x3_convolution():
    with pytest.raises(AssertionError, match=r"Transition\(256, 128\).*conv\.weight of shape \(128, 256, 3, 3\).*"
                                             r"\(128, 256, 1, 1\)"):
        checks.check_transition(lambda i, o: Transition(i, o, kernel_size=3))


# --------------------------------------------------------------------------- DenseNet

class DenseNet(nn.Module):
    """DenseNet-BC in torchvision's layout and names, with the list-of-features block; options are mistakes."""

    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4,
                 num_classes=1000, compression=0.5, transition_pool=nn.AvgPool2d, stem_pool=True, final_norm=True,
                 final_relu=True, block=ListDenseBlock):
        super().__init__()
        stem = [("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
                ("norm0", nn.BatchNorm2d(num_init_features)), ("relu0", nn.ReLU(inplace=True))]
        if stem_pool:
            stem.append(("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))
        self.features = nn.Sequential(OrderedDict(stem))
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", block(num_layers, channels, growth_rate, bn_size))
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                out_channels = int(channels * compression)
                self.features.add_module(f"transition{i + 1}", nn.Sequential(OrderedDict([
                    ("norm", nn.BatchNorm2d(channels)), ("relu", nn.ReLU(inplace=True)),
                    ("conv", nn.Conv2d(channels, out_channels, kernel_size=1, bias=False)),
                    ("pool", transition_pool(kernel_size=2, stride=2))])))
                channels = out_channels
        if final_norm:
            self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.final_relu = final_relu
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):  # x: (N, 3, H, W)
        x = self.features(x)  # (N, C, H/32, W/32)
        if self.final_relu:
            x = F.relu(x)
        x = F.adaptive_avg_pool2d(x, 1)  # (N, C, 1, 1)
        x = torch.flatten(x, 1)  # (N, C)
        return self.classifier(x)


class NestedDenseNet(nn.Module):
    """The same network nested otherwise: a stem, stages of (block, transition), the classic cat loop, a mean."""

    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4,
                 num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(num_init_features), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.ModuleList()
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            stage = [DenseBlock(num_layers, channels, growth_rate, bn_size, layer=FunctionalDenseLayer)]
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                stage.append(Transition(channels, channels // 2))
                channels //= 2
            self.stages.append(nn.Sequential(*stage))
        self.head_norm = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = F.relu(self.head_norm(x))
        return self.fc(x.mean((2, 3)))  # (N, C)


@pytest.mark.parametrize("network", [DenseNet, NestedDenseNet], ids=["torchvision layout", "nested otherwise"])
def test_densenet_check_passes_on_correct_networks_written_differently(network, capsys):
    checks.check_densenet121(network)
    output = capsys.readouterr().out
    assert "DenseNet-121: DenseNet(growth_rate=32, block_config=(6, 12, 24, 16)" in output
    assert "DenseNet-121: all 2 cases passed" in output


def test_densenet_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_densenet121(stub)


def test_densenet_check_fails_on_transitions_without_compression():
    with pytest.raises(AssertionError, match=r"DenseNet-121: .*transition1\.conv\.weight.*\(256, 256, 1, 1\), "
                                             r"the reference's \(128, 256, 1, 1\)"):
        checks.check_densenet121(lambda **sizes: DenseNet(**sizes, compression=1.0))


def test_densenet_check_fails_on_max_pooling_in_the_transitions():
    with pytest.raises(AssertionError, match=r"DenseNet-121: .*avg_pool2d \(features\.transition1\.pool.*applies "
                                             r"max_pool2d"):
        checks.check_densenet121(lambda **sizes: DenseNet(**sizes, transition_pool=nn.MaxPool2d))


def test_densenet_check_fails_without_the_stem_max_pool():
    with pytest.raises(AssertionError, match=r"DenseNet-121: .*max_pool2d \(features\.pool0"):
        checks.check_densenet121(lambda **sizes: DenseNet(**sizes, stem_pool=False))


def test_densenet_check_fails_without_the_final_batch_norm():
    with pytest.raises(AssertionError, match=r"DenseNet-121: .*the reference's parameter features\.norm5\.weight .*no "
                                             r"counterpart"):
        checks.check_densenet121(lambda **sizes: DenseNet(**sizes, final_norm=False))


def test_densenet_check_fails_without_the_final_relu():
    with pytest.raises(AssertionError, match=r"DenseNet-121: .*the reference's relu"):
        checks.check_densenet121(lambda **sizes: DenseNet(**sizes, final_relu=False))


def test_densenet_check_fails_on_a_growth_rate_written_in():
    def growth_32(growth_rate, **sizes):
        return DenseNet(growth_rate=32, **sizes)

    with pytest.raises(AssertionError, match=r"a small DenseNet-BC: DenseNet\(growth_rate=12, .*conv1\.weight.*"
                                             r"\(64, 24, 1, 1\), the reference's \(24, 24, 1, 1\)"):
        checks.check_densenet121(growth_32)


def test_densenet_check_fails_on_the_concatenation_in_the_wrong_order():
    def new_first(num_layers, in_channels, growth_rate, bn_size):
        return DenseBlock(num_layers, in_channels, growth_rate, bn_size, new_first=True)

    with pytest.raises(AssertionError, match=r"(?s)DenseNet-121: .*cat \(features\.denseblock1.*in another order"):
        checks.check_densenet121(lambda **sizes: DenseNet(**sizes, block=new_first))


# --------------------------------------------------------------------------- split mode, as under course-grade
# Under ``course-grade`` a check runs in the grader's process on handles of the learner's objects
# (``learner.Loopback`` runs that protocol in this process, every message encoded to bytes): right answers must
# pass there too, and wrong ones fail with the message they get in the learner's notebook.

@pytest.mark.parametrize("check, namespace, summary", [
    (checks.check_dense_layer, {"DenseLayer": FunctionalDenseLayer}, "DenseLayer: all 3 cases passed"),
    (checks.check_dense_block, {"DenseBlock": ListDenseBlock}, "DenseBlock: all 3 cases passed"),
    (checks.check_transition, {"Transition": sequential_transition}, "Transition: all 3 cases passed"),
    (checks.check_densenet121, {"DenseNet": DenseNet}, "DenseNet-121: all 2 cases passed"),
], ids=["DenseLayer", "DenseBlock", "Transition", "DenseNet"])
def test_right_answers_pass_in_split_mode(check, namespace, summary, capsys):
    assert split_verdict(check, namespace) is None
    assert summary in capsys.readouterr().out


@pytest.mark.parametrize("check, namespace, message", [
    (checks.check_dense_layer, {"DenseLayer": stub}, r"DenseLayer is not implemented yet \(DenseLayer\(64, "),
    (checks.check_dense_block, {"DenseBlock": stub}, r"DenseBlock is not implemented yet"),
    (checks.check_transition, {"Transition": stub}, r"Transition is not implemented yet"),
    (checks.check_densenet121, {"DenseNet": stub}, r"DenseNet is not implemented yet"),
    (checks.check_dense_layer, {"DenseLayer": lambda i, k, b: DenseLayer(i, k, b, fixed_growth=32)},
     r"DenseLayer\(24, growth_rate=12, bn_size=2\).*has shape \(64, 24, 1, 1\), the reference's \(24, 24, 1, 1\)"),
    (checks.check_dense_layer, {"DenseLayer": lambda i, k, b: DenseLayer(i, k, b, return_concatenation=True)},
     r"the learner's cat \(the model's forward, DenseLayer\) \(output \(2, 96, 8, 8\)\) has no counterpart"),
    (checks.check_dense_block, {"DenseBlock": lambda n, i, k, b: DenseBlock(n, i, k, b, new_first=True)},
     r"DenseBlock\(3, 16, .*the reference's cat \(denselayer2.*in another order"),
    (checks.check_dense_block, {"DenseBlock": lambda n, i, k, b: DenseBlock(n, i, k, b, drop_input=True)},
     r"DenseBlock\(3, 16, .*the learner's cat .* never reaches the model's output"),
    (checks.check_transition, {"Transition": lambda i, o: Transition(i, o, pool=F.max_pool2d)},
     r"Transition\(256, 128\).*the reference's avg_pool2d .* applies max_pool2d"),
    (checks.check_densenet121, {"DenseNet": lambda **sizes: DenseNet(**sizes, final_norm=False)},
     r"DenseNet-121: .*the reference's parameter features\.norm5\.weight .*no counterpart"),
], ids=["DenseLayer stub", "DenseBlock stub", "Transition stub", "DenseNet stub", "growth rate written in",
        "layer returning the concatenation", "concatenation order", "input dropped", "max pooling",
        "no final batch norm"])
def test_wrong_answers_fail_with_the_same_message_in_split_mode(check, namespace, message):
    assert_same_failure(check, namespace, message)
