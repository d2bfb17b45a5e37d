"""course_utils.widgets: the convolution-geometry explorer, tested without a browser."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from course_utils.widgets import conv_explorer, conv_geometry, describe_geometry, plot_conv_geometry  # noqa: E402


def test_output_size_matches_nn_conv2d():
    for n, k, s, p, d in [(6, 3, 2, 0, 1), (7, 3, 2, 1, 2), (16, 7, 4, 3, 3), (5, 5, 1, 0, 1)]:
        layer = torch.nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)
        assert conv_geometry(n, k, s, p, d).output_size == layer(torch.zeros(1, 1, n, n)).shape[-1]


def test_formula_shows_the_numbers_and_the_result():
    g = conv_geometry(7, 3, stride=2, padding=1, dilation=2)
    assert g.formula == ("⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1 = ⌊(7 + 2·1 − 2·(3 − 1) − 1) / 2⌋ + 1"
                         " = ⌊4 / 2⌋ + 1 = 2 + 1 = 3")
    assert g.span == 5


def test_windows_list_the_input_indices_each_output_reads():
    g = conv_geometry(5, 3, stride=1, padding=1)
    assert g.windows == ((-1, 0, 1), (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5))  # -1 and 5 are padding


def test_windows_follow_stride_and_dilation():
    g = conv_geometry(9, 3, stride=3, padding=0, dilation=2)
    assert g.windows == ((0, 2, 4), (3, 5, 7))


def test_the_floor_drops_the_rows_after_the_last_window():
    g = conv_geometry(6, 3, stride=2)
    assert g.output_size == 2
    assert g.windows[-1] == (2, 3, 4)
    assert g.dropped == (5,)
    assert g.unused == (5,)


def test_nothing_is_dropped_when_the_windows_tile_the_input():
    g = conv_geometry(7, 3, stride=2)
    assert g.dropped == ()
    assert g.unused == ()


def test_gaps_between_windows_are_unused_but_not_dropped():
    g = conv_geometry(8, 2, stride=3)  # windows (0, 1), (3, 4), (6, 7)
    assert g.dropped == ()
    assert g.unused == (2, 5)


def test_padding_alone_is_never_reported_as_dropped():
    g = conv_geometry(6, 3, stride=2, padding=1)  # padded -1..6, windows end at 1, 3, 5
    assert g.dropped == ()


def test_a_kernel_larger_than_the_padded_input_is_refused():
    with pytest.raises(ValueError, match="the kernel spans 7 inputs"):
        conv_geometry(3, 7)


def test_description_names_the_output_size_formula_and_dropped_rows():
    text = describe_geometry(conv_geometry(6, 3, stride=2))
    assert "output 2×2" in text
    assert "⌊3 / 2⌋ + 1 = 1 + 1 = 2" in text
    assert "the floor drops input rows/columns [5]" in text


def test_description_of_a_geometry_without_drops():
    text = describe_geometry(conv_geometry(8, 2, stride=3))
    assert "the floor drops no input row or column" in text
    assert "Rows/columns [2, 5] fall between windows" in text


def test_plot_highlights_the_taps_of_the_chosen_output():
    g = conv_geometry(5, 3, stride=2, padding=1)
    figure = plot_conv_geometry(g, (1, 0))
    ax_in, ax_out = figure.axes
    blue = matplotlib.colors.to_rgba("tab:blue", 0.7)
    taps = [p for p in ax_in.patches if p.get_fill() and p.get_facecolor() == blue]
    assert sorted((int(p.get_y()), int(p.get_x())) for p in taps) == [
        (r + 1, c + 1) for r in g.windows[1] for c in g.windows[0]
    ]
    assert ax_in.get_xlim() == (0, 7)
    assert ax_out.get_xlim() == (0, 3)


def test_plot_refuses_an_output_index_out_of_range():
    with pytest.raises(ValueError, match=r"output_index must lie in \[0, 2\)"):
        plot_conv_geometry(conv_geometry(6, 3, stride=2), (2, 0))


def test_explorer_updates_the_summary_and_the_output_sliders():
    box = conv_explorer(n=7, k=3, stride=2, padding=1)
    assert "output 4×4" in box.summary.value
    assert box.sliders["row"].max == 3
    box.sliders["row"].value = 3
    box.sliders["n"].value = 4  # output 2x2: the row slider is clamped
    assert "output 2×2" in box.summary.value
    assert box.sliders["row"].max == 1
    assert box.sliders["row"].value == 1


def test_explorer_shows_an_error_instead_of_failing():
    box = conv_explorer(n=3, k=3, stride=1, padding=0)
    box.sliders["k"].value = 5
    assert "the kernel spans 5 inputs" in box.summary.value
