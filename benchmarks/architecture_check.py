"""How long ``check_same_architecture`` takes on full-size networks at 224x224 (issue: at most 10 s each here).

Grading a class runs the check once per learner, so its time matters. For each network the learner's model is a
fresh torchvision instance (other weights, the same architecture) and the reference another one; the check redraws
the reference's weights, pairs the parameters, traces both forward passes and compares every operation.

    .venv/bin/python benchmarks/architecture_check.py [--repeats 3] [--batch 1]

Prints one row per network: parameters, traced operations, best and median seconds of the whole check, and the
time of one plain forward pass for scale.
"""
import argparse
import contextlib
import io

import torch
import torchvision

from course_utils.checks.architectures import check_same_architecture
from course_utils.timing import time_call

NETWORKS = {
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "vit_b_16": lambda: torchvision.models.vit_b_16(weights=None),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed checks per network (default 3)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the check's input (default 1)")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    arguments = parser.parse_args()
    shape = (arguments.batch, 3, arguments.size, arguments.size)
    print(f"check_same_architecture at input {shape}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'network':<10}{'parameters':>14}{'check best':>12}{'median':>9}{'forward':>9}  result")
    for name, build in NETWORKS.items():
        torch.manual_seed(0)
        learner, reference = build().eval(), build().eval()
        printed = io.StringIO()

        def check():
            with contextlib.redirect_stdout(printed):
                check_same_architecture(learner, reference, shape, name=name)

        timing = time_call(check, repeats=arguments.repeats, warmup=0)
        x = torch.randn(shape)
        with torch.no_grad():
            forward = time_call(lambda: reference(x), repeats=3, warmup=1)
        parameters = sum(p.numel() for p in reference.parameters())
        result = printed.getvalue().strip().splitlines()[-1]
        print(f"{name:<10}{parameters:>14,}{timing.best:>11.2f}s{timing.median:>8.2f}s{forward.best:>8.2f}s  "
              f"{result[:60]}")


if __name__ == "__main__":
    main()
