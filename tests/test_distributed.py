"""``course_utils.distributed``: two processes under torchrun (gloo on the CPU) train exactly as one process does
on the same global batch, and a run killed after a checkpoint resumes to the same final weights.

The reference is plain single-process training by the same script (no process group, no DDP); torchrun is
started as ``python -m torch.distributed.run --standalone`` (a free port on localhost).
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from course_utils import distributed

ARGS = ["--steps", "6", "--global-batch-size", "8", "--num-examples", "24", "--lr", "0.2"]  # 3 steps an epoch


def run(out_dir, *extra, processes=2):
    """Run the script (under torchrun when ``processes`` > 0); the finished process."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes else [sys.executable])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(launcher + ["-m", "course_utils.distributed", *ARGS, "--out-dir", str(out_dir), *extra],
                          capture_output=True, text=True, env=env, timeout=240)


def results(out_dir):
    return torch.load(out_dir / "final.pt"), json.loads((out_dir / "losses.json").read_text())


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    finished = run(out_dir)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return results(out_dir)


def test_two_processes_train_as_one_process_on_the_same_global_batch(two_processes, tmp_path):
    finished = run(tmp_path, processes=0)
    assert finished.returncode == 0, finished.stderr[-3000:]
    single_weights, single = results(tmp_path)
    ddp_weights, ddp = two_processes
    assert (ddp["world_size"], single["world_size"]) == (2, 1)
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(single["losses"]), rtol=1e-5, atol=1e-6)
    for name, tensor in single_weights.items():
        torch.testing.assert_close(ddp_weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert single["losses"][-1] < single["losses"][0]  # it trains


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_final_weights(two_processes, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    killed = run(tmp_path, "--checkpoint", str(checkpoint), "--stop-after-step", "4")
    assert killed.returncode != 0 and not (tmp_path / "final.pt").exists()
    assert torch.load(checkpoint)["step"] == 4
    resumed = run(tmp_path, "--checkpoint", str(checkpoint), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at step 4" in resumed.stdout
    weights, losses = results(tmp_path)
    expected_weights, expected = two_processes
    assert losses["losses"] == pytest.approx(expected["losses"], rel=1e-6)
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=0, msg=name)


def test_the_single_process_run_stops_and_resumes_too(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    killed = run(tmp_path, "--checkpoint", str(checkpoint), "--stop-after-step", "2", processes=0)
    assert killed.returncode == distributed.STOPPED_EXIT_CODE
    assert run(tmp_path, "--checkpoint", str(checkpoint), "--resume", processes=0).returncode == 0
    assert len(results(tmp_path)[1]["losses"]) == 6


def test_the_data_and_model_are_the_same_for_every_seed_call():
    first, second = distributed.make_dataset(10, 3), distributed.make_dataset(10, 3)
    assert torch.equal(first.tensors[0], second.tensors[0]) and torch.equal(first.tensors[1], second.tensors[1])
    assert first.tensors[0].shape == (10, 1, 8, 8) and set(first.tensors[1].tolist()) <= {0, 1, 2, 3}
    assert distributed.make_model(1)(first.tensors[0]).shape == (10, 4)
    for a, b in zip(distributed.make_model(1).parameters(), distributed.make_model(1).parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("argv, message", [
    (["--out-dir", "x", "--steps", "0"], "must be at least 1"),
    (["--out-dir", "x", "--global-batch-size", "100", "--num-examples", "10"], "exceeds --num-examples"),
    (["--out-dir", "x", "--resume"], "need --checkpoint"),
])
def test_bad_arguments_are_refused_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit):
        distributed.parse_args(argv)
    assert message in capsys.readouterr().err


def test_checkpoint_is_written_whole_by_a_rename(tmp_path):
    model = distributed.make_model(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    distributed.save_checkpoint(tmp_path / "c.pt", model, optimizer, 5, [1.0, 0.5])
    state = torch.load(tmp_path / "c.pt")
    assert state["step"] == 5 and state["losses"] == [1.0, 0.5] and not (tmp_path / "c.pt.tmp").exists()
