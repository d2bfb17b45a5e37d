"""Interactive explorers for the lectures: chapters 01 (convolution geometry), 02 (receptive field), 03 (activations).

Chapter 01 (``notebooks/01_convolution.ipynb``):

``conv_explorer()`` shows the geometry of a convolution along one axis, applied to a
square input: sliders for the input size n, kernel size k, stride s, padding p and
dilation d; the output size with the formula filled in; and which input pixels an
output position reads. The logic lives in pure functions, testable without a browser:

* ``conv_geometry(n, k, stride, padding, dilation)`` -> ``ConvGeometry`` (output size,
  formula text, the input indices of every window, the rows the floor drops);
* ``describe_geometry(geometry)`` -> the summary as HTML;
* ``plot_conv_geometry(geometry, (i, j))`` -> a matplotlib figure of the padded input
  with the window of output (i, j), and of the output.

Output-size formula (one axis): ``floor((n + 2p - d(k - 1) - 1) / s) + 1``.

Chapter 02 (``notebooks/02_pooling.ipynb``): ``receptive_field_explorer()``, a stack of up to four layers (a preset
or sliders for each layer's kernel, stride and dilation), its receptive field, jump and output size per layer
(``course_utils.receptive_field``) and the input pixels one output unit sees, by the number of paths that reach
them. Pure parts: ``receptive_field_view(layers, input_size, unit)`` and ``plot_receptive_field(view)``.

Chapter 03 (``notebooks/03_activations_normalization.ipynb``): ``activation_explorer()``, an activation (ReLU,
LeakyReLU, ELU, GELU, SiLU, sigmoid, tanh) with its parameter, plotted with its derivative by torch autograd, and
the value and derivative at a chosen x. Pure parts: ``activation_view(name, parameter, at)`` and
``plot_activation(view)``.

Each explorer returns an ipywidgets box whose ``controls`` (or ``sliders``), ``summary`` and, for the later ones,
``view`` give tests access to its parts; ``tests/test_browser.py`` moves them in a real browser.
"""
import html
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from course_utils.numpy_nn.conv import conv_output_size


@dataclass(frozen=True)
class ConvGeometry:
    """The geometry of a convolution along one axis (the same for both axes of a square input)."""

    n: int  # input length
    k: int  # kernel length (taps)
    stride: int
    padding: int  # zeros on each side
    dilation: int
    span: int  # inputs one dilated kernel covers: dilation * (k - 1) + 1
    output_size: int  # floor((n + 2p - span) / s) + 1
    formula: str  # the formula with the numbers filled in, ending in "= output_size"
    windows: Tuple[Tuple[int, ...], ...]  # windows[i]: input indices read by output i (< 0 or >= n: padding)
    dropped: Tuple[int, ...]  # real input indices after the last window, which the floor drops
    unused: Tuple[int, ...]  # real input indices no window reads (the dropped ones and stride/dilation gaps)


def conv_geometry(n, k, stride=1, padding=0, dilation=1):
    """The geometry of a convolution along one axis.

    Args:
        n: input length, an int >= 1.
        k: kernel length, an int >= 1.
        stride, padding, dilation: ints, >= 1, >= 0 and >= 1.

    Returns:
        a ``ConvGeometry``; indices count real inputs from 0, so padding sits at
        -p..-1 and n..n+p-1.

    Raises:
        TypeError, ValueError: as ``conv_output_size`` (for instance when the dilated
            kernel is larger than the padded input).
    """
    output_size = conv_output_size(n, k, stride, padding, dilation)
    span = dilation * (k - 1) + 1
    numerator = n + 2 * padding - span
    formula = (
        f"⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1 = "
        f"⌊({n} + 2·{padding} − {dilation}·({k} − 1) − 1) / {stride}⌋ + 1 = "
        f"⌊{numerator} / {stride}⌋ + 1 = {numerator // stride} + 1 = {output_size}"
    )
    windows = tuple(
        tuple(-padding + i * stride + u * dilation for u in range(k))  # tap u of window i
        for i in range(output_size)
    )
    last_read = windows[-1][-1]
    dropped = tuple(range(max(last_read + 1, 0), n))
    read = {index for window in windows for index in window}
    unused = tuple(index for index in range(n) if index not in read)
    return ConvGeometry(n, k, stride, padding, dilation, span, output_size, formula, windows, dropped, unused)


def describe_geometry(geometry):
    """An HTML summary: output size, formula, the windows and what the floor drops."""
    g = geometry
    shown = ", ".join(f"{i}: {list(window)}" for i, window in enumerate(g.windows[:8]))
    more = f", … ({g.output_size - 8} more)" if g.output_size > 8 else ""
    if g.dropped:
        drop = (f"the floor drops input rows/columns {list(g.dropped)}: the window that would read them "
                f"does not fit entirely.")
    else:
        drop = "the floor drops no input row or column."
    unused_gaps = [i for i in g.unused if i not in g.dropped]
    gaps = (f" Rows/columns {unused_gaps} fall between windows or taps and are never read."
            if unused_gaps else "")
    lines = [
        f"<b>input {g.n}×{g.n}, kernel {g.k}×{g.k}, stride {g.stride}, padding {g.padding}, "
        f"dilation {g.dilation} → output {g.output_size}×{g.output_size}</b>",
        f"<code>{html.escape(g.formula)}</code>",
        f"one dilated kernel spans {g.span} inputs; rows read by each output row (negative or ≥ {g.n} "
        f"is padding): {html.escape(shown)}{more}",
        html.escape(drop + gaps),
    ]
    return "<br>".join(lines)


def plot_conv_geometry(geometry, output_index=(0, 0), figsize=(6.4, 3.2)):
    """Draw the padded input and the output; highlight output ``(i, j)`` and the pixels it reads.

    Grey cells are padding, blue cells the taps of window (i, j), the blue frame its
    span, red hatched rows and columns the ones the floor drops.

    Returns:
        the matplotlib ``Figure`` (two axes: padded input, output).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    g = geometry
    i, j = output_index
    if not (0 <= i < g.output_size and 0 <= j < g.output_size):
        raise ValueError(f"output_index must lie in [0, {g.output_size}) on both axes; got {output_index}")
    size = g.n + 2 * g.padding  # padded input, positions -p .. n+p-1 drawn at 0 .. size-1
    fig, (ax_in, ax_out) = plt.subplots(
        1, 2, figsize=figsize, gridspec_kw={"width_ratios": [size, max(g.output_size, 3)]}
    )
    for row in range(size):
        for col in range(size):
            padding = not (g.padding <= row < g.padding + g.n and g.padding <= col < g.padding + g.n)
            ax_in.add_patch(Rectangle((col, row), 1, 1, facecolor="0.8" if padding else "white",
                                      edgecolor="0.6", linewidth=0.5))
    for index in g.dropped:  # a dropped row and a dropped column, hatched
        position = index + g.padding
        ax_in.add_patch(Rectangle((0, position), size, 1, fill=False, hatch="///", edgecolor="tab:red", linewidth=0))
        ax_in.add_patch(Rectangle((position, 0), 1, size, fill=False, hatch="///", edgecolor="tab:red", linewidth=0))
    for row in g.windows[i]:
        for col in g.windows[j]:
            ax_in.add_patch(Rectangle((col + g.padding, row + g.padding), 1, 1, facecolor="tab:blue", alpha=0.7))
    top, left = g.windows[i][0] + g.padding, g.windows[j][0] + g.padding
    ax_in.add_patch(Rectangle((left, top), g.span, g.span, fill=False, edgecolor="tab:blue", linewidth=2))
    ax_in.set_title(f"padded input {size}×{size} (grey: padding)", fontsize=9)
    for row in range(g.output_size):
        for col in range(g.output_size):
            chosen = (row, col) == (i, j)
            ax_out.add_patch(Rectangle((col, row), 1, 1, facecolor="tab:blue" if chosen else "white",
                                       alpha=0.7 if chosen else 1.0, edgecolor="0.6", linewidth=0.5))
    ax_out.set_title(f"output {g.output_size}×{g.output_size}, ({i}, {j})", fontsize=9)
    for ax, extent in ((ax_in, size), (ax_out, g.output_size)):
        ax.set_xlim(0, extent)
        ax.set_ylim(extent, 0)  # row 0 at the top, as in an array
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def conv_explorer(n=7, k=3, stride=2, padding=1, dilation=1):
    """An ipywidgets explorer of convolution geometry; display the returned box.

    Sliders for n, k, stride, padding and dilation, and for the output position
    (row, column) to highlight. The box's ``sliders`` attribute (a dict) and ``summary``
    (the HTML widget) give access to the parts, e.g. for tests.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    style = {"description_width": "70px"}
    sliders = {
        "n": widgets.IntSlider(n, min=1, max=16, description="input n", style=style),
        "k": widgets.IntSlider(k, min=1, max=7, description="kernel k", style=style),
        "stride": widgets.IntSlider(stride, min=1, max=4, description="stride s", style=style),
        "padding": widgets.IntSlider(padding, min=0, max=3, description="padding p", style=style),
        "dilation": widgets.IntSlider(dilation, min=1, max=3, description="dilation d", style=style),
        "row": widgets.IntSlider(0, min=0, max=0, description="output row", style=style),
        "col": widgets.IntSlider(0, min=0, max=0, description="output col", style=style),
    }
    summary = widgets.HTML()
    picture = widgets.Output()

    def update(_change=None):
        try:
            geometry = conv_geometry(*(sliders[name].value for name in ("n", "k", "stride", "padding", "dilation")))
        except ValueError as error:
            summary.value = f"<b style='color:#b00'>{html.escape(str(error))}</b>"
            picture.clear_output()
            return
        for name in ("row", "col"):
            # lowering max clamps value, which fires this observer again with a valid index
            sliders[name].max = geometry.output_size - 1
        summary.value = describe_geometry(geometry)
        figure = plot_conv_geometry(geometry, (sliders["row"].value, sliders["col"].value))
        picture.clear_output(wait=True)
        with picture:
            display(figure)
        plt.close(figure)

    for slider in sliders.values():
        slider.observe(update, names="value")
    update()
    box = widgets.VBox([
        widgets.HBox([widgets.VBox([sliders[name] for name in ("n", "k", "stride", "padding")]),
                      widgets.VBox([sliders[name] for name in ("dilation", "row", "col")])]),
        summary,
        picture,
    ])
    box.sliders = sliders
    box.summary = summary
    return box


# --------------------------------------------------------------------------- receptive field (chapter 02)

# A preset is a stack of (kind, kernel, stride, dilation); padding follows from them (see ``same_padding``).
RECEPTIVE_FIELD_PRESETS = {
    "conv, conv, 2x2 pool, conv": (("conv", 3, 1, 1), ("conv", 3, 1, 1), ("maxpool", 2, 2, 1), ("conv", 3, 1, 1)),
    "three 3x3 convolutions": (("conv", 3, 1, 1),) * 3,
    "one 7x7 convolution": (("conv", 7, 1, 1),),
    "dilated 3x3, d = 1, 2, 4": (("conv", 3, 1, 1), ("conv", 3, 1, 2), ("conv", 3, 1, 4)),
    "ResNet stem: 7x7 stride 2, 3x3 pool stride 2": (("conv", 7, 2, 1), ("maxpool", 3, 2, 1)),
    "2x2 stride 3, then 3x3: gaps": (("conv", 2, 3, 1), ("conv", 3, 1, 1)),
}
MAX_EXPLORER_LAYERS = 4  # rows of sliders in the receptive-field explorer


def same_padding(kernel, dilation=1):
    """The explorer's padding ``d (k - 1) // 2``: a stride-1 layer with an odd span keeps the input size."""
    return dilation * (kernel - 1) // 2


@dataclass(frozen=True)
class ReceptiveFieldView:
    """What the receptive-field explorer shows for one stack and one output unit (the same along H and W)."""

    rows: tuple  # one ``ReceptiveFieldRow`` per layer, from ``course_utils.receptive_field``
    input_size: int  # the input's height (= width)
    unit: int  # the unit (unit, unit) of the last layer's output that is drawn
    span: Tuple[float, float]  # (first, last) input pixel it sees along an axis (< 0 or >= input_size: padding)
    paths: np.ndarray  # int array (input_size,): paths from the unit to each input pixel along one axis (0: unseen)
    summary: str  # HTML: the table and one line on the unit


def _paths_to_input(layers, sizes, unit):
    """Paths from unit ``unit`` of the last layer back to each input pixel, along one axis: an int array (sizes[0],).

    ``sizes[i]`` is the input length of layer ``i``; output ``o`` of a layer reads inputs ``o s - p + u d``,
    u = 0..k-1 (those outside [0, n) are padding and lead nowhere).
    """
    counts = np.zeros(sizes[-1], dtype=np.int64)  # (output size of the last layer,)
    counts[unit] = 1
    for layer, size in zip(reversed(layers), reversed(sizes[:-1])):
        previous = np.zeros(size, dtype=np.int64)  # (input size of this layer,)
        for o in np.nonzero(counts)[0]:
            for u in range(layer.kernel):
                index = o * layer.stride - layer.padding + u * layer.dilation
                if 0 <= index < size:
                    previous[index] += counts[o]
        counts = previous
    return counts


def receptive_field_view(layers, input_size, unit=None):
    """The receptive field of unit ``(unit, unit)`` of a stack's last layer, per layer and in input pixels.

    Args:
        layers: what ``course_utils.receptive_field.receptive_field`` takes (``Layer``s or dicts).
        input_size: the input's height (= width), an int >= 1.
        unit: the index of the drawn unit along each axis of the last layer's output; its centre when None.

    Returns:
        a ``ReceptiveFieldView``; ``paths[i]`` counts the paths from the unit to input pixel ``i`` along one axis
        (the product ``paths[i] * paths[j]`` counts them to pixel (i, j)).

    Raises:
        TypeError, ValueError: as ``receptive_field``; ValueError for a unit outside the last layer's output.
    """
    from course_utils.receptive_field import format_table, input_span, receptive_field

    rows = receptive_field(layers, input_size)
    if not rows:
        raise ValueError("layers must hold at least one layer")
    last = rows[-1]
    unit = (last.output_size - 1) // 2 if unit is None else unit
    if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < last.output_size:
        raise ValueError(f"unit must be an int in [0, {last.output_size}) (the last layer's output size); got {unit!r}")
    sizes = [input_size] + [row.output_size for row in rows]
    paths = _paths_to_input([row.layer for row in rows], sizes, unit)
    first, final = input_span(last, unit)
    seen = paths > 0
    on_image = (max(first, 0), min(final, input_size - 1))
    inside = int(on_image[1] - on_image[0] + 1)
    gaps = inside - int(seen.sum())
    most = int(paths.max()) ** 2  # paths to pixel (i, j): paths[i] * paths[j]
    gap_text = (f"; {gaps} of them are not connected to the unit (stride or dilation gaps)" if gaps
                else "; every one of them is connected to the unit")
    line = (f"unit ({unit}, {unit}) of {last.name}: receptive field {last.receptive_field}×{last.receptive_field}, "
            f"input pixels {first:g}..{final:g} on each axis, jump {last.jump}; {inside} per axis on the image"
            f"{gap_text}; the best-connected pixel is reached by {most} path{'s' if most > 1 else ''}")
    summary = f"<pre>{html.escape(format_table(rows, input_size))}</pre><b>{html.escape(line)}</b>"
    return ReceptiveFieldView(tuple(rows), input_size, unit, (first, final), paths, summary)


def plot_receptive_field(view, figsize=(7.2, 3.2)):
    """Left: the paths from the unit to each input pixel (dark: none) and its receptive field (cyan, may reach into
    the padding). Right: receptive field and jump after each layer. Returns the matplotlib ``Figure``."""
    import matplotlib.pyplot as plt

    figure, (ax_in, ax_layers) = plt.subplots(1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1, 1.2]})
    paths = np.outer(view.paths, view.paths)  # (H, W): paths from the unit to each input pixel
    ax_in.imshow(paths, cmap="magma", extent=(-0.5, view.input_size - 0.5, view.input_size - 0.5, -0.5))
    first, last = view.span
    ax_in.add_patch(plt.Rectangle((first - 0.5, first - 0.5), last - first + 1, last - first + 1, fill=False,
                                  edgecolor="cyan", linewidth=1.5))
    low, high = min(first, 0) - 0.5, max(last, view.input_size - 1) + 0.5
    ax_in.set_xlim(low, high)
    ax_in.set_ylim(high, low)  # row 0 at the top
    ax_in.set_title(f"input {view.input_size}×{view.input_size}: paths to unit ({view.unit}, {view.unit})", fontsize=9)
    ax_in.set_xticks([])
    ax_in.set_yticks([])
    positions = np.arange(len(view.rows))
    ax_layers.bar(positions, [row.receptive_field for row in view.rows], color="tab:cyan", label="receptive field")
    ax_layers.plot(positions, [row.jump for row in view.rows], "o-", color="tab:red", label="jump")
    ax_layers.set_xticks(positions, [row.name for row in view.rows], fontsize=8)
    ax_layers.set_ylabel("input pixels", fontsize=8)
    ax_layers.legend(fontsize=8)
    ax_layers.set_title("after each layer", fontsize=9)
    figure.tight_layout()
    return figure


def receptive_field_explorer(preset="conv, conv, 2x2 pool, conv", input_size=32):
    """An ipywidgets explorer of the receptive field of a layer stack; display the returned box.

    A dropdown of ``RECEPTIVE_FIELD_PRESETS`` (and "custom"), a slider for the number of layers, sliders for each
    layer's kernel, stride and dilation (padding ``same_padding(k, d)``), for the input size and for the output
    unit to draw. The box's ``controls`` (a dict: "preset", "layers", "kernel 1", "stride 1", "dilation 1", ...,
    "input size", "unit"), ``summary`` (the HTML widget) and ``view`` (a one-item list with the current
    ``ReceptiveFieldView``, None after an error) give access to the parts, e.g. for tests.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    from course_utils.receptive_field import receptive_field

    if preset not in RECEPTIVE_FIELD_PRESETS:
        raise ValueError(f"preset must be one of {list(RECEPTIVE_FIELD_PRESETS)}; got {preset!r}")
    style = {"description_width": "70px"}
    small = widgets.Layout(width="230px")
    controls = {
        "preset": widgets.Dropdown(options=[*RECEPTIVE_FIELD_PRESETS, "custom"], value=preset, description="preset",
                                   style=style, layout=widgets.Layout(width="420px")),
        "layers": widgets.IntSlider(1, min=1, max=MAX_EXPLORER_LAYERS, description="layers", style=style),
        "input size": widgets.IntSlider(input_size, min=4, max=64, description="input size", style=style),
        "unit": widgets.IntSlider(0, min=0, max=0, description="unit", style=style),
    }
    for i in range(1, MAX_EXPLORER_LAYERS + 1):
        controls[f"kernel {i}"] = widgets.IntSlider(3, min=1, max=7, description=f"kernel {i}", style=style,
                                                    layout=small)
        controls[f"stride {i}"] = widgets.IntSlider(1, min=1, max=4, description=f"stride {i}", style=style,
                                                    layout=small)
        controls[f"dilation {i}"] = widgets.IntSlider(1, min=1, max=4, description=f"dilation {i}", style=style,
                                                      layout=small)
    kinds = ["conv"] * MAX_EXPLORER_LAYERS
    rows_of_sliders = [widgets.HBox([controls[f"{name} {i}"] for name in ("kernel", "stride", "dilation")])
                       for i in range(1, MAX_EXPLORER_LAYERS + 1)]
    summary = widgets.HTML()
    picture = widgets.Output()
    view = [None]
    updating = [False]

    def stack():
        """The (kind, kernel, stride, dilation) of each shown layer."""
        return tuple((kinds[i], controls[f"kernel {i + 1}"].value, controls[f"stride {i + 1}"].value,
                      controls[f"dilation {i + 1}"].value) for i in range(controls["layers"].value))

    def as_layers(layers):
        return [{"kind": kind, "kernel": k, "stride": s, "dilation": d, "padding": same_padding(k, d),
                 "name": f"{kind}{i + 1}"} for i, (kind, k, s, d) in enumerate(layers)]

    def update(_change=None):
        if updating[0]:
            return
        for i, row in enumerate(rows_of_sliders):
            row.layout.display = "" if i < controls["layers"].value else "none"
        current = stack()
        matching = [name for name, layers in RECEPTIVE_FIELD_PRESETS.items() if layers == current]
        updating[0] = True  # naming the preset is not a change of the stack
        controls["preset"].value = matching[0] if matching else "custom"
        updating[0] = False
        layers = as_layers(current)
        try:
            last = receptive_field(layers, controls["input size"].value)[-1]
            if controls["unit"].max != last.output_size - 1:
                controls["unit"].max = last.output_size - 1  # lowering max clamps value, firing this again
            result = receptive_field_view(layers, controls["input size"].value, controls["unit"].value)
        except ValueError as error:
            view[0] = None
            summary.value = f"<b style='color:#b00'>{html.escape(str(error))}</b>"
            picture.clear_output()
            return
        view[0] = result
        summary.value = result.summary
        figure = plot_receptive_field(result)
        picture.clear_output(wait=True)
        with picture:
            display(figure)
        plt.close(figure)

    def choose_preset(_change=None):
        if updating[0] or controls["preset"].value == "custom":
            return
        layers = RECEPTIVE_FIELD_PRESETS[controls["preset"].value]
        updating[0] = True  # one redraw for the whole preset, below
        controls["layers"].value = len(layers)
        for i in range(MAX_EXPLORER_LAYERS):
            kind, k, s, d = layers[i] if i < len(layers) else ("conv", 3, 1, 1)
            kinds[i] = kind
            controls[f"kernel {i + 1}"].value = k
            controls[f"stride {i + 1}"].value = s
            controls[f"dilation {i + 1}"].value = d
        try:
            size = receptive_field(as_layers(stack()), controls["input size"].value)[-1].output_size
        except ValueError:
            size = 1  # update() shows the error
        controls["unit"].max = size - 1
        controls["unit"].value = (size - 1) // 2  # the centre unit
        updating[0] = False
        update()

    controls["preset"].observe(choose_preset, names="value")
    for name, control in controls.items():
        if name != "preset":
            control.observe(update, names="value")
    choose_preset()
    box = widgets.VBox([
        controls["preset"],
        widgets.HBox([controls["layers"], controls["input size"], controls["unit"]]),
        *rows_of_sliders,
        summary,
        picture,
    ])
    box.controls = controls
    box.summary = summary
    box.view = view
    return box


# --------------------------------------------------------------------------- activations (chapter 03)

def _activation_functions():
    """``{name: (parameter name or None, default, min, max, step, f(x, parameter) on tensors, label)}``."""
    import torch
    from torch.nn import functional as F

    return {
        "ReLU": (None, 0.0, 0.0, 1.0, 0.05, lambda x, a: F.relu(x), lambda a: "ReLU"),
        "LeakyReLU": ("negative_slope", 0.1, 0.0, 1.0, 0.05, lambda x, a: F.leaky_relu(x, a),
                      lambda a: f"LeakyReLU(negative_slope={a:g})"),
        "ELU": ("alpha", 1.0, 0.1, 2.0, 0.1, lambda x, a: F.elu(x, a), lambda a: f"ELU(alpha={a:g})"),
        "GELU": (None, 0.0, 0.0, 1.0, 0.05, lambda x, a: F.gelu(x), lambda a: "GELU (exact, erf)"),
        # x sigmoid(beta x): beta = 1 is SiLU (Elfwing et al. 2017, arXiv:1702.03118), Swish-beta in general
        # (Ramachandran et al. 2017, arXiv:1710.05941)
        "SiLU": ("beta", 1.0, 0.1, 5.0, 0.1, lambda x, a: x * torch.sigmoid(a * x),
                 lambda a: f"SiLU: x·sigmoid({a:g}·x)"),
        "sigmoid": (None, 0.0, 0.0, 1.0, 0.05, lambda x, a: torch.sigmoid(x), lambda a: "sigmoid"),
        "tanh": (None, 0.0, 0.0, 1.0, 0.05, lambda x, a: torch.tanh(x), lambda a: "tanh"),
    }


ACTIVATION_NAMES = ("ReLU", "LeakyReLU", "ELU", "GELU", "SiLU", "sigmoid", "tanh")


@dataclass(frozen=True)
class ActivationView:
    """What the activation explorer shows for one activation, parameter and point x."""

    name: str  # one of ``ACTIVATION_NAMES``
    parameter: object  # the parameter's value (a float), or None for an activation without one
    label: str  # e.g. "ELU(alpha=1)"
    x: np.ndarray  # float64 array (S,): the grid
    values: np.ndarray  # float64 array (S,): f on the grid
    derivatives: np.ndarray  # float64 array (S,): f' on the grid, by torch autograd
    at: float  # the chosen point
    value_at: float  # f(at)
    derivative_at: float  # f'(at)
    summary: str  # one line of text


def activation_parameter(name):
    """``(parameter name, default, min, max, step)`` of activation ``name``; the name is None when it has none."""
    functions = _activation_functions()
    if name not in functions:
        raise ValueError(f"activation must be one of {ACTIVATION_NAMES}; got {name!r}")
    return functions[name][:5]


def activation_view(name, parameter=None, at=1.0, low=-4.0, high=4.0, steps=801):
    """An activation and its derivative on a grid and at one point; the derivative comes from torch autograd.

    Args:
        name: one of ``ACTIVATION_NAMES``.
        parameter: LeakyReLU's negative_slope, ELU's alpha or SiLU's beta, inside the range
            ``activation_parameter(name)`` gives (its default when None); must be None for the others.
        at: the point x (a real number) where the value and the derivative are printed.
        low, high, steps: the grid, ``steps`` points from ``low`` to ``high``.

    Returns:
        an ``ActivationView``. At a kink (ReLU and LeakyReLU at 0) the derivative is the one autograd uses.
    """
    import math
    import numbers

    import torch

    parameter_name, default, minimum, maximum, _ = activation_parameter(name)
    function, label = _activation_functions()[name][5:]
    if parameter_name is None:
        if parameter is not None:
            raise ValueError(f"{name} takes no parameter; got {parameter!r}")
        value = 0.0
    else:
        value = default if parameter is None else parameter
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}'s {parameter_name} must be a number; got {value!r}")
        if not minimum <= value <= maximum:
            raise ValueError(f"{name}'s {parameter_name} must lie in [{minimum:g}, {maximum:g}]; got {value!r}")
    if isinstance(at, bool) or not isinstance(at, numbers.Real) or not math.isfinite(at):
        raise TypeError(f"at must be a finite real number; got {at!r}")
    if not (isinstance(steps, int) and steps >= 2 and low < high):
        raise ValueError(f"the grid needs low < high and an int steps >= 2; got {low!r}, {high!r}, {steps!r}")
    grid = torch.linspace(low, high, steps, dtype=torch.float64)  # (S,)
    points = torch.cat([grid, torch.tensor([float(at)], dtype=torch.float64)]).requires_grad_(True)  # (S + 1,)
    out = function(points, float(value))  # (S + 1,): element-wise, so d sum / d x_i = f'(x_i)
    (derivatives,) = torch.autograd.grad(out.sum(), points)  # (S + 1,)
    out, derivatives = out.detach().numpy(), derivatives.numpy()
    text = label(float(value))
    summary = (f"{text} at x = {float(at):+.2f}: f(x) = {out[-1]:+.4f}, f'(x) = {derivatives[-1]:+.4f}; "
               f"largest f' on [{low:g}, {high:g}]: {derivatives[:-1].max():.4f}")
    return ActivationView(name, None if parameter_name is None else float(value), text, grid.numpy(), out[:-1],
                          derivatives[:-1], float(at), float(out[-1]), float(derivatives[-1]), summary)


def plot_activation(view, figsize=(7.2, 2.8)):
    """f and f' side by side, the chosen point marked on both. Returns the matplotlib ``Figure``."""
    import matplotlib.pyplot as plt

    figure, (ax_f, ax_d) = plt.subplots(1, 2, figsize=figsize)
    for ax, curve, point, title in ((ax_f, view.values, view.value_at, "f(x)"),
                                    (ax_d, view.derivatives, view.derivative_at, "f'(x), autograd")):
        ax.plot(view.x, curve, color="tab:blue")
        ax.plot([view.at], [point], "o", color="tab:red")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_title(f"{view.label}: {title}", fontsize=9)
        ax.set_xlabel("x", fontsize=8)
    figure.tight_layout()
    return figure


def activation_explorer(name="ELU", parameter=None, at=-1.0):
    """An ipywidgets explorer of an activation and its derivative; display the returned box.

    A dropdown of ``ACTIVATION_NAMES``, a slider for the activation's parameter (disabled when it has none) and one
    for the point x. The box's ``controls`` (a dict: "activation", "parameter", "x"), ``summary`` (the HTML widget)
    and ``view`` (a one-item list with the current ``ActivationView``) give access to the parts, e.g. for tests.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    first = activation_view(name, parameter, at)  # validates the arguments
    style = {"description_width": "80px"}
    controls = {
        "activation": widgets.Dropdown(options=list(ACTIVATION_NAMES), value=name, description="activation",
                                       style=style),
        "parameter": widgets.FloatSlider(0.0, min=0.0, max=1.0, step=0.05, description="parameter", style=style),
        "x": widgets.FloatSlider(float(at), min=-4.0, max=4.0, step=0.1, description="x", style=style),
    }
    summary = widgets.HTML()
    picture = widgets.Output()
    view = [first]
    updating = [False]

    def configure_parameter(value=None):
        """Range, description and value of the parameter slider for the chosen activation."""
        parameter_name, default, minimum, maximum, step = activation_parameter(controls["activation"].value)
        slider = controls["parameter"]
        updating[0] = True
        if parameter_name is None:
            slider.disabled, slider.description = True, "(none)"
        else:
            slider.min, slider.max = -1e9, 1e9  # widen first, so the new range never crosses the old one
            slider.min, slider.max, slider.step = minimum, maximum, step
            slider.value = default if value is None else value
            slider.disabled, slider.description = False, parameter_name
        updating[0] = False

    def update(_change=None):
        if updating[0]:
            return
        chosen = controls["activation"].value
        has_parameter = activation_parameter(chosen)[0] is not None
        current = activation_view(chosen, controls["parameter"].value if has_parameter else None,
                                  round(controls["x"].value, 6))
        view[0] = current
        summary.value = f"<b>{html.escape(current.summary)}</b>"
        figure = plot_activation(current)
        picture.clear_output(wait=True)
        with picture:
            display(figure)
        plt.close(figure)

    def new_activation(_change=None):
        configure_parameter()
        update()

    configure_parameter(first.parameter)
    controls["activation"].observe(new_activation, names="value")
    controls["parameter"].observe(update, names="value")
    controls["x"].observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox(list(controls.values())), summary, picture])
    box.controls = controls
    box.summary = summary
    box.view = view
    return box
