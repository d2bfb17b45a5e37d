"""Training recipes: augmentation, schedules, weight-decay groups, EMA and a loop with per-step hooks (chapter 15,
``notebooks/15_training_recipes.ipynb``).

Chapter 15 writes each ingredient of a modern recipe in the open and checks it against torch or torchvision; this
module keeps the versions the lecture's ablation and later chapters reuse:

* ``warmup_cosine_lr(step, base_lr, warmup_steps, total_steps, start_factor, eta_min)``: linear warmup then cosine
  decay, the rate ``SequentialLR(LinearLR, CosineAnnealingLR)`` sets at each step (Goyal et al. 2017, arXiv
  1706.02677, section 2.2; Loshchilov & Hutter 2017, arXiv 1608.03983, equation 5);
* ``param_groups_weight_decay(model, weight_decay, skip)``: torch.optim parameter groups that keep biases, norm
  weights and named parameters (position embeddings) out of weight decay;
* ``train_with_recipe(...)``: a training loop like ``course_utils.training.fit`` that also steps a scheduler every
  batch, records the rate and the gradient norm of every step, applies a batch transform (MixUp, CutMix), clips
  gradients, updates an ``AveragedModel`` (EMA) and resizes images by epoch (progressive resizing);
* ``lr_range_test(...)``: the loss while the learning rate grows exponentially (Smith 2017, arXiv 1506.01186,
  section 3.3), the model's weights put back afterwards;
* ``augment_for_explorer(images, name, strength, seed)`` and ``augmentation_explorer(images)``: the lecture's
  augmentation explorer, its logic in a pure function that tests call without a browser.

Shape letters: N images, C channels, H height, W width, K classes.
"""
import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.device import autocast, get_device, mixed_precision_dtype

__all__ = ["warmup_cosine_lr", "param_groups_weight_decay", "NORM_LAYERS", "RecipeHistory", "train_with_recipe",
           "lr_range_test", "AUGMENTATIONS", "AugmentedView", "make_augmentation", "augment_for_explorer",
           "augmentation_explorer"]


# --------------------------------------------------------------------------- schedules

def warmup_cosine_lr(step, base_lr, warmup_steps, total_steps, start_factor=0.1, eta_min=0.0):
    """The learning rate of step ``step`` (0, 1, ...) of a linear warmup followed by cosine decay.

    During the ``warmup_steps`` first steps the rate grows linearly from ``start_factor * base_lr`` (step 0) towards
    ``base_lr``, which step ``warmup_steps`` reaches; then it follows half a cosine from ``base_lr`` down to
    ``eta_min`` at step ``total_steps``::

        t < w:   base_lr * (start_factor + (1 - start_factor) * t / w)
        t >= w:  eta_min + (base_lr - eta_min) * (1 + cos(pi * (t - w) / (T - w))) / 2

    the rates that ``SequentialLR([LinearLR(start_factor, total_iters=w), CosineAnnealingLR(T_max=T - w,
    eta_min)], milestones=[w])`` sets step by step.

    Raises:
        ValueError: ``0 <= warmup_steps < total_steps``, ``0 < start_factor <= 1``, ``step >= 0`` not met.
    """
    for name, value in (("step", step), ("warmup_steps", warmup_steps), ("total_steps", total_steps)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative int; got {value!r}")
    if not warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be smaller than total_steps; got {warmup_steps} and {total_steps}")
    if not 0.0 < start_factor <= 1.0:
        raise ValueError(f"start_factor must be in (0, 1] (LinearLR's range); got {start_factor!r}")
    if step < warmup_steps:
        return base_lr * (start_factor + (1.0 - start_factor) * step / warmup_steps)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 at the end of warmup, 1 at the end
    return eta_min + (base_lr - eta_min) * (1.0 + math.cos(math.pi * progress)) / 2.0


# --------------------------------------------------------------------------- weight decay

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def param_groups_weight_decay(model, weight_decay, skip=()):
    """Two torch.optim parameter groups: decayed weights, and the parameters that get no weight decay.

    No decay for every bias, every parameter of a normalisation layer (batch, layer, group, instance norm: their
    scale is undone by the next normalisation, so shrinking it only changes the effective learning rate; van Laarhoven
    2017, arXiv 1706.05350) and the parameters named in ``skip`` (e.g. ``pos_embed``, ``cls_token``, as timm's
    ``no_weight_decay()``). Parameters that do not require gradients are left out.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if not isinstance(weight_decay, (int, float)) or isinstance(weight_decay, bool) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a non-negative number; got {weight_decay!r}")
    skip = set(skip)
    unknown = skip - {name for name, _ in model.named_parameters()}
    if unknown:
        raise ValueError(f"skip names parameters the model does not have: {sorted(unknown)}")
    no_decay_names = set(skip)
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if isinstance(module, NORM_LAYERS) or name == "bias":
                no_decay_names.add(full)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if name in no_decay_names else decay).append(parameter)
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------- the training loop

@dataclass
class RecipeHistory:
    """What ``train_with_recipe`` measured: per step and per epoch."""

    learning_rate: list = field(default_factory=list)  # per step: param_groups[0]["lr"] the step trained with
    loss: list = field(default_factory=list)  # per step: the training loss (on mixed targets when mixing)
    grad_norm: list = field(default_factory=list)  # per step: the gradients' global L2 norm before clipping
    epoch_seconds: list = field(default_factory=list)  # per epoch: wall time of the training steps
    image_size: list = field(default_factory=list)  # per epoch: the side the images were resized to


def _check_positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def train_with_recipe(model, x, y, epochs, optimizer, batch_size=64, scheduler=None, label_smoothing=0.0,
                      batch_transform=None, clip_grad_norm=None, ema=None, image_size=None, augment=None,
                      mixed_precision=False, seed=0, device=None):
    """Train ``model`` on tensors with the ingredients of a recipe switched on one by one; return a ``RecipeHistory``.

    ``course_utils.training.fit`` steps its scheduler once per epoch and has no hook inside the step; a recipe needs
    one per batch (warmup), so this loop is written out here.

    Args:
        model: a classifier returning logits (N, K); moved to ``device``.
        x, y: training images (N_total, C, H, W) float and labels (N_total,) int64, on the CPU.
        epochs: passes over the data, reshuffled with ``seed`` each epoch (batches of ``batch_size``; the last,
            smaller batch is dropped so that every step has the same shape).
        optimizer: over the model's parameters.
        scheduler: stepped after every optimiser step (per-step schedules: warmup, one-cycle).
        label_smoothing: passed to ``F.cross_entropy``.
        batch_transform: ``(images, labels) -> (images, targets)`` on each batch, e.g. ``v2.MixUp`` or
            ``v2.CutMix``; targets may be class probabilities (N, K).
        clip_grad_norm: clip the gradients' global norm to this value (``nn.utils.clip_grad_norm_``).
        ema: an ``torch.optim.swa_utils.AveragedModel`` of ``model``, updated after every step.
        image_size: ``epoch -> side`` (epochs count from 0): resize each batch to that side (progressive resizing).
        augment: a per-image transform, e.g. ``v2.Compose([...])``; applied image by image, so that each image gets
            its own random parameters (a v2 transform given a batch draws one set for the whole batch).
        mixed_precision: autocast the forward pass (``course_utils.device.autocast``); float16 on CUDA gets a
            gradient scaler.
        seed: shuffling and augmentation draw from torch's generator seeded with it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise TypeError(f"x must be a float tensor (N, C, H, W); got "
                        f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(y, torch.Tensor) or y.shape != (len(x),) or y.dtype != torch.int64:
        raise TypeError(f"y must be an int64 tensor of shape ({len(x)},); got "
                        f"{(tuple(y.shape), y.dtype) if isinstance(y, torch.Tensor) else type(y).__name__}")
    _check_positive_int(epochs, "epochs")
    _check_positive_int(batch_size, "batch_size")
    if batch_size > len(x):
        raise ValueError(f"batch_size ({batch_size}) is larger than the data ({len(x)} images)")
    device = get_device(device) if not isinstance(device, torch.device) else device
    model.to(device)
    precision = mixed_precision_dtype(device, mixed_precision)
    scaler = torch.amp.GradScaler("cuda") if precision == torch.float16 and device.type == "cuda" else None
    history = RecipeHistory()
    torch.manual_seed(seed)  # augmentation and batch transforms draw from the global generator, as torchvision's do
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        side = image_size(epoch) if image_size is not None else x.shape[-1]
        history.image_size.append(int(side))
        order = torch.randperm(len(x), generator=generator)  # (N_total,)
        start = time.perf_counter()
        for first in range(0, len(x) - batch_size + 1, batch_size):
            batch = order[first:first + batch_size]  # (N,)
            images, targets = x[batch], y[batch]
            if augment is not None:
                images = torch.stack([augment(image) for image in images])  # (N, C, H, W)
            if side != images.shape[-1]:
                images = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False,
                                       antialias=True)  # (N, C, side, side)
            if batch_transform is not None:
                images, targets = batch_transform(images, targets)  # targets: (N,) or (N, K)
            images, targets = images.to(device), targets.to(device)
            history.learning_rate.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, enabled=precision is not None):
                loss = F.cross_entropy(model(images), targets, label_smoothing=label_smoothing)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)  # clip and measure the true gradients, not the scaled ones
            else:
                loss.backward()
            max_norm = clip_grad_norm if clip_grad_norm is not None else float("inf")
            norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # the norm before clipping
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            if scheduler is not None:
                scheduler.step()
            history.loss.append(float(loss.detach()))
            history.grad_norm.append(float(norm))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        history.epoch_seconds.append(time.perf_counter() - start)
    model.eval()
    return history


def lr_range_test(model, x, y, start_lr=1e-4, end_lr=10.0, steps=40, batch_size=64, momentum=0.9, seed=0,
                  device=None):
    """The training loss while the learning rate grows exponentially from ``start_lr`` to ``end_lr``.

    One SGD (with ``momentum``) step per rate on successive shuffled batches; the model's weights and buffers are
    put back afterwards. Smith 2017 (arXiv 1506.01186, section 3.3) and fastai's ``lr_find``: a good rate sits
    below the one where the loss is lowest, where it still falls steeply.

    Returns:
        ``(learning_rates, losses)``: two lists of ``steps`` floats (a loss that became NaN or infinite ends the
        test early; the lists are then shorter).
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr; got {start_lr!r} and {end_lr!r}")
    _check_positive_int(steps, "steps")
    device = get_device(device) if not isinstance(device, torch.device) else device
    model.to(device)
    saved = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=start_lr, momentum=momentum)
    rates = [start_lr * (end_lr / start_lr) ** (i / max(steps - 1, 1)) for i in range(steps)]
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(x), generator=generator)
                       for _ in range(math.ceil(steps * batch_size / len(x)))])  # enough shuffled indices
    losses, used = [], []
    model.train()
    try:
        for i, rate in enumerate(rates):
            batch = order[i * batch_size:(i + 1) * batch_size]  # (N,)
            for group in optimizer.param_groups:
                group["lr"] = rate
            loss = F.cross_entropy(model(x[batch].to(device)), y[batch].to(device))
            if not torch.isfinite(loss):
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            used.append(rate)
            losses.append(float(loss.detach()))
    finally:
        model.load_state_dict(saved)
    return used, losses


# --------------------------------------------------------------------------- the augmentation explorer

def _augmentations():
    """``{name: strength -> (v2 transform for an (C, H, W) uint8 image of side H, description)}``."""
    from torchvision.transforms import v2

    def flip(strength, side):
        p = strength / 10
        return v2.RandomHorizontalFlip(p=p), f"RandomHorizontalFlip(p={p:g})"

    def crop(strength, side):
        return v2.RandomCrop(side, padding=strength), f"RandomCrop({side}, padding={strength})"

    def rotation(strength, side):
        degrees = 9 * strength
        return v2.RandomRotation(degrees=degrees), f"RandomRotation(degrees={degrees})"

    def jitter(strength, side):
        amount, hue = round(0.08 * strength, 2), round(0.05 * strength, 2)
        return (v2.ColorJitter(brightness=amount, contrast=amount, saturation=amount, hue=hue),
                f"ColorJitter(brightness={amount:g}, contrast={amount:g}, saturation={amount:g}, hue={hue:g})")

    def rand_augment(strength, side):
        magnitude = 3 * strength
        return v2.RandAugment(num_ops=2, magnitude=magnitude), f"RandAugment(num_ops=2, magnitude={magnitude})"

    def trivial_augment(strength, side):
        return v2.TrivialAugmentWide(), "TrivialAugmentWide() (draws its own operation and magnitude; strength unused)"

    def erasing(strength, side):
        high = round(0.02 + 0.04 * strength, 2)
        return v2.RandomErasing(p=1.0, scale=(0.02, high)), f"RandomErasing(p=1, scale=(0.02, {high:g}))"

    return {"horizontal flip": flip, "crop with padding": crop, "rotation": rotation, "colour jitter": jitter,
            "RandAugment": rand_augment, "TrivialAugment": trivial_augment, "random erasing": erasing}


AUGMENTATIONS = ("horizontal flip", "crop with padding", "rotation", "colour jitter", "RandAugment", "TrivialAugment",
                 "random erasing")


def make_augmentation(name, strength, side):
    """The torchvision v2 transform the explorer applies for ``name`` at ``strength`` (0..10) and its description."""
    builders = _augmentations()
    if name not in builders:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}; got {name!r}")
    if not isinstance(strength, (int, np.integer)) or isinstance(strength, bool) or not 0 <= strength <= 10:
        raise ValueError(f"strength must be an int from 0 to 10; got {strength!r}")
    return builders[name](int(strength), int(side))


@dataclass(frozen=True)
class AugmentedView:
    """What the explorer shows for one choice of augmentation, strength and seed."""

    name: str  # the augmentation's name in ``AUGMENTATIONS``
    strength: int  # 0..10
    seed: int
    images: torch.Tensor  # (N, C, H, W) float in [0, 1]: each input image augmented with its own random draw
    description: str  # one line, e.g. "RandomRotation(degrees=27), seed 3"


def augment_for_explorer(images, name, strength, seed):
    """Augment each of ``images`` (N, C, H, W), floats in [0, 1], C = 1 or 3, with ``name`` at ``strength``.

    torch's global generator is seeded with ``seed`` inside ``torch.random.fork_rng`` (so the caller's random state
    is left as it was); the images go through the transform one at a time as uint8, as a data loader would send
    them, each with its own random parameters. The same arguments give the same images.

    Returns:
        an ``AugmentedView``.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be a tensor (N, C, H, W) with C = 1 or 3; got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if not images.is_floating_point() or images.min() < 0 or images.max() > 1:
        raise ValueError("images must be floats in [0, 1]")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    transform, what = make_augmentation(name, strength, images.shape[-1])
    as_bytes = (images * 255).round().to(torch.uint8)  # (N, C, H, W)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        out = torch.stack([transform(image) for image in as_bytes])  # (N, C, H, W) uint8
    return AugmentedView(name, int(strength), int(seed), out.float() / 255, f"{what}, seed {seed}")


def _plot_view(originals, view):
    import matplotlib.pyplot as plt

    n = len(originals)
    figure, axes = plt.subplots(2, n, figsize=(1.3 * n, 2.9), squeeze=False)
    for row, (batch, label) in enumerate(((originals, "original"), (view.images, view.name))):
        for i in range(n):
            picture = batch[i].permute(1, 2, 0).numpy()  # (H, W, C)
            axes[row, i].imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1)
            axes[row, i].axis("off")
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    figure.tight_layout()
    return figure


def augmentation_explorer(images, names=AUGMENTATIONS, strength=5, seed=0):
    """An ipywidgets box: choose an augmentation, its strength and a seed; see the images before and after.

    Controls: ``box.augmentation`` (a Dropdown of ``names``), ``box.strength`` (an IntSlider 0..10),
    ``box.seed`` (an IntSlider 0..20). ``box.summary`` (a Label) holds the description of what was applied, e.g.
    ``"RandomRotation(degrees=45), seed 0"``; ``box.output`` (an Output) holds the figure; ``box.view`` is a
    one-item list with the current ``AugmentedView``.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    names = list(names)
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown or not names:
        raise ValueError(f"names must be a non-empty list from {AUGMENTATIONS}; got {names!r}")
    augmentation = widgets.Dropdown(options=names, value=names[0], description="augmentation")
    strength_slider = widgets.IntSlider(strength, min=0, max=10, description="strength")
    seed_slider = widgets.IntSlider(seed, min=0, max=20, description="seed")
    summary = widgets.Label()
    output = widgets.Output()
    view = [None]

    def update(_change=None):
        current = augment_for_explorer(images, augmentation.value, strength_slider.value, seed_slider.value)
        view[0] = current
        summary.value = current.description
        figure = _plot_view(images, current)
        output.clear_output(wait=True)
        with output:
            display(figure)
        plt.close(figure)

    for control in (augmentation, strength_slider, seed_slider):
        control.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox([augmentation, strength_slider, seed_slider]), summary, output])
    box.augmentation = augmentation
    box.strength = strength_slider
    box.seed = seed_slider
    box.summary = summary
    box.output = output
    box.view = view
    return box
