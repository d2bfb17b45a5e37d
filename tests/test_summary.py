"""model_summary against torchvision's models and parameter counts computed by hand."""
import pytest
import torch
import torchvision
from torch import nn

from course_utils.summary import model_summary


def test_alexnet_totals_match_torchvision():
    model = torchvision.models.alexnet(weights=None)
    summary = model_summary(model, (1, 3, 224, 224))
    assert summary.total_parameters == sum(p.numel() for p in model.parameters())
    # conv and linear MACs counted from the layer shapes: K*K*C_in*C_out*H_out*W_out and in*out
    convs = [(11, 3, 64, 55), (5, 64, 192, 27), (3, 192, 384, 13), (3, 384, 256, 13), (3, 256, 256, 13)]
    linears = [(9216, 4096), (4096, 4096), (4096, 1000)]
    expected = sum(k * k * c * f * h * h for k, c, f, h in convs) + sum(i * o for i, o in linears)
    assert summary.total_macs == expected


def test_rows_give_shapes_parameters_and_macs_per_layer():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    summary = model_summary(model, (2, 3, 4, 4))
    assert [r.kind for r in summary.rows] == ["Conv2d", "ReLU", "Flatten", "Linear"]
    assert [r.output_shape for r in summary.rows] == [(2, 8, 4, 4), (2, 8, 4, 4), (2, 128), (2, 5)]
    assert [r.parameters for r in summary.rows] == [3 * 8 * 9 + 8, 0, 0, 128 * 5 + 5]
    assert [r.macs for r in summary.rows] == [2 * 8 * 16 * 27, 0, 0, 2 * 128 * 5]
    assert summary.total_macs == sum(r.macs for r in summary.rows)
    text = summary.table()
    assert "Conv2d" in text and f"{summary.total_parameters:,} parameters" in text


def test_googlenet_without_aux_heads_matches_torchvision_count():
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    summary = model_summary(model, (1, 3, 64, 64))
    assert summary.total_parameters == sum(p.numel() for p in model.parameters())


def test_model_mode_and_device_are_restored():
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout())
    model.train()
    model_summary(model, (1, 3))
    assert model.training


def test_example_input_for_non_image_models():
    model = nn.Embedding(10, 4)
    summary = model_summary(model, example_input=torch.tensor([[1, 2, 3]]))
    assert summary.rows[0].output_shape == (1, 3, 4)


@pytest.mark.parametrize("args, kwargs, message", [
    (("not a model", (1, 3)), {}, "model must be an nn.Module"),
    ((nn.Linear(3, 2),), {}, "exactly one of input_size"),
    ((nn.Linear(3, 2), (0, 3)), {}, "positive ints"),
])
def test_bad_arguments_are_named(args, kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        model_summary(*args, **kwargs)
