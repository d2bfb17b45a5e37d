"""The chapter 07 checks pass on correct VGG and GoogLeNet models and fail on the usual mistakes.

The correct models are written out here in plain PyTorch (from the papers' tables and torchvision's layout),
independently of the check's references; each wrong model changes one thing.
"""

import pytest
import torch
from torch import nn

from course_utils.checks import vgg_nin_googlenet as checks
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


# --------------------------------------------------------------------------- VGG

def vgg_block(num_convs, in_channels, out_channels, relu=True, pool_each_conv=False, pool_first=False):
    layers = [nn.MaxPool2d(2, 2)] if pool_first else []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if relu:
            layers.append(nn.ReLU())
        if pool_each_conv:
            layers.append(nn.MaxPool2d(2, 2))
        in_channels = out_channels
    if not (pool_each_conv or pool_first):
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, conv_arch, num_classes=1000, dropout=0.5, pool=True):
        super().__init__()
        blocks, in_channels = [], 3
        for num_convs, out_channels in conv_arch:
            block = vgg_block(num_convs, in_channels, out_channels)
            blocks.append(block if pool else block[:-1])
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)  # (N, 512*7*7)
        return self.classifier(x)


def test_vgg_block_check_passes_on_a_correct_block(capsys):
    checks.check_vgg_block(vgg_block)
    assert "vgg_block: all 4 cases passed" in capsys.readouterr().out


def test_vgg_block_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_vgg_block(stub)


def test_vgg_block_check_fails_without_relu():
    with pytest.raises(AssertionError, match=r"(?s)vgg_block\(1, 3, 8\).*relu"):
        checks.check_vgg_block(lambda n, i, o: vgg_block(n, i, o, relu=False))


def test_vgg_block_check_fails_on_a_pool_after_every_conv():
    with pytest.raises(AssertionError, match=r"(?s)vgg_block\(2, 8, 16\).*max_pool2d"):
        checks.check_vgg_block(lambda n, i, o: vgg_block(n, i, o, pool_each_conv=True))


def test_vgg_block_check_fails_on_a_pool_before_the_convs():
    with pytest.raises(AssertionError, match=r"(?s)vgg_block\(1, 3, 8\).*max_pool2d"):
        checks.check_vgg_block(lambda n, i, o: vgg_block(n, i, o, pool_first=True))


def test_vgg_block_check_fails_on_a_missing_padding():
    def unpadded(num_convs, in_channels, out_channels):
        block = vgg_block(num_convs, in_channels, out_channels)
        for layer in block:
            if isinstance(layer, nn.Conv2d):
                layer.padding = (0, 0)
        return block

    with pytest.raises(AssertionError, match=r"(?s)vgg_block\(1, 3, 8\).*conv2d \(0, Conv2d\) with padding=\(0, 0\), "
                                             r"the reference's has padding=\(1, 1\)"):
        checks.check_vgg_block(unpadded)


def test_vgg16_check_passes_on_a_correct_vgg(capsys):
    checks.check_vgg16(VGG)
    assert "VGG-16: all 1 cases passed" in capsys.readouterr().out


def test_vgg16_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_vgg16(stub)


def test_vgg16_check_fails_without_the_pool_between_stages():
    with pytest.raises(AssertionError, match=r"(?s)VGG-16.*max_pool2d"):
        checks.check_vgg16(lambda arch, n: VGG(arch, n, pool=False))


class VGGNoDropout(VGG):
    def __init__(self, conv_arch, num_classes=1000):
        super().__init__(conv_arch, num_classes)
        self.classifier = nn.Sequential(*[m for m in self.classifier if not isinstance(m, nn.Dropout)])


def test_vgg16_check_fails_without_dropout():
    with pytest.raises(AssertionError, match=r"(?s)VGG-16.*dropout \(classifier\.2"):
        checks.check_vgg16(VGGNoDropout)


# --------------------------------------------------------------------------- GoogLeNet

class BasicConv2d(nn.Module):
    """conv (no bias) + batch norm (eps 0.001) + ReLU, as torchvision's GoogLeNet."""

    def __init__(self, in_channels, out_channels, batch_norm=True, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=not batch_norm, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001) if batch_norm else nn.Identity()

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj,
                 five=3, order=(0, 1, 2, 3), batch_norm=True):
        super().__init__()
        conv = lambda i, o, **kw: BasicConv2d(i, o, batch_norm=batch_norm, **kw)  # noqa: E731
        self.branch1 = conv(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(conv(in_channels, ch3x3red, kernel_size=1),
                                     conv(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(conv(in_channels, ch5x5red, kernel_size=1),
                                     conv(ch5x5red, ch5x5, kernel_size=five, padding=five // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     conv(in_channels, pool_proj, kernel_size=1))
        self.order = order

    def forward(self, x):
        outputs = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat([outputs[i] for i in self.order], dim=1)  # (N, ch1x1+ch3x3+ch5x5+pool_proj, H, W)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes=1000, pool3=True, **inception_options):
        super().__init__()
        block = lambda *channels: Inception(*channels, **inception_options)  # noqa: E731
        batch_norm = inception_options.get("batch_norm", True)
        self.conv1 = BasicConv2d(3, 64, batch_norm=batch_norm, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, batch_norm=batch_norm, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, batch_norm=batch_norm, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = block(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = block(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True) if pool3 else nn.Identity()
        self.inception4a = block(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = block(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = block(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = block(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = block(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = block(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = block(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4c(self.inception4b(self.inception4a(x)))
        x = self.maxpool4(self.inception4e(self.inception4d(x)))
        x = self.inception5b(self.inception5a(x))
        x = torch.flatten(self.avgpool(x), 1)  # (N, 1024)
        return self.fc(self.dropout(x))


def test_inception_check_passes_on_a_correct_block(capsys):
    checks.check_inception(Inception)
    assert "Inception: all 2 cases passed" in capsys.readouterr().out


def test_inception_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_inception(stub)


def test_inception_check_fails_on_a_5x5_convolution():
    with pytest.raises(AssertionError, match=r"parameter branch3.1.conv.weight \(paired by name\): the learner's has "
                                             r"shape \(32, 16, 5, 5\), the reference's \(32, 16, 3, 3\)"):
        checks.check_inception(lambda *c: Inception(*c, five=5))


def test_inception_check_fails_without_batch_norm():
    with pytest.raises(AssertionError, match=r"(?s)Inception\(192.*the reference's parameter branch1\.bn\.(weight|bias) .*has no "
                                             r"counterpart"):
        checks.check_inception(lambda *c: Inception(*c, batch_norm=False))


def test_inception_check_fails_on_a_wrong_concatenation_order():
    with pytest.raises(AssertionError, match=r"(?s)Inception\(192, 64, 96, 128, 16, 32, 32\).*cat"):
        checks.check_inception(lambda *c: Inception(*c, order=(1, 0, 2, 3)))


def test_googlenet_check_passes_on_a_correct_network(capsys):
    checks.check_googlenet(GoogLeNet)
    assert "GoogLeNet: all 1 cases passed" in capsys.readouterr().out


def test_googlenet_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_googlenet(stub)


def test_googlenet_check_fails_without_the_max_pool_between_stages():
    with pytest.raises(AssertionError, match=r"(?s)GoogLeNet.*max_pool2d \(maxpool3"):
        checks.check_googlenet(lambda n: GoogLeNet(n, pool3=False))


def test_googlenet_check_fails_without_batch_norm_in_the_conv():
    with pytest.raises(AssertionError, match=r"(?s)GoogLeNet.*the reference's parameter \S+\.bn\.(weight|bias) .*has no counterpart"):
        checks.check_googlenet(lambda n: GoogLeNet(n, batch_norm=False))


def test_googlenet_check_fails_on_5x5_convolutions():
    with pytest.raises(AssertionError, match=r"shape \(32, 16, 5, 5\).*\(32, 16, 3, 3\)"):
        checks.check_googlenet(lambda n: GoogLeNet(n, five=5))


def test_googlenet_check_fails_on_a_wrong_concatenation_order():
    with pytest.raises(AssertionError, match=r"(?s)GoogLeNet.*cat \(inception3a"):
        checks.check_googlenet(lambda n: GoogLeNet(n, order=(0, 2, 1, 3)))


# --------------------------------------------------------------------------- split mode, as under course-grade
# Under ``course-grade`` a check runs in the grader's process on handles of the learner's objects
# (``learner.Loopback`` runs that protocol in this process, every message encoded to bytes): right answers must
# pass there too, and wrong ones fail with the message they get in the learner's notebook.

@pytest.mark.parametrize("check, namespace, summary", [
    (checks.check_vgg_block, {"vgg_block": vgg_block}, "vgg_block: all 4 cases passed"),
    (checks.check_inception, {"Inception": Inception}, "Inception: all 2 cases passed"),
    (checks.check_googlenet, {"GoogLeNet": GoogLeNet}, "GoogLeNet: all 1 cases passed"),
], ids=["vgg_block", "Inception", "GoogLeNet"])
def test_right_answers_pass_in_split_mode(check, namespace, summary, capsys):
    assert split_verdict(check, namespace) is None
    assert summary in capsys.readouterr().out


@pytest.mark.parametrize("check, namespace, message", [
    (checks.check_vgg_block, {"vgg_block": stub}, r"vgg_block is not implemented yet"),
    (checks.check_vgg16, {"VGG": stub}, r"VGG is not implemented yet"),
    (checks.check_inception, {"Inception": stub}, r"Inception is not implemented yet"),
    (checks.check_googlenet, {"GoogLeNet": stub}, r"GoogLeNet is not implemented yet"),
    (checks.check_vgg_block, {"vgg_block": lambda n, i, o: list(vgg_block(n, i, o))},
     r"vgg_block\(1, 3, 8\) on a 16x16 input: vgg_block should return an nn.Module; got list"),
    (checks.check_vgg16, {"VGG": lambda arch, n: VGG}, r"VGG should return an nn.Module; got type"),
    (checks.check_vgg_block, {"vgg_block": lambda n, i, o: vgg_block(n, i, o, relu=False)},
     r"vgg_block\(1, 3, 8\).*relu"),
    (checks.check_vgg_block, {"vgg_block": lambda n, i, o: vgg_block(n, i, o, pool_first=True)},
     r"vgg_block\(1, 3, 8\).*max_pool2d"),
    (checks.check_inception, {"Inception": lambda *c: Inception(*c, five=5)},
     r"parameter branch3.1.conv.weight \(paired by name\): the learner's has shape \(32, 16, 5, 5\)"),
    (checks.check_inception, {"Inception": lambda *c: Inception(*c, order=(1, 0, 2, 3))},
     r"Inception\(192, 64, 96, 128, 16, 32, 32\).*cat"),
    (checks.check_googlenet, {"GoogLeNet": lambda n: GoogLeNet(n, pool3=False)}, r"GoogLeNet.*max_pool2d \(maxpool3"),
], ids=["vgg_block stub", "VGG stub", "Inception stub", "GoogLeNet stub", "a list of layers", "a class returned",
        "no ReLU", "pool before the convolutions", "5x5 convolution", "concatenation order",
        "GoogLeNet without a pool"])
def test_wrong_answers_fail_with_the_same_message_in_split_mode(check, namespace, message):
    assert_same_failure(check, namespace, message)
