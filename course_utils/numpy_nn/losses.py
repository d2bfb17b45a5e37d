"""Stable softmax and cross-entropy in NumPy (introduced in ``notebooks/03_activations_normalization.ipynb``).

Shape letters: N examples, K classes. A network's last layer gives *logits* (N, K),
unbounded real scores; softmax turns each row into probabilities::

    softmax(z)_k = exp(z_k) / sum_j exp(z_j) = exp(z_k - m) / sum_j exp(z_j - m)   for any m

Taking ``m = max_j z_j`` makes every exponent <= 0, so nothing overflows (the naive
form gives inf / inf = NaN once a logit passes about 709 in float64, 88 in float32).
The cross-entropy of a batch is the mean over its examples (``F.cross_entropy``'s default)::

    loss = -1/N sum_n log softmax(z_n)_{y_n},    d loss / d z_n = (softmax(z_n) - onehot(y_n)) / N
"""
import numpy as np


def _check_logits(logits, name="logits"):
    if not isinstance(logits, np.ndarray) or not np.issubdtype(logits.dtype, np.floating):
        got = type(logits).__name__ + (f" of dtype {logits.dtype}" if isinstance(logits, np.ndarray) else "")
        raise TypeError(f"{name} must be a floating-point NumPy array; got {got}")


def log_softmax(logits, axis=-1):
    """``log softmax(z) = z - m - log sum_j exp(z_j - m)``, ``m`` the maximum along ``axis``.

    Args:
        logits: float array of any shape, usually (N, K).
        axis: the class axis.

    Returns:
        array shaped like ``logits``, every entry <= 0.
    """
    _check_logits(logits)
    shifted = logits - np.max(logits, axis=axis, keepdims=True)  # same shape, max 0 along axis
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(logits, axis=-1):
    """Softmax along ``axis``, with the maximum subtracted first so that ``exp`` never overflows.

    Args:
        logits: float array of any shape, usually (N, K).
        axis: the class axis.

    Returns:
        array shaped like ``logits``, entries in [0, 1], summing to 1 along ``axis``.
    """
    _check_logits(logits)
    shifted = logits - np.max(logits, axis=axis, keepdims=True)  # same shape, max 0 along axis
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=axis, keepdims=True)


def cross_entropy_forward(logits, labels):
    """Mean cross-entropy of a batch of logits against integer labels (``F.cross_entropy``).

    Args:
        logits: float array (N, K).
        labels: integer array (N,), each in [0, K).

    Returns:
        loss: a Python float, ``-1/N sum_n log softmax(logits_n)[labels_n]``.
        cache: ``(probs, labels)``, probs (N, K), for ``cross_entropy_backward``.
    """
    _check_logits(logits)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must have shape (N, K) with N >= 1; got {logits.shape}")
    N, K = logits.shape
    if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
        got = type(labels).__name__ + (f" of dtype {labels.dtype}" if isinstance(labels, np.ndarray) else "")
        raise TypeError(f"labels must be an integer NumPy array of shape ({N},); got {got}")
    if labels.shape != (N,):
        raise ValueError(f"labels must have shape ({N},) to match logits {logits.shape}; got {labels.shape}")
    if labels.min() < 0 or labels.max() >= K:
        raise ValueError(f"labels must lie in [0, {K}); got values from {labels.min()} to {labels.max()}")
    log_probs = log_softmax(logits, axis=1)  # (N, K)
    loss = -float(np.mean(log_probs[np.arange(N), labels]))
    return loss, (np.exp(log_probs), labels)


def cross_entropy_backward(cache, dloss=1.0):
    """Gradient of the mean cross-entropy with respect to the logits.

    Args:
        cache: from ``cross_entropy_forward``.
        dloss: upstream gradient of the scalar loss (1 when the loss is the end of the graph).

    Returns:
        dlogits: (N, K), ``dloss * (softmax(logits) - onehot(labels)) / N``; each row sums to 0.
    """
    probs, labels = cache
    N, K = probs.shape
    dlogits = probs.copy()  # (N, K)
    dlogits[np.arange(N), labels] -= 1.0
    return dlogits * (dloss / N)
