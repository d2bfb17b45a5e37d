"""course_utils.timing against a scripted clock: each call of the timed function moves the clock on by a known amount."""
import time

import pytest
import torch

from course_utils import timing
from course_utils.timing import Timing, time_call, time_interleaved


@pytest.fixture
def clock(monkeypatch):
    """A fake ``time.perf_counter``; ``clock.takes(seconds)`` is a function that lasts ``seconds`` on it."""

    class Clock:
        def __init__(self):
            self.now = 0.0  # seconds
            self.calls = []  # the name of each function call, in order

        def takes(self, seconds, name=None):
            def function():
                self.calls.append(name)
                self.now += seconds

            return function

        def takes_in_turn(self, durations):
            durations = list(durations)

            def function():
                self.calls.append(None)
                self.now += durations.pop(0)

            return function

    fake = Clock()
    monkeypatch.setattr(timing.time, "perf_counter", lambda: fake.now)
    return fake


def test_best_and_median_of_the_timed_calls(clock):
    result = time_call(clock.takes_in_turn([9.0, 3.0, 1.0, 2.0, 5.0, 4.0]), repeats=5, warmup=1)
    assert result.times == (3.0, 1.0, 2.0, 5.0, 4.0), "the warm-up call (9 s) is not timed"
    assert result.best == 1.0 and result.median == 3.0


def test_warmup_calls_come_first_and_are_not_timed(clock):
    result = time_call(clock.takes(0.5), repeats=3, warmup=2)
    assert len(clock.calls) == 5 and result.times == (0.5, 0.5, 0.5)
    assert time_call(clock.takes(0.5), repeats=1, warmup=0).times == (0.5,)


def test_interleaved_runs_one_call_of_each_per_round(clock):
    results = time_interleaved({"slow": clock.takes(2.0, "slow"), "fast": clock.takes(1.0, "fast")},
                               repeats=2, warmup=1)
    assert clock.calls == ["slow", "fast"] * 3, "one warm-up round, then two timed rounds"
    assert list(results) == ["slow", "fast"]
    assert results["slow"].times == (2.0, 2.0) and results["fast"].times == (1.0, 1.0)


def test_a_sleeping_function_takes_at_least_its_sleep():
    result = time_call(lambda: time.sleep(0.01), repeats=2, warmup=0)
    assert len(result.times) == 2 and result.best >= 0.01


def test_cuda_device_synchronises_around_every_timed_call(clock, monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    function = clock.takes(1.0)
    time_call(lambda: (function(), events.append("call")), repeats=2, warmup=1, device="cuda")
    assert events == ["call"] + ["sync", "call", "sync"] * 2, "warm-up unsynchronised; each timed call between two"
    events.clear()
    time_call(lambda: events.append("call"), repeats=2, warmup=0, device=torch.device("cpu"))
    assert events == ["call", "call"], "no synchronisation off CUDA"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        time_call(lambda: None, device="cuda")


@pytest.mark.parametrize("repeats", [0, -1, 1.5, True, "3"])
def test_repeats_must_be_a_positive_int(repeats):
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        time_call(lambda: None, repeats=repeats)
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        time_interleaved({"f": lambda: None}, repeats=repeats)


@pytest.mark.parametrize("warmup", [-1, 0.5, None])
def test_warmup_must_be_a_non_negative_int(warmup):
    with pytest.raises(ValueError, match="warmup must be an int >= 0"):
        time_call(lambda: None, warmup=warmup)


@pytest.mark.parametrize("call, message", [
    (lambda: time_call(42), "function must be callable; got int"),
    (lambda: time_interleaved({}), "functions must be a non-empty dict"),
    (lambda: time_interleaved([lambda: None]), "functions must be a non-empty dict"),
    (lambda: time_interleaved({"f": None}), r"functions\['f'\] must be callable"),
])
def test_functions_must_be_callable(call, message):
    with pytest.raises(TypeError, match=message):
        call()


@pytest.mark.parametrize("times, message", [((), "at least one time"), ((0.1, -0.2), "non-negative")])
def test_timing_needs_non_negative_times(times, message):
    with pytest.raises(ValueError, match=message):
        Timing(times)


def test_timing_of_a_list_keeps_a_tuple():
    result = Timing([0.3, 0.1, 0.2])
    assert result.times == (0.3, 0.1, 0.2) and result.best == 0.1 and result.median == 0.2
