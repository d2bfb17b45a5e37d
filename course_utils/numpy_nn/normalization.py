"""Batch, layer and group normalisation of feature maps (introduced in ``notebooks/03_activations_normalization.ipynb``).

Shape letters: N images, C channels, H height, W width; G groups. All three layers
compute ``gamma * (x - mean) / sqrt(var + eps) + beta`` and differ in what the
statistics are taken over:

============  ==============================  =====================================  ===========================
layer         statistics over                 one mean/var per                       PyTorch
============  ==============================  =====================================  ===========================
batch norm    (N, H, W)                       channel, shared by the batch           ``nn.BatchNorm2d(C)``
layer norm    (C, H, W)                       image                                  ``nn.LayerNorm([C, H, W])``
group norm    (C/G, H, W)                     image and group of C/G channels        ``nn.GroupNorm(G, C)``
============  ==============================  =====================================  ===========================

Batch norm (Ioffe & Szegedy, 2015) alone depends on the other images of the batch, so
it keeps running statistics for evaluation. PyTorch's conventions, followed here:
normalisation uses the *biased* batch variance (divide by M = N*H*W), the running
variance is updated with the *unbiased* one (divide by M - 1), and ``momentum`` is the
weight of the *new* value: ``running = (1 - momentum) * running + momentum * batch``.
"""
import numpy as np


def _check_maps(x, name="x"):
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        got = type(x).__name__ + (f" of dtype {x.dtype}" if isinstance(x, np.ndarray) else "")
        raise TypeError(f"{name} must be a floating-point NumPy array of shape (N, C, H, W); got {got}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W); got shape {x.shape}")


def _check_param(value, shape, name):
    if not isinstance(value, np.ndarray) or value.shape != tuple(shape):
        got = value.shape if isinstance(value, np.ndarray) else type(value).__name__
        raise ValueError(f"{name} must be a NumPy array of shape {tuple(shape)}; got {got}")


# --------------------------------------------------------------------------- batch norm

def batchnorm2d_state(C, dtype=np.float64):
    """Fresh running statistics for ``C`` channels, as ``nn.BatchNorm2d`` starts: mean 0, variance 1.

    Returns:
        dict with ``"running_mean"`` (C,) zeros and ``"running_var"`` (C,) ones.
    """
    if isinstance(C, bool) or not isinstance(C, (int, np.integer)) or C < 1:
        raise ValueError(f"C must be a positive int; got {C!r}")
    return {"running_mean": np.zeros(C, dtype=dtype), "running_var": np.ones(C, dtype=dtype)}


def batchnorm2d_forward(x, gamma, beta, state, train=True, momentum=0.1, eps=1e-5):
    """Batch normalisation of feature maps, one mean and variance per channel.

    Training mode::

        mean_c = mean of x[:, c] over (N, H, W)            M = N*H*W values
        var_c  = mean of (x[:, c] - mean_c)^2              biased: divide by M
        out    = gamma_c * (x - mean_c) / sqrt(var_c + eps) + beta_c
        state["running_mean"] <- (1 - momentum) * running_mean + momentum * mean
        state["running_var"]  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)

    Evaluation mode uses ``state``'s running statistics instead and leaves them unchanged.

    Args:
        x: float array (N, C, H, W).
        gamma: scale, (C,).
        beta: shift, (C,).
        state: dict with ``"running_mean"`` (C,) and ``"running_var"`` (C,), e.g. from
            ``batchnorm2d_state(C)``; updated in place (new arrays stored under the keys) in training.
        train: use the batch statistics and update ``state`` (True), or the running ones (False).
        momentum: weight of the batch statistics in the running average, in [0, 1].
        eps: added to the variance before the square root.

    Returns:
        out: (N, C, H, W).
        cache: for ``batchnorm2d_backward``.
    """
    _check_maps(x)
    N, C, H, W = x.shape
    _check_param(gamma, (C,), "gamma")
    _check_param(beta, (C,), "beta")
    if not isinstance(state, dict) or "running_mean" not in state or "running_var" not in state:
        raise TypeError("state must be a dict with 'running_mean' and 'running_var' (see batchnorm2d_state)")
    _check_param(state["running_mean"], (C,), "state['running_mean']")
    _check_param(state["running_var"], (C,), "state['running_var']")
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must lie in [0, 1]; got {momentum!r}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0; got {eps!r}")
    if train:
        M = N * H * W
        if M < 2:
            raise ValueError(f"training-mode batch norm needs more than 1 value per channel; got input {x.shape}")
        mean = x.mean(axis=(0, 2, 3))  # (C,)
        var = x.var(axis=(0, 2, 3))  # (C,), biased (divide by M): used to normalise
        state["running_mean"] = (1 - momentum) * state["running_mean"] + momentum * mean
        state["running_var"] = (1 - momentum) * state["running_var"] + momentum * var * M / (M - 1)
    else:
        mean, var = state["running_mean"], state["running_var"]
    inv_std = 1.0 / np.sqrt(var + eps)  # (C,)
    x_hat = (x - mean[None, :, None, None]) * inv_std[None, :, None, None]  # (N, C, H, W)
    out = gamma[None, :, None, None] * x_hat + beta[None, :, None, None]  # (N, C, H, W)
    return out, (x_hat, gamma, inv_std, train)


def batchnorm2d_backward(dout, cache):
    """Gradients of batch normalisation.

    With ``x_hat = (x - mean) / sqrt(var + eps)``, M = N*H*W and sums over (N, H, W)::

        dbeta  = sum dout
        dgamma = sum dout * x_hat
        dx     = gamma / sqrt(var + eps) * (dout - mean(dout) - x_hat * mean(dout * x_hat))   training
        dx     = gamma / sqrt(running_var + eps) * dout                                          evaluation

    In training the mean and variance depend on every input, which gives the two
    subtracted terms; in evaluation they are constants.

    Args:
        dout: upstream gradient (N, C, H, W).
        cache: from ``batchnorm2d_forward``.

    Returns:
        dx: (N, C, H, W).
        dgamma: (C,).
        dbeta: (C,).
    """
    x_hat, gamma, inv_std, train = cache
    if not isinstance(dout, np.ndarray) or dout.shape != x_hat.shape:
        got = dout.shape if isinstance(dout, np.ndarray) else type(dout).__name__
        raise ValueError(f"dout must be an array of the forward output's shape {x_hat.shape}; got {got}")
    dbeta = dout.sum(axis=(0, 2, 3))  # (C,)
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3))  # (C,)
    dx_hat = dout * gamma[None, :, None, None]  # (N, C, H, W)
    scale = inv_std[None, :, None, None]  # (1, C, 1, 1)
    if not train:
        return dx_hat * scale, dgamma, dbeta
    mean_dx_hat = dx_hat.mean(axis=(0, 2, 3), keepdims=True)  # (1, C, 1, 1)
    mean_dx_hat_x_hat = (dx_hat * x_hat).mean(axis=(0, 2, 3), keepdims=True)  # (1, C, 1, 1)
    dx = scale * (dx_hat - mean_dx_hat - x_hat * mean_dx_hat_x_hat)
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------- layer norm and group norm

def layernorm_forward(x, gamma, beta, eps=1e-5):
    """Layer normalisation of feature maps over (C, H, W), one mean and variance per image (Ba et al., 2016).

    Matches ``nn.LayerNorm([C, H, W])``: biased variance, elementwise affine. The same in
    training and evaluation, independent of the other images. Forward only.

    Args:
        x: float array (N, C, H, W).
        gamma: scale, (C, H, W).
        beta: shift, (C, H, W).
        eps: added to the variance.

    Returns:
        out: (N, C, H, W).
    """
    _check_maps(x)
    N, C, H, W = x.shape
    _check_param(gamma, (C, H, W), "gamma")
    _check_param(beta, (C, H, W), "beta")
    mean = x.mean(axis=(1, 2, 3), keepdims=True)  # (N, 1, 1, 1)
    var = x.var(axis=(1, 2, 3), keepdims=True)  # (N, 1, 1, 1), biased
    x_hat = (x - mean) / np.sqrt(var + eps)  # (N, C, H, W)
    return gamma[None] * x_hat + beta[None]


def groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5):
    """Group normalisation: statistics per image over groups of C/G channels and (H, W) (Wu & He, 2018).

    Matches ``nn.GroupNorm(num_groups, C)``; G = 1 is layer norm with a per-channel affine,
    G = C is instance norm. Forward only.

    Args:
        x: float array (N, C, H, W).
        gamma: scale, (C,).
        beta: shift, (C,).
        num_groups: G, which must divide C.
        eps: added to the variance.

    Returns:
        out: (N, C, H, W).
    """
    _check_maps(x)
    N, C, H, W = x.shape
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) \
            or num_groups < 1 or C % num_groups:
        raise ValueError(f"num_groups must be a positive int dividing C={C}; got {num_groups!r}")
    _check_param(gamma, (C,), "gamma")
    _check_param(beta, (C,), "beta")
    G = int(num_groups)
    grouped = x.reshape(N, G, C // G, H, W)  # (N, G, C/G, H, W)
    mean = grouped.mean(axis=(2, 3, 4), keepdims=True)  # (N, G, 1, 1, 1)
    var = grouped.var(axis=(2, 3, 4), keepdims=True)  # (N, G, 1, 1, 1), biased
    x_hat = ((grouped - mean) / np.sqrt(var + eps)).reshape(N, C, H, W)  # (N, C, H, W)
    return gamma[None, :, None, None] * x_hat + beta[None, :, None, None]
