"""Looking inside a trained CNN: Grad-CAM, heat-map overlays and an explorer (``notebooks/14_visualising_cnns.ipynb``).

Chapter 14 builds vanilla-gradient saliency, SmoothGrad and Grad-CAM in the open with forward and backward hooks
and checks them against captum. This module keeps the pieces later chapters and the explorer reuse:

* ``grad_cam(model, layer, x, targets)``: Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
  Networks via Gradient-based Localization", ICCV 2017, equations 1 and 2), upsampled bilinearly to the input;
* ``overlay(image, heat)``: a heat map blended over a photo, as an RGB array;
* ``grad_cam_explorer(model, images, layers, class_names)``: an ipywidgets box to pick a photo, a layer and a class
  and see its Grad-CAM map. The work is done by ``explore_grad_cam`` (a pure function, testable without a browser).

Shape letters: N images, C channels, H height, W width; (h, w) the size of a layer's feature map.
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["grad_cam", "overlay", "GradCamView", "explore_grad_cam", "grad_cam_explorer"]


def grad_cam(model, layer, x, targets):
    """Grad-CAM maps of each image's target class at ``layer``, upsampled to the input: (N, H, W), at least 0.

    A forward hook keeps ``layer``'s output A (N, C, h, w), and ``torch.autograd.grad`` gives dy/dA, y being each
    image's target logit, without touching the parameters' ``.grad`` (the lecture uses a backward hook instead). Each
    channel k gets the weight alpha_k = mean over (h, w) of dy/dA_k (equation 1); the map is ReLU(sum_k alpha_k A_k)
    (equation 2), resized to (H, W) bilinearly (``align_corners=False``), unnormalised.

    Args:
        model: a classifier in evaluation mode, (N, C, H, W) -> (N, K) logits; its parameters may be frozen.
        layer: a submodule of ``model`` whose output is a feature map (N, C, h, w).
        x: input tensor (N, C, H, W); not changed.
        targets: int64 tensor (N,) of class indices, or one int (or 0-d tensor) for every image.

    Returns:
        float tensor (N, H, W), detached.
    """
    N = x.shape[0]
    targets = torch.as_tensor(targets, dtype=torch.int64, device=x.device).reshape(-1).expand(N)  # (N,)
    kept = []
    hook = layer.register_forward_hook(lambda module, inputs, output: kept.append(output))
    try:
        with torch.enable_grad():  # under torch.no_grad() too
            logits = model(x.detach().requires_grad_(True))  # (N, K): a graph even when the weights are frozen
            score = logits.gather(1, targets.reshape(N, 1)).sum()  # the images' scores are independent in eval mode
            (gradient,) = torch.autograd.grad(score, kept[0])  # (N, C, h, w): dy/dA
    finally:
        hook.remove()
    activation = kept[0].detach()  # (N, C, h, w)
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1): alpha_k, equation 1
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))  # (N, 1, h, w): equation 2
    cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)  # (N, 1, H, W)
    return cam[:, 0]  # (N, H, W)


def overlay(image, heat, alpha=0.5, cmap="jet"):
    """``heat`` (H, W), scaled to [0, 1] by its maximum, coloured by ``cmap`` and blended over ``image``.

    Args:
        image: float array (H, W, 3) or (H, W) in [0, 1].
        heat: array or tensor (H, W), at least 0 (a Grad-CAM or saliency map).
        alpha: weight of the heat map in the blend.

    Returns:
        float array (H, W, 3) in [0, 1].
    """
    from matplotlib import colormaps

    image = np.asarray(image, dtype=np.float64)
    heat = heat.detach().cpu().numpy() if torch.is_tensor(heat) else np.asarray(heat, dtype=np.float64)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)  # (H, W, 3)
    if image.shape[:2] != heat.shape:
        raise ValueError(f"overlay needs a heat map of the image's size {image.shape[:2]}; got {heat.shape}")
    peak = heat.max()
    scaled = heat / peak if peak > 0 else np.zeros_like(heat)  # (H, W) in [0, 1]
    coloured = colormaps[cmap](scaled)[:, :, :3]  # (H, W, 3)
    return np.clip((1 - alpha) * image + alpha * coloured, 0.0, 1.0)


@dataclass(frozen=True)
class GradCamView:
    """What the explorer shows for one choice of photo, layer and class."""

    photo: str  # the photo's name
    layer: str  # the layer's name in the model
    target: int  # the class index
    top_classes: tuple  # ((index, probability), ...): the photo's most probable classes
    cam: torch.Tensor  # (H, W) Grad-CAM map of ``target`` at ``layer``
    feature_size: tuple  # (h, w) of the layer's output
    summary: str  # one line of HTML


def explore_grad_cam(model, images, layers, class_names, photo, layer, target=None, top_k=5):
    """The explorer's view for ``photo``, ``layer`` and ``target`` (the photo's top class when None).

    Args:
        model, class_names: the classifier and the names of its K outputs.
        images: ``{name: x}`` with x the model's input (1, C, H, W).
        layers: names of submodules of ``model`` the explorer offers.
        top_k: how many of the photo's most probable classes to list.
    """
    if photo not in images:
        raise ValueError(f"photo must be one of {sorted(images)}; got {photo!r}")
    if layer not in layers:
        raise ValueError(f"layer must be one of {list(layers)}; got {layer!r}")
    x = images[photo]  # (1, C, H, W)
    module = model.get_submodule(layer)
    sizes = []
    hook = module.register_forward_hook(lambda m, inputs, output: sizes.append(tuple(output.shape[2:])))
    try:
        with torch.no_grad():
            probabilities = model(x).softmax(dim=1)[0]  # (K,)
    finally:
        hook.remove()
    values, indices = probabilities.topk(top_k)
    top = tuple((int(i), float(v)) for i, v in zip(indices, values))
    target = top[0][0] if target is None else int(target)
    if not 0 <= target < len(class_names):
        raise ValueError(f"target must be a class index in [0, {len(class_names)}); got {target}")
    cam = grad_cam(model, module, x, torch.tensor([target]))[0]  # (H, W)
    h, w = sizes[0]
    summary = (f"<b>{photo}</b>, layer <code>{layer}</code> ({h}x{w} feature map), class <b>{class_names[target]}</b> "
               f"(p = {float(probabilities[target]):.3f}); map peak {float(cam.max()):.3g}")
    return GradCamView(photo, layer, target, top, cam, (h, w), summary)


def _picture(x):
    """A model input (1, 3, H, W) shown as an image (H, W, 3) in [0, 1], whatever its normalisation."""
    picture = x[0].permute(1, 2, 0).detach().cpu().numpy()  # (H, W, 3)
    low, high = picture.min(), picture.max()
    return (picture - low) / (high - low) if high > low else np.zeros_like(picture)


def grad_cam_explorer(model, images, layers, class_names, top_k=5):
    """An ipywidgets box: pick a photo, a layer and one of the photo's top classes, see the Grad-CAM overlay.

    The box's ``controls`` (a dict of the three dropdowns), ``summary`` (an HTML widget) and ``view`` (a one-item
    list holding the current ``GradCamView``) give access to its parts, e.g. for tests.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    names = list(images)
    controls = {
        "photo": widgets.Dropdown(options=names, value=names[0], description="photo"),
        "layer": widgets.Dropdown(options=list(layers), value=list(layers)[-1], description="layer"),
        "target": widgets.Dropdown(options=[], description="class"),
    }
    summary = widgets.HTML()
    picture = widgets.Output()
    view = [None]
    updating = [False]

    def class_options(photo):
        top = explore_grad_cam(model, images, layers, class_names, photo, controls["layer"].value, None, top_k)
        return [(f"{class_names[index]} ({p:.2f})", index) for index, p in top.top_classes]

    def update(_change=None):
        if updating[0]:
            return
        current = explore_grad_cam(model, images, layers, class_names, controls["photo"].value,
                                   controls["layer"].value, controls["target"].value, top_k)
        view[0] = current
        summary.value = current.summary
        figure, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
        image = _picture(images[current.photo])
        axes[0].imshow(image)
        axes[0].set_title(current.photo, fontsize=9)
        axes[1].imshow(overlay(image, current.cam))
        axes[1].set_title(f"Grad-CAM: {class_names[current.target]}", fontsize=9)
        for axis in axes:
            axis.axis("off")
        figure.tight_layout()
        picture.clear_output(wait=True)
        with picture:
            display(figure)
        plt.close(figure)

    def new_photo(_change=None):
        updating[0] = True  # one redraw for the new photo, not one per changed option
        options = class_options(controls["photo"].value)
        controls["target"].options = options
        controls["target"].value = options[0][1]
        updating[0] = False
        update()

    controls["photo"].observe(new_photo, names="value")
    controls["layer"].observe(update, names="value")
    controls["target"].observe(update, names="value")
    new_photo()
    box = widgets.VBox([widgets.HBox(list(controls.values())), summary, picture])
    box.controls = controls
    box.summary = summary
    box.view = view
    return box
