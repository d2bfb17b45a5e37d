"""The chapter 16 checks pass on right answers written in different ways and fail on the usual mistakes.

Right answers: the gradient by ``backward()`` or ``torch.autograd.grad`` or ``torch.func.grad``, the loss as a mean
or a sum (the sign does not care), the projection by ``torch.clamp`` with tensor bounds or by ``min``/``max``, before
or after the pixel clamp; the rates from boolean counts, from ``torchmetrics`` or from a confusion matrix by
``bincount``. Each wrong answer changes one thing: the gradient instead of its sign, no clamp to [0, 1], a step
down the loss, no projection, the L2 ball, a ball around 0, the gradient at the clean image, the mask ignored,
a rate over the wrong denominator.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.checks import robustness_fairness as checks
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


@pytest.mark.parametrize("check", [checks.check_fgsm, checks.check_pgd_step, checks.check_subgroup_rates],
                         ids=lambda check: check.__name__)
def test_every_check_fails_on_the_stub_of_the_unsolved_exercise(check):
    with pytest.raises(AssertionError, match="not implemented yet"):
        check(stub)


# --------------------------------------------------------------------------- FGSM

def fgsm(model, x, y, eps, sign=True, clamp=True, direction=1.0, in_place=False):
    """A right answer by ``backward()``, or one with exactly one thing changed."""
    x_leaf = x.clone().requires_grad_(True)
    F.cross_entropy(model(x_leaf), y).backward()
    step = x_leaf.grad.sign() if sign else x_leaf.grad
    out = x + direction * eps * step
    out = out.clamp(0, 1) if clamp else out
    if in_place:
        x.copy_(out)
        return x
    return out.detach()


def fgsm_functional(model, x, y, eps):
    """Written differently: torch.func.grad of a summed loss (the same sign), min/max instead of clamp."""
    gradient = torch.func.grad(lambda inputs: F.cross_entropy(model(inputs), y, reduction="sum"))(x)
    return torch.minimum(torch.maximum(x + eps * torch.sign(gradient), torch.zeros_like(x)), torch.ones_like(x))


def fgsm_autograd_nll(model, x, y, eps):
    """Written differently: log-softmax and NLL, torch.autograd.grad."""
    x = x.detach().requires_grad_(True)
    loss = F.nll_loss(F.log_softmax(model(x), dim=1), y)
    (gradient,) = torch.autograd.grad(loss, x)
    return torch.clamp(x.detach() + eps * gradient.sign(), 0.0, 1.0)


@pytest.mark.parametrize("answer", [fgsm, fgsm_functional, fgsm_autograd_nll],
                         ids=["backward", "torch.func, summed loss", "log-softmax + NLL, autograd.grad"])
def test_fgsm_check_passes_on_right_answers(answer, capsys):
    checks.check_fgsm(answer)
    assert "fgsm: all 3 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize("options, message", [
    ({"sign": False}, r"eps=0\.1\): x_adv\[.*\] is .*, expected .*\(the gradient instead of its sign\?\)"),
    ({"clamp": False}, r"x_adv has pixels in \[-0\.1, 1\.1\], outside the valid pixel range \[0, 1\] "
                       r"\(not clamped to \[0, 1\]\?\)"),
    ({"direction": -1.0}, r"\(a step down the loss: x - eps \* sign\(grad\) lowers the loss; FGSM raises it\)"),
    ({"in_place": True}, r"the clean images x were changed in place"),
    ({"sign": False, "clamp": False}, r"outside the valid pixel range \[0, 1\] \(not clamped to \[0, 1\]\?; and the "
                                      r"gradient instead of its sign\?\)"),
], ids=["gradient not its sign", "no clamp", "step down the loss", "x changed in place", "raw gradient, no clamp"])
def test_fgsm_check_fails_on_a_mistake(options, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_fgsm(lambda model, x, y, eps: fgsm(model, x, y, eps, **options))


def test_fgsm_check_fails_on_a_step_of_the_wrong_size():
    with pytest.raises(AssertionError, match=r"eps=0\.1\): x_adv\[.*\] is .*, expected"):
        checks.check_fgsm(lambda model, x, y, eps: fgsm(model, x, y, eps / 2))


def test_fgsm_check_fails_on_a_step_beyond_eps():
    with pytest.raises(AssertionError, match=r"every pixel must stay within eps=0\.1 of the clean image x"):
        checks.check_fgsm(lambda model, x, y, eps: fgsm(model, x, y, 2 * eps))


def test_fgsm_check_fails_on_numpy_output_and_on_nan():
    with pytest.raises(AssertionError, match=r"should return the adversarial images as a tensor .* got a ndarray"):
        checks.check_fgsm(lambda model, x, y, eps: fgsm(model, x, y, eps).numpy())
    with pytest.raises(AssertionError, match=r"NaN or infinite pixels"):
        checks.check_fgsm(lambda model, x, y, eps: fgsm(model, x, y, eps) * float("nan"))


def test_fgsm_check_fails_on_a_random_sign_perturbation():
    def noise(model, x, y, eps):
        signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        return (x + eps * signs).clamp(0, 1)

    with pytest.raises(AssertionError, match=r"x_adv\[.*\] is .*, expected .* elements differ"):
        checks.check_fgsm(noise)


# --------------------------------------------------------------------------- PGD step

def pgd_step(model, x_adv, x, y, alpha, eps, projection="linf", clamp=True, sign=True, at="x_adv", step=None):
    """A right answer, or one with exactly one thing changed."""
    point = (x_adv if at == "x_adv" else x).clone().requires_grad_(True)
    F.cross_entropy(model(point), y).backward()
    direction = point.grad.sign() if sign else point.grad
    moved = x_adv + (alpha if step is None else step) * direction
    if projection == "linf":
        moved = torch.max(torch.min(moved, x + eps), x - eps)
    elif projection == "zero":
        moved = moved.clamp(-eps, eps)
    elif projection == "l2":
        delta = moved - x
        norms = delta.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)  # (N, 1, 1, 1)
        moved = x + delta * torch.clamp(eps / norms, max=1.0)
    elif projection == "around x_adv":
        moved = torch.max(torch.min(moved, x_adv + eps), x_adv - eps)
    return (moved.clamp(0, 1) if clamp else moved).detach()


def pgd_step_clamp_first(model, x_adv, x, y, alpha, eps):
    """Written differently: autograd.grad, the pixel clamp before the projection, torch.clamp with tensor bounds."""
    x_adv = x_adv.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
    moved = (x_adv.detach() + alpha * gradient.sign()).clamp(0, 1)
    return torch.clamp(moved, min=x - eps, max=x + eps)


def pgd_step_delta(model, x_adv, x, y, alpha, eps):
    """Written differently: on the perturbation delta = x_adv - x, updated in place and returned."""
    delta = (x_adv - x).requires_grad_(True)
    F.cross_entropy(model(x + delta), y).backward()
    with torch.no_grad():
        delta += alpha * delta.grad.sign()
        delta.clamp_(-eps, eps)
        x_adv.copy_((x + delta).clamp(0, 1))
    return x_adv


@pytest.mark.parametrize("answer", [pgd_step, pgd_step_clamp_first, pgd_step_delta],
                         ids=["min/max", "clamp first, autograd.grad", "on delta, x_adv updated in place"])
def test_pgd_step_check_passes_on_right_answers(answer, capsys):
    checks.check_pgd_step(answer)
    assert "pgd_step: all 3 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize("options, message", [
    ({"projection": "none"}, r"every pixel must stay within eps=0\.1 of the clean image x \(no projection onto the "
                             r"ball around x\?\)"),
    ({"projection": "zero"}, r"within eps=0\.1 of the clean image x \(projected around 0 instead of around the "
                             r"clean image x\?\)"),
    ({"projection": "l2"}, r"the new x_adv\[.*\] is .*, expected .*\(projected onto the L2 ball instead of the "
                           r"L-infinity ball\?\)"),
    ({"projection": "around x_adv"}, r"within eps=0\.1 of the clean image x \(no projection onto the ball"),
    ({"clamp": False}, r"outside the valid pixel range \[0, 1\] \(not clamped to \[0, 1\]\?\)"),
    ({"sign": False}, r"\(the gradient instead of its sign\?\)"),
    ({"at": "x"}, r"\(the gradient taken at the clean x instead of at x_adv\?\)"),
], ids=["no projection", "ball around 0", "L2 ball", "ball around x_adv", "no clamp", "gradient not its sign",
        "gradient at the clean x"])
def test_pgd_step_check_fails_on_a_mistake(options, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_pgd_step(lambda *args: pgd_step(*args, **options))


def test_pgd_step_check_fails_on_a_step_of_eps_and_on_a_step_down():
    with pytest.raises(AssertionError, match=r"\(a step of eps instead of alpha\?\)"):
        checks.check_pgd_step(lambda model, x_adv, x, y, alpha, eps: pgd_step(model, x_adv, x, y, alpha, eps,
                                                                             step=eps))
    with pytest.raises(AssertionError, match=r"\(a step down the loss\?\)"):
        checks.check_pgd_step(lambda model, x_adv, x, y, alpha, eps: pgd_step(model, x_adv, x, y, alpha, eps,
                                                                             step=-alpha))


def test_pgd_step_check_fails_when_the_step_starts_from_x():
    with pytest.raises(AssertionError, match=r"the new x_adv\[.*\] is .*, expected"):
        checks.check_pgd_step(lambda model, x_adv, x, y, alpha, eps: pgd_step(model, x, x, y, alpha, eps))


# --------------------------------------------------------------------------- subgroup rates

def rates(y_true, y_pred, in_group, mode="right"):
    """A right answer from boolean counts, or one with exactly one thing changed."""
    if mode == "no mask":
        in_group = torch.ones_like(in_group)
    truth, predicted = y_true[in_group] == 1, y_pred[in_group] == 1
    tp, fn = (truth & predicted).sum(), (truth & ~predicted).sum()
    fp, tn = (~truth & predicted).sum(), (~truth & ~predicted).sum()
    fnr, fpr = fn / (fn + tp), fp / (fp + tn)
    if mode == "fnr over all":
        fnr = fn / len(truth)
    elif mode == "fpr over predicted positives":
        fpr = fp / (fp + tp)
    elif mode == "swapped":
        fnr, fpr = fpr, fnr
    elif mode == "fpr over all":
        fpr = fp / len(truth)
    elif mode == "fnr over predicted negatives":
        fnr = fn / (fn + tn)
    return {"accuracy": (truth == predicted).float().mean(), "fnr": fnr, "fpr": fpr}


def rates_torchmetrics(y_true, y_pred, in_group):
    """Written differently: torchmetrics' counts, plain floats."""
    from torchmetrics.functional.classification import binary_stat_scores

    tp, fp, tn, fn, _ = binary_stat_scores(y_pred[in_group], y_true[in_group]).tolist()
    return {"accuracy": (tp + tn) / (tp + fp + tn + fn), "fnr": fn / (fn + tp), "fpr": fp / (fp + tn)}


def rates_bincount(y_true, y_pred, in_group):
    """Written differently: a 2x2 confusion matrix by bincount, in NumPy."""
    truth, predicted = y_true[in_group].numpy(), y_pred[in_group].numpy()
    matrix = np.bincount(2 * truth + predicted, minlength=4).reshape(2, 2)  # (truth, predicted)
    (tn, fp), (fn, tp) = matrix
    return {"fpr": fp / (fp + tn), "fnr": fn / (fn + tp), "accuracy": (tp + tn) / matrix.sum()}


@pytest.mark.parametrize("answer", [rates, rates_torchmetrics, rates_bincount],
                         ids=["boolean counts, 0-d tensors", "torchmetrics, floats", "bincount, numpy"])
def test_subgroup_rates_check_passes_on_right_answers(answer, capsys):
    checks.check_subgroup_rates(answer)
    assert "subgroup_rates: all 3 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize("mode, message", [
    ("no mask", r"'accuracy' is .*, expected .* \(computed over every example: the in_group mask ignored\?\)"),
    ("fnr over all", r"'fnr' is .*\(FN over all the subgroup's examples instead of over its positives FN \+ TP\?\)"),
    ("fpr over predicted positives", r"'fpr' is .*\(FP over the predicted positives TP \+ FP \(that is the false "
                                     r"discovery rate\)\? the FPR is over the negatives FP \+ TN\)"),
    ("swapped", r"'fnr' is .*\(FNR and FPR swapped\?\)"),
    ("fpr over all", r"'fpr' is .*\(FP over all the subgroup's examples instead of over its negatives FP \+ TN\?\)"),
    ("fnr over predicted negatives", r"'fnr' is .*\(FN over the predicted negatives FN \+ TN\?\)"),
], ids=["mask ignored", "FNR over all examples", "FPR over predicted positives", "FNR and FPR swapped",
        "FPR over all examples", "FNR over predicted negatives"])
def test_subgroup_rates_check_fails_on_a_mistake(mode, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_subgroup_rates(lambda *args: rates(*args, mode=mode))


def test_subgroup_rates_check_names_the_counts_of_the_subgroup():
    with pytest.raises(AssertionError, match=r"on 200 examples, 57 in the group \(case 1\): 'fnr' is .* \(the "
                                             r"subgroup has TP=14, FP=5, TN=35, FN=3\)"):
        checks.check_subgroup_rates(lambda *args: rates(*args, mode="fnr over all"))


@pytest.mark.parametrize("answer, message", [
    (lambda y_true, y_pred, in_group: [0.9, 0.1, 0.1], r"should return a dict with keys 'accuracy', 'fnr', 'fpr'; "
                                                       r"got a list"),
    (lambda y_true, y_pred, in_group: {"acc": 0.9, "fnr": 0.1, "fpr": 0.1}, r"the dict has no \['accuracy'\]"),
    (lambda y_true, y_pred, in_group: {"accuracy": "high", "fnr": 0.1, "fpr": 0.1},
     r"'accuracy' should be a number; got a str"),
], ids=["a list", "a key misspelt", "a string"])
def test_subgroup_rates_check_fails_on_the_wrong_kind_of_answer(answer, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_subgroup_rates(answer)


# --------------------------------------------------------------------------- split mode, as under course-grade

@pytest.mark.parametrize("check, namespace, summary", [
    (checks.check_fgsm, {"fgsm": fgsm_functional}, "fgsm: all 3 cases passed"),
    (checks.check_fgsm, {"fgsm": fgsm}, "fgsm: all 3 cases passed"),
    (checks.check_pgd_step, {"pgd_step": pgd_step_delta}, "pgd_step: all 3 cases passed"),
    (checks.check_pgd_step, {"pgd_step": pgd_step_clamp_first}, "pgd_step: all 3 cases passed"),
    (checks.check_subgroup_rates, {"subgroup_rates": rates}, "subgroup_rates: all 3 cases passed"),
    (checks.check_subgroup_rates, {"subgroup_rates": rates_bincount}, "subgroup_rates: all 3 cases passed"),
], ids=["fgsm torch.func", "fgsm backward", "pgd on delta in place", "pgd clamp first", "rates counts",
        "rates bincount"])
def test_right_answers_pass_in_split_mode(check, namespace, summary, capsys):
    assert split_verdict(check, namespace) is None
    assert summary in capsys.readouterr().out


@pytest.mark.parametrize("check, name", [
    (checks.check_fgsm, "fgsm"), (checks.check_pgd_step, "pgd_step"), (checks.check_subgroup_rates, "subgroup_rates"),
], ids=lambda value: value if isinstance(value, str) else value.__name__)
def test_the_stubs_fail_with_the_same_message_in_split_mode(check, name):
    assert_same_failure(check, {name: stub}, f"{name} is not implemented yet")


@pytest.mark.parametrize("check, namespace, message", [
    (checks.check_fgsm, {"fgsm": lambda m, x, y, eps: fgsm(m, x, y, eps, sign=False)},
     r"the gradient instead of its sign"),
    (checks.check_fgsm, {"fgsm": lambda m, x, y, eps: fgsm(m, x, y, eps, clamp=False)},
     r"not clamped to \[0, 1\]"),
    (checks.check_fgsm, {"fgsm": lambda m, x, y, eps: fgsm(m, x, y, eps, in_place=True)},
     r"the clean images x were changed in place"),
    (checks.check_pgd_step, {"pgd_step": lambda *a: pgd_step(*a, projection="l2")}, r"projected onto the L2 ball"),
    (checks.check_pgd_step, {"pgd_step": lambda *a: pgd_step(*a, projection="zero")}, r"projected around 0"),
    (checks.check_pgd_step, {"pgd_step": lambda *a: pgd_step(*a, projection="none")}, r"no projection"),
    (checks.check_pgd_step, {"pgd_step": lambda *a: pgd_step(*a, clamp=False)}, r"not clamped to \[0, 1\]"),
    (checks.check_subgroup_rates, {"subgroup_rates": lambda *a: rates(*a, mode="fnr over all")},
     r"instead of over its positives"),
    (checks.check_subgroup_rates, {"subgroup_rates": lambda *a: rates(*a, mode="fpr over predicted positives")},
     r"false discovery rate"),
    (checks.check_subgroup_rates, {"subgroup_rates": lambda *a: rates(*a, mode="no mask")}, r"mask ignored"),
], ids=["fgsm gradient", "fgsm no clamp", "fgsm in place", "pgd L2", "pgd around 0", "pgd no projection",
        "pgd no clamp", "FNR over all", "FPR over predicted positives", "mask ignored"])
def test_wrong_answers_fail_with_the_same_message_in_split_mode(check, namespace, message):
    assert_same_failure(check, namespace, message)
