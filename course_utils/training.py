"""``fit`` and ``evaluate`` for image classification (introduced in ``notebooks/05_numpy_to_pytorch.ipynb``).

Chapter 05 writes the training loop out by hand; ``fit`` is the same loop with a
progress bar, a history, mixed precision on CUDA and optional live curves, so that
later chapters can train a model in one line. ``benchmarks/training_overhead.py``
measures its cost over a bare loop.

The loop per batch is the one of chapter 05::

    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()

Running totals stay on the device as tensors, so ``fit`` adds no GPU synchronisation
per batch; they are read once per epoch.
"""
import contextlib
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from course_utils.device import autocast, get_device, uses_mixed_precision


@dataclass
class History:
    """What ``fit`` measured, one entry per epoch."""

    epoch: list = field(default_factory=list)  # 1, 2, ...
    train_loss: list = field(default_factory=list)  # mean loss over the epoch's batches, weighted by batch size
    train_accuracy: list = field(default_factory=list)  # fraction of training images classified right during the epoch
    val_loss: list = field(default_factory=list)  # after the epoch, in eval mode (empty without val_loader)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)  # wall time of the epoch's training (not evaluation)
    learning_rate: list = field(default_factory=list)  # learning rate at the end of the epoch

    def last(self):
        """The final epoch's numbers as a dict."""
        if not self.epoch:
            return {}
        out = {"epoch": self.epoch[-1], "train_loss": self.train_loss[-1], "train_accuracy": self.train_accuracy[-1],
               "seconds": self.seconds[-1]}
        if self.val_loss:
            out.update(val_loss=self.val_loss[-1], val_accuracy=self.val_accuracy[-1])
        return out


def _check_loader(loader, name):
    if not isinstance(loader, torch.utils.data.DataLoader) and not hasattr(loader, "__iter__"):
        raise TypeError(f"{name} must be a DataLoader (or an iterable of (x, y) batches); got {type(loader).__name__}")


def _split_batch(batch, name):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"{name} must yield (images, labels) pairs; got a {type(batch).__name__}"
                         f"{' of length ' + str(len(batch)) if isinstance(batch, (tuple, list)) else ''}")
    return batch


def evaluate(model, loader, device=None, loss_fn=None, mixed_precision=None):
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode without gradients.

    Args:
        model: a classifier returning logits (N, classes).
        loader: yields ``(x, y)`` with x (N, ...) and integer labels y (N,).
        device: where to compute; ``get_device()`` by default.
        loss_fn: defaults to ``nn.CrossEntropyLoss()``.
        mixed_precision: autocast the forward pass; by default on for CUDA only.

    Returns:
        ``{"loss": float, "accuracy": float}``; the model's train/eval mode is restored.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    _check_loader(loader, "loader")
    device = get_device(device) if not isinstance(device, torch.device) else device
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    mixed_precision = uses_mixed_precision(device) if mixed_precision is None else mixed_precision
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    with torch.no_grad():
        for batch in loader:
            x, y = _split_batch(batch, "loader")
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device) if mixed_precision else contextlib.nullcontext():
                logits = model(x)
                loss = loss_fn(logits, y)
            total_loss += loss.float() * len(y)
            correct += (logits.argmax(dim=1) == y).sum()
            count += len(y)
    model.train(was_training)
    if count == 0:
        raise ValueError("loader yielded no examples")
    return {"loss": total_loss.item() / count, "accuracy": correct.item() / count}


def fit(model, train_loader, epochs, optimizer=None, lr=1e-3, loss_fn=None, val_loader=None, device=None,
        scheduler=None, mixed_precision=None, progress=True, live_plot=False):
    """Train a classifier; return its ``History``.

    Args:
        model: an ``nn.Module`` returning logits (N, classes); moved to ``device``.
        train_loader: yields ``(x, y)`` batches, x (N, C, H, W), y (N,) int64.
        epochs: number of passes over ``train_loader``.
        optimizer: a ``torch.optim`` optimizer over ``model``'s parameters; by default
            ``Adam(model.parameters(), lr=lr)``.
        loss_fn: defaults to ``nn.CrossEntropyLoss()``.
        val_loader: evaluated after every epoch when given.
        device: ``get_device()`` by default (CUDA, then MPS, then CPU).
        scheduler: a learning-rate scheduler stepped once per epoch.
        mixed_precision: autocast the forward pass (bfloat16/float16 with a gradient
            scaler for float16); by default on for CUDA only.
        progress: show a tqdm progress bar.
        live_plot: redraw loss and accuracy curves after every epoch (in a notebook).

    Returns:
        a ``History``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive int; got {epochs!r}")
    _check_loader(train_loader, "train_loader")
    if val_loader is not None:
        _check_loader(val_loader, "val_loader")
    device = get_device(device) if not isinstance(device, torch.device) else device
    model.to(device)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    mixed_precision = uses_mixed_precision(device) if mixed_precision is None else mixed_precision
    use_scaler = mixed_precision and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    history = History()
    plot = _LivePlot() if live_plot else None

    try:
        steps = len(train_loader)
    except TypeError:
        steps = None
    bar = tqdm(total=epochs * steps if steps else None, disable=not progress, desc="training", unit="batch")
    for epoch in range(1, epochs + 1):
        model.train()
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        count = 0
        start = time.perf_counter()
        for batch in train_loader:
            x, y = _split_batch(batch, "train_loader")
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device) if mixed_precision else contextlib.nullcontext():
                logits = model(x)
                loss = loss_fn(logits, y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            total_loss += loss.detach().float() * len(y)
            correct += (logits.detach().argmax(dim=1) == y).sum()
            count += len(y)
            bar.update(1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if scheduler is not None:
            scheduler.step()
        history.epoch.append(epoch)
        history.train_loss.append(total_loss.item() / max(count, 1))
        history.train_accuracy.append(correct.item() / max(count, 1))
        history.seconds.append(seconds)
        history.learning_rate.append(optimizer.param_groups[0]["lr"])
        postfix = {"loss": f"{history.train_loss[-1]:.3f}", "acc": f"{history.train_accuracy[-1]:.3f}"}
        if val_loader is not None:
            result = evaluate(model, val_loader, device=device, loss_fn=loss_fn, mixed_precision=mixed_precision)
            history.val_loss.append(result["loss"])
            history.val_accuracy.append(result["accuracy"])
            postfix.update(val_acc=f"{result['accuracy']:.3f}")
        bar.set_postfix(postfix, refresh=False)
        if plot is not None:
            plot.update(history)
    bar.close()
    if plot is not None:
        plot.close()
    return history


class _LivePlot:
    """Loss and accuracy curves redrawn in place in a notebook output."""

    def __init__(self):
        from IPython.display import display

        self.handle = display(None, display_id=True)

    def update(self, history):
        import matplotlib.pyplot as plt

        from course_utils.plots import plot_history

        figure = plot_history(history)
        if self.handle is not None:
            self.handle.update(figure)
        plt.close(figure)

    def close(self):
        pass
