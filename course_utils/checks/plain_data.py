"""Plain data: what crosses between the grader and a learner's kernel (``course_utils.checks.learner``).

A value is encoded as a JSON-able *header* and a list of raw byte *buffers*:

* ``None``, ``bool``, ``int``, ``float``, ``str``: themselves (a subclass is converted to the built-in type);
* tuples, lists and dicts of plain data: ``{"tuple": [...]}``, ``{"list": [...]}``, ``{"dict": [[key, value], ...]}``;
* NumPy arrays and scalars of a numeric or boolean dtype, torch tensors, ``torch.Size``, ``torch.dtype`` and
  ``torch.device``: the dtype, the shape and the index of a buffer holding the raw values (C order), e.g.
  ``{"ndarray": {"dtype": "float64", "shape": [2, 3], "buffer": 0}}``;
* a NumPy random ``Generator``: its bit generator's name and state (a new generator in the same state);
* an exception: its type's name and its message, decoded as the built-in exception of that name or a
  ``LearnerError`` subclass named like it (``rebuild_error``);
* anything else (a function, a class, an ``nn.Module`` ...): where the encoder is given ``keep``, a reference to
  an object that stays where it is, ``{"object": {"handle": 3, "type": "BasicBlock", ...}}``; otherwise an error.

Never a pickle and never an object with methods: decoding builds only the types above (and ``LearnerObject``
references through the caller's ``remote``), checks every dtype, shape and buffer size, and refuses deep nesting
or oversized data with ``PlainDataError``. ``to_bytes``/``from_bytes`` put a header and its buffers into one
bytes object (used by the in-process loopback of the tests).
"""
import json
import math
import struct
import sys

import numpy as np

MAX_DEPTH = 64  # nested containers deeper than this are refused
MAX_ITEMS = 1_000_000  # containers, scalars and arrays in one message
MAX_BYTES = 4 * 2**30  # raw array bytes in one message

NUMPY_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "float16", "float32", "float64", "complex64", "complex128"}
BIT_GENERATORS = {"PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"}
TORCH_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "float16", "bfloat16", "float32", "float64",
                "complex64", "complex128"}


class PlainDataError(ValueError):
    """A value that cannot be sent, or a message that is not valid plain data."""


class LearnerError(Exception):
    """Base of the exceptions rebuilt from a learner's exception that crossed as plain data."""


def describe_error(error):
    """``{"type", "message"}`` of an exception, safe to send (its ``__str__`` may itself raise)."""
    try:
        message = str(error)
    except Exception:
        message = "<the exception's message could not be read>"
    return {"type": type(error).__name__, "message": message[:5000]}


def rebuild_error(info):
    """An exception like the learner's from ``{"type": name, "message": text}``: the built-in type when it is one."""
    import builtins

    name = str(info.get("type", "Exception"))[:100]
    message = str(info.get("message", ""))[:5000]
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception) and builtin.__module__ == "builtins":
        try:
            return builtin(message)
        except Exception:
            return LearnerError(message)
    return type(name if name.isidentifier() else "LearnerException", (LearnerError,), {})(message)


def _torch():
    import torch

    return torch


def _loaded_torch():
    """torch if this process has imported it (a value can only be a tensor then), else None."""
    return sys.modules.get("torch")


# --------------------------------------------------------------------------- encoding

def encode(value, keep=None, refer=None):
    """``(header, buffers)`` for ``value``.

    ``keep(obj)`` returns the header of an object that stays on this side (a learner's function or model);
    ``refer(obj)`` returns the header of a reference to an object of the other side, or None when ``obj`` is not
    one. Without ``keep`` a value that is not plain data raises ``PlainDataError``.
    """
    buffers = []
    count = [0]

    def array(kind, dtype, shape, data):
        buffers.append(data)
        return {kind: {"dtype": dtype, "shape": [int(s) for s in shape], "buffer": len(buffers) - 1}}

    def walk(item, depth):
        count[0] += 1
        if depth > MAX_DEPTH or count[0] > MAX_ITEMS:
            raise PlainDataError(f"the value is nested deeper than {MAX_DEPTH} levels or holds over {MAX_ITEMS:,} items")
        if refer is not None:
            reference = refer(item)
            if reference is not None:
                return reference
        if item is None or type(item) in (bool, str):
            return item
        if type(item) is int:
            return item if abs(item) < 2**53 else {"int": str(item)}
        if type(item) is float:
            return item if math.isfinite(item) else {"float": repr(item)}
        if isinstance(item, np.ndarray):
            item = np.asarray(item).view(np.ndarray) if type(item) is not np.ndarray else item
            if item.dtype.name not in NUMPY_DTYPES:
                return walk_object(item, f"a NumPy array of dtype {item.dtype}")
            return array("ndarray", item.dtype.name, item.shape, np.ascontiguousarray(item).tobytes())
        if isinstance(item, np.generic) and np.dtype(type(item)).name in NUMPY_DTYPES:
            scalar = np.asarray(item)
            return array("npscalar", scalar.dtype.name, (), scalar.tobytes())
        torch = _loaded_torch()
        if torch is not None and isinstance(item, torch.Tensor):
            return walk_tensor(item)
        if torch is not None:
            if isinstance(item, torch.Size):
                return {"size": [int(s) for s in item]}
            if isinstance(item, torch.dtype):
                return {"torch_dtype": str(item).removeprefix("torch.")}
            if isinstance(item, torch.device):
                return {"device": str(item)}
        # subclasses of the built-in types: their built-in value, whatever their own methods say
        if isinstance(item, int):
            return walk(int.__int__(item), depth)
        if isinstance(item, float):
            return walk(float.__float__(item), depth)
        if isinstance(item, str):
            return str.__str__(item)
        if isinstance(item, BaseException):
            return {"exception": describe_error(item)}
        if type(item) is np.random.Generator and type(item.bit_generator).__name__ in BIT_GENERATORS:
            return {"generator": walk(item.bit_generator.state, depth + 1)}
        if isinstance(item, tuple) and type(item) is not tuple and keep is not None:
            return walk_object(item, f"a {type(item).__name__}")  # a named tuple (a cache) keeps its type
        # containers (and their subclasses, named tuples included) by their built-in contents
        if isinstance(item, tuple):
            return {"tuple": [walk(v, depth + 1) for v in tuple.__iter__(item)]}
        if isinstance(item, list):
            return {"list": [walk(v, depth + 1) for v in list.__iter__(item)]}
        if isinstance(item, dict):
            return {"dict": [[walk(k, depth + 1), walk(v, depth + 1)] for k, v in dict.items(item)]}
        return walk_object(item, f"a {type(item).__name__}")

    def walk_tensor(item):
        torch = _torch()
        tensor = item.detach()
        if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type == "meta":
            return walk_object(item, f"a {tensor.layout} tensor")
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in TORCH_DTYPES:
            return walk_object(item, f"a tensor of dtype {tensor.dtype}")
        tensor = tensor.cpu().contiguous()
        raw = tensor.view(torch.int16) if dtype == "bfloat16" else tensor
        header = array("tensor", dtype, tensor.shape, raw.numpy().tobytes())
        header["tensor"]["requires_grad"] = bool(item.requires_grad)
        return header

    def walk_object(item, what):
        if keep is None:
            raise PlainDataError(f"{what} cannot be sent as plain data")
        return {"object": keep(item)}

    header = walk(value, 0)
    if sum(len(b) for b in buffers) > MAX_BYTES:
        raise PlainDataError(f"the value holds over {MAX_BYTES / 2**30:g} GiB of array data")
    return header, buffers


# --------------------------------------------------------------------------- decoding

def _shape(value):
    if not isinstance(value, list) or len(value) > 32 or not all(type(s) is int and s >= 0 for s in value):
        raise PlainDataError(f"invalid shape {value!r:.80}")
    return tuple(value)


def decode(header, buffers, remote=None):
    """The value ``header`` and ``buffers`` encode; ``remote(description)`` turns an object reference into a handle.

    Raises ``PlainDataError`` for anything that is not valid plain data (an unknown tag, a dtype outside the
    allowed ones, a buffer whose size does not match its dtype and shape, nesting deeper than ``MAX_DEPTH``).
    """
    count = [0]
    buffers = list(buffers)

    def raw(spec, allowed, kind):
        if not isinstance(spec, dict) or spec.get("dtype") not in allowed or type(spec.get("buffer")) is not int:
            raise PlainDataError(f"invalid {kind} description {spec!r:.120}")
        index = spec["buffer"]
        if not 0 <= index < len(buffers):
            raise PlainDataError(f"{kind} refers to buffer {index}; the message has {len(buffers)}")
        shape = _shape(spec.get("shape"))
        data = buffers[index]
        data = data.tobytes() if isinstance(data, memoryview) else bytes(data)
        return spec["dtype"], shape, data

    def walk(item, depth):
        count[0] += 1
        if depth > MAX_DEPTH or count[0] > MAX_ITEMS:
            raise PlainDataError(f"the message is nested deeper than {MAX_DEPTH} levels or holds too many items")
        if item is None or type(item) in (bool, int, float, str):
            return item
        if type(item) is not dict or len(item) != 1:
            raise PlainDataError(f"invalid plain-data item {item!r:.120}")
        (tag, body), = item.items()
        if tag == "tuple" and type(body) is list:
            return tuple(walk(v, depth + 1) for v in body)
        if tag == "list" and type(body) is list:
            return [walk(v, depth + 1) for v in body]
        if tag == "dict" and type(body) is list:
            result = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    raise PlainDataError("invalid dict entry")
                key = walk(pair[0], depth + 1)
                try:
                    result[key] = walk(pair[1], depth + 1)
                except TypeError:
                    raise PlainDataError(f"unhashable dict key {key!r:.80}") from None
            return result
        if tag == "int" and type(body) is str and len(body) < 5000:
            return int(body)
        if tag == "float" and body in ("inf", "-inf", "nan"):
            return float(body)
        if tag in ("ndarray", "npscalar"):
            dtype, shape, data = raw(body, NUMPY_DTYPES, tag)
            expected = math.prod(shape) * np.dtype(dtype).itemsize
            if len(data) != expected:
                raise PlainDataError(f"{tag} of dtype {dtype} and shape {shape} needs {expected} bytes, got {len(data)}")
            array = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
            return array[()] if tag == "npscalar" else array
        if tag == "tensor":
            torch = _torch()
            dtype, shape, data = raw(body, TORCH_DTYPES, tag)
            torch_dtype = getattr(torch, dtype)
            itemsize = torch.empty((), dtype=torch_dtype).element_size()
            expected = math.prod(shape) * itemsize
            if len(data) != expected:
                raise PlainDataError(f"tensor of dtype {dtype} and shape {shape} needs {expected} bytes, got {len(data)}")
            numpy_dtype = "int16" if dtype == "bfloat16" else dtype
            tensor = torch.from_numpy(np.frombuffer(data, dtype=numpy_dtype).reshape(shape).copy())
            if dtype == "bfloat16":
                tensor = tensor.view(torch.bfloat16)
            if body.get("requires_grad") is True and tensor.is_floating_point():
                tensor.requires_grad_(True)
            return tensor
        if tag == "size" and type(body) is list:
            return _torch().Size(_shape(body))
        if tag == "torch_dtype" and body in TORCH_DTYPES:
            return getattr(_torch(), body)
        if tag == "device" and type(body) is str and len(body) < 40:
            return _torch().device(body)
        if tag == "generator":
            state = walk(body, depth + 1)
            if not isinstance(state, dict) or state.get("bit_generator") not in BIT_GENERATORS:
                raise PlainDataError("invalid random generator state")
            bit_generator = getattr(np.random, state["bit_generator"])()
            try:
                bit_generator.state = state
            except (TypeError, ValueError, KeyError) as error:
                raise PlainDataError(f"invalid random generator state: {error}") from None
            return np.random.Generator(bit_generator)
        if tag == "exception" and type(body) is dict:
            return rebuild_error(body)
        if tag == "object" and type(body) is dict:
            if remote is None:
                raise PlainDataError("an object reference where only plain data was expected")
            return remote(body)
        if tag == "ref" and type(body) is dict:
            if remote is None:
                raise PlainDataError("a reference where only plain data was expected")
            return remote({"ref": body})
        raise PlainDataError(f"invalid plain-data item with tag {tag!r:.40}")

    return walk(header, 0)


# --------------------------------------------------------------------------- one bytes object

_MAGIC = b"CGPD1"


def to_bytes(header, buffers):
    """``header`` and ``buffers`` in one bytes object: magic, JSON length, JSON, then each buffer with its length."""
    text = json.dumps(header, allow_nan=False, ensure_ascii=True).encode("ascii")
    parts = [_MAGIC, struct.pack("<QQ", len(text), len(buffers)), text]
    for buffer in buffers:
        parts += [struct.pack("<Q", len(buffer)), bytes(buffer)]
    return b"".join(parts)


def from_bytes(data, max_bytes=MAX_BYTES + 2**26):
    """``(header, buffers)`` from ``to_bytes``'s output; ``PlainDataError`` for anything else."""
    if not isinstance(data, (bytes, bytearray)) or not data.startswith(_MAGIC) or len(data) > max_bytes:
        raise PlainDataError("not a plain-data message")
    view = memoryview(data)
    position = len(_MAGIC)
    try:
        text_length, count = struct.unpack_from("<QQ", view, position)
        position += 16
        header = json.loads(bytes(view[position:position + text_length]).decode("ascii"))
        position += text_length
        buffers = []
        for _ in range(count):
            (length,) = struct.unpack_from("<Q", view, position)
            position += 8
            if position + length > len(data):
                raise PlainDataError("a buffer runs past the end of the message")
            buffers.append(bytes(view[position:position + length]))
            position += length
    except (struct.error, UnicodeDecodeError, ValueError) as error:
        raise PlainDataError(f"not a plain-data message: {error}") from None
    if position != len(data):
        raise PlainDataError("trailing bytes after the message")
    return header, buffers
