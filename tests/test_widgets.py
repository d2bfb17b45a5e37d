"""course_utils.widgets: the convolution-geometry, receptive-field and activation explorers, tested without a browser.

The same explorers are moved in a real browser by ``tests/test_browser.py``.
"""
import matplotlib

matplotlib.use("Agg")

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from course_utils.receptive_field import receptive_field  # noqa: E402
from course_utils.widgets import (  # noqa: E402
    ACTIVATION_NAMES, RECEPTIVE_FIELD_PRESETS, activation_explorer, activation_parameter, activation_view,
    conv_explorer, conv_geometry, describe_geometry, plot_activation, plot_conv_geometry, plot_receptive_field,
    receptive_field_explorer, receptive_field_view, same_padding,
)


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


# --------------------------------------------------------------------------- receptive field (chapter 02)

def as_layers(stack):
    """(kind, k, s, d) tuples -> the dicts the explorer builds, with its padding rule."""
    return [{"kind": kind, "kernel": k, "stride": s, "dilation": d, "padding": same_padding(k, d)}
            for kind, k, s, d in stack]


def gradient_of_one_unit(layers, input_size, unit):
    """|d out[unit, unit] / d x| (H, W) through all-ones convolutions of the same geometry: paths per pixel."""
    modules = []
    for layer in layers:
        conv = nn.Conv2d(1, 1, layer["kernel"], stride=layer["stride"], padding=layer["padding"],
                         dilation=layer["dilation"], bias=False)
        nn.init.ones_(conv.weight)
        modules.append(conv)
    x = torch.zeros(1, 1, input_size, input_size, dtype=torch.float64, requires_grad=True)  # (N, C, H, W)
    out = nn.Sequential(*modules).double()(x)  # (1, 1, OH, OW)
    out[0, 0, unit, unit].backward()
    return x.grad[0, 0].numpy()  # (H, W)


def test_same_padding_keeps_the_size_of_odd_spans_at_stride_1():
    assert [same_padding(k, d) for k, d in [(3, 1), (3, 2), (7, 1), (2, 1), (3, 4)]] == [1, 2, 3, 0, 4]


@pytest.mark.parametrize("preset", list(RECEPTIVE_FIELD_PRESETS))
def test_paths_per_pixel_equal_the_gradient_through_all_ones_convolutions(preset):
    layers = as_layers(RECEPTIVE_FIELD_PRESETS[preset])
    view = receptive_field_view(layers, 32)
    expected = gradient_of_one_unit(layers, 32, view.unit)
    np.testing.assert_array_equal(np.outer(view.paths, view.paths), expected)


def test_the_view_uses_the_receptive_field_table_and_the_centre_unit():
    layers = as_layers(RECEPTIVE_FIELD_PRESETS["conv, conv, 2x2 pool, conv"])
    view = receptive_field_view(layers, 32)
    assert list(view.rows) == receptive_field(layers, 32)
    assert view.unit == 7  # output 16: the centre unit (16 - 1) // 2
    assert view.span == (10.0, 19.0)  # start 0.5 + 7 * jump 2, receptive field 10
    assert "receptive field 10×10" in view.summary and "every one of them is connected" in view.summary


def test_strided_gaps_are_counted_in_the_summary():
    view = receptive_field_view(as_layers(RECEPTIVE_FIELD_PRESETS["2x2 stride 3, then 3x3: gaps"]), 32)
    first, last = view.span
    inside = view.paths[int(first):int(last) + 1]
    assert (inside == 0).sum() == 2 and (view.paths > 0).sum() == 6
    assert "2 of them are not connected to the unit" in view.summary


def test_a_unit_near_the_border_sees_padding():
    view = receptive_field_view([{"kernel": 3, "padding": 1}] * 3, 8, unit=0)
    assert view.span == (-3.0, 3.0)
    assert "input pixels -3..3" in view.summary and "4 per axis on the image" in view.summary
    np.testing.assert_array_equal(view.paths[:5], [4, 5, 3, 1, 0])  # (1, 1, 1) convolved 3 times, cut by the border


def test_receptive_field_view_refuses_bad_units_and_stacks():
    with pytest.raises(ValueError, match=r"unit must be an int in \[0, 8\)"):
        receptive_field_view([{"kernel": 3, "padding": 1}], 8, unit=8)
    with pytest.raises(ValueError, match="at least one layer"):
        receptive_field_view([], 8)
    with pytest.raises(ValueError, match="does not fit"):
        receptive_field_view([{"kernel": 7}], 4)


def test_receptive_field_plot_frames_the_span_and_shows_every_layer():
    view = receptive_field_view([{"kernel": 3, "padding": 1}] * 3, 8, unit=0)
    figure = plot_receptive_field(view)
    ax_in, ax_layers = figure.axes
    frame = [p for p in ax_in.patches if not p.get_fill()][0]
    assert (frame.get_x(), frame.get_width()) == (-3.5, 7)
    assert ax_in.get_xlim() == (-3.5, 7.5)  # the padding the field reaches is in the picture
    assert [label.get_text() for label in ax_layers.get_xticklabels()] == ["conv1", "conv2", "conv3"]


def test_receptive_field_explorer_follows_presets_and_sliders():
    box = receptive_field_explorer(preset="three 3x3 convolutions", input_size=32)
    controls = box.controls
    assert controls["layers"].value == 3 and box.view[0].rows[-1].receptive_field == 7
    assert controls["unit"].value == 15 and controls["unit"].max == 31
    controls["dilation 2"].value = 2  # no longer a preset
    assert controls["preset"].value == "custom" and box.view[0].rows[-1].receptive_field == 9
    controls["preset"].value = "ResNet stem: 7x7 stride 2, 3x3 pool stride 2"
    assert controls["layers"].value == 2 and controls["unit"].max == 7 and controls["unit"].value == 3
    assert "receptive field 11×11" in box.summary.value and "jump 4" in box.summary.value
    controls["unit"].value = 7
    controls["input size"].value = 16  # output 4: the unit is clamped to the last one
    assert controls["unit"].max == 3 and box.view[0].unit == 3


def test_receptive_field_explorer_shows_an_error_instead_of_failing():
    box = receptive_field_explorer(preset="2x2 stride 3, then 3x3: gaps", input_size=4)
    box.controls["kernel 2"].value = 2  # padding 0: a 2-pixel window on the first layer's 1-pixel output
    assert box.view[0] is None and "does not fit an input of size 1" in box.summary.value
    box.controls["input size"].value = 8
    assert box.view[0] is not None and box.view[0].rows[-1].output_size == 2


def test_receptive_field_explorer_refuses_an_unknown_preset():
    with pytest.raises(ValueError, match="preset must be one of"):
        receptive_field_explorer(preset="AlexNet")


# --------------------------------------------------------------------------- activations (chapter 03)

TORCH_MODULES = {  # name -> (parameter, the nn module it must equal)
    "ReLU": (None, nn.ReLU()),
    "LeakyReLU": (0.2, nn.LeakyReLU(0.2)),
    "ELU": (0.5, nn.ELU(0.5)),
    "GELU": (None, nn.GELU()),
    "SiLU": (1.0, nn.SiLU()),
    "sigmoid": (None, nn.Sigmoid()),
    "tanh": (None, nn.Tanh()),
}


def closed_form_derivative(name, parameter, x):
    """f'(x) written out (the table of notebook 03), x a float64 array away from the kinks."""
    sigmoid = 1 / (1 + np.exp(-x))
    normal_pdf = np.exp(-x**2 / 2) / math.sqrt(2 * math.pi)
    normal_cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    return {
        "ReLU": lambda: (x > 0).astype(float),
        "LeakyReLU": lambda: np.where(x > 0, 1.0, parameter),
        "ELU": lambda: np.where(x > 0, 1.0, parameter * np.exp(x)),
        "GELU": lambda: normal_cdf + x * normal_pdf,
        "SiLU": lambda: (1 / (1 + np.exp(-parameter * x))) * (1 + parameter * x / (1 + np.exp(parameter * x))),
        "sigmoid": lambda: sigmoid * (1 - sigmoid),
        "tanh": lambda: 1 - np.tanh(x) ** 2,
    }[name]()


def test_every_activation_is_offered():
    assert set(ACTIVATION_NAMES) == set(TORCH_MODULES)


@pytest.mark.parametrize("name", list(TORCH_MODULES))
def test_activation_values_equal_torch_modules(name):
    parameter, module = TORCH_MODULES[name]
    view = activation_view(name, parameter)
    expected = module(torch.from_numpy(view.x)).numpy()
    np.testing.assert_allclose(view.values, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(TORCH_MODULES))
def test_activation_derivatives_equal_the_closed_forms(name):
    parameter, _ = TORCH_MODULES[name]
    view = activation_view(name, parameter, steps=800)  # an even count: the grid misses the kink at 0
    assert not (view.x == 0).any()
    np.testing.assert_allclose(view.derivatives, closed_form_derivative(name, parameter, view.x), rtol=1e-9,
                               atol=1e-12)


def test_silu_beta_changes_the_function():
    x = activation_view("SiLU", 2.0).x
    np.testing.assert_allclose(activation_view("SiLU", 2.0).values, x / (1 + np.exp(-2 * x)), rtol=1e-12)


def test_value_and_derivative_at_the_chosen_point():
    view = activation_view("ELU", 1.0, at=-1.0)
    assert view.value_at == pytest.approx(math.exp(-1) - 1) and view.derivative_at == pytest.approx(math.exp(-1))
    assert view.summary.startswith("ELU(alpha=1) at x = -1.00: f(x) = -0.6321, f'(x) = +0.3679")
    assert "largest f' on [-4, 4]: 1.0000" in view.summary
    assert activation_view("sigmoid", at=0.0).derivative_at == pytest.approx(0.25)


def test_the_default_parameter_is_used_when_none_is_given():
    assert activation_parameter("LeakyReLU")[:2] == ("negative_slope", 0.1)
    assert activation_view("LeakyReLU").parameter == 0.1 and activation_view("tanh").parameter is None


def test_activation_view_refuses_bad_arguments():
    with pytest.raises(ValueError, match="activation must be one of"):
        activation_view("swish")
    with pytest.raises(ValueError, match="ReLU takes no parameter"):
        activation_view("ReLU", 0.5)
    with pytest.raises(ValueError, match=r"ELU's alpha must lie in \[0.1, 2\]"):
        activation_view("ELU", 3.0)
    with pytest.raises(TypeError, match="negative_slope must be a number"):
        activation_view("LeakyReLU", "0.1")
    with pytest.raises(TypeError, match="at must be a finite real number"):
        activation_view("tanh", at=float("nan"))


def test_activation_plot_marks_the_point_on_both_curves():
    view = activation_view("tanh", at=0.5)
    ax_f, ax_d = plot_activation(view).axes
    assert ax_f.lines[1].get_xydata().tolist() == [[0.5, pytest.approx(math.tanh(0.5))]]
    assert ax_d.lines[1].get_xydata().tolist() == [[0.5, pytest.approx(1 - math.tanh(0.5) ** 2)]]


def test_activation_explorer_reconfigures_the_parameter_slider():
    box = activation_explorer("ELU", at=-1.0)
    controls = box.controls
    assert controls["parameter"].description == "alpha" and controls["parameter"].value == 1.0
    controls["activation"].value = "tanh"
    assert controls["parameter"].disabled and box.view[0].label == "tanh"
    assert "tanh at x = -1.00" in box.summary.value
    controls["activation"].value = "LeakyReLU"
    assert not controls["parameter"].disabled and controls["parameter"].value == 0.1
    controls["parameter"].value = 0.3
    assert box.view[0].value_at == pytest.approx(-0.3)
    controls["x"].value = 2.0
    assert box.view[0].derivative_at == 1.0 and "at x = +2.00" in box.summary.value
