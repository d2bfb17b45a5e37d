"""The boundary between a check and the learner's code: plain data (``plain_data``) and the protocol (``learner``)."""
import numpy as np
import pytest
import torch

from course_utils.checks import common, learner, plain_data


def round_trip(value, keep=None):
    return plain_data.decode(*plain_data.from_bytes(plain_data.to_bytes(*plain_data.encode(value, keep=keep))),
                             remote=lambda body: ("handle", body))


@pytest.mark.parametrize("value", [
    None, True, 3, -2**70, 1.5, float("inf"), "text \ud800", (1, [2.0, {"a": None}]), {(1, 2): "pair"},
    np.arange(6.0).reshape(2, 3), np.float32(2.5), np.array([True, False]), np.zeros((0, 4), dtype=np.int64),
])
def test_plain_values_cross_unchanged(value):
    received = round_trip(value)
    if isinstance(value, np.ndarray):
        assert type(received) is np.ndarray and received.dtype == value.dtype and np.array_equal(received, value)
    elif isinstance(value, np.generic):
        assert type(received) is type(value) and received == value
    else:
        assert received == value and type(received) is type(value)


def test_tensors_cross_with_dtype_shape_and_grad_flag():
    for tensor in (torch.randn(2, 3), torch.arange(4).view(2, 2).t(), torch.randn(3).to(torch.bfloat16),
                   torch.ones(2, requires_grad=True)):
        received = round_trip(tensor)
        assert received.dtype == tensor.dtype and received.shape == tensor.shape
        assert torch.equal(received, tensor.detach()) and received.requires_grad == tensor.requires_grad


def test_lying_subclasses_cross_as_their_raw_values():
    class Liar(np.ndarray):
        def __array_ufunc__(self, *args, **kwargs):
            return True

        def __eq__(self, other):
            return True

    class Always(float):
        def __eq__(self, other):
            return True

        def __ne__(self, other):
            return False

    array = round_trip(np.arange(3.0).view(Liar))
    assert type(array) is np.ndarray and not np.array_equal(array, np.ones(3))
    number = round_trip(Always(2.0))
    assert type(number) is float and number != 3.0


def test_objects_cross_only_as_handles_and_only_where_allowed():
    with pytest.raises(plain_data.PlainDataError, match="builtin_function_or_method cannot be sent"):
        plain_data.encode(len)
    assert round_trip([len], keep=lambda obj: {"handle": 1, "type": "builtin"})[0][0] == "handle"
    with pytest.raises(plain_data.PlainDataError, match="reference where only plain data"):
        plain_data.decode({"object": {"handle": 1}}, [])


@pytest.mark.parametrize("header, buffers, match", [
    ({"ndarray": {"dtype": "object", "shape": [1], "buffer": 0}}, [b"x"], "invalid ndarray"),
    ({"ndarray": {"dtype": "float64", "shape": [2], "buffer": 0}}, [b"12345678"], "needs 16 bytes"),
    ({"ndarray": {"dtype": "float64", "shape": [-1], "buffer": 0}}, [b""], "invalid shape"),
    ({"ndarray": {"dtype": "float64", "shape": [1], "buffer": 3}}, [b"12345678"], "refers to buffer 3"),
    ({"pickle": "gASV"}, [], "invalid plain-data item with tag"),
    ({"tuple": [{"list": []}], "extra": 1}, [], "invalid plain-data item"),
])
def test_invalid_messages_are_refused(header, buffers, match):
    with pytest.raises(plain_data.PlainDataError, match=match):
        plain_data.decode(header, buffers)


def test_deep_nesting_and_garbage_bytes_are_refused():
    deep = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(plain_data.PlainDataError, match="nested deeper"):
        plain_data.encode(deep)
    with pytest.raises(plain_data.PlainDataError, match="not a plain-data message"):
        plain_data.from_bytes(b"\x80\x04pickle")


def test_loopback_calls_copy_back_in_place_changes_and_rebuild_errors():
    def fill(array, state):
        array[:] = 7.0
        state["count"] = state.get("count", 0) + 1
        return array.sum()

    def broken(x):
        raise ValueError("the learner's bug")

    class Cache:
        pass

    with learner.Loopback({"fill": fill, "broken": broken, "make": Cache}) as kernel:
        array, state = np.zeros(3), {}
        total = common.call(kernel.handle("fill"), array, state, case="fill")
        assert total == 21.0 and np.array_equal(array, [7, 7, 7]) and state == {"count": 1}
        with pytest.raises(AssertionError, match="case b: broken raised ValueError: the learner's bug"):
            common.call(kernel.handle("broken"), 1, case="case b")
        cache = common.call(kernel.handle("make"), case="make")
        assert learner.is_learner_object(cache) and cache.type_name == "Cache"
        with pytest.raises(NameError, match="name 'missing' is not defined"):
            kernel.handle("missing")


def test_a_probe_must_be_a_course_function_named_learner():
    with learner.Loopback({}) as kernel:
        reply = kernel.server.serve(*plain_data.encode({"operation": "probe", "probe": "os:system",
                                                        "args": ("true",), "kwargs": {}}))
        assert "not a probe" in str(plain_data.decode(*reply))
