"""Inverted dropout in NumPy (introduced in ``notebooks/03_activations_normalization.ipynb``).

In training, each unit is kept with probability ``1 - p`` and zeroed otherwise; the kept
units are divided by ``1 - p`` ("inverted" dropout, Srivastava et al. 2014 with the
scaling moved to training time), so that ``E[out] = x`` and evaluation needs no change:
in eval mode dropout is the identity. This is what ``torch.nn.Dropout(p)`` does.
"""
import numpy as np


def dropout_forward(x, p=0.5, train=True, rng=None):
    """Inverted dropout.

    Args:
        x: float array of any shape, e.g. (N, D) or (N, C, H, W).
        p: probability of zeroing a unit, in [0, 1).
        train: drop units (True) or pass ``x`` through unchanged (False).
        rng: a ``numpy.random.Generator`` drawing the mask; a fresh unseeded one when None.

    Returns:
        out: shaped like ``x``; ``x * mask / (1 - p)`` in training, ``x`` in evaluation.
        cache: dict with ``"mask"`` (float array shaped like ``x``, 1 where the unit is kept
            and 0 where it is dropped; None in evaluation), ``"p"`` and ``"train"``.
    """
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        got = type(x).__name__ + (f" of dtype {x.dtype}" if isinstance(x, np.ndarray) else "")
        raise TypeError(f"x must be a floating-point NumPy array; got {got}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"p must be a probability in [0, 1) (p = 1 would drop everything); got {p!r}")
    if not train:
        return x.copy(), {"mask": None, "p": p, "train": False}
    rng = np.random.default_rng() if rng is None else rng
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None; got {type(rng).__name__}")
    mask = (rng.random(x.shape) >= p).astype(x.dtype)  # same shape as x: 1 kept, 0 dropped
    out = x * mask / (1.0 - p)
    return out, {"mask": mask, "p": p, "train": True}


def dropout_backward(dout, cache):
    """Gradient of inverted dropout: ``dout * mask / (1 - p)`` in training, ``dout`` in evaluation.

    Args:
        dout: upstream gradient, shaped like the forward input.
        cache: from ``dropout_forward``.

    Returns:
        dx: shaped like ``dout``.
    """
    mask, p, train = cache["mask"], cache["p"], cache["train"]
    if not train:
        return dout.copy()
    if dout.shape != mask.shape:
        raise ValueError(f"dout must have the shape of the forward input {mask.shape}; got {dout.shape}")
    return dout * mask / (1.0 - p)
