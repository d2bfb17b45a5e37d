"""Checks for chapter 18 (Scaling up): gradient accumulation, a DistributedDataParallel training function, a
mixed-precision step with a gradient scaler.

The learner's functions run on small networks that the probes (``learner_...``, run where the learner's code
lives) build from plain arguments; what comes back is plain data (parameters after the step, the scaler's scale,
the examples each rank saw, who saved a checkpoint). The references are computed here with torch alone:

* accumulation: one optimiser step on the **full** batch's mean loss;
* DDP: single-process SGD on the global batches of ``torch.randperm`` seeded as ``DistributedSampler`` seeds it
  (``seed + epoch``), the ranks' shares being every ``world_size``-th index of that permutation;
* mixed precision: bfloat16 ``torch.autocast`` on the CPU with ``torch.amp.GradScaler("cpu")``, in the order
  scale -> backward -> unscale_ -> clip -> step -> update.

The DDP probe starts the processes itself (``multiprocessing`` with the *fork* start method, so that a function
defined in a notebook can run in them; gloo over TCP on localhost) and joins the process group before it calls
the learner's function in each of them.
"""
import contextlib
import datetime
import os
import shutil
import socket
import tempfile
import traceback

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.checks import common, learner

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # float32 arithmetic in another order


def _call(function, *args, case):
    """``common.call``, with an ``AssertionError`` raised inside the learner's code (torch's own, such as
    GradScaler's) reported as the learner's crash in ``case``."""
    try:
        return common.call(function, *args, case=case)
    except AssertionError as error:
        if "not implemented yet" in str(error) or str(error).startswith(f"{case}:"):
            raise  # the stub, or the learner's crash that common.call reported
        name = getattr(function, "__name__", "the function")
        raise AssertionError(f"{case}: {name} raised AssertionError: {error}") from None


def _parameters(model):
    """``{name: tensor}`` of a model's parameters, detached copies."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _first_difference(received, references):
    """The label of the first of ``references`` (``{label: {name: tensor}}``) that ``received`` matches, or None."""
    for label, params in references.items():
        if all(name in received and np.allclose(common.as_numpy(received[name]), common.as_numpy(p), **TOLERANCE)
               for name, p in params.items()):
            return label
    return None


def _compare_parameters(received, expected, case, hints):
    """Assert every expected parameter matches; on a mismatch name the mistake that ``hints`` (``{label:
    params}``) reproduces, if one does."""
    if not isinstance(received, dict):
        raise AssertionError(f"{case}: the model's parameters could not be read back (got a "
                             f"{common.type_name(received)})")
    mistake = None
    for name, tensor in expected.items():
        if name not in received:
            raise AssertionError(f"{case}: the model has no parameter {name!r} any more")
        try:
            common.assert_close(received[name], tensor, case, what=f"parameter {name!r} after the step", **TOLERANCE)
        except AssertionError as error:
            mistake = _first_difference(received, hints)
            if mistake:
                raise AssertionError(f"{error} -- the parameters are those of {mistake}") from None
            raise


# --------------------------------------------------------------------------- exercise 1: gradient accumulation

# name -> (number of examples, micro-batch size, stale gradients left in .grad before the call)
ACCUMULATION_CASES = {"12 examples in micro-batches of 4": (12, 4, False),
                      "10 examples in micro-batches of 4 (the last holds 2)": (10, 4, False),
                      "9 examples in micro-batches of 2, stale gradients in .grad": (9, 2, True)}
ACCUMULATION_LR = 0.5


def _accumulation_case(name, seed=0):
    """The network, its SGD optimiser (momentum 0.9), the loss, the inputs (N, 6) and the labels (N,) of a case."""
    num_examples, micro, stale = ACCUMULATION_CASES[name]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3)  # non-zero biases, activations away from tanh's linear part
    optimizer = torch.optim.SGD(model.parameters(), lr=ACCUMULATION_LR, momentum=0.9)
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn(num_examples, 6, generator=generator) * 2
    targets = torch.randint(0, 3, (num_examples,), generator=generator)
    if stale:
        for p in model.parameters():
            p.grad = torch.full_like(p, 5.0)  # left by an earlier step that forgot zero_grad
    return model, optimizer, nn.CrossEntropyLoss(), inputs, targets, micro


def learner_accumulation(accumulated_step, name, case):
    """Run the learner's ``accumulated_step`` on a case; ``{"params": {name: tensor}, "loss": value}``."""
    model, optimizer, loss_fn, inputs, targets, micro = _accumulation_case(name)
    loss = _call(accumulated_step, model, loss_fn, optimizer, inputs, targets, micro, case=case)
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        loss = loss.detach().item()
    return {"params": _parameters(model), "loss": loss if common.is_plain_value(loss) else common.type_name(loss)}


def _accumulation_reference(name, mistake=None):
    """The parameters after one step (``mistake=None``: the full batch's), and the full batch's mean loss."""
    model, optimizer, loss_fn, inputs, targets, micro = _accumulation_case(name)
    optimizer.zero_grad()
    if mistake is None:
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return _parameters(model), loss.item()
    pieces = list(zip(inputs.split(micro), targets.split(micro)))
    for x, y in pieces:
        if mistake == "zero_grad inside the loop":
            optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        weight = {"the loss not divided by the number of micro-batches": 1.0,
                  "each micro-batch weighted 1 / (number of micro-batches) whatever its size": 1 / len(pieces),
                  "zero_grad inside the loop": len(x) / len(inputs),
                  "the optimizer stepped after every micro-batch": len(x) / len(inputs)}[mistake]
        (loss * weight).backward()
        if mistake == "the optimizer stepped after every micro-batch":
            optimizer.step()  # the gradients keep accumulating: no zero_grad between
    if mistake != "the optimizer stepped after every micro-batch":
        optimizer.step()
    return _parameters(model), None


ACCUMULATION_MISTAKES = ("the loss not divided by the number of micro-batches",
                         "each micro-batch weighted 1 / (number of micro-batches) whatever its size",
                         "zero_grad inside the loop", "the optimizer stepped after every micro-batch")


def check_accumulated_step(accumulated_step):
    """``accumulated_step(model, loss_fn, optimizer, inputs, targets, micro_batch_size)``: one optimiser step equal to
    the step on the whole batch; returns the whole batch's mean loss."""
    for name in ACCUMULATION_CASES:
        case = f"accumulated_step on {name}"
        found = learner.run(learner_accumulation, accumulated_step, name, case)
        expected, expected_loss = _accumulation_reference(name)
        hints = {f"a step with {mistake}": _accumulation_reference(name, mistake)[0] for mistake in ACCUMULATION_MISTAKES}
        hints["no step at all (optimizer.step() missing?)"] = _parameters(_accumulation_case(name)[0])
        _compare_parameters(found["params"], expected, case, hints)
        loss = found["loss"]
        if not isinstance(loss, (int, float)) or isinstance(loss, bool):
            raise AssertionError(f"{case}: should return the whole batch's mean loss as a float; got {loss!r:.60}")
        if not np.isclose(loss, expected_loss, rtol=1e-5, atol=1e-6):
            raise AssertionError(f"{case}: returned loss {loss:.6g}, expected the mean loss over all "
                                 f"{ACCUMULATION_CASES[name][0]} examples, {expected_loss:.6g}")
    common.passed("accumulated_step", len(ACCUMULATION_CASES))


# --------------------------------------------------------------------------- exercise 2: DDP training

WORLD_SIZE = 2
DDP_EXAMPLES, DDP_GLOBAL_BATCH, DDP_EPOCHS, DDP_LR = 16, 4, 2, 0.3  # 4 steps an epoch, shards of 2
DDP_TIMEOUT = 60.0  # seconds the processes have to finish


def _ddp_data(seed=0):
    """Inputs (N, 1, 4, 4) and labels (N,) of 3 classes."""
    generator = torch.Generator().manual_seed(seed + 7)
    images = torch.randn(DDP_EXAMPLES, 1, 4, 4, generator=generator)  # (N, 1, 4, 4)
    labels = torch.randint(0, 3, (DDP_EXAMPLES,), generator=generator)
    return images, labels


def _ddp_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, kernel_size=3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 2 * 2, 3))


class _RecordingDataset(torch.utils.data.Dataset):
    """A ``TensorDataset`` that remembers which indices were read, in order (the DataLoader must not use workers)."""

    def __init__(self, images, labels):
        self.images, self.labels, self.seen = images, labels, []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.seen.append(int(index))
        return self.images[index], self.labels[index]


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(train_ddp, rank, port, folder, case, queue):
    """One rank: join the group, run the learner's function, send back what it did."""
    import torch.distributed as dist

    report = {"rank": rank}
    saves = []
    real_save = torch.save

    def recording_save(obj, f, *args, **kwargs):
        saves.append(str(f))
        return real_save(obj, f, *args, **kwargs)

    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE,
                                timeout=datetime.timedelta(seconds=DDP_TIMEOUT / 2))
        model = _ddp_model()
        dataset = _RecordingDataset(*_ddp_data())
        torch.save = recording_save
        try:
            _call(train_ddp, rank, WORLD_SIZE, model, dataset, DDP_GLOBAL_BATCH, DDP_EPOCHS, DDP_LR,
                        os.path.join(folder, "checkpoint.pt"), case=f"{case}, rank {rank}")
        finally:
            torch.save = real_save
        report.update(params={name: p.detach().numpy().copy() for name, p in model.named_parameters()},
                      seen=list(dataset.seen), saves=saves)
    except AssertionError as error:
        report["failure"] = str(error)
    except BaseException as error:  # noqa: BLE001 - anything else is reported as the rank's crash
        report["failure"] = f"{case}: rank {rank} raised {type(error).__name__}: {error}"
        report["traceback"] = traceback.format_exc()[-1500:]
    finally:
        queue.put(report)
        queue.close()
        queue.join_thread()  # the report is in the pipe before this process ends (os._exit skips the flush)
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    os._exit(0)


def learner_ddp(train_ddp, case):
    """Run the learner's ``train_ddp`` in ``WORLD_SIZE`` forked processes; what each rank did, as plain data.

    ``{"ranks": [{"rank", "params", "seen", "saves"} or {"rank", "failure"}], "checkpoint": {name: array} or a
    description, "timed_out": bool}``.
    """
    import multiprocessing
    import queue as queues

    context = multiprocessing.get_context("fork")  # a function defined in a notebook cannot be pickled to a spawn
    results = context.Queue()
    folder = tempfile.mkdtemp(prefix="ddp_check_")
    port = _free_port()
    processes = [context.Process(target=_ddp_worker, args=(train_ddp, rank, port, folder, case, results), daemon=True)
                 for rank in range(WORLD_SIZE)]
    for process in processes:
        process.start()
    ranks, timed_out = [], False
    for _ in processes:
        failed = any("failure" in report for report in ranks)
        try:  # once a rank has failed, the others are only waiting for it: give them a few seconds
            ranks.append(results.get(timeout=5.0 if failed else DDP_TIMEOUT))
        except queues.Empty:
            timed_out = not failed
            break
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()
    checkpoint = None
    path = os.path.join(folder, "checkpoint.pt")
    if os.path.exists(path):
        try:
            state = torch.load(path, weights_only=True)
            state = state.get("model", state) if isinstance(state, dict) else state
            checkpoint = {name.removeprefix("module."): value.detach().numpy().copy() for name, value in state.items()
                          if isinstance(value, torch.Tensor)}
        except Exception as error:  # noqa: BLE001
            checkpoint = f"{type(error).__name__}: {error}"
    shutil.rmtree(folder, ignore_errors=True)
    return {"ranks": ranks, "checkpoint": checkpoint, "timed_out": timed_out}  # in the order they finished


def _epoch_orders():
    """Each epoch's shuffled order as ``DistributedSampler(seed=0)`` draws it: ``randperm`` seeded by the epoch."""
    return [torch.randperm(DDP_EXAMPLES, generator=torch.Generator().manual_seed(epoch)).tolist()
            for epoch in range(DDP_EPOCHS)]


def _ddp_reference(lr=DDP_LR, reshuffle=True):
    """Single-process SGD over the global batches of every epoch: the final ``{name: tensor}``."""
    model = _ddp_model()
    images, labels = _ddp_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    orders = _epoch_orders()
    for epoch in range(DDP_EPOCHS):
        order = orders[epoch if reshuffle else 0]
        for start in range(0, DDP_EXAMPLES, DDP_GLOBAL_BATCH):
            batch = order[start:start + DDP_GLOBAL_BATCH]  # the union of the ranks' shards of this step
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return _parameters(model)


def check_train_ddp(train_ddp):
    """``train_ddp(rank, world_size, model, dataset, global_batch_size, epochs, lr, checkpoint_path)`` in 2 processes
    (gloo): each rank its share of every epoch, gradients averaged, rank 0 alone saves; the final weights those of
    single-process training on the same global batches."""
    case = (f"train_ddp in {WORLD_SIZE} processes ({DDP_EXAMPLES} examples, global batch {DDP_GLOBAL_BATCH}, "
            f"{DDP_EPOCHS} epochs, lr {DDP_LR})")
    found = learner.run(learner_ddp, train_ddp, case)
    failures = [report for report in found["ranks"] if "failure" in report]  # in the order they failed
    if failures:  # the first rank to fail (the others then fail waiting for it); when several ranks failed the
        # same way (a stub raises on every rank), the lowest of them, so that the message does not depend on timing
        def same_way(report):
            return report["failure"].replace(f"rank {report['rank']}", "rank ?")
        first = failures[0]
        raise AssertionError(min((report for report in failures if same_way(report) == same_way(first)),
                                 key=lambda report: report["rank"])["failure"])
    ranks = sorted(found["ranks"], key=lambda report: report["rank"])
    if found["timed_out"] or len(ranks) < WORLD_SIZE:
        raise AssertionError(f"{case}: the processes did not finish within {DDP_TIMEOUT:g} s (a collective that not "
                             f"every rank calls, such as a barrier on rank 0 only?)")
    share = DDP_EXAMPLES // WORLD_SIZE
    orders = _epoch_orders()
    for report in ranks:
        rank, seen = report["rank"], report["seen"]
        if len(seen) != share * DDP_EPOCHS:
            raise AssertionError(f"{case}: rank {rank} read {len(seen)} examples in {DDP_EPOCHS} epochs, expected "
                                 f"{share * DDP_EPOCHS} ({share} an epoch: 1/{WORLD_SIZE} of the data; without a "
                                 f"DistributedSampler every rank sees all of it)")
        expected_seen = [i for order in orders for i in order[rank::WORLD_SIZE]]
        if seen != expected_seen:
            if DDP_EPOCHS > 1 and seen[:share] == seen[share:2 * share]:
                raise AssertionError(f"{case}: rank {rank} read its examples in the same order in epochs 0 and 1: "
                                     f"call sampler.set_epoch(epoch) at the start of every epoch so that it reshuffles")
            raise AssertionError(f"{case}: rank {rank} read the examples {seen[:share]} in epoch 0, expected "
                                 f"{expected_seen[:share]} (DistributedSampler(dataset, num_replicas=world_size, "
                                 f"rank=rank, shuffle=True, seed=0), a DataLoader with batch_size global_batch_size "
                                 f"// world_size over it)")
    first, second = ranks[0]["params"], ranks[1]["params"]
    if any(not np.allclose(first[name], second[name], **TOLERANCE) for name in first):
        raise AssertionError(f"{case}: the ranks end with different weights (e.g. {sorted(first)[0]!r}): the "
                             f"gradients were not averaged across the ranks (wrap the model in "
                             f"DistributedDataParallel)")
    expected = _ddp_reference()
    hints = {f"gradients summed over the {WORLD_SIZE} ranks instead of averaged": _ddp_reference(DDP_LR * WORLD_SIZE)}
    _compare_parameters({name: torch.from_numpy(value) for name, value in first.items()}, expected,
                        f"{case} (against single-process SGD on the same global batches)", hints)
    savers = [report["rank"] for report in ranks if report["saves"]]
    if savers != [0]:
        raise AssertionError(f"{case}: torch.save was called on rank(s) {savers}; only rank 0 should write the "
                             f"checkpoint (the ranks hold the same weights, and several writers to one file race)")
    checkpoint = found["checkpoint"]
    if not isinstance(checkpoint, dict):
        raise AssertionError(f"{case}: the checkpoint at checkpoint_path could not be read as a state_dict or "
                             f"{{'model': state_dict, ...}}: {checkpoint}")
    for name, tensor in expected.items():
        if name not in checkpoint:
            raise AssertionError(f"{case}: the checkpoint has no {name!r} (keys {sorted(checkpoint)[:4]})")
        common.assert_close(checkpoint[name], tensor, case, what=f"the checkpoint's {name!r} (the final weights)",
                            **TOLERANCE)
    common.passed("train_ddp", 1)


# --------------------------------------------------------------------------- exercise 3: mixed precision

# name -> (initial scale of the GradScaler, max_norm, input scale)
AMP_CASES = {"a step with clipping inactive (max_norm 100)": (2.0**10, 100.0, 1.0),
             "a step with clipping active (max_norm 0.1)": (2.0**8, 0.1, 1.0),
             "scaled gradients that overflow (scale 3e38)": (3.0e38, 1.0, 1000.0)}
AMP_LR = 0.5


def _amp_case(name, seed=0):
    """The network, SGD, the scaler (growth every step), inputs (8, 8) and labels (8,) of a case."""
    init_scale, max_norm, input_scale = AMP_CASES[name]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5))
    optimizer = torch.optim.SGD(model.parameters(), lr=AMP_LR)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1)
    generator = torch.Generator().manual_seed(seed + 3)
    inputs = torch.randn(8, 8, generator=generator) * input_scale
    targets = torch.randint(0, 5, (8,), generator=generator)
    return model, optimizer, scaler, inputs, targets, max_norm


def learner_amp_step(amp_step, name, case):
    """Run the learner's ``amp_step`` on a case; the parameters, the scaler's scale and the returned loss."""
    model, optimizer, scaler, inputs, targets, max_norm = _amp_case(name)
    loss = _call(amp_step, model, optimizer, scaler, inputs, targets, max_norm, case=case)
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        loss = loss.detach().float().item()
    return {"params": _parameters(model), "scale": float(scaler.get_scale()),
            "loss": loss if common.is_plain_value(loss) else common.type_name(loss)}


def _amp_reference(name, mistake=None):
    """The parameters, scale and loss after the right step (or one with ``mistake``)."""
    model, optimizer, scaler, inputs, targets, max_norm = _amp_case(name)
    optimizer.zero_grad()
    autocast = (contextlib.nullcontext() if mistake == "no autocast (float32)"
                else torch.autocast(device_type="cpu", dtype=torch.bfloat16))
    with autocast:
        loss = F.cross_entropy(model(inputs), targets)
    if mistake == "backward on the unscaled loss":
        scaler.scale(loss)  # computed, then not used
        loss.backward()
    else:
        scaler.scale(loss).backward()
    if mistake == "clipping before unscale_":
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scaler.unscale_(optimizer)
    else:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    return _parameters(model), float(scaler.get_scale()), loss.item()


AMP_MISTAKES = ("backward on the unscaled loss", "clipping before unscale_", "no autocast (float32)")


def check_amp_step(amp_step):
    """``amp_step(model, optimizer, scaler, inputs, targets, max_norm)``: bfloat16 autocast, scaled backward,
    unscale_ then clip, ``scaler.step``, ``scaler.update``; returns the (unscaled) loss."""
    for name in AMP_CASES:
        case = f"amp_step, {name}"
        found = learner.run(learner_amp_step, amp_step, name, case)
        expected, expected_scale, expected_loss = _amp_reference(name)
        initial = _parameters(_amp_case(name)[0])
        params = found["params"]
        if not isinstance(params, dict) or not all(name_ in params for name_ in expected):
            raise AssertionError(f"{case}: the model's parameters could not be read back")
        overflow = expected_scale < AMP_CASES[name][0]
        hints = {f"a step with {mistake}": _amp_reference(name, mistake)[0] for mistake in AMP_MISTAKES}
        if overflow and _first_difference(params, {"skipped": initial}) is None:
            mistake = _first_difference(params, hints)
            raise AssertionError(f"{case}: the parameters changed, but the scaled gradients overflowed (inf): the "
                                 f"step must be skipped, as scaler.step(optimizer) does ("
                                 f"{'the parameters are those of ' + mistake if mistake else 'optimizer.step() called directly?'})")
        hints["no step at all (scaler.step(optimizer) missing?)"] = initial
        if not overflow:
            _compare_parameters(params, expected, case, hints)
        if not np.isclose(found["scale"], expected_scale, rtol=1e-6, atol=0.0):
            initial_scale = AMP_CASES[name][0]
            hint = (" (scaler.update() missing?)" if np.isclose(found["scale"], initial_scale, rtol=1e-6, atol=0.0)
                    else "")
            raise AssertionError(f"{case}: the scaler's scale is {found['scale']:.6g} after the step, expected "
                                 f"{expected_scale:.6g} (initial {initial_scale:.6g}, "
                                 f"{'halved after an overflow' if overflow else 'doubled after a good step'}){hint}")
        loss = found["loss"]
        if not isinstance(loss, (int, float)) or isinstance(loss, bool):
            raise AssertionError(f"{case}: should return the loss as a float; got {loss!r:.60}")
        if not np.isclose(loss, expected_loss, rtol=1e-4, atol=1e-5):
            hint = " (the scaled loss? return the loss before scaler.scale)" if loss > 10 * expected_loss else ""
            raise AssertionError(f"{case}: returned loss {loss:.6g}, expected {expected_loss:.6g}{hint}")
    common.passed("amp_step", len(AMP_CASES))
