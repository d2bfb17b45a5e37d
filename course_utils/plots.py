"""Pictures for the notebooks: image grids, training curves, feature maps and kernels.

Every function returns the matplotlib ``Figure`` (so tests and notebooks can keep or
close it) and accepts NumPy arrays or torch tensors.
"""
import math

import matplotlib.pyplot as plt
import numpy as np


def _to_numpy(array, name):
    if hasattr(array, "detach"):
        array = array.detach().float().cpu().numpy()
    array = np.asarray(array)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must be a numeric array or tensor; got dtype {array.dtype}")
    return array


def _as_hwc(image):
    """(C, H, W) with C in {1, 3}, (H, W, C) or (H, W) -> (H, W) or (H, W, 3)."""
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[2] not in (1, 3):
        image = image.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]  # (H, W, 1) -> (H, W)
    return image


def _rescale(image):
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def show_images(images, labels=None, class_names=None, predictions=None, ncols=8, size=1.3, title=None):
    """A grid of images with their labels (and predictions, marked red when wrong).

    Args:
        images: (N, C, H, W), (N, H, W, C) or (N, H, W); any range (each image is
            rescaled to [0, 1] for display unless already inside it).
        labels, predictions: (N,) integers, optional.
        class_names: names indexed by label, optional.
    """
    images = _to_numpy(images, "images")
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be (N, C, H, W), (N, H, W, C) or (N, H, W); got shape {images.shape}")
    n = len(images)
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries but there are {n} images")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    figure, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.15), squeeze=False)
    for i, axis in enumerate(axes.flat):
        axis.axis("off")
        if i >= n:
            continue
        image = _as_hwc(images[i])
        if image.min() < 0 or image.max() > 1:
            image = _rescale(image)
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
        text, colour = "", "black"
        if labels is not None:
            label = int(labels[i])
            text = class_names[label] if class_names is not None else str(label)
        if predictions is not None:
            guess = int(predictions[i])
            text += f"→{class_names[guess] if class_names is not None else guess}"
            colour = "red" if labels is not None and guess != int(labels[i]) else "green"
        axis.set_title(text, fontsize=8, color=colour)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_history(history, title=None):
    """Loss and accuracy per epoch from a ``course_utils.training.History`` (or a dict of lists)."""
    get = (lambda key: history.get(key, [])) if isinstance(history, dict) else (lambda key: getattr(history, key, []))
    epochs = list(get("epoch"))
    if not epochs:
        raise ValueError("history has no epochs to plot")
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(8, 3))
    loss_axis.plot(epochs, get("train_loss"), "o-", label="train")
    acc_axis.plot(epochs, get("train_accuracy"), "o-", label="train")
    if len(get("val_loss")):
        loss_axis.plot(epochs, get("val_loss"), "s--", label="validation")
        acc_axis.plot(epochs, get("val_accuracy"), "s--", label="validation")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for axis in (loss_axis, acc_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def show_feature_maps(maps, ncols=8, size=1.2, title=None, names=None):
    """Each channel of one feature map as a grey image.

    Args:
        maps: (C, H, W), or (1, C, H, W) for a batch of one.
    """
    maps = _to_numpy(maps, "maps")
    if maps.ndim == 4 and maps.shape[0] == 1:
        maps = maps[0]  # (1, C, H, W) -> (C, H, W)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (C, H, W) or (1, C, H, W); got shape {maps.shape}")
    channels = len(maps)
    ncols = max(1, min(ncols, channels))
    nrows = math.ceil(channels / ncols)
    figure, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size), squeeze=False)
    for i, axis in enumerate(axes.flat):
        axis.axis("off")
        if i < channels:
            axis.imshow(maps[i], cmap="viridis")
            axis.set_title(names[i] if names is not None else f"ch {i}", fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def show_kernels(weights, ncols=8, size=0.9, title=None):
    """Convolution kernels as small images.

    Args:
        weights: (F, C, KH, KW). With C == 3 each filter is shown in colour (rescaled
            to [0, 1] per filter); otherwise input channel 0 of each filter, in a
            diverging colour map centred on 0.
    """
    weights = _to_numpy(weights, "weights")
    if weights.ndim != 4:
        raise ValueError(f"weights must be (F, C, KH, KW); got shape {weights.shape}")
    filters = len(weights)
    ncols = max(1, min(ncols, filters))
    nrows = math.ceil(filters / ncols)
    figure, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size), squeeze=False)
    for i, axis in enumerate(axes.flat):
        axis.axis("off")
        if i >= filters:
            continue
        if weights.shape[1] == 3:
            axis.imshow(_rescale(weights[i].transpose(1, 2, 0)))  # (3, KH, KW) -> (KH, KW, 3)
        else:
            limit = float(np.abs(weights[i, 0]).max()) or 1.0
            axis.imshow(weights[i, 0], cmap="RdBu_r", vmin=-limit, vmax=limit)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
