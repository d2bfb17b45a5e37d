"""Timing a function: the best and the median wall time of repeated calls (introduced in
``notebooks/01_convolution.ipynb``, section 8 "How much faster?").

A wall-clock time on a shared machine is noisy: other programs take the cores for a while.
So a call is repeated. The fastest run is the one least disturbed by other work (``best``);
the median is what a loop of calls typically sees (``median``). The first calls are slow for
reasons that have nothing to do with the code (caches, memory allocation, PyTorch choosing
its algorithm), so ``warmup`` untimed calls come first. A CUDA call returns before the GPU
has finished: with ``device`` on CUDA the GPU is synchronised before and after every timed
call, so that each time is the work of that call.

``time_call`` times one function in a block of consecutive calls, the way a training loop
calls a layer; ``time_interleaved`` times several, one call of each per round, so that slow
spells of a shared machine hit all of them alike (``benchmarks/numpy_conv.py`` uses both).
"""
import statistics
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """The wall times of repeated calls of one function."""

    times: tuple  # seconds of each timed call, in the order they ran

    def __post_init__(self):
        times = tuple(self.times)
        if not times:
            raise ValueError("Timing needs at least one time; got none")
        if any(not isinstance(t, (int, float)) or t < 0 for t in times):
            raise ValueError(f"Timing's times must be non-negative numbers of seconds; got {times!r}")
        object.__setattr__(self, "times", times)

    @property
    def best(self):
        """The shortest time, in seconds: the call least disturbed by other programs."""
        return min(self.times)

    @property
    def median(self):
        """The median time, in seconds: what a typical call took."""
        return statistics.median(self.times)


def _check_counts(repeats, warmup):
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1 (the number of timed calls); got {repeats!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0 (the number of untimed calls first); got {warmup!r}")


def _synchronizer(device):
    """A function that waits for the GPU when ``device`` is a CUDA device, else does nothing."""
    if device is None or torch.device(device).type != "cuda":
        return lambda: None
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was given but CUDA is not available here")
    return lambda: torch.cuda.synchronize(device)


def _timed_call(function, synchronize):
    synchronize()  # work queued before this call is not this call's
    start = time.perf_counter()
    function()
    synchronize()
    return time.perf_counter() - start


def time_call(function, repeats=5, warmup=1, device=None):
    """Call ``function()`` ``warmup`` times untimed, then ``repeats`` times timed.

    Args:
        function: called with no arguments (wrap arguments in a ``lambda``).
        repeats: timed calls, at least 1.
        warmup: untimed calls first, 0 or more.
        device: where ``function`` computes (``"cuda"``, a ``torch.device``, ...); on
            CUDA the GPU is synchronised around each timed call. ``None``: the CPU.

    Returns:
        a ``Timing``: ``.times`` (seconds of each call), ``.best``, ``.median``.
    """
    if not callable(function):
        raise TypeError(f"function must be callable; got {type(function).__name__}")
    _check_counts(repeats, warmup)
    synchronize = _synchronizer(device)
    for _ in range(warmup):
        function()
    return Timing(tuple(_timed_call(function, synchronize) for _ in range(repeats)))


def time_interleaved(functions, repeats=5, warmup=1, device=None):
    """Time several functions in rounds of one call of each, in the dict's order.

    Args:
        functions: ``{name: function}``, each called with no arguments.
        repeats: timed rounds, at least 1.
        warmup: untimed rounds first, 0 or more.
        device: as in ``time_call``.

    Returns:
        ``{name: Timing}``, in the order of ``functions``.
    """
    if not isinstance(functions, dict) or not functions:
        raise TypeError(f"functions must be a non-empty dict of name -> function; got {functions!r}")
    for name, function in functions.items():
        if not callable(function):
            raise TypeError(f"functions[{name!r}] must be callable; got {type(function).__name__}")
    _check_counts(repeats, warmup)
    synchronize = _synchronizer(device)
    for _ in range(warmup):
        for function in functions.values():
            function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(_timed_call(function, synchronize))
    return {name: Timing(tuple(values)) for name, values in times.items()}
