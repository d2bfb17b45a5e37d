"""The chapter 11 checks pass on correct ConvNeXt pieces, written in several ways, and fail on the usual mistakes.

The correct pieces are written out here in plain PyTorch from the paper (Liu et al. 2022, Fig. 4 and section 3),
independently of the checks' references (torchvision's ``CNBlock``, ``LayerNorm2d``, ``ConvNeXt``); each wrong
piece changes one thing.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from course_utils.checks import convnext as checks
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


# --------------------------------------------------------------------------- LayerNorm2d, right and wrong

class LayerNorm2d(nn.Module):
    """Written out: mean and biased variance over the channels (dim 1) of every pixel."""

    def __init__(self, num_channels, eps=1e-6, axes=(1,), unbiased=False, eps_inside=True, default_eps=None,
                 detach_statistics=False, broadcast_last=False, channels_last_output=False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps if default_eps is None else default_eps
        self.axes, self.unbiased, self.eps_inside = axes, unbiased, eps_inside
        self.detach_statistics, self.broadcast_last = detach_statistics, broadcast_last
        self.channels_last_output = channels_last_output

    def forward(self, x):  # x: (N, C, H, W)
        mean = x.mean(self.axes, keepdim=True)
        var = x.var(self.axes, keepdim=True, unbiased=self.unbiased)
        if self.detach_statistics:
            mean, var = mean.detach(), var.detach()
        if self.eps_inside:
            x = (x - mean) / torch.sqrt(var + self.eps)
        else:
            x = (x - mean) / (torch.sqrt(var) + self.eps)
        if self.broadcast_last:  # (C,) broadcast against the last axis, W
            x = x * self.weight + self.bias
        else:
            x = x * self.weight[:, None, None] + self.bias[:, None, None]
        return x.permute(0, 2, 3, 1) if self.channels_last_output else x  # (N, H, W, C) when wrong


class LayerNorm2dPermuted(nn.Module):
    """F.layer_norm on channels last, and parameters of shape (C, 1, 1)."""

    def __init__(self, num_channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(num_channels, 1, 1))
        self.eps = eps

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)  # (N, H, W, C)
        x = F.layer_norm(x, x.shape[-1:], self.weight.flatten(), self.bias.flatten(), self.eps)
        return x.permute(0, 3, 1, 2)  # (N, C, H, W)


class LayerNorm2dSubclass(nn.LayerNorm):
    """nn.LayerNorm with a permute around it, as torchvision's LayerNorm2d."""

    def __init__(self, num_channels, eps=1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)


class LayerNorm2dRsqrt(nn.Module):
    """torch.var_mean and rsqrt, statistics over the channels."""

    def __init__(self, num_channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=0)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


@pytest.mark.parametrize("layer_norm", [LayerNorm2d, LayerNorm2dPermuted, LayerNorm2dSubclass, LayerNorm2dRsqrt],
                         ids=["hand-written", "F.layer_norm after permute", "nn.LayerNorm subclass", "rsqrt"])
def test_layer_norm_check_passes_on_right_answers_written_differently(layer_norm, capsys):
    checks.check_layer_norm_2d(layer_norm)
    assert "LayerNorm2d: all 6 cases passed" in capsys.readouterr().out


def test_layer_norm_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_layer_norm_2d(stub)


LAYER_NORM_WRONG_ANSWERS = [
    ({"axes": (1, 2, 3)}, r"a small tensor.*output\["),  # nn.LayerNorm([C, H, W]): one mean per sample
    ({"axes": (2, 3)}, r"a small tensor.*output\["),  # instance norm
    ({"axes": (0, 2, 3)}, r"a small tensor.*output\["),  # batch statistics
    ({"unbiased": True}, r"a small tensor.*output\["),
    ({"eps_inside": False}, r"LayerNorm2d\(\d+\) on .*output\["),
    ({"default_eps": 1e-5}, r"LayerNorm2d\(3\) on a small tensor.*output\["),
    ({"broadcast_last": True}, r"a small tensor.*raised RuntimeError"),
    ({"detach_statistics": True}, r"a small tensor.*gradient of the loss with respect to x"),
    ({"channels_last_output": True}, r"output \(N, C, H, W\) has shape \(2, 4, 5, 3\), expected \(2, 3, 4, 5\)"),
]
LAYER_NORM_WRONG_IDS = ["over C, H and W", "over H and W", "over the batch", "unbiased variance",
                        "eps outside the square root", "eps 1e-5 by default", "weight broadcast over W",
                        "statistics detached", "output left channels last"]


@pytest.mark.parametrize("options, message", LAYER_NORM_WRONG_ANSWERS, ids=LAYER_NORM_WRONG_IDS)
def test_layer_norm_check_fails_on_wrong_answers(options, message):
    with pytest.raises(AssertionError, match=f"(?s){message}"):
        checks.check_layer_norm_2d(lambda C, eps=1e-6: LayerNorm2d(C, eps, **options))


def test_layer_norm_check_fails_on_a_weight_broadcast_over_W_when_W_equals_C():
    class OnlyWhereItRuns(LayerNorm2d):
        def forward(self, x):
            self.broadcast_last = x.shape[-1] == x.shape[1]  # where it crashes, do it right
            return super().forward(x)

    with pytest.raises(AssertionError, match=r"(?s)W equal to C.*output\["):
        checks.check_layer_norm_2d(OnlyWhereItRuns)


def test_layer_norm_check_fails_when_the_eps_argument_is_ignored():
    with pytest.raises(AssertionError, match=r"(?s)LayerNorm2d\(16, eps=1e-05\) on values of size 1e-3 with eps=1e-5 given.*output\["):
        checks.check_layer_norm_2d(lambda C, eps=1e-6: LayerNorm2d(C))


class NoAffine(LayerNorm2d):
    """A weight that is a buffer, not a learnable parameter."""

    def __init__(self, num_channels, eps=1e-6):
        super().__init__(num_channels, eps)
        del self.weight
        self.register_buffer("weight", torch.ones(num_channels))


def test_layer_norm_check_fails_without_learnable_weight_and_bias():
    with pytest.raises(AssertionError, match=r"LayerNorm2d\(3\)\.weight should be a learnable nn\.Parameter of 3 "
                                             r"values .* got a Tensor of shape \(3,\)"):
        checks.check_layer_norm_2d(NoAffine)


# --------------------------------------------------------------------------- ConvNeXtBlock, right and wrong

class BlockChannelsLast(nn.Module):
    """The paper's block with nn.Linear on channels last, as the official code writes it."""

    def __init__(self, dim, layer_scale=1e-6, stochastic_depth_prob=0.0, eps=1e-6, expansion=4, kernel_size=7,
                 depthwise=True, approximate="none", norm="layer", layer_scale_after_add=False, with_layer_scale=True,
                 layer_scale_start=None, stochastic_depth_mode="row", residual=True, activation="gelu"):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim if depthwise else 1)
        self.norm = nn.LayerNorm(dim, eps=eps) if norm == "layer" else None
        self.channels_first_norm = {"group": nn.GroupNorm(1, dim, eps=eps), "batch": nn.BatchNorm2d(dim, eps=eps),
                                    "layer over W": nn.LayerNorm(dim, eps=eps), "layer": None}[norm]
        self.pwconv1 = nn.Linear(dim, expansion * dim)
        self.act = nn.GELU(approximate=approximate) if activation == "gelu" else nn.ReLU()
        self.pwconv2 = nn.Linear(expansion * dim, dim)
        start = layer_scale if layer_scale_start is None else layer_scale_start
        self.gamma = nn.Parameter(torch.full((dim,), start)) if with_layer_scale else None
        self.drop_path = StochasticDepth(stochastic_depth_prob, stochastic_depth_mode)
        self.layer_scale_after_add, self.residual = layer_scale_after_add, residual

    def forward(self, x):  # (N, C, H, W)
        shortcut = x
        x = self.dwconv(x)
        if self.channels_first_norm is not None:
            x = self.channels_first_norm(x)
        x = x.permute(0, 2, 3, 1)  # (N, H, W, C)
        if self.norm is not None:
            x = self.norm(x)
        x = self.pwconv1(x)  # (N, H, W, 4C)
        x = self.act(x)
        x = self.pwconv2(x)  # (N, H, W, C)
        if self.gamma is not None and not self.layer_scale_after_add:
            x = self.gamma * x
        x = x.permute(0, 3, 1, 2)  # (N, C, H, W)
        x = self.drop_path(x)
        if self.residual:
            x = shortcut + x
        if self.gamma is not None and self.layer_scale_after_add:
            x = self.gamma[:, None, None] * x
        return x


class BlockChannelsFirst(nn.Module):
    """The same block with 1x1 convolutions, a hand-written channels-first layer norm and stochastic depth."""

    def __init__(self, dim, layer_scale=1e-6, stochastic_depth_prob=0.0, eps=1e-6, rescale=True, elementwise=False):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=eps)
        self.pwconv1 = nn.Conv2d(dim, 4 * dim, kernel_size=1)
        self.pwconv2 = nn.Conv2d(4 * dim, dim, kernel_size=1)
        self.layer_scale = nn.Parameter(layer_scale * torch.ones(dim, 1, 1))
        self.p, self.rescale, self.elementwise = stochastic_depth_prob, rescale, elementwise

    def forward(self, x):  # (N, C, H, W)
        branch = self.dwconv(x)
        branch = self.norm(branch)
        branch = self.pwconv1(branch)  # (N, 4C, H, W)
        branch = F.gelu(branch)
        branch = self.pwconv2(branch)  # (N, C, H, W)
        branch = self.layer_scale * branch
        if self.training and self.p > 0:
            shape = branch.shape if self.elementwise else (branch.shape[0], 1, 1, 1)  # one draw per sample
            keep = torch.rand(shape) >= self.p
            branch = branch * keep / ((1 - self.p) if self.rescale else 1.0)
        return x + branch


@pytest.mark.parametrize("block", [BlockChannelsLast, BlockChannelsFirst],
                         ids=["Linear on channels last", "1x1 convolutions on channels first"])
def test_block_check_passes_on_right_answers_written_differently(block, capsys):
    checks.check_convnext_block(block)
    assert "ConvNeXtBlock: all 6 cases passed" in capsys.readouterr().out


def test_block_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_convnext_block(stub)


BLOCK_WRONG_ANSWERS = [
    ({"with_layer_scale": False}, r"the reference's parameter layer_scale of shape \(16, 1, 1\) has no counterpart"),
    ({"layer_scale_after_add": True}, r"the reference's mul .* has no counterpart"),
    ({"norm": "group"}, r"the reference's layer_norm .* has no counterpart"),
    ({"norm": "layer over W"}, r"ConvNeXtBlock\(16.*the learner's model raised RuntimeError"),
    ({"norm": "batch"}, r"the learner's buffer \S+running_mean of shape \(16,\) has no counterpart"),
    ({"eps": 1e-5}, r"uses eps=1e-05; ConvNeXt's layer norms use eps=1e-06|with eps=1e-05, the reference's has eps=1e-06"),
    ({"approximate": "tanh"}, r"gelu .* with approximate='tanh', the reference's has approximate='none'"),
    ({"activation": "relu"}, r"the reference's gelu .* has no counterpart"),
    ({"expansion": 2}, r"pwconv1.weight of shape \(32, 16\) is used where the reference uses its \S+ of shape \(64, 16\)"),
    ({"kernel_size": 3}, r"shape \(16, 1, 7, 7\)"),
    ({"depthwise": False}, r"shape \(16, 1, 7, 7\)"),
    ({"residual": False}, r"the reference's add .* has no counterpart"),
    ({"layer_scale_start": 1e-6}, r"layer_scale=0\.3\): no parameter holds 16 values equal to 0\.3"),
    ({"stochastic_depth_mode": "batch"}, r"every sample's branch was (dropped|kept).*mode='row'"),
]
BLOCK_WRONG_IDS = ["layer scale missing", "layer scale after the residual add", "group norm over C, H and W",
                   "nn.LayerNorm on channels first (over W)", "batch norm", "eps 1e-5", "GELU tanh approximation",
                   "ReLU", "expansion ratio 2", "3x3 kernel", "dense 7x7 convolution", "no residual",
                   "layer scale ignores its argument", "stochastic depth per batch"]


@pytest.mark.parametrize("options, message", BLOCK_WRONG_ANSWERS, ids=BLOCK_WRONG_IDS)
def test_block_check_fails_on_wrong_answers(options, message):
    with pytest.raises(AssertionError, match=f"(?s){message}"):
        checks.check_convnext_block(lambda dim, **kw: BlockChannelsLast(dim, **kw, **options))


def test_block_check_fails_on_a_hand_written_layer_norm_with_eps_1e_5():
    with pytest.raises(AssertionError, match=r"(?s)input scaled by 0\.001 \(where eps matters\).*layer_norm"):
        checks.check_convnext_block(lambda dim, **kw: BlockChannelsFirst(dim, **kw, eps=1e-5))


def test_block_check_fails_on_stochastic_depth_without_rescaling():
    with pytest.raises(AssertionError, match=r"keeps its residual branch without dividing it by 1 - p"):
        checks.check_convnext_block(lambda dim, **kw: BlockChannelsFirst(dim, **kw, rescale=False))


def test_block_check_fails_on_stochastic_depth_as_a_dropout():
    with pytest.raises(AssertionError, match=r"neither its input .* nor its input plus"):
        checks.check_convnext_block(lambda dim, **kw: BlockChannelsFirst(dim, **kw, elementwise=True))


# --------------------------------------------------------------------------- ConvNeXtStage, right and wrong

class Stage(nn.Module):
    """Downsampling (layer norm, 2x2 convolution with stride 2), then the blocks."""

    def __init__(self, in_channels, out_channels, num_blocks, layer_scale=1e-6, block=BlockChannelsFirst,
                 norm=True, norm_eps=1e-6, kernel_size=2, padding=0, norm_after=False, downsample_last=False,
                 blocks_missing=0):
        super().__init__()
        norm_layer = LayerNorm2d(out_channels if norm_after else in_channels, eps=norm_eps) if norm else None
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=2, padding=padding)
        layers = [conv, norm_layer] if norm_after else [norm_layer, conv]
        self.downsample = nn.Sequential(*[layer for layer in layers if layer is not None])
        width = in_channels if downsample_last else out_channels
        self.blocks = nn.Sequential(*[block(width, layer_scale) for _ in range(num_blocks - blocks_missing)])
        self.downsample_last = downsample_last

    def forward(self, x):
        if self.downsample_last:
            return self.downsample(self.blocks(x))
        return self.blocks(self.downsample(x))  # (N, out_channels, H/2, W/2)


def test_stage_check_passes_on_a_correct_stage(capsys):
    checks.check_convnext_stage(Stage)
    assert "ConvNeXtStage: all 3 cases passed" in capsys.readouterr().out


def test_stage_check_passes_with_channels_last_blocks(capsys):
    checks.check_convnext_stage(lambda i, o, n: Stage(i, o, n, block=BlockChannelsLast))
    assert "ConvNeXtStage: all 3 cases passed" in capsys.readouterr().out


def test_stage_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_convnext_stage(stub)


STAGE_WRONG_ANSWERS = [
    ({"norm": False}, r"the reference's parameter \S+ of shape \(8,\) has no counterpart"),
    ({"norm_eps": 1e-5}, r"input scaled by 0\.001 \(where eps matters\).*layer_norm"),
    ({"norm_after": True}, r"ConvNeXtStage\(8, 16, 2\).*the reference's parameter \S+ of shape \(8,\) has no counterpart"),
    ({"downsample_last": True}, r"ConvNeXtStage\(8, 16, 2\).*(no counterpart|shape)"),
    ({"kernel_size": 3, "padding": 1}, r"shape \(16, 8, 3, 3\).*\(16, 8, 2, 2\)|\(16, 8, 2, 2\)"),
    ({"blocks_missing": 1}, r"ConvNeXtStage\(8, 16, 2\).*has no counterpart"),
]
STAGE_WRONG_IDS = ["downsampling without its layer norm", "downsampling layer norm eps 1e-5",
                   "layer norm after the conv", "downsampling after the blocks", "3x3 downsampling convolution",
                   "one block missing"]


@pytest.mark.parametrize("options, message", STAGE_WRONG_ANSWERS, ids=STAGE_WRONG_IDS)
def test_stage_check_fails_on_wrong_answers(options, message):
    with pytest.raises(AssertionError, match=f"(?s){message}"):
        checks.check_convnext_stage(lambda i, o, n: Stage(i, o, n, **options))


# --------------------------------------------------------------------------- ConvNeXt-Tiny

class ConvNeXtTiny(nn.Module):
    """Patchify stem, stages of (3, 3, 9, 3) blocks of widths (96, 192, 384, 768), pooled head with a layer norm."""

    def __init__(self, num_classes=1000, block=BlockChannelsFirst, stem_norm=True, depths=(3, 3, 9, 3),
                 head_norm=True):
        super().__init__()
        dims = (96, 192, 384, 768)
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4),
                                  *([LayerNorm2d(dims[0])] if stem_norm else []))
        stages = [nn.Sequential(*[block(dims[0]) for _ in range(depths[0])])]
        for in_channels, out_channels, depth in zip(dims, dims[1:], depths[1:]):
            stages.append(Stage(in_channels, out_channels, depth, block=block))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6) if head_norm else nn.Identity()
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):  # (N, 3, H, W)
        x = self.stages(self.stem(x))  # (N, 768, H/32, W/32)
        x = x.mean((2, 3))  # (N, 768): global average pooling
        return self.head(self.norm(x))  # (N, num_classes)


@pytest.mark.parametrize("block", [BlockChannelsFirst, BlockChannelsLast],
                         ids=["1x1 convolutions on channels first", "Linear on channels last"])
def test_tiny_check_passes_on_right_answers_written_differently(block, capsys):
    checks.check_convnext_tiny(lambda: ConvNeXtTiny(block=block))
    assert "ConvNeXt-Tiny: all 1 cases passed" in capsys.readouterr().out


def test_tiny_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_convnext_tiny(stub)


TINY_WRONG_ANSWERS = [
    ({"stem_norm": False}, r"the reference's parameter \S+ of shape \(96,\) has no counterpart"),
    ({"depths": (3, 3, 6, 3)}, r"ConvNeXtTiny\(\).*has no counterpart"),
    ({"head_norm": False}, r"the reference's parameter \S+ of shape \(768,\) has no counterpart"),
]
TINY_WRONG_IDS = ["stem without its layer norm", "ResNet-50's stage ratio", "head without its layer norm"]


@pytest.mark.parametrize("options, message", TINY_WRONG_ANSWERS, ids=TINY_WRONG_IDS)
def test_tiny_check_fails_on_wrong_answers(options, message):
    with pytest.raises(AssertionError, match=f"(?s){message}"):
        checks.check_convnext_tiny(lambda: ConvNeXtTiny(**options))


# --------------------------------------------------------------------------- split mode, as under course-grade
# Under ``course-grade`` a check runs in the grader's process on handles of the learner's objects
# (``learner.Loopback`` runs that protocol in this process, every message encoded to bytes): right answers must
# pass there too, and wrong ones fail with the message they get in the learner's notebook.

@pytest.mark.parametrize("check, namespace, summary", [
    (checks.check_layer_norm_2d, {"LayerNorm2d": LayerNorm2d}, "LayerNorm2d: all 6 cases passed"),
    (checks.check_layer_norm_2d, {"LayerNorm2d": LayerNorm2dSubclass}, "LayerNorm2d: all 6 cases passed"),
    (checks.check_convnext_block, {"ConvNeXtBlock": BlockChannelsLast}, "ConvNeXtBlock: all 6 cases passed"),
    (checks.check_convnext_block, {"ConvNeXtBlock": BlockChannelsFirst}, "ConvNeXtBlock: all 6 cases passed"),
    (checks.check_convnext_stage, {"ConvNeXtStage": Stage}, "ConvNeXtStage: all 3 cases passed"),
    (checks.check_convnext_tiny, {"ConvNeXtTiny": ConvNeXtTiny}, "ConvNeXt-Tiny: all 1 cases passed"),
], ids=["LayerNorm2d", "nn.LayerNorm subclass", "block, channels last", "block, channels first", "stage", "tiny"])
def test_right_answers_pass_in_split_mode(check, namespace, summary, capsys):
    assert split_verdict(check, namespace) is None
    assert summary in capsys.readouterr().out


@pytest.mark.parametrize("check, namespace, message", [
    (checks.check_layer_norm_2d, {"LayerNorm2d": stub}, "LayerNorm2d is not implemented yet"),
    (checks.check_convnext_block, {"ConvNeXtBlock": stub}, "ConvNeXtBlock is not implemented yet"),
    (checks.check_convnext_stage, {"ConvNeXtStage": stub}, "ConvNeXtStage is not implemented yet"),
    (checks.check_convnext_tiny, {"ConvNeXtTiny": stub}, "ConvNeXtTiny is not implemented yet"),
    (checks.check_layer_norm_2d, {"LayerNorm2d": NoAffine},
     r"LayerNorm2d\(3\)\.weight should be a learnable nn\.Parameter of 3 values .* got a Tensor of shape \(3,\)"),
    (checks.check_layer_norm_2d, {"LayerNorm2d": lambda C, eps=1e-6: [LayerNorm2d(C, eps)]},
     r"LayerNorm2d\(3\) should be an nn\.Module; got list"),
    (checks.check_convnext_block, {"ConvNeXtBlock": lambda dim, **kw: BlockChannelsFirst(dim, **kw, eps=1e-5)},
     r"input scaled by 0\.001 \(where eps matters\).*layer_norm"),
    (checks.check_convnext_block, {"ConvNeXtBlock": lambda dim, **kw: BlockChannelsFirst(dim, **kw, rescale=False)},
     r"keeps its residual branch without dividing it by 1 - p"),
    (checks.check_convnext_block,
     {"ConvNeXtBlock": lambda dim, **kw: BlockChannelsFirst(dim, **kw, elementwise=True)},
     r"neither its input .* nor its input plus"),
], ids=["LayerNorm2d stub", "block stub", "stage stub", "tiny stub", "weight not learnable", "not a module",
        "hand-written layer norm with eps 1e-5", "stochastic depth without rescaling", "stochastic depth as dropout"])
def test_wrong_answers_fail_with_the_same_message_in_split_mode(check, namespace, message):
    assert_same_failure(check, namespace, message)


@pytest.mark.parametrize("options, message", LAYER_NORM_WRONG_ANSWERS, ids=LAYER_NORM_WRONG_IDS)
def test_wrong_layer_norms_fail_with_the_same_message_in_split_mode(options, message):
    assert_same_failure(checks.check_layer_norm_2d, {"LayerNorm2d": lambda C, eps=1e-6: LayerNorm2d(C, eps, **options)},
                        message)


@pytest.mark.parametrize("options, message", BLOCK_WRONG_ANSWERS, ids=BLOCK_WRONG_IDS)
def test_wrong_blocks_fail_with_the_same_message_in_split_mode(options, message):
    assert_same_failure(checks.check_convnext_block,
                        {"ConvNeXtBlock": lambda dim, **kw: BlockChannelsLast(dim, **kw, **options)}, message)


@pytest.mark.parametrize("options, message", STAGE_WRONG_ANSWERS, ids=STAGE_WRONG_IDS)
def test_wrong_stages_fail_with_the_same_message_in_split_mode(options, message):
    assert_same_failure(checks.check_convnext_stage, {"ConvNeXtStage": lambda i, o, n: Stage(i, o, n, **options)},
                        message)
