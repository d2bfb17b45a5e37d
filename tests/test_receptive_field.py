"""Receptive-field arithmetic against measurements: which input pixels get gradient from one output unit."""
import numpy as np
import pytest
import torch
from torch import nn

from course_utils.receptive_field import Layer, format_table, input_span, layers_from_module, receptive_field


def ones_like_network(model):
    """Make every conv an all-ones kernel without bias, in place, so that no gradient cancels."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def measured_span(model, input_size, unit):
    """Rows and columns of the input that reach output unit (unit, unit) of channel 0: ((r0, r1), (c0, c1))."""
    # a positive input and positive weights keep every ReLU open
    x = torch.ones(1, 1, input_size, input_size, requires_grad=True)
    y = model(x)  # (1, F, OH, OW)
    y[0, 0, unit, unit].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    return (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max())), y.shape[-1]


def test_three_3x3_convolutions_see_as_much_as_one_7x7():
    conv3 = {"kind": "conv", "kernel": 3, "padding": 1}
    rows = receptive_field([conv3, conv3, conv3], 32)
    assert [row.receptive_field for row in rows] == [3, 5, 7]
    assert receptive_field([{"kernel": 7, "padding": 3}], 32)[0].receptive_field == 7


def test_vgg16_receptive_fields_are_the_published_ones():
    # VGG-16 conv5_3 sees 196 pixels and pool5 212 (Araujo et al., Distill 2019, table 1)
    vgg16 = []
    for convs in (2, 2, 3, 3, 3):
        vgg16 += [{"kernel": 3, "padding": 1}] * convs + [{"kind": "maxpool", "kernel": 2, "stride": 2}]
    rows = receptive_field(vgg16, 224)
    assert (rows[-2].receptive_field, rows[-1].receptive_field) == (196, 212)
    assert (rows[-1].output_size, rows[-1].jump) == (7, 32)


@pytest.mark.parametrize(
    "model, input_size",
    [
        (nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), nn.Conv2d(1, 1, 3, padding=1)), 21),
        (nn.Sequential(nn.Conv2d(1, 1, 7, 2, 3), nn.MaxPool2d(3, 2, 1), nn.Conv2d(1, 1, 3, 2, 1)), 96),
        (nn.Sequential(nn.Conv2d(1, 1, 3, padding=2, dilation=2), nn.AvgPool2d(2), nn.Conv2d(1, 1, 5, 3)), 64),
        (nn.Sequential(nn.Conv2d(1, 1, 1, 2), nn.Conv2d(1, 1, 3)), 41),  # holes in the field: only its span counts
    ],
)
def test_formula_matches_the_gradient_footprint_of_a_middle_unit(model, input_size):
    # max pooling routes gradient to one pixel, so measure its geometry with average pooling instead
    measured = nn.Sequential(*[nn.AvgPool2d(m.kernel_size, m.stride, m.padding) if isinstance(m, nn.MaxPool2d) else m
                               for m in model])
    ones_like_network(measured)
    rows = receptive_field(model, input_size)
    last = rows[-1]
    unit = last.output_size // 2
    (r0, r1), (c0, c1), size = measured_span(measured, input_size, unit)
    assert size == last.output_size
    assert (r0, r1) == (c0, c1) == input_span(last, unit)
    assert r1 - r0 + 1 == last.receptive_field


def test_start_is_the_centre_of_the_first_unit():
    rows = receptive_field([{"kernel": 3}, {"kernel": 2, "stride": 2}], 10)  # no padding: unit 0 sees pixels 0..3
    assert input_span(rows[-1], 0) == (0.0, 3.0)
    assert rows[-1].start == 1.5
    padded = receptive_field([{"kernel": 3, "padding": 1}], 10)[0]  # unit 0 is centred on pixel 0
    assert input_span(padded, 0) == (-1.0, 1.0)


def test_sequential_skips_element_wise_modules_and_reads_nested_ones():
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.BatchNorm2d(8), nn.ReLU()),
        nn.MaxPool2d(2),
        nn.Dropout(0.1),
    )
    layers = layers_from_module(model)
    assert [(layer.kind, layer.kernel, layer.stride, layer.padding) for layer in layers] == [
        ("conv", 3, 1, 1),
        ("maxpool", 2, 2, 0),
    ]


def test_layers_and_dicts_give_the_same_rows():
    as_layers = receptive_field([Layer("conv", 5, 2, 2), Layer("avgpool", 2, 2)], 40)
    as_dicts = receptive_field([{"kind": "conv", "kernel": 5, "stride": 2, "padding": 2},
                                {"kind": "avgpool", "kernel": 2, "stride": 2}], 40)
    assert [row.as_dict() for row in as_layers] == [row.as_dict() for row in as_dicts]


def test_format_table_has_one_line_per_layer_and_one_for_the_input():
    rows = receptive_field([{"kernel": 3, "padding": 1}] * 2, 8)
    lines = format_table(rows, input_size=8).splitlines()
    assert len(lines) == 2 + 1 + 2
    assert lines[2].split()[:2] == ["input", "8"]


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize(
    "layers, error, message",
    [
        ([{"kind": "pool", "kernel": 2}], ValueError, "kind must be one of"),
        ([{"stride": 2}], ValueError, "'kernel' is missing"),
        ([{"kernel": 3, "strides": 2}], ValueError, r"unknown keys \['strides'\]"),
        ([{"kernel": 3, "stride": 0}], ValueError, "layer 0: stride must be at least 1"),
        ([{"kernel": 3.0}], TypeError, "layer 0: kernel must be an int"),
        ([{"kernel": 3}, (3, 1, 0)], TypeError, "layer 1 must be a Layer or a dict"),
        ([{"kernel": 3}, {"kernel": 7}], ValueError, r"layer 1 \(conv2\).*does not fit an input of size 3"),
        ("conv", TypeError, "layers must be a list"),
    ],
)
def test_bad_layers_raise_a_clear_error(layers, error, message):
    with pytest.raises(error, match=message):
        receptive_field(layers, 5)


def test_numpy_integers_are_accepted():
    rows = receptive_field([{"kernel": np.int64(3), "stride": np.int64(2)}], 9)
    assert (rows[0].receptive_field, rows[0].output_size) == (3, 4)
    assert type(rows[0].layer.kernel) is int


def test_bad_input_size_raises():
    with pytest.raises(ValueError, match="input_size must be at least 1"):
        receptive_field([{"kernel": 3}], 0)


@pytest.mark.parametrize(
    "model, error, message",
    [
        (nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten()), TypeError, r"Flatten\[1\]: only Conv2d"),
        (nn.Sequential(nn.Conv2d(1, 1, (3, 5))), ValueError, "differs along H and W"),
        (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), ValueError, "ceil_mode=True is not handled"),
        (nn.Conv2d(1, 1, 3), TypeError, "expected an nn.Sequential"),
    ],
)
def test_unsupported_modules_raise_a_clear_error(model, error, message):
    with pytest.raises(error, match=message):
        receptive_field(model, 32)
