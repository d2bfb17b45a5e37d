"""``course_utils.tracing`` records what a forward pass computes, where, from what, and whether it is used."""
import pytest
import torch
from torch import nn

from course_utils.tracing import INPUT, capture_outputs, forward_operations, relative_difference


def test_modules_and_functions_record_the_same_operations():
    _, module_ops = forward_operations(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), torch.randn(1, 1, 5, 5))
    _, functional_ops = forward_operations(lambda x: torch.relu(x + 1), torch.randn(3))
    assert [op.kind for op in module_ops] == ["conv2d", "relu"]
    assert [(op.module, op.module_type) for op in module_ops] == [("0", "Conv2d"), ("1", "ReLU")]
    assert module_ops[0].output_shape == (1, 2, 3, 3)
    assert module_ops[0].arguments["kernel_size"] == (3, 3)
    assert [op.kind for op in functional_ops] == ["add", "relu"]


def test_reshapes_are_followed_not_recorded():
    def model(x):
        y = torch.relu(x).flatten(1).view(2, -1)  # (2, 12)
        return y.t() @ torch.ones(2, 1)

    _, ops = forward_operations(model, torch.randn(2, 3, 2, 2))
    assert [op.kind for op in ops] == ["relu", "matmul"]
    assert ops[1].sources == frozenset({0})  # the matmul's input came from the relu through three reshapes
    assert ops[0].sources == frozenset({INPUT})


def test_in_place_operations_take_over_their_tensor():
    block = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(inplace=True), nn.Conv2d(2, 2, 1))
    _, ops = forward_operations(block.eval(), torch.randn(1, 2, 3, 3))
    assert [op.kind for op in ops] == ["conv2d", "relu", "conv2d"]
    assert ops[2].sources == frozenset({1})
    assert all(op.reaches_output for op in ops)


def test_parameters_are_named_with_their_argument_position():
    _, ops = forward_operations(nn.Linear(3, 2), torch.randn(4, 3))
    assert ops[0].parameters == [("weight", "1"), ("bias", "2")]


def test_a_result_thrown_away_does_not_reach_the_output():
    def model(x):
        torch.sigmoid(x)  # computed, never used
        return torch.tanh(x)

    _, ops = forward_operations(model, torch.randn(3))
    assert [(op.kind, op.reaches_output) for op in ops] == [("sigmoid", False), ("tanh", True)]


def test_values_written_into_a_tensor_reach_the_output():
    def model(x):
        out = torch.zeros(2, 3)
        out[0] = torch.tanh(x)
        return out * 2

    _, ops = forward_operations(model, torch.randn(3))
    assert [(op.kind, op.reaches_output) for op in ops] == [("tanh", True), ("mul", True)]


def test_outputs_are_copies_taken_when_computed():
    def model(x):
        y = torch.relu(x)
        y.mul_(0)
        return y

    _, ops = forward_operations(model, torch.tensor([1.0, -1.0]))
    assert ops[0].output.tolist() == [1.0, 0.0]


def test_capture_outputs_returns_the_named_modules_outputs():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    captured = capture_outputs(model, torch.randn(2, 1, 5, 5), ["0", "1"])
    assert captured["0"].shape == (2, 4, 3, 3) and (captured["1"] >= 0).all()


def test_capture_outputs_names_the_children_of_an_unknown_module():
    with pytest.raises(KeyError, match="no module named 'layer9' in Sequential; its children are: 0, 1"):
        capture_outputs(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), torch.randn(1, 2), ["layer9"])


def test_relative_difference_is_scaled_by_the_expected_values():
    assert relative_difference(torch.tensor([1e-12, 0.0]), torch.tensor([2e-12, 0.0])) == pytest.approx(0.5)
    assert relative_difference(torch.zeros(2), torch.zeros(2)) == 0.0
