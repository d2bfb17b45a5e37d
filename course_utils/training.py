"""``fit``, ``evaluate`` and ``predict`` for image classification (introduced in
``notebooks/05_numpy_to_pytorch.ipynb``).

Chapter 05 writes the training loop out by hand; ``fit`` is the same loop with a
progress bar, a history, mixed precision on CUDA and optional live curves, so that
later chapters can train a model in one line. ``evaluate`` and ``predict`` run a
model over a loader in eval mode and put every submodule's train/eval mode back
afterwards, even when the loop is interrupted. ``benchmarks/training_overhead.py``
measures what ``fit`` costs over a bare loop.

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

from course_utils.device import autocast, get_device, mixed_precision_dtype


@dataclass
class History:
    """What ``fit`` measured, one entry per epoch."""

    epoch: list = field(default_factory=list)  # 1, 2, ...
    train_loss: list = field(default_factory=list)  # mean loss over the epoch's batches, weighted by batch size
    train_accuracy: list = field(default_factory=list)  # fraction of training images classified right during the epoch
    val_loss: list = field(default_factory=list)  # after the epoch, in eval mode (empty without val_loader)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)  # wall time of the epoch's training (not evaluation)
    # the rate the optimiser trained with during the epoch: learning_rate[i] is epoch i + 1's
    # optimizer.param_groups[0]["lr"], read before scheduler.step() sets the next epoch's
    learning_rate: list = field(default_factory=list)

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


def _split_inputs(batch, name):
    """The images of a batch that is an image tensor, ``(images,)`` or an ``(images, labels)`` pair."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2) and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ValueError(f"{name} must yield image tensors, (images,) or (images, labels) pairs; "
                     f"got a {type(batch).__name__}"
                     f"{' of length ' + str(len(batch)) if isinstance(batch, (tuple, list)) else ''}")


@contextlib.contextmanager
def _eval_mode(model):
    """Put ``model`` in eval mode, then give every submodule back its own train/eval mode, whatever happens."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.train(training)


def _resolve_device(device):
    return get_device(device) if not isinstance(device, torch.device) else device


def evaluate(model, loader, device=None, loss_fn=None, mixed_precision=None):
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode without gradients.

    Args:
        model: a classifier returning logits (N, classes); moved to ``device``.
        loader: yields ``(x, y)`` with x (N, ...) and integer labels y (N,).
        device: where to compute; ``get_device()`` by default.
        loss_fn: defaults to ``nn.CrossEntropyLoss()``.
        mixed_precision: autocast the forward pass (``course_utils.device.autocast``);
            by default on for CUDA only; ``True`` on the CPU uses bfloat16.

    Returns:
        ``{"loss": float, "accuracy": float}``, totalled in float32. Every submodule's
        train/eval mode is restored, also when the loader or the model raises.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    _check_loader(loader, "loader")
    device = _resolve_device(device)
    model.to(device)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    use_autocast = mixed_precision_dtype(device, mixed_precision) is not None  # warns once where it cannot
    total_loss = torch.zeros((), device=device)  # float32 whatever autocast computes in
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    with _eval_mode(model), torch.no_grad():
        for batch in loader:
            x, y = _split_batch(batch, "loader")
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, enabled=use_autocast):
                logits = model(x)
                loss = loss_fn(logits, y)
            total_loss += loss.float() * len(y)
            correct += (logits.argmax(dim=1) == y).sum()
            count += len(y)
    if count == 0:
        raise ValueError("loader yielded no examples")
    return {"loss": total_loss.item() / count, "accuracy": correct.item() / count}


def predict(model, loader, device=None, mixed_precision=None):
    """The outputs of ``model`` over ``loader``, concatenated, in eval mode without gradients.

    Args:
        model: an ``nn.Module`` returning a tensor (N, ...) per batch, e.g. logits
            (N, classes); moved to ``device``.
        loader: yields image tensors x (N, ...), ``(x, y)`` pairs (y is ignored) or
            ``(x,)`` (the batches of a ``TensorDataset(x)``).
        device: where to compute; ``get_device()`` by default.
        mixed_precision: autocast the forward pass, as in ``evaluate``.

    Returns:
        one float32 tensor on the CPU, (total N, ...): the batches' outputs in the
        loader's order. Every submodule's train/eval mode is restored afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    _check_loader(loader, "loader")
    device = _resolve_device(device)
    model.to(device)
    use_autocast = mixed_precision_dtype(device, mixed_precision) is not None
    outputs = []
    with _eval_mode(model), torch.no_grad():
        for batch in loader:
            x = _split_inputs(batch, "loader").to(device, non_blocking=True)
            with autocast(device, enabled=use_autocast):
                out = model(x)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"model must return a tensor per batch; got {type(out).__name__}")
            outputs.append(out.float().cpu())
    if not outputs:
        raise ValueError("loader yielded no batches")
    return torch.cat(outputs)


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
        scheduler: a learning-rate scheduler stepped once per epoch, after the
            epoch's rate is recorded in ``history.learning_rate``.
        mixed_precision: autocast the forward pass (``course_utils.device.autocast``:
            bfloat16/float16 on CUDA, with a gradient scaler for float16; bfloat16 on
            the CPU; float32 with a warning on MPS); by default on for CUDA only.
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
    device = _resolve_device(device)
    model.to(device)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    precision = mixed_precision_dtype(device, mixed_precision)  # None: float32
    use_autocast = precision is not None
    # float16 gradients can underflow to zero; bfloat16 has float32's exponent range and needs no scaler
    scaler = torch.amp.GradScaler("cuda") if precision == torch.float16 and device.type == "cuda" else None
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
        learning_rate = optimizer.param_groups[0]["lr"]  # the rate this epoch trains with
        start = time.perf_counter()
        for batch in train_loader:
            x, y = _split_batch(batch, "train_loader")
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, enabled=use_autocast):
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
        history.learning_rate.append(learning_rate)
        postfix = {"loss": f"{history.train_loss[-1]:.3f}", "acc": f"{history.train_accuracy[-1]:.3f}"}
        if val_loader is not None:
            result = evaluate(model, val_loader, device=device, loss_fn=loss_fn, mixed_precision=use_autocast)
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
