"""Checks for the exercises of ``solutions/10_efficient_cnns.ipynb``: the blocks of MobileNet, ShuffleNet, EfficientNet.

The learner writes

* ``DepthwiseSeparable(in_channels, out_channels, stride)``: MobileNetV1's block (Howard et al. 2017, Fig. 3), a
  depthwise 3x3 convolution (``groups=in_channels``, padding 1, the stride) and a pointwise 1x1 convolution, each
  without bias and followed by batch norm and ReLU; checked against the same block built here from torch layers;
* ``InvertedResidual(in_channels, out_channels, stride, expand_ratio)``: MobileNetV2's block, against
  ``torchvision.models.mobilenetv2.InvertedResidual``;
* ``hard_swish(x)``: x * ReLU6(x + 3) / 6 (Howard et al. 2019, section 5.2), against
  ``torch.nn.functional.hardswish``;
* ``SqueezeExcitation(input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid)``:
  against ``torchvision.ops.SqueezeExcitation`` with the same arguments;
* ``channel_shuffle(x, groups)``: ShuffleNet's shuffle, against ``torchvision.models.shufflenetv2.channel_shuffle``;
* ``MBConv(in_channels, out_channels, kernel_size, stride, expand_ratio, stochastic_depth_prob)``: EfficientNet's
  block, against ``torchvision.models.efficientnet.MBConv`` built from an ``MBConvConfig`` (with batch norm as in
  EfficientNet-B0 to B7), then its stochastic depth in training mode.

The blocks are compared by ``course_utils.checks.architectures.check_same_architecture`` (parameters, every
operation and the output, in evaluation mode, with the reference's weights redrawn and copied in). Evaluation mode
cannot see stochastic depth, so ``check_mbconv`` also runs the learner's block in training mode, twice with the
same weights: with ``stochastic_depth_prob`` 0.25 and 0, on 64 images. Each image's residual branch must be either
dropped (the output is the input) or kept and scaled by 1 / (1 - 0.25); a few images but not most must be dropped;
and nothing may be dropped in evaluation mode or in a block without a residual connection.

What has to happen where the learner's block lives (under ``course-grade``, in the learner's kernel) is done by the
``learner_`` probes, run through ``learner.run``: building a squeeze-and-excitation block with ``nn`` activation
classes (sent by name), copying one block's state dict into the other, and a pass in a given mode with a seeded
generator. They send back plain data (outputs, an exception) or the block's handle; every comparison stays here.
"""
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.efficientnet import MBConv as TorchvisionMBConv
from torchvision.models.efficientnet import MBConvConfig
from torchvision.models.mobilenetv2 import InvertedResidual as TorchvisionInvertedResidual
from torchvision.models.shufflenetv2 import channel_shuffle as torchvision_channel_shuffle
from torchvision.ops import SqueezeExcitation as TorchvisionSqueezeExcitation

from course_utils.checks import common, learner
from course_utils.checks.architectures import check_same_architecture

STOCHASTIC_DEPTH_PROB = 0.25  # the training-mode test of check_mbconv
STOCHASTIC_DEPTH_IMAGES = 64  # images in that test: about 16 of them are dropped
VALUE_TOLERANCE = 1e-5  # relative to the largest value compared, for the training-mode test


def _build(builder, *args, case, what, **kwargs):
    """Call the learner's class (or function); it must return an ``nn.Module``."""
    model = common.call(builder, *args, case=case, **kwargs)
    if not common.is_module(model):
        raise AssertionError(f"{case}: {what} should return an nn.Module; got {common.type_name(model)}")
    return model


# --------------------------------------------------------------------------- MobileNetV1's block

def reference_depthwise_separable(in_channels, out_channels, stride=1):
    """MobileNetV1's block from torch layers: depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=stride, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


# (in_channels, out_channels, stride, H = W): a widening block, MobileNetV1's stride-2 block at an even and an odd
# size, and a block that keeps its width
DEPTHWISE_SEPARABLE_CASES = ((8, 16, 1, 12), (32, 64, 2, 14), (16, 24, 2, 15), (24, 24, 1, 9))


def check_depthwise_separable(DepthwiseSeparable):
    """``DepthwiseSeparable(in_channels, out_channels, stride)`` against the block built from torch layers."""
    for in_channels, out_channels, stride, size in DEPTHWISE_SEPARABLE_CASES:
        case = f"DepthwiseSeparable({in_channels}, {out_channels}, stride={stride}) on a {size}x{size} input"
        block = _build(DepthwiseSeparable, in_channels, out_channels, stride, case=case, what="DepthwiseSeparable")
        check_same_architecture(block, reference_depthwise_separable(in_channels, out_channels, stride),
                                (2, in_channels, size, size), name=case)
    common.passed("DepthwiseSeparable", len(DEPTHWISE_SEPARABLE_CASES))


# --------------------------------------------------------------------------- MobileNetV2's block

# (in_channels, out_channels, stride, expand_ratio, H = W): MobileNetV2's first block (no expansion), a stride-2
# block, two blocks with a residual, a stride-2 block that keeps the width and a stride-1 block that changes it
# (neither has a residual), and an expansion of 4
INVERTED_RESIDUAL_CASES = ((32, 16, 1, 1, 8), (16, 24, 2, 6, 12), (24, 24, 1, 6, 8), (64, 64, 1, 6, 4),
                           (32, 32, 2, 6, 9), (24, 32, 1, 4, 7))


def check_inverted_residual(InvertedResidual):
    """``InvertedResidual(in_channels, out_channels, stride, expand_ratio)`` against torchvision's MobileNetV2 block."""
    for in_channels, out_channels, stride, expand_ratio, size in INVERTED_RESIDUAL_CASES:
        case = (f"InvertedResidual({in_channels}, {out_channels}, stride={stride}, expand_ratio={expand_ratio}) "
                f"on a {size}x{size} input")
        block = _build(InvertedResidual, in_channels, out_channels, stride, expand_ratio, case=case,
                       what="InvertedResidual")
        reference = TorchvisionInvertedResidual(in_channels, out_channels, stride, expand_ratio)
        check_same_architecture(block, reference, (2, in_channels, size, size), name=case)
    common.passed("InvertedResidual", len(INVERTED_RESIDUAL_CASES))


# --------------------------------------------------------------------------- hard-swish

def _hard_swish_cases():
    generator = torch.Generator().manual_seed(0)
    return [
        ("a grid from -5 to 5 in steps of 0.25 (the kinks at -3 and 3 included)", torch.arange(-20, 21) * 0.25),
        ("random values with standard deviation 4, shape (2, 3, 5, 5)",
         4 * torch.randn(2, 3, 5, 5, generator=generator)),
        ("large values and zero", torch.tensor([-1000.0, -100.0, -3.0, 0.0, 3.0, 100.0, 1000.0])),
    ]


def check_hard_swish(hard_swish):
    """``hard_swish(x)`` against ``torch.nn.functional.hardswish`` on three inputs; ``x`` must not be changed."""
    cases = _hard_swish_cases()
    for description, x in cases:
        case = f"hard_swish on {description}"
        before = x.clone()
        received = common.call(hard_swish, x, case=case)
        if not isinstance(received, torch.Tensor):
            raise AssertionError(f"{case}: hard_swish should return a tensor; got {common.type_name(received)}")
        if not torch.equal(x, before):
            raise AssertionError(f"{case}: hard_swish changed its input in place; return a new tensor instead")
        common.assert_close(received, F.hardswish(before), case, what="hard_swish(x)", rtol=1e-5, atol=1e-6)
    common.passed("hard_swish", len(cases))


# --------------------------------------------------------------------------- squeeze-and-excitation

# (input_channels, squeeze_channels, options, what it is, H = W)
SQUEEZE_EXCITATION_CASES = (
    (16, 4, {}, "ReLU and a sigmoid gate, the defaults", 7),
    (96, 4, {"activation": nn.SiLU}, "SiLU inside, as in EfficientNet's MBConv", 5),
    (72, 24, {"scale_activation": nn.Hardsigmoid}, "a hard-sigmoid gate, as in MobileNetV3", 6),
)


SQUEEZE_EXCITATION_ACTIVATIONS = ("ReLU", "SiLU", "Sigmoid", "Hardsigmoid")  # the nn classes the cases pass


def learner_squeeze_excitation(SqueezeExcitation, channels, squeeze_channels, activations, case):
    """``SqueezeExcitation(channels, squeeze_channels, **options)`` built where the learner's class lives.

    ``activations`` names the ``nn`` classes the options stand for, e.g. ``{"activation": "SiLU"}`` for
    ``activation=nn.SiLU`` (a class cannot cross to the learner's kernel; its name can). Returns the block (a handle
    of it under the grader); a crash, or a result that is not a module, raises ``AssertionError`` naming ``case``.
    """
    options = {}
    for option, class_name in activations.items():
        if class_name not in SQUEEZE_EXCITATION_ACTIVATIONS:
            raise ValueError(f"not an activation of the squeeze-and-excitation cases: {class_name!r}")
        options[option] = getattr(nn, class_name)
    return _build(SqueezeExcitation, channels, squeeze_channels, case=case, what="SqueezeExcitation", **options)


def check_squeeze_excitation(SqueezeExcitation):
    """``SqueezeExcitation(input_channels, squeeze_channels, ...)`` against ``torchvision.ops.SqueezeExcitation``."""
    for channels, squeeze_channels, options, what, size in SQUEEZE_EXCITATION_CASES:
        arguments = "".join(f", {name}=nn.{value.__name__}" for name, value in options.items())
        case = f"SqueezeExcitation({channels}, {squeeze_channels}{arguments}) ({what}) on a {size}x{size} input"
        activations = {name: value.__name__ for name, value in options.items()}
        block = learner.run(learner_squeeze_excitation, SqueezeExcitation, channels, squeeze_channels, activations,
                            case)
        reference = TorchvisionSqueezeExcitation(channels, squeeze_channels, **options)
        check_same_architecture(block, reference, (2, channels, size, size), name=case)
    common.passed("SqueezeExcitation", len(SQUEEZE_EXCITATION_CASES))


# --------------------------------------------------------------------------- channel shuffle

# (N, C, H, W, groups): groups different from the channels per group, so that swapping them shows; one group and
# one channel per group leave the order as it is
CHANNEL_SHUFFLE_CASES = ((2, 6, 3, 3, 2), (1, 12, 2, 5, 3), (2, 12, 4, 4, 4), (3, 10, 5, 5, 2), (2, 8, 2, 2, 1),
                         (1, 8, 3, 3, 8))


def _channel_order(output, x):
    """For every output channel, the input channel it holds (``None`` when it holds none of them)."""
    order = []
    for j in range(output.shape[1]):
        sources = [i for i in range(x.shape[1]) if torch.equal(output[:, j], x[:, i])]
        order.append(sources[0] if sources else None)
    return order


def check_channel_shuffle(channel_shuffle):
    """``channel_shuffle(x, groups)`` against torchvision's on six inputs: the same channels in the same order."""
    generator = torch.Generator().manual_seed(0)
    for N, C, H, W, groups in CHANNEL_SHUFFLE_CASES:
        case = f"channel_shuffle(x, groups={groups}) on x of shape {(N, C, H, W)}"
        x = torch.randn(N, C, H, W, generator=generator)  # (N, C, H, W)
        expected = torchvision_channel_shuffle(x.clone(), groups)
        received = common.call(channel_shuffle, x.clone(), groups, case=case)
        if not isinstance(received, torch.Tensor):
            raise AssertionError(f"{case}: channel_shuffle should return a tensor; got {common.type_name(received)}")
        common.assert_shape(received, expected.shape, case, what="channel_shuffle(x, groups)")
        if torch.equal(received, expected):
            continue
        order, expected_order = _channel_order(received, x), _channel_order(expected, x)
        for j, (source, wanted) in enumerate(zip(order, expected_order)):
            if source is None:
                raise AssertionError(f"{case}: output channel {j} is not one of the input's channels: a shuffle only "
                                     f"moves channels, it changes no value")
            if source != wanted:
                swapped = torchvision_channel_shuffle(x.clone(), C // groups)
                hint = (" (groups and channels per group swapped: a reshape to (N, C // groups, groups, H, W) where "
                        "(N, groups, C // groups, H, W) is meant?)" if torch.equal(received, swapped) else "")
                raise AssertionError(f"{case}: output channel {j} holds input channel {source}, torchvision's "
                                     f"channel_shuffle puts input channel {wanted} there; the learner's order of the "
                                     f"input channels is {order}, the expected {expected_order}{hint}")
        raise AssertionError(f"{case}: the output holds the input's channels in the expected order but differs "
                             f"elsewhere (the batch or the pixels moved?)")
    common.passed("channel_shuffle", len(CHANNEL_SHUFFLE_CASES))


# --------------------------------------------------------------------------- EfficientNet's MBConv

# (in_channels, out_channels, kernel_size, stride, expand_ratio, H = W): EfficientNet-B0's first block (no
# expansion), a stride-2 block, two blocks with a residual (3x3 and 5x5), and a 5x5 stride-2 block on an odd size
MBCONV_CASES = ((32, 16, 3, 1, 1, 8), (16, 24, 3, 2, 6, 12), (24, 24, 3, 1, 6, 8), (40, 40, 5, 1, 6, 6),
                (24, 40, 5, 2, 6, 9))
MBCONV_EVAL_PROB = 0.2  # stochastic_depth_prob of the blocks compared in evaluation mode (where it does nothing)


def reference_mbconv(in_channels, out_channels, kernel_size, stride, expand_ratio, stochastic_depth_prob):
    """torchvision's MBConv from an ``MBConvConfig``, with batch norm as in EfficientNet-B0 to B7."""
    config = MBConvConfig(expand_ratio, kernel_size, stride, in_channels, out_channels, num_layers=1)
    return TorchvisionMBConv(config, stochastic_depth_prob, norm_layer=nn.BatchNorm2d)


def _mbconv_case(arguments, prob):
    in_channels, out_channels, kernel_size, stride, expand_ratio = arguments
    return (f"MBConv({in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}, "
            f"expand_ratio={expand_ratio}, stochastic_depth_prob={prob:g})")


def learner_copy_state(source, target):
    """Load the learner's ``source`` block's state dict into its ``target`` block; the exception raised, or None."""
    try:
        target.load_state_dict(source.state_dict())
    except Exception as error:
        return error
    return None


def _same_weights_pair(MBConv, arguments):
    """The learner's block built with ``STOCHASTIC_DEPTH_PROB`` and with 0, holding the same weights, and the case."""
    dropping_case, keeping_case = _mbconv_case(arguments, STOCHASTIC_DEPTH_PROB), _mbconv_case(arguments, 0.0)
    dropping = _build(MBConv, *arguments, STOCHASTIC_DEPTH_PROB, case=dropping_case, what="MBConv")
    keeping = _build(MBConv, *arguments, 0.0, case=keeping_case, what="MBConv")
    error = learner.run(learner_copy_state, dropping, keeping)
    if error is not None:
        raise AssertionError(f"{dropping_case} and {keeping_case} should hold the same parameters and buffers "
                             f"(stochastic depth has none), but one's state dict does not load into the other: "
                             f"{error}")
    return dropping, keeping, dropping_case, keeping_case


def learner_output_in_mode(block, x, training, seed, case):
    """``block(x)`` with the learner's block in training or evaluation mode, where the block lives.

    Under ``torch.no_grad()``, torch's generator seeded with ``seed`` first (and restored after); every module's mode
    is restored after. A crash raises ``AssertionError`` naming ``case``.
    """
    modes = [(module, module.training) for module in block.modules()]
    try:
        block.train(training)
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(seed)
            return common.call(block, x, case=case)
    finally:
        for module, mode in modes:
            module.training = mode


def _description(value):
    """A value as a message names it: a tensor by its shape, anything else by its class."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {common.type_name(value)}"


def _run_both(dropping, keeping, x, training, case):
    """Outputs of the two blocks on the same input, in training or evaluation mode, with a fixed seed."""
    outputs = []
    for block in (dropping, keeping):
        output = learner.run(learner_output_in_mode, block, x.clone(), training, 0, case)
        if not isinstance(output, torch.Tensor) or output.dim() != 4 or output.shape[0] != x.shape[0]:
            raise AssertionError(f"{case}: the block should return a tensor (N, F, H, W) with N = {x.shape[0]}; got "
                                 f"{_description(output)}")
        outputs.append(output)
    return outputs


def _check_stochastic_depth(MBConv):
    """The learner's stochastic depth in training mode: one draw per image, kept branches scaled, only there."""
    p = STOCHASTIC_DEPTH_PROB
    generator = torch.Generator().manual_seed(0)
    arguments = (24, 24, 3, 1, 6)  # stride 1, 24 -> 24 channels: a residual block
    dropping, keeping, case, keeping_case = _same_weights_pair(MBConv, arguments)
    x = torch.randn(STOCHASTIC_DEPTH_IMAGES, 24, 6, 6, generator=generator)  # (N, C, H, W)
    training_case = f"{case} in training mode on {STOCHASTIC_DEPTH_IMAGES} images"
    with_drop, without_drop = _run_both(dropping, keeping, x, True, training_case)
    for output, which in ((without_drop, keeping_case), (with_drop, case)):
        if not torch.isfinite(output).all():
            raise AssertionError(f"{which} in training mode gives values that are not finite (NaN or inf): nothing "
                                 f"may be divided by zero (is p taken as the probability of keeping?)")
    branch = without_drop - x  # (N, C, H, W): each image's residual branch (batch statistics of this batch)
    change = with_drop - x
    untouched = int((branch.flatten(1) == 0).all(dim=1).sum())
    if untouched:
        raise AssertionError(f"{keeping_case} in training mode: {untouched} of {len(x)} images come out equal to their "
                             f"input, their residual branch dropped; with p = 0 nothing may be dropped (is p taken as "
                             f"the probability of keeping?)")
    tolerance = VALUE_TOLERANCE * float(branch.abs().max()) / min(p, 1 - p)  # at the scale of the largest candidate

    def close(received, expected):
        return float((received - expected).abs().max()) <= tolerance

    if all(close(change[image], branch[image]) for image in range(len(x))):
        raise AssertionError(f"{training_case}: every image's residual branch is kept as it is, none dropped and none "
                             f"scaled: the block has no stochastic depth in training mode (stochastic_depth_prob "
                             f"ignored, or applied only when not training?)")
    dropped = 0
    for image in range(len(x)):
        if close(change[image], 0.0):
            dropped += 1
        elif close(change[image], branch[image] / (1 - p)):
            continue
        elif close(change[image], branch[image]):
            raise AssertionError(f"{training_case}: image {image}'s residual branch is kept but not scaled by "
                                 f"1 / (1 - p) = {1 / (1 - p):g}: the expected output must not change")
        elif close(change[image], branch[image] / p):
            raise AssertionError(f"{training_case}: image {image}'s residual branch is scaled by 1 / p = {1 / p:g}, "
                                 f"where a kept branch is scaled by 1 / (1 - p) = {1 / (1 - p):g} (p is the "
                                 f"probability of dropping)")
        else:
            unchanged = float((change[image].abs() <= tolerance).float().mean())
            raise AssertionError(
                f"{training_case}: image {image}'s output is neither its input (branch dropped) nor its input plus "
                f"its residual branch scaled by 1 / (1 - p) = {1 / (1 - p):g} (branch kept); {unchanged:.0%} of its "
                f"values are the input's (stochastic depth drops a whole image's branch with one draw per image, not "
                f"single values as dropout does; and only the branch, before the addition)")
    expected = p * len(x)
    if not 0.25 * expected <= dropped <= 2 * expected:
        raise AssertionError(f"{training_case}: {dropped} of {len(x)} images had their residual branch dropped; "
                             f"with p = {p:g} about {expected:.0f} should be (p is the probability of dropping)")

    evaluation_case = f"{case} in evaluation mode on {STOCHASTIC_DEPTH_IMAGES} images"
    _assert_nothing_dropped(dropping, keeping, x, False, evaluation_case,
                            "stochastic depth drops branches in training mode only (check self.training)")

    arguments = (16, 24, 3, 2, 6)  # stride 2: no residual connection, nothing to drop
    dropping, keeping, case, _ = _same_weights_pair(MBConv, arguments)
    x = torch.randn(STOCHASTIC_DEPTH_IMAGES, 16, 8, 8, generator=generator)  # (N, C, H, W)
    _assert_nothing_dropped(dropping, keeping, x, True,
                            f"{case} (no residual connection) in training mode on {STOCHASTIC_DEPTH_IMAGES} images",
                            "a block without a residual connection has no branch to drop (dropping it would drop the "
                            "whole block's output)")
    return dropped


def _assert_nothing_dropped(dropping, keeping, x, training, case, why):
    """The block built with ``STOCHASTIC_DEPTH_PROB`` must give the outputs of the one built with 0."""
    with_drop, without_drop = _run_both(dropping, keeping, x, training, case)
    tolerance = VALUE_TOLERANCE * float(without_drop.abs().max())
    differ = sum(float((a - b).abs().max()) > tolerance for a, b in zip(with_drop, without_drop))
    if differ:
        raise AssertionError(f"{case}: the output differs from the block's with stochastic_depth_prob=0 for {differ} "
                             f"of {len(x)} images; {why}")


def check_mbconv(MBConv):
    """``MBConv(in_channels, out_channels, kernel_size, stride, expand_ratio, stochastic_depth_prob)``.

    Five blocks against torchvision's ``MBConv`` in evaluation mode, then the stochastic depth in training mode.
    """
    for in_channels, out_channels, kernel_size, stride, expand_ratio, size in MBCONV_CASES:
        arguments = (in_channels, out_channels, kernel_size, stride, expand_ratio)
        case = f"{_mbconv_case(arguments, MBCONV_EVAL_PROB)} on a {size}x{size} input"
        block = _build(MBConv, *arguments, MBCONV_EVAL_PROB, case=case, what="MBConv")
        check_same_architecture(block, reference_mbconv(*arguments, MBCONV_EVAL_PROB), (2, in_channels, size, size),
                                name=case)
    dropped = _check_stochastic_depth(MBConv)
    print(f"✓ stochastic depth in training mode: {dropped} of {STOCHASTIC_DEPTH_IMAGES} residual branches dropped "
          f"with p = {STOCHASTIC_DEPTH_PROB:g}, the others scaled by 1 / (1 - p); nothing dropped in evaluation mode "
          f"nor without a residual connection.")
    common.passed("MBConv", len(MBCONV_CASES) + 3)
