"""Checks for chapter 13 (Transfer learning): a frozen backbone with a new head, discriminative learning rates, a
linear probe.

The learner's functions run on networks that the probes (``learner_...``, run where the learner's code lives) build
from plain arguments: EfficientNet-Lite0 at random initialisation (its weights do not matter here, its parameter
names do) and a small three-stage network. What comes back is plain data: parameter names, ``requires_grad``
flags, the modes of the batch-norm layers, the optimiser's parameter groups by parameter name. The expected
answers are worked out here from the parameter names alone (which stage a name belongs to), not with the course's
own helpers; the linear probe is compared with a logistic regression solved by L-BFGS.
"""
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.checks import common, learner
from course_utils.models.efficientnet_lite import LITE0_STAGES, EfficientNetLite
from course_utils.transfer import efficientnet_stages

HEAD_NAMES = ("fc.weight", "fc.bias")
NOT_IN_MODEL = "<a tensor that is not a parameter of the model>"


def _lite0(seed):
    torch.manual_seed(seed)
    return EfficientNetLite(LITE0_STAGES).eval()


def _name_of(model):
    """``id(parameter) -> name`` over the model's parameters."""
    return {id(parameter): name for name, parameter in model.named_parameters()}


def _describe_groups(optimizer, names):
    """An optimiser's parameter groups as plain data: ``[{"lr": float, "params": [names]}, ...]``."""
    groups = []
    for group in optimizer.param_groups:
        groups.append({"lr": float(group.get("lr", float("nan"))),
                       "params": [names.get(id(p), NOT_IN_MODEL) for p in group["params"]]})
    return groups


# --------------------------------------------------------------------------- exercise 1: feature extraction

def learner_feature_extraction(prepare, num_classes, lr, seed, case):
    """Run the learner's ``prepare(model, num_classes, lr)`` on a fresh EfficientNet-Lite0; describe the result."""
    model = _lite0(seed)
    backbone = {name: p.detach().clone() for name, p in model.named_parameters() if name not in HEAD_NAMES}
    optimizer = common.call(prepare, model, num_classes, lr, case=case)
    names = _name_of(model)
    fc = getattr(model, "fc", None)
    description = {
        "fc": type(fc).__name__,
        "fc_shape": list(fc.weight.shape) if isinstance(fc, nn.Linear) else None,
        "requires_grad": sorted(name for name, p in model.named_parameters() if p.requires_grad),
        "bn_training": sorted(name for name, m in model.named_modules()
                              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training),
        "backbone_changed": sorted(name for name, p in model.named_parameters()
                                   if name in backbone and not torch.equal(p.detach(), backbone[name])),
        "optimizer": type(optimizer).__name__,
        "groups": _describe_groups(optimizer, names) if isinstance(optimizer, torch.optim.Optimizer) else None,
    }
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        try:
            description["output_shape"] = list(model(x).shape)
        except Exception as error:
            description["output_shape"] = f"{type(error).__name__}: {error}"
    return description


FEATURE_EXTRACTION_CASES = ((6, 1e-3), (10, 0.05))  # (num_classes, lr)


def check_feature_extraction(prepare_feature_extraction):
    """``prepare_feature_extraction(model, num_classes, lr)``: a new head, a frozen backbone, batch norm in eval
    mode, an optimiser over the head only."""
    reference = _lite0(0)
    all_names = [name for name, _ in reference.named_parameters()]
    bn_names = [name for name, m in reference.named_modules() if isinstance(m, nn.BatchNorm2d)]
    for num_classes, lr in FEATURE_EXTRACTION_CASES:
        case = f"prepare_feature_extraction(EfficientNet-Lite0, num_classes={num_classes}, lr={lr:g})"
        found = learner.run(learner_feature_extraction, prepare_feature_extraction, num_classes, lr, 0, case)
        expected_shape = [num_classes, reference.fc.in_features]
        if found["fc_shape"] != expected_shape:
            what = (f"a Linear of weight shape {tuple(found['fc_shape'])}" if found["fc_shape"] is not None
                    else f"a {found['fc']}")
            raise AssertionError(f"{case}: model.fc should be a new nn.Linear({reference.fc.in_features}, "
                                 f"{num_classes}) (weight shape {tuple(expected_shape)}); it is {what} (head not "
                                 f"replaced?)")
        if found["output_shape"] != [2, num_classes]:
            raise AssertionError(f"{case}: the model should map (2, 3, 32, 32) to logits (2, {num_classes}); got "
                                 f"{found['output_shape']}")
        trainable = set(found["requires_grad"])
        backbone_trainable = [name for name in all_names if name in trainable and name not in HEAD_NAMES]
        if backbone_trainable:
            raise AssertionError(f"{case}: {len(backbone_trainable)} of {len(all_names) - 2} backbone parameters "
                                 f"still require gradients (e.g. {backbone_trainable[0]}); only {list(HEAD_NAMES)} "
                                 f"should (backbone not frozen?)")
        if trainable != set(HEAD_NAMES):
            raise AssertionError(f"{case}: {sorted(set(HEAD_NAMES) - trainable)} should require gradients (the new "
                                 f"head trains)")
        if found["backbone_changed"]:
            raise AssertionError(f"{case}: the backbone's weights changed ({found['backbone_changed'][0]} ...); "
                                 f"feature extraction keeps the pretrained weights as they are")
        if found["bn_training"]:
            raise AssertionError(f"{case}: {len(found['bn_training'])} of {len(bn_names)} batch-norm layers are in "
                                 f"training mode (e.g. {found['bn_training'][0]}): with a frozen backbone they must "
                                 f"normalise with their ImageNet running statistics (call eval() on them)")
        if found["groups"] is None:
            raise AssertionError(f"{case}: should return a torch.optim optimiser; got a {found['optimizer']}")
        optimised = [name for group in found["groups"] for name in group["params"]]
        if sorted(optimised) != sorted(HEAD_NAMES):
            raise AssertionError(f"{case}: the optimiser's parameter groups hold {sorted(optimised)[:4]}"
                                 f"{' ...' if len(optimised) > 4 else ''} ({len(optimised)} tensors); they should "
                                 f"hold exactly the new head's {list(HEAD_NAMES)}")
        for group in found["groups"]:
            if not np.isclose(group["lr"], lr, rtol=1e-9, atol=0.0):
                raise AssertionError(f"{case}: a parameter group has lr={group['lr']:g}, expected lr={lr:g}")
    common.passed("prepare_feature_extraction", len(FEATURE_EXTRACTION_CASES))


# --------------------------------------------------------------------------- exercise 2: discriminative rates

class _ThreeStages(nn.Module):
    """A small network of three stages: a linear layer, a linear layer with batch norm, a classifier."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 8)
        self.middle = nn.Sequential(nn.Linear(8, 8, bias=False), nn.BatchNorm1d(8))
        self.last = nn.Linear(8, 3)


def _lite0_stage_of(name):
    """The stage of an EfficientNet-Lite0 parameter from its name: stem, stage1 ... stage7, head or fc."""
    top = name.split(".")[0]
    if top != "blocks":
        return top
    block = int(name.split(".")[1])
    ends = np.cumsum([stage.num_layers for stage in LITE0_STAGES])  # (7,): 1, 3, 5, 8, 11, 15, 16
    return f"stage{int(np.searchsorted(ends, block, side='right')) + 1}"


def _network_and_stages(which, seed):
    """The network of a case and its stages, input to output (the function's input; the expected groups come from
    the parameter names, ``_lite0_stage_of``)."""
    if which == "three stages":
        torch.manual_seed(seed)
        model = _ThreeStages()
        return model, [("first", model.first), ("middle", model.middle), ("last", model.last)]
    model = _lite0(seed)
    return model, efficientnet_stages(model)


def learner_parameter_groups(param_groups, which, base_lr, decay, seed, case):
    """The learner's ``param_groups(stages, base_lr, decay)`` on a case's network, as plain data.

    Returns ``{"groups": [{"lr", "params": [names]}], "optimizer_error": str or None}`` (whether
    ``torch.optim.SGD`` accepts the groups) or ``{"not_a_list": type name}``.
    """
    model, stages = _network_and_stages(which, seed)
    groups = common.call(param_groups, stages, base_lr, decay, case=case)
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) and "params" in g for g in groups):
        return {"not_a_list": type(groups).__name__}
    names = _name_of(model)
    described = []
    for group in groups:
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        described.append({"lr": float(group["lr"]) if "lr" in group else None,
                          "params": [names.get(id(p), NOT_IN_MODEL) for p in params]})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a duplicate within a group is reported by the check instead
            torch.optim.SGD(groups, lr=1.0)
        error = None
    except Exception as exception:
        error = f"{type(exception).__name__}: {exception}"
    return {"groups": described, "optimizer_error": error}


# (network, base_lr, decay)
PARAMETER_GROUP_CASES = (("EfficientNet-Lite0", 1e-3, 0.5), ("three stages", 0.1, 0.3))


def _expected_groups(which):
    """``{stage: (depth from the output, [parameter names])}`` from the parameter names alone."""
    if which == "three stages":
        order = ["first", "middle", "last"]
        names = [name for name, _ in _ThreeStages().named_parameters()]
        stage_of = lambda name: name.split(".")[0]  # noqa: E731
    else:
        order = ["stem"] + [f"stage{i}" for i in range(1, len(LITE0_STAGES) + 1)] + ["head", "fc"]
        names = [name for name, _ in _lite0(0).named_parameters()]
        stage_of = _lite0_stage_of
    return {stage: (len(order) - 1 - i, sorted(n for n in names if stage_of(n) == stage))
            for i, stage in enumerate(order)}


def check_discriminative_param_groups(discriminative_param_groups):
    """``discriminative_param_groups(stages, base_lr, decay)``: one group per stage, ``base_lr * decay**depth``."""
    for which, base_lr, decay in PARAMETER_GROUP_CASES:
        case = f"discriminative_param_groups(stages of {which}, base_lr={base_lr:g}, decay={decay:g})"
        found = learner.run(learner_parameter_groups, discriminative_param_groups, which, base_lr, decay, 0, case)
        if "not_a_list" in found:
            raise AssertionError(f"{case}: should return a list of dicts with 'params' and 'lr' (torch.optim's "
                                 f"parameter groups); got a {found['not_a_list']}")
        expected = _expected_groups(which)
        model_order = {which: [name for name, _ in (_ThreeStages() if which == "three stages" else _lite0(0))
                               .named_parameters()]}
        stage_of = {name: stage for stage, (_, names) in expected.items() for name in names}
        seen = {}
        for index, group in enumerate(found["groups"]):
            stages = sorted({stage_of.get(name, NOT_IN_MODEL) for name in group["params"]})
            if not group["params"]:
                raise AssertionError(f"{case}: group {index} holds no parameter")
            if len(stages) != 1:
                raise AssertionError(f"{case}: group {index} mixes parameters of {stages}; each group holds the "
                                     f"parameters of one stage")
            stage = stages[0]
            if stage == NOT_IN_MODEL:
                raise AssertionError(f"{case}: group {index} holds a tensor that is not a parameter of the model")
            duplicates = [n for n in group["params"] if group["params"].count(n) > 1 or n in seen]
            if duplicates:
                raise AssertionError(f"{case}: {duplicates[0]} is in more than one group (or twice in one); every "
                                     f"parameter belongs to exactly one group")
            for name in group["params"]:
                seen[name] = index
            depth, _ = expected[stage]
            wanted = base_lr * decay**depth
            if group["lr"] is None or not np.isclose(group["lr"], wanted, rtol=1e-9, atol=0.0):
                lrs = sorted({g["lr"] for g in found["groups"] if g["lr"] is not None})
                reversed_lr = base_lr * decay ** (len(expected) - 1 - depth)
                hint = (" (one learning rate for every group)" if len(lrs) == 1 else
                        " (decay counted from the input instead of the output?)"
                        if group["lr"] is not None and np.isclose(group["lr"], reversed_lr, rtol=1e-9, atol=0.0)
                        else "")
                raise AssertionError(f"{case}: the group of stage {stage!r} ({depth} stages below the output) has "
                                     f"lr={group['lr']}, expected base_lr * decay**{depth} = {wanted:g}{hint}")
        for stage, (_, names) in expected.items():
            missing = [name for name in model_order[which] if name in names and name not in seen]
            if missing:
                raise AssertionError(f"{case}: {len(missing)} of the {len(names)} parameters of stage {stage!r} are "
                                     f"in no group (e.g. {missing[0]}); every parameter must be in one")
        if len(found["groups"]) != len(expected):
            raise AssertionError(f"{case}: {len(found['groups'])} groups, expected one per stage: {len(expected)}")
        if found["optimizer_error"]:
            raise AssertionError(f"{case}: torch.optim.SGD refuses the groups: {found['optimizer_error']}")
    common.passed("discriminative_param_groups", len(PARAMETER_GROUP_CASES))


# --------------------------------------------------------------------------- exercise 3: the linear probe

def _probe_case(which, seed):
    """Synthetic features ``(train_x, train_y, test_x, test_y)`` of one case."""
    rng = np.random.default_rng(seed)
    if which == "separated clusters":
        classes, dims, n_train, n_test, spread = 5, 16, 400, 400, 1.2
    elif which == "many dimensions, few examples":
        classes, dims, n_train, n_test, spread = 4, 100, 80, 400, 3.0
    else:  # "unscaled features"
        classes, dims, n_train, n_test, spread = 4, 20, 200, 300, 1.0
    centres = rng.normal(0.0, 1.0, size=(classes, dims))  # (classes, D)
    train_y, test_y = rng.integers(0, classes, n_train), rng.integers(0, classes, n_test)
    train_x = centres[train_y] + spread * rng.normal(size=(n_train, dims))  # (N, D)
    test_x = centres[test_y] + spread * rng.normal(size=(n_test, dims))
    if which == "unscaled features":
        # the class information sits in tiny numbers next to large ones (pooled features of different stages
        # differ by orders of magnitude): without standardising, a learning rate cannot suit both; every odd
        # feature is replaced by noise of a thousand times the scale, which standardising makes harmless
        informative = np.arange(dims) % 2 == 0  # (D,)
        offset = rng.normal(0.0, 1e3, size=dims)  # (D,)
        train_x = np.where(informative, 1e-3 * train_x, 1e3 * rng.normal(size=train_x.shape)) + offset
        test_x = np.where(informative, 1e-3 * test_x, 1e3 * rng.normal(size=test_x.shape)) + offset
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return (as_tensor(train_x), torch.tensor(train_y), as_tensor(test_x), torch.tensor(test_y))


def reference_linear_probe(train_x, train_y, test_x, test_y, l2=1e-2):
    """Test accuracy of multinomial logistic regression on standardised features, solved by L-BFGS."""
    train_x, test_x = train_x.double(), test_x.double()
    mean, std = train_x.mean(0), train_x.std(0)
    train_z, test_z = (train_x - mean) / std, (test_x - mean) / std
    classes = int(train_y.max()) + 1
    weight = torch.zeros(train_z.shape[1] + 1, classes, dtype=torch.float64, requires_grad=True)
    ones = lambda z: torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], dim=1)  # noqa: E731  (N, D + 1)
    optimizer = torch.optim.LBFGS([weight], max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(ones(train_z) @ weight, train_y) + l2 * (weight[:-1] ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((ones(test_z) @ weight).argmax(1) == test_y).double().mean())


PROBE_CASES = ("separated clusters", "many dimensions, few examples", "unscaled features")
PROBE_TOLERANCE = 0.06  # accuracy: two linear classifiers trained differently agree to a few test examples


def check_linear_probe(linear_probe):
    """``linear_probe(train_x, train_y, test_x, test_y)``: test accuracy within 0.06 of L-BFGS logistic regression."""
    for seed, which in enumerate(PROBE_CASES):
        train_x, train_y, test_x, test_y = _probe_case(which, seed)
        case = (f"linear_probe on {which}: {len(train_x)} training and {len(test_x)} test examples, "
                f"{train_x.shape[1]} features, {int(train_y.max()) + 1} classes")
        expected = reference_linear_probe(train_x, train_y, test_x, test_y)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            received = common.call(linear_probe, train_x.clone(), train_y.clone(), test_x.clone(), test_y.clone(),
                                   case=case)
        if isinstance(received, torch.Tensor) and received.numel() == 1:
            received = received.item()
        if not isinstance(received, (float, int, np.floating)) or isinstance(received, bool):
            raise AssertionError(f"{case}: should return the test accuracy as a float; got a "
                                 f"{common.type_name(received)}")
        received = float(received)
        if not 0.0 <= received <= 1.0:
            raise AssertionError(f"{case}: returned {received:g}; the accuracy is a fraction in [0, 1] (not a "
                                 f"percentage)")
        train_accuracy = reference_linear_probe(train_x, train_y, train_x, train_y)
        if abs(received - expected) > PROBE_TOLERANCE:
            hint = (" (the accuracy of the training set? the probe is scored on the test set)"
                    if abs(received - train_accuracy) < abs(received - expected) else "")
            raise AssertionError(f"{case}: test accuracy {received:.3f}, expected {expected:.3f} +- "
                                 f"{PROBE_TOLERANCE} (logistic regression on standardised features){hint}")
    common.passed("linear_probe", len(PROBE_CASES))
