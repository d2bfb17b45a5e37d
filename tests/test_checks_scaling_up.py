"""The chapter 18 checks pass on right answers written in different ways and fail on the usual mistakes.

Each wrong answer changes one thing of a right one. Every failure is checked in process and in split mode (as
``course-grade`` runs it) with the same message; the DDP check starts two gloo processes each time.
"""
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from course_utils.checks import scaling_up as checks
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


@pytest.mark.parametrize("check", [checks.check_accumulated_step, checks.check_train_ddp, checks.check_amp_step],
                         ids=lambda check: check.__name__)
def test_every_check_fails_on_the_stub_of_the_unsolved_exercise(check):
    name = {checks.check_accumulated_step: "accumulated_step", checks.check_train_ddp: "train_ddp",
            checks.check_amp_step: "amp_step"}[check]
    assert_same_failure(check, {name: stub}, "not implemented yet")


# --------------------------------------------------------------------------- gradient accumulation

def accumulate(model, loss_fn, optimizer, inputs, targets, micro_batch_size, mistake=None):
    """A right answer, or one with ``mistake``."""
    if mistake != "no zero_grad first":
        optimizer.zero_grad()
    pieces = list(zip(inputs.split(micro_batch_size), targets.split(micro_batch_size)))
    total = 0.0
    for x, y in pieces:
        if mistake == "zero_grad inside":
            optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        weight = {None: len(x) / len(inputs), "not divided": 1.0, "zero_grad inside": len(x) / len(inputs),
                  "every micro-batch steps": len(x) / len(inputs), "equal weights": 1 / len(pieces),
                  "no zero_grad first": len(x) / len(inputs)}[mistake]
        (loss * weight).backward()
        total += loss.item() * len(x) / len(inputs)
        if mistake == "every micro-batch steps":
            optimizer.step()
    if mistake != "every micro-batch steps":
        optimizer.step()
    return total


def accumulate_by_sum(model, loss_fn, optimizer, inputs, targets, micro_batch_size):
    """Written differently: a summed loss per micro-batch, divided by N once; the loss returned as a tensor."""
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for start in range(0, len(inputs), micro_batch_size):
        x, y = inputs[start:start + micro_batch_size], targets[start:start + micro_batch_size]
        loss = F.cross_entropy(model(x), y, reduction="sum") / len(inputs)
        loss.backward()
        total += loss.detach()
    optimizer.step()
    return total


@pytest.mark.parametrize("answer", [accumulate, accumulate_by_sum], ids=["weighted means", "sum over N"])
def test_accumulation_check_passes_on_right_answers(answer):
    assert split_verdict(checks.check_accumulated_step, {"accumulated_step": answer}) is None


def test_accumulation_check_prints_one_line_when_it_passes(capsys):
    checks.check_accumulated_step(accumulate)
    assert "accumulated_step: all 3 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    ("not divided", r"12 examples .* parameters are those of a step with the loss not divided by the number of "
                    r"micro-batches"),
    ("zero_grad inside", r"12 examples .* parameters are those of a step with zero_grad inside the loop"),
    ("every micro-batch steps", r"12 examples .* those of a step with the optimizer stepped after every micro-batch"),
    ("equal weights", r"10 examples in micro-batches of 4 \(the last holds 2\).* those of a step with each "
                      r"micro-batch weighted 1 / \(number of micro-batches\) whatever its size"),
    ("no zero_grad first", r"stale gradients in \.grad: parameter '0\.weight' after the step"),
])
def test_accumulation_check_fails_on_a_mistake(mistake, message):
    def accumulated_step(model, loss_fn, optimizer, inputs, targets, micro_batch_size):
        return accumulate(model, loss_fn, optimizer, inputs, targets, micro_batch_size, mistake)

    assert_same_failure(checks.check_accumulated_step, {"accumulated_step": accumulated_step}, message)


def test_accumulation_check_fails_when_the_optimizer_is_not_stepped():
    def accumulated_step(model, loss_fn, optimizer, inputs, targets, micro_batch_size):
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        return float(loss.detach())

    assert_same_failure(checks.check_accumulated_step, {"accumulated_step": accumulated_step},
                        r"those of no step at all \(optimizer\.step\(\) missing\?\)")


def test_accumulation_check_fails_on_the_loss_of_the_last_micro_batch():
    def accumulated_step(model, loss_fn, optimizer, inputs, targets, micro_batch_size):
        accumulate(model, loss_fn, optimizer, inputs, targets, micro_batch_size)
        return float(loss_fn(model(inputs[-2:]), targets[-2:]).detach())

    assert_same_failure(checks.check_accumulated_step, {"accumulated_step": accumulated_step},
                        r"returned loss .* expected the mean loss over all 12 examples")


# --------------------------------------------------------------------------- DDP

def ddp(rank, world_size, model, dataset, global_batch_size, epochs, lr, checkpoint_path, sampler=True,
        set_epoch=True, wrap=True, savers=(0,), summed=False, barrier=True):
    """A right answer, or one with one thing changed."""
    distributed = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=0)
    loader = (DataLoader(dataset, batch_size=global_batch_size // world_size, sampler=distributed) if sampler
              else DataLoader(dataset, batch_size=global_batch_size // world_size, shuffle=True))
    network = DistributedDataParallel(model) if wrap else model
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for epoch in range(epochs):
        if set_epoch:
            distributed.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(network(x), y)
            optimizer.zero_grad()
            loss.backward()
            if summed:
                for p in model.parameters():
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            optimizer.step()
        if rank in savers:
            torch.save({"model": model.state_dict(), "epoch": epoch}, checkpoint_path)
        if barrier:
            dist.barrier()


def ddp_manual_average(rank, world_size, model, dataset, global_batch_size, epochs, lr, checkpoint_path):
    """Written differently: no DDP wrapper, gradients averaged by hand; the shards by index; saves the wrapped
    module's state_dict with its ``module.`` prefix once, at the end."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    share = global_batch_size // world_size
    for epoch in range(epochs):
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(epoch)).tolist()
        mine = order[rank::world_size]
        for start in range(0, len(mine), share):
            batch = [dataset[i] for i in mine[start:start + share]]
            x, y = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world_size
            optimizer.step()
    if rank == 0:
        torch.save({"module." + k: v for k, v in model.state_dict().items()}, checkpoint_path)


@pytest.mark.parametrize("answer", [ddp, ddp_manual_average], ids=["DDP", "averaged by hand"])
def test_ddp_check_passes_on_right_answers(answer):
    assert split_verdict(checks.check_train_ddp, {"train_ddp": answer}) is None


@pytest.mark.parametrize("options, message", [
    ({"sampler": False}, r"rank 0 read 32 examples in 2 epochs, expected 16 \(8 an epoch.*without a "
                         r"DistributedSampler every rank sees all of it"),
    ({"set_epoch": False}, r"same order in epochs 0 and 1: call sampler\.set_epoch\(epoch\)"),
    ({"wrap": False}, r"the ranks end with different weights .* not averaged across the ranks"),
    ({"wrap": False, "summed": True}, r"parameters are those of gradients summed over the 2 ranks instead of "
                                      r"averaged"),
    ({"savers": (0, 1)}, r"torch\.save was called on rank\(s\) \[0, 1\]; only rank 0"),
    ({"savers": ()}, r"torch\.save was called on rank\(s\) \[\]"),
])
def test_ddp_check_fails_on_a_mistake(options, message):
    def train_ddp(*args):
        return ddp(*args, **options)

    assert_same_failure(checks.check_train_ddp, {"train_ddp": train_ddp}, message)


def test_ddp_check_reports_a_crash_of_a_rank():
    def train_ddp(rank, *args):
        if rank == 1:
            raise ValueError("rank 1 broke")
        ddp(rank, *args)

    assert_same_failure(checks.check_train_ddp, {"train_ddp": train_ddp}, r"lr 0\.3\), rank 1: train_ddp raised ValueError: rank 1 broke")


# --------------------------------------------------------------------------- mixed precision

def amp(model, optimizer, scaler, inputs, targets, max_norm, mistake=None):
    """A right answer, or one with ``mistake``."""
    optimizer.zero_grad()
    if mistake == "no autocast":
        loss = F.cross_entropy(model(inputs), targets)
    else:
        with torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(inputs), targets)
    if mistake == "unscaled backward":
        scaler.scale(loss)
        loss.backward()
    else:
        scaler.scale(loss).backward()
    if mistake == "clip first":
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scaler.unscale_(optimizer)
    elif mistake != "no unscale":
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if mistake in ("optimizer.step", "no unscale"):
        optimizer.step()
    else:
        scaler.step(optimizer)
    if mistake != "no update":
        scaler.update()
    return float(scaler.scale(loss).detach()) if mistake == "scaled loss" else float(loss.detach())


def amp_in_module_style(model, optimizer, scaler, inputs, targets, max_norm):
    """Written differently: nn.CrossEntropyLoss, autocast by dtype keyword only, clip_grad_norm_ on a list."""
    optimizer.zero_grad(set_to_none=True)
    with torch.amp.autocast("cpu", dtype=torch.bfloat16):
        logits = model(inputs)
        loss = nn.CrossEntropyLoss()(logits, targets)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(list(model.parameters()), max_norm=max_norm)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


@pytest.mark.parametrize("answer", [amp, amp_in_module_style], ids=["functional", "module"])
def test_amp_check_passes_on_right_answers(answer):
    assert split_verdict(checks.check_amp_step, {"amp_step": answer}) is None


@pytest.mark.parametrize("mistake, message", [
    ("unscaled backward", r"clipping inactive .* parameters are those of a step with backward on the unscaled loss"),
    ("clip first", r"clipping inactive .* parameters are those of a step with clipping before unscale_"),
    ("no autocast", r"clipping inactive .* parameters are those of a step with no autocast \(float32\)"),
    ("optimizer.step", r"overflow .* the parameters changed, but the scaled gradients overflowed \(inf\)"),
    ("no unscale", r"clipping inactive.*: amp_step raised AssertionError: No inf checks were recorded prior to "
                   r"update"),
    ("no update", r"clipping inactive .* scale is 1024 after the step, expected 2048 .*scaler\.update\(\) missing"),
    ("scaled loss", r"returned loss .* \(the scaled loss\?"),
])
def test_amp_check_fails_on_a_mistake(mistake, message):
    def amp_step(model, optimizer, scaler, inputs, targets, max_norm):
        return amp(model, optimizer, scaler, inputs, targets, max_norm, mistake)

    assert_same_failure(checks.check_amp_step, {"amp_step": amp_step}, message)


def test_amp_check_fails_when_no_step_is_taken():
    def amp_step(model, optimizer, scaler, inputs, targets, max_norm):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(inputs), targets)
        scaler.scale(loss).backward()
        return float(loss.detach())

    assert_same_failure(checks.check_amp_step, {"amp_step": amp_step}, r"those of no step at all")


def test_the_overflow_case_really_overflows():
    _, scale, _ = checks._amp_reference("scaled gradients that overflow (scale 3e38)")
    assert scale == pytest.approx(1.5e38, rel=1e-6)
