"""The chapter 15 checks pass on right answers written in different ways and fail on the usual mistakes.

Right answers: the schedule as a formula and through LambdaLR-style branches; MixUp with one-hot targets from
``F.one_hot`` or from ``scatter``; label smoothing from log_softmax or from the smoothed target distribution;
weight-decay groups by module type or by number of dimensions. Each wrong answer changes one thing. Every failure
is checked in-process and in split mode (``split_mode.assert_same_failure``), as ``course-grade`` runs a check.
"""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from course_utils.checks import training_recipes as checks
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


CHECKS = {"warmup_cosine_lr": checks.check_warmup_cosine, "mixup": checks.check_mixup,
          "smoothed_cross_entropy": checks.check_smoothed_cross_entropy,
          "weight_decay_groups": checks.check_weight_decay_groups}


@pytest.mark.parametrize("name", CHECKS)
def test_every_check_fails_on_the_stub_of_the_unsolved_exercise(name):
    assert_same_failure(CHECKS[name], {name: stub}, "not implemented yet")


# --------------------------------------------------------------------------- warmup + cosine

def warmup_cosine_lr(step, base_lr, warmup_steps, total_steps, start_factor, eta_min, off_by_one=False,
                     to_zero=False, cosine_over_total=False, from_zero=False):
    """A right answer, or one with exactly one thing changed."""
    t = step + 1 if off_by_one else step
    if t < warmup_steps:
        start = 0.0 if from_zero else start_factor
        return base_lr * (start + (1 - start) * t / warmup_steps)
    floor = 0.0 if to_zero else eta_min
    length = total_steps if cosine_over_total else total_steps - warmup_steps
    return floor + (base_lr - floor) * (1 + math.cos(math.pi * (t - warmup_steps) / length)) / 2


def warmup_cosine_as_factor(step, base_lr, warmup_steps, total_steps, start_factor, eta_min):
    """Written differently: a multiplicative factor, as a LambdaLR would use, and torch.cos."""
    if step >= warmup_steps:
        progress = torch.tensor((step - warmup_steps) / (total_steps - warmup_steps))
        return eta_min + 0.5 * (base_lr - eta_min) * (1 + torch.cos(math.pi * progress))
    factor = start_factor + step * (1 - start_factor) / warmup_steps
    return factor * base_lr


@pytest.mark.parametrize("answer", [warmup_cosine_lr, warmup_cosine_as_factor], ids=["formula", "factor, tensor"])
def test_warmup_cosine_check_passes_on_right_answers(answer, capsys):
    checks.check_warmup_cosine(answer)
    assert "warmup_cosine_lr: all 4 cases passed" in capsys.readouterr().out
    assert split_verdict(checks.check_warmup_cosine, {"warmup_cosine_lr": answer}) is None


@pytest.mark.parametrize("options, message", [
    ({"off_by_one": True}, r"the rate at step 0 is 0\.04, expected 0\.01 .*one step ahead"),
    ({"to_zero": True}, r"the rate at step 4 is 0\.0950484, expected 0\.0955436"),
    ({"cosine_over_total": True}, r"the rate at step 4 is .*cosine runs over the total_steps - warmup_steps"),
    ({"from_zero": True}, r"the rate at step 0 is 0, expected 0\.01 .*start_factor \* base_lr"),
], ids=["warmup one step ahead", "cosine to zero", "cosine over every step", "warmup from zero"])
def test_warmup_cosine_check_fails_on_a_mistake(options, message):
    wrong = lambda *args: warmup_cosine_lr(*args, **options)  # noqa: E731
    assert_same_failure(checks.check_warmup_cosine, {"warmup_cosine_lr": wrong}, message)


def test_warmup_cosine_check_says_when_the_cosine_ends_at_zero():
    def ends_at_zero(step, base_lr, warmup_steps, total_steps, start_factor, eta_min):
        return 0.0 if step == total_steps else warmup_cosine_lr(step, base_lr, warmup_steps, total_steps,
                                                                start_factor, eta_min)
    assert_same_failure(checks.check_warmup_cosine, {"warmup_cosine_lr": ends_at_zero},
                        r"step 10 is 0, expected 0\.01 .*ends at eta_min, not 0")


def test_warmup_cosine_check_refuses_a_list():
    assert_same_failure(checks.check_warmup_cosine, {"warmup_cosine_lr": lambda *args: [0.1]},
                        r"step 0 returned a list; expected the rate as a float")


# --------------------------------------------------------------------------- MixUp

def mixup(images, labels, num_classes, lam, permutation, mistake=None):
    """A right answer, or one with exactly one thing changed."""
    one_hot = F.one_hot(labels, num_classes).float()  # (N, K)
    if mistake == "targets only":
        return images, lam * one_hot + (1 - lam) * one_hot[permutation]
    if mistake == "lam on the permuted side":
        return (1 - lam) * images + lam * images[permutation], (1 - lam) * one_hot + lam * one_hot[permutation]
    if mistake == "targets not mixed":
        return lam * images + (1 - lam) * images[permutation], one_hot
    if mistake == "labels as they are":
        return lam * images + (1 - lam) * images[permutation], labels
    if mistake == "reversed permutation":
        inverse = torch.argsort(permutation)
        return lam * images + (1 - lam) * images[inverse], lam * one_hot + (1 - lam) * one_hot[inverse]
    return lam * images + (1 - lam) * images[permutation], lam * one_hot + (1 - lam) * one_hot[permutation]


def mixup_by_scatter(images, labels, num_classes, lam, permutation):
    """Written differently: one-hot by scatter_, torch.lerp, a tuple built from a list."""
    one_hot = torch.zeros(len(labels), num_classes).scatter_(1, labels[:, None], 1.0)  # (N, K)
    return tuple([torch.lerp(images[permutation], images, lam), torch.lerp(one_hot[permutation], one_hot, lam)])


@pytest.mark.parametrize("answer", [mixup, mixup_by_scatter], ids=["one_hot", "scatter and lerp"])
def test_mixup_check_passes_on_right_answers(answer, capsys):
    checks.check_mixup(answer)
    assert "mixup: all 6 cases passed" in capsys.readouterr().out
    assert split_verdict(checks.check_mixup, {"mixup": answer}) is None


@pytest.mark.parametrize("mistake, message", [
    ("targets only", r"mixed_images equal the images: the permutation is applied to the targets but not to the "
                     r"images"),
    ("lam on the permuted side", r"mixed_targets put lam=0\.\d+ on the permuted labels"),
    ("targets not mixed", r"mixed_targets are the one-hot labels"),
    ("labels as they are", r"mixed_targets has shape \(6,\), expected \(6, 4\)"),
    ("reversed permutation", r"permutation \[5, 0, 1, 2, 3, 4\].*mixed_targets\[0, \d\] is"),
], ids=["permutation on the targets only", "lam on the wrong side", "targets not mixed", "integer labels",
        "the inverse permutation"])
def test_mixup_check_fails_on_a_mistake(mistake, message):
    wrong = lambda *args: mixup(*args, mistake=mistake)  # noqa: E731
    assert_same_failure(checks.check_mixup, {"mixup": wrong}, message)


def test_mixup_check_compares_with_torchvision_lambda():
    def fixed_lambda(images, labels, num_classes, lam, permutation):
        return mixup(images, labels, num_classes, 0.5, permutation)
    assert_same_failure(checks.check_mixup, {"mixup": fixed_lambda}, r"v2\.MixUp\(alpha=0\.4\).*is")


# --------------------------------------------------------------------------- label smoothing

def smoothed_cross_entropy(logits, targets, smoothing, mistake=None):
    """A right answer, or one with exactly one thing changed."""
    num_classes = logits.shape[1]
    if mistake == "log of softmax":
        log_p = torch.log(torch.softmax(logits, dim=1))
    else:
        log_p = F.log_softmax(logits, dim=1)  # (N, K)
    nll = -log_p.gather(1, targets[:, None])[:, 0]  # (N,)
    uniform = -log_p.mean(dim=1)  # (N,)
    if mistake == "K - 1":
        uniform = (-log_p.sum(dim=1) - nll) / (num_classes - 1)
    if mistake == "sum":
        return ((1 - smoothing) * nll + smoothing * uniform).sum()
    if mistake == "true class weight 1":
        return (nll + smoothing * uniform).mean()
    if mistake == "float":
        return float(((1 - smoothing) * nll + smoothing * uniform).mean().detach())
    if mistake == "detached":
        return ((1 - smoothing) * nll + smoothing * uniform).mean().detach()
    if mistake == "per example":
        return (1 - smoothing) * nll + smoothing * uniform
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


def smoothed_by_target_distribution(logits, targets, smoothing):
    """Written differently: the smoothed target distribution, then the cross-entropy with soft targets by hand."""
    num_classes = logits.shape[1]
    soft = torch.full_like(logits, smoothing / num_classes)
    soft.scatter_(1, targets[:, None], 1 - smoothing + smoothing / num_classes)  # (N, K)
    return -(soft * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


@pytest.mark.parametrize("answer", [smoothed_cross_entropy, smoothed_by_target_distribution,
                                    lambda lo, t, s: F.cross_entropy(lo, F.one_hot(t, lo.shape[1]).float() * (1 - s)
                                                                     + s / lo.shape[1])],
                         ids=["log_softmax", "smoothed distribution", "soft targets"])
def test_smoothing_check_passes_on_right_answers(answer, capsys):
    checks.check_smoothed_cross_entropy(answer)
    assert "smoothed_cross_entropy: all 5 cases passed" in capsys.readouterr().out
    assert split_verdict(checks.check_smoothed_cross_entropy, {"smoothed_cross_entropy": answer}) is None


@pytest.mark.parametrize("mistake, message", [
    ("K - 1", r"smoothing=0\.1\): the loss is .*spread over the K - 1 wrong classes only"),
    ("sum", r"summed over the batch instead of the mean"),
    ("true class weight 1", r"the true class keeps weight 1 instead of 1 - smoothing"),
    ("log of softmax", r"scale 60.*the loss is inf.*use log_softmax"),
    ("float", r"returned a float; return the loss as a 0-d tensor"),
    ("detached", r"does not backpropagate to the logits"),
    ("per example", r"the loss has shape \(4,\), expected \(\)"),
], ids=["K - 1 classes", "sum", "true class weight 1", "log of softmax", "a float", "detached", "per example"])
def test_smoothing_check_fails_on_a_mistake(mistake, message):
    wrong = lambda *args: smoothed_cross_entropy(*args, mistake=mistake)  # noqa: E731
    assert_same_failure(checks.check_smoothed_cross_entropy, {"smoothed_cross_entropy": wrong}, message)


def test_smoothing_check_says_when_smoothing_is_ignored():
    assert_same_failure(checks.check_smoothed_cross_entropy,
                        {"smoothed_cross_entropy": lambda logits, targets, s: F.cross_entropy(logits, targets)},
                        r"smoothing=0\.1\).*\(smoothing ignored\)")


# --------------------------------------------------------------------------- weight-decay groups

NORMS = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def weight_decay_groups(model, weight_decay, skip, mistake=None):
    """A right answer by module type, or one with exactly one thing changed."""
    no_decay = set(skip)
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if isinstance(module, NORMS) and not (mistake == "norm weights decayed" and name == "weight"):
                no_decay.add(full)
            if name == "bias" and mistake != "biases decayed":
                no_decay.add(full)
    if mistake == "skip ignored":
        no_decay -= set(skip)
    decay = [p for n, p in model.named_parameters() if n not in no_decay]
    rest = [p for n, p in model.named_parameters() if n in no_decay]
    if mistake == "one in both":
        rest = rest + decay[:1]
    if mistake == "one missing":
        decay = decay[1:]
    if mistake == "no weight_decay key":
        return [{"params": decay}, {"params": rest, "weight_decay": 0.0}]
    if mistake == "a copy":
        rest = [p.detach().clone() for p in rest]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def weight_decay_groups_by_ndim(model, weight_decay, skip):
    """Written differently (timm's rule): one-dimensional parameters and the names in skip; no-decay group first."""
    plain, special = [], []
    for name, parameter in model.named_parameters():
        (special if parameter.ndim <= 1 or name in skip else plain).append(parameter)
    return ({"params": special, "weight_decay": 0}, {"params": plain, "weight_decay": weight_decay})


@pytest.mark.parametrize("answer", [weight_decay_groups, weight_decay_groups_by_ndim], ids=["module type", "ndim"])
def test_weight_decay_check_passes_on_right_answers(answer, capsys):
    checks.check_weight_decay_groups(answer)
    assert "weight_decay_groups: all 2 cases passed" in capsys.readouterr().out
    assert split_verdict(checks.check_weight_decay_groups, {"weight_decay_groups": answer}) is None


@pytest.mark.parametrize("mistake, message", [
    ("biases decayed", r"ResNet.*fc\.bias \(a bias\) has weight_decay=0\.0005; biases, norm parameters"),
    ("norm weights decayed", r"bn\.weight \(a normalisation layer's scale\) has weight_decay=0\.0005"),
    ("skip ignored", r"transformer-like.*cls_token \(named in skip\) has weight_decay=0\.05"),
    ("one in both", r"stem\.weight is in more than one group"),
    ("one missing", r"1 of \d+ parameters are in no group \(e\.g\. stem\.weight\)"),
    ("no weight_decay key", r"group 0 has no 'weight_decay' number"),
    ("a copy", r"group 1 holds a tensor that is not a parameter of the model"),
], ids=["biases decayed", "norm weights decayed", "skip ignored", "a parameter in two groups", "a parameter missing",
        "no weight_decay", "copies of the parameters"])
def test_weight_decay_check_fails_on_a_mistake(mistake, message):
    wrong = lambda *args: weight_decay_groups(*args, mistake=mistake)  # noqa: E731
    assert_same_failure(checks.check_weight_decay_groups, {"weight_decay_groups": wrong}, message)


def test_weight_decay_check_refuses_one_group_for_everything():
    everything = lambda model, wd, skip: [{"params": list(model.parameters()), "weight_decay": wd}]  # noqa: E731
    assert_same_failure(checks.check_weight_decay_groups, {"weight_decay_groups": everything},
                        r"bn\.weight \(a normalisation layer's scale\) has weight_decay=0\.0005")


def test_weight_decay_check_refuses_a_model_instead_of_groups():
    assert_same_failure(checks.check_weight_decay_groups, {"weight_decay_groups": lambda model, wd, skip: model},
                        r"should return a list of dicts with 'params' and 'weight_decay'.*got a _SmallResNet")
