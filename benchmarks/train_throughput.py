"""Training throughput: images per second and peak memory of ResNet-18/50 and a small ViT, eager vs AMP vs
channels_last vs torch.compile, on whatever device is present.

    python benchmarks/train_throughput.py [--models resnet18 resnet50 vit_small] [--modes eager amp ...]
        [--batch-size 32] [--image-size 224] [--steps 20] [--warmup 5] [--device auto] [--json out.json]

    # a small configuration for a CPU (about a minute per model and mode on two cores):
    python benchmarks/train_throughput.py --models resnet18 --modes eager amp channels_last \\
        --image-size 64 --batch-size 8 --steps 3 --warmup 1

One training step is what the course's loops do: forward, cross-entropy, backward, an SGD
step (momentum 0.9), on random images and labels (10 classes) made once on the device. The
models are torchvision's ``resnet18`` and ``resnet50`` (``weights=None``) and a small
``VisionTransformer`` (4 layers, 4 heads, width 192, MLP 768; patches of 16 pixels for images
of 128 pixels or more, else 8). The modes:

* ``eager``: float32, NCHW;
* ``amp``: automatic mixed precision, ``torch.autocast``: float16 with a
  ``torch.amp.GradScaler`` on CUDA (float16 gradients can underflow; the scaler multiplies
  the loss and skips steps whose gradients overflow), bfloat16 on the CPU and MPS (no scaler:
  bfloat16 has float32's exponent range);
* ``amp_bf16``: bfloat16 autocast everywhere (on the CPU the same as ``amp``);
* ``channels_last``: float32, model and images in ``torch.channels_last`` memory format
  (NHWC in memory, the layout cuDNN's and oneDNN's fastest convolutions use);
* ``compile``: float32, the model through ``torch.compile`` (TorchInductor); the first step
  compiles forward and backward, so its time is reported apart (``compile s``, the first
  step's wall time) and the warm-up steps follow it.

Each (model, mode) gets a fresh model with the same seed, ``--warmup`` untimed steps (cuDNN
autotuning, allocator growth), then ``--steps`` timed steps; on CUDA the device is
synchronised before the clock starts and after the last step. Peak memory is, on CUDA,
``torch.cuda.max_memory_allocated`` over the timed steps (weights, gradients, momentum and
activations); elsewhere there is no per-process allocator counter to read, so the table
reports the bytes of the distinct tensors autograd saves for the backward pass during one
step (the activations, parameters excluded, counted by ``torch.autograd.graph.saved_tensors_hooks``):
the part of training memory that grows with the batch; under ``compile`` they are the
tensors the compiled graph saves, usually fewer. The table header says which.

Nothing is written unless ``--json PATH`` is given. The functions are importable
(``tests/test_train_throughput.py`` runs them tiny on the CPU).
"""
import argparse
import json
import os
import platform
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
import torchvision

MODELS = ("resnet18", "resnet50", "vit_small")
MODES = ("eager", "amp", "amp_bf16", "channels_last", "compile")
NUM_CLASSES = 10


# --------------------------------------------------------------------------- models and settings

def build_model(name, image_size, num_classes=NUM_CLASSES):
    """A torchvision model, randomly initialised (``weights=None``: nothing downloads).

    Args:
        name: one of ``MODELS``.
        image_size: side of the square input images (the ViT's position embedding depends on it).
        num_classes: outputs of the classifier.
    """
    if name == "resnet18":
        return torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if name == "resnet50":
        return torchvision.models.resnet50(weights=None, num_classes=num_classes)
    if name == "vit_small":
        patch_size = 16 if image_size >= 128 else 8
        if image_size % patch_size:
            raise ValueError(f"vit_small needs an image size divisible by its patch size {patch_size}; "
                             f"got {image_size}")
        return torchvision.models.VisionTransformer(
            image_size=image_size, patch_size=patch_size, num_layers=4, num_heads=4,
            hidden_dim=192, mlp_dim=768, num_classes=num_classes,
        )
    raise ValueError(f"model must be one of {MODELS}; got {name!r}")


def resolve_device(name):
    """``"auto"``: CUDA, else MPS, else the CPU; otherwise the named device (which must exist)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here")
    return device


def precision(mode, device):
    """(autocast dtype or None, whether a GradScaler is needed) for ``mode`` on ``device``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if mode == "amp":
        if device.type == "cuda":
            return torch.float16, True
        return torch.bfloat16, False
    if mode == "amp_bf16":
        return torch.bfloat16, False
    return None, False


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# --------------------------------------------------------------------------- one training step

def make_step(model, optimizer, device, autocast_dtype=None, scaler=None):
    """The training step: forward, cross-entropy, backward, optimizer step; returns ``step(x, y) -> loss``."""

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        mixed = torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        with mixed:
            logits = model(images)  # (N, num_classes)
            loss = F.cross_entropy(logits, labels)
        if scaler is not None:
            scaler.scale(loss).backward()  # the scaled loss keeps float16 gradients above underflow
            scaler.step(optimizer)  # unscales; skips the step if a gradient is inf or NaN
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss

    return step


def saved_tensor_bytes(step, images, labels, model):
    """Bytes of the distinct tensors autograd saves for backward during one ``step``, parameters excluded."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in parameters:
            seen[pointer] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step(images, labels)
    return sum(seen.values())


def measure(model_name, mode, batch_size=8, image_size=64, steps=3, warmup=1, device="cpu", seed=0):
    """Train ``model_name`` in ``mode`` for ``warmup`` + ``steps`` steps; return one result row.

    Args:
        model_name: one of ``MODELS``; mode: one of ``MODES``.
        batch_size, image_size: the random batch is (batch_size, 3, image_size, image_size).
        steps: timed steps (>= 1); warmup: untimed steps first (>= 0; ``compile`` adds its
            compiling step before them).
        device: a ``torch.device`` or a name for ``resolve_device``.

    Returns:
        dict with model, mode, device, batch_size, image_size, steps, warmup,
        ``images_per_s``, ``step_ms``, ``peak_memory_mib`` and ``memory_kind`` (what was
        measured), ``compile_s`` (None unless mode is ``compile``), ``loss`` (the last step's).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1; got {steps!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0; got {warmup!r}")
    device = resolve_device(device) if isinstance(device, str) else device
    autocast_dtype, needs_scaler = precision(mode, device)

    torch.manual_seed(seed)
    model = build_model(model_name, image_size).to(device).train()
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)  # (N, 3, H, W)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)  # (N,)
    if mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)  # (N, 3, H, W), NHWC in memory
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type) if needs_scaler else None
    eager_step = make_step(model, optimizer, device, autocast_dtype, scaler)

    memory_kind = "cuda_max_allocated" if device.type == "cuda" else "saved_for_backward"
    saved_bytes = None
    compile_s = None
    if mode == "compile":
        if hasattr(torch, "_dynamo"):
            torch._dynamo.reset()  # each model compiles afresh, within dynamo's recompilation limits
        step = make_step(torch.compile(model), optimizer, device, autocast_dtype, scaler)
        _synchronize(device)
        start = time.perf_counter()
        step(images, labels)  # compiles the forward and backward graphs
        _synchronize(device)
        compile_s = time.perf_counter() - start
    else:
        step = eager_step

    for _ in range(warmup):
        step(images, labels)
    if saved_bytes is None and device.type != "cuda":
        saved_bytes = saved_tensor_bytes(step, images, labels, model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(images, labels)
    _synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else saved_bytes
    return {
        "model": model_name, "mode": mode, "device": str(device), "batch_size": batch_size,
        "image_size": image_size, "steps": steps, "warmup": warmup,
        "images_per_s": batch_size * steps / seconds, "step_ms": 1e3 * seconds / steps,
        "peak_memory_mib": peak / 2**20, "memory_kind": memory_kind,
        "compile_s": compile_s, "loss": float(loss.detach()),
    }


# --------------------------------------------------------------------------- the table

def add_speedups(rows):
    """Set each row's ``speedup_vs_eager`` (its images/s over its model's eager row; None without one)."""
    eager = {row["model"]: row["images_per_s"] for row in rows if row["mode"] == "eager"}
    for row in rows:
        base = eager.get(row["model"])
        row["speedup_vs_eager"] = row["images_per_s"] / base if base else None
    return rows


def format_table(rows):
    """A Markdown table: model, mode, images/s, speed-up vs eager, peak memory (the header says which), compile s."""
    kinds = sorted({row["memory_kind"] for row in rows})
    memory = {"cuda_max_allocated": "peak MiB (torch.cuda.max_memory_allocated)",
              "saved_for_backward": "MiB saved for backward (activations)"}
    header = " / ".join(memory.get(kind, kind) for kind in kinds)
    lines = [f"| model | mode | images/s | vs eager | {header} | compile s |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        speedup = f"{row['speedup_vs_eager']:.2f}x" if row.get("speedup_vs_eager") else "-"
        compile_s = f"{row['compile_s']:.1f}" if row["compile_s"] is not None else "-"
        lines.append(f"| {row['model']} | {row['mode']} | {row['images_per_s']:.1f} | {speedup} "
                     f"| {row['peak_memory_mib']:.1f} | {compile_s} |")
    return "\n".join(lines)


def describe(device):
    """One line: torch version, device name, threads."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    return f"torch {torch.__version__}, device {device} ({where}), {torch.get_num_threads()} CPU threads"


def run(models, modes, batch_size, image_size, steps, warmup, device):
    """``measure`` every (model, mode) in order; return the rows with their speed-ups."""
    rows = [measure(model, mode, batch_size, image_size, steps, warmup, device) for model in models for mode in modes]
    return add_speedups(rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model and mode")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1, mps")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    rows = run(args.models, args.modes, args.batch_size, args.image_size, args.steps, args.warmup, device)
    print(f"{describe(device)}; batch {args.batch_size}, images {args.image_size}x{args.image_size}, "
          f"{args.warmup} warm-up then {args.steps} timed steps per row")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": describe(device), "rows": rows}, handle, indent=2)
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
