"""Checks that a learner's network is a given architecture (introduced in ``notebooks/06_lenet_alexnet.ipynb``).

Every architecture chapter (LeNet and AlexNet, VGG, GoogLeNet, ResNet, DenseNet, MobileNet, ConvNeXt, ViT) uses
the two checks here.

``check_same_architecture(model, reference, input_shape)``, where torchvision has the network:

1. **Weights that cannot hide a mistake.** The reference is copied and every parameter and buffer of the copy is
   redrawn (``redraw_parameters_``): He-normal convolutions, random biases, norm layers with random affine
   parameters, batch-norm running statistics taken from the activations themselves and then perturbed, layer scales
   and embeddings of order one. torchvision's own initialisation (identity batch norms, zero biases, layer scale
   1e-6, GoogLeNet's std 0.01) would let a reused or missing batch norm, a skipped bias or a misplaced layer scale
   go unseen. Neither the caller's reference nor the learner's model is changed.
2. **Parameters paired through the operations that use them.** When the learner's parameter names are the
   reference's, by name; otherwise each parameterised operation of the reference (a convolution, a batch norm, ...)
   is paired with the learner's operation that uses parameters of the same shapes and is fed by the operations
   already paired, so that neither registration order nor the order of independent branches matters (a projection
   shortcut built or computed before the main path is the same network). Shapes are compared without trailing 1s:
   a ``Linear(C, F)`` on (N, C) and a 1x1 ``Conv2d(C, F)`` on (N, C, 1, 1) hold the same weights. A parameter the
   learner registers but never uses (a module built but not called, or another called twice) is named.
3. **Every operation compared by its value, at its own scale.** One forward pass of each network in eval mode on
   the same seeded input, traced by ``course_utils.tracing`` (modules or functions alike, any nesting, views and
   reshapes followed but not compared). Every operation of the reference must be matched by an operation of the
   learner that gives the same values, relative to the size of the reference's values (so that no operation
   escapes because its activations are small), in any layout. Kinds are normalised before they are compared:
   ``nn.ReLU6``, ``F.relu6``, ``F.hardtanh(x, 0, 6)`` and ``torch.clamp(x, 0, 6)`` are one operation,
   ``AdaptiveAvgPool2d(1)`` and ``x.mean((2, 3))`` another. Operations whose value alone cannot tell them apart
   (activations that clip, dropout, pooling) must also be of the same kind, with the same arguments. A composite
   operation of the reference (a layer norm, an attention, a GELU) may be written out by the learner in several
   steps: the intermediate steps have no counterpart and need none. Any other learner's operation without a
   counterpart (an extra dropout or activation) is named, and so is an operation whose result never reaches the
   output (an activation computed and thrown away, a branch built but not added).

The first difference is reported with the reference's operation and module path, the learner's operation at that
place, how they differ (kind, arguments, inputs, shape, or values and by how much relative to the values), and the
likely cause.

``check_layer_table(model, expected_rows, input_shape)``, where there is no torchvision model (LeNet-5, NiN, the
paper's two-group AlexNet): each row of the paper's table (operation, output shape, parameters and, where given,
kernel size, stride and padding) is compared with the learner's forward pass, then the total number of parameters.

Both checks run on the CPU in eval mode; a GPU model is checked on a CPU copy. The learner's model is reached only
through ``learner_forward`` (run with ``course_utils.checks.learner.run``), which returns plain data: in the
learner's notebook it runs in place, under the grader in the learner's kernel, on the weights and the input the
grader sends, while the reference, the pairing and every comparison stay in the grader's process.
"""
import copy
import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from course_utils.checks import common, learner
from course_utils.tracing import INPUT, Operation, first_tensor, relative_difference, traced_forward

ATOL = 1e-5  # tolerance relative to the largest value of each reference output
RTOL = 1e-4  # tolerance relative to each reference value
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)


@dataclass(frozen=True)
class Layer:
    """One row of a paper's layer table, for ``check_layer_table``."""

    kind: object  # operation name ("conv2d", "tanh", "avg_pool2d") or a tuple of acceptable ones
    output_shape: tuple  # output shape without the batch dimension, e.g. (6, 28, 28); trailing 1s are ignored
    parameters: int = 0  # parameters of the layer (weights and biases)
    geometry: tuple = ()  # e.g. (("kernel_size", 2), ("stride", 2)): call arguments the layer must have


# --------------------------------------------------------------------------- redrawing the reference's weights

def redraw_parameters_(model, x, seed=0):
    """Give every parameter and buffer of ``model`` random values that keep activations at their scale.

    Args:
        model: an ``nn.Module``, changed in place (pass a copy to keep the original) and returned.
        x: an input the model runs on, e.g. of shape (N, C, H, W); batch-norm statistics are computed on it.
        seed: seeds every draw.

    Convolutions and linear layers get weights with std sqrt(2 / fan_in) for convolutions (He et al. 2015) and
    sqrt(1 / fan_in) otherwise, and biases with std 0.2; norm layers get weights in [0.5, 1.5) and biases with
    std 0.3; every other parameter (a class token, position embeddings, a layer scale) gets standard normal values.
    Each batch norm's running mean and variance are then set, in one eval-mode pass, from the statistics of the
    activations it receives, shifted by 0.3 standard deviations and scaled by a factor in [0.6, 1.6): its output
    has the scale of its affine parameters (not the identity, nor the batch's own normalisation).
    """
    generator = torch.Generator().manual_seed(seed)

    def draw(shape, std=1.0):
        return torch.randn(tuple(shape), generator=generator) * std

    with torch.no_grad():
        handled = set()
        for module in model.modules():
            own = dict(module.named_parameters(recurse=False))
            if isinstance(module, _NORMS):
                if own.get("weight") is not None:
                    own["weight"].copy_(torch.rand(own["weight"].shape, generator=generator) + 0.5)
                if own.get("bias") is not None:
                    own["bias"].copy_(draw(own["bias"].shape, 0.3))
            elif isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                weight = own["weight"]
                fan_in = weight[0].numel()
                gain = 2.0 if isinstance(module, nn.modules.conv._ConvNd) else 1.0
                weight.copy_(draw(weight.shape, math.sqrt(gain / fan_in)))
                if own.get("bias") is not None:
                    own["bias"].copy_(draw(own["bias"].shape, 0.2))
            else:
                for name, parameter in own.items():
                    if parameter.dim() >= 2 and "weight" in name:  # e.g. MultiheadAttention's in_proj_weight
                        parameter.copy_(draw(parameter.shape, math.sqrt(1.0 / parameter[0].numel())))
                    elif "bias" in name:
                        parameter.copy_(draw(parameter.shape, 0.2))
                    else:
                        parameter.copy_(draw(parameter.shape))
            handled.update(id(p) for p in own.values())

        hooks = []
        for module in model.modules():
            if isinstance(module, _BATCH_NORMS) and module.running_mean is not None:
                def calibrate(module, inputs):
                    values = inputs[0].detach().transpose(0, 1).flatten(1).double()  # (C, N*H*W)
                    mean, std = values.mean(1), values.std(1, unbiased=False)
                    if values.shape[1] < 16:  # too few values per channel (a 1x1 map): the layer's own scale
                        std = torch.full_like(std, float(values.std(unbiased=False)))
                    std = std.clamp_min(0.05 * float(std.median()) + 1e-12)
                    module.running_mean.copy_((mean + 0.3 * std * draw(mean.shape)).float())
                    module.running_var.copy_((std ** 2 * (torch.rand(std.shape, generator=generator) + 0.6)).float())

                hooks.append(module.register_forward_pre_hook(calibrate))
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
        try:
            model(x)
        finally:
            for hook in hooks:
                hook.remove()
            for module, training in modes:
                module.training = training
    return model


# --------------------------------------------------------------------------- kinds and values

def _number(value):
    return f"{float(value):g}" if value is not None else "inf"


def normal_kind(operation):
    """The operation's kind as compared: ``relu6``, ``hardtanh(0, 6)`` and ``clamp(0, 6)`` are ``clamp[0, 6]``."""
    kind, arguments = operation.kind, operation.arguments
    if kind == "relu":
        return "clamp[0, inf]"
    if kind == "relu6":
        return "clamp[0, 6]"
    if kind == "hardtanh":
        return f"clamp[{_number(arguments.get('min_val', -1.0))}, {_number(arguments.get('max_val', 1.0))}]"
    if kind in ("clamp", "clamp_min", "clamp_max"):
        low = arguments.get("min")
        return f"clamp[{'-inf' if low is None else _number(low)}, {_number(arguments.get('max'))}]"
    if kind == "threshold" and arguments.get("threshold") == arguments.get("value"):
        return f"clamp[{_number(arguments.get('threshold'))}, inf]"
    if "dropout" in kind:
        return f"{kind}(p={_number(arguments.get('p', 0.5))})"
    if kind.startswith("adaptive_avg_pool"):
        size = arguments.get("output_size")
        if size is not None and all(s in (1, None) for s in (size if isinstance(size, tuple) else (size,))):
            return "mean"
    return kind


def _is_strict(kind):
    """Kinds that values alone cannot tell apart from their neighbours: they must match by kind too."""
    return kind.startswith("clamp[") or "dropout" in kind or "pool" in kind or kind == "threshold"


def _compatible(learner_kind, reference_kind):
    if _is_strict(learner_kind) or _is_strict(reference_kind):
        return learner_kind == reference_kind
    return True


def _same_arguments(mine, theirs):
    """A normalisation of the same kind must have the same eps: its effect hides below the tolerance on values
    of order one."""
    if mine.kind != theirs.kind or "norm" not in mine.kind:
        return True
    return mine.arguments.get("eps") == theirs.arguments.get("eps")


def _squeeze(shape):
    """A shape without its trailing 1s: (64, 128, 1, 1) -> (64, 128)."""
    shape = tuple(shape)
    while len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _same_values(received, expected, atol=ATOL, rtol=RTOL, any_order=False):
    """Equal within ``atol * max|expected| + rtol * |expected|``, in the same layout or, for another shape, any.

    ``any_order`` also accepts the same values in another order for tensors of the same shape: for an operation
    written another way, whose layout may differ although the shapes agree (channels last on a C x C x C map).
    """
    if received.numel() != expected.numel():
        return False
    received, expected = received.double(), expected.double()
    scale = float(expected.abs().max()) if expected.numel() else 0.0

    def close(a, b):
        return bool(((a - b).abs() <= atol * scale + rtol * b.abs()).all())

    if _squeeze(received.shape) == _squeeze(expected.shape) and close(received.reshape(expected.shape), expected):
        return True
    if _squeeze(received.shape) == _squeeze(expected.shape) and not any_order:
        return False
    return close(received.flatten().sort().values, expected.flatten().sort().values)


def _same_values_in_other_order(received, expected):
    if received.numel() != expected.numel() or received.numel() == 0:
        return False
    return _same_values(received.flatten().sort().values, expected.flatten().sort().values)


class _Fingerprints:
    """Cheap summaries of every output (size, largest magnitude, sum) to compare only plausible pairs in full."""

    def __init__(self, operations):
        self.by_size = defaultdict(list)
        self.summary = {}
        for op in operations:
            values = op.output.double()
            self.summary[op.index] = (float(values.abs().max()) if values.numel() else 0.0, float(values.sum()))
            self.by_size[values.numel()].append(op.index)

    def candidates(self, op, summary):
        scale, total = summary
        for index in self.by_size.get(op.output.numel(), ()):
            their_scale, their_total = self.summary[index]
            slack = (ATOL + RTOL) * their_scale
            if abs(scale - their_scale) <= slack and abs(total - their_total) <= slack * op.output.numel():
                yield index


# --------------------------------------------------------------------------- running the two networks

def _on_cpu(model, who):
    """The model itself when it is a float32 CPU model, else a float32 CPU copy (the learner's stays put)."""
    if not isinstance(model, nn.Module):
        raise AssertionError(f"the {who} model should be an nn.Module (an instance, not a class); "
                             f"got {type(model).__name__}")
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors):
        return model
    return copy.deepcopy(model).cpu().float()


def _run(model, x, state=None, keep_outputs=True):
    """``traced_forward`` in eval mode, each module's mode restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        return traced_forward(model, x, keep_outputs=keep_outputs, state=state)
    finally:
        for module, training in modes:
            module.training = training


def learner_forward(model, x, state=None, keep_outputs=True, describe=False):
    """The learner's side of the checks: one traced eval-mode pass of ``model`` on ``x``, as plain data.

    ``{"not_module": type name}`` when ``model`` is not an ``nn.Module`` instance; else ``{"output": tensor or
    None, "operations": [dict per operation], "error": the exception it raised or None}`` and, with ``describe``,
    ``"tensors"``: ``[[name, shape, is_buffer], ...]`` in registration order, ``"own_parameters"``:
    ``{module path: number of parameters registered on it}`` and ``"total_parameters"``. ``state`` replaces the
    model's parameters and buffers for this pass (``functional_call``). The model's modes are left as they were.
    """
    if not isinstance(model, nn.Module):
        return {"not_module": type(model).__name__}
    model = _on_cpu(model, "learner's")
    output, operations, error = _run(model, x, state=state, keep_outputs=keep_outputs)
    reply = {"output": first_tensor(output), "error": error,
             "operations": [_plain_operation(op) for op in operations]}
    if describe:
        reply["tensors"] = [[name, tuple(tensor.shape), is_buffer]
                            for name, (tensor, is_buffer) in _named_tensors(model).items()]
        reply["own_parameters"] = {name: sum(p.numel() for p in module.parameters(recurse=False))
                                   for name, module in model.named_modules()}
        reply["total_parameters"] = sum(p.numel() for p in model.parameters())
    return reply


def _plain_operation(op):
    return {"index": op.index, "kind": op.kind, "module": op.module, "module_type": op.module_type,
            "output_shape": tuple(op.output_shape), "output": op.output,
            "inputs": [sorted(sources) for sources in op.inputs], "parameters": [list(p) for p in op.parameters],
            "arguments": dict(op.arguments), "depends_on_input": op.depends_on_input,
            "reaches_output": op.reaches_output}


class _LearnerPass:
    """What ``learner_forward`` sent back, checked and rebuilt: output, operations, error, tensors' shapes."""

    def __init__(self, reply, who="learner's"):
        if not isinstance(reply, dict):
            raise AssertionError(f"the {who} model's pass sent back {type(reply).__name__}, not its operations")
        if "not_module" in reply:
            raise AssertionError(f"the {who} model should be an nn.Module (an instance, not a class); "
                                 f"got {reply['not_module']}")
        output = reply.get("output")
        self.output = output if isinstance(output, torch.Tensor) else None
        error = reply.get("error")
        self.error = error if isinstance(error, BaseException) else None
        try:
            self.operations = [_operation(entry, index) for index, entry in enumerate(reply.get("operations", []))]
            # the meta tensors stand for the learner's: their shapes are all the pairing uses
            self.tensors = {str(name): (torch.empty(tuple(shape), device="meta"), bool(is_buffer))
                            for name, shape, is_buffer in reply.get("tensors", [])}
            self.own_parameters = {str(k): int(v) for k, v in reply.get("own_parameters", {}).items()}
            self.total_parameters = int(reply.get("total_parameters", 0))
        except (TypeError, ValueError, KeyError) as problem:
            raise AssertionError(f"the {who} model's pass sent back operations that are not valid: {problem}") from None


def _operation(entry, index):
    """An ``Operation`` from its plain form, validated (an index out of order is refused)."""
    if entry["index"] != index:
        raise ValueError(f"operation {index} is numbered {entry['index']}")
    output = entry.get("output")
    inputs = [frozenset(int(s) for s in sources) for sources in entry["inputs"]]
    if any(s != INPUT and not 0 <= s < index for sources in inputs for s in sources):
        raise ValueError(f"operation {index} reads an operation that does not come before it")
    return Operation(index=index, kind=str(entry["kind"]), module=str(entry["module"]),
                     module_type=str(entry["module_type"]), output_shape=tuple(int(s) for s in entry["output_shape"]),
                     output=output if isinstance(output, torch.Tensor) else None, inputs=inputs,
                     parameters=[(str(name), position if isinstance(position, str) else int(position))
                                 for name, position in entry["parameters"]],
                     arguments=dict(entry["arguments"]), depends_on_input=bool(entry["depends_on_input"]),
                     reaches_output=bool(entry["reaches_output"]))


def learner_pass(model, x, state=None, keep_outputs=True, describe=False):
    """``learner_forward`` run where the learner's ``model`` lives, its answer checked: a ``_LearnerPass``."""
    return _LearnerPass(learner.run(learner_forward, model, x, state, keep_outputs, describe))


def _crash_message(error, x, who, case, operations=()):
    if isinstance(error, NotImplementedError):
        return f"{case}: the {who} model is not implemented yet ({error})"
    after = f", after its {operations[-1].where()} gave shape {operations[-1].output_shape}" if operations else ""
    return (f"{case}: the {who} model raised {type(error).__name__} on an input of shape {tuple(x.shape)}{after}: "
            f"{error}")


# --------------------------------------------------------------------------- pairing parameters

def _named_tensors(model):
    """``{name: (tensor, is_buffer)}`` in registration order."""
    tensors = {name: (tensor, False) for name, tensor in model.named_parameters()}
    tensors.update({name: (tensor, True) for name, tensor in model.named_buffers()})
    return tensors


def _describe(tensors):
    parameters = [t for t, is_buffer in tensors.values() if not is_buffer]
    return f"{len(parameters)} parameter tensors ({sum(t.numel() for t in parameters):,} values)"


def _first_uses(operations):
    """``{tensor name: index of the first operation using it}``."""
    uses = {}
    for op in operations:
        for name, _ in op.parameters:
            uses.setdefault(name, op.index)
    return uses


def _nearest_parameterised(operations):
    """For every operation, the nearest operations upstream that use parameters (or ``INPUT``)."""
    nearest = {}
    for op in operations:
        found = set()
        for source in op.sources:
            if source == INPUT:
                found.add(INPUT)
            elif operations[source].parameters:
                found.add(source)
            else:
                found |= nearest[source]
        nearest[op.index] = frozenset(found)
    return nearest


def _signature(op, tensors):
    """The shapes (without trailing 1s) of the tensors an operation uses, in argument order."""
    return tuple((_squeeze(tensors[name][0].shape), tensors[name][1]) for name, _ in op.parameters)


def _anchors(operations, paired):
    """For every operation, the nearest operations upstream in ``paired`` (or ``INPUT``), through any others."""
    anchors = {}
    for op in operations:
        found = set()
        for source in op.sources:
            if source == INPUT or source in paired:
                found.add(source)
            else:
                found |= anchors[source]
        anchors[op.index] = frozenset(found)
    return anchors


def _pair_through_operations(learner_ops, reference_ops, learner_tensors, reference_tensors):
    """``{learner name: reference name}``: each parameterised operation of the reference paired with the learner's.

    A reference operation pairs with the first learner's operation that uses tensors of the same shapes and is fed
    by the learner's counterparts of the operations feeding it, so that neither registration order nor the order
    of independent branches matters. Then the tensors of operations written differently (a layer norm written out
    as a multiplication and an addition) pair in the order of their first use, between the same paired
    operations upstream.
    """
    learner_nearest = _nearest_parameterised(learner_ops)
    reference_nearest = _nearest_parameterised(reference_ops)
    learner_candidates = [op for op in learner_ops if op.parameters]
    operation_map = {INPUT: INPUT}  # reference operation -> learner operation
    paired_learner_ops, names = set(), {}
    for theirs in (op for op in reference_ops if op.parameters):
        signature = _signature(theirs, reference_tensors)
        wanted = {operation_map.get(source) for source in reference_nearest[theirs.index]}
        known = None not in wanted
        choice = None
        for mine in learner_candidates:
            if mine.index in paired_learner_ops or _signature(mine, learner_tensors) != signature:
                continue
            upstream = learner_nearest[mine.index]
            if known and upstream == wanted:
                choice = mine
                break
            if not known and (wanted - {None}) <= upstream:  # what is known upstream agrees
                choice = mine
                break
        if choice is None:
            continue
        operation_map[theirs.index] = choice.index
        paired_learner_ops.add(choice.index)
        taken = set(names.values())
        for (mine_name, _), (their_name, _) in zip(choice.parameters, theirs.parameters):
            if mine_name not in names and their_name not in taken:
                names[mine_name] = their_name
                taken.add(their_name)

    # tensors of operations written differently (a layer norm written out as a multiplication and an addition):
    # within each stretch between the same paired operations upstream, in order of first use, when the stretch
    # holds tensors of the same shapes on both sides (else something is missing there, and is named later)
    learner_anchors = _anchors(learner_ops, paired_learner_ops)
    reference_anchors = _anchors(reference_ops, set(operation_map) - {INPUT})
    learner_first, reference_first = _first_uses(learner_ops), _first_uses(reference_ops)
    taken = set(names.values())
    stretches = defaultdict(lambda: ([], []))  # learner's anchors -> (reference names, learner names)
    for their_name in sorted((n for n in reference_first if n not in taken), key=reference_first.get):
        anchors = frozenset(operation_map[a] for a in reference_anchors[reference_first[their_name]])
        stretches[anchors][0].append(their_name)
    for mine_name in sorted((n for n in learner_first if n not in names), key=learner_first.get):
        stretches[learner_anchors[learner_first[mine_name]]][1].append(mine_name)

    def shape(tensors, name):
        return _squeeze(tensors[name][0].shape), tensors[name][1]

    roles = {}  # tensor name -> (operation kind, argument position) of its first use
    for ops in (learner_ops, reference_ops):
        for op in ops:
            for name, position in op.parameters:
                roles.setdefault((ops is reference_ops, name), (op.kind, position))
    suspects = []  # (reference name, learner name or None) in unbalanced stretches, most telling first
    for their_names, mine_names in stretches.values():
        if Counter(shape(reference_tensors, n) for n in their_names) != Counter(
                shape(learner_tensors, n) for n in mine_names):
            left = list(mine_names)
            wrong_shape, lacking = [], []
            for their_name in their_names:  # the learner's tensor in the same role, in order of use
                mine_name = next((n for n in left if roles[(False, n)] == roles[(True, their_name)]), None)
                if mine_name is None:
                    lacking.append((their_name, None))
                    continue
                left.remove(mine_name)
                if shape(learner_tensors, mine_name) != shape(reference_tensors, their_name):
                    wrong_shape.append((their_name, mine_name))
            composite = [item for item in lacking if "norm" in roles[(True, item[0])][0]]
            lacking.sort(key=lambda item: reference_tensors[item[0]][1])  # parameters before buffers
            composite.sort(key=lambda item: reference_tensors[item[0]][1])
            suspects += wrong_shape + [item for item in lacking if item not in composite] + composite
            continue
        for their_name in their_names:
            mine_name = next(n for n in mine_names if n not in names
                             and shape(learner_tensors, n) == shape(reference_tensors, their_name))
            names[mine_name] = their_name
    return names, suspects


def _pair_tensors(mine, reference, learner_ops, reference_ops, case, complete=True):
    """``(state, how)``: the reference's tensors under the learner's names (``mine``: name -> (tensor, is
    buffer), the learner's tensors or stand-ins of their shapes), or an ``AssertionError``."""
    theirs = _named_tensors(reference)
    if set(mine) == set(theirs):
        for name, (tensor, is_buffer) in theirs.items():
            if _squeeze(mine[name][0].shape) != _squeeze(tensor.shape):
                what = "buffer" if is_buffer else "parameter"
                raise AssertionError(
                    f"{case}: {what} {name} (paired by name): the learner's has shape {tuple(mine[name][0].shape)}, "
                    f"the reference's {tuple(tensor.shape)}; learner's model has {_describe(mine)}, the reference "
                    f"{_describe(theirs)}")
        names, how = {name: name for name in mine}, "by name"
    else:
        names, suspects = _pair_through_operations(learner_ops, reference_ops, mine, theirs)
        counts = Counter((_squeeze(t.shape), b) for t, b in mine.values())
        balanced = counts == Counter((_squeeze(t.shape), b) for t, b in theirs.values())
        learner_uses, reference_uses = _first_uses(learner_ops), _first_uses(reference_ops)
        order = len(learner_ops) + len(reference_ops)

        def in_use_order(tensors, uses):  # first used first, then never used in registration order
            return sorted(tensors, key=lambda name: uses.get(name, order))

        # what is left: in order of first use when the shapes balance (else the first missing tensor is named),
        # and tensors no operation uses (a batch norm's num_batches_tracked) in registration order
        taken = set(names.values())
        for their_name in in_use_order(theirs, reference_uses):
            if their_name in taken or (not balanced and their_name in reference_uses):
                continue
            shape, is_buffer = _squeeze(theirs[their_name][0].shape), theirs[their_name][1]
            for mine_name in in_use_order(mine, learner_uses):
                if mine_name not in names and _squeeze(mine[mine_name][0].shape) == shape \
                        and mine[mine_name][1] == is_buffer and (balanced or mine_name not in learner_uses):
                    names[mine_name] = their_name
                    taken.add(their_name)
                    break
        how = "through the operations that use them"
        # a buffer no operation reads (batch norm's num_batches_tracked in eval mode) needs no counterpart
        unread = ({n for n, (_, b) in theirs.items() if b and n not in reference_uses}
                  | {n for n, (_, b) in mine.items() if b and n not in learner_uses})
        _assert_all_paired({n: v for n, v in mine.items() if n not in unread or n in names},
                           {n: v for n, v in theirs.items() if n not in unread or n in names.values()},
                           names, case, complete, suspects)
    if complete:  # a pass that crashed has not used everything yet
        _assert_all_used(mine, names, learner_ops, reference_ops, case)
    state = {name: theirs[names[name]][0].reshape(mine[name][0].shape).contiguous() for name in mine if name in names}
    return state, how


def _assert_all_paired(mine, theirs, names, case, complete=True, suspects=()):
    totals = f"learner's model has {_describe(mine)}, the reference {_describe(theirs)}"
    taken = set(names.values())
    their_left = [name for name in theirs if name not in taken]
    mine_left = [name for name in mine if name not in names]
    if not their_left and not mine_left:
        return
    shape_counts = Counter((_squeeze(t.shape), b) for t, b in mine.values())
    shape_counts.subtract(Counter((_squeeze(t.shape), b) for t, b in theirs.values()))
    missing = [n for n in their_left if shape_counts[(_squeeze(theirs[n][0].shape), theirs[n][1])] < 0]
    extra = [n for n in mine_left if shape_counts[(_squeeze(mine[n][0].shape), mine[n][1])] > 0]
    for their_name, mine_name in suspects:
        if mine_name is not None:
            raise AssertionError(
                f"{case}: the learner's {mine_name} of shape {tuple(mine[mine_name][0].shape)} is used where the "
                f"reference uses its {their_name} of shape {tuple(theirs[their_name][0].shape)} (a wrong number of "
                f"channels or a wrong kernel size?); {totals}")
        if their_name in missing:
            missing = [their_name]
            break
    missing.sort(key=lambda n: theirs[n][1])  # parameters before buffers
    if missing:
        name = missing[0]
        what = "buffer" if theirs[name][1] else "parameter"
        raise AssertionError(f"{case}: the reference's {what} {name} of shape {tuple(theirs[name][0].shape)} has no "
                             f"counterpart of that shape in the learner's model (a missing or misconfigured "
                             f"layer?); {totals}")
    if extra:
        name = extra[0]
        what = "buffer" if mine[name][1] else "parameter"
        raise AssertionError(f"{case}: the learner's {what} {name} of shape {tuple(mine[name][0].shape)} has no "
                             f"counterpart of that shape in the reference (an extra or misconfigured layer?); "
                             f"{totals}")
    if not complete:  # tensors not used before a crash stay with the learner's own values
        return
    name = (mine_left or their_left)[0]  # pragma: no cover - equal shape counts always pair
    raise AssertionError(f"{case}: could not pair the learner's {name} with the reference's tensors; {totals}")


def _assert_all_used(mine, names, learner_ops, reference_ops, case):
    learner_used = {name for op in learner_ops for name, _ in op.parameters}
    reference_used = {name for op in reference_ops for name, _ in op.parameters}
    for name, (tensor, is_buffer) in mine.items():
        if not is_buffer and name not in learner_used and names[name] in reference_used:
            raise AssertionError(
                f"{case}: the learner's parameter {name} of shape {tuple(tensor.shape)} is never used in the forward "
                f"pass, where the reference uses its {names[name]} (a layer built but not called, or another one "
                f"called twice?)")


# --------------------------------------------------------------------------- comparing the operations

class _Comparison:
    """The two traced passes, which learner's operation gives which reference's value, and the messages."""

    def __init__(self, learner_ops, reference_ops, case, input_shape):
        self.case, self.input_shape = case, tuple(input_shape)
        self.mine = [op for op in learner_ops if op.depends_on_input]
        self.theirs = [op for op in reference_ops if op.depends_on_input and op.reaches_output]
        self.learner_ops, self.reference_ops = learner_ops, reference_ops
        self.kinds = {("mine", op.index): normal_kind(op) for op in learner_ops}
        self.kinds.update({("theirs", op.index): normal_kind(op) for op in reference_ops})
        fingerprints = _Fingerprints(self.theirs)
        learner_fingerprints = _Fingerprints(self.mine)
        self.partners = defaultdict(list)  # learner's op index -> reference op indices with its values
        self.counterparts = defaultdict(list)  # reference op index -> learner op indices
        for op in self.mine:
            for index in fingerprints.candidates(op, learner_fingerprints.summary[op.index]):
                reference = reference_ops[index]
                my_kind, their_kind = self.kinds[("mine", op.index)], self.kinds[("theirs", index)]
                if _compatible(my_kind, their_kind) and _same_arguments(op, reference) \
                        and _same_values(op.output, reference.output, any_order=my_kind != their_kind):
                    self.partners[op.index].append(index)
                    self.counterparts[index].append(op.index)
        self.consumers = defaultdict(list)
        for op in learner_ops:
            for source in op.sources:
                self.consumers[source].append(op.index)

    # the learner's counterparts of a reference operation's sources, and the learner's operations fed by them
    def _counterpart_sources(self, theirs):
        found = set()
        for source in theirs.sources:
            found |= {INPUT} if source == INPUT else set(self.counterparts.get(source, ()))
        return found

    def _at_place_of(self, theirs):
        """The learner's operation where ``theirs`` should be: fed by the counterparts of its inputs."""
        sources = self._counterpart_sources(theirs)
        fed = [index for source in sources for index in self.consumers.get(source, ())
               if self.learner_ops[index].depends_on_input and theirs.index not in self.partners.get(index, ())]
        fed = sorted(set(fed))
        kind = self.kinds[("theirs", theirs.index)]
        same_kind = [index for index in fed if self.kinds[("mine", index)] == kind]
        if same_kind:
            return self.learner_ops[same_kind[0]]
        # the same operation applied elsewhere (to the wrong tensor): unmatched, of the same kind and shape
        after = min((index for index in sources if index != INPUT), default=-1)
        elsewhere = [op.index for op in self.mine if op.index > after and not self.partners.get(op.index)
                     and self.kinds[("mine", op.index)] == kind and _squeeze(op.output_shape) ==
                     _squeeze(theirs.output_shape)
                     and all(source == INPUT or self.partners.get(source) for source in op.sources)]
        if elsewhere:
            return self.learner_ops[elsewhere[0]]
        # a composite operation written out in steps: the first unmatched step downstream with its output's size
        pending, seen = [] if _is_strict(kind) else [index for index in fed if not self.partners.get(index)], set()
        while pending:
            index = min(pending)
            pending.remove(index)
            if index in seen:
                continue
            seen.add(index)
            if self.learner_ops[index].output_shape and self.learner_ops[index].output.numel() == theirs.output.numel():
                return self.learner_ops[index]
            pending.extend(i for i in self.consumers.get(index, ()) if not self.partners.get(i))
        unmatched = [index for index in fed if not self.partners.get(index)]
        for group in (unmatched, fed):
            if group:
                return self.learner_ops[group[0]]
        return None

    def _names(self, ops, sources):
        return " and ".join("the model's input" if s == INPUT else ops[s].where() for s in sorted(sources)) \
            or "no operation"

    def uncovered_message(self, theirs):
        position = self.theirs.index(theirs) + 1
        head = (f"{self.case}: the reference's {theirs.where()} (its operation {position} of {len(self.theirs)}, "
                f"output {theirs.output_shape}) has no counterpart in the learner's model")
        mine = self._at_place_of(theirs)
        if mine is None:
            after = self._names(self.learner_ops, self._counterpart_sources(theirs) - {INPUT}) \
                if self._counterpart_sources(theirs) - {INPUT} else "the input"
            return f"{head}: nothing in the learner's model takes the output of its {after} there (a missing layer?)"
        return f"{head}: {self._difference(mine, theirs)}"

    def _difference(self, mine, theirs):
        my_kind, their_kind = self.kinds[("mine", mine.index)], self.kinds[("theirs", theirs.index)]
        here = f"at its place the learner's model applies {mine.where()}"
        if mine.kind == theirs.kind or my_kind == their_kind:
            for name, value in theirs.arguments.items():
                if name in mine.arguments and mine.arguments[name] != value:
                    return (f"{here} with {name}={mine.arguments[name]!r}, the reference's has {name}={value!r}")
        if my_kind != their_kind and (_is_strict(my_kind) or _is_strict(their_kind)):
            return (f"{here} where the reference applies {theirs.kind}{_kind_text(their_kind)} (a missing, extra or "
                    f"misplaced operation?)")
        if my_kind != their_kind:  # the reference's composite operation written out in steps, ending here
            if mine.output.numel() != theirs.output.numel():
                return (f"{here} with output {mine.output_shape} where the reference applies {theirs.kind} with "
                        f"output {theirs.output_shape} (a missing {theirs.kind}?)")
            return self._values_differ(f"{here}, one of the steps that should compute it,", mine, theirs)
        # its inputs: from other operations than the reference's?
        for source_set in mine.inputs:
            for source in source_set:
                if source != INPUT and not self.partners.get(source) and self.learner_ops[source].depends_on_input:
                    return (f"{here}, but one of its inputs comes from the learner's "
                            f"{self.learner_ops[source].where()}, which has no counterpart in the reference (an extra "
                            f"or misplaced operation, e.g. an activation before a residual addition?)")
        mapped = [set(self.partners.get(s, ())) if s != INPUT else {INPUT} for s in mine.sources]
        wanted = set(theirs.sources)
        if mapped and not all(m & wanted for m in mapped):
            takes = self._names(self.reference_ops, {next(iter(m)) for m in mapped if m})
            return (f"{here} to the values of {takes}, where the reference's {theirs.kind} takes those of "
                    f"{self._names(self.reference_ops, wanted)} (applied to the wrong tensor?)")
        if theirs.kind == "cat" and mine.kind == "cat" and len(mine.inputs) == len(theirs.inputs):
            order = [set(self.partners.get(s, ())) for m in mine.inputs for s in m]
            expected = [set(t) for t in theirs.inputs]
            if order != expected and sorted(map(sorted, order)) == sorted(map(sorted, expected)):
                return f"{here}: it concatenates the same tensors in another order"
        if _squeeze(mine.output_shape) != _squeeze(theirs.output_shape):
            return (f"{here}, with output shape {mine.output_shape} against the reference's {theirs.output_shape} "
                    f"(input {self.input_shape}; {_shape_hint(theirs.kind)})")
        return self._values_differ(f"{here}, fed by operations that match the reference's,", mine, theirs)

    @staticmethod
    def _values_differ(here, mine, theirs):
        if mine.output.numel() != theirs.output.numel():
            return (f"{here} but its output has shape {mine.output_shape} against the reference's "
                    f"{theirs.output_shape}")
        if _squeeze(mine.output.shape) == _squeeze(theirs.output.shape):
            difference = relative_difference(mine.output.reshape(theirs.output.shape), theirs.output)
        else:
            difference = relative_difference(mine.output.flatten().sort().values, theirs.output.flatten().sort().values)
        scale = float(theirs.output.abs().max())
        return (f"{here} but its output differs from the reference's by up to {difference * scale:.3g}, "
                f"{difference:.2%} of the reference's largest value {scale:.3g} (tolerance {ATOL:g} of it; "
                f"{_value_hint(mine, theirs)})")

    def assert_no_unused(self):
        for op in self.mine:
            if not op.reaches_output:
                raise AssertionError(
                    f"{self.case}: the learner's {op.where()} (output {op.output_shape}) is computed but its result "
                    f"never reaches the model's output (not assigned, e.g. `F.relu(x)` instead of `x = F.relu(x)`, "
                    f"or a branch that is built but not added?)")

    def assert_reference_covered(self):
        for theirs in self.theirs:
            if not self.counterparts.get(theirs.index):
                raise AssertionError(self.uncovered_message(theirs))

    def _excused(self, op):
        """An unmatched learner's operation is a step of a composite reference operation written out."""
        pending, seen, closing = list(self.consumers.get(op.index, ())), set(), []
        while pending:
            index = pending.pop()
            if index in seen:
                continue
            seen.add(index)
            if self.partners.get(index):
                closing.append(index)
            else:
                pending.extend(self.consumers.get(index, ()))
        if not closing:
            return False
        for index in closing:
            my_kind = self.kinds[("mine", index)]
            if not any(self.kinds[("theirs", r)] != my_kind and not _is_strict(self.kinds[("theirs", r)])
                       for r in self.partners[index]):
                return False
        return True

    def first_unmatched(self):
        """The learner's first operation whose values are not among the reference's (for a pass that crashed)."""
        return next((op for op in self.mine if not self.partners.get(op.index)), None)

    def _reference_at_place_of(self, mine):
        """The reference's operation fed by the counterparts of ``mine``'s inputs (same kind first)."""
        wanted = set()
        for source in mine.sources:
            wanted |= {INPUT} if source == INPUT else set(self.partners.get(source, ()))
        fed = [op for op in self.theirs if op.sources & wanted and not self.counterparts.get(op.index)]
        my_kind = self.kinds[("mine", mine.index)]
        same_kind = [op for op in fed if self.kinds[("theirs", op.index)] == my_kind or op.kind == mine.kind]
        return (same_kind or fed or [None])[0]

    def unmatched_message(self, mine):
        theirs = self._reference_at_place_of(mine)
        if theirs is not None:
            return self.uncovered_message(theirs)
        extra = (", e.g. a dropout or an activation the reference does not have"
                 if _is_strict(self.kinds[("mine", mine.index)]) else "")
        return (f"{self.case}: the learner's {mine.where()} (output {mine.output_shape}) has no counterpart in the "
                f"reference: its values are not among the reference's (an extra operation{extra}?)")

    def assert_no_extra(self):
        for op in self.mine:
            if op.reaches_output and not self.partners.get(op.index) and not self._excused(op):
                extra = (", e.g. a dropout or an activation the reference does not have"
                         if _is_strict(self.kinds[("mine", op.index)]) else "")
                raise AssertionError(
                    f"{self.case}: the learner's {op.where()} (output {op.output_shape}) has no counterpart in the "
                    f"reference: its values are not among the reference's (an extra operation{extra}?)")


def _kind_text(kind):
    """`` (values clipped to [0, 6])`` for the clamp family, else nothing: said after the operation's name."""
    return f" (values clipped to {kind[5:]})" if kind.startswith("clamp[") else ""


def _shape_hint(kind):
    if kind.startswith(("conv", "max_pool", "avg_pool", "lp_pool")):
        return "a wrong kernel size, stride, padding or dilation?"
    if kind == "linear":
        return "a wrong number of features, or its input flattened differently?"
    if kind == "cat":
        return "concatenated along another dimension, or other tensors?"
    return "a wrong shape: check the layer's sizes"


def _value_hint(mine, theirs):
    if _same_values_in_other_order(mine.output, theirs.output):
        return ("the same values in another order: a permutation, such as a channel shuffle with its groups "
                "swapped, heads split wrongly, a concatenation order, or a reshape of another layout")
    if theirs.kind.startswith("conv") or theirs.kind == "linear":
        return ("its inputs come from matching operations, so the difference lies in between or in the layer: a "
                "reshape, permute or slice that orders the values differently (a channel shuffle with its groups "
                "swapped?), or other weights (a parameter used twice, a missing bias?)")
    if "norm" in theirs.kind:
        return "another normalisation (eps, axes) or another layer's parameters?"
    if "attention" in theirs.kind:
        return "heads split or merged wrongly, softmax over the wrong axis, or a missing 1/sqrt(head size) scale?"
    if theirs.kind == "gelu":
        return "GELU's exact and tanh forms differ: check `approximate`"
    return "check this operation's definition"


def check_same_architecture(model, reference, input_shape, name="architecture", seed=0):
    """Assert that ``model`` is the same network as ``reference``: parameters, operations and outputs.

    Args:
        model: the learner's ``nn.Module`` (an instance).
        reference: the reference instance, e.g. ``torchvision.models.alexnet(weights=None)``; its weights do not
            matter (a copy gets random ones).
        input_shape: the input's shape with the batch, e.g. ``(2, 3, 64, 64)``; small inputs keep it fast.
        name: how the check is named in its messages.
        seed: seeds the random input and the redrawn weights.

    Every operation's output is compared within ``1e-5 * max|reference output| + 1e-4 * |reference output|``.
    Raises ``AssertionError`` naming the first parameter, operation or output that differs; prints one line when
    everything matches. Neither model is changed.
    """
    case = name
    if not (isinstance(input_shape, (tuple, list)) and len(input_shape) >= 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_shape)):
        raise ValueError(f"input_shape must be a shape of positive ints with the batch first; got {input_shape!r}")
    reference = copy.deepcopy(_on_cpu(reference, "reference"))
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))  # input_shape, e.g. (N, C, H, W)

    # 1. the reference, with weights that cannot hide a mistake
    try:
        redraw_parameters_(reference, x, seed=seed)
    except Exception as error:
        raise AssertionError(_crash_message(error, x, "reference", case) + " (is input_shape large enough?)") from error
    reference_output, reference_ops, error = _run(reference, x)
    if error is not None:  # pragma: no cover - the redraw above ran it already
        raise AssertionError(_crash_message(error, x, "reference", case)) from error

    # 2. the learner's parameters paired with the reference's through the operations that use them
    structure = learner_pass(model, x, keep_outputs=False, describe=True)
    error = structure.error
    if isinstance(error, NotImplementedError):
        raise AssertionError(_crash_message(error, x, "learner's", case)) from error
    state, how = _pair_tensors(structure.tensors, reference, structure.operations, reference_ops, case,
                               complete=error is None)

    # 3. the learner's pass with the reference's values: every reference operation matched by value, nothing extra
    values = learner_pass(model, x, state=state)
    learner_output, learner_ops, error = values.output, values.operations, values.error
    comparison = _Comparison(learner_ops, reference_ops, case, input_shape)
    if error is not None:  # a crash is often the consequence of an earlier difference: name that one first
        crash = _crash_message(error, x, "learner's", case, learner_ops)
        first = comparison.first_unmatched()
        if first is not None:
            raise AssertionError(f"{comparison.unmatched_message(first)}; then {crash[len(case) + 2:]}") from error
        raise AssertionError(crash) from error
    comparison.assert_no_unused()
    comparison.assert_reference_covered()
    comparison.assert_no_extra()
    reference_output, learner_output = first_tensor(reference_output), first_tensor(learner_output)
    if learner_output is None:
        raise AssertionError(f"{case}: the learner's model returned no tensor")
    if not _same_values(learner_output, reference_output):
        if learner_output.numel() != reference_output.numel():
            raise AssertionError(f"{case}: the model's output has shape {tuple(learner_output.shape)}, the "
                                 f"reference's {tuple(reference_output.shape)}")
        common.assert_close(learner_output.reshape(reference_output.shape), reference_output, case,
                            what=f"the model's output for input {tuple(input_shape)} (reference's weights copied in)",
                            rtol=RTOL, atol=ATOL * float(reference_output.abs().max()))
    parameters = [t for t in reference.parameters()]
    total = sum(t.numel() for t in parameters)
    common.passed(f"{name} ({total:,} parameters in {len(parameters)} tensors paired {how}, "
                  f"{len(list(reference.buffers()))} buffers, {len(comparison.theirs)} operations and the output)",
                  len(state) + len(comparison.theirs) + 1)


# --------------------------------------------------------------------------- a paper's layer table

def _kinds_text(kind):
    return " or ".join(kind) if isinstance(kind, (tuple, list)) else kind


def _as_pair(value):
    """2 -> (2, 2); (2, 3) -> (2, 3): call arguments compared in one form."""
    if isinstance(value, (tuple, list)):
        return tuple(value) if len(value) != 1 else (value[0], value[0])
    return (value, value)


def check_layer_table(model, expected_rows, input_shape, name="layer table", total_parameters=None, seed=0,
                      skip=("add", "cat", "mul")):
    """Assert that ``model``'s forward pass follows a layer table row by row.

    Args:
        model: the learner's ``nn.Module`` (an instance).
        expected_rows: ``Layer(kind, output_shape, parameters, geometry)`` rows (or plain tuples of the same), one
            per traced operation, e.g. ``Layer("conv2d", (6, 28, 28), 156, (("kernel_size", 5),))``.
            ``kind`` may be a tuple of acceptable operations, e.g. ``("linear", "conv2d")``; output shapes leave
            the batch out and trailing 1s are ignored, so ``(120, 1, 1)`` matches ``(120,)``; ``geometry`` lists
            call arguments the operation must have (kernel size, stride, padding; ints or pairs), so that a
            pooling with another window that happens to give the same output shape is rejected.
        input_shape: the input's shape with the batch, e.g. ``(2, 1, 32, 32)``.
        name: how the check is named in its messages.
        total_parameters: the model's expected parameter count; by default the sum of the rows' ``parameters``.
        seed: seeds the random input.
        skip: traced operations left out of the comparison.

    The parameters of a row are those registered directly on the module that runs the operation (counted at
    its first operation). An operation whose result never reaches the output is rejected. Raises
    ``AssertionError`` naming the first row that differs.
    """
    case = name
    rows = [row if isinstance(row, Layer) else Layer(*row) for row in expected_rows]
    total_expected = sum(row.parameters for row in rows) if total_parameters is None else total_parameters
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))  # input_shape, e.g. (N, C, H, W)
    traced = learner_pass(model, x, keep_outputs=False, describe=True)
    operations, error = traced.operations, traced.error
    for op in operations:
        if op.depends_on_input and not op.reaches_output:
            raise AssertionError(f"{case}: the learner's {op.where()} (output {op.output_shape[1:]}) is computed but "
                                 f"its result never reaches the model's output (not assigned, or not used?)")
    operations = [op for op in operations if op.kind not in skip and op.depends_on_input]
    counted = set()
    for index, (op, row) in enumerate(zip(operations, rows), start=1):
        accepted = tuple(row.kind) if isinstance(row.kind, (tuple, list)) else (row.kind,)
        received_shape = op.output_shape[1:]  # drop the batch
        if op.kind not in accepted:
            raise AssertionError(f"{case}: layer {index}: learner's model applies {op.where()} with output "
                                 f"{received_shape}, the table has {_kinds_text(row.kind)} with output "
                                 f"{tuple(row.output_shape)}")
        if _squeeze(received_shape) != _squeeze(row.output_shape):
            raise AssertionError(f"{case}: layer {index}: learner's {op.where()} gives output shape "
                                 f"{received_shape} for input {tuple(input_shape)}, the table has "
                                 f"{tuple(row.output_shape)} (a wrong kernel size, stride or padding?)")
        for argument, expected in row.geometry:
            received = op.arguments.get(argument)
            if argument == "stride" and received in (None, ()) and "pool" in op.kind:
                received = op.arguments.get("kernel_size")  # pooling's default stride is its kernel size
            if received is None and argument in ("padding",):
                received = 0
            if received is None and argument in ("stride", "dilation"):
                received = 1
            if received is None or _as_pair(received) != _as_pair(expected):
                raise AssertionError(f"{case}: layer {index}: learner's {op.where()} has {argument}={received!r}, "
                                     f"the table has {argument}={expected!r} (the output shape {received_shape} "
                                     f"agrees, the layer does not)")
        own = 0
        if op.module not in counted:  # a module's parameters count once, at its first operation
            counted.add(op.module)
            own = traced.own_parameters.get(op.module, 0)
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
    total = traced.total_parameters
    if total != total_expected:
        raise AssertionError(f"{case}: learner's model has {total:,} parameters in total, the table {total_expected:,}")
    common.passed(f"{name} ({len(rows)} layers, {total:,} parameters)", len(rows) + 1)
