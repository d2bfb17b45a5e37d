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


def test_autocast_is_a_no_op_on_the_cpu():
    with dev.autocast("cpu"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    assert not dev.uses_mixed_precision("cpu")


def test_describe_environment_reports_versions():
    info = dev.describe_environment()
    assert info["torch"] == torch.__version__
    assert info["numpy"] == np.__version__
    assert "cpu" in info["available devices"]
