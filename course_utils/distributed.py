"""Data-parallel training with PyTorch's DistributedDataParallel (introduced in ``notebooks/18_scaling_up.ipynb``,
section 4 "Data parallelism").

One script, launched once per process by ``torchrun``; the same code runs on CPUs (backend gloo) and on NVIDIA
GPUs (backend NCCL, one GPU per process)::

    torchrun --standalone --nproc_per_node=2 -m course_utils.distributed --steps 8 --out-dir run
    python -m torch.distributed.run --standalone --nproc_per_node=2 -m course_utils.distributed --steps 8 --out-dir run
    python -m course_utils.distributed --steps 8 --out-dir single     # one process, no process group

``torchrun`` starts the processes and gives each the environment variables ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` (``--standalone`` picks a free port on this machine). Each
process builds the same model from the same seed; ``DistributedDataParallel`` averages the gradients of all
processes during ``backward`` (an all-reduce per bucket of parameters), so every replica takes the same optimiser
step, the step of one process on the whole global batch. ``DistributedSampler`` gives each rank its own
``1 / world_size`` of every epoch's shuffled order (``set_epoch`` reshuffles each epoch).

Rank 0 alone writes the checkpoint (model, optimiser, step), to a temporary file then renamed, so that a run
killed while writing leaves the previous checkpoint whole; ``--resume`` restarts from it, skipping the batches of
the epoch already done, and gives the same final weights as an uninterrupted run. ``--stop-after-step K`` ends
every process abruptly (``os._exit``) after step K's checkpoint, as a crash or a lost machine would.

Outputs in ``--out-dir`` (rank 0): ``final.pt`` (the final ``state_dict``) and ``losses.json`` (the mean loss of
the global batch at every step, averaged over the ranks by an all-reduce).
"""
import argparse
import datetime
import itertools
import json
import os
import pathlib
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

STOPPED_EXIT_CODE = 3  # the exit status of a run ended by --stop-after-step


def make_dataset(num_examples, seed):
    """Synthetic digits-like data: images (N, 1, 8, 8) and labels (N,) of 4 classes from a fixed random teacher."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_examples, 1, 8, 8, generator=generator)  # (N, 1, 8, 8)
    teacher = torch.randn(64, 4, generator=generator)  # (1*8*8, classes)
    labels = (images.reshape(num_examples, 64) @ teacher).argmax(dim=1)  # (N, 64) @ (64, 4) -> (N,)
    return TensorDataset(images, labels)


def make_model(seed):
    """A tiny CNN without batch norm (DDP's batch norm would normalise each rank's shard on its own: see
    ``nn.SyncBatchNorm``), the same on every rank because the seed is."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=3),  # (N, 1, 8, 8) -> (N, 4, 6, 6)
        nn.ReLU(),
        nn.Flatten(),  # (N, 4*6*6)
        nn.Linear(4 * 6 * 6, 4),
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a tiny CNN with DistributedDataParallel (chapter 18).")
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps in all")
    parser.add_argument("--global-batch-size", type=int, default=16, help="examples per step, over all ranks")
    parser.add_argument("--num-examples", type=int, default=64, help="size of the synthetic training set")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the model and the sampler")
    parser.add_argument("--out-dir", type=pathlib.Path, required=True, help="where rank 0 writes final.pt, losses.json")
    parser.add_argument("--checkpoint", type=pathlib.Path, default=None, help="checkpoint file (rank 0 writes it)")
    parser.add_argument("--checkpoint-every", type=int, default=1, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="start from --checkpoint when it exists")
    parser.add_argument("--stop-after-step", type=int, default=None,
                        help=f"exit abruptly (status {STOPPED_EXIT_CODE}) after this step's checkpoint")
    parser.add_argument("--backend", default=None, help="gloo or nccl; default: nccl with CUDA, else gloo")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.global_batch_size < 1 or args.checkpoint_every < 1:
        parser.error("--steps, --global-batch-size and --checkpoint-every must be at least 1")
    if args.global_batch_size > args.num_examples:
        parser.error(f"--global-batch-size ({args.global_batch_size}) exceeds --num-examples ({args.num_examples})")
    if (args.resume or args.stop_after_step is not None) and args.checkpoint is None:
        parser.error("--resume and --stop-after-step need --checkpoint")
    return args


def setup():
    """``(rank, world_size, device)``: join the process group when ``torchrun`` started this process."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # one GPU per process
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return rank, world_size, device


def save_checkpoint(path, model, optimizer, step, losses):
    """Write the checkpoint atomically: a temporary file, then a rename (a crash mid-write keeps the old one)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "losses": list(losses)}, temporary)
    os.replace(temporary, path)


def train(args):
    """Train on every rank; return rank 0's losses (one per step)."""
    rank, world_size, device = setup()
    distributed = world_size > 1 or "WORLD_SIZE" in os.environ
    if distributed:
        backend = args.backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=60))
    if args.global_batch_size % world_size:
        raise SystemExit(f"--global-batch-size ({args.global_batch_size}) must be divisible by the number of "
                         f"processes ({world_size})")
    dataset = make_dataset(args.num_examples, args.seed)
    # every rank gets len(dataset) // world_size examples of each epoch's permutation (seeded by seed + epoch)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=args.seed,
                                 drop_last=True)
    loader = DataLoader(dataset, batch_size=args.global_batch_size // world_size, sampler=sampler, drop_last=True)
    steps_per_epoch = len(loader)
    model = make_model(args.seed).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    step, losses = 0, []
    if args.resume and args.checkpoint is not None and args.checkpoint.exists():
        state = torch.load(args.checkpoint, map_location=device)  # every rank reads the file rank 0 wrote
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, losses = state["step"], list(state["losses"])
        if rank == 0:
            print(f"resumed from {args.checkpoint} at step {step}")
    network = DistributedDataParallel(model) if distributed else model  # after loading: DDP copies rank 0's weights
    while step < args.steps:
        epoch, done_in_epoch = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        for images, labels in itertools.islice(loader, done_in_epoch, None):  # skip what a resumed run did
            images, labels = images.to(device), labels.to(device)
            loss = F.cross_entropy(network(images), labels)  # the mean over this rank's share of the batch
            optimizer.zero_grad()
            loss.backward()  # DDP: gradients all-reduced (averaged) across ranks here
            optimizer.step()
            step += 1
            mean_loss = loss.detach().clone()
            if distributed:
                dist.all_reduce(mean_loss, op=dist.ReduceOp.SUM)
                mean_loss /= world_size  # the mean loss of the global batch (the shards are the same size)
            losses.append(float(mean_loss))
            if args.checkpoint is not None and (step % args.checkpoint_every == 0 or step == args.steps):
                if rank == 0:  # one writer: every replica holds the same weights
                    save_checkpoint(args.checkpoint, model, optimizer, step, losses)
                if distributed:
                    dist.barrier()  # nobody goes on (or stops) before the checkpoint is on disk
            if args.stop_after_step is not None and step == args.stop_after_step:
                if rank == 0:
                    print(f"stopping abruptly after step {step}", flush=True)
                os._exit(STOPPED_EXIT_CODE)  # no clean-up, as a crash: the checkpoint is all that is left
            if step == args.steps:
                break
    if rank == 0:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save({name: tensor.cpu() for name, tensor in model.state_dict().items()}, args.out_dir / "final.pt")
        (args.out_dir / "losses.json").write_text(json.dumps({"world_size": world_size, "losses": losses}))
        print(f"world size {world_size}, {step} steps, final loss {losses[-1]:.4f}")
    if distributed:
        dist.destroy_process_group()
    return losses


def main(argv=None):
    train(parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
