"""Tracing a forward pass: every operation, the module running it, its inputs and its output.

Introduced with the architecture check of ``notebooks/06_lenet_alexnet.ipynb``; chapter 14 uses it to look inside
a network and chapter 18 to see where the time goes.

``forward_operations(model, x)`` runs ``model(x)`` once under a ``torch.overrides.TorchFunctionMode`` and returns
``(output, operations)``: one ``Operation`` per torch function that computes something new (a convolution, an
activation, an addition, a mean, ...), in call order. Functions that only move values around (``view``,
``reshape``, ``flatten``, ``permute``, ``transpose``, indexing, ``chunk``, ``contiguous``, ...) are not operations:
``nn.Flatten()``, ``torch.flatten`` and ``x.view(N, -1)`` are equally right. They are followed, though, so every
operation knows which earlier operations its inputs came from (``Operation.inputs``) and which parameters it used
(``Operation.parameters``), and ``reaches_output`` says whether its result was used at all.

``nn.ReLU()`` and ``F.relu`` record the same operation (``relu``), since modules call the functional form. Calls
made inside a recorded function are not recorded (``F.multi_head_attention_forward`` is one operation).

``capture_outputs(model, x, module_names)`` is the simpler tool for looking at feature maps: forward hooks on named
modules.
"""
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

INPUT = -1  # the source index of the model's input in ``Operation.inputs``

# Functions whose result holds the values of their input in another layout (or a part of them): followed, not
# recorded. Names are those of the torch function or Tensor method, trailing "_" removed.
LAYOUT_FUNCTIONS = frozenset({
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "t", "swapaxes",
    "swapdims", "movedim", "moveaxis", "contiguous", "squeeze", "unsqueeze", "expand", "expand_as", "broadcast_to",
    "getitem", "narrow", "select", "chunk", "split", "tensor_split", "split_with_sizes", "unbind", "index_select",
    "clone", "detach", "to", "float", "double", "half", "bfloat16", "type", "type_as", "cpu", "cuda",
    "repeat", "tile", "flip", "roll", "as_strided", "unfold_copy", "alias", "get",
})

# Calls that compute nothing worth recording (properties, sizes, assertions, factory functions).
IGNORED_FUNCTIONS = frozenset({
    "dim", "size", "numel", "get_device", "is_floating_point", "is_contiguous", "assert", "has_torch_function",
    "zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like", "full_like", "arange", "tensor",
    "randn", "rand", "randint", "linspace", "eye", "as_tensor", "requires_grad", "set", "setitem", "len",
    "item", "tolist", "bool", "int", "long", "eq", "ne", "lt", "le", "gt", "ge", "any", "all", "isfinite",
})

# Call arguments worth keeping for each kind, by position after the input tensor (keywords by the same names).
_ARGUMENTS = {
    "conv": ("weight", "bias", "stride", "padding", "dilation", "groups"),
    "conv_transpose": ("weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
    "max_pool": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "avg_pool": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "adaptive": ("output_size",),
    "dropout": ("p", "training"),
    "hardtanh": ("min_val", "max_val"),
    "clamp": ("min", "max"),
    "clamp_min": ("min",),
    "clamp_max": ("max",),
    "threshold": ("threshold", "value"),
    "leaky_relu": ("negative_slope",),
    "elu": ("alpha",),
    "softmax": ("dim",),
    "mean": ("dim", "keepdim"),
    "cat": ("dim",),
    "layer_norm": ("normalized_shape", "weight", "bias", "eps"),
    "group_norm": ("num_groups", "weight", "bias", "eps"),
    "batch_norm": ("running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
}
_ALIASES = {
    "iadd": "add", "radd": "add", "isub": "sub", "rsub": "sub", "imul": "mul", "rmul": "mul", "itruediv": "div",
    "truediv": "div", "rtruediv": "div", "true_divide": "div", "divide": "div", "multiply": "mul",
    "subtract": "sub", "concat": "cat", "concatenate": "cat", "clip": "clamp", "max_pool2d_with_indices": "max_pool2d",
    "max_pool1d_with_indices": "max_pool1d", "max_pool3d_with_indices": "max_pool3d", "mm": "matmul",
    "bmm": "matmul", "rmatmul": "matmul", "native_multi_head_attention": "multi_head_attention_forward",
    "pow": "pow", "ipow": "pow", "rpow": "pow", "neg": "neg", "sqrt": "sqrt", "rsqrt": "rsqrt",
}


@dataclass
class Operation:
    """One recorded operation of a forward pass."""

    index: int  # its position in the list of operations
    kind: str  # the torch function, e.g. "conv2d", "relu", "add" ("__iadd__" and "add_" are "add")
    module: str  # path of the innermost module running it, e.g. "layer1.0.conv1" ("" for the model's own forward)
    module_type: str  # that module's class, e.g. "Conv2d" ("" when no module is known)
    output_shape: tuple  # shape of the output, batch included
    output: torch.Tensor = field(default=None, repr=False)  # a detached copy of the output (when kept)
    inputs: list = field(default_factory=list, repr=False)  # per tensor argument, the frozenset of source indices
    parameters: list = field(default_factory=list, repr=False)  # (parameter name, argument position) it used
    arguments: dict = field(default_factory=dict)  # call arguments worth comparing, e.g. {"stride": 2}
    depends_on_input: bool = True  # False for computations on parameters alone
    reaches_output: bool = True  # False when nothing derived from its result reaches the model's output

    def where(self):
        """``"conv2d (layer1.0.conv1, Conv2d)"``: what and where, for messages."""
        if not self.module_type:
            return f"{self.kind} (in the model's forward)" if self.module == "" else self.kind
        place = self.module or "the model's forward"
        return f"{self.kind} ({place}, {self.module_type})"

    @property
    def sources(self):
        """Every operation (or ``INPUT``) whose result reaches this one's tensor inputs."""
        return frozenset().union(*self.inputs) if self.inputs else frozenset()


def kind_of(func):
    """The name an operation is recorded under: ``relu_`` -> ``relu``, ``__iadd__`` -> ``add``."""
    name = getattr(func, "__name__", None) or str(func)
    name = name.strip("_")
    return _ALIASES.get(name, name)


def _argument_names(kind):
    for prefix in ("conv_transpose", "conv", "max_pool", "avg_pool", "adaptive"):
        if kind.startswith(prefix):
            return _ARGUMENTS[prefix]
    if kind.startswith("dropout") or kind.endswith("dropout"):
        return _ARGUMENTS["dropout"]
    return _ARGUMENTS.get(kind, ())


def _plain(value):
    """A call argument as a plain, comparable value (tuples for sizes; tensors are left out)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (tuple, list, torch.Size)) and all(isinstance(v, (bool, int, float)) for v in value):
        return tuple(value)
    return None


def _arguments(kind, args, kwargs):
    names = _argument_names(kind)
    values = {}
    for name, value in zip(names, args[1:]):
        values[name] = value
    for name in names:
        if name in kwargs:
            values[name] = kwargs[name]
    if kind.startswith("conv") and isinstance(values.get("weight"), torch.Tensor):
        values["kernel_size"] = tuple(values["weight"].shape[2:])  # (KH, KW) of a (F, C/groups, KH, KW) weight
    if kind == "gelu":
        values["approximate"] = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
    return {name: _plain(value) for name, value in values.items()
            if not isinstance(value, torch.Tensor) and _plain(value) is not None}


def _tensors(value, position):
    """``(position, tensor)`` for every tensor in an argument (lists such as ``torch.cat``'s included)."""
    if isinstance(value, torch.Tensor):
        yield position, value
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{position}[{index}]")


def first_tensor(output):
    """The first tensor of a result (a tensor, a tuple such as ``(values, indices)``, or an object with logits)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    if hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        return output.logits
    return None


@dataclass
class _Provenance:
    """What a tensor of the traced pass is made of."""

    sources: frozenset  # recorded operations (or INPUT) its values come from
    parameters: frozenset  # parameter names it is computed from, for tensors that do not depend on the input
    depends_on_input: bool


class _Tracer(TorchFunctionMode):
    """Records the operations of one forward pass, following every tensor back to what produced it."""

    def __init__(self, module_stack, parameter_names, model_input, keep_outputs):
        super().__init__()
        self.module_stack = module_stack
        self.keep_outputs = keep_outputs
        self.operations = []
        self.provenance = {}  # id(tensor) -> _Provenance
        self.alive = []  # every tensor seen, so that no id is reused during the pass
        for tensor, name in parameter_names:
            self._set(tensor, _Provenance(frozenset(), frozenset({name}), False))
        self._set(model_input, _Provenance(frozenset({INPUT}), frozenset(), True))

    def _set(self, tensor, provenance):
        self.provenance[id(tensor)] = provenance
        self.alive.append(tensor)

    def of(self, tensor):
        return self.provenance.get(id(tensor), _Provenance(frozenset(), frozenset(), False))

    def _write_into(self, target, value):
        old, new = self.of(target), self.of(value) if isinstance(value, torch.Tensor) else None
        if new is None:
            return
        depends = old.depends_on_input or new.depends_on_input
        self._set(target, _Provenance(old.sources | new.sources,
                                      frozenset() if depends else old.parameters | new.parameters, depends))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)  # the mode is off inside: nested calls are not recorded
        kind = kind_of(func)
        if kind == "setitem" and len(args) == 3 and isinstance(args[0], torch.Tensor):
            self._write_into(args[0], args[2])  # x[i] = y: x now holds y's values too
            return result
        if kind in IGNORED_FUNCTIONS or first_tensor(result) is None:
            return result
        arguments = [item for index, value in enumerate(args) for item in _tensors(value, str(index))]
        arguments += [item for name, value in kwargs.items() for item in _tensors(value, name)]
        known = [(position, tensor, self.of(tensor)) for position, tensor in arguments]
        depends = any(p.depends_on_input for _, _, p in known)
        out = first_tensor(result)
        identity = (("dropout" in kind and float(_arguments(kind, args, kwargs).get("p", 0.5)) == 0.0)
                    or (kind in ("cat", "stack") and len(arguments) == 1))  # p=0, or one tensor concatenated: a copy
        if kind in LAYOUT_FUNCTIONS or not depends or not out.is_floating_point() or identity:
            provenance = _Provenance(frozenset().union(*(p.sources for _, _, p in known)),
                                     frozenset().union(*(p.parameters for _, _, p in known)) if not depends
                                     else frozenset(), depends)
            for _, tensor in _tensors(result, ""):
                self._set(tensor, provenance)
            return result
        name, module = self.module_stack[-1] if self.module_stack else ("", None)
        operation = Operation(
            index=len(self.operations), kind=kind, module=name,
            module_type=type(module).__name__ if module is not None else "",
            output_shape=tuple(out.shape),
            output=out.detach().clone() if self.keep_outputs else None,
            inputs=[p.sources for _, _, p in known if p.depends_on_input],
            parameters=[(parameter, position) for position, _, p in known if not p.depends_on_input
                        for parameter in sorted(p.parameters)],
            arguments=_arguments(kind, args, kwargs),
        )
        self.operations.append(operation)
        self._set(out, _Provenance(frozenset({operation.index}), frozenset(), True))
        return result


def _mark_reaching(operations, output_sources):
    """Set ``reaches_output`` on every operation from which something flows into the output."""
    for operation in operations:
        operation.reaches_output = False
    pending = [source for source in output_sources if source != INPUT]
    while pending:
        operation = operations[pending.pop()]
        if operation.reaches_output:
            continue
        operation.reaches_output = True
        pending.extend(source for source in operation.sources if source != INPUT)


def traced_forward(model, x, keep_outputs=True, state=None):
    """``(output, operations, error)`` of one pass; a crash is returned with the operations traced before it.

    ``state`` (parameter and buffer names -> tensors) stands in for the model's own, as in
    ``torch.func.functional_call``, without changing the model. Runs without gradients, in the model's mode.
    """
    stack, hooks = [], []
    modules = model.named_modules() if isinstance(model, nn.Module) else ()
    for name, module in modules:
        def push(module, inputs, name=name):
            stack.append((name, module))

        def pop(module, inputs, output):
            if stack:
                stack.pop()

        hooks.append(module.register_forward_pre_hook(push))
        hooks.append(module.register_forward_hook(pop))
    if state is not None:
        parameter_names = [(tensor, name) for name, tensor in state.items()]
    elif isinstance(model, nn.Module):
        parameter_names = [(tensor, name) for name, tensor in list(model.named_parameters())
                           + list(model.named_buffers())]
    else:
        parameter_names = []
    tracer = _Tracer(stack, parameter_names, x, keep_outputs)
    output, error = None, None
    try:
        with torch.no_grad(), tracer:
            output = model(x) if state is None else torch.func.functional_call(model, state, (x,))
    except Exception as exception:  # NotImplementedError included: the caller decides what to say
        error = exception
    finally:
        for hook in hooks:
            hook.remove()
    out = first_tensor(output)
    _mark_reaching(tracer.operations, tracer.of(out).sources if out is not None else frozenset())
    if error is not None:  # nothing is known to be unused in a pass that did not finish
        for operation in tracer.operations:
            operation.reaches_output = True
    return output, tracer.operations, error


def forward_operations(model, x, keep_outputs=True, state=None):
    """Run ``model(x)`` once and return ``(output, operations)``, the list of ``Operation`` in call order.

    ``model`` is an ``nn.Module`` (each operation is attributed to the innermost module running it) or any function
    of tensors. The model runs as it is (call ``model.eval()`` first for a deterministic pass) and without
    gradients. ``state`` replaces the model's parameters and buffers for this pass without changing the model.
    """
    output, operations, error = traced_forward(model, x, keep_outputs, state)
    if error is not None:
        raise error
    return output, operations


def capture_outputs(model, x, module_names):
    """``{name: output}`` of the named submodules for one pass of ``model(x)`` without gradients.

    ``module_names`` are paths as in ``model.named_modules()``, e.g. ``["layer1", "layer4.1.conv2"]``; an unknown
    name raises ``KeyError`` listing the model's top-level children.
    """
    modules = dict(model.named_modules())
    unknown = [name for name in module_names if name not in modules]
    if unknown:
        children = ", ".join(name for name, _ in model.named_children())
        raise KeyError(f"no module named {unknown[0]!r} in {type(model).__name__}; its children are: {children}")
    captured, hooks = {}, []
    for name in module_names:
        def keep(module, inputs, output, name=name):
            captured[name] = first_tensor(output).detach()

        hooks.append(modules[name].register_forward_hook(keep))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def relative_difference(received, expected):
    """``max|received - expected| / max|expected|`` (0 when both are all zeros, inf when only ``expected`` is)."""
    difference = float((received.double() - expected.double()).abs().max()) if expected.numel() else 0.0
    scale = float(expected.double().abs().max()) if expected.numel() else 0.0
    if scale == 0.0:
        return 0.0 if difference == 0.0 else math.inf
    return difference / scale
