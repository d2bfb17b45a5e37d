"""The chapter 14 checks pass on correct saliency, Grad-CAM and linear probes and fail on the usual mistakes.

The correct answers are written here from the papers (Simonyan et al. 2014 section 3.1; Selvaraju et al. 2017
equations 1 and 2; the ridge classifier's normal equations), independently of the check's references (captum's
``Saliency``, ``LayerGradCam`` and ``LayerActivation``; scipy's ``lstsq`` on the augmented system); some are written
differently on purpose (``torch.autograd.grad`` on a captured activation instead of hooks, an einsum, centred
features instead of a bias column). Each wrong answer changes one thing.
"""
import pytest
import torch
from torch.nn import functional as F

from course_utils.checks import visualising_cnns as checks
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


@pytest.mark.parametrize("check", [checks.check_saliency, checks.check_grad_cam, checks.check_pooled_features,
                                   checks.check_linear_probe], ids=lambda check: check.__name__)
def test_every_check_fails_on_the_stub_of_the_unsolved_exercise(check):
    with pytest.raises(AssertionError, match="not implemented yet"):
        check(stub)


def target_scores(model, x, targets):
    """Each image's logit of its own target class, summed: its gradient is each image's own gradient."""
    logits = model(x)  # (N, K)
    return logits.gather(1, targets[:, None]).sum()


# --------------------------------------------------------------------------- saliency

def saliency(model, x, targets, absolute=True, reduce="max", times_input=False, of_probability=False):
    x = x.clone().requires_grad_(True)  # (N, C, H, W)
    logits = model(x)  # (N, K)
    scores = logits.softmax(dim=1) if of_probability else logits
    (gradient,) = torch.autograd.grad(scores.gather(1, targets[:, None]).sum(), x)  # (N, C, H, W)
    if times_input:
        gradient = gradient * x.detach()
    if absolute:
        gradient = gradient.abs()
    return gradient.amax(dim=1) if reduce == "max" else getattr(gradient, reduce)(dim=1)  # (N, H, W)


def saliency_with_backward(model, x, targets):
    x = x.detach().clone().requires_grad_(True)
    target_scores(model, x, targets).backward()
    return torch.max(torch.abs(x.grad), dim=1).values  # (N, H, W)


def test_saliency_check_passes_on_correct_answers(capsys):
    checks.check_saliency(saliency)
    checks.check_saliency(saliency_with_backward)
    assert capsys.readouterr().out.count("saliency: all 3 cases passed") == 2


@pytest.mark.parametrize("options, message", [
    ({"absolute": False}, r"matches the gradients without their absolute value"),
    ({"reduce": "mean"}, r"matches the mean of \|gradient\| over the channels"),
    ({"reduce": "sum"}, r"matches the sum of \|gradient\| over the channels"),
    ({"times_input": True}, r"matches \|gradient x input\|"),
    ({"of_probability": True}, r"saliency\(model, x, targets\)\[0, \d+, \d+\] is .*, expected"),
], ids=["signed gradients", "mean over channels", "sum over channels", "gradient times input", "of the probability"])
def test_saliency_check_fails_on_mistakes(options, message):
    with pytest.raises(AssertionError, match=r"saliency on efficientnet_lite0 on photos \['chelsea'\].*" + message):
        checks.check_saliency(lambda model, x, targets: saliency(model, x, targets, **options))


def saliency_per_channel(model, x, targets):
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(target_scores(model, x, targets), x)
    return gradient.abs()  # (N, C, H, W)


def test_saliency_check_fails_when_the_channels_are_kept():
    with pytest.raises(AssertionError, match=r"\(N, C, H, W\), expected \(1, 224, 224\) \(N, H, W\): take the max"):
        checks.check_saliency(saliency_per_channel)


def test_saliency_check_fails_when_x_is_changed_in_place():
    def in_place(model, x, targets):
        x.requires_grad_(False).mul_(2.0)  # a rescaled input
        return saliency(model, x, targets)

    with pytest.raises(AssertionError, match="changed its input x in place"):
        checks.check_saliency(in_place)


def test_saliency_check_fails_on_a_list():
    with pytest.raises(AssertionError, match="should return a tensor of shape \\(1, 224, 224\\); got list"):
        checks.check_saliency(lambda model, x, targets: saliency(model, x, targets).tolist())


# --------------------------------------------------------------------------- Grad-CAM

def grad_cam(model, layer, x, targets, relu=True, average=True, upsample="bilinear", relu_after=False,
             normalise=False, fixed_layer=None):
    """Grad-CAM by hooks: a forward hook keeps the activation, a full backward hook its gradient."""
    kept = {}
    layer = model.get_submodule(fixed_layer) if fixed_layer else layer
    hooks = [layer.register_forward_hook(lambda module, inputs, output: kept.update(activation=output)),
             layer.register_full_backward_hook(lambda module, grad_in, grad_out: kept.update(gradient=grad_out[0]))]
    try:
        target_scores(model, x, targets).backward()
    finally:
        for hook in hooks:
            hook.remove()
    activation, gradient = kept["activation"].detach(), kept["gradient"]  # (N, C, h, w) each
    if average == "sum":
        weights = gradient.sum(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
    elif average:
        weights = gradient.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
    else:
        weights = gradient  # (N, C, h, w): one weight per position
    cam = (weights * activation).sum(dim=1, keepdim=True)  # (N, 1, h, w)
    if relu and not relu_after:
        cam = F.relu(cam)
    if upsample == "bilinear":
        cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)  # (N, 1, H, W)
    elif upsample == "corners":
        cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=True)
    elif upsample == "nearest":
        cam = F.interpolate(cam, size=x.shape[2:], mode="nearest")
    if relu_after:
        cam = F.relu(cam)
    cam = cam[:, 0]  # (N, H, W) or (N, h, w)
    if normalise:
        cam = cam / cam.flatten(1).amax(dim=1)[:, None, None]
    return cam


def grad_cam_by_autograd(model, layer, x, targets):
    """The same map without a backward hook: torch.autograd.grad on the activation a forward hook captured."""
    kept = []
    hook = layer.register_forward_hook(lambda module, inputs, output: kept.append(output))
    try:
        score = target_scores(model, x, targets)
    finally:
        hook.remove()
    (gradient,) = torch.autograd.grad(score, kept[0])  # (N, C, h, w)
    weights = gradient.mean(dim=(2, 3))  # (N, C): alpha_k^c of equation 1
    cam = torch.einsum("nc,nchw->nhw", weights, kept[0].detach()).clamp_min(0)  # (N, h, w): equation 2
    return F.interpolate(cam[:, None], size=tuple(x.shape[-2:]), mode="bilinear")[:, 0]  # (N, H, W)


def test_grad_cam_check_passes_on_correct_answers(capsys):
    checks.check_grad_cam(grad_cam)
    checks.check_grad_cam(grad_cam_by_autograd)
    assert capsys.readouterr().out.count("grad_cam: all 6 cases passed") == 2


@pytest.mark.parametrize("options, message", [
    ({"relu": False}, r"matches Grad-CAM without the ReLU on the map"),
    ({"relu_after": True}, r"matches the ReLU applied after the upsampling"),
    ({"average": False}, r"matches gradients not averaged over space"),
    ({"average": "sum"}, r"matches gradients summed over space instead of averaged"),
    ({"upsample": None}, r"matches Grad-CAM before the upsampling"),
    ({"upsample": "nearest"}, r"matches Grad-CAM upsampled with 'nearest'"),
    ({"upsample": "corners"}, r"matches Grad-CAM upsampled with align_corners=True"),
    ({"normalise": True}, r"matches Grad-CAM divided by its maximum"),
    ({"fixed_layer": "head"}, r"'blocks\.15'.*grad_cam\(model, layer, x, targets\)\[0, 0, 0\] is"),
], ids=["no ReLU", "ReLU after upsampling", "gradients not averaged", "gradients summed", "not upsampled",
        "nearest", "align_corners", "normalised", "the wrong layer"])
def test_grad_cam_check_fails_on_mistakes(options, message):
    with pytest.raises(AssertionError, match=r"grad_cam on efficientnet_lite0 at layer .*" + message):
        checks.check_grad_cam(lambda model, layer, x, targets: grad_cam(model, layer, x, targets, **options))


def test_grad_cam_check_fails_when_the_channel_dimension_is_kept():
    with pytest.raises(AssertionError, match=r"returned shape \(2, 1, 224, 224\), expected \(2, 224, 224\)"):
        checks.check_grad_cam(lambda model, layer, x, targets: grad_cam(model, layer, x, targets)[:, None])


def test_grad_cam_check_fails_when_every_image_gets_the_first_image_s_class():
    with pytest.raises(AssertionError, match=r"grad_cam on efficientnet_lite0 at layer 'head' on photos "
                                             r"\['chelsea', 'coffee'\]"):
        checks.check_grad_cam(lambda model, layer, x, targets: grad_cam(model, layer, x, targets[:1].expand(len(x))))


# --------------------------------------------------------------------------- pooled features

def pooled_features(model, layer, x, reduce="mean"):
    kept = {}
    hook = layer.register_forward_hook(lambda module, inputs, output: kept.update(output=output))
    with torch.no_grad():
        model(x)
    hook.remove()
    output = kept["output"]  # (N, C, h, w)
    if reduce == "flatten":
        return output.flatten(1)  # (N, C*h*w)
    if reduce == "map":
        return output
    return getattr(output, reduce)(dim=(2, 3)) if reduce != "amax" else output.amax(dim=(2, 3))  # (N, C)


def pooled_by_adaptive_pooling(model, layer, x):
    outputs = []
    hook = layer.register_forward_hook(lambda module, inputs, output: outputs.append(F.adaptive_avg_pool2d(output, 1)))
    model(x)
    hook.remove()
    return outputs[0].flatten(1)  # (N, C)


def test_pooled_features_check_passes_on_correct_answers(capsys):
    checks.check_pooled_features(pooled_features)
    checks.check_pooled_features(pooled_by_adaptive_pooling)
    assert capsys.readouterr().out.count("pooled_features: all 3 cases passed") == 2


@pytest.mark.parametrize("reduce, message", [
    ("amax", r"matches the maximum over H and W"),
    ("sum", r"matches the sum over H and W"),
    ("flatten", r"returned the flattened feature map \(2, 31360\)"),
    ("map", r"returned the whole feature map \(2, 40, 28, 28\)"),
])
def test_pooled_features_check_fails_on_mistakes(reduce, message):
    with pytest.raises(AssertionError, match=r"pooled_features on efficientnet_lite0 at layer 'blocks\.3'.*" + message):
        checks.check_pooled_features(lambda model, layer, x: pooled_features(model, layer, x, reduce))


def test_pooled_features_check_fails_when_the_layer_is_ignored():
    with pytest.raises(AssertionError, match=r"pooled_features on efficientnet_lite0 at layer 'blocks\.3'.*shape "
                                             r"\(2, 1280\), expected \(2, 40\)"):
        checks.check_pooled_features(lambda model, layer, x: pooled_features(model, model.head, x))


# --------------------------------------------------------------------------- the linear probe

def fit_linear_probe(features, labels, num_classes, l2, bias="free", one_hot=True):
    """The ridge classifier by the normal equations with a bias column left out of the penalty."""
    X = features.double()  # (N, D)
    N, D = X.shape
    Y = F.one_hot(labels, num_classes).double() if one_hot else labels.double()[:, None]  # (N, K)
    if bias == "none":
        weight = torch.linalg.solve(X.T @ X + l2 * torch.eye(D, dtype=X.dtype), X.T @ Y)  # (D, K)
        return weight.T, torch.zeros(Y.shape[1], dtype=X.dtype)
    A = torch.cat([X, torch.ones(N, 1, dtype=X.dtype)], dim=1)  # (N, D + 1)
    penalty = l2 * torch.eye(D + 1, dtype=X.dtype)
    if bias == "free":
        penalty[D, D] = 0.0
    solution = torch.linalg.solve(A.T @ A + penalty, A.T @ Y)  # (D + 1, K)
    return solution[:D].T, solution[D]


def fit_linear_probe_centred(features, labels, num_classes, l2):
    """The same probe from centred data: without a penalty on it, the bias only moves the means onto each other."""
    X = features.double()
    Y = torch.eye(num_classes, dtype=X.dtype)[labels]  # (N, K)
    x_mean, y_mean = X.mean(0), Y.mean(0)
    Xc, Yc = X - x_mean, Y - y_mean
    weight = torch.linalg.lstsq(torch.cat([Xc, l2 ** 0.5 * torch.eye(X.shape[1], dtype=X.dtype)]),
                                torch.cat([Yc, torch.zeros(X.shape[1], num_classes, dtype=X.dtype)])).solution  # (D, K)
    return weight.T, y_mean - x_mean @ weight


def fit_linear_probe_float32(features, labels, num_classes, l2):
    X = features.float()
    A = torch.cat([X, torch.ones(len(X), 1)], dim=1)
    penalty = torch.diag(torch.tensor([l2] * X.shape[1] + [0.0]))
    solution = torch.linalg.solve(A.T @ A + penalty, A.T @ F.one_hot(labels, num_classes).float())
    return solution[:-1].T, solution[-1]


def test_linear_probe_check_passes_on_correct_answers(capsys):
    checks.check_linear_probe(fit_linear_probe)
    checks.check_linear_probe(fit_linear_probe_centred)
    assert capsys.readouterr().out.count("fit_linear_probe: all 4 cases passed") == 2


@pytest.mark.parametrize("answer, message", [
    (lambda *a: fit_linear_probe(*a, bias="none"), r"a ridge fit with no bias"),
    (lambda *a: fit_linear_probe(*a, bias="regularised"), r"a ridge fit with the bias regularised too"),
    (lambda f, y, k, l2: fit_linear_probe(f, y, k, 0.0), r"l2=1: weight\[0, 0\] is"),
    (lambda f, y, k, l2: fit_linear_probe(f, y, int(y.max()) + 1, l2), r"class 4 never seen.*weight has shape "
                                                                       r"\(4, 5\), expected \(5, 5\)"),
    (lambda *a: tuple(t.T if t.dim() == 2 else t for t in fit_linear_probe(*a)), r"\(num_classes, D\)"),
    (lambda *a: fit_linear_probe(*a, one_hot=False), r"weight has shape \(1, 8\), expected \(3, 8\)"),
    (lambda *a: fit_linear_probe(*a)[0], r"should return \(weight, bias\)"),
], ids=["no bias", "bias regularised", "l2 ignored", "classes from the labels", "weight transposed",
        "labels not one-hot", "weight only"])
def test_linear_probe_check_fails_on_mistakes(answer, message):
    with pytest.raises(AssertionError, match=r"fit_linear_probe on .*" + message):
        checks.check_linear_probe(answer)


def test_linear_probe_check_fails_when_the_features_are_centred_in_place():
    def centred_in_place(features, labels, num_classes, l2):
        features -= features.mean(0)
        return fit_linear_probe_centred(features, labels, num_classes, l2)

    with pytest.raises(AssertionError, match="changed its inputs in place"):
        checks.check_linear_probe(centred_in_place)


def test_reference_linear_probe_minimises_the_ridge_objective():
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(40, 6, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (40,), generator=generator)
    weight, bias = (torch.from_numpy(a) for a in checks.reference_linear_probe(X.numpy(), labels.numpy(), 3, 2.0))
    Y = F.one_hot(labels, 3).double()

    def objective(w, b):
        return ((X @ w.T + b - Y) ** 2).sum() + 2.0 * (w ** 2).sum()

    w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    objective(w, b).backward()
    assert w.grad.abs().max() < 1e-9 and b.grad.abs().max() < 1e-9  # a stationary point of a convex objective


# --------------------------------------------------------------------------- split mode, as under course-grade
# Under ``course-grade`` a check runs in the grader's process on handles of the learner's objects
# (``learner.Loopback`` runs that protocol in this process, every message encoded to bytes): right answers must
# pass there too, and wrong ones fail with the message they get in the learner's notebook.

@pytest.mark.parametrize("check, name, function, summary", [
    (checks.check_saliency, "saliency", saliency, "saliency: all 3 cases passed"),
    (checks.check_grad_cam, "grad_cam", grad_cam_by_autograd, "grad_cam: all 6 cases passed"),
    (checks.check_pooled_features, "pooled_features", pooled_features, "pooled_features: all 3 cases passed"),
    (checks.check_linear_probe, "fit_linear_probe", fit_linear_probe_centred, "fit_linear_probe: all 4 cases"),
], ids=["saliency", "grad_cam", "pooled_features", "fit_linear_probe"])
def test_right_answers_pass_in_split_mode(check, name, function, summary, capsys):
    assert split_verdict(check, {name: function}) is None
    assert summary in capsys.readouterr().out


@pytest.mark.parametrize("check, name", [
    (checks.check_saliency, "saliency"), (checks.check_grad_cam, "grad_cam"),
    (checks.check_pooled_features, "pooled_features"), (checks.check_linear_probe, "fit_linear_probe"),
], ids=lambda value: value if isinstance(value, str) else value.__name__)
def test_the_stubs_fail_with_the_same_message_in_split_mode(check, name):
    assert_same_failure(check, {name: stub}, f"{name} is not implemented yet")


@pytest.mark.parametrize("check, name, function, message", [
    (checks.check_saliency, "saliency", lambda m, x, t: saliency(m, x, t, absolute=False), "without their absolute"),
    (checks.check_saliency, "saliency", lambda m, x, t: x.add_(1.0), "changed its input x in place"),
    (checks.check_grad_cam, "grad_cam", lambda m, l, x, t: grad_cam(m, l, x, t, relu=False), "without the ReLU"),
    (checks.check_grad_cam, "grad_cam", lambda m, l, x, t: grad_cam(m, l, x, t, average=False), "not averaged"),
    (checks.check_grad_cam, "grad_cam", lambda m, l, x, t: grad_cam(m, l, x, t, upsample=None), "before the upsampl"),
    (checks.check_grad_cam, "grad_cam", lambda m, l, x, t: grad_cam(m, l, x, t, fixed_layer="head"),
     r"layer 'blocks\.15'"),
    (checks.check_pooled_features, "pooled_features", lambda m, l, x: pooled_features(m, l, x, "amax"), "maximum"),
    (checks.check_linear_probe, "fit_linear_probe", lambda *a: fit_linear_probe(*a, bias="regularised"),
     "the bias regularised too"),
    (checks.check_linear_probe, "fit_linear_probe", lambda f, y, k, l2: (f.sub_(1.0), fit_linear_probe(f, y, k, l2))[1],
     "changed its inputs in place"),
], ids=["signed saliency", "saliency in place", "no ReLU", "not averaged", "not upsampled", "wrong layer",
        "max pooled", "bias regularised", "probe in place"])
def test_wrong_answers_fail_with_the_same_message_in_split_mode(check, name, function, message):
    assert_same_failure(check, {name: function}, message)
