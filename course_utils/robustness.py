"""Robustness and fairness helpers (introduced in ``notebooks/16_robustness_fairness.ipynb``, chapter 16).

Four ways a classifier with a good test accuracy can still fail, and the tools to measure each:

* **adversarial examples**: ``fgsm`` (Goodfellow, Shlens & Szegedy 2014, "Explaining and Harnessing Adversarial
  Examples", arXiv:1412.6572, section 4) and ``pgd`` (Madry et al. 2017, "Towards Deep Learning Models Resistant to
  Adversarial Attacks", arXiv:1706.06083, section 2.1: L-infinity ball, random start, projection), and
  ``random_sign_noise`` of the same size for comparison;
* **common corruptions** (Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness to Common
  Corruptions and Perturbations", arXiv:1903.12261): ``corrupt`` with six corruptions at five severities
  (``CORRUPTIONS``), and ``resize`` for testing at another resolution;
* **shape against texture** (Geirhos et al. 2019, "ImageNet-trained CNNs are biased towards texture",
  arXiv:1811.12231): ``cue_shapes`` paints ``course_utils.data.make_shapes``'s shapes with a texture or a colour
  that belongs to a class, so that a cue-conflict set (shape of one class, texture of another) can be built, and
  ``cue_decisions`` counts which cue a network follows;
* **subgroups**: ``slant`` measures an attribute of a digit from its pixels, ``binary_rates`` and
  ``expected_calibration_error`` give a subgroup's accuracy, false negative and false positive rates and
  calibration, ``group_balanced_weights`` is one mitigation (group-balanced sampling).

Images are float tensors (N, C, H, W) with pixels in [0, 1] (``PIXEL_RANGE``): an attack's budget eps is then a
fraction of the pixel range, and every attacked or corrupted image is clamped back into it.

Shape letters: N images, C channels, H height, W width.
"""
import io
import math

import numpy as np
import torch
import torch.nn.functional as F

PIXEL_RANGE = (0.0, 1.0)  # every image of this module: float pixels in [0, 1]


# --------------------------------------------------------------------------- input checks

def _check_images(x, name="x"):
    """Refuse anything but a float tensor (N, C, H, W) with pixels in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a float tensor (N, C, H, W) of pixels in [0, 1]; got a {type(x).__name__}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (N, C, H, W); got dtype {x.dtype} and shape "
                         f"{tuple(x.shape)}")
    low, high = PIXEL_RANGE
    if x.numel() and (float(x.min()) < low or float(x.max()) > high):
        raise ValueError(f"{name} must hold pixels in [{low:g}, {high:g}]; got values in [{float(x.min()):.3g}, "
                         f"{float(x.max()):.3g}] (normalise inside the model, not before the attack)")


def _check_budget(value, name="eps"):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number (a fraction of the pixel range); got {value!r}")


def _check_labels(y, n):
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (n,):
        found = f"dtype {y.dtype} and shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be an int64 tensor of {n} labels, shape ({n},); got {found}")


# --------------------------------------------------------------------------- adversarial examples

def input_gradient(model, x, y):
    """d (mean cross-entropy of ``model(x)`` against ``y``) / dx, (N, C, H, W); the model's parameters get no grad.

    The model is used in the mode it is in (call ``model.eval()`` first to attack the network as it predicts).
    """
    with torch.enable_grad():  # an attack needs its gradient even when called under torch.no_grad()
        x = x.detach().clone().requires_grad_(True)  # (N, C, H, W), a leaf of its own
        loss = F.cross_entropy(model(x), y)
        (gradient,) = torch.autograd.grad(loss, x)  # only x: the weights' .grad stay as they were
    return gradient


def fgsm(model, x, y, eps):
    """Fast gradient sign method: ``clamp(x + eps * sign(dL/dx), 0, 1)`` (Goodfellow et al. 2014, section 4).

    Args:
        model: a classifier returning logits (N, classes) for images in [0, 1].
        x: float tensor (N, C, H, W) in [0, 1], the clean images.
        y: int64 tensor (N,), their labels.
        eps: the L-infinity budget, a fraction of the pixel range.

    Returns:
        float tensor (N, C, H, W) in [0, 1], at most ``eps`` from ``x`` in every pixel, detached.
    """
    _check_images(x)
    _check_labels(y, len(x))
    _check_budget(eps)
    x_adv = x + eps * input_gradient(model, x, y).sign()  # one step up the loss, every pixel by +-eps
    return x_adv.clamp(*PIXEL_RANGE).detach()


def project_linf(x_adv, x, eps):
    """The nearest image to ``x_adv`` in the L-infinity ball of radius ``eps`` around ``x`` that is in [0, 1].

    Clipping to the ball and then to [0, 1] is the exact projection: both sets are boxes, so is their intersection.
    """
    x_adv = torch.max(torch.min(x_adv, x + eps), x - eps)  # (N, C, H, W): each pixel within eps of the clean one
    return x_adv.clamp(*PIXEL_RANGE)


def pgd(model, x, y, eps, alpha=None, steps=10, random_start=True, generator=None):
    """Projected gradient descent on the loss, in the L-infinity ball (Madry et al. 2017, section 2.1).

    Args:
        model, x, y, eps: as in ``fgsm``.
        alpha: the step size; by default ``2.5 * eps / steps`` (Madry et al.'s choice, so that the walk can cross
            the ball and back).
        steps: number of signed-gradient steps, each followed by the projection ``project_linf``.
        random_start: start from a uniform random point of the ball (Madry et al.), not from ``x``.
        generator: a ``torch.Generator`` (on the CPU) for the random start; repeatable runs.

    Returns:
        float tensor (N, C, H, W) in [0, 1], within ``eps`` of ``x`` in every pixel, detached.
    """
    _check_images(x)
    _check_labels(y, len(x))
    _check_budget(eps)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")
    alpha = 2.5 * eps / steps if alpha is None else alpha
    _check_budget(alpha, "alpha")
    x = x.detach()
    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator).to(x.device) * 2 - 1  # (N, C, H, W), uniform in [-1, 1]
        x_adv = project_linf(x + eps * noise, x, eps)
    for _ in range(steps):
        x_adv = project_linf(x_adv + alpha * input_gradient(model, x_adv, y).sign(), x, eps)
    return x_adv.detach()


def random_sign_noise(x, eps, generator=None):
    """``clamp(x + eps * s, 0, 1)`` with a random sign s per pixel: noise of the same L-infinity size as FGSM's."""
    _check_images(x)
    _check_budget(eps)
    signs = torch.randint(0, 2, x.shape, generator=generator).to(x.device) * 2 - 1  # (N, C, H, W), +-1
    return (x + eps * signs).clamp(*PIXEL_RANGE)


# --------------------------------------------------------------------------- common corruptions

def gaussian_noise(x, sigma, generator=None):
    """``x`` plus Gaussian noise of standard deviation ``sigma`` per pixel, clamped to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator).to(x.device)  # (N, C, H, W)
    return (x + sigma * noise).clamp(*PIXEL_RANGE)


def gaussian_blur(x, sigma):
    """A Gaussian blur of standard deviation ``sigma`` pixels (kernel of 2 * ceil(3 sigma) + 1 taps)."""
    from torchvision.transforms.v2 import functional as TF

    size = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x, kernel_size=[size, size], sigma=[sigma, sigma])


def contrast(x, factor):
    """Contrast scaled by ``factor`` around each image's mean (Hendrycks & Dietterich's ``contrast``)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    return ((x - mean) * factor + mean).clamp(*PIXEL_RANGE)


def jpeg(x, quality):
    """Each image JPEG-encoded at ``quality`` (1-100) and decoded again, with PIL (libjpeg, offline).

    Grey images (C = 1) are encoded as grey JPEGs, colour ones (C = 3) as RGB.
    """
    from PIL import Image

    if x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg needs 1 or 3 channels; got {x.shape[1]}")
    pixels = (x.detach().cpu() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, C), 0-255
    decoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, format="JPEG",
                                                                               quality=int(quality))
        decoded.append(np.asarray(Image.open(buffer)).reshape(image.shape))  # (H, W, C)
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float() / 255  # (N, C, H, W)
    return out.to(x.device)


def rotate(x, degrees):
    """Rotated by ``degrees`` counter-clockwise about the centre, bilinear, black where nothing comes in."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    return TF.rotate(x, float(degrees), interpolation=InterpolationMode.BILINEAR)


def shift(x, pixels):
    """Moved ``pixels`` to the right and down, black where nothing comes in (no wrap-around)."""
    N, C, H, W = x.shape
    pixels = int(pixels)
    out = torch.zeros_like(x)  # (N, C, H, W)
    out[:, :, pixels:, pixels:] = x[:, :, :H - pixels, :W - pixels]
    return out


# name: (function, parameter at severities 1 to 5). The severities are stronger than CIFAR-10-C's (Hendrycks &
# Dietterich 2019, appendix), where they are mild for white digits on black.
CORRUPTIONS = {
    "gaussian noise": (gaussian_noise, (0.1, 0.2, 0.3, 0.4, 0.5)),  # sigma, in pixel units
    "blur": (gaussian_blur, (0.5, 0.75, 1.0, 1.25, 1.5)),  # sigma, in pixels
    "contrast": (contrast, (0.5, 0.3, 0.2, 0.1, 0.05)),  # factor
    "jpeg": (jpeg, (30, 15, 10, 7, 5)),  # quality
    "rotation": (rotate, (10, 20, 30, 45, 60)),  # degrees
    "shift": (shift, (1, 2, 3, 4, 5)),  # pixels, right and down
}


def corrupt(x, name, severity, seed=0):
    """``x`` under corruption ``name`` (a key of ``CORRUPTIONS``) at ``severity`` 1-5; 0 gives ``x`` back.

    Args:
        x: float tensor (N, C, H, W) in [0, 1].
        seed: seeds the noise of ``"gaussian noise"``, so the same call gives the same images.

    Returns:
        float tensor (N, C, H, W) in [0, 1].
    """
    _check_images(x)
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {sorted(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 5:
        raise ValueError(f"severity must be an int from 0 (none) to 5; got {severity!r}")
    if severity == 0:
        return x.clone()
    function, levels = CORRUPTIONS[name]
    if function is gaussian_noise:
        return function(x, levels[severity - 1], generator=torch.Generator().manual_seed(seed))
    return function(x, levels[severity - 1])


def resize(x, size):
    """Images resized to ``size`` x ``size`` (bilinear, antialiased when shrinking): test at another resolution."""
    _check_images(x)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int; got {size!r}")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1]).clamp(*PIXEL_RANGE)


# --------------------------------------------------------------------------- shape against texture

CUES = ("texture", "colour")
# one colour per class for the "colour" cue (RGB in [0, 1]): red, green, blue, yellow, magenta
CLASS_COLOURS = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.15, 0.25, 0.95], [0.95, 0.85, 0.1],
                          [0.85, 0.1, 0.85]], dtype=np.float32)  # (5, 3)


def texture_pattern(index, size, period=4):
    """Class ``index``'s texture as a 0/1 float array (size, size).

    0 horizontal stripes, 1 vertical stripes, 2 diagonal stripes, 3 a checkerboard, 4 dots (``period`` pixels apart).
    """
    yy, xx = np.mgrid[0:size, 0:size]  # (H, W) each
    half = period // 2
    patterns = {
        0: (yy % period) < half,
        1: (xx % period) < half,
        2: ((yy + xx) % period) < half,
        3: ((yy // half) + (xx // half)) % 2 == 0,
        4: ((yy % period) == 0) & ((xx % period) == 0),
    }
    if index not in patterns:
        raise ValueError(f"texture index must be 0-{len(patterns) - 1}; got {index!r}")
    return patterns[index].astype(np.float32)


def cue_shapes(shapes, cue="texture", cue_labels=None):
    """``make_shapes``'s images with each shape painted by the texture or the colour of class ``cue_labels[i]``.

    Args:
        shapes: a ``course_utils.data.Shapes`` (its images, labels and masks are used; at most 5 classes).
        cue: ``"texture"``: the shape is filled with the class's pattern (``texture_pattern``) in its own colour
            and the complementary colour; ``"colour"``: the shape is filled with the class's ``CLASS_COLOURS``.
        cue_labels: int array (N,), the class whose cue each shape gets; by default its own label (shape and cue
            agree, a training set where both are predictive). Another class's label makes a cue-conflict image.

    Returns:
        float32 tensor (N, 3, H, W) in [0, 1]; the background is ``make_shapes``'s.
    """
    if cue not in CUES:
        raise ValueError(f"cue must be one of {CUES}; got {cue!r}")
    images, masks = shapes.images, shapes.masks  # (N, 3, H, W), (N, H, W)
    N, _, H, W = images.shape
    cue_labels = shapes.labels if cue_labels is None else np.asarray(cue_labels)
    if cue_labels.shape != (N,) or cue_labels.min() < 0 or cue_labels.max() >= len(CLASS_COLOURS):
        raise ValueError(f"cue_labels must be {N} class indices in 0-{len(CLASS_COLOURS) - 1}, shape ({N},); got "
                         f"shape {cue_labels.shape}")
    out = images.copy()
    patterns = np.stack([texture_pattern(k, H) for k in range(len(CLASS_COLOURS))])  # (5, H, W)
    for i in range(N):
        inside = masks[i] > 0  # (H, W) bool
        if cue == "texture":
            colour = images[i][:, inside].mean(axis=1)  # (3,): make_shapes's colour for this shape
            pattern = patterns[cue_labels[i]][inside]  # (pixels inside,)
            out[i][:, inside] = pattern * colour[:, None] + (1 - pattern) * (1 - colour[:, None])
        else:
            out[i][:, inside] = CLASS_COLOURS[cue_labels[i]][:, None]
    return torch.from_numpy(out)


def cue_decisions(predictions, shape_labels, cue_labels):
    """Which cue the predictions follow on cue-conflict images (Geirhos et al. 2019, section 2.3).

    Args:
        predictions, shape_labels, cue_labels: int arrays or tensors (N,); ``shape_labels != cue_labels``.

    Returns:
        ``{"shape": fraction, "cue": fraction, "other": fraction, "shape_bias": shape / (shape + cue)}``
        (``shape_bias`` is NaN when no prediction follows either cue).
    """
    predictions, shape_labels, cue_labels = (np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a)
                                             for a in (predictions, shape_labels, cue_labels))
    if not predictions.shape == shape_labels.shape == cue_labels.shape or predictions.ndim != 1:
        raise ValueError(f"predictions, shape_labels and cue_labels must be 1-d of one length; got shapes "
                         f"{predictions.shape}, {shape_labels.shape}, {cue_labels.shape}")
    if np.any(shape_labels == cue_labels):
        raise ValueError("a cue-conflict image needs a cue of another class than its shape: "
                         f"{int(np.sum(shape_labels == cue_labels))} images have shape_labels == cue_labels")
    shape, cue = float(np.mean(predictions == shape_labels)), float(np.mean(predictions == cue_labels))
    return {"shape": shape, "cue": cue, "other": 1.0 - shape - cue,
            "shape_bias": shape / (shape + cue) if shape + cue > 0 else float("nan")}


# --------------------------------------------------------------------------- subgroups

def slant(images):
    """Slant of each digit, measured from its pixels: the horizontal shift of the ink per row, upwards.

    From the image's second moments (the shear that deskewing undoes): ``-mu11 / mu02``, with ``mu11`` the
    covariance of the ink's row and column and ``mu02`` the variance of its row, weighted by the pixel values.
    0 for an upright digit, positive for a digit leaning to the right (its top to the right of its bottom):
    about the tangent of the lean angle.

    Args:
        images: (N, H, W) or (N, 1, H, W), non-negative pixels, white ink on black (a NumPy array or a tensor).

    Returns:
        float64 array (N,).
    """
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]  # (N, H, W)
    if array.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (N, 1, H, W); got shape {array.shape}")
    array = array.astype(np.float64)
    if array.min() < 0:
        raise ValueError(f"images must have non-negative pixels (white ink on black); got a minimum of "
                         f"{array.min():.3g}")
    mass = array.sum(axis=(1, 2))  # (N,)
    if np.any(mass == 0):
        raise ValueError(f"every image needs some ink; images {np.flatnonzero(mass == 0)[:5].tolist()} are blank")
    rows, cols = np.mgrid[0:array.shape[1], 0:array.shape[2]].astype(np.float64)  # (H, W) each
    centre_row = (array * rows).sum(axis=(1, 2)) / mass  # (N,)
    centre_col = (array * cols).sum(axis=(1, 2)) / mass
    d_row = rows - centre_row[:, None, None]  # (N, H, W)
    d_col = cols - centre_col[:, None, None]
    mu11 = (array * d_row * d_col).sum(axis=(1, 2)) / mass
    mu02 = (array * d_row**2).sum(axis=(1, 2)) / mass
    return -mu11 / mu02  # rows grow downwards: a right lean has the column fall as the row grows


def _binary(values, name):
    values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-d (N,); got shape {values.shape}")
    if not np.isin(values, (0, 1)).all():
        raise ValueError(f"{name} must hold 0 and 1 only (a binary task); got values {np.unique(values)[:6]}")
    return values.astype(bool)


def binary_rates(y_true, y_pred):
    """Accuracy, false negative rate FN / (FN + TP) and false positive rate FP / (FP + TN) of a binary task.

    Args:
        y_true, y_pred: 0/1 arrays or tensors (N,).

    Returns:
        ``{"count", "positives", "accuracy", "fnr", "fpr"}``; a rate without its denominator (no positives, or no
        negatives) is NaN.
    """
    y_true, y_pred = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have one shape; got {y_true.shape} and {y_pred.shape}")
    positives, negatives = y_true.sum(), (~y_true).sum()
    fn, fp = (y_true & ~y_pred).sum(), (~y_true & y_pred).sum()
    return {"count": int(len(y_true)), "positives": int(positives),
            "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
            "fnr": float(fn / positives) if positives else float("nan"),
            "fpr": float(fp / negatives) if negatives else float("nan")}


def expected_calibration_error(confidence, correct, bins=10):
    """ECE: sum over equal-width confidence bins of |accuracy - mean confidence| * (fraction of examples in the bin).

    Guo et al. 2017, "On Calibration of Modern Neural Networks", arXiv:1706.04599, section 2.

    Args:
        confidence: floats in [0, 1] (N,): the probability of the predicted class.
        correct: bools (N,): whether the prediction is right.
        bins: number of bins of (0, 1]; bin b holds confidences in (b / bins, (b + 1) / bins].
    """
    confidence = np.asarray(confidence.detach().cpu() if isinstance(confidence, torch.Tensor) else confidence,
                            dtype=np.float64)
    correct = np.asarray(correct.detach().cpu() if isinstance(correct, torch.Tensor) else correct, dtype=np.float64)
    if confidence.ndim != 1 or confidence.shape != correct.shape or not len(confidence):
        raise ValueError(f"confidence and correct must be 1-d of one non-zero length; got shapes {confidence.shape} "
                         f"and {correct.shape}")
    if confidence.min() < 0 or confidence.max() > 1:
        raise ValueError(f"confidence must be probabilities in [0, 1]; got [{confidence.min():.3g}, "
                         f"{confidence.max():.3g}]")
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # (N,): bin b holds (b/bins, (b+1)/bins]
    error = 0.0
    for b in range(bins):
        here = which == b
        if here.any():
            error += abs(correct[here].mean() - confidence[here].mean()) * here.mean()
    return float(error)


def group_balanced_weights(groups):
    """A sampling weight per example such that every group has the same total weight: 1 / (size of its group).

    Give them to ``torch.utils.data.WeightedRandomSampler`` (with replacement) for group-balanced batches.

    Args:
        groups: int or bool array or tensor (N,), the group of each example.

    Returns:
        float64 tensor (N,).
    """
    groups = groups.detach().cpu().numpy() if isinstance(groups, torch.Tensor) else np.asarray(groups)
    if groups.ndim != 1 or not len(groups):
        raise ValueError(f"groups must be 1-d and non-empty (N,); got shape {groups.shape}")
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return torch.from_numpy(1.0 / counts[inverse])
