"""The chapter 10 checks pass on correct efficient-CNN blocks and fail on the usual mistakes.

The correct blocks are written here in plain PyTorch from the papers (MobileNetV1 Fig. 3, MobileNetV2 Table 1,
MobileNetV3 section 5.2, squeeze-and-excitation Fig. 1, ShuffleNet Fig. 1c, EfficientNet's MBConv with
stochastic depth), independently of the check's references (torchvision's blocks, F.hardswish); some are written
differently on purpose (functions instead of modules, linear layers instead of 1x1 convolutions, indexing instead of
a reshape). Each wrong block changes one thing.
"""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from course_utils.checks import efficient_cnns as checks
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


@pytest.mark.parametrize("check", [checks.check_depthwise_separable, checks.check_inverted_residual,
                                   checks.check_hard_swish, checks.check_squeeze_excitation,
                                   checks.check_channel_shuffle, checks.check_mbconv], ids=lambda check: check.__name__)
def test_every_check_fails_on_the_stub_of_the_unsolved_exercise(check):
    with pytest.raises(AssertionError, match="not implemented yet"):
        check(stub)


def conv_bn(in_channels, out_channels, kernel_size=1, stride=1, groups=1, activation=None):
    """A bias-free convolution ('same' padding), batch norm and an optional activation module."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                        bias=False), nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, *([activation] if activation is not None else []))


# --------------------------------------------------------------------------- depthwise separable

class DepthwiseSeparable(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1, groups=None, pointwise_first=False,
                 stride_on_pointwise=False, activation=F.relu, bn_after_depthwise=True):
        super().__init__()
        groups = in_channels if groups is None else groups
        depthwise_stride, pointwise_stride = (1, stride) if stride_on_pointwise else (stride, 1)
        if pointwise_first:
            self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
            self.depthwise = nn.Conv2d(out_channels, out_channels, 3, stride, 1, groups=out_channels, bias=False)
            self.bn1, self.bn2 = nn.BatchNorm2d(out_channels), nn.BatchNorm2d(out_channels)
        else:
            self.depthwise = nn.Conv2d(in_channels, in_channels, 3, depthwise_stride, 1, groups=groups, bias=False)
            self.pointwise = nn.Conv2d(in_channels, out_channels, 1, pointwise_stride, bias=False)
            self.bn1 = nn.BatchNorm2d(in_channels) if bn_after_depthwise else nn.Identity()
            self.bn2 = nn.BatchNorm2d(out_channels)
        self.pointwise_first, self.activation = pointwise_first, activation

    def forward(self, x):
        if self.pointwise_first:
            x = self.activation(self.bn1(self.pointwise(x)))
            return self.activation(self.bn2(self.depthwise(x)))
        x = self.activation(self.bn1(self.depthwise(x)))
        return self.activation(self.bn2(self.pointwise(x)))


def test_depthwise_separable_check_passes_on_a_correct_block(capsys):
    checks.check_depthwise_separable(DepthwiseSeparable)
    assert "DepthwiseSeparable: all 4 cases passed" in capsys.readouterr().out


def test_depthwise_separable_check_passes_on_a_sequential_with_relu_modules(capsys):
    def sequential(in_channels, out_channels, stride=1):
        return nn.Sequential(conv_bn(in_channels, in_channels, 3, stride, in_channels, nn.ReLU()),
                             conv_bn(in_channels, out_channels, activation=nn.ReLU()))

    checks.check_depthwise_separable(sequential)
    assert "DepthwiseSeparable: all 4 cases passed" in capsys.readouterr().out



def test_depthwise_separable_check_fails_on_a_standard_convolution():
    with pytest.raises(AssertionError, match=r"DepthwiseSeparable\(8, 16, stride=1\).*shape \(8, 8, 3, 3\) is used "
                                             r"where the reference uses .* \(8, 1, 3, 3\)"):
        checks.check_depthwise_separable(lambda i, o, s=1: DepthwiseSeparable(i, o, s, groups=1))


def test_depthwise_separable_check_fails_with_the_pointwise_convolution_first():
    with pytest.raises(AssertionError, match=r"DepthwiseSeparable\(8, 16, stride=1\).*the reference's parameter "
                                             r"0\.weight of shape \(8, 1, 3, 3\) has no counterpart"):
        checks.check_depthwise_separable(lambda i, o, s=1: DepthwiseSeparable(i, o, s, pointwise_first=True))


def test_depthwise_separable_check_fails_with_the_stride_on_the_pointwise_convolution():
    with pytest.raises(AssertionError, match=r"DepthwiseSeparable\(32, 64, stride=2\).*applies conv2d \(depthwise, "
                                             r"Conv2d\) with stride=\(1, 1\), the reference's has stride=\(2, 2\)"):
        checks.check_depthwise_separable(lambda i, o, s=1: DepthwiseSeparable(i, o, s, stride_on_pointwise=True))


def test_depthwise_separable_check_fails_with_relu6():
    with pytest.raises(AssertionError, match=r"(?s)DepthwiseSeparable\(8, 16, stride=1\).*clipped to \[0, inf\]"):
        checks.check_depthwise_separable(lambda i, o, s=1: DepthwiseSeparable(i, o, s, activation=F.relu6))


def test_depthwise_separable_check_fails_without_batch_norm_after_the_depthwise_convolution():
    with pytest.raises(AssertionError, match=r"DepthwiseSeparable\(8, 16, stride=1\).*the reference's parameter "
                                             r"1\.weight of shape \(8,\) has no counterpart"):
        checks.check_depthwise_separable(lambda i, o, s=1: DepthwiseSeparable(i, o, s, bn_after_depthwise=False))


# --------------------------------------------------------------------------- inverted residual

class InvertedResidual(nn.Module):
    def __init__(self, in_channels, out_channels, stride, expand_ratio, project_activation=None, residual="right",
                 activation=nn.ReLU6, always_expand=False):
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        layers = []
        if expand_ratio != 1 or always_expand:
            layers.append(conv_bn(in_channels, hidden, activation=activation(inplace=True)))
        layers.append(conv_bn(hidden, hidden, 3, stride, groups=hidden, activation=activation(inplace=True)))
        layers.append(conv_bn(hidden, out_channels, activation=project_activation))
        self.layers = nn.Sequential(*layers)
        shape_kept = stride == 1 and in_channels == out_channels
        self.use_residual = {"right": shape_kept, "never": False,
                             "same channels": in_channels == out_channels}[residual]

    def forward(self, x):
        out = self.layers(x)
        return x + out if self.use_residual else out


def test_inverted_residual_check_passes_on_a_correct_block(capsys):
    checks.check_inverted_residual(InvertedResidual)
    assert "InvertedResidual: all 6 cases passed" in capsys.readouterr().out


def test_inverted_residual_check_passes_with_relu6_written_as_a_clamp(capsys):
    class Clamp6(nn.Module):
        def __init__(self, inplace=False):
            super().__init__()

        def forward(self, x):
            return torch.clamp(x, 0, 6)

    checks.check_inverted_residual(lambda i, o, s, t: InvertedResidual(i, o, s, t, activation=Clamp6))
    assert "InvertedResidual: all 6 cases passed" in capsys.readouterr().out



def test_inverted_residual_check_fails_with_relu6_after_the_projection():
    with pytest.raises(AssertionError, match=r"InvertedResidual\(32, 16, stride=1, expand_ratio=1\).*the learner's "
                                             r"hardtanh \(layers\.1\.2, ReLU6\) .*has no counterpart in the reference"):
        checks.check_inverted_residual(lambda i, o, s, t: InvertedResidual(i, o, s, t, project_activation=nn.ReLU6()))


def test_inverted_residual_check_fails_without_the_residual_when_stride_1_and_channels_equal():
    with pytest.raises(AssertionError, match=r"InvertedResidual\(24, 24, stride=1, expand_ratio=6\).*the reference's "
                                             r"add .*a missing add"):
        checks.check_inverted_residual(lambda i, o, s, t: InvertedResidual(i, o, s, t, residual="never"))


def test_inverted_residual_check_fails_with_a_residual_on_a_stride_2_block():
    with pytest.raises(AssertionError, match=r"InvertedResidual\(32, 32, stride=2, expand_ratio=6\).*raised "
                                             r"RuntimeError"):
        checks.check_inverted_residual(lambda i, o, s, t: InvertedResidual(i, o, s, t, residual="same channels"))


def test_inverted_residual_check_fails_with_relu_instead_of_relu6():
    with pytest.raises(AssertionError, match=r"(?s)InvertedResidual\(32, 16, stride=1, expand_ratio=1\).*clipped to "
                                             r"\[0, 6\]"):
        checks.check_inverted_residual(lambda i, o, s, t: InvertedResidual(i, o, s, t, activation=nn.ReLU))


def test_inverted_residual_check_fails_with_an_expansion_when_expand_ratio_is_1():
    with pytest.raises(AssertionError, match=r"InvertedResidual\(32, 16, stride=1, expand_ratio=1\).*shape "
                                             r"\(32, 32, 1, 1\) is used where the reference uses"):
        checks.check_inverted_residual(lambda i, o, s, t: InvertedResidual(i, o, s, t, always_expand=True))


# --------------------------------------------------------------------------- hard-swish

def test_hard_swish_check_passes_on_correct_functions(capsys):
    checks.check_hard_swish(lambda x: x * F.relu6(x + 3) / 6)
    checks.check_hard_swish(lambda x: torch.where(x <= -3, 0.0, torch.where(x >= 3, x, x * (x + 3) / 6)))
    assert capsys.readouterr().out.count("hard_swish: all 3 cases passed") == 2



def test_hard_swish_check_fails_on_relu():
    with pytest.raises(AssertionError, match=r"hard_swish on a grid from -5 to 5.*hard_swish\(x\)\[9\] is 0, expected "
                                             r"-0\.114583"):
        checks.check_hard_swish(F.relu)


def test_hard_swish_check_fails_without_the_division_by_6():
    with pytest.raises(AssertionError, match=r"hard_swish on a grid.*hard_swish\(x\)\[9\] is -0\.6875, expected "
                                             r"-0\.114583"):
        checks.check_hard_swish(lambda x: x * F.relu6(x + 3))


def test_hard_swish_check_fails_on_swish():
    with pytest.raises(AssertionError, match=r"hard_swish on a grid.*hard_swish\(x\)\[0\] is -0\.0334643, "
                                             r"expected -0 "):
        checks.check_hard_swish(F.silu)


def test_hard_swish_check_fails_on_hard_sigmoid():
    with pytest.raises(AssertionError, match=r"hard_swish on a grid.*hard_swish\(x\)\[9\] is 0\.0416667, expected "
                                             r"-0\.114583"):
        checks.check_hard_swish(lambda x: F.relu6(x + 3) / 6)


def test_hard_swish_check_fails_when_the_input_is_changed_in_place():
    with pytest.raises(AssertionError, match="changed its input in place"):
        checks.check_hard_swish(lambda x: x.mul_(F.relu6(x + 3) / 6))


# --------------------------------------------------------------------------- squeeze-and-excitation

class SqueezeExcitation(nn.Module):
    """Written with linear layers on the channel means (the same weights as 1x1 convolutions)."""

    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid,
                 pool=torch.mean, use_activation=True, return_scale=False, use_scale_activation=True, bias=True):
        super().__init__()
        self.fc1 = nn.Linear(input_channels, squeeze_channels, bias=bias)
        self.fc2 = nn.Linear(squeeze_channels, input_channels, bias=bias)
        self.activation = activation() if use_activation else nn.Identity()
        self.gate = scale_activation() if use_scale_activation else nn.Sigmoid()
        self.pool, self.return_scale = pool, return_scale

    def forward(self, x):
        N, C, H, W = x.shape
        squeezed = self.pool(x.flatten(2), dim=2)  # (N, C)
        scale = self.gate(self.fc2(self.activation(self.fc1(squeezed))))  # (N, C)
        scale = scale.view(N, C, 1, 1)  # (N, C, 1, 1)
        return scale if self.return_scale else x * scale


def test_squeeze_excitation_check_passes_on_a_block_with_linear_layers(capsys):
    checks.check_squeeze_excitation(SqueezeExcitation)
    assert "SqueezeExcitation: all 3 cases passed" in capsys.readouterr().out



def test_squeeze_excitation_check_fails_with_max_pooling():
    with pytest.raises(AssertionError, match=r"SqueezeExcitation\(16, 4\).*the reference's adaptive_avg_pool2d .*"
                                             r"applies amax"):
        checks.check_squeeze_excitation(lambda i, s, **o: SqueezeExcitation(i, s, pool=torch.amax, **o))


def test_squeeze_excitation_check_fails_without_the_inner_activation():
    with pytest.raises(AssertionError, match=r"SqueezeExcitation\(16, 4\).*the reference's relu \(activation, ReLU\) "
                                             r".*has no counterpart"):
        checks.check_squeeze_excitation(lambda i, s, **o: SqueezeExcitation(i, s, use_activation=False, **o))


def test_squeeze_excitation_check_fails_when_the_scale_is_returned_alone():
    with pytest.raises(AssertionError, match=r"SqueezeExcitation\(16, 4\).*the reference's mul .*has no "
                                             r"counterpart.*a missing mul"):
        checks.check_squeeze_excitation(lambda i, s, **o: SqueezeExcitation(i, s, return_scale=True, **o))


def test_squeeze_excitation_check_fails_when_scale_activation_is_ignored():
    with pytest.raises(AssertionError, match=r"SqueezeExcitation\(72, 24, scale_activation=nn\.Hardsigmoid\).*the "
                                             r"reference's hardsigmoid .*applies sigmoid"):
        checks.check_squeeze_excitation(lambda i, s, **o: SqueezeExcitation(i, s, use_scale_activation=False, **o))


def test_squeeze_excitation_check_fails_without_biases():
    with pytest.raises(AssertionError, match=r"SqueezeExcitation\(16, 4\).*the reference's parameter fc1\.bias of "
                                             r"shape \(4,\) has no counterpart"):
        checks.check_squeeze_excitation(lambda i, s, **o: SqueezeExcitation(i, s, bias=False, **o))


# --------------------------------------------------------------------------- channel shuffle

def test_channel_shuffle_check_passes_on_correct_shuffles(capsys):
    def by_index(x, groups):
        N, C, H, W = x.shape
        order = torch.arange(C).view(groups, C // groups).t().flatten()  # (C,): the input channel of each output
        return x[:, order]

    def by_stack(x, groups):
        return torch.stack(x.chunk(groups, dim=1), dim=2).flatten(1, 2)  # (N, C/g, g, H, W) -> (N, C, H, W)

    checks.check_channel_shuffle(by_index)
    checks.check_channel_shuffle(by_stack)
    assert capsys.readouterr().out.count("channel_shuffle: all 6 cases passed") == 2



def test_channel_shuffle_check_fails_with_groups_and_channels_per_group_swapped():
    def swapped(x, groups):
        N, C, H, W = x.shape
        return x.view(N, C // groups, groups, H, W).transpose(1, 2).reshape(N, C, H, W)

    with pytest.raises(AssertionError, match=r"groups=2\) on x of shape \(2, 6, 3, 3\): output channel 1 holds input "
                                             r"channel 2, .* puts input channel 3 there.*swapped"):
        checks.check_channel_shuffle(swapped)


def test_channel_shuffle_check_fails_without_the_transpose():
    with pytest.raises(AssertionError, match=r"output channel 1 holds input channel 1, .* input channel 3"):
        checks.check_channel_shuffle(lambda x, groups: x.reshape(x.shape[0], groups, -1, *x.shape[2:]).reshape(x.shape))


def test_channel_shuffle_check_fails_without_the_reshape_back():
    def five_dimensional(x, groups):
        N, C, H, W = x.shape
        return x.view(N, groups, C // groups, H, W).transpose(1, 2)

    with pytest.raises(AssertionError, match=r"has shape \(2, 3, 2, 3, 3\), expected \(2, 6, 3, 3\)"):
        checks.check_channel_shuffle(five_dimensional)


def test_channel_shuffle_check_fails_when_values_change():
    with pytest.raises(AssertionError, match="output channel 0 is not one of the input's channels"):
        checks.check_channel_shuffle(lambda x, groups: F.relu(x))


# --------------------------------------------------------------------------- MBConv

def drop_rows(x, p, training):
    """Stochastic depth (Huang et al. 2016): each image kept with probability 1 - p and then scaled by 1 / (1 - p)."""
    if not training or p == 0:
        return x
    keep = (torch.rand(x.shape[0], 1, 1, 1) >= p).to(x.dtype)  # (N, 1, 1, 1)
    return x * keep / (1 - p)


class MBConv(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, expand_ratio, stochastic_depth_prob,
                 se_on="depthwise", squeeze_from="input", residual=True, activation=nn.SiLU, project_activation=None,
                 drop="rows"):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = conv_bn(in_channels, hidden, activation=activation()) if hidden != in_channels else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel_size, stride, groups=hidden, activation=activation())
        se_channels = {"depthwise": hidden, "projection": out_channels, "input": in_channels}[se_on]
        squeeze = max(1, (in_channels if squeeze_from == "input" else hidden) // 4)
        self.se_fc1 = nn.Conv2d(se_channels, squeeze, 1)
        self.se_fc2 = nn.Conv2d(squeeze, se_channels, 1)
        self.project = conv_bn(hidden, out_channels, activation=project_activation)
        self.use_residual = residual and stride == 1 and in_channels == out_channels
        self.p, self.se_on, self.drop = stochastic_depth_prob, se_on, drop

    def se(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)  # (N, C, 1, 1)
        scale = torch.sigmoid(self.se_fc2(F.silu(self.se_fc1(scale))))
        return x * scale

    def forward(self, x):
        out = self.se(x) if self.se_on == "input" else x
        out = self.depthwise(self.expand(out))
        out = self.se(out) if self.se_on == "depthwise" else out
        out = self.project(out)
        out = self.se(out) if self.se_on == "projection" else out
        if self.drop == "everywhere":
            out = drop_rows(out, self.p, self.training)
        if not self.use_residual:
            return out
        if self.drop == "rows":
            out = drop_rows(out, self.p, self.training)
        elif self.drop == "dropout":
            out = F.dropout(out, self.p, self.training)
        elif self.drop == "elements" and self.training:
            out = out * (torch.rand(out.shape) >= self.p) / (1 - self.p)  # one draw per value
        elif self.drop == "unscaled" and self.training:
            out = out * (torch.rand(out.shape[0], 1, 1, 1) >= self.p)
        elif self.drop == "keep probability":
            out = drop_rows(out, 1 - self.p, self.training)
        elif self.drop == "in evaluation too":
            out = drop_rows(out, self.p, True)
        out = out + x
        if self.drop == "after the addition":
            out = drop_rows(out, self.p, self.training)
        return out


def mbconv(**options):
    return lambda i, o, k, s, t, p: MBConv(i, o, k, s, t, p, **options)


def test_mbconv_check_passes_on_a_correct_block(capsys):
    checks.check_mbconv(MBConv)
    out = capsys.readouterr().out
    assert "MBConv: all 8 cases passed" in out
    assert "residual branches dropped with p = 0.25" in out


def test_mbconv_check_passes_with_torchvision_s_stochastic_depth(capsys):
    from torchvision.ops import stochastic_depth

    class WithTorchvisionDrop(MBConv):
        def forward(self, x):
            if not self.use_residual:
                return super().forward(x)
            out = self.project(self.se(self.depthwise(self.expand(x))))
            return stochastic_depth(out, self.p, "row", self.training) + x

    checks.check_mbconv(WithTorchvisionDrop)
    assert "MBConv: all 8 cases passed" in capsys.readouterr().out



def test_mbconv_check_fails_with_relu6_after_the_projection():
    with pytest.raises(AssertionError, match=r"MBConv\(32, 16, .*the learner's hardtanh \(project\.2, ReLU6\) .*has no "
                                             r"counterpart in the reference"):
        checks.check_mbconv(mbconv(project_activation=nn.ReLU6()))


def test_mbconv_check_fails_with_se_on_the_projection():
    with pytest.raises(AssertionError, match=r"MBConv\(32, 16, .*the reference's parameter block\.1\.fc1\.weight "
                                             r"of shape \(8, 32, 1, 1\) has no counterpart"):
        checks.check_mbconv(mbconv(se_on="projection"))


def test_mbconv_check_fails_with_se_on_the_block_input():
    with pytest.raises(AssertionError, match=r"MBConv\(32, 16, .*the reference's conv2d \(block\.0\.0, Conv2d\).*has "
                                             r"no counterpart.*applies mul"):
        checks.check_mbconv(mbconv(se_on="input"))


def test_mbconv_check_fails_with_the_squeeze_width_from_the_expanded_channels():
    with pytest.raises(AssertionError, match=r"MBConv\(16, 24, kernel_size=3, stride=2.*shape \(24, 96, 1, 1\) is "
                                             r"used where the reference uses its block\.2\.fc1\.weight of shape "
                                             r"\(4, 96, 1, 1\)"):
        checks.check_mbconv(mbconv(squeeze_from="expanded"))


def test_mbconv_check_fails_without_the_residual():
    with pytest.raises(AssertionError, match=r"MBConv\(24, 24, kernel_size=3, stride=1.*the reference's add .*a "
                                             r"missing add"):
        checks.check_mbconv(mbconv(residual=False))


def test_mbconv_check_fails_with_relu_instead_of_silu():
    with pytest.raises(AssertionError, match=r"MBConv\(32, 16, .*the reference's silu .*applies relu"):
        checks.check_mbconv(mbconv(activation=nn.ReLU))


def test_mbconv_check_fails_without_stochastic_depth():
    with pytest.raises(AssertionError, match=r"in training mode on 64 images: every image's residual branch is "
                                             r"kept as it is.*no stochastic depth"):
        checks.check_mbconv(mbconv(drop="never"))


def test_mbconv_check_fails_with_a_dropout_layer_instead_of_stochastic_depth():
    with pytest.raises(AssertionError, match=r"MBConv\(24, 24, .*the learner's dropout .*has no counterpart"):
        checks.check_mbconv(mbconv(drop="dropout"))


def test_mbconv_check_fails_when_dropping_single_values_instead_of_whole_branches():
    with pytest.raises(AssertionError, match=r"neither its input .* one draw per image, not single values"):
        checks.check_mbconv(mbconv(drop="elements"))


def test_mbconv_check_fails_without_scaling_the_kept_branches():
    with pytest.raises(AssertionError, match=r"kept but not scaled by 1 / \(1 - p\) = 1\.33333"):
        checks.check_mbconv(mbconv(drop="unscaled"))


def test_mbconv_check_fails_with_p_taken_as_the_probability_of_keeping():
    with pytest.raises(AssertionError, match=r"stochastic_depth_prob=0\) in training mode gives values that are "
                                             r"not finite.*probability of keeping"):
        checks.check_mbconv(mbconv(drop="keep probability"))


def test_mbconv_check_fails_when_kept_branches_are_divided_by_p():
    class DividedByP(MBConv):
        def forward(self, x):
            out = self.project(self.se(self.depthwise(self.expand(x))))
            if not self.use_residual:
                return out
            if self.training and self.p > 0:
                out = out * (torch.rand(out.shape[0], 1, 1, 1) >= self.p) / self.p
            return out + x

    with pytest.raises(AssertionError, match=r"scaled by 1 / p = 4, where a kept branch is scaled by 1 / \(1 - p\)"):
        checks.check_mbconv(DividedByP)


def test_mbconv_check_fails_when_dropping_after_the_addition():
    with pytest.raises(AssertionError, match=r"neither its input \(branch dropped\)"):
        checks.check_mbconv(mbconv(drop="after the addition"))


def test_mbconv_check_fails_when_dropping_in_evaluation_mode():
    torch.manual_seed(0)  # check_same_architecture runs the block on 2 images, drawing from the global generator
    with pytest.raises(AssertionError, match=r"MBConv\(24, 24, .*one of its inputs comes from the learner's "
                                             r"(div|mul)"):
        checks.check_mbconv(mbconv(drop="in evaluation too"))


def test_mbconv_check_tests_evaluation_mode_on_64_images_too(monkeypatch):
    # on its 2 images the comparison with torchvision may keep both branches by chance: the stage after it must
    # catch the drop on its own (the comparison is skipped here to show it)
    monkeypatch.setattr(checks, "check_same_architecture", lambda *args, **kwargs: None)
    with pytest.raises(AssertionError, match=r"in evaluation mode on 64 images: the output differs from the block's "
                                             r"with stochastic_depth_prob=0 for \d+ of 64 images"):
        checks.check_mbconv(mbconv(drop="in evaluation too"))


def test_mbconv_check_fails_when_dropping_without_a_residual():
    with pytest.raises(AssertionError, match=r"\(no residual connection\) in training mode on 64 images: the output "
                                             r"differs"):
        checks.check_mbconv(mbconv(drop="everywhere"))


# --------------------------------------------------------------------------- split mode, as under course-grade
# Under ``course-grade`` a check runs in the grader's process on handles of the learner's objects
# (``learner.Loopback`` runs that protocol in this process, every message encoded to bytes): right answers must
# pass there too, and wrong ones fail with the message they get in the learner's notebook.

def shuffle_by_stack(x, groups):
    return torch.stack(x.chunk(groups, dim=1), dim=2).flatten(1, 2)  # (N, C/g, g, H, W) -> (N, C, H, W)


class BufferOnlyWhenDropping(MBConv):
    """A block whose state dict depends on stochastic_depth_prob: a buffer only when it drops."""

    def __init__(self, *args):
        super().__init__(*args)
        if self.p > 0:
            self.register_buffer("drop_probability", torch.tensor(float(self.p)))


@pytest.mark.parametrize("check, namespace, summary", [
    (checks.check_depthwise_separable, {"DepthwiseSeparable": DepthwiseSeparable}, "DepthwiseSeparable: all 4 cases"),
    (checks.check_inverted_residual, {"InvertedResidual": InvertedResidual}, "InvertedResidual: all 6 cases passed"),
    (checks.check_hard_swish, {"hard_swish": lambda x: x * F.relu6(x + 3) / 6}, "hard_swish: all 3 cases passed"),
    (checks.check_squeeze_excitation, {"SqueezeExcitation": SqueezeExcitation}, "SqueezeExcitation: all 3 cases"),
    (checks.check_channel_shuffle, {"channel_shuffle": shuffle_by_stack}, "channel_shuffle: all 6 cases passed"),
    (checks.check_mbconv, {"MBConv": MBConv}, "MBConv: all 8 cases passed"),
], ids=["DepthwiseSeparable", "InvertedResidual", "hard_swish", "SqueezeExcitation", "channel_shuffle", "MBConv"])
def test_right_answers_pass_in_split_mode(check, namespace, summary, capsys):
    assert split_verdict(check, namespace) is None
    assert summary in capsys.readouterr().out


@pytest.mark.parametrize("check, name", [
    (checks.check_depthwise_separable, "DepthwiseSeparable"), (checks.check_inverted_residual, "InvertedResidual"),
    (checks.check_hard_swish, "hard_swish"), (checks.check_squeeze_excitation, "SqueezeExcitation"),
    (checks.check_channel_shuffle, "channel_shuffle"), (checks.check_mbconv, "MBConv"),
], ids=lambda value: value if isinstance(value, str) else value.__name__)
def test_the_stubs_fail_with_the_same_message_in_split_mode(check, name):
    assert_same_failure(check, {name: stub}, f"{name} is not implemented yet")


@pytest.mark.parametrize("check, namespace, message", [
    (checks.check_depthwise_separable, {"DepthwiseSeparable": lambda *a: DepthwiseSeparable(*a, pointwise_first=True)},
     r"DepthwiseSeparable\(8, 16, stride=1\).*the reference's parameter"),
    (checks.check_inverted_residual,
     {"InvertedResidual": lambda i, o, s, t: InvertedResidual(i, o, s, t, residual="same channels")},
     r"InvertedResidual\(32, 32, stride=2, expand_ratio=6\).*raised RuntimeError"),
    (checks.check_hard_swish, {"hard_swish": F.relu}, r"hard_swish on a grid.*hard_swish\(x\)\[9\] is 0, expected"),
    (checks.check_hard_swish, {"hard_swish": lambda x: x.mul_(F.relu6(x + 3) / 6)}, "changed its input in place"),
    (checks.check_hard_swish, {"hard_swish": lambda x: x.tolist()}, "hard_swish should return a tensor; got list"),
    (checks.check_squeeze_excitation,
     {"SqueezeExcitation": lambda i, s, **o: SqueezeExcitation(i, s, use_scale_activation=False, **o)},
     r"SqueezeExcitation\(72, 24, scale_activation=nn\.Hardsigmoid\).*the reference's hardsigmoid .*applies sigmoid"),
    (checks.check_channel_shuffle,
     {"channel_shuffle": lambda x, groups: x.reshape(x.shape[0], groups, -1, *x.shape[2:]).reshape(x.shape)},
     r"output channel 1 holds input channel 1, .* input channel 3"),
    (checks.check_mbconv, {"MBConv": mbconv(se_on="projection")},
     r"MBConv\(32, 16, .*the reference's parameter block\.1\.fc1\.weight of shape \(8, 32, 1, 1\) has no"),
    (checks.check_mbconv, {"MBConv": mbconv(drop="never")}, r"every image's residual branch is kept as it is"),
    (checks.check_mbconv, {"MBConv": mbconv(drop="elements")}, r"neither its input .* one draw per image"),
    (checks.check_mbconv, {"MBConv": mbconv(drop="unscaled")}, r"kept but not scaled by 1 / \(1 - p\) = 1\.33333"),
    (checks.check_mbconv, {"MBConv": mbconv(drop="keep probability")}, r"gives values that are not finite"),
    (checks.check_mbconv, {"MBConv": mbconv(drop="everywhere")}, r"\(no residual connection\) in training mode"),
    (checks.check_mbconv, {"MBConv": BufferOnlyWhenDropping},
     r"should hold the same parameters and buffers .* does not load into the other: .*drop_probability"),
], ids=["pointwise first", "residual on a stride-2 block", "ReLU for hard-swish", "input changed in place",
        "a list for a tensor", "scale activation ignored", "shuffle without the transpose", "SE on the projection",
        "no stochastic depth", "single values dropped", "kept branches unscaled", "p as the keep probability",
        "dropping without a residual", "state dict depends on p"])
def test_wrong_answers_fail_with_the_same_message_in_split_mode(check, namespace, message):
    assert_same_failure(check, namespace, message)
