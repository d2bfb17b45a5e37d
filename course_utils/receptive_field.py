"""Receptive field, jump and output size of a stack of conv/pool layers (introduced in ``notebooks/02_pooling.ipynb``).

For one spatial axis, a layer with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d``
spans ``k_eff = d (k - 1) + 1`` input positions. Going from the layer's input to its output
(Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019;
Dumoulin & Visin, "A guide to convolution arithmetic", 2016):

    output size    n_out = floor((n_in + 2 p - k_eff) / s) + 1
    jump           j_out = j_in * s                      (input pixels between neighbouring units)
    receptive field r_out = r_in + (k_eff - 1) * j_in    (input pixels one unit sees, padding included)
    centre          c_out = c_in + ((k_eff - 1) / 2 - p) * j_in

starting from the input itself: ``n = input_size, j = 1, r = 1, c = 0``. Coordinates are pixel
indices, so ``c`` is the centre, in input pixels, of the receptive field of the first output unit;
unit ``i`` of a layer is centred at ``c + i * j`` and sees input pixels
``c + i * j - (r - 1) / 2`` to ``c + i * j + (r - 1) / 2`` (possibly beyond the border, in the padding).

The receptive field is a span: with a stride larger than the next kernel, or with dilation,
some pixels inside it are not connected to the unit at all.
"""
import numbers
from dataclasses import asdict, dataclass

__all__ = ["Layer", "ReceptiveFieldRow", "receptive_field", "layers_from_module", "format_table", "input_span"]

KINDS = ("conv", "maxpool", "avgpool")


@dataclass(frozen=True)
class Layer:
    """One conv or pooling layer, the same along H and W."""

    kind: str  # "conv", "maxpool" or "avgpool"
    kernel: int  # kernel size k
    stride: int = 1  # stride s
    padding: int = 0  # zero (or -inf) padding p on each side
    dilation: int = 1  # dilation d; the kernel spans d (k - 1) + 1 pixels
    name: str = ""  # a label for the table, e.g. "conv1"


@dataclass(frozen=True)
class ReceptiveFieldRow:
    """What one layer's output units see of the network's input (along one axis)."""

    name: str  # the layer's label
    layer: Layer  # the layer itself
    output_size: int  # units along the axis after this layer
    jump: int  # input pixels between the centres of neighbouring units
    receptive_field: int  # input pixels one unit sees, padding included
    start: float  # centre, in input pixel coordinates, of the first unit's receptive field

    def as_dict(self):
        row = asdict(self)
        row.pop("layer")
        return row


def _int(value, name, minimum, where):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int; got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be at least {minimum}; got {value}")
    return int(value)


def _as_layer(spec, index):
    """A ``Layer`` from a ``Layer`` or a dict with the same keys; raise a clear error otherwise."""
    where = f"layer {index}"
    if isinstance(spec, Layer):
        fields = asdict(spec)
    elif isinstance(spec, dict):
        unknown = set(spec) - {"kind", "kernel", "stride", "padding", "dilation", "name"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; use kind, kernel, stride, padding, dilation, name")
        if "kernel" not in spec:
            raise ValueError(f"{where}: 'kernel' is missing from {spec!r}")
        fields = {"kind": "conv", "stride": 1, "padding": 0, "dilation": 1, "name": "", **spec}
    else:
        raise TypeError(f"{where} must be a Layer or a dict such as {{'kind': 'conv', 'kernel': 3}}; got {spec!r}")
    if fields["kind"] not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}; got {fields['kind']!r}")
    fields["kernel"] = _int(fields["kernel"], "kernel", 1, where)
    fields["stride"] = _int(fields["stride"], "stride", 1, where)
    fields["padding"] = _int(fields["padding"], "padding", 0, where)
    fields["dilation"] = _int(fields["dilation"], "dilation", 1, where)
    if not fields["name"]:
        fields["name"] = f"{fields['kind']}{index + 1}"
    return Layer(**fields)


def receptive_field(layers, input_size):
    """Output size, jump, receptive field and first-unit centre after each layer of a stack.

    Args:
        layers: a list of ``Layer``s or dicts with keys ``kind`` ("conv" by default, "maxpool",
            "avgpool"), ``kernel``, ``stride`` (1), ``padding`` (0), ``dilation`` (1) and
            ``name`` (optional); or an ``nn.Module`` accepted by ``layers_from_module``.
        input_size: the input's height (or width), an int >= 1.

    Returns:
        a list with one ``ReceptiveFieldRow`` per layer (formulas in the module docstring).

    Raises:
        ValueError: a layer's window no longer fits (output size below 1), naming the layer.
    """
    if hasattr(layers, "named_modules"):  # an nn.Module
        layers = layers_from_module(layers)
    if isinstance(layers, (str, bytes, dict)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be a list of Layers or dicts, or an nn.Sequential; got {type(layers).__name__}")
    size = _int(input_size, "input_size", 1, "receptive_field")
    jump, field, start = 1, 1, 0.0
    rows = []
    for index, spec in enumerate(layers):
        layer = _as_layer(spec, index)
        span = layer.dilation * (layer.kernel - 1) + 1  # k_eff
        out_size = (size + 2 * layer.padding - span) // layer.stride + 1
        if out_size < 1:
            raise ValueError(
                f"layer {index} ({layer.name}): a window of {span} pixels with padding {layer.padding} does not fit "
                f"an input of size {size}"
            )
        start = start + ((span - 1) / 2 - layer.padding) * jump  # uses the jump *before* this layer
        field = field + (span - 1) * jump
        jump = jump * layer.stride
        size = out_size
        rows.append(ReceptiveFieldRow(layer.name, layer, size, jump, field, start))
    return rows


def input_span(row, index=0):
    """Input pixel coordinates ``(first, last)`` that unit ``index`` of ``row``'s layer sees (may be < 0)."""
    centre = row.start + index * row.jump
    half = (row.receptive_field - 1) / 2
    return centre - half, centre + half


def format_table(rows, input_size=None):
    """The rows as a text table, one line per layer (and one for the input when ``input_size`` is given)."""
    header = f"{'layer':<12} {'k':>3} {'s':>3} {'p':>3} {'d':>3} {'size':>6} {'jump':>6} {'RF':>6} {'start':>7}"
    lines = [header, "-" * len(header)]
    if input_size is not None:
        lines.append(f"{'input':<12} {'':>3} {'':>3} {'':>3} {'':>3} {input_size:>6} {1:>6} {1:>6} {0.0:>7.1f}")
    for row in rows:
        L = row.layer
        lines.append(
            f"{row.name:<12} {L.kernel:>3} {L.stride:>3} {L.padding:>3} {L.dilation:>3} "
            f"{row.output_size:>6} {row.jump:>6} {row.receptive_field:>6} {row.start:>7.1f}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- from PyTorch modules

def _square(value, name, module):
    """One int from an int or a square pair; raise for a rectangular one."""
    if isinstance(value, int):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise ValueError(f"{module}: {name}={value!r} differs along H and W; this helper handles square layers only")


def layers_from_module(module):
    """The ``Layer``s of an ``nn.Sequential`` (nested ones too) of Conv2d/MaxPool2d/AvgPool2d.

    Element-wise modules (activations, BatchNorm2d, Dropout, Identity) do not change the
    geometry and are skipped. Anything else (Linear, Flatten, adaptive pooling, ``ceil_mode``)
    raises a ``TypeError``/``ValueError`` naming the module.
    """
    from torch import nn

    pointwise = (
        nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
        nn.BatchNorm2d, nn.GroupNorm, nn.Dropout, nn.Dropout2d, nn.Identity,
    )
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"expected an nn.Sequential; got {type(module).__name__}")
    layers = []
    for name, child in module.named_children():
        label = f"{type(child).__name__}[{name}]"
        if isinstance(child, nn.Sequential):
            layers += layers_from_module(child)
        elif isinstance(child, pointwise):
            continue
        elif isinstance(child, nn.Conv2d):
            padding = child.padding
            if padding == "valid":
                padding = 0
            elif padding == "same":
                total = child.dilation[0] * (child.kernel_size[0] - 1)
                if total % 2 or child.kernel_size[0] != child.kernel_size[1]:
                    raise ValueError(f"{label}: padding='same' with an even span pads unevenly; give padding as an int")
                padding = total // 2
            layers.append(Layer(
                "conv",
                _square(child.kernel_size, "kernel_size", label),
                _square(child.stride, "stride", label),
                _square(padding, "padding", label),
                _square(child.dilation, "dilation", label),
                name=f"conv[{name}]",
            ))
        elif isinstance(child, (nn.MaxPool2d, nn.AvgPool2d)):
            if child.ceil_mode:
                raise ValueError(f"{label}: ceil_mode=True is not handled; the output size formula uses floor")
            kind = "maxpool" if isinstance(child, nn.MaxPool2d) else "avgpool"
            stride = child.stride if child.stride is not None else child.kernel_size
            layers.append(Layer(
                kind,
                _square(child.kernel_size, "kernel_size", label),
                _square(stride, "stride", label),
                _square(child.padding, "padding", label),
                _square(getattr(child, "dilation", 1), "dilation", label),
                name=f"{kind}[{name}]",
            ))
        else:
            raise TypeError(
                f"{label}: only Conv2d, MaxPool2d, AvgPool2d, nested nn.Sequential and element-wise modules "
                "have a receptive field here"
            )
    return layers
