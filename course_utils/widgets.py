"""Interactive explorers for the lectures (introduced in ``notebooks/01_convolution.ipynb``).

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
"""
import html
from dataclasses import dataclass
from typing import Tuple


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
