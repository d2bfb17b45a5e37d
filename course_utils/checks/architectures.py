"""Checks that a learner's network is a given architecture (introduced in ``notebooks/06_lenet_alexnet.ipynb``).

Every architecture chapter (LeNet and AlexNet, VGG, GoogLeNet, ResNet, ...) uses the two checks here:

* ``check_same_architecture(model, reference, input_shape)`` where torchvision has the network. In order, it
  compares

  1. the parameter tensors and buffers, in registration order (or by name when every name matches): shapes,
     per-tensor and total counts (a wrong channel count or kernel size, a missing conv or batch norm);
  2. the sequence of operations of one forward pass in eval mode on the same seeded input, the reference's
     parameters and buffers standing in for the learner's (convolutions, linear layers, activations,
     pooling, normalisation, dropout, concatenations, additions), traced with a ``TorchFunctionMode`` so
     that ``nn.ReLU()`` and ``F.relu`` count the same. A missing ReLU or dropout (dropout is the identity in
     eval mode) or a ReLU moved before a max pooling (the two commute, so the outputs would not show it) is
     named here;
  3. the output of every operation of that pass: each learner's operation must give the output of a reference
     operation of the same kind (independent branches, such as a ResNet shortcut, may run in either order); the
     first that does not is named with how it differs (a wrong stride or padding, an activation in the wrong
     place), and finally the model's output.

* ``check_layer_table(model, expected_rows, input_shape)`` where there is no torchvision model (LeNet-5, NiN,
  the paper's two-group AlexNet): each row of the paper's table (operation, output shape, parameters) is
  compared with the learner's forward pass, then the total number of parameters.

``forward_operations(model, x)`` returns the traced operations, for notebooks that want to show them.
Both checks run on the CPU in eval mode; the learner's model is neither moved nor changed (the reference's
weights stand in for its own through ``torch.func.functional_call``; a GPU model is checked on a CPU copy).
"""
import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from course_utils.checks import common

# The operations a forward pass is compared on, by the name of the torch function called (trailing "_" of
# in-place variants removed). Shape bookkeeping (flatten, view, reshape, size) is left out on purpose:
# ``nn.Flatten()``, ``torch.flatten`` and ``x.view(N, -1)`` are equally right.
TRACED_OPERATIONS = frozenset({
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear",
    "batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm",
    "relu", "relu6", "hardtanh", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid", "tanh",
    "hardswish", "hardsigmoid", "softplus", "softmax", "log_softmax", "prelu",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "lp_pool2d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "cat", "add", "mul", "matmul", "bmm", "scaled_dot_product_attention",
})
_ALIASES = {"iadd": "add", "imul": "mul", "concat": "cat", "concatenate": "cat", "max_pool2d_with_indices": "max_pool2d"}
_DROPOUTS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"}


@dataclass
class Operation:
    """One traced operation of a forward pass."""

    kind: str  # the torch function, e.g. "conv2d", "relu", "max_pool2d"
    module: str  # path of the innermost module running it, e.g. "features.3" ("" for the model itself)
    module_type: str  # that module's class, e.g. "Conv2d"
    output_shape: tuple  # shape of the output, batch included
    output: torch.Tensor = field(default=None, repr=False)  # a detached copy of the output
    detail: dict = field(default_factory=dict)  # e.g. {"p": 0.5} for dropout

    def where(self):
        if not self.module_type:  # a plain function was traced, not a module
            return self.kind
        place = self.module or "the model's forward"
        return f"{self.kind} ({place}, {self.module_type})"


@dataclass(frozen=True)
class Layer:
    """One row of a paper's layer table, for ``check_layer_table``."""

    kind: object  # operation name ("conv2d", "tanh", "avg_pool2d") or a tuple of acceptable ones
    output_shape: tuple  # output shape without the batch dimension, e.g. (6, 28, 28); trailing 1s are ignored
    parameters: int = 0  # parameters of the layer (weights and biases)


def _kind_of(func):
    name = getattr(func, "__name__", str(func)).strip("_")  # "relu_" -> "relu", "__iadd__" -> "iadd"
    return _ALIASES.get(name, name)


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    if hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        return output.logits
    return None


class _Tracer(TorchFunctionMode):
    """Records every traced torch function called during a forward pass, with the module running it."""

    def __init__(self, module_stack, keep_outputs):
        super().__init__()
        self.module_stack = module_stack
        self.keep_outputs = keep_outputs
        self.operations = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)  # the mode is off inside: nested calls are not recorded
        kind = _kind_of(func)
        if kind in TRACED_OPERATIONS:
            out = _first_tensor(result)
            name, module = self.module_stack[-1] if self.module_stack else ("", None)
            detail = {}
            if kind in _DROPOUTS:
                detail["p"] = float(args[1]) if len(args) > 1 else float(kwargs.get("p", 0.5))
            self.operations.append(Operation(
                kind=kind, module=name, module_type=type(module).__name__ if module is not None else "",
                output_shape=tuple(out.shape) if out is not None else (),
                output=out.detach().clone() if (out is not None and self.keep_outputs) else None,
                detail=detail,
            ))
        return result


def forward_operations(model, x, keep_outputs=True, state=None):
    """Run ``model(x)`` once and return ``(output, operations)``, the list of ``Operation`` in call order.

    ``model`` is an ``nn.Module`` (each operation is attributed to the innermost module running it) or any
    function of tensors. The model runs as it is (set eval mode first for a deterministic pass) and without
    gradients. ``state`` (a dict from parameter/buffer names to tensors) replaces the model's own for this
    pass, as in ``torch.func.functional_call``, without changing the model.
    """
    output, operations, error = _traced_forward(model, x, keep_outputs, state)
    if error is not None:
        raise error
    return output, operations


def _traced_forward(model, x, keep_outputs=True, state=None):
    """``(output, operations, error)``: a crash is returned with the operations traced before it."""
    stack, hooks = [], []
    for name, module in model.named_modules() if isinstance(model, nn.Module) else ():
        def push(module, inputs, name=name):
            stack.append((name, module))

        def pop(module, inputs, output):
            if stack:
                stack.pop()

        hooks.append(module.register_forward_pre_hook(push))
        hooks.append(module.register_forward_hook(pop))
    tracer = _Tracer(stack, keep_outputs)
    output, error = None, None
    try:
        with torch.no_grad(), tracer:
            output = model(x) if state is None else torch.func.functional_call(model, state, (x,))
    except Exception as exception:  # NotImplementedError included: the caller decides what to say
        error = exception
    finally:
        for hook in hooks:
            hook.remove()
    return output, tracer.operations, error


def _run(model, x, state=None):
    """``_traced_forward`` in eval mode, each module's mode restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        return _traced_forward(model, x, state=state)
    finally:
        for module, training in modes:
            module.training = training


def _crash_message(error, x, who, case):
    if isinstance(error, NotImplementedError):
        return f"{case}: the {who} model is not implemented yet ({error})"
    return f"{case}: the {who} model raised {type(error).__name__} on an input of shape {tuple(x.shape)}: {error}"


def _count(tensors):
    return sum(t.numel() for _, t in tensors)


def _on_cpu(model, who):
    """The model itself when it is a float32 CPU model, else a float32 CPU copy (the learner's stays put)."""
    if not isinstance(model, nn.Module):
        raise AssertionError(f"the {who} model should be an nn.Module (an instance, not a class); "
                             f"got {type(model).__name__}")
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors):
        return model
    return copy.deepcopy(model).cpu().float()


def _paired(learner_items, reference_items):
    """Pairs (learner, reference) by name when the two sets of names are equal, else by registration order."""
    learner_names = [name for name, _ in learner_items]
    reference_names = [name for name, _ in reference_items]
    if sorted(learner_names) == sorted(reference_names) and len(set(reference_names)) == len(reference_names):
        learner = dict(learner_items)
        return [((name, learner[name]), (name, tensor)) for name, tensor in reference_items], "by name"
    return list(zip(learner_items, reference_items)), "in registration order"


def _compare_tensors(learner_items, reference_items, what, case):
    """Compare the shapes of parameter tensors (or buffers); raise naming the first that differs."""
    pairs, how = _paired(learner_items, reference_items)
    totals = (f"learner's model has {len(learner_items)} {what} tensors ({_count(learner_items):,} values), "
              f"the reference {len(reference_items)} ({_count(reference_items):,} values)")
    learner_names = {name for name, _ in learner_items}
    missing = [name for name, _ in reference_items if name not in learner_names]
    if how != "by name" and missing and len(missing) < len(reference_items) / 2:  # mostly the same names
        totals += f"; by name, the first of the reference's {what}s the learner's model lacks is {missing[0]}"
    for index, ((l_name, l_tensor), (r_name, r_tensor)) in enumerate(pairs, start=1):
        if tuple(l_tensor.shape) != tuple(r_tensor.shape):
            raise AssertionError(
                f"{case}: {what} {index} ({how}): learner's {l_name} has shape {tuple(l_tensor.shape)}, "
                f"reference {r_name} has {tuple(r_tensor.shape)}; {totals}")
    if len(learner_items) > len(reference_items):
        name, tensor = learner_items[len(reference_items)]
        raise AssertionError(f"{case}: {what} {len(reference_items) + 1}: learner's model has an extra "
                             f"{name} of shape {tuple(tensor.shape)} that the reference does not have; {totals}")
    if len(learner_items) < len(reference_items):
        name, tensor = reference_items[len(learner_items)]
        after = f" after learner's {learner_items[-1][0]}" if learner_items else ""
        raise AssertionError(f"{case}: {what} {len(learner_items) + 1}: learner's model has nothing{after} where "
                             f"the reference has {name} of shape {tuple(tensor.shape)} (a missing layer?); {totals}")
    return len(pairs), how


def _tolerance(expected, atol, rtol):
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    return atol * scale, rtol


def _close(received, expected, atol, rtol):
    atol, rtol = _tolerance(expected, atol, rtol)
    return bool(torch.allclose(received.double(), expected.double(), atol=atol, rtol=rtol))


def _assert_outputs_close(received, expected, case, what, atol, rtol):
    """Like ``common.assert_close`` with ``atol`` scaled by the size of the expected values."""
    atol, rtol = _tolerance(expected, atol, rtol)
    common.assert_close(received, expected, case, what=what, rtol=rtol, atol=atol)


def _match_operations(learner_ops, reference_ops, case, input_shape, atol, rtol, complete=True):
    """Pair every learner's operation with a reference operation of the same kind, shape and output.

    The learner's operations are taken in call order; each is paired with the first unpaired reference operation
    that gives the same output, so independent branches (a ResNet shortcut, the four branches of an Inception
    block) may run in either order. The first learner's operation without a partner is compared with the first
    unpaired reference operation, and the message says how they differ: kind, output shape or values.
    """
    unpaired = list(range(len(reference_ops)))
    for step, mine in enumerate(learner_ops, start=1):
        partner = next((j for j in unpaired if reference_ops[j].kind == mine.kind
                        and reference_ops[j].output_shape == mine.output_shape
                        and (mine.output is None or _close(mine.output, reference_ops[j].output, atol, rtol))), None)
        if partner is None:
            if not unpaired:
                raise AssertionError(f"{case}: step {step} of the forward pass: learner's model goes on with "
                                     f"{mine.where()} after the reference's last operation ({len(learner_ops)} "
                                     f"operations against {len(reference_ops)}; an extra layer?)")
            theirs = reference_ops[unpaired[0]]
            if mine.kind != theirs.kind:
                raise AssertionError(
                    f"{case}: step {step} of the forward pass: learner's model applies {mine.where()} where the "
                    f"reference applies {theirs.where()} (a missing, extra or misplaced layer?)")
            what = (f"with the reference's weights copied in, step {step} of the forward pass, learner's "
                    f"{mine.where()} against the reference's {theirs.where()}: output")
            if mine.output_shape != theirs.output_shape:
                raise AssertionError(f"{case}: {what} has shape {mine.output_shape}, expected {theirs.output_shape} "
                                     f"(input {tuple(input_shape)}; a wrong stride, padding or kernel size?)")
            _assert_outputs_close(mine.output, theirs.output, case, what + " (this operation or one before it differs)",
                                  atol, rtol)
            raise AssertionError(f"{case}: {what} matches no reference operation")  # pragma: no cover - for safety
        theirs = reference_ops[partner]
        unpaired.remove(partner)
        if mine.kind in _DROPOUTS and abs(mine.detail["p"] - theirs.detail["p"]) > 1e-12:
            raise AssertionError(f"{case}: step {step} of the forward pass: learner's {mine.where()} has "
                                 f"p={mine.detail['p']:g}, the reference's {theirs.where()} has p={theirs.detail['p']:g}")
    if unpaired and complete:
        theirs = reference_ops[unpaired[0]]
        raise AssertionError(f"{case}: the reference's {theirs.where()} (its operation {unpaired[0] + 1}, output "
                             f"{theirs.output_shape}) has no counterpart in the learner's model ({len(learner_ops)} "
                             f"operations against {len(reference_ops)}; a missing layer?)")


def check_same_architecture(model, reference, input_shape, name="architecture", atol=1e-5, rtol=1e-4, seed=0):
    """Assert that ``model`` is the same network as ``reference``: parameters, operations and outputs.

    Args:
        model: the learner's ``nn.Module`` (an instance).
        reference: the reference instance, e.g. ``torchvision.models.alexnet(weights=None)``.
        input_shape: the input's shape with the batch, e.g. ``(2, 3, 64, 64)``; small inputs keep it fast.
        name: how the check is named in its messages.
        atol, rtol: the tolerance on every output: ``|learner - reference| <= atol * max(1, max|reference|)
            + rtol * |reference|`` (both models run the same float32 operations, so they agree closely).
        seed: seeds the random input.

    Parameters and buffers are paired by name when the learner's names are the reference's (e.g. torchvision's
    ``features.0.weight``), else in registration order: then register the layers in the order the reference
    does (for a plain network, the order they run). Operations may be written as modules (``nn.ReLU()``) or
    functions (``F.relu``, ``torch.flatten``); reshapes are not compared.

    Raises ``AssertionError`` naming the first parameter tensor, forward-pass step or output that differs;
    prints one line when everything matches. Neither model is changed.
    """
    case = name
    learner = _on_cpu(model, "learner's")
    reference = _on_cpu(reference, "reference")
    if not (isinstance(input_shape, (tuple, list)) and len(input_shape) >= 2
            and all(isinstance(s, int) and s > 0 for s in input_shape)):
        raise ValueError(f"input_shape must be a shape of positive ints with the batch first; got {input_shape!r}")

    # 1. parameters and buffers: shapes in registration order (or by name), counts
    learner_parameters = list(learner.named_parameters())
    reference_parameters = list(reference.named_parameters())
    n_parameters, how = _compare_tensors(learner_parameters, reference_parameters, "parameter", case)
    learner_buffers = list(learner.named_buffers())
    reference_buffers = list(reference.named_buffers())
    n_buffers, buffers_how = _compare_tensors(learner_buffers, reference_buffers, "buffer", case)

    # 2. one forward pass of each, the reference's parameters and buffers standing in for the learner's
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))  # input_shape, e.g. (N, C, H, W)
    state = {mine[0]: theirs[1] for pairs in (_paired(learner_parameters, reference_parameters)[0],
                                              _paired(learner_buffers, reference_buffers)[0])
             for mine, theirs in pairs}
    reference_output, reference_ops, error = _run(reference, x)
    if error is not None:
        raise AssertionError(_crash_message(error, x, "reference", case) + " (is input_shape large enough?)") from error
    learner_output, learner_ops, error = _run(learner, x, state=state)

    # 3. the same operations, each with the same output: this sees a missing dropout or batch norm, a misplaced
    #    ReLU, a wrong stride or padding; then the model's output
    #    (when the learner's model crashed, the operations before the crash are compared first: a crash is
    #    often the consequence of a wrong output shape earlier)
    _match_operations(learner_ops, reference_ops, case, input_shape, atol, rtol, complete=error is None)
    if error is not None:
        raise AssertionError(_crash_message(error, x, "learner's", case)) from error
    reference_output, learner_output = _first_tensor(reference_output), _first_tensor(learner_output)
    if learner_output is None:
        raise AssertionError(f"{case}: the learner's model returned no tensor")
    _assert_outputs_close(learner_output, reference_output, case,
                          f"the model's output for input {tuple(input_shape)} (reference's weights copied in)", atol, rtol)
    total = _count(reference_parameters)
    common.passed(f"{name} ({total:,} parameters in {n_parameters} tensors matched {how}, {n_buffers} buffers, "
                  f"{len(reference_ops)} operations and the output)", n_parameters + n_buffers + len(reference_ops) + 1)


def _squeeze_trailing_ones(shape):
    shape = tuple(shape)
    while len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _kinds_text(kind):
    return " or ".join(kind) if isinstance(kind, (tuple, list)) else kind


def check_layer_table(model, expected_rows, input_shape, name="layer table", total_parameters=None, seed=0,
                      skip=("add", "cat", "mul")):
    """Assert that ``model``'s forward pass follows a layer table row by row.

    Args:
        model: the learner's ``nn.Module`` (an instance).
        expected_rows: ``Layer(kind, output_shape, parameters)`` rows (or plain tuples of the same three), one
            per traced operation, e.g. ``Layer("conv2d", (6, 28, 28), 156)``, ``Layer("tanh", (6, 28, 28))``.
            ``kind`` may be a tuple of acceptable operations, e.g. ``("linear", "conv2d")``; output shapes leave
            the batch out and trailing 1s are ignored, so ``(120, 1, 1)`` matches ``(120,)``.
        input_shape: the input's shape with the batch, e.g. ``(2, 1, 32, 32)``.
        name: how the check is named in its messages.
        total_parameters: the model's expected parameter count; by default the sum of the rows' ``parameters``.
        seed: seeds the random input.
        skip: traced operations left out of the comparison.

    The parameters of a row are those registered directly on the module that runs the operation (counted at
    its first operation). Raises ``AssertionError`` naming the first row that differs.
    """
    case = name
    learner = _on_cpu(model, "learner's")
    rows = [row if isinstance(row, Layer) else Layer(*row) for row in expected_rows]
    total_expected = sum(row.parameters for row in rows) if total_parameters is None else total_parameters
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))  # input_shape, e.g. (N, C, H, W)
    _, operations, error = _run(learner, x)
    operations = [op for op in operations if op.kind not in skip]
    modules = dict(learner.named_modules())
    counted = set()
    for index, (op, row) in enumerate(zip(operations, rows), start=1):
        accepted = tuple(row.kind) if isinstance(row.kind, (tuple, list)) else (row.kind,)
        received_shape = op.output_shape[1:]  # drop the batch
        if op.kind not in accepted:
            raise AssertionError(f"{case}: layer {index}: learner's model applies {op.where()} with output "
                                 f"{received_shape}, the table has {_kinds_text(row.kind)} with output "
                                 f"{tuple(row.output_shape)}")
        if _squeeze_trailing_ones(received_shape) != _squeeze_trailing_ones(row.output_shape):
            raise AssertionError(f"{case}: layer {index}: learner's {op.where()} gives output shape "
                                 f"{received_shape} for input {tuple(input_shape)}, the table has "
                                 f"{tuple(row.output_shape)} (a wrong kernel size, stride or padding?)")
        own = 0
        if op.module not in counted:  # a module's parameters count once, at its first operation
            counted.add(op.module)
            own = sum(p.numel() for p in modules[op.module].parameters(recurse=False))
        if own != row.parameters:
            raise AssertionError(f"{case}: layer {index}: learner's {op.where()} has {own:,} parameters, "
                                 f"the table has {row.parameters:,}")
    if error is not None:  # the rows before the crash matched: report the crash itself
        raise AssertionError(_crash_message(error, x, "learner's", case)) from error
    if len(operations) < len(rows):
        row = rows[len(operations)]
        after = f" after {operations[-1].where()}" if operations else ""
        raise AssertionError(f"{case}: layer {len(operations) + 1}: learner's model stops{after}; the table goes on "
                             f"with {_kinds_text(row.kind)} with output {tuple(row.output_shape)} "
                             f"({len(operations)} layers against {len(rows)}; a missing layer?)")
    if len(operations) > len(rows):
        op = operations[len(rows)]
        raise AssertionError(f"{case}: layer {len(rows) + 1}: learner's model goes on with {op.where()} after the "
                             f"table's last row ({len(operations)} layers against {len(rows)}; an extra layer?)")
    total = sum(p.numel() for p in learner.parameters())
    if total != total_expected:
        raise AssertionError(f"{case}: learner's model has {total:,} parameters in total, the table {total_expected:,}")
    common.passed(f"{name} ({len(rows)} layers, {total:,} parameters)", len(rows) + 1)
