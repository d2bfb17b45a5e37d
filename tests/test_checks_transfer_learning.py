"""The chapter 13 checks pass on right answers written in different ways and fail on the usual mistakes.

Right answers: freezing by ``requires_grad_`` on the whole model or parameter by parameter, an optimiser over
``model.fc.parameters()`` or over the parameters that require gradients, SGD or Adam; parameter groups built from
the stages in either direction; linear probes trained with SGD or Adam. Each wrong answer changes one thing.
"""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from course_utils.checks import transfer_learning as checks
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


@pytest.mark.parametrize("check", [checks.check_feature_extraction, checks.check_discriminative_param_groups,
                                   checks.check_linear_probe], ids=lambda check: check.__name__)
def test_every_check_fails_on_the_stub_of_the_unsolved_exercise(check):
    with pytest.raises(AssertionError, match="not implemented yet"):
        check(stub)


# --------------------------------------------------------------------------- feature extraction

def prepare(model, num_classes, lr, replace_head=True, freeze=True, bn="eval", optimise="head", lr_scale=1.0):
    """A right answer, or one with exactly one thing changed."""
    if freeze:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    if replace_head:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    if bn == "eval":
        model.eval()
    elif bn == "train":
        model.train()
    if optimise == "head":
        parameters = model.fc.parameters()
    elif optimise == "trainable":
        parameters = [p for p in model.parameters() if p.requires_grad]
    else:
        parameters = model.parameters()
    return torch.optim.Adam(parameters, lr=lr * lr_scale)


def prepare_by_name(model, num_classes, lr):
    """Written differently: the head first, then freezing by parameter name, SGD over what still trains."""
    model.fc = nn.Linear(1280, num_classes)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("fc.")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)


@pytest.mark.parametrize("answer", [prepare, prepare_by_name, lambda m, n, lr: prepare(m, n, lr, optimise="trainable")],
                         ids=["fc.parameters()", "by name, SGD", "the parameters that require grad"])
def test_feature_extraction_check_passes_on_right_answers(answer, capsys):
    checks.check_feature_extraction(answer)
    assert "prepare_feature_extraction: all 2 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize("options, message", [
    ({"replace_head": False}, r"model\.fc should be a new nn\.Linear\(1280, 6\) .*weight shape \(1000, 1280\) "
                              r"\(head not replaced\?\)"),
    ({"freeze": False}, r"147 of 147 backbone parameters still require gradients \(e\.g\. stem\.conv\.weight\).*"
                        r"backbone not frozen"),
    ({"bn": "train"}, r"49 of 49 batch-norm layers are in training mode"),
    ({"optimise": "all"}, r"the optimiser's parameter groups hold .* \(149 tensors\); they should hold exactly the "
                          r"new head's"),
    ({"lr_scale": 10.0}, r"a parameter group has lr=0\.01, expected lr=0\.001"),
], ids=["head not replaced", "backbone not frozen", "BN in train mode", "optimiser over every parameter",
        "wrong learning rate"])
def test_feature_extraction_check_fails_on_a_mistake(options, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_feature_extraction(lambda model, n, lr: prepare(model, n, lr, **options))


def test_feature_extraction_check_fails_when_bn_is_left_in_the_mode_a_training_loop_left_it():
    def answer(model, num_classes, lr):
        model.train()  # as a model comes out of a training loop
        return prepare(model, num_classes, lr, bn="leave as it is")

    with pytest.raises(AssertionError, match=r"49 of 49 batch-norm layers are in training mode"):
        checks.check_feature_extraction(answer)


def test_feature_extraction_check_fails_when_the_backbone_is_reinitialised():
    def answer(model, num_classes, lr):
        nn.init.zeros_(model.stem.conv.weight)
        return prepare(model, num_classes, lr)

    with pytest.raises(AssertionError, match=r"the backbone's weights changed \(stem\.conv\.weight"):
        checks.check_feature_extraction(answer)


def test_feature_extraction_check_fails_when_no_optimiser_is_returned():
    with pytest.raises(AssertionError, match="should return a torch.optim optimiser; got a NoneType"):
        checks.check_feature_extraction(lambda model, n, lr: prepare(model, n, lr) and None)


# --------------------------------------------------------------------------- discriminative learning rates

def groups(stages, base_lr, decay):
    n = len(stages)
    return [{"params": list(module.parameters()), "lr": base_lr * decay ** (n - 1 - i)}
            for i, (_, module) in enumerate(stages)]


def groups_from_the_top(stages, base_lr, decay):
    """Written differently: walking from the output down, the rate multiplied as it goes, tuples of tensors."""
    result, lr = [], base_lr
    for name, module in reversed(stages):
        result.append({"params": tuple(module.parameters()), "lr": lr, "name": name})
        lr *= decay
    return result


@pytest.mark.parametrize("answer", [groups, groups_from_the_top], ids=["input to output", "output to input"])
def test_param_groups_check_passes_on_right_answers(answer, capsys):
    checks.check_discriminative_param_groups(answer)
    assert "discriminative_param_groups: all 2 cases passed" in capsys.readouterr().out


def one_lr(stages, base_lr, decay):
    return [{"params": list(module.parameters()), "lr": base_lr} for _, module in stages]


def reversed_decay(stages, base_lr, decay):
    return [{"params": list(module.parameters()), "lr": base_lr * decay**i} for i, (_, module) in enumerate(stages)]


def overlapping(stages, base_lr, decay):
    result = groups(stages, base_lr, decay)
    result[-1]["params"] = result[-1]["params"] + result[-2]["params"][:1]
    return result


def weights_only(stages, base_lr, decay):
    result = groups(stages, base_lr, decay)
    for group in result:
        group["params"] = [p for p in group["params"] if p.dim() > 1]
    return result


def last_stage_forgotten(stages, base_lr, decay):
    return groups(stages, base_lr, decay)[:-1]


def everything_in_one_group(stages, base_lr, decay):
    return [{"params": [p for _, module in stages for p in module.parameters()], "lr": base_lr}]


@pytest.mark.parametrize("answer, message", [
    (one_lr, r"stage 'stem' \(9 stages below the output\) has lr=0\.001, expected base_lr \* decay\*\*9 = "
             r"1\.9531\de-06 \(one learning rate for every group\)"),
    (reversed_decay, r"stage 'stem' .* has lr=0\.001, expected .* \(decay counted from the input instead of the "
                     r"output\?\)"),
    (overlapping, r"group 9 mixes parameters of \['fc', 'head'\]"),
    (weights_only, r"2 of the 3 parameters of stage 'stem' are in no group \(e\.g\. stem\.bn\.weight\)"),
    (last_stage_forgotten, r"2 of the 2 parameters of stage 'fc' are in no group"),
    (everything_in_one_group, r"group 0 mixes parameters of \['fc', 'head', 'stage1'"),
    (lambda stages, base_lr, decay: {"params": []}, r"should return a list of dicts .* got a dict"),
], ids=["one LR for all", "decay from the input", "groups overlap", "BN parameters missing", "head forgotten",
        "one group", "a dict"])
def test_param_groups_check_fails_on_a_mistake(answer, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_discriminative_param_groups(answer)


def test_param_groups_check_fails_on_a_parameter_twice_in_its_own_group():
    def twice(stages, base_lr, decay):
        result = groups(stages, base_lr, decay)
        result[0]["params"] = result[0]["params"] * 2
        return result

    with pytest.raises(AssertionError, match=r"stem\.conv\.weight is in more than one group \(or twice in one\)"):
        checks.check_discriminative_param_groups(twice)


def test_param_groups_check_catches_a_network_hard_coded_as_efficientnet():
    def ten_stages(stages, base_lr, decay):
        return [{"params": list(module.parameters()), "lr": base_lr * decay ** (9 - i)}
                for i, (_, module) in enumerate(stages)]

    with pytest.raises(AssertionError, match=r"stages of three stages.*stage 'first'"):
        checks.check_discriminative_param_groups(ten_stages)


# --------------------------------------------------------------------------- the linear probe

def probe(train_x, train_y, test_x, test_y, optimiser="adam", standardise=True, score_on="test", percent=False):
    if standardise:
        mean, std = train_x.mean(0), train_x.std(0)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    linear = nn.Linear(train_x.shape[1], int(train_y.max()) + 1)
    if optimiser == "adam":
        optimizer = torch.optim.Adam(linear.parameters(), lr=0.05)
    else:
        optimizer = torch.optim.SGD(linear.parameters(), lr=0.5)
    for _ in range(300):
        loss = F.cross_entropy(linear(train_x), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = (test_x, test_y) if score_on == "test" else (train_x, train_y)
    accuracy = (linear(x).argmax(1) == y).float().mean().item()
    return 100 * accuracy if percent else accuracy


def probe_in_mini_batches(train_x, train_y, test_x, test_y):
    """Written differently: a weight matrix without nn.Linear, mini-batches of 16, a 0-d tensor returned."""
    mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True)
    train_z, test_z = (train_x - mean) / std, (test_x - mean) / std
    weight = torch.zeros(train_z.shape[1], int(train_y.max()) + 1, requires_grad=True)  # (D, classes)
    bias = torch.zeros(int(train_y.max()) + 1, requires_grad=True)
    optimizer = torch.optim.SGD([weight, bias], lr=0.05)
    for _ in range(30):
        for batch in torch.randperm(len(train_z)).split(16):
            loss = F.cross_entropy(train_z[batch] @ weight + bias, train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return ((test_z @ weight + bias).argmax(1) == test_y).float().mean().detach()


@pytest.mark.parametrize("answer", [probe, lambda *a: probe(*a, optimiser="sgd"), probe_in_mini_batches],
                         ids=["Adam", "SGD", "mini-batches, a 0-d tensor"])
def test_linear_probe_check_passes_on_right_answers(answer, capsys):
    checks.check_linear_probe(answer)
    assert "linear_probe: all 3 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize("options, message", [
    ({"standardise": False}, r"linear_probe on unscaled features.*test accuracy 0\.\d+, expected 0\.887"),
    ({"score_on": "train"}, r"many dimensions, few examples.*\(the accuracy of the training set\?"),
    ({"percent": True}, r"the accuracy is a fraction in \[0, 1\] \(not a percentage\)"),
], ids=["not standardised", "scored on the training set", "a percentage"])
def test_linear_probe_check_fails_on_a_mistake(options, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_linear_probe(lambda *a: probe(*a, **options))


def test_linear_probe_check_fails_on_a_list_of_predictions():
    with pytest.raises(AssertionError, match="should return the test accuracy as a float; got a list"):
        checks.check_linear_probe(lambda train_x, train_y, test_x, test_y: test_y.tolist())


def test_reference_probe_is_near_perfect_on_separable_clusters_and_chance_on_noise():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    separable = torch.randn(200, 3, generator=generator) + 5 * labels[:, None]  # (200, 3)
    noise = torch.randn(200, 3, generator=generator)
    assert checks.reference_linear_probe(separable[:100], labels[:100], separable[100:], labels[100:]) == 1.0
    assert 0.3 < checks.reference_linear_probe(noise[:100], labels[:100], noise[100:], labels[100:]) < 0.7


# --------------------------------------------------------------------------- split mode, as under course-grade
# Under ``course-grade`` a check runs in the grader's process on handles of the learner's objects
# (``learner.Loopback`` runs that protocol in this process, every message encoded to bytes): right answers must
# pass there too, and wrong ones fail with the message they get in the learner's notebook.

@pytest.mark.parametrize("check, namespace, summary", [
    (checks.check_feature_extraction, {"prepare_feature_extraction": prepare_by_name},
     "prepare_feature_extraction: all 2 cases passed"),
    (checks.check_discriminative_param_groups, {"discriminative_param_groups": groups_from_the_top},
     "discriminative_param_groups: all 2 cases passed"),
    (checks.check_linear_probe, {"linear_probe": probe}, "linear_probe: all 3 cases passed"),
], ids=["feature extraction", "parameter groups", "linear probe"])
def test_right_answers_pass_in_split_mode(check, namespace, summary, capsys):
    assert split_verdict(check, namespace) is None
    assert summary in capsys.readouterr().out


@pytest.mark.parametrize("check, name", [
    (checks.check_feature_extraction, "prepare_feature_extraction"),
    (checks.check_discriminative_param_groups, "discriminative_param_groups"),
    (checks.check_linear_probe, "linear_probe"),
], ids=lambda value: value if isinstance(value, str) else value.__name__)
def test_the_stubs_fail_with_the_same_message_in_split_mode(check, name):
    assert_same_failure(check, {name: stub}, f"{name} is not implemented yet")


@pytest.mark.parametrize("check, namespace, message", [
    (checks.check_feature_extraction,
     {"prepare_feature_extraction": lambda m, n, lr: prepare(m, n, lr, replace_head=False)}, r"head not replaced"),
    (checks.check_feature_extraction, {"prepare_feature_extraction": lambda m, n, lr: prepare(m, n, lr, bn="train")},
     r"batch-norm layers are in training mode"),
    (checks.check_feature_extraction, {"prepare_feature_extraction": lambda m, n, lr: prepare(m, n, lr, freeze=False)},
     r"backbone not frozen"),
    (checks.check_discriminative_param_groups, {"discriminative_param_groups": one_lr},
     r"one learning rate for every group"),
    (checks.check_discriminative_param_groups, {"discriminative_param_groups": overlapping}, r"mixes parameters"),
    (checks.check_discriminative_param_groups, {"discriminative_param_groups": weights_only}, r"are in no group"),
    (checks.check_linear_probe, {"linear_probe": lambda *a: probe(*a, score_on="train")},
     r"the accuracy of the training set"),
], ids=["head not replaced", "BN in train mode", "backbone not frozen", "one LR", "groups overlap",
        "parameters missing", "probe scored on the training set"])
def test_wrong_answers_fail_with_the_same_message_in_split_mode(check, namespace, message):
    assert_same_failure(check, namespace, message)
