"""How much ``course_utils.training.fit`` costs over a bare PyTorch loop (target: at most 5%).

    python benchmarks/training_overhead.py [--repeats 5] [--epochs 2]

Both loops train the same small CNN on the bundled MNIST digits with the same
optimizer, batches and seed; they are run interleaved, and the median epoch time of
each is compared. fit's progress bar is on, as learners see it.
"""
import argparse

import torch
from torch import nn

from course_utils.data import mnist_5k_loaders
from course_utils.device import get_device, seed_everything
from course_utils.timing import Timing, time_call
from course_utils.training import fit


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )


def bare_loop(model, loader, epochs, device):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.to(device).train()

    def train():
        for _ in range(epochs):
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()

    # one run: a second would continue training the same model; the rounds in main() repeat it
    return time_call(train, repeats=1, warmup=0, device=device).best / epochs


def with_fit(model, loader, epochs, device):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = fit(model, loader, epochs=epochs, optimizer=optimizer, device=device, mixed_precision=False)
    return sum(history.seconds) / epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    device = get_device()
    train_loader, _ = mnist_5k_loaders(batch_size=64)
    bare, course = [], []
    for repeat in range(args.repeats + 1):  # the first round warms up
        seed_everything(repeat)
        b = bare_loop(small_cnn(), train_loader, args.epochs, device)
        seed_everything(repeat)
        c = with_fit(small_cnn(), train_loader, args.epochs, device)
        if repeat:
            bare.append(b)
            course.append(c)
    b, c = Timing(bare).median, Timing(course).median
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.repeats} repeats x {args.epochs} epochs")
    print(f"bare loop: {b * 1000:8.1f} ms/epoch (median)")
    print(f"fit      : {c * 1000:8.1f} ms/epoch (median)")
    print(f"overhead : {100 * (c / b - 1):+.1f}%")


if __name__ == "__main__":
    main()
