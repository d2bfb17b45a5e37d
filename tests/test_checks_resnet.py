"""The chapter 08 checks pass on correct residual blocks and ResNets and fail on the usual mistakes.

The correct blocks and networks are written out here in plain PyTorch, from He et al. (2016, Figures 2 and 5, Table
1) and torchvision's layout, independently of the check's references; each wrong one changes one thing. Right
answers come in several styles: torchvision's names, other names and nesting, a shortcut registered and computed
before the main path, and a block written with ``torch.nn.functional`` on parameters of its own.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.checks import resnet as checks
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


def conv(in_channels, out_channels, kernel_size, stride=1, bias=False):
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)


# --------------------------------------------------------------------------- BasicBlock

class BasicBlock(nn.Module):
    """torchvision's names; each option below is one plausible mistake."""

    expansion = 1

    def __init__(self, in_channels, planes, stride=1, relu_before_add=False, shortcut_bn=True, projection=True,
                 reuse_bn=False, stride_on_second=False, bias=False):
        super().__init__()
        self.conv1 = conv(in_channels, planes, 3, 1 if stride_on_second else stride, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, stride if stride_on_second else 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self.reuse_bn, self.relu_before_add = reuse_bn, relu_before_add
        self.downsample = None
        if projection and (stride != 1 or in_channels != planes):
            layers = [conv(in_channels, planes, 1, stride)] + ([nn.BatchNorm2d(planes)] if shortcut_bn else [])
            self.downsample = nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = (self.bn1 if self.reuse_bn else self.bn2)(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        if self.relu_before_add:
            return F.relu(out) + identity
        return F.relu(out + identity)


class ShortcutFirstBlock(nn.Module):
    """Other names and nesting: the shortcut registered and computed before the residual branch."""

    expansion = 1

    def __init__(self, in_channels, planes, stride=1):
        super().__init__()
        if stride != 1 or in_channels != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        else:
            self.shortcut = nn.Identity()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        shortcut = self.shortcut(x)
        return self.act(self.residual(x) + shortcut)


class FunctionalBlock(nn.Module):
    """The same block as F.conv2d / F.batch_norm calls on parameters and buffers of its own."""

    expansion = 1

    def __init__(self, in_channels, planes, stride=1):
        super().__init__()
        self.stride = stride
        self.project = stride != 1 or in_channels != planes
        self.w1 = nn.Parameter(torch.randn(planes, in_channels, 3, 3) * 0.1)
        self.w2 = nn.Parameter(torch.randn(planes, planes, 3, 3) * 0.1)
        if self.project:
            self.w_short = nn.Parameter(torch.randn(planes, in_channels, 1, 1) * 0.1)
        for norm in ("n1", "n2") + (("n_short",) if self.project else ()):
            self.register_parameter(f"{norm}_gamma", nn.Parameter(torch.ones(planes)))
            self.register_parameter(f"{norm}_beta", nn.Parameter(torch.zeros(planes)))
            self.register_buffer(f"{norm}_mean", torch.zeros(planes))
            self.register_buffer(f"{norm}_var", torch.ones(planes))
            # the batch counter nn.BatchNorm2d keeps too; the check pairs every buffer of the reference
            self.register_buffer(f"{norm}_batches", torch.tensor(0))

    def norm(self, x, name):
        return F.batch_norm(x, getattr(self, f"{name}_mean"), getattr(self, f"{name}_var"),
                            getattr(self, f"{name}_gamma"), getattr(self, f"{name}_beta"), training=self.training)

    def forward(self, x):
        out = F.relu(self.norm(F.conv2d(x, self.w1, stride=self.stride, padding=1), "n1"))
        out = self.norm(F.conv2d(out, self.w2, padding=1), "n2")
        if self.project:
            x = self.norm(F.conv2d(x, self.w_short, stride=self.stride), "n_short")
        return F.relu(out + x)


def test_basic_block_check_passes_on_a_correct_block(capsys):
    checks.check_basic_block(BasicBlock)
    assert "BasicBlock: all 5 cases passed" in capsys.readouterr().out


def test_basic_block_check_passes_with_the_shortcut_registered_and_computed_first(capsys):
    checks.check_basic_block(ShortcutFirstBlock)
    assert "BasicBlock: all 5 cases passed" in capsys.readouterr().out


def test_basic_block_check_passes_on_a_functional_block(capsys):
    checks.check_basic_block(FunctionalBlock)
    assert "BasicBlock: all 5 cases passed" in capsys.readouterr().out


def test_basic_block_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_basic_block(stub)


def test_basic_block_check_fails_on_a_relu_before_the_add():
    with pytest.raises(AssertionError, match=r"(?s)BasicBlock\(8, 8, stride=1\).*add"):
        checks.check_basic_block(lambda *a: BasicBlock(*a, relu_before_add=True))


def test_basic_block_check_fails_on_a_shortcut_without_batch_norm():
    with pytest.raises(AssertionError, match=r"BasicBlock\(8, 16, stride=1\).*the reference's parameter "
                                             r"downsample\.1\.weight of shape \(16,\) has no counterpart"):
        checks.check_basic_block(lambda *a: BasicBlock(*a, shortcut_bn=False))


def test_basic_block_check_fails_on_a_missing_projection():
    with pytest.raises(AssertionError, match=r"BasicBlock\(8, 16, stride=1\).*downsample\.0\.weight of shape "
                                             r"\(16, 8, 1, 1\) has no counterpart"):
        checks.check_basic_block(lambda *a: BasicBlock(*a, projection=False))


def test_basic_block_check_fails_on_a_batch_norm_used_twice():
    with pytest.raises(AssertionError, match=r"BasicBlock\(8, 8, stride=1\).*parameter bn2\.weight .* is never used"):
        checks.check_basic_block(lambda *a: BasicBlock(*a, reuse_bn=True))


def test_basic_block_check_fails_on_the_stride_on_the_second_convolution():
    with pytest.raises(AssertionError, match=r"BasicBlock\(8, 8, stride=2\).*conv2d .*stride=\(1, 1\), the "
                                             r"reference's has stride=\(2, 2\)"):
        checks.check_basic_block(lambda *a: BasicBlock(*a, stride_on_second=True))


def test_basic_block_check_fails_on_convolutions_with_a_bias():
    with pytest.raises(AssertionError, match=r"BasicBlock\(8, 8, stride=1\).*learner's parameter conv1\.bias .*has no "
                                             r"counterpart"):
        checks.check_basic_block(lambda *a: BasicBlock(*a, bias=True))


# --------------------------------------------------------------------------- Bottleneck

class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, planes, stride=1, stride_on_first=False, expansion=4, relu_before_add=False,
                 shortcut_bn=True):
        super().__init__()
        out_channels = planes * expansion
        self.conv1 = conv(in_channels, planes, 1, stride if stride_on_first else 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, 1 if stride_on_first else stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv(planes, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu_before_add = relu_before_add
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            layers = [conv(in_channels, out_channels, 1, stride)]
            layers += [nn.BatchNorm2d(out_channels)] if shortcut_bn else []
            self.downsample = nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        if self.relu_before_add:
            return F.relu(out) + identity
        return F.relu(out + identity)


class ShortcutFirstBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, planes, stride=1):
        super().__init__()
        out_channels = 4 * planes
        self.skip = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                      nn.BatchNorm2d(out_channels))
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU())
        self.spatial = nn.Sequential(nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
                                     nn.ReLU())
        self.restore = nn.Sequential(nn.Conv2d(planes, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x):
        skip = self.skip(x)
        return torch.relu(self.restore(self.spatial(self.reduce(x))) + skip)


def test_bottleneck_check_passes_on_a_correct_block(capsys):
    checks.check_bottleneck(Bottleneck)
    assert "Bottleneck: all 5 cases passed" in capsys.readouterr().out


def test_bottleneck_check_passes_with_other_names_and_the_shortcut_first(capsys):
    checks.check_bottleneck(ShortcutFirstBottleneck)
    assert "Bottleneck: all 5 cases passed" in capsys.readouterr().out


def test_bottleneck_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_bottleneck(stub)


def test_bottleneck_check_fails_on_the_stride_on_the_first_1x1():
    with pytest.raises(AssertionError, match=r"Bottleneck\(16, 8, stride=2\).*conv2d \(conv1, Conv2d\) with "
                                             r"stride=\(2, 2\), the reference's has stride=\(1, 1\)"):
        checks.check_bottleneck(lambda *a: Bottleneck(*a, stride_on_first=True))


def test_bottleneck_check_fails_without_the_expansion():
    with pytest.raises(AssertionError, match=r"Bottleneck\(16, 4, stride=1\).*conv3\.weight of shape "
                                             r"\(16, 4, 1, 1\)"):
        checks.check_bottleneck(lambda *a: Bottleneck(*a, expansion=1))


def test_bottleneck_check_fails_on_a_relu_before_the_add():
    with pytest.raises(AssertionError, match=r"(?s)Bottleneck\(16, 4, stride=1\).*add"):
        checks.check_bottleneck(lambda *a: Bottleneck(*a, relu_before_add=True))


def test_bottleneck_check_fails_on_a_shortcut_without_batch_norm():
    with pytest.raises(AssertionError, match=r"Bottleneck\(8, 4, stride=1\).*downsample\.1\.weight of shape \(16,\) "
                                             r"has no counterpart"):
        checks.check_bottleneck(lambda *a: Bottleneck(*a, shortcut_bn=False))


# --------------------------------------------------------------------------- ResNet

class ResNet(nn.Module):
    """torchvision's layout; ``stem`` and ``stage_strides`` give the plausible mistakes."""

    def __init__(self, block, layers, num_classes=1000, stem="imagenet", stage_strides=(1, 2, 2, 2),
                 use_expansion=True):
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        elif stem == "no max pool":
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.Identity()
        else:  # CIFAR's
            self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        expansion = block.expansion if use_expansion else 1
        stages, in_channels = [], 64
        for planes, count, stride in zip((64, 128, 256, 512), layers, stage_strides):
            blocks = [block(in_channels, planes, stride)]
            in_channels = planes * block.expansion
            blocks += [block(in_channels, planes) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)  # other nesting than torchvision's layer1..layer4
        self.fc = nn.Linear(512 * expansion, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        x = x.mean(dim=(2, 3))  # (N, C): global average pooling written out
        return self.fc(x)


def test_resnet18_check_passes_on_a_correct_network(capsys):
    checks.check_resnet18(ResNet, BasicBlock)
    assert "ResNet-18: all 1 cases passed" in capsys.readouterr().out


def test_resnet18_check_passes_with_shortcut_first_blocks(capsys):
    checks.check_resnet18(ResNet, ShortcutFirstBlock)
    assert "ResNet-18: all 1 cases passed" in capsys.readouterr().out


def test_resnet18_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_resnet18(stub, BasicBlock)


def test_resnet18_check_fails_without_the_max_pool():
    with pytest.raises(AssertionError, match=r"ResNet-18.*max_pool2d"):
        checks.check_resnet18(lambda *a, **k: ResNet(*a, **k, stem="no max pool"), BasicBlock)


def test_resnet18_check_fails_on_a_cifar_stem():
    with pytest.raises(AssertionError, match=r"ResNet-18.*conv1\.weight of shape \(64, 3, 7, 7\)"):
        checks.check_resnet18(lambda *a, **k: ResNet(*a, **k, stem="cifar"), BasicBlock)


def test_resnet18_check_fails_on_a_stage_without_its_stride():
    with pytest.raises(AssertionError, match=r"ResNet-18.*stride"):
        checks.check_resnet18(lambda *a, **k: ResNet(*a, **k, stage_strides=(1, 1, 2, 2)), BasicBlock)


class ReluBeforeAddBlock(BasicBlock):
    def __init__(self, in_channels, planes, stride=1):
        super().__init__(in_channels, planes, stride, relu_before_add=True)


def test_resnet18_check_fails_on_a_wrong_block():
    with pytest.raises(AssertionError, match=r"ResNet-18.*add \(layer1\.0"):
        checks.check_resnet18(ResNet, ReluBeforeAddBlock)


def test_resnet50_check_passes_on_a_correct_network(capsys):
    checks.check_resnet50(ResNet, Bottleneck)
    assert "ResNet-50: all 1 cases passed" in capsys.readouterr().out


def test_resnet50_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_resnet50(stub, Bottleneck)


def test_resnet50_check_fails_on_a_classifier_without_the_expansion():
    with pytest.raises(AssertionError, match=r"ResNet-50.*fc\.weight of shape \(10, 2048\)"):
        checks.check_resnet50(lambda *a, **k: ResNet(*a, **k, use_expansion=False), Bottleneck)


# --------------------------------------------------------------------------- the plain-or-residual switch

class Block(nn.Module):
    """A BasicBlock when ``residual``, else the same layers without a shortcut; options are mistakes."""

    def __init__(self, in_channels, out_channels, stride=1, residual=True, ignore_switch=None, plain_projection=False,
                 plain_last_relu=True):
        super().__init__()
        if ignore_switch is not None:
            residual = ignore_switch
        self.residual, self.plain_last_relu = residual, plain_last_relu
        self.conv1 = conv(in_channels, out_channels, 3, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if (residual or plain_projection) and (stride != 1 or in_channels != out_channels):
            self.shortcut = nn.Sequential(conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu(out) if (self.residual or self.plain_last_relu) else out


def test_switch_check_passes_on_a_correct_block(capsys):
    checks.check_plain_residual_switch(Block)
    assert "Block (plain or residual): all 6 cases passed" in capsys.readouterr().out


def test_switch_check_passes_on_blocks_of_other_classes(capsys):
    def block(in_channels, out_channels, stride=1, residual=True):
        if residual:
            return ShortcutFirstBlock(in_channels, out_channels, stride)
        return nn.Sequential(conv(in_channels, out_channels, 3, stride), nn.BatchNorm2d(out_channels), nn.ReLU(),
                             conv(out_channels, out_channels, 3), nn.BatchNorm2d(out_channels), nn.ReLU())

    checks.check_plain_residual_switch(block)
    assert "Block (plain or residual): all 6 cases passed" in capsys.readouterr().out


def test_switch_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_plain_residual_switch(stub)


def test_switch_check_fails_on_a_block_that_is_always_residual():
    with pytest.raises(AssertionError, match=r"Block\(8, 8, stride=1, residual=False\).*the plain block adds two "
                                             r"tensors computed from its input"):
        checks.check_plain_residual_switch(lambda *a, **k: Block(*a, **k, ignore_switch=True))


def test_switch_check_fails_on_a_block_that_is_always_plain():
    with pytest.raises(AssertionError, match=r"Block\(8, 8, stride=1, residual=True\).*add"):
        checks.check_plain_residual_switch(lambda *a, **k: Block(*a, **k, ignore_switch=False))


def test_switch_check_fails_on_a_plain_block_that_keeps_its_projection():
    with pytest.raises(AssertionError, match=r"Block\(8, 16, stride=2, residual=False\).*learner's parameter "
                                             r"shortcut\.0\.weight .*has no counterpart"):
        checks.check_plain_residual_switch(lambda *a, **k: Block(*a, **k, plain_projection=True))


def test_switch_check_fails_on_a_plain_block_without_its_last_relu():
    with pytest.raises(AssertionError, match=r"Block\(8, 8, stride=1, residual=False\).*relu"):
        checks.check_plain_residual_switch(lambda *a, **k: Block(*a, **k, plain_last_relu=False))


# --------------------------------------------------------------------------- split mode, as under course-grade
# Under ``course-grade`` a check runs in the grader's process on handles of the learner's objects
# (``learner.Loopback`` runs that protocol in this process, every message encoded to bytes): right answers must
# pass there too, and wrong ones fail with the message they get in the learner's notebook.

@pytest.mark.parametrize("check, namespace, summary", [
    (checks.check_basic_block, {"BasicBlock": BasicBlock}, "BasicBlock: all 5 cases passed"),
    (checks.check_basic_block, {"BasicBlock": FunctionalBlock}, "BasicBlock: all 5 cases passed"),
    (checks.check_bottleneck, {"Bottleneck": ShortcutFirstBottleneck}, "Bottleneck: all 5 cases passed"),
    (checks.check_resnet18, {"ResNet": ResNet, "BasicBlock": ShortcutFirstBlock}, "ResNet-18: all 1 cases passed"),
    (checks.check_plain_residual_switch, {"Block": Block}, "Block (plain or residual): all 6 cases passed"),
], ids=["BasicBlock", "functional BasicBlock", "Bottleneck", "ResNet-18 with the learner's block", "switch"])
def test_right_answers_pass_in_split_mode(check, namespace, summary, capsys):
    assert split_verdict(check, namespace) is None
    assert summary in capsys.readouterr().out


@pytest.mark.parametrize("check, namespace, message", [
    (checks.check_basic_block, {"BasicBlock": stub}, r"BasicBlock is not implemented yet"),
    (checks.check_bottleneck, {"Bottleneck": stub}, r"Bottleneck is not implemented yet"),
    (checks.check_resnet18, {"ResNet": stub, "BasicBlock": BasicBlock}, r"ResNet is not implemented yet"),
    (checks.check_resnet50, {"ResNet": stub, "Bottleneck": Bottleneck}, r"ResNet is not implemented yet"),
    (checks.check_plain_residual_switch, {"Block": stub}, r"Block is not implemented yet"),
    (checks.check_basic_block, {"BasicBlock": lambda *a: BasicBlock(*a, shortcut_bn=False)},
     r"BasicBlock\(8, 16, stride=1\).*downsample\.1\.weight of shape \(16,\) has no counterpart"),
    (checks.check_basic_block, {"BasicBlock": lambda *a: BasicBlock(*a, reuse_bn=True)},
     r"BasicBlock\(8, 8, stride=1\).*parameter bn2\.weight .* is never used"),
    (checks.check_bottleneck, {"Bottleneck": lambda *a: Bottleneck(*a, stride_on_first=True)},
     r"Bottleneck\(16, 8, stride=2\).*stride=\(2, 2\), the reference's has stride=\(1, 1\)"),
    (checks.check_resnet18, {"ResNet": ResNet, "BasicBlock": ReluBeforeAddBlock}, r"ResNet-18.*add \(layer1\.0"),
    (checks.check_plain_residual_switch, {"Block": lambda *a, **k: Block(*a, **k, ignore_switch=True)},
     r"Block\(8, 8, stride=1, residual=False\).*the plain block adds two tensors computed from its input"),
    (checks.check_plain_residual_switch, {"Block": lambda *a, **k: Block(*a, **k, plain_projection=True)},
     r"Block\(8, 16, stride=2, residual=False\).*learner's parameter shortcut\.0\.weight .*has no counterpart"),
], ids=["BasicBlock stub", "Bottleneck stub", "ResNet-18 stub", "ResNet-50 stub", "switch stub",
        "shortcut without batch norm", "batch norm used twice", "stride on the first 1x1", "ResNet-18's wrong block",
        "plain block always residual", "plain block keeps its projection"])
def test_wrong_answers_fail_with_the_same_message_in_split_mode(check, namespace, message):
    assert_same_failure(check, namespace, message)
