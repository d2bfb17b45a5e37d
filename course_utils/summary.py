"""A per-layer table of a model: output shape, parameters and multiply-accumulates.

Introduced in ``notebooks/05_numpy_to_pytorch.ipynb`` and used by every architecture chapter.
MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), which counts
convolutions and matrix multiplies (addmm, mm, bmm, ...), the operations that dominate a CNN;
element-wise work (ReLU, batch norm, pooling) is not counted, as in the papers' figures.
"""
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerRow:
    name: str  # the module's path in the model, e.g. "features.0"
    kind: str  # the module's class, e.g. "Conv2d"
    output_shape: tuple  # shape of the (first) output of its (first) call
    parameters: int  # parameters registered directly on this module
    macs: int  # multiply-accumulates done by this module's own operations


@dataclass
class ModelSummary:
    rows: list = field(default_factory=list)
    total_parameters: int = 0  # every parameter of the model, counted once
    trainable_parameters: int = 0
    total_macs: int = 0  # every MAC of one forward pass, including those outside leaf modules
    input_shape: tuple = ()

    def table(self):
        """The summary as aligned text, one row per leaf module, with totals."""
        header = ("layer", "type", "output shape", "parameters", "MACs")
        lines = [(r.name, r.kind, str(tuple(r.output_shape)), f"{r.parameters:,}", f"{r.macs:,}") for r in self.rows]
        widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
        fmt = "  ".join(f"{{:{'>' if i >= 3 else '<'}{w}}}" for i, w in enumerate(widths))
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        out = [fmt.format(*header), rule] + [fmt.format(*line) for line in lines] + [rule]
        out.append(f"input {tuple(self.input_shape)}: {self.total_parameters:,} parameters "
                   f"({self.trainable_parameters:,} trainable), {self.total_macs:,} MACs")
        return "\n".join(out)

    def __str__(self):
        return self.table()

    def _repr_pretty_(self, printer, cycle):  # so a notebook shows the table
        printer.text(self.table())


def _shape_of(output):
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return tuple(output[0].shape)
    if hasattr(output, "logits"):  # e.g. GoogLeNetOutputs
        return tuple(output.logits.shape)
    return ()


def model_summary(model, input_size=None, example_input=None, device="cpu"):
    """Run one forward pass of ``model`` and tabulate each leaf module.

    Args:
        model: an ``nn.Module``. It is put in eval mode for the pass and restored after.
        input_size: the input's shape, batch included, e.g. ``(1, 3, 224, 224)``; or
        example_input: a tensor to use instead (e.g. integer tokens).
        device: where to run the pass.

    Returns:
        a ``ModelSummary``; ``print(summary)`` shows the table.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if (input_size is None) == (example_input is None):
        raise ValueError("give exactly one of input_size (a shape such as (1, 3, 32, 32)) or example_input (a tensor)")
    if example_input is None:
        if not all(isinstance(s, int) and s > 0 for s in input_size) or len(input_size) < 2:
            raise ValueError(f"input_size must be a shape of positive ints with the batch first; got {input_size!r}")
        example_input = torch.randn(*input_size)
    first_parameter = next(model.parameters(), None)
    original_device = first_parameter.device if first_parameter is not None else torch.device("cpu")
    model.to(device)
    example_input = example_input.to(device)

    root = type(model).__name__
    leaves = [(name, module) for name, module in model.named_modules() if not list(module.children())]
    shapes, hooks = {}, []
    for name, module in leaves:
        def remember(module, inputs, output, name=name):
            shapes.setdefault(name, _shape_of(output))
        hooks.append(module.register_forward_hook(remember))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
        model.to(original_device)
    counts = counter.get_flop_counts()

    summary = ModelSummary(input_shape=tuple(example_input.shape))
    for name, module in leaves:
        if name not in shapes:
            continue  # registered but not called in forward (e.g. an unused auxiliary head)
        flops = sum(counts.get(f"{root}.{name}", {}).values())
        own_parameters = sum(p.numel() for p in module.parameters(recurse=False))
        summary.rows.append(LayerRow(name, type(module).__name__, shapes[name], own_parameters, int(flops // 2)))
    summary.total_parameters = sum(p.numel() for p in model.parameters())
    summary.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary.total_macs = int(sum(counts.get("Global", {}).values()) // 2)
    return summary
