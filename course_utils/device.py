"""Choosing a device and making runs repeatable (introduced in ``notebooks/00_setup.ipynb``).

The course runs the same code on a laptop CPU, an NVIDIA GPU (CUDA) or an Apple
GPU (MPS). ``get_device()`` picks the best one present; set the environment
variable ``COURSE_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) to choose.
"""
import contextlib
import os
import random
import warnings

import numpy as np
import torch

DEVICE_ENV_VAR = "COURSE_DEVICE"


def get_device(preferred=None):
    """Return the ``torch.device`` to compute on.

    Order: the ``preferred`` argument, then ``$COURSE_DEVICE``, then CUDA, then
    Apple MPS, then the CPU. Asking for a device that is not present raises a
    ``RuntimeError`` that says which devices are.
    """
    choice = preferred if preferred is not None else os.environ.get(DEVICE_ENV_VAR)
    if choice is None or str(choice).strip() == "":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(str(choice).strip())
    except RuntimeError as error:
        raise ValueError(
            f"{DEVICE_ENV_VAR}/preferred must name a device such as 'cpu', 'cuda', 'cuda:1' or 'mps'; "
            f"got {choice!r}"
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {choice!r} was asked for but CUDA is not available here; present: {available_devices()}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(f"device {choice!r} was asked for but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not _mps_available():
        raise RuntimeError(f"device {choice!r} was asked for but Apple MPS is not available here; present: {available_devices()}")
    return device


def available_devices():
    """List the device names this machine offers, e.g. ``['cpu', 'cuda:0']``."""
    names = ["cpu"]
    names += [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    names += ["mps"] if _mps_available() else []
    return names


def _mps_available():
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def seed_everything(seed=0):
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    Returns a fresh ``numpy.random.Generator`` seeded with the same number, for
    code that prefers an explicit generator. The same run on the same machine
    then prints the same numbers.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return np.random.default_rng(seed)


def uses_mixed_precision(device):
    """True where ``autocast`` speeds training up: CUDA (float16/bfloat16) only.

    This is the default of ``autocast(device)`` and of ``fit``/``evaluate``'s
    ``mixed_precision=None``. On the CPU, bfloat16 autocast is slower than float32 for
    the small models of this course, and MPS autocast is still patchy, so both train
    in float32 unless mixed precision is asked for.
    """
    return torch.device(device).type == "cuda"


def mixed_precision_dtype(device, enabled=None):
    """The dtype ``autocast(device, enabled)`` computes matrix products in, or ``None`` for float32.

    Args:
        device: a ``torch.device`` or its name.
        enabled: ``None`` follows ``uses_mixed_precision(device)`` (CUDA only);
            ``False`` is float32; ``True`` asks for mixed precision on any device.

    Returns:
        CUDA: bfloat16 where the GPU supports it, else float16 (which needs a gradient
        scaler). CPU: bfloat16 (PyTorch's CPU autocast; it has no float16 scaler).
        Elsewhere (MPS): ``None``, with a ``UserWarning`` saying that mixed precision
        is not used there, so that ``enabled=True`` never silently does nothing.
    """
    device = torch.device(device)
    enabled = uses_mixed_precision(device) if enabled is None else enabled
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16
    warnings.warn(f"mixed precision was asked for on {device.type}, where the course does not use it: "
                  f"this runs in float32", UserWarning, stacklevel=2)
    return None


def autocast(device, enabled=None):
    """Mixed-precision context for the forward pass on ``device``.

    By default (``enabled=None``) bfloat16/float16 on CUDA and a no-op elsewhere;
    ``enabled=True`` also autocasts to bfloat16 on the CPU. See ``mixed_precision_dtype``.
    """
    device = torch.device(device)
    dtype = mixed_precision_dtype(device, enabled)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe_environment():
    """A dict of the versions and settings that affect the course's numbers."""
    import platform

    import scipy

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "device": str(get_device()),
        "available devices": ", ".join(available_devices()),
        "torch CPU threads": torch.get_num_threads(),
        "CPU cores": os.cpu_count(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is in requirements.txt
        info["torchvision"] = "not installed"
    if torch.cuda.is_available():
        info["GPU"] = torch.cuda.get_device_name(0)
    return info
