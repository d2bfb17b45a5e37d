"""course_utils.device: choosing a device and seeding, checked against torch's own reports."""
import random

import numpy as np
import pytest
import torch

from course_utils import device as dev


def test_get_device_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv(dev.DEVICE_ENV_VAR, raising=False)
    expected = "cuda" if torch.cuda.is_available() else "mps" if dev._mps_available() else "cpu"
    assert dev.get_device().type == expected


def test_environment_variable_overrides_the_choice(monkeypatch):
    monkeypatch.setenv(dev.DEVICE_ENV_VAR, "cpu")
    assert dev.get_device() == torch.device("cpu")


def test_argument_overrides_the_environment_variable(monkeypatch):
    monkeypatch.setenv(dev.DEVICE_ENV_VAR, "not-a-device")
    assert dev.get_device("cpu") == torch.device("cpu")


def test_unknown_device_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(dev.DEVICE_ENV_VAR, "gpu-please")
    with pytest.raises(ValueError, match="'cpu', 'cuda'"):
        dev.get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_missing_cuda_says_what_is_present():
    with pytest.raises(RuntimeError, match="CUDA is not available.*present: \\['cpu'"):
        dev.get_device("cuda")


def test_seed_everything_repeats_python_numpy_and_torch():
    def draw():
        rng = dev.seed_everything(123)
        return random.random(), np.random.rand(), torch.rand(1).item(), rng.random()

    assert draw() == draw()


@pytest.mark.parametrize("bad", [-1, 1.5, "7", True])
def test_seed_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="non-negative int"):
        dev.seed_everything(bad)


def test_autocast_is_a_no_op_on_the_cpu_by_default():
    with dev.autocast("cpu"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    assert not dev.uses_mixed_precision("cpu")
    assert dev.mixed_precision_dtype("cpu") is None


def test_autocast_asked_for_on_the_cpu_computes_in_bfloat16():
    with dev.autocast("cpu", enabled=True):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.bfloat16
    assert dev.mixed_precision_dtype("cpu", enabled=True) == torch.bfloat16


@pytest.mark.parametrize("name", ["cpu", "cuda", "mps"])
def test_autocast_turned_off_is_float32_everywhere(name):
    assert dev.mixed_precision_dtype(name, enabled=False) is None


def test_mixed_precision_asked_for_on_mps_warns_that_it_runs_in_float32():
    # torch.device("mps") can be named on any machine; nothing runs on it here
    with pytest.warns(UserWarning, match="mixed precision was asked for on mps.*float32"):
        assert dev.mixed_precision_dtype("mps", enabled=True) is None
    with pytest.warns(UserWarning, match="on mps"):
        context = dev.autocast("mps", enabled=True)
    assert type(context).__name__ == "nullcontext"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_on_cuda_is_bfloat16_where_supported_else_float16():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert dev.mixed_precision_dtype("cuda") == expected


def test_describe_environment_reports_versions():
    info = dev.describe_environment()
    assert info["torch"] == torch.__version__
    assert info["numpy"] == np.__version__
    assert "cpu" in info["available devices"]
