"""Measuring and shrinking a network's cost (introduced in ``notebooks/18_scaling_up.ipynb``, chapter 18 "Scaling
up"): where a step's time goes, its FLOPs, its activation memory, the largest batch a memory budget allows,
micro-batches for gradient accumulation, export to ONNX and onnxruntime, int8 quantisation and magnitude pruning.

Data-parallel training lives in ``course_utils.distributed`` (a script for ``torchrun``).
"""
import resource
import sys
import warnings

import numpy as np
import torch
from torch import nn


# --------------------------------------------------------------------------- where the time goes

def profile_table(step, steps=3, row_limit=10, sort_by=None):
    """Run ``step()`` ``steps`` times under ``torch.profiler``; the table of the operators that took the most time.

    On CUDA the GPU's kernels are recorded too and the table is sorted by their time; on the CPU by the
    operators' own CPU time (``self_cpu_time_total``: the time in the operator minus its children).
    """
    if not callable(step):
        raise TypeError(f"step must be callable; got {type(step).__name__}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1; got {steps!r}")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    step()  # warm-up: the first call allocates and chooses algorithms
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    sort_by = sort_by or ("self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total")
    return profiler.key_averages().table(sort_by=sort_by, row_limit=row_limit)


def count_flops(model, inputs, backward=False):
    """Floating-point operations of one forward pass (and its backward with ``backward=True``) on ``inputs``.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-add of convolutions and matrix
    products (so FLOPs = 2 x MACs); element-wise operations are not counted.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a tensor (N, C, H, W); got {type(inputs).__name__}")
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        output = model(inputs)
        if backward:
            output.float().sum().backward()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- memory

def saved_activation_bytes(function, exclude=()):
    """Bytes of the tensors autograd saves for the backward pass while ``function()`` runs (its forward pass).

    Counted by ``torch.autograd.graph.saved_tensors_hooks``: every tensor saved for backward, each memory block once
    (a ReLU's output saved by the ReLU and by the next convolution counts once; a slice counts its own bytes, not
    those of the whole tensor it views); the tensors of ``exclude`` (e.g.
    ``model.parameters()``: weights are saved too, but are not activations) are left out.

    Returns:
        ``(bytes, result of function())``.
    """
    if not callable(function):
        raise TypeError(f"function must be callable; got {type(function).__name__}")
    skip = {tensor.untyped_storage().data_ptr() for tensor in exclude}
    storages = {}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in skip:
            # a view (a slice of a larger batch, a flattened output) counts its own bytes, once per start address
            start = tensor.data_ptr()
            storages[start] = max(storages.get(start, 0), tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = function()
    return sum(storages.values()), result


def peak_memory_bytes(device="cpu"):
    """The peak memory so far: ``torch.cuda.max_memory_allocated`` on CUDA, the process's peak resident set size
    (``ru_maxrss``, which never goes down) on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on 'cpu' or 'cuda'; got {device.type!r}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def largest_batch(fits, low=1, high=4096):
    """The largest batch size ``n`` in ``[low, high]`` with ``fits(n)`` true, for a ``fits`` that is true up to a
    size and false after it (memory grows with the batch): doubling from ``low``, then bisection.

    Raises ``ValueError`` when even ``low`` does not fit.
    """
    if not callable(fits):
        raise TypeError(f"fits must be a function of the batch size; got {type(fits).__name__}")
    if not (isinstance(low, int) and isinstance(high, int)) or not 1 <= low <= high:
        raise ValueError(f"need integers 1 <= low <= high; got low={low!r}, high={high!r}")
    if not fits(low):
        raise ValueError(f"a batch of {low} does not fit the budget")
    good, bad = low, None
    while bad is None:  # double until a size fails or high is reached
        trial = min(good * 2, high)
        if trial == good:
            return good
        if fits(trial):
            good = trial
        else:
            bad = trial
    while bad - good > 1:  # fits(good) and not fits(bad)
        middle = (good + bad) // 2
        good, bad = (middle, bad) if fits(middle) else (good, middle)
    return good


def micro_batches(inputs, targets, micro_batch_size):
    """Split a batch for gradient accumulation: ``[(x, y, weight)]``, ``weight = len(x) / N`` (the share of the
    whole batch's mean loss that a micro-batch's mean loss carries; the last micro-batch may be smaller)."""
    if not isinstance(micro_batch_size, int) or isinstance(micro_batch_size, bool) or micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be an int >= 1; got {micro_batch_size!r}")
    if len(inputs) != len(targets) or len(inputs) == 0:
        raise ValueError(f"inputs and targets must hold the same number (> 0) of examples; got {len(inputs)} and "
                         f"{len(targets)}")
    total = len(inputs)
    return [(x, y, len(x) / total) for x, y in zip(inputs.split(micro_batch_size), targets.split(micro_batch_size))]


# --------------------------------------------------------------------------- deployment

def export_onnx(model, example, path):
    """Export ``model`` (in eval mode) to ONNX at ``path`` with ``torch.onnx.export(dynamo=True)``, a batch axis
    of any size; returns ``path``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if not isinstance(example, torch.Tensor) or example.dim() < 1:
        raise TypeError("example must be an input tensor with a batch axis, e.g. (N, C, H, W)")
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=True, verbose=False,
                          dynamic_shapes=({0: batch},))
    return path


def onnx_runner(path, threads=None):
    """An onnxruntime session on the CPU for the ONNX file at ``path``: a function ``(N, ...) array -> outputs``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(inputs):
        inputs = np.ascontiguousarray(inputs.numpy() if isinstance(inputs, torch.Tensor) else inputs, np.float32)
        return session.run(None, {name: inputs})[0]

    return run


class QuantisableCNN(nn.Module):
    """A small digit CNN ready for eager-mode static int8 quantisation: ``QuantStub``/``DeQuantStub`` at its ends
    (where float tensors become int8 and back) and conv + ReLU pairs that ``fuse`` merges."""

    def __init__(self, num_classes=10):
        super().__init__()
        from torch.ao import quantization

        self.quant = quantization.QuantStub()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, num_classes)
        self.dequant = quantization.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.pool1(self.relu1(self.conv1(x)))  # (N, 16, H/2, W/2)
        x = self.pool2(self.relu2(self.conv2(x)))  # (N, 32, 1, 1)
        x = self.flatten(x)  # (N, 32)
        x = self.fc(x)
        return self.dequant(x)

    FUSE = [["conv1", "relu1"], ["conv2", "relu2"]]


def quantise_static(model, calibration_batches, engine="x86"):
    """Post-training static int8 quantisation (``torch.ao.quantization``, eager mode) of a copy of ``model``.

    ``model`` must have ``quant``/``dequant`` stubs and a ``FUSE`` list of module names to fuse (``QuantisableCNN``).
    Steps: fuse conv + ReLU, insert observers (``prepare``), run ``calibration_batches`` (each (N, C, H, W)) to
    record the activations' ranges, ``convert`` to int8 modules. The ``x86`` engine (fbgemm) runs int8 on the CPU.
    """
    import copy

    from torch.ao import quantization

    if not isinstance(model, nn.Module) or not hasattr(model, "FUSE"):
        raise TypeError("model must be an nn.Module with QuantStub/DeQuantStub and a FUSE list (QuantisableCNN)")
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(f"engine must be one of {torch.backends.quantized.supported_engines}; got {engine!r}")
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.10+: eager quantisation is deprecated in favour of torchao
        quantised = copy.deepcopy(model).eval()
        quantised = quantization.fuse_modules(quantised, model.FUSE)
        quantised.qconfig = quantization.get_default_qconfig(engine)
        quantization.prepare(quantised, inplace=True)
        with torch.no_grad():
            for batch in calibration_batches:
                quantised(batch)
        quantization.convert(quantised, inplace=True)
    return quantised


# --------------------------------------------------------------------------- pruning

def prunable_weights(model):
    """``[(module, "weight")]`` of every convolution and linear layer of ``model``."""
    return [(module, "weight") for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


def prune_global(model, amount):
    """Zero the fraction ``amount`` of the smallest-magnitude weights over all conv and linear layers together
    (``torch.nn.utils.prune.global_unstructured`` with L1), made permanent (``prune.remove``); in place."""
    from torch.nn.utils import prune

    if not isinstance(amount, (int, float)) or isinstance(amount, bool) or not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be a fraction in [0, 1); got {amount!r}")
    parameters = prunable_weights(model)
    if not parameters:
        raise ValueError("the model has no Conv2d or Linear layer to prune")
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=float(amount))
    for module, name in parameters:
        prune.remove(module, name)  # the mask multiplied into the weight: a plain parameter again
    return model


def sparsity(model):
    """The fraction of conv and linear weights that are exactly zero."""
    weights = [module.weight for module, _ in prunable_weights(model)]
    if not weights:
        raise ValueError("the model has no Conv2d or Linear layer")
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)
