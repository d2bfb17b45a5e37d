"""Checks for the exercises of ``solutions/11_convnext.ipynb``: ConvNeXt's pieces, against torchvision.

The learner writes

* ``LayerNorm2d(num_channels, eps=1e-6)``: a layer norm over the channels of every pixel of an (N, C, H, W)
  tensor, with learnable ``weight`` and ``bias`` of C values each. The reference is ``F.layer_norm`` on the tensor
  permuted to (N, H, W, C), computed here; values and gradients are compared, on inputs where eps matters;
* ``ConvNeXtBlock(dim, layer_scale=1e-6, stochastic_depth_prob=0.0)``: 7x7 depthwise convolution, layer norm
  (eps 1e-6), 1x1 to 4 * dim, GELU, 1x1 back to dim, layer scale, stochastic depth, residual addition (Liu et al.
  2022, Fig. 4), against ``torchvision.models.convnext.CNBlock``; the pointwise layers may be ``nn.Linear`` on
  channels last or 1x1 convolutions on channels first;
* ``ConvNeXtStage(in_channels, out_channels, num_blocks, layer_scale=1e-6)``: the downsampling layer (layer norm,
  then a 2x2 convolution with stride 2) and ``num_blocks`` blocks, against the same two pieces of a torchvision
  ``ConvNeXt`` (its ``features[2]`` and ``features[3]``);
* ``ConvNeXtTiny(num_classes=1000)``: against ``torchvision.models.convnext_tiny(weights=None)``.

The architecture checks call ``course_utils.checks.architectures.check_same_architecture`` (parameters paired
with the reference's, every operation's value with the reference's redrawn weights). Two things need more:

* **eps.** A layer norm with eps 1e-5 (``nn.LayerNorm``'s default) instead of ConvNeXt's 1e-6 changes values
  of order one by about 1e-6, below any tolerance. So every ``layer_norm`` call of the learner's forward pass must
  have the eps of the reference's, and the block and the stage are also compared on an input scaled by 1e-3,
  where a hand-written layer norm with the wrong eps gives other values.
* **Training mode.** ``check_same_architecture`` compares eval-mode passes, where stochastic depth does nothing.
  The block check also runs the learner's block in training mode with ``stochastic_depth_prob=0.5``: each
  sample's residual branch must be either dropped or kept and divided by 1 - p (Huang et al. 2016; torchvision's
  ``StochasticDepth(p, mode="row")``), independently for each sample. And the layer scale must start at the value
  given (Touvron et al. 2021).

What has to happen where the learner's module lives (under ``course-grade``, in the learner's kernel) is done by the
``learner_`` probes, run through ``learner.run``: setting a layer norm's weight and bias and running its forward and
backward passes, reading the block's parameters, the eval- and training-mode passes with a seeded generator, and
wrapping the learner's model to scale its input. They send back plain data (outputs, gradients, parameters) or the
wrapper's handle; every comparison stays here.
"""
import functools

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlock, CNBlockConfig, ConvNeXt

from course_utils.checks import common, learner
from course_utils.checks.architectures import check_same_architecture, learner_pass
from course_utils.tracing import forward_operations

EPS = 1e-6  # ConvNeXt's layer-norm eps (torchvision's LayerNorm2d and CNBlock); nn.LayerNorm's default is 1e-5
SMALL_INPUT_SCALE = 1e-3  # an input this small leaves the layer norms' variance near eps, where eps shows
LAYER_NORM_DEFAULT_EPS = 1e-5  # what F.layer_norm uses when called without eps


# --------------------------------------------------------------------------- LayerNorm2d

def reference_layer_norm_2d(x, weight, bias, eps=EPS):
    """Layer norm over the channels of each pixel: ``F.layer_norm`` on x permuted to channels last.

    Args:
        x: (N, C, H, W).
        weight, bias: (C,).
        eps: added to the variance (the biased one, over the C channels) before the square root.

    Returns:
        (N, C, H, W): ``(x - mean_C) / sqrt(var_C + eps) * weight + bias`` at every (n, h, w).
    """
    channels_last = x.permute(0, 2, 3, 1)  # (N, H, W, C)
    normalised = F.layer_norm(channels_last, (x.shape[1],), weight, bias, eps)  # (N, H, W, C)
    return normalised.permute(0, 3, 1, 2)  # (N, C, H, W)


def _describe(value):
    """How a value is named in a message: a tensor by its class and shape, anything else by its class."""
    if isinstance(value, torch.Tensor):
        return f"a {type(value).__name__} of shape {tuple(value.shape)}"
    return repr(value)[:60]


def learner_layer_norm_2d_pass(module, num_channels, weight, bias, x, upstream, case):
    """The learner's side of ``check_layer_norm_2d``: one forward and backward pass of ``module``, as plain data.

    Sets the module's ``weight`` and ``bias`` to the values given (``(C,)`` each, reshaped to the module's shapes),
    runs ``module(x)`` on a copy of ``x`` that requires a gradient, then backpropagates ``upstream`` (dL/d(output))
    when the output is a tensor of ``x``'s shape that depends on ``x`` through autograd.

    Returns ``{"parameter": "weight" or "bias", "got": what it is}`` when that attribute is not a learnable
    ``nn.Parameter`` of ``num_channels`` values; else ``{"output": the output (detached when a tensor),
    "requires_grad": bool, "gradients": {"x", "weight", "bias": tensor or None}, "backward_error": the exception
    the backward pass raised, or None}``. A crash of the forward pass raises ``AssertionError`` naming ``case``.
    """
    parameters = []
    for name in ("weight", "bias"):
        parameter = getattr(module, name, None)
        if not isinstance(parameter, nn.Parameter) or parameter.numel() != num_channels:
            return {"parameter": name, "got": _describe(parameter)}
        parameters.append(parameter)
    module_weight, module_bias = parameters
    with torch.no_grad():
        module_weight.copy_(weight.reshape(module_weight.shape))  # (C,) -> the learner's shape, e.g. (C, 1, 1)
        module_bias.copy_(bias.reshape(module_bias.shape))  # (C,) -> the learner's shape
    learner_x = x.clone().requires_grad_(True)
    module_weight.grad, module_bias.grad = None, None

    def forward(x):
        return module(x)

    out = common.call(forward, learner_x, case=case)
    if not isinstance(out, torch.Tensor):
        return {"output": out, "requires_grad": False, "gradients": {}, "backward_error": None}
    backward_error = None
    if out.requires_grad and tuple(out.shape) == tuple(upstream.shape):
        try:
            (out * upstream).sum().backward()
        except Exception as error:
            backward_error = error
    gradients = {name: None if tensor.grad is None else tensor.grad.detach().clone()
                 for name, tensor in (("x", learner_x), ("weight", module_weight), ("bias", module_bias))}
    return {"output": out.detach(), "requires_grad": bool(out.requires_grad), "gradients": gradients,
            "backward_error": backward_error}


def check_layer_norm_2d(LayerNorm2d):
    """``LayerNorm2d(num_channels, eps=1e-6)`` against ``F.layer_norm`` on the permuted tensor, on six cases.

    Each case sets ``weight`` and ``bias`` to random values and compares the output, then the gradients of
    the input, ``weight`` and ``bias`` for a random upstream gradient (within 1e-4 relative, 1e-5 of the largest
    value). Cases: a small tensor; W equal to C (a weight broadcast over W instead of C would pass unnoticed
    otherwise); values around 30 (normalising removes the mean); values of size 1e-3, whose variance is about eps
    (eps 1e-6 inside the square root, not 1e-5, not outside); the same with ``eps=1e-5`` given; 1x1 maps.
    """
    # (what, shape (N, C, H, W), eps passed or None for the default, standard deviation, mean)
    cases = [
        ("a small tensor", (2, 3, 4, 5), None, 1.0, 0.0),
        ("W equal to C", (2, 6, 3, 6), None, 1.5, 0.2),
        ("values around 30", (3, 8, 5, 5), None, 2.0, 30.0),
        ("values of size 1e-3 (variance near eps)", (2, 16, 4, 4), None, 1e-3, 0.0),
        ("values of size 1e-3 with eps=1e-5 given", (2, 16, 4, 4), 1e-5, 1e-3, 0.0),
        ("1x1 maps", (4, 32, 1, 1), None, 1.0, -1.0),
    ]
    generator = torch.Generator().manual_seed(11)
    for what, shape, eps, std, mean in cases:
        N, C, H, W = shape
        arguments = f"LayerNorm2d({C})" if eps is None else f"LayerNorm2d({C}, eps={eps:g})"
        case = f"{arguments} on {what}, x of shape {shape}"
        module = common.call(LayerNorm2d, C, case=case) if eps is None else \
            common.call(LayerNorm2d, C, eps=eps, case=case)
        if not common.is_module(module):
            raise AssertionError(f"{case}: LayerNorm2d({C}) should be an nn.Module; got {common.type_name(module)}")
        values = (1.0 + 0.5 * torch.randn(C, generator=generator), 0.5 * torch.randn(C, generator=generator))
        x = mean + std * torch.randn(shape, generator=generator)  # (N, C, H, W)
        upstream = torch.randn(shape, generator=generator)  # dL/d(output), (N, C, H, W)

        reference_x = x.clone().requires_grad_(True)
        reference_weight, reference_bias = (v.clone().requires_grad_(True) for v in values)
        expected = reference_layer_norm_2d(reference_x, reference_weight, reference_bias,
                                           EPS if eps is None else eps)
        (expected * upstream).sum().backward()

        reply = learner.run(learner_layer_norm_2d_pass, module, C, values[0], values[1], x, upstream, case)
        if "parameter" in reply:
            raise AssertionError(f"{case}: LayerNorm2d({C}).{reply['parameter']} should be a learnable nn.Parameter "
                                 f"of {C} values (one per channel, as nn.LayerNorm's); got {reply['got']}")
        out = reply["output"]
        if not isinstance(out, torch.Tensor):
            raise AssertionError(f"{case}: the output should be a tensor of shape {shape}; got {common.type_name(out)}")
        common.assert_shape(out, shape, case, what="the output (N, C, H, W)")
        scale = float(expected.detach().abs().max())
        common.assert_close(out.detach(), expected.detach(), case, what="output", rtol=1e-4, atol=1e-5 * scale)
        if not reply["requires_grad"]:
            raise AssertionError(f"{case}: the output does not depend on x through autograd (computed under "
                                 f"torch.no_grad(), or from detached values?)")
        if reply["backward_error"] is not None:
            raise reply["backward_error"]
        for name, reference in (("x", reference_x.grad), ("weight", reference_weight.grad),
                                ("bias", reference_bias.grad)):
            received = reply["gradients"].get(name)
            if received is None:
                raise AssertionError(f"{case}: no gradient reaches {name} (is it used, and not detached?)")
            gradient_scale = float(reference.abs().max())
            common.assert_close(received.reshape(reference.shape), reference, case,  # e.g. (C, 1, 1) -> (C,)
                                what=f"the gradient of the loss with respect to {name}", rtol=1e-3,
                                atol=1e-4 * gradient_scale)
    common.passed("LayerNorm2d", len(cases))


# --------------------------------------------------------------------------- what every architecture check adds

class _ScaledInput(nn.Module):
    """``model(x * scale)``: the same network, fed small values (so that the layer norms' eps shows)."""

    def __init__(self, model, scale):
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(self, x):
        return self.model(x * self.scale)


def learner_scaled_input(model, scale):
    """``_ScaledInput(model, scale)`` built where the learner's ``model`` lives: under the grader, a handle of it."""
    return _ScaledInput(model, scale)


def _traced_operations(model, x):
    """The operations of one eval-mode pass of the reference ``model(x)``, every module's mode restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        return forward_operations(model, x, keep_outputs=False)[1]
    finally:
        for module, training in modes:
            module.training = training


def _assert_layer_norm_eps(model, reference, input_shape, case):
    """Every ``layer_norm`` of the learner's pass uses an eps that the reference's layer norms use."""
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))  # e.g. (N, C, H, W)
    expected = {op.arguments.get("eps", LAYER_NORM_DEFAULT_EPS) for op in _traced_operations(reference, x)
                if op.kind == "layer_norm"}
    for op in learner_pass(model, x, keep_outputs=False).operations:
        eps = op.arguments.get("eps", LAYER_NORM_DEFAULT_EPS)
        if op.kind == "layer_norm" and eps not in expected:
            wanted = " or ".join(f"{value:g}" for value in sorted(expected))
            raise AssertionError(f"{case}: the learner's {op.where()} uses eps={eps:g}; ConvNeXt's layer norms use "
                                 f"eps={wanted} (nn.LayerNorm and F.layer_norm default to 1e-5: pass eps=1e-6)")


def _check_architecture(model, reference, input_shape, case, small_input=True):
    """Same operations and values as the reference, with ConvNeXt's eps; also on a small input when asked."""
    check_same_architecture(model, reference, input_shape, name=case)
    _assert_layer_norm_eps(model, reference, input_shape, case)
    if small_input:
        check_same_architecture(learner.run(learner_scaled_input, model, SMALL_INPUT_SCALE),
                                _ScaledInput(reference, SMALL_INPUT_SCALE), input_shape,
                                name=f"{case}, input scaled by {SMALL_INPUT_SCALE:g} (where eps matters)")


# --------------------------------------------------------------------------- ConvNeXtBlock

def learner_parameters(module):
    """The learner's ``module.parameters()``: a list of detached copies."""
    return [parameter.detach().clone() for parameter in module.parameters()]


def _check_layer_scale_start(ConvNeXtBlock, dim=16, layer_scale=0.3):
    case = f"ConvNeXtBlock({dim}, layer_scale={layer_scale})"
    block = common.call(ConvNeXtBlock, dim, layer_scale=layer_scale, stochastic_depth_prob=0.0, case=case)
    if not common.is_module(block):
        raise AssertionError(f"{case}: ConvNeXtBlock should return an nn.Module; got {common.type_name(block)}")
    for parameter in learner.run(learner_parameters, block):
        if parameter.numel() == dim and torch.allclose(parameter, torch.full_like(parameter, layer_scale)):
            return
    raise AssertionError(f"{case}: no parameter holds {dim} values equal to {layer_scale}: the layer scale is a "
                         f"learnable vector of one value per channel that starts at the layer_scale given, e.g. "
                         f"nn.Parameter(torch.full((dim,), layer_scale))")


def learner_eval_and_train_outputs(block, x, seed, case):
    """``(block(x) in evaluation mode, then block(x) in training mode)`` where the learner's ``block`` lives.

    Both under ``torch.no_grad()``, with torch's generator seeded with ``seed`` first (and restored after), every
    module's mode restored after. A crash raises ``AssertionError`` naming ``case``.
    """
    modes = [(module, module.training) for module in block.modules()]
    try:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(seed)
            block.eval()
            evaluation = common.call(block, x, case=case + " (eval mode)")
            block.train()
            training = common.call(block, x, case=case)
    finally:
        for module, training_mode in modes:
            module.training = training_mode
    return evaluation, training


def _check_stochastic_depth(ConvNeXtBlock, dim=8, p=0.5, batch=64, size=5):
    """In training mode each sample's branch is dropped, or kept and divided by 1 - p; both happen in a batch."""
    case = f"ConvNeXtBlock({dim}, layer_scale=1.0, stochastic_depth_prob={p}) in training mode, batch of {batch}"
    block = common.call(ConvNeXtBlock, dim, layer_scale=1.0, stochastic_depth_prob=p, case=case)
    if not common.is_module(block):
        raise AssertionError(f"{case}: ConvNeXtBlock should return an nn.Module; got {common.type_name(block)}")
    x = torch.randn(batch, dim, size, size, generator=torch.Generator().manual_seed(1))  # (N, C, H, W)
    evaluation, out = learner.run(learner_eval_and_train_outputs, block, x, 0, case)
    for output, where in ((evaluation, case + " (eval mode)"), (out, case)):
        if not isinstance(output, torch.Tensor):
            raise AssertionError(f"{where}: the block should return a tensor of shape {tuple(x.shape)}; got "
                                 f"{common.type_name(output)}")
        common.assert_shape(output, x.shape, where, what="the output")
    branch = evaluation - x  # the residual branch of every sample
    scale = float((x + branch / (1 - p)).abs().max())

    def close(a, b):
        return bool(((a - b).abs() <= 1e-5 * scale + 1e-4 * b.abs()).all())

    dropped = []
    for n in range(batch):
        if close(out[n], x[n]):
            dropped.append(n)
        elif close(out[n], x[n] + branch[n] / (1 - p)):
            continue
        elif close(out[n], x[n] + branch[n]):
            raise AssertionError(f"{case}: sample {n} keeps its residual branch without dividing it by 1 - p = "
                                 f"{1 - p:g}; stochastic depth rescales what it keeps, so that the expected output "
                                 f"is the eval-mode one")
        else:
            raise AssertionError(f"{case}: sample {n}'s output is neither its input (branch dropped) nor its input "
                                 f"plus its eval-mode branch divided by 1 - p (branch kept): stochastic depth drops "
                                 f"a sample's whole residual branch, not single values (a dropout?), and never the "
                                 f"shortcut (torchvision.ops.StochasticDepth(p, mode='row') on the branch)")
    if not dropped or len(dropped) == batch:
        alike = "dropped" if dropped else "kept"
        raise AssertionError(f"{case}: every sample's branch was {alike}: with p = {p:g} each sample is dropped "
                             f"independently (mode='row'; mode='batch' drops the whole batch at once)"
                             + (", or stochastic_depth_prob is not used" if not dropped else ""))


def check_convnext_block(ConvNeXtBlock):
    """``ConvNeXtBlock(dim, layer_scale, stochastic_depth_prob)`` against torchvision's ``CNBlock``.

    Cases (dim, H, W, stochastic_depth_prob): (16, 9, 9, 0.0), (8, 7, 7, 0.1) (in eval mode stochastic depth is
    the identity), (96, 8, 8, 0.0) (ConvNeXt-Tiny's first stage), (12, 5, 11, 0.0) (not square); the first also on
    an input scaled by 1e-3. Then the layer scale's starting value and stochastic depth in training mode.
    """
    cases = [(16, 9, 9, 0.0), (8, 7, 7, 0.1), (96, 8, 8, 0.0), (12, 5, 11, 0.0)]
    for index, (dim, H, W, p) in enumerate(cases):
        case = f"ConvNeXtBlock({dim}, layer_scale=1e-6, stochastic_depth_prob={p}) on {H}x{W} inputs"
        block = common.call(ConvNeXtBlock, dim, layer_scale=1e-6, stochastic_depth_prob=p, case=case)
        reference = CNBlock(dim, layer_scale=1e-6, stochastic_depth_prob=p)
        _check_architecture(block, reference, (2, dim, H, W), case, small_input=index == 0)
    _check_layer_scale_start(ConvNeXtBlock)
    _check_stochastic_depth(ConvNeXtBlock)
    common.passed("ConvNeXtBlock", len(cases) + 2)


# --------------------------------------------------------------------------- ConvNeXtStage

def reference_stage(in_channels, out_channels, num_blocks, layer_scale=1e-6):
    """torchvision's downsampling layer and stage: ``features[2:4]`` of a two-stage ``ConvNeXt``."""
    network = ConvNeXt([CNBlockConfig(in_channels, out_channels, 1), CNBlockConfig(out_channels, None, num_blocks)],
                       layer_scale=layer_scale)
    return nn.Sequential(network.features[2], network.features[3])  # (LayerNorm2d, Conv2d 2x2/2), blocks


def check_convnext_stage(ConvNeXtStage):
    """``ConvNeXtStage(in_channels, out_channels, num_blocks)`` against torchvision's downsampling layer and stage.

    Cases (in_channels, out_channels, num_blocks, input size): (8, 16, 2, 10), also on an input scaled by 1e-3,
    where the downsampling layer norm's eps matters; (96, 192, 3, 8), ConvNeXt-Tiny's second stage; (12, 24, 1, 9),
    an odd size (the 2x2 convolution with stride 2 drops the last row and column).
    """
    cases = [(8, 16, 2, 10), (96, 192, 3, 8), (12, 24, 1, 9)]
    for index, (in_channels, out_channels, num_blocks, size) in enumerate(cases):
        case = f"ConvNeXtStage({in_channels}, {out_channels}, {num_blocks}) on {size}x{size} inputs"
        stage = common.call(ConvNeXtStage, in_channels, out_channels, num_blocks, case=case)
        reference = reference_stage(in_channels, out_channels, num_blocks)
        _check_architecture(stage, reference, (2, in_channels, size, size), case, small_input=index == 0)
    common.passed("ConvNeXtStage", len(cases))


# --------------------------------------------------------------------------- ConvNeXt-Tiny

@functools.lru_cache(maxsize=1)
def _convnext_tiny():
    """``torchvision.models.convnext_tiny(weights=None)``, built once (its 28.6M weights take seconds to draw).

    The check never changes it: ``check_same_architecture`` works on a copy.
    """
    return torchvision.models.convnext_tiny(weights=None)


def check_convnext_tiny(ConvNeXtTiny):
    """``ConvNeXtTiny()`` against ``torchvision.models.convnext_tiny(weights=None)`` on a (2, 3, 32, 32) input.

    The patchify stem divides 32 by 4 and the three downsampling layers by 2 each, leaving 1x1 maps: every layer
    runs, quickly. Every layer norm's eps is compared with torchvision's too.
    """
    case = "ConvNeXtTiny() against torchvision.models.convnext_tiny(weights=None) on 32x32 inputs"
    model = common.call(ConvNeXtTiny, case=case)
    _check_architecture(model, _convnext_tiny(), (2, 3, 32, 32), case, small_input=False)
    common.passed("ConvNeXt-Tiny", 1)
