"""Transfer learning helpers (introduced in ``notebooks/13_transfer_learning.ipynb``).

A pretrained network is cut into *stages* (stem, the MBConv stages, head, classifier), so that a strategy can
freeze some of them, give each its own learning rate (discriminative learning rates, Howard & Ruder 2018,
"Universal Language Model Fine-tuning", section 3.2) or unfreeze them one at a time from the top (ibid.,
"gradual unfreezing"). Frozen batch-norm layers stay in evaluation mode while the rest trains: in training mode
they would replace their ImageNet running statistics with the new data's, even with every weight frozen.

The torchvision way, for a learner with internet (``resnet_for_transfer``): a ResNet's stages are named
``conv1, bn1, layer1 ... layer4, fc``, so replacing the head and freezing work by parameter name.

Shape letters: N images, C channels, H height, W width.
"""
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.models.efficientnet_lite import LITE0_STAGES, PIXEL_MEAN, PIXEL_STD

RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "fc")  # torchvision's ResNet, input to output


# --------------------------------------------------------------------------- inputs

def grey_to_input(images, size, mean=PIXEL_MEAN, std=PIXEL_STD):
    """Grey uint8 images as a pretrained RGB network's input.

    Args:
        images: uint8 array (N, H, W), 0..255 (``load_natural_patches``, ``load_mnist_5k``).
        size: side of the resized input (224 for EfficientNet-Lite0 as trained; smaller is faster).
        mean, std: the scaling the weights expect, on 0..255 pixels: EfficientNet-Lite0's ``(x - 127) / 128``
            by default. A sequence of three gives one value per channel (torchvision's ImageNet statistics
            are ``255 * (0.485, 0.456, 0.406)`` and ``255 * (0.229, 0.224, 0.225)``).

    Returns:
        float32 tensor (N, 3, size, size): resized bilinearly, the grey value repeated on R, G and B.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        found = (f"an array of dtype {images.dtype} and shape {images.shape}" if isinstance(images, np.ndarray)
                 else f"a {type(images).__name__}")
        raise TypeError(f"grey_to_input expects grey uint8 images (N, H, W) as the data pack's loaders return; "
                        f"got {found}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int; got {size!r}")
    x = torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1)  # (N, 1, H, W)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (N, 1, size, size)
    x = x.expand(-1, 3, -1, -1)  # (N, 3, size, size)
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)  # (1 or 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    return ((x - mean) / std).contiguous()


def labels_per_class(labels, per_class, seed=0):
    """Indices of ``per_class`` examples of every class, drawn without replacement with ``seed``, sorted."""
    counts = {int(label): int((labels == label).sum()) for label in np.unique(labels)}
    short = {label: count for label, count in counts.items() if count < per_class}
    if short:
        raise ValueError(f"cannot draw {per_class} examples per class: some classes have fewer "
                         f"(class: count) {short}")
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False)
              for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


# --------------------------------------------------------------------------- stages

def efficientnet_stages(model):
    """EfficientNet-Lite's stages from input to output: ``[(name, module), ...]``.

    ``stem``, ``stage1`` ... ``stage7`` (the rows of ``LITE0_STAGES``: the model's ``blocks`` cut by their
    ``num_layers``), ``head`` (the 1x1 convolution to 1280 channels) and ``fc`` (the classifier).
    """
    stages = [("stem", model.stem)]
    start = 0
    for index, stage in enumerate(LITE0_STAGES, start=1):
        stages.append((f"stage{index}", model.blocks[start:start + stage.num_layers]))
        start += stage.num_layers
    stages += [("head", model.head), ("fc", model.fc)]
    return stages


def pooled_stage_features(model, x, batch_size=128):
    """Every stage's output of an EfficientNet-Lite, averaged over H and W: ``{stage name: (N, C_stage)}``.

    The model runs in evaluation mode without gradients, ``batch_size`` images at a time, on the device of its
    parameters; the features come back on the CPU. The ``fc`` stage is left out (its input is the head's pooled
    output).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    stages = efficientnet_stages(model)[:-1]
    pooled = {name: [] for name, _ in stages}
    with torch.no_grad():
        for batch in x.split(batch_size):
            out = batch.to(device)  # (n, 3, H, W)
            for name, stage in stages:
                out = stage(out)  # (n, C_stage, H_stage, W_stage)
                pooled[name].append(out.mean(dim=(2, 3)).cpu())  # (n, C_stage)
    model.train(was_training)
    return {name: torch.cat(parts) for name, parts in pooled.items()}


def freeze(module):
    """Stop training ``module``: ``requires_grad=False`` on all its parameters."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def trainable_parameter_count(model):
    """Number of parameters that an optimiser can change (``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def frozen_batchnorm_to_eval(model):
    """Put every batch-norm layer whose parameters are all frozen into evaluation mode; return how many.

    Call it after ``model.train()``: a frozen batch-norm layer in training mode normalises with the batch's
    statistics and overwrites its running statistics, although no weight of it trains.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()
                count += 1
    return count


def stage_parameter_groups(stages, base_lr, decay):
    """One optimiser parameter group per stage; the last stage at ``base_lr``, each earlier one ``decay`` times
    the next (discriminative learning rates). Frozen parameters are left out; a stage with none is skipped."""
    groups = []
    for depth, (name, stage) in enumerate(reversed(stages)):
        parameters = [p for p in stage.parameters() if p.requires_grad]
        if parameters:
            groups.append({"params": parameters, "lr": base_lr * decay**depth, "name": name})
    return groups[::-1]


# --------------------------------------------------------------------------- training

def accuracy(model, x, y, batch_size=256):
    """Fraction of ``x`` (N, C, H, W) that ``model`` classifies as ``y`` (N,), in evaluation mode, on the device
    of the model's parameters."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(batch.to(device)).argmax(dim=1).cpu() for batch in x.split(batch_size)])
    model.train(was_training)
    return float((predictions == y).float().mean())


def train_classifier(model, x, y, optimizer, epochs, batch_size=32, seed=0, keep_frozen_bn_eval=True,
                     before_epoch=None):
    """Train ``model`` on the tensors ``x`` (N, C, H, W), ``y`` (N,) with cross-entropy; return the seconds taken.

    Each batch moves to the device of the model's parameters (the tensors may stay on the CPU).

    Args:
        optimizer: over the parameters to train (its groups carry their own learning rates).
        keep_frozen_bn_eval: after ``model.train()``, put frozen batch-norm layers back in evaluation mode
            (``frozen_batchnorm_to_eval``). ``False`` shows the pitfall.
        before_epoch: called as ``before_epoch(epoch)`` before each epoch (progressive unfreezing uses it).
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        model.train()
        if keep_frozen_bn_eval:
            frozen_batchnorm_to_eval(model)
        order = torch.randperm(len(x), generator=generator)  # (N,)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(model(x[batch].to(device)), y[batch].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the GPU's queue finished: the time is the training's
    return time.perf_counter() - start


def fit_linear_probe(train_features, train_labels, test_features, test_labels, epochs=200, lr=0.1,
                     weight_decay=1e-3):
    """Test accuracy of a linear softmax classifier trained on fixed features (a linear probe).

    Features are standardised with the training set's mean and standard deviation; the classifier starts at
    zero and is trained full-batch with Adam for ``epochs`` steps with a small weight decay.

    Args:
        train_features: float tensor (N, D); train_labels: int64 (N,); test_*: the same for the test set.
    """
    mean = train_features.mean(dim=0)  # (D,)
    std = train_features.std(dim=0) + 1e-6  # (D,)
    train_z = (train_features - mean) / std  # (N, D)
    test_z = (test_features - mean) / std  # (N_test, D)
    classes = int(train_labels.max()) + 1
    linear = nn.Linear(train_z.shape[1], classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.Adam(linear.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        loss = F.cross_entropy(linear(train_z), train_labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((linear(test_z).argmax(dim=1) == test_labels).float().mean())


# --------------------------------------------------------------------------- torchvision (opt-in weights)

def resnet_for_transfer(num_classes, arch="resnet50", weights=None, state_dict=None, trainable=("fc",)):
    """A torchvision ResNet ready for transfer: new ``fc`` head, everything else frozen except ``trainable``.

    Args:
        num_classes: outputs of the new head (``nn.Linear(fc.in_features, num_classes)``).
        arch: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` ...: a builder of ``torchvision.models``.
        weights: passed to the builder; ``None`` (the default) downloads nothing. With internet,
            ``weights="IMAGENET1K_V2"`` (resnet50) downloads the ImageNet weights into torch's cache once;
            their preprocessing is ``torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()``.
        state_dict: ImageNet weights already on disk (the builder's own state dict), loaded strictly
            before the head is replaced.
        trainable: names of the stages that keep training (``RESNET_STAGES``: ``"stem"`` is ``conv1`` and
            ``bn1``); a parameter trains when its name starts with one of them.

    Returns:
        the model in evaluation mode.
    """
    import torchvision

    unknown = [name for name in trainable if name not in RESNET_STAGES]
    if unknown:
        raise ValueError(f"trainable stages must be among {RESNET_STAGES}; got {unknown}")
    model = getattr(torchvision.models, arch)(weights=weights)
    if state_dict is not None:
        model.load_state_dict(state_dict)  # strict: every name and shape must match
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    prefixes = tuple("conv1." if name == "stem" else f"{name}." for name in trainable)
    prefixes += ("bn1.",) if "stem" in trainable else ()
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))
    return model.eval()
