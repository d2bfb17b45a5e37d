"""Checks for the exercises of ``solutions/14_visualising_cnns.ipynb``: saliency, Grad-CAM and a linear probe.

The learner writes

* ``saliency(model, x, targets)``: vanilla-gradient saliency (Simonyan, Vedaldi & Zisserman 2014, section 3.1), the
  largest absolute gradient over the colour channels of each image's target logit with respect to its pixels,
  (N, H, W); checked against captum's ``Saliency`` (``abs=True``, then the maximum over channels);
* ``grad_cam(model, layer, x, targets)``: Grad-CAM (Selvaraju et al. 2017, equations 1 and 2): the target logit's
  gradients with respect to ``layer``'s output averaged over space give one weight per channel, the weighted sum of
  the channels goes through a ReLU and is upsampled bilinearly to the input's size, (N, H, W); checked against
  captum's ``LayerGradCam`` (``relu_attributions=True``) and ``LayerAttribution.interpolate`` (bilinear);
* ``pooled_features(model, layer, x)``: the spatial average of ``layer``'s output, (N, C); checked against captum's
  ``LayerActivation`` averaged over H and W;
* ``fit_linear_probe(features, labels, num_classes, l2)``: the regularised least-squares (ridge) classifier on
  one-hot targets, with an unregularised bias, returning ``(weight (K, D), bias (K,))``; checked against the solution
  of the equivalent augmented least-squares problem by ``scipy.linalg.lstsq`` (see ``reference_linear_probe``).

The networks are EfficientNet-Lite0 with its ImageNet weights (``course_utils.models.efficientnet_lite``) on the
bundled photos, and a small CIFAR-style ResNet (``course_utils.models.resnet``, width 8, one input channel) with
weights drawn from a fixed seed, on bundled digits. A check cannot send a network to the learner's kernel, so the
learner's functions are called by ``learner_on_network``, a probe that builds the network by name where the
learner's function lives (under ``course-grade``, in the learner's kernel) and passes it, the layer named in the
case and the plain inputs; it sends back what the function returned and the inputs as they are after the call (so
that an input changed in place shows here, in split mode too). The references are computed here, on this
process's own copy of the network: whatever the learner's code does to its copy can change only what comes back.
"""
import functools

import numpy as np
import scipy.linalg
import torch
from captum.attr import LayerActivation, LayerAttribution, LayerGradCam, LayerGradientXActivation, Saliency

from course_utils.checks import common, learner
from course_utils.data import load_photo, mnist_5k_tensors
from course_utils.models.efficientnet_lite import efficientnet_lite0, preprocess
from course_utils.models.resnet import resnet18

NETWORKS = ("efficientnet_lite0", "digit_resnet")  # the networks the cases use, by name
DIGIT_RESNET_SEED = 0  # the random weights of the digit ResNet
DIGIT_RESNET_WIDTH = 8  # channels of its first stage (64 in the paper): small enough for a CPU
MAP_RTOL = 1e-3  # maps: relative tolerance, plus MAP_ATOL times the largest expected value
MAP_ATOL = 1e-4
PROBE_TOLERANCE = 1e-5  # linear probe: relative to the largest expected weight or bias


# --------------------------------------------------------------------------- networks and inputs

def build_network(name):
    """A network of the cases by name, in evaluation mode, on the CPU.

    ``"efficientnet_lite0"``: EfficientNet-Lite0 with its ImageNet weights (224x224 photos, 1000 classes);
    ``"digit_resnet"``: ``resnet18(num_classes=10, in_channels=1, width=8)`` with the weights drawn after
    ``torch.manual_seed(DIGIT_RESNET_SEED)`` (torch's global generator is restored after), for 28x28 digits.
    """
    if name == "efficientnet_lite0":
        return efficientnet_lite0()
    if name == "digit_resnet":
        with torch.random.fork_rng():
            torch.manual_seed(DIGIT_RESNET_SEED)
            return resnet18(num_classes=10, in_channels=1, width=DIGIT_RESNET_WIDTH).eval()
    raise ValueError(f"network must be one of {NETWORKS}; got {name!r}")


@functools.lru_cache(maxsize=None)
def _reference_network(name):
    """This process's own copy of a network, for the references (captum removes its hooks after each call)."""
    return build_network(name)


def learner_on_network(function, network, layer, case, *inputs):
    """``function(model, [layer,] *inputs)`` where ``function`` lives, on a network built there by name.

    ``layer`` names a submodule of the network (``"head"``, ``"blocks.10"``, ``"layer3"``) that is passed after the
    model, or is None for a function that takes no layer. The network is built afresh for each call, so that hooks
    or gradients a learner's function leaves behind cannot reach the next case. Returns ``{"result": what the
    function returned (a tensor detached), "inputs": the inputs as they are after the call}``, so that the check can
    see an input the function changed in place; a crash raises ``AssertionError`` naming ``case``.
    """
    model = build_network(network)
    arguments = (model,) if layer is None else (model, model.get_submodule(layer))
    result = common.call(function, *arguments, *inputs, case=case)
    if isinstance(result, torch.Tensor):
        result = result.detach()
    return {"result": result, "inputs": list(inputs)}


def _name(function):
    name = getattr(function, "__name__", None)
    return name if isinstance(name, str) else "the function"


def _run_on_network(function, network, layer, case, *inputs):
    """The learner's ``function`` on ``network`` (``learner_on_network``); its result, after checking the inputs.

    Raises ``AssertionError`` when the function changed one of its inputs in place.
    """
    before = [value.clone() for value in inputs]
    reply = learner.run(learner_on_network, function, network, layer, case, *inputs)
    after = reply.get("inputs") if isinstance(reply, dict) else None
    if not (isinstance(after, list) and len(after) == len(inputs)):
        raise AssertionError(f"{case}: the learner's kernel sent back no result")
    for name, value, original in zip(("x", "targets"), after, before):
        if not (isinstance(value, torch.Tensor) and value.shape == original.shape and torch.equal(value, original)):
            raise AssertionError(f"{case}: {_name(function)} changed its "
                                 f"input {name} in place")
    return reply.get("result")


def photo_batch(names):
    """The bundled photos ``names`` as EfficientNet-Lite0's input, (N, 3, 224, 224)."""
    return torch.cat([preprocess(load_photo(name)) for name in names])  # (N, 3, 224, 224)


def digit_batch(indices):
    """Bundled test digits (normalised) by index, (N, 1, 28, 28)."""
    x, _ = mnist_5k_tensors("test")
    return x[list(indices)].clone()  # (N, 1, 28, 28)


def _inputs(network, images):
    return photo_batch(images) if network == "efficientnet_lite0" else digit_batch(images)


def _top_classes(network, x):
    with torch.no_grad():
        return _reference_network(network)(x).argmax(dim=1)  # (N,)


# --------------------------------------------------------------------------- comparing maps

def _as_tensor(value, case, what, shape):
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{case}: {what} should return a tensor of shape {tuple(shape)}; got "
                             f"{common.type_name(value)}")
    return value.detach().cpu().double()  # a learner may have moved it to a GPU


def _matches(received, candidate):
    if received.shape != candidate.shape:
        return False
    scale = float(candidate.abs().max())
    return bool(((received - candidate).abs() <= MAP_ATOL * scale + MAP_RTOL * candidate.abs()).all())


def _compare_maps(received, expected, case, what, mistakes):
    """Assert ``received`` is ``expected``; on failure name the first of ``mistakes`` it matches.

    ``mistakes`` maps an explanation to the map that mistake gives (a tensor, or a function of the received map
    returning one), tried in order.
    """
    if _matches(received, expected):
        return
    for explanation, candidate in mistakes.items():
        candidate = candidate(received) if callable(candidate) else candidate
        if candidate is not None and _matches(received, candidate.double()):
            raise AssertionError(f"{case}: {what} is not the expected map: it matches {explanation}")
    scale = float(expected.abs().max())
    common.assert_close(received, expected, case, what=what, rtol=MAP_RTOL, atol=MAP_ATOL * scale)


# --------------------------------------------------------------------------- saliency

# (network, images: photo names or digit indices, targets: "top" for each image's most probable class, or indices)
SALIENCY_CASES = (
    ("efficientnet_lite0", ("chelsea",), "top"),
    ("efficientnet_lite0", ("astronaut", "coffee"), (281, 967)),  # tabby cat, espresso: one class is not the top
    ("digit_resnet", (0, 1, 2), (7, 2, 0)),
)


def _targets(network, x, targets):
    if targets == "top":
        return _top_classes(network, x)
    return torch.tensor(targets, dtype=torch.int64)  # (N,)


def _describe(network, images, targets, layer=None):
    what = "photos" if network == "efficientnet_lite0" else "test digits"
    at = f" at layer {layer!r}" if layer is not None else ""
    return f"{network}{at} on {what} {list(images)}, target classes {targets.tolist()}"


def check_saliency(saliency):
    """``saliency(model, x, targets)`` against captum's ``Saliency(model)`` (abs=True, then max over channels)."""
    for network, images, target_spec in SALIENCY_CASES:
        x = _inputs(network, images)
        targets = _targets(network, x, target_spec)
        case = f"saliency on {_describe(network, images, targets)}"
        attribution = Saliency(_reference_network(network)).attribute(x.clone().requires_grad_(True), target=targets, abs=False)
        attribution = attribution.detach().double()  # (N, C, H, W): the signed gradients
        expected = attribution.abs().amax(dim=1)  # (N, H, W)
        received = _run_on_network(saliency, network, None, case, x, targets)
        received = _as_tensor(received, case, "saliency", expected.shape)
        if received.shape == expected.shape[1:] and len(x) == 1:
            raise AssertionError(f"{case}: saliency returned shape {tuple(received.shape)}, expected "
                                 f"{tuple(expected.shape)}: keep the batch dimension N")
        if received.shape == attribution.shape:
            raise AssertionError(f"{case}: saliency returned shape {tuple(received.shape)} (N, C, H, W), expected "
                                 f"{tuple(expected.shape)} (N, H, W): take the maximum over the channels")
        _compare_maps(received, expected, case, "saliency(model, x, targets)", {
            "the gradients without their absolute value (the maximum of the signed gradients over the channels): "
            "saliency is the largest |gradient|": attribution.amax(dim=1),
            "the mean of |gradient| over the channels, where saliency takes the maximum": attribution.abs().mean(1),
            "the sum of |gradient| over the channels, where saliency takes the maximum": attribution.abs().sum(1),
            "|gradient x input|, where saliency is the gradient alone": (attribution * x).abs().amax(dim=1),
        })
    common.passed("saliency", len(SALIENCY_CASES))


# --------------------------------------------------------------------------- Grad-CAM

# (network, layer, images, targets): the last feature map and two earlier ones, several images in one batch, a class
# that is not the top one (whose map has negative parts before the ReLU), and a ResNet stage (an nn.Sequential)
GRAD_CAM_CASES = (
    ("efficientnet_lite0", "head", ("chelsea", "coffee"), "top"),
    ("efficientnet_lite0", "blocks.15", ("astronaut",), (281,)),  # tabby cat on the astronaut
    ("efficientnet_lite0", "blocks.10", ("chelsea",), (285,)),  # Egyptian cat
    ("efficientnet_lite0", "blocks.5", ("coffee", "chelsea"), (967, 282)),  # espresso, tiger cat
    ("digit_resnet", "layer3", (3, 4), (0, 4)),
    ("digit_resnet", "layer4.1", (5,), (1,)),
)


def _grad_cam_mistakes(network, layer, x, targets, expected):
    """Maps of plausible mistakes, by explanation (computed with captum too)."""
    model = _reference_network(network)
    module = model.get_submodule(layer)
    size = tuple(x.shape[2:])
    grad_cam = LayerGradCam(model, module)
    unrelu = grad_cam.attribute(x.clone(), target=targets, relu_attributions=False).detach()  # (N, 1, h, w)
    product = LayerGradientXActivation(model, module).attribute(x.clone(), target=targets).detach()  # (N, C, h, w)
    h, w = unrelu.shape[2:]

    def up(maps, mode="bilinear"):
        return LayerAttribution.interpolate(maps, size, interpolate_mode=mode)[:, 0]  # (N, H, W)

    return {
        "Grad-CAM without the ReLU on the map (negative values kept)": up(unrelu),
        "Grad-CAM before the upsampling: the map should be resized to the input's size (bilinear)": unrelu.relu()[:, 0],
        "the ReLU applied after the upsampling instead of before": up(unrelu).relu(),
        "gradients not averaged over space: each position's gradient times its activation, summed over the "
        "channels (Grad-CAM weights each channel by its spatially averaged gradient)": up(product.sum(1, keepdim=True).relu()),
        f"gradients summed over space instead of averaged (the map is {h * w} = {h} x {w} times too large)":
            expected * (h * w),
        "Grad-CAM upsampled with 'nearest' instead of 'bilinear'": up(unrelu.relu(), mode="nearest"),
        "Grad-CAM upsampled with align_corners=True (use F.interpolate's default, align_corners=False)":
            torch.nn.functional.interpolate(unrelu.relu(), size=size, mode="bilinear", align_corners=True)[:, 0],
        "Grad-CAM divided by its maximum (leave the map unnormalised, as captum and the paper's equation 2 do)":
            lambda received: expected / expected.flatten(1).amax(1).clamp_min(1e-30)[:, None, None],
    }


def check_grad_cam(grad_cam):
    """``grad_cam(model, layer, x, targets)`` against captum's ``LayerGradCam`` upsampled bilinearly, six cases."""
    for network, layer, images, target_spec in GRAD_CAM_CASES:
        x = _inputs(network, images)
        targets = _targets(network, x, target_spec)
        case = f"grad_cam on {_describe(network, images, targets, layer)}"
        model = _reference_network(network)
        cam = LayerGradCam(model, model.get_submodule(layer)).attribute(x.clone(), target=targets,
                                                                        relu_attributions=True)  # (N, 1, h, w)
        expected = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[2:]), interpolate_mode="bilinear")
        expected = expected[:, 0].double()  # (N, H, W)
        received = _run_on_network(grad_cam, network, layer, case, x, targets)
        received = _as_tensor(received, case, "grad_cam", expected.shape)
        if received.dim() == 4 and received.shape[1] == 1:
            raise AssertionError(f"{case}: grad_cam returned shape {tuple(received.shape)}, expected "
                                 f"{tuple(expected.shape)} (N, H, W): drop the channel dimension")
        mistakes = _grad_cam_mistakes(network, layer, x, targets, expected)
        _compare_maps(received, expected, case, "grad_cam(model, layer, x, targets)", mistakes)
    common.passed("grad_cam", len(GRAD_CAM_CASES))


# --------------------------------------------------------------------------- pooled features

# (network, layer, images)
POOLED_FEATURES_CASES = (
    ("efficientnet_lite0", "blocks.3", ("chelsea", "camera")),
    ("efficientnet_lite0", "head", ("coffee",)),
    ("digit_resnet", "layer2", (0, 1, 2, 3)),
)


def check_pooled_features(pooled_features):
    """``pooled_features(model, layer, x)`` against captum's ``LayerActivation`` averaged over H and W."""
    for network, layer, images in POOLED_FEATURES_CASES:
        x = _inputs(network, images)
        what = "photos" if network == "efficientnet_lite0" else "test digits"
        case = f"pooled_features on {network} at layer {layer!r}, {what} {list(images)}"
        model = _reference_network(network)
        with torch.no_grad():
            activation = LayerActivation(model, model.get_submodule(layer)).attribute(x.clone())  # (N, C, h, w)
        activation = activation.double()
        expected = activation.mean(dim=(2, 3))  # (N, C)
        received = _run_on_network(pooled_features, network, layer, case, x)
        received = _as_tensor(received, case, "pooled_features", expected.shape)
        if received.shape == activation.shape:
            raise AssertionError(f"{case}: pooled_features returned the whole feature map {tuple(received.shape)}; "
                                 f"average it over H and W to get {tuple(expected.shape)}")
        if received.dim() == 2 and received.shape[0] == len(x) and received.shape[1] == activation[0].numel():
            raise AssertionError(f"{case}: pooled_features returned the flattened feature map "
                                 f"{tuple(received.shape)}; average over H and W instead, {tuple(expected.shape)}")
        _compare_maps(received, expected, case, "pooled_features(model, layer, x)", {
            "the maximum over H and W, where the features are the spatial average": activation.amax(dim=(2, 3)),
            "the sum over H and W, where the features are the spatial average": activation.sum(dim=(2, 3)),
        })
    common.passed("pooled_features", len(POOLED_FEATURES_CASES))


# --------------------------------------------------------------------------- the linear probe

def reference_linear_probe(features, labels, num_classes, l2):
    """The ridge classifier on one-hot targets, as one least-squares problem solved by ``scipy.linalg.lstsq``.

    The probe minimises ``||X W^T + 1 b^T - Y||^2 + l2 ||W||^2`` (Y the one-hot labels, (N, K); the bias b is not
    regularised). Stacking ``sqrt(l2) I`` under X (with a zero in the bias column) and zeros under Y turns the penalty
    into extra squared residuals, so the minimiser is the least-squares solution of

        [[X, 1], [sqrt(l2) I_D, 0]] [W^T; b^T] = [[Y], [0]]

    (Hastie, Tibshirani & Friedman, "The Elements of Statistical Learning", section 3.4.1, exercise 3.12), which
    lstsq solves by SVD without forming the normal equations the learner writes. Returns float64 arrays
    ``(weight (K, D), bias (K,))``.
    """
    X = np.asarray(features, dtype=np.float64)  # (N, D)
    N, D = X.shape
    Y = np.zeros((N, num_classes))  # (N, K)
    Y[np.arange(N), np.asarray(labels)] = 1.0
    design = np.block([[X, np.ones((N, 1))], [np.sqrt(l2) * np.eye(D), np.zeros((D, 1))]])  # (N + D, D + 1)
    target = np.vstack([Y, np.zeros((D, num_classes))])  # (N + D, K)
    solution = scipy.linalg.lstsq(design, target)[0]  # (D + 1, K)
    return solution[:D].T, solution[D]


def _probe_cases():
    generator = torch.Generator().manual_seed(0)
    cases = []
    # (what, features (N, D), labels (N,), num_classes, l2)
    x = torch.randn(60, 8, generator=generator)
    cases.append(("60 random features of width 8, 3 classes, l2=1", x, torch.randint(0, 3, (60,), generator=generator),
                  3, 1.0))
    x = 5.0 + 2.0 * torch.randn(80, 6, generator=generator)  # far from 0: a regularised bias shows
    labels = (x[:, 0] > 5).long() + (x[:, 1] > 5).long()
    cases.append(("80 features of mean 5 and width 6, 3 classes, l2=10", x, labels, 3, 10.0))
    x = torch.randn(20, 50, generator=generator)  # more features than examples: only l2 makes the solution unique
    cases.append(("20 features of width 50 (more features than examples), 4 classes, l2=0.5", x,
                  torch.randint(0, 4, (20,), generator=generator), 4, 0.5))
    x = torch.randn(30, 5, generator=generator).abs()
    cases.append(("30 features of width 5, labels 0 to 3 of 5 classes (class 4 never seen), l2=2", x,
                  torch.randint(0, 4, (30,), generator=generator), 5, 2.0))
    return cases


def check_linear_probe(fit_linear_probe):
    """``fit_linear_probe(features, labels, num_classes, l2)`` against the augmented least squares (scipy's lstsq)."""
    cases = _probe_cases()
    for what, features, labels, num_classes, l2 in cases:
        case = f"fit_linear_probe on {what}"
        weight, bias = reference_linear_probe(features.numpy(), labels.numpy(), num_classes, l2)
        before = (features.clone(), labels.clone())
        result = common.call(fit_linear_probe, features, labels, num_classes, l2, case=case)
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise AssertionError(f"{case}: fit_linear_probe should return (weight, bias); got "
                                 f"{common.type_name(result)}")
        received_weight, received_bias = (common.as_numpy(value) for value in result)
        if received_weight.shape == weight.T.shape and weight.shape != weight.T.shape:
            raise AssertionError(f"{case}: weight has shape {received_weight.shape}, expected {weight.shape} "
                                 f"(num_classes, D), as nn.Linear's weight")
        scale = max(float(np.abs(weight).max()), float(np.abs(bias).max()))
        X = before[0].double().numpy()  # (N, D)
        Y = np.eye(num_classes)[before[1].numpy()]  # (N, K)
        if received_weight.shape == weight.shape and received_bias.shape == bias.shape:
            received_weight, received_bias = received_weight.astype(np.float64), received_bias.astype(np.float64)
            D = X.shape[1]
            hints = {
                "no bias (the bias must be fitted, unregularised)": np.linalg.solve(X.T @ X + l2 * np.eye(D), X.T @ Y),
                "the bias regularised too (only the weights are)": np.linalg.solve(
                    np.c_[X, np.ones(len(X))].T @ np.c_[X, np.ones(len(X))] + l2 * np.eye(D + 1),
                    np.c_[X, np.ones(len(X))].T @ Y)[:D],
            }
            for explanation, candidate in hints.items():
                if np.allclose(received_weight, candidate.T, rtol=0, atol=PROBE_TOLERANCE * scale) and not np.allclose(
                        received_weight, weight, rtol=0, atol=PROBE_TOLERANCE * scale):
                    raise AssertionError(f"{case}: the weights are those of a ridge fit with {explanation}")
        if not (torch.equal(features, before[0]) and torch.equal(labels, before[1])):
            raise AssertionError(f"{case}: fit_linear_probe changed its inputs in place")
        common.assert_close(received_weight, weight, case, what="weight", rtol=0, atol=PROBE_TOLERANCE * scale)
        common.assert_close(received_bias, bias, case, what="bias", rtol=0, atol=PROBE_TOLERANCE * scale)
    common.passed("fit_linear_probe", len(cases))
