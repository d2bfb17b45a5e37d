"""Checks for chapter 15 (Training recipes): a warmup + cosine schedule, MixUp, a label-smoothing loss and parameter
groups without weight decay.

References, all independent of ``course_utils.recipes``:

* the schedule: the rates ``torch.optim.lr_scheduler.SequentialLR([LinearLR, CosineAnnealingLR])`` sets on an
  optimiser, step by step;
* MixUp: ``torchvision.transforms.v2.MixUp`` (its lambda drawn from torch's generator seeded here, its pairing
  ``roll(1)``: image i with image i - 1), and for other permutations the definition written with torch ops;
* label smoothing: ``F.cross_entropy(logits, targets, label_smoothing=eps)``;
* the weight-decay groups: worked out from the module types and parameter names of networks the probe builds (a
  ResNet with batch norm; a small transformer-like network with layer norm, group norm, biases, a class token and
  a position embedding).

The learner's functions get plain tensors and numbers, except the parameter-group function, which runs inside
``learner_weight_decay_groups`` on networks built there; what comes back is parameter names and numbers.
"""
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.checks import common, learner

# --------------------------------------------------------------------------- exercise 1: warmup + cosine

# (base_lr, warmup_steps, total_steps, start_factor, eta_min)
SCHEDULE_CASES = ((0.1, 3, 10, 0.1, 0.01), (0.5, 5, 40, 0.01, 0.0), (2e-3, 1, 7, 0.5, 1e-4), (1.0, 20, 25, 0.2, 0.3))


def reference_schedule(base_lr, warmup_steps, total_steps, start_factor, eta_min):
    """The rates (total_steps + 1,) that SequentialLR(LinearLR, CosineAnnealingLR) sets at steps 0 .. total_steps."""
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=base_lr)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=start_factor, end_factor=1.0,
                                               total_iters=warmup_steps)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps, eta_min=eta_min)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()" and SequentialLR's epoch notice
        for _ in range(total_steps + 1):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    return np.array(rates)


def check_warmup_cosine(warmup_cosine_lr):
    """``warmup_cosine_lr(step, base_lr, warmup_steps, total_steps, start_factor, eta_min)`` at every step 0 .. T
    against the rates of SequentialLR(LinearLR, CosineAnnealingLR)."""
    for base_lr, warmup, total, start_factor, eta_min in SCHEDULE_CASES:
        case = (f"warmup_cosine_lr(step, base_lr={base_lr:g}, warmup_steps={warmup}, total_steps={total}, "
                f"start_factor={start_factor:g}, eta_min={eta_min:g})")
        expected = reference_schedule(base_lr, warmup, total, start_factor, eta_min)
        received = []
        for step in range(total + 1):
            value = common.call(warmup_cosine_lr, step, base_lr, warmup, total, start_factor, eta_min, case=case)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
                raise AssertionError(f"{case}: step {step} returned a {common.type_name(value)}; expected the rate "
                                     f"as a float")
            received.append(float(value))
        received = np.array(received)
        wrong = ~np.isclose(received, expected, rtol=1e-5, atol=1e-9)  # float32 answers pass
        if wrong.any():
            step = int(np.argmax(wrong))
            hint = ""
            if step == total and np.isclose(received[step], 0.0) and eta_min > 0:
                hint = " (the cosine ends at eta_min, not 0)"
            elif step <= warmup and step + 1 < len(expected) and np.isclose(received[step], expected[step + 1]):
                hint = " (the warmup is one step ahead: step 0 trains at start_factor * base_lr)"
            elif step == 0:
                hint = " (step 0 trains at start_factor * base_lr)"
            elif step > warmup:
                hint = " (the cosine runs over the total_steps - warmup_steps steps after the warmup)"
            raise AssertionError(f"{case}: the rate at step {step} is {received[step]:.6g}, expected "
                                 f"{expected[step]:.6g} (SequentialLR(LinearLR, CosineAnnealingLR)); "
                                 f"{int(wrong.sum())} of {total + 1} steps differ{hint}")
    common.passed("warmup_cosine_lr", len(SCHEDULE_CASES))


# --------------------------------------------------------------------------- exercise 2: MixUp

# (N, C, H, W, K, alpha, seed)
MIXUP_CASES = ((6, 3, 5, 4, 4, 0.4, 0), (5, 1, 8, 8, 10, 1.0, 1), (8, 2, 3, 6, 3, 0.2, 2))


def _batch(n, c, h, w, num_classes, seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, c, h, w, generator=generator)  # (N, C, H, W)
    labels = torch.randint(num_classes, (n,), generator=generator)  # (N,)
    labels[:2] = torch.tensor([0, num_classes - 1])  # two different classes at least
    return images, labels


def _as_pair(received, case):
    if not isinstance(received, (tuple, list)) or len(received) != 2:
        raise AssertionError(f"{case}: should return (mixed_images, mixed_targets); got a "
                             f"{common.type_name(received)}")
    return received


def _compare_mixup(received, expected_images, expected_targets, images, labels, lam, permutation, num_classes,
                   case):
    mixed, targets = _as_pair(received, case)
    common.assert_shape(targets, expected_targets.shape, case, "mixed_targets")
    common.assert_shape(mixed, expected_images.shape, case, "mixed_images")
    mixed, targets = torch.as_tensor(common.as_numpy(mixed)), torch.as_tensor(common.as_numpy(targets))
    one_hot = F.one_hot(labels, num_classes).float()  # (N, K)
    if not torch.allclose(targets.double(), expected_targets.double(), rtol=1e-5, atol=1e-6):
        if torch.allclose(targets.double(), (1 - lam) * one_hot.double() + lam * one_hot[permutation].double(),
                          atol=1e-6):
            raise AssertionError(f"{case}: mixed_targets put lam={lam:.4f} on the permuted labels; lam weighs the "
                                 f"batch as it is, 1 - lam its permutation")
        if torch.allclose(targets.double(), one_hot.double(), atol=1e-6):
            raise AssertionError(f"{case}: mixed_targets are the one-hot labels; they must be mixed with the same "
                                 f"lam and permutation as the images")
    common.assert_close(targets, expected_targets, case, "mixed_targets")
    if not torch.allclose(mixed.double(), expected_images.double(), rtol=1e-5, atol=1e-6):
        if torch.allclose(mixed.double(), lam * images.double() + (1 - lam) * images.double(), atol=1e-6):
            raise AssertionError(f"{case}: mixed_images equal the images: the permutation is applied to the targets "
                                 f"but not to the images")
        if torch.allclose(mixed.double(), ((1 - lam) * images + lam * images[permutation]).double(), atol=1e-6):
            raise AssertionError(f"{case}: mixed_images put lam={lam:.4f} on the permuted images; the formula is "
                                 f"lam * images + (1 - lam) * images[permutation]")
    common.assert_close(mixed, expected_images, case, "mixed_images")


def check_mixup(mixup):
    """``mixup(images, labels, num_classes, lam, permutation)``: against ``v2.MixUp`` with the lambda it draws from
    a seeded generator and its pairing (``permutation[i] = i - 1``), then on random permutations."""
    from torchvision.transforms import v2

    for n, c, h, w, num_classes, alpha, seed in MIXUP_CASES:
        images, labels = _batch(n, c, h, w, num_classes, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            lam = float(torch.distributions.Beta(torch.tensor([alpha]), torch.tensor([alpha])).sample(()))
            torch.manual_seed(seed)  # v2.MixUp draws the same lambda from the same state
            expected_images, expected_targets = v2.MixUp(alpha=alpha, num_classes=num_classes)(images.clone(),
                                                                                               labels.clone())
        roll = torch.arange(n).roll(1)  # (N,): v2.MixUp pairs image i with image i - 1
        case = (f"mixup of {n} images {tuple(images.shape[1:])}, {num_classes} classes, lam={lam:.4f} drawn by "
                f"v2.MixUp(alpha={alpha:g}) with torch.manual_seed({seed}), permutation {roll.tolist()}")
        received = common.call(mixup, images.clone(), labels.clone(), num_classes, lam, roll.clone(), case=case)
        _compare_mixup(received, expected_images, expected_targets, images, labels, lam, roll, num_classes, case)
        generator = torch.Generator().manual_seed(100 + seed)
        permutation = torch.randperm(n, generator=generator)  # (N,)
        lam = float(torch.rand((), generator=generator))
        case = (f"mixup of {n} images {tuple(images.shape[1:])}, {num_classes} classes, lam={lam:.4f}, permutation "
                f"{permutation.tolist()}")
        one_hot = F.one_hot(labels, num_classes).float()  # (N, K)
        expected_images = lam * images + (1 - lam) * images[permutation]
        expected_targets = lam * one_hot + (1 - lam) * one_hot[permutation]
        received = common.call(mixup, images.clone(), labels.clone(), num_classes, lam, permutation.clone(), case=case)
        _compare_mixup(received, expected_images, expected_targets, images, labels, lam, permutation, num_classes,
                       case)
    common.passed("mixup", 2 * len(MIXUP_CASES))


# --------------------------------------------------------------------------- exercise 3: label smoothing

# (N, K, smoothing, scale of the logits, seed)
SMOOTHING_CASES = ((4, 5, 0.1, 1.0, 0), (7, 3, 0.3, 2.0, 1), (5, 10, 0.0, 1.0, 2), (3, 4, 0.2, 60.0, 3),
                   (6, 2, 0.5, 3.0, 4))


def learner_smoothed_loss(smoothed_cross_entropy, logits, targets, smoothing, case):
    """Run the learner's loss on ``logits`` (N, K) that require gradients, backpropagate it; return plain data:
    ``{"type", "shape", "value", "requires_grad", "gradient"}`` (the gradient (N, K) or None)."""
    given = logits.clone().requires_grad_(True)
    loss = common.call(smoothed_cross_entropy, given, targets, smoothing, case=case)
    if not isinstance(loss, torch.Tensor):
        return {"type": type(loss).__name__, "value": float(loss) if isinstance(loss, (int, float)) else None}
    found = {"type": "Tensor", "shape": list(loss.shape), "requires_grad": bool(loss.requires_grad),
             "value": float(loss.detach().reshape(-1)[0]) if loss.numel() else None, "gradient": None}
    if loss.numel() == 1 and loss.requires_grad:
        loss.reshape(()).backward()
        found["gradient"] = None if given.grad is None else given.grad.detach().clone()
    return found


def check_smoothed_cross_entropy(smoothed_cross_entropy):
    """``smoothed_cross_entropy(logits, targets, smoothing)``: the mean loss against
    ``F.cross_entropy(logits, targets, label_smoothing=smoothing)``, its value and its gradient."""
    for n, num_classes, smoothing, scale, seed in SMOOTHING_CASES:
        generator = torch.Generator().manual_seed(seed)
        logits = scale * torch.randn(n, num_classes, generator=generator) + 0.5  # (N, K)
        targets = torch.randint(num_classes, (n,), generator=generator)  # (N,)
        case = (f"smoothed_cross_entropy(logits ({n}, {num_classes}) of scale {scale:g}, targets {targets.tolist()}, "
                f"smoothing={smoothing:g})")
        reference_logits = logits.clone().requires_grad_(True)
        expected = F.cross_entropy(reference_logits, targets, label_smoothing=smoothing)
        expected.backward()
        expected = expected.detach()
        found = learner.run(learner_smoothed_loss, smoothed_cross_entropy, logits, targets, smoothing, case)
        if found["type"] != "Tensor":
            raise AssertionError(f"{case}: returned a {found['type']}; return the loss as a 0-d tensor computed with "
                                 f"torch operations, so that it can be backpropagated")
        if found["shape"] != []:
            raise AssertionError(f"{case}: the loss has shape {tuple(found['shape'])}, expected () (the mean over "
                                 f"the batch)")
        value = found["value"]
        if not np.isfinite(value):
            raise AssertionError(f"{case}: the loss is {value}, expected {float(expected):.6g} (the log of a softmax "
                                 f"that underflowed to 0? use log_softmax)")
        if not np.isclose(value, float(expected), rtol=1e-5, atol=1e-6):
            log_p = F.log_softmax(logits.double(), dim=1)  # (N, K)
            nll = -log_p.gather(1, targets[:, None])[:, 0]  # (N,)
            others = (-log_p.sum(1) - nll) / (num_classes - 1)  # (N,): mean over the K - 1 wrong classes
            hints = {
                "smoothing spread over the K - 1 wrong classes only; torch spreads it over all K classes":
                    ((1 - smoothing) * nll + smoothing * others).mean(),
                "summed over the batch instead of the mean": ((1 - smoothing) * nll - smoothing * log_p.mean(1)).sum(),
                "the true class keeps weight 1 instead of 1 - smoothing": (nll - smoothing * log_p.mean(1)).mean(),
                "smoothing ignored": nll.mean(),
            }
            hint = next((f" ({text})" for text, wrong in hints.items() if np.isclose(value, float(wrong), rtol=1e-5)),
                        "")
            raise AssertionError(f"{case}: the loss is {value:.6g}, expected {float(expected):.6g} "
                                 f"(F.cross_entropy(label_smoothing={smoothing:g})){hint}")
        if not found["requires_grad"] or found["gradient"] is None:
            raise AssertionError(f"{case}: the loss does not backpropagate to the logits; compute it with torch "
                                 f"operations on them (no .item(), no NumPy, no detach)")
        common.assert_close(found["gradient"], reference_logits.grad, case, "d loss / d logits", rtol=1e-4,
                            atol=1e-6)
    common.passed("smoothed_cross_entropy", len(SMOOTHING_CASES))


# --------------------------------------------------------------------------- exercise 4: weight-decay groups

class _Block(nn.Module):
    """conv (no bias) - batch norm - ReLU with a residual connection, as a ResNet's."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class _SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(_Block(8), _Block(8))
        self.fc = nn.Linear(8, 5)


class _SmallTransformer(nn.Module):
    """Patch embedding (a conv with bias), class token, position embedding, layer norms, an MLP, group norm."""

    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 16, 4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 16))
        self.pos_embed = nn.Parameter(torch.zeros(1, 17, 16))
        self.norm1 = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.conv_branch = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.GroupNorm(4, 16))
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4)


NETWORKS = {"a ResNet with batch norm": (_SmallResNet, ()),
            "a transformer-like network (layer norm, group norm, class token, position embedding)":
                (_SmallTransformer, ("cls_token", "pos_embed"))}
NOT_IN_MODEL = "<a tensor that is not a parameter of the model>"
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def _network(which, seed):
    torch.manual_seed(seed)
    kind, skip = NETWORKS[which]
    return kind(), skip


def learner_weight_decay_groups(weight_decay_groups, which, weight_decay, seed, case):
    """Run the learner's ``weight_decay_groups(model, weight_decay, skip)`` on a network built here; describe the
    groups by parameter name: ``{"groups": [{"weight_decay", "params": [names]}], "optimizer_error"}``."""
    model, skip = _network(which, seed)
    groups = common.call(weight_decay_groups, model, weight_decay, list(skip), case=case)
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) and "params" in g for g in groups):
        return {"not_a_list": type(groups).__name__}
    names = {id(p): name for name, p in model.named_parameters()}
    described = []
    for group in groups:
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        decay = group.get("weight_decay")
        described.append({"weight_decay": float(decay) if isinstance(decay, (int, float)) else None,
                          "params": [names.get(id(p), NOT_IN_MODEL) for p in params]})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.0)
        error = None
    except Exception as exception:
        error = f"{type(exception).__name__}: {exception}"
    return {"groups": described, "optimizer_error": error}


def _expected_no_decay(which):
    """Names of the parameters that get no weight decay, from module types and names alone."""
    model, skip = _network(which, 0)
    names = set(skip)
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            if isinstance(module, NORMS) or name == "bias":
                names.add(f"{module_name}.{name}" if module_name else name)
    return [name for name, _ in model.named_parameters()], names


WEIGHT_DECAY_CASES = (("a ResNet with batch norm", 5e-4),
                      ("a transformer-like network (layer norm, group norm, class token, position embedding)", 0.05))


def check_weight_decay_groups(weight_decay_groups):
    """``weight_decay_groups(model, weight_decay, skip)``: two groups, weights decayed, biases, norm parameters and
    the names in ``skip`` not; every parameter in exactly one group."""
    for which, weight_decay in WEIGHT_DECAY_CASES:
        case = f"weight_decay_groups({which}, weight_decay={weight_decay:g})"
        found = learner.run(learner_weight_decay_groups, weight_decay_groups, which, weight_decay, 0, case)
        if "not_a_list" in found:
            raise AssertionError(f"{case}: should return a list of dicts with 'params' and 'weight_decay' (torch.optim "
                                 f"parameter groups); got a {found['not_a_list']}")
        all_names, no_decay = _expected_no_decay(which)
        seen = {}
        for index, group in enumerate(found["groups"]):
            if group["weight_decay"] is None:
                raise AssertionError(f"{case}: group {index} has no 'weight_decay' number; give each group its own")
            for name in group["params"]:
                if name == NOT_IN_MODEL:
                    raise AssertionError(f"{case}: group {index} holds a tensor that is not a parameter of the model")
                if name in seen:
                    raise AssertionError(f"{case}: {name} is in more than one group (or twice in one); every "
                                         f"parameter belongs to exactly one group")
                seen[name] = group["weight_decay"]
        missing = [name for name in all_names if name not in seen]
        if missing:
            raise AssertionError(f"{case}: {len(missing)} of {len(all_names)} parameters are in no group (e.g. "
                                 f"{missing[0]}); every parameter must be in one")
        for name in all_names:
            wanted = 0.0 if name in no_decay else weight_decay
            if not math.isclose(seen[name], wanted, rel_tol=1e-9, abs_tol=0.0):
                if name in no_decay:
                    why = ("a bias" if name.endswith("bias") else "named in skip" if "." not in name
                           else "a normalisation layer's scale")
                    raise AssertionError(f"{case}: {name} ({why}) has weight_decay={seen[name]:g}; biases, norm "
                                         f"parameters and the names in skip get weight_decay=0")
                raise AssertionError(f"{case}: {name} (a weight) has weight_decay={seen[name]:g}, expected "
                                     f"{weight_decay:g}")
        if found["optimizer_error"]:
            raise AssertionError(f"{case}: torch.optim.AdamW refuses the groups: {found['optimizer_error']}")
    common.passed("weight_decay_groups", len(WEIGHT_DECAY_CASES))
