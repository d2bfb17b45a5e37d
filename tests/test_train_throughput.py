"""benchmarks/train_throughput.py runs tiny on the CPU and reports the right rows (no speed is checked here)."""
import json

import pytest
import torch

from test_benchmark_helpers import load_benchmark

TINY = dict(batch_size=2, image_size=32, steps=1, warmup=1, device="cpu")


@pytest.fixture(scope="module")
def throughput():
    return load_benchmark("train_throughput")


def _check_row(row, model, mode):
    assert (row["model"], row["mode"], row["device"]) == (model, mode, "cpu")
    assert row["images_per_s"] > 0 and row["step_ms"] > 0, row
    assert row["peak_memory_mib"] > 0, f"{model}/{mode}: no saved-for-backward bytes counted: {row}"
    assert row["memory_kind"] == "saved_for_backward"
    assert torch.isfinite(torch.tensor(row["loss"])), row


def test_main_prints_one_row_per_mode_and_writes_the_json(throughput, tmp_path, capsys):
    out = tmp_path / "out.json"
    throughput.main(["--models", "resnet18", "--modes", "eager", "amp", "channels_last", "--batch-size", "2",
                     "--image-size", "32", "--steps", "1", "--warmup", "1", "--device", "cpu", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "| model | mode | images/s | vs eager | MiB saved for backward (activations) | compile s |" in printed
    for mode in ("eager", "amp", "channels_last"):
        assert f"| resnet18 | {mode} |" in printed, printed
    rows = json.loads(out.read_text())["rows"]
    assert [row["mode"] for row in rows] == ["eager", "amp", "channels_last"]
    for row in rows:
        _check_row(row, "resnet18", row["mode"])
        assert row["compile_s"] is None
    assert rows[0]["speedup_vs_eager"] == pytest.approx(1.0)
    assert all(row["speedup_vs_eager"] > 0 for row in rows)


def test_the_small_vit_trains_in_bfloat16_autocast(throughput):
    row = throughput.measure("vit_small", "amp_bf16", **TINY)
    _check_row(row, "vit_small", "amp_bf16")


def test_compile_mode_compiles_the_model_and_times_the_first_step_apart(throughput, monkeypatch):
    compiled = []

    def fake_compile(model, **kwargs):  # inductor takes minutes on two busy cores; the wiring is what is tested
        compiled.append(type(model).__name__)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    row = throughput.measure("resnet18", "compile", **TINY)
    assert compiled == ["ResNet"], "torch.compile was not called on the model"
    _check_row(row, "resnet18", "compile")
    assert row["compile_s"] > 0


def test_amp_uses_float16_with_a_scaler_on_cuda_and_bfloat16_elsewhere(throughput):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert throughput.precision("amp", cuda) == (torch.float16, True)
    assert throughput.precision("amp_bf16", cuda) == (torch.bfloat16, False)
    assert throughput.precision("amp", cpu) == (torch.bfloat16, False)
    for mode in ("eager", "channels_last", "compile"):
        assert throughput.precision(mode, cuda) == (None, False)


def test_the_table_names_cuda_peak_memory_and_speedups(throughput):
    rows = [dict(model="resnet50", mode=mode, images_per_s=speed, peak_memory_mib=100.0,
                 memory_kind="cuda_max_allocated", compile_s=compile_s)
            for mode, speed, compile_s in (("eager", 100.0, None), ("compile", 150.0, 42.0))]
    table = throughput.format_table(throughput.add_speedups(rows))
    assert "peak MiB (torch.cuda.max_memory_allocated)" in table.splitlines()[0]
    assert "| resnet50 | compile | 150.0 | 1.50x | 100.0 | 42.0 |" in table


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda tt: tt.build_model("vgg", 32), r"model must be one of .*got 'vgg'"),
        (lambda tt: tt.build_model("vit_small", 60), r"image size divisible by its patch size 8; got 60"),
        (lambda tt: tt.precision("fp8", torch.device("cpu")), r"mode must be one of .*got 'fp8'"),
        (lambda tt: tt.measure("resnet18", "eager", steps=0), r"steps must be an int >= 1; got 0"),
        (lambda tt: tt.measure("resnet18", "eager", warmup=-1), r"warmup must be an int >= 0; got -1"),
    ],
    ids=["unknown-model", "vit-image-size", "unknown-mode", "no-steps", "negative-warmup"],
)
def test_bad_settings_are_refused(throughput, call, message):
    with pytest.raises(ValueError, match=message):
        call(throughput)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_asking_for_cuda_without_it_says_so(throughput):
    with pytest.raises(ValueError, match=r"device 'cuda' was asked for but CUDA is not available"):
        throughput.resolve_device("cuda")
