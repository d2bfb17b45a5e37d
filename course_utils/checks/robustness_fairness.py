"""Checks for chapter 16 (Robustness and fairness): FGSM, one PGD step with its projection, per-subgroup rates.

The attacks run where the learner's code lives (``learner_fgsm``, ``learner_pgd_step``), on a small network and
images that the probe builds from a seed: a convolution with non-zero biases, a tanh (no dead units, so every
pixel has a gradient, of very different sizes from pixel to pixel) and a linear layer; images whose pixels sit near
0 and near 1 (some exactly), so that a step leaves [0, 1] unless it is clamped. What comes back is the learner's
adversarial image as a tensor. The check builds the same network and images here and computes the expected image
itself: the input gradient with ``torch.autograd.grad``, its sign, the clamp, the projection (an element-wise
``min``/``max`` around the clean image). The subgroup rates are compared with
``torchmetrics.functional.classification.binary_stat_scores`` on the subgroup's examples.

Each failure names the case, the pixel or the rate, and, where the answer matches a known mistake (the gradient
instead of its sign, no clamp, a step down the loss, the L2 ball, a ball around 0, the mask ignored, a rate over
the wrong denominator), says which.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.checks import common, learner

IMAGE_SHAPE = (6, 1, 6, 6)  # (N, C, H, W) of the check's images
CLASSES = 3
ATOL = 1e-5  # pixels: float32 arithmetic on values in [0, 1]


# --------------------------------------------------------------------------- the network and images of a case

def _network(seed):
    """Conv(1 -> 4, 3x3) - tanh - Linear(144 -> 3), weights and biases drawn from N(0, 0.5^2) with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(),
                          nn.Linear(4 * IMAGE_SHAPE[2] * IMAGE_SHAPE[3], CLASSES))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def _images(seed):
    """``(x, y)``: x (6, 1, 6, 6) with a third of the pixels in [0, 0.02], a third in [0.98, 1], some exactly 0 and
    1; y (6,) labels in 0-2."""
    generator = torch.Generator().manual_seed(1000 + seed)
    x = torch.rand(IMAGE_SHAPE, generator=generator)
    kind = torch.randint(0, 3, IMAGE_SHAPE, generator=generator)
    x = torch.where(kind == 0, 0.02 * x, torch.where(kind == 1, 1.0 - 0.02 * x, x))
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0
    y = torch.randint(0, CLASSES, (IMAGE_SHAPE[0],), generator=generator)
    return x, y


def _start(x, eps, seed):
    """A PGD iterate inside the ball: every pixel moved by one of -eps, -eps/2, 0, eps/2, eps, then clamped."""
    generator = torch.Generator().manual_seed(2000 + seed)
    fractions = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    delta = eps * fractions[torch.randint(0, 5, x.shape, generator=generator)]  # (N, C, H, W)
    return (x + delta).clamp(0.0, 1.0)


def _gradient(model, x, y):
    """d mean cross-entropy / dx by torch.autograd.grad, (N, C, H, W)."""
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return gradient


def learner_fgsm(fgsm, seed, eps, case):
    """Run the learner's ``fgsm(model, x, y, eps)`` on the case's network and images; send back what it returned."""
    model, (x, y) = _network(seed), _images(seed)
    x_given, y_given = x.clone(), y.clone()
    result = common.call(fgsm, model, x_given, y_given, eps, case=case)
    return _describe_result(result, x_given, x)


def learner_pgd_step(pgd_step, seed, alpha, eps, case):
    """Run the learner's ``pgd_step(model, x_adv, x, y, alpha, eps)`` on the case's network, images and iterate."""
    model, (x, y) = _network(seed), _images(seed)
    x_adv = _start(x, eps, seed)
    x_given, x_adv_given = x.clone(), x_adv.clone()
    result = common.call(pgd_step, model, x_adv_given, x_given, y.clone(), alpha, eps, case=case)
    return _describe_result(result, x_given, x)  # x_adv may be updated in place: what is returned is compared


def _describe_result(result, x_given, x):
    return {"x_new": result.detach().cpu().float() if isinstance(result, torch.Tensor) else None,
            "type": type(result).__name__, "x_changed": not torch.equal(x_given, x)}


# --------------------------------------------------------------------------- comparing adversarial images

def _mismatch(received, expected, ambiguous):
    """Whether ``received`` differs from ``expected`` anywhere a sign is not ambiguous."""
    return bool(((received - expected).abs() > ATOL)[~ambiguous].any())


def _compare_image(found, x, eps, expected, ambiguous, mistakes, case, what):
    """Fail with a message naming the first wrong pixel and, where it matches one, the mistake made."""
    if found["x_new"] is None:
        raise AssertionError(f"{case}: should return the adversarial images as a tensor (N, C, H, W); got a "
                             f"{found['type']}")
    if found["x_changed"]:
        raise AssertionError(f"{case}: the clean images x were changed in place; leave x as it is and return new "
                             f"images")
    received = found["x_new"]
    common.assert_shape(received, tuple(x.shape), case, what)
    if not torch.isfinite(received).all():
        raise AssertionError(f"{case}: {what} holds NaN or infinite pixels (sign from grad / |grad|?)")
    hints = [hint for hint, candidate in mistakes if candidate.shape == received.shape
             and not _mismatch(received, candidate, ambiguous)]
    low, high = float(received.min()), float(received.max())
    if low < -ATOL or high > 1 + ATOL:
        also = f"; and {hints[0]}" if hints else ""
        raise AssertionError(f"{case}: {what} has pixels in [{low:.4g}, {high:.4g}], outside the valid pixel range "
                             f"[0, 1] (not clamped to [0, 1]?{also})")
    distance = float((received - x).abs().max())
    if distance > eps + ATOL:
        where = tuple(int(i) for i in np.argwhere(((received - x).abs() > eps + ATOL).numpy())[0])
        hint = f" ({hints[0]})" if hints else ""
        raise AssertionError(f"{case}: {what}{list(where)} is {float(received[where]):.4g}, "
                             f"{abs(float(received[where] - x[where])):.4g} away from the clean pixel "
                             f"{float(x[where]):.4g}; every pixel must stay within eps={eps:g} of the clean image "
                             f"x{hint}")
    if _mismatch(received, expected, ambiguous):
        hint = f" ({hints[0]})" if hints else ""
        received = torch.where(ambiguous, expected, received)  # report a pixel whose sign is not ambiguous
        try:
            common.assert_close(received, expected, case, what, rtol=0.0, atol=ATOL)
        except AssertionError as error:
            raise AssertionError(f"{error}{hint}") from None


# --------------------------------------------------------------------------- exercise 1: FGSM

FGSM_CASES = ((0, 0.1), (1, 0.25), (2, 0.03))  # (seed, eps)


def check_fgsm(fgsm):
    """``fgsm(model, x, y, eps)``: ``clamp(x + eps * sign(dL/dx), 0, 1)`` against torch.autograd.grad, 3 cases."""
    for seed, eps in FGSM_CASES:
        case = f"fgsm(model of seed {seed}, x {IMAGE_SHAPE}, y, eps={eps:g})"
        found = learner.run(learner_fgsm, fgsm, seed, eps, case)
        model, (x, y) = _network(seed), _images(seed)
        gradient = _gradient(model, x, y)
        ambiguous = gradient.abs() <= 1e-6 * gradient.abs().max()  # a sign that rounding could flip: not compared
        expected = (x + eps * gradient.sign()).clamp(0.0, 1.0)
        mistakes = [
            ("the gradient instead of its sign?", (x + eps * gradient).clamp(0.0, 1.0)),
            ("the gradient instead of its sign?", x + eps * gradient),
            ("a step down the loss: x - eps * sign(grad) lowers the loss; FGSM raises it",
             (x - eps * gradient.sign()).clamp(0.0, 1.0)),
        ]
        _compare_image(found, x, eps, expected, ambiguous, mistakes, case, "x_adv")
    common.passed("fgsm", len(FGSM_CASES))


# --------------------------------------------------------------------------- exercise 2: one PGD step

PGD_CASES = ((0, 0.05, 0.1), (1, 0.1, 0.15), (2, 0.02, 0.3))  # (seed, alpha, eps)


def _l2_projection(step, x, eps):
    """The projection onto the L2 ball of radius eps around x, per image, then [0, 1]: a mistake's answer."""
    delta = step - x  # (N, C, H, W)
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)  # (N,)
    scale = (eps / norms).clamp(max=1.0).reshape(-1, 1, 1, 1)  # (N, 1, 1, 1): shrink delta onto the L2 sphere
    return (x + delta * scale).clamp(0.0, 1.0)


def check_pgd_step(pgd_step):
    """``pgd_step(model, x_adv, x, y, alpha, eps)``: a signed step at x_adv, projected onto the L-infinity ball of
    radius eps around x, clamped to [0, 1]; against torch.autograd.grad and an element-wise min/max, 3 cases."""
    for seed, alpha, eps in PGD_CASES:
        case = f"pgd_step(model of seed {seed}, x_adv, x {IMAGE_SHAPE}, y, alpha={alpha:g}, eps={eps:g})"
        found = learner.run(learner_pgd_step, pgd_step, seed, alpha, eps, case)
        model, (x, y) = _network(seed), _images(seed)
        x_adv = _start(x, eps, seed)
        gradient = _gradient(model, x_adv, y)
        ambiguous = gradient.abs() <= 1e-6 * gradient.abs().max()
        step = x_adv + alpha * gradient.sign()
        expected = torch.max(torch.min(step, x + eps), x - eps).clamp(0.0, 1.0)
        at_clean = x_adv + alpha * _gradient(model, x, y).sign()
        mistakes = [
            ("no projection onto the ball around x?", step.clamp(0.0, 1.0)),
            ("projected around 0 instead of around the clean image x?", step.clamp(-eps, eps).clamp(0.0, 1.0)),
            ("projected around 0 instead of around the clean image x?", step.clamp(-eps, eps)),
            ("projected onto the L2 ball instead of the L-infinity ball?", _l2_projection(step, x, eps)),
            ("projected around x_adv instead of around the clean image x?",
             torch.max(torch.min(step, x_adv + eps), x_adv - eps).clamp(0.0, 1.0)),
            ("the gradient instead of its sign?",
             torch.max(torch.min(x_adv + alpha * gradient, x + eps), x - eps).clamp(0.0, 1.0)),
            ("the gradient taken at the clean x instead of at x_adv?",
             torch.max(torch.min(at_clean, x + eps), x - eps).clamp(0.0, 1.0)),
            ("a step of eps instead of alpha?",
             torch.max(torch.min(x_adv + eps * gradient.sign(), x + eps), x - eps).clamp(0.0, 1.0)),
            ("a step down the loss?",
             torch.max(torch.min(x_adv - alpha * gradient.sign(), x + eps), x - eps).clamp(0.0, 1.0)),
        ]
        _compare_image(found, x, eps, expected, ambiguous, mistakes, case, "the new x_adv")
    common.passed("pgd_step", len(PGD_CASES))


# --------------------------------------------------------------------------- exercise 3: subgroup rates

def _rates_case(seed, n, group_fraction):
    """``(y_true, y_pred, in_group)``: int64 0/1 (n,), int64 0/1 (n,), bool (n,); errors more frequent in the group."""
    generator = torch.Generator().manual_seed(3000 + seed)
    y_true = (torch.rand(n, generator=generator) < 0.4).long()
    in_group = torch.rand(n, generator=generator) < group_fraction
    flip = torch.rand(n, generator=generator) < torch.where(in_group, 0.3, 0.1)
    # false negatives and false positives at different rates, so that swapping them shows
    flip &= (y_true == 1) | (torch.rand(n, generator=generator) < 0.5)
    y_pred = torch.where(flip, 1 - y_true, y_true)
    return y_true, y_pred, in_group


RATES_CASES = ((1, 200, 0.3), (0, 120, 0.5), (4, 400, 0.1))  # (seed, examples, fraction in the group)
RATES_TOLERANCE = 1e-6


def _reference_rates(y_true, y_pred):
    """``{"accuracy", "fnr", "fpr"}`` from torchmetrics' true/false positive/negative counts."""
    from torchmetrics.functional.classification import binary_stat_scores

    tp, fp, tn, fn, _ = (float(v) for v in binary_stat_scores(y_pred, y_true))
    return {"accuracy": (tp + tn) / (tp + fp + tn + fn), "fnr": fn / (fn + tp), "fpr": fp / (fp + tn)}, (tp, fp, tn, fn)


def _as_number(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool):
        return float(value)
    return None


def check_subgroup_rates(subgroup_rates):
    """``subgroup_rates(y_true, y_pred, in_group)``: accuracy, FN / (FN + TP) and FP / (FP + TN) over the subgroup's
    examples, against torchmetrics' binary_stat_scores, 3 cases."""
    for seed, n, fraction in RATES_CASES:
        y_true, y_pred, in_group = _rates_case(seed, n, fraction)
        case = (f"subgroup_rates(y_true, y_pred, in_group) on {n} examples, {int(in_group.sum())} in the group "
                f"(case {seed})")
        received = common.call(subgroup_rates, y_true.clone(), y_pred.clone(), in_group.clone(), case=case)
        if not isinstance(received, dict):
            raise AssertionError(f"{case}: should return a dict with keys 'accuracy', 'fnr', 'fpr'; got a "
                                 f"{common.type_name(received)}")
        missing = [key for key in ("accuracy", "fnr", "fpr") if key not in received]
        if missing:
            raise AssertionError(f"{case}: the dict has no {missing} (keys found: {sorted(map(str, received))})")
        expected, (tp, fp, tn, fn) = _reference_rates(y_pred=y_pred[in_group], y_true=y_true[in_group])
        everyone, _ = _reference_rates(y_pred=y_pred, y_true=y_true)
        wrong_denominators = {
            "fnr": [(fn / (tp + fp + tn + fn), "FN over all the subgroup's examples instead of over its positives "
                                               "FN + TP?"),
                    (fn / (fn + tn), "FN over the predicted negatives FN + TN?"),
                    (expected["fpr"], "FNR and FPR swapped?")],
            "fpr": [(fp / (tp + fp), "FP over the predicted positives TP + FP (that is the false discovery "
                                     "rate)? the FPR is over the negatives FP + TN"),
                    (fp / (tp + fp + tn + fn), "FP over all the subgroup's examples instead of over its negatives "
                                               "FP + TN?"),
                    (expected["fnr"], "FNR and FPR swapped?")],
            "accuracy": [],
        }
        for key in ("accuracy", "fnr", "fpr"):
            value = _as_number(received[key])
            if value is None:
                raise AssertionError(f"{case}: {key!r} should be a number; got a {common.type_name(received[key])}")
            if abs(value - expected[key]) > RATES_TOLERANCE:
                hints = [hint for wrong, hint in wrong_denominators[key] if abs(value - wrong) <= RATES_TOLERANCE]
                if abs(value - everyone[key]) <= RATES_TOLERANCE:
                    hints.insert(0, "computed over every example: the in_group mask ignored?")
                hint = f" ({hints[0]})" if hints else ""
                raise AssertionError(f"{case}: {key!r} is {value:.6g}, expected {expected[key]:.6g} (the subgroup "
                                     f"has TP={tp:g}, FP={fp:g}, TN={tn:g}, FN={fn:g}){hint}")
    common.passed("subgroup_rates", len(RATES_CASES))
