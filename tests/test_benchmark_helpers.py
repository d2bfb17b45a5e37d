"""The helpers inside ``benchmarks/`` compute the right thing and run (no timing is checked here)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions only; main() runs under __main__
    return module


@pytest.fixture(scope="module")
def numpy_conv():
    return load_benchmark("numpy_conv")


def _case(shape, filters, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32)  # (N, C, H, W)
    w = rng.standard_normal((filters, shape[1], 3, 3), dtype=np.float32) / 3  # (F, C, 3, 3)
    b = rng.standard_normal(filters, dtype=np.float32)  # (F,)
    return x, w, b


# odd sizes: output sizes that are not multiples of the 4x4 Winograd tile, and non-square images
@pytest.mark.parametrize("shape, filters, padding", [((2, 3, 7, 9), 4, 0), ((1, 5, 8, 8), 2, 1),
                                                     ((3, 2, 5, 11), 3, 2), ((2, 4, 3, 3), 5, 0)])
def test_winograd_forward_matches_torch(numpy_conv, shape, filters, padding):
    x, w, b = _case(shape, filters, seed=sum(shape))
    workspace = {}
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=padding).numpy()
    for _ in range(2):  # the second call reuses the workspace's arrays
        out = numpy_conv.winograd_forward(x, w, b, padding, workspace)
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding", [0, 1])
def test_im2col_tensordot_forward_matches_torch(numpy_conv, padding):
    x, w, b = _case((2, 3, 6, 7), 4, seed=3)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=padding).numpy()
    np.testing.assert_allclose(numpy_conv.im2col_tensordot_forward(x, w, b, padding), expected, rtol=1e-4, atol=1e-4)


def test_training_overhead_loops_run_and_report_seconds_per_epoch():
    training_overhead = load_benchmark("training_overhead")
    x = torch.randn(16, 1, 28, 28)  # (N, C, H, W), MNIST-sized
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.randint(0, 10, (16,))), batch_size=8)
    for run in (training_overhead.bare_loop, training_overhead.with_fit):
        seconds = run(training_overhead.small_cnn(), loader, 2, torch.device("cpu"))
        assert isinstance(seconds, float) and seconds > 0, run.__name__


def test_the_chunk_size_study_prints_one_row_per_size_and_restores_the_chunk(numpy_conv, monkeypatch, capsys):
    from course_utils.numpy_nn import fast_conv

    monkeypatch.setattr(numpy_conv, "X_SHAPE", (2, 4, 8, 8))  # tiny: the study runs, the numbers mean nothing
    monkeypatch.setattr(numpy_conv, "W_SHAPE", (4, 4, 3, 3))
    default = fast_conv._CHUNK_BYTES
    numpy_conv.chunk_size_study([0.001, 1], rounds=1, block=1, warmup=0)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|") and "x |" in line]
    assert [row.split("|")[1].strip() for row in rows] == ["0.001", "1"]
    assert fast_conv._CHUNK_BYTES == default
