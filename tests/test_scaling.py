"""``course_utils.scaling``: each helper against what torch computes directly, and its errors."""
import numpy as np
import pytest
import torch
from torch import nn

from course_utils import scaling


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_profile_table_names_the_convolution():
    model, x = small_net(), torch.randn(2, 1, 8, 8)
    table = scaling.profile_table(lambda: model(x).sum().backward(), steps=2)
    assert "aten::convolution" in table or "aten::conv2d" in table


def test_count_flops_is_two_per_multiply_add():
    conv = nn.Conv2d(3, 5, 3, bias=False)
    x = torch.randn(2, 3, 10, 10)
    macs = 2 * 5 * 8 * 8 * 3 * 3 * 3  # N * F * H_out * W_out * C * KH * KW
    assert scaling.count_flops(conv, x) == 2 * macs
    assert scaling.count_flops(conv, x, backward=True) > 2 * macs


def test_saved_activation_bytes_counts_each_saved_storage_once_and_excludes_weights():
    model, x = small_net(), torch.randn(2, 1, 8, 8)
    saved, output = scaling.saved_activation_bytes(lambda: model(x), exclude=model.parameters())
    assert output.shape == (2, 3)
    # input (2*1*8*8) saved by the conv, the ReLU's output (2*4*6*6) by ReLU, its flattened view by the linear
    assert saved == 4 * (2 * 64 + 2 * 4 * 36)
    with_weights, _ = scaling.saved_activation_bytes(lambda: model(x))
    assert with_weights > saved
    with torch.no_grad():
        assert scaling.saved_activation_bytes(lambda: model(x))[0] == 0


def test_peak_memory_is_positive_on_the_cpu_and_refuses_other_devices():
    assert scaling.peak_memory_bytes("cpu") > 10 * 2**20
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        scaling.peak_memory_bytes("meta")


@pytest.mark.parametrize("limit", [1, 2, 3, 37, 64, 1000, 4096])
def test_largest_batch_finds_the_last_size_that_fits(limit):
    calls = []

    def fits(n):
        calls.append(n)
        return n <= limit

    assert scaling.largest_batch(fits) == limit
    assert len(calls) < 30


def test_largest_batch_refuses_a_budget_nothing_fits_and_bad_bounds():
    with pytest.raises(ValueError, match="a batch of 1 does not fit"):
        scaling.largest_batch(lambda n: False)
    with pytest.raises(ValueError, match="1 <= low <= high"):
        scaling.largest_batch(lambda n: True, low=5, high=2)
    with pytest.raises(TypeError, match="fits must be a function"):
        scaling.largest_batch(3)


def test_micro_batches_weight_by_size():
    x, y = torch.arange(10.0), torch.arange(10)
    pieces = scaling.micro_batches(x, y, 4)
    assert [len(p[0]) for p in pieces] == [4, 4, 2]
    assert [p[2] for p in pieces] == [0.4, 0.4, 0.2]
    with pytest.raises(ValueError, match="micro_batch_size must be an int >= 1"):
        scaling.micro_batches(x, y, 0)
    with pytest.raises(ValueError, match="same number"):
        scaling.micro_batches(x, y[:3], 2)


def test_onnx_export_runs_in_onnxruntime_with_the_same_outputs_for_another_batch_size(tmp_path):
    model = small_net().eval()
    path = scaling.export_onnx(model, torch.randn(2, 1, 8, 8), tmp_path / "net.onnx")
    run = scaling.onnx_runner(path)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(run(x), model(x).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="nn.Module"):
        scaling.export_onnx(lambda t: t, x, tmp_path / "f.onnx")


def test_static_quantisation_gives_int8_modules_close_to_float():
    torch.manual_seed(0)
    model = scaling.QuantisableCNN().eval()
    x = torch.randn(16, 1, 12, 12)
    quantised = scaling.quantise_static(model, [x])
    assert ".quantized." in type(quantised.conv1).__module__ and quantised.fc.weight().dtype == torch.qint8
    assert isinstance(model.conv1, nn.Conv2d)  # the original is untouched
    with torch.no_grad():
        reference, received = model(x), quantised(x)
    assert (received - reference).abs().max() < 0.1 * reference.abs().max()
    with pytest.raises(TypeError, match="FUSE"):
        scaling.quantise_static(small_net(), [x])
    with pytest.raises(ValueError, match="engine must be one of"):
        scaling.quantise_static(model, [x], engine="tpu")


def test_global_pruning_zeroes_the_smallest_weights_over_all_layers():
    model = small_net()
    weights = torch.cat([m.weight.detach().abs().flatten() for m, _ in scaling.prunable_weights(model)])
    threshold = weights.sort().values[int(0.6 * weights.numel()) - 1]
    scaling.prune_global(model, 0.6)
    assert scaling.sparsity(model) == pytest.approx(0.6, abs=1 / weights.numel())
    for module, _ in scaling.prunable_weights(model):
        kept = module.weight.detach()[module.weight != 0]
        assert (kept.abs() >= threshold).all()
        assert not hasattr(module, "weight_mask")  # made permanent
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\)"):
        scaling.prune_global(model, 1.5)
    with pytest.raises(ValueError, match="no Conv2d or Linear"):
        scaling.sparsity(nn.ReLU())


def test_a_slice_of_a_larger_tensor_counts_its_own_bytes():
    model, big = small_net(), torch.randn(100, 1, 8, 8)
    sliced, _ = scaling.saved_activation_bytes(lambda: model(big[:2]), exclude=model.parameters())
    copied, _ = scaling.saved_activation_bytes(lambda: model(big[:2].clone()), exclude=model.parameters())
    assert sliced == copied
