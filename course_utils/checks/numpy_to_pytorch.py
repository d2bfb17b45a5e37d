"""Checks for the exercises of ``solutions/05_numpy_to_pytorch.ipynb``: a training loop and an evaluation.

The learner writes::

    train_one_epoch(model, loader, optimizer, loss_fn, device) -> mean loss over the epoch's examples
    evaluate_accuracy(model, loader, device) -> fraction of examples classified right

Both are run on a tiny fixed problem (50 examples of 6 features, 3 classes, batches of 16, so the last
batch holds 2) and compared with a reference loop written out below, the loop of chapter 05::

    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

The model holds a ``_ModeRecorder`` that writes down, at every forward pass, whether the model was in
training mode and whether autograd was recording, so the checks can say *which* habit was missed
(``model.train()``/``model.eval()``, ``torch.no_grad()``) rather than only that numbers differ. When the
parameters after one epoch differ from the reference's, the check says whether they did not move at all
(``optimizer.step()`` before ``loss.backward()``) or match a loop that never zeroes the gradients.

The learner's function is called by the probes ``learner_train_epochs`` and ``learner_evaluate``, which build
the model, the loader and the optimizer where the function lives (in the learner's notebook, or in the learner's
kernel under the grader) from plain data: the initial weights and the examples. They send back plain data (the
parameters after training, the recorder's calls, the returned number); the reference loop, the predictions and
every comparison stay in the check's own process.
"""
import torch
from torch import nn

from course_utils.checks import common, learner

N_EXAMPLES, N_FEATURES, N_CLASSES, BATCH_SIZE = 50, 6, 3, 16  # 16 + 16 + 16 + 2: the last batch is partial
LEARNING_RATE = 0.5


class _ModeRecorder(nn.Module):
    """Identity layer that records ``(self.training, torch.is_grad_enabled())`` at each forward pass."""

    def __init__(self):
        super().__init__()
        self.calls = []  # one (training, grad_enabled) pair per forward pass

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return x


class _TinyClassifier(nn.Module):
    """6 features -> 8 hidden -> 3 classes, with a mode recorder and (optionally) dropout."""

    def __init__(self, dropout=0.0):
        super().__init__()
        self.recorder = _ModeRecorder()
        self.hidden = nn.Linear(N_FEATURES, 8)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(8, N_CLASSES)

    def forward(self, x):
        x = self.recorder(x)
        x = self.hidden(x)
        x = self.relu(x)
        x = self.dropout(x)
        return self.out(x)


def _problem(seed=0):
    """A fixed, learnable problem: x (50, 6) float32, y (50,) int64 from a random linear rule."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(N_EXAMPLES, N_FEATURES, generator=generator)
    rule = torch.randn(N_FEATURES, N_CLASSES, generator=generator)
    y = (x @ rule).argmax(dim=1)  # (N,)
    return x, y


def _loader(x, y):
    """Batches in a fixed order (no shuffling), so every loop sees the same batches."""
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH_SIZE, shuffle=False)


def _model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return _TinyClassifier(dropout)


def _reference_epoch(model, loader, optimizer, loss_fn, zero_grad=True):
    """The chapter's loop (with ``zero_grad=False``, the classic wrong one); returns the mean loss per example."""
    model.train()
    total, count = 0.0, 0
    for x, y in loader:
        if zero_grad:
            optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)  # the loss is a mean over the batch: weight it by the batch size
        count += len(y)
    return total / count


def _parameters(model):
    """name -> a detached copy of each parameter of ``model``."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _state(model):
    """The model's parameters and buffers as plain tensors: what a probe needs to build the same model."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _same_parameters(a, b, rtol=1e-5, atol=1e-6):
    return all(torch.allclose(a[name], b[name], rtol=rtol, atol=atol) for name in a)


def _as_float(value, case, what):
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise AssertionError(f"{case}: {what} should be one number; got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AssertionError(f"{case}: {what} should be a number (a Python float); got {value!r:.80}") from None


def _float_or_error(value, case, what):
    """``_as_float(value)``, or the ``AssertionError`` saying why it is not a number (to be raised later)."""
    try:
        return _as_float(value, case, what)
    except AssertionError as error:
        return error


def _recorded_calls(model):
    """The (training, grad_enabled) pairs the model's recorder wrote down, as plain booleans."""
    return [(bool(training), bool(grad)) for training, grad in model.recorder.calls]


# --------------------------------------------------------------------------- probes (where the learner's code runs)

def learner_train_epochs(train_one_epoch, state, x, y, epochs, eval_first, case):
    """Run the learner's ``train_one_epoch`` ``epochs`` times on a ``_TinyClassifier`` holding ``state``.

    The model, the loader over x (N, 6) and y (N,), the SGD optimizer (lr ``LEARNING_RATE``) and the loss are
    built here, where the learner's function lives (in the learner's notebook, or in the learner's kernel under
    the grader); with ``eval_first`` the model is handed over in eval mode. Returns plain data, a dict:

    * ``"results"``: each call's returned mean loss as a float, or the ``AssertionError`` saying why it is not a
      number (the calls stop there);
    * ``"calls"``: the (training, grad_enabled) pair of every forward pass of the model;
    * ``"parameters"``: name -> tensor, the parameters after the last call.
    """
    model = _TinyClassifier()
    model.load_state_dict(state)
    if eval_first:
        model.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    results = []
    for _ in range(epochs):
        result = common.call(train_one_epoch, model, _loader(x, y), optimizer, loss_fn, torch.device("cpu"), case=case)
        results.append(_float_or_error(result, case, "the returned mean loss"))
        if isinstance(results[-1], AssertionError):
            break
    return {"results": results, "calls": _recorded_calls(model), "parameters": _parameters(model)}


def learner_evaluate(evaluate_accuracy, state, x, y, case):
    """Run the learner's ``evaluate_accuracy`` on a ``_TinyClassifier`` with dropout 0.5 holding ``state``.

    The model is handed over in train mode, with a loader over x (N, 6) and y (N,). Returns plain data, a dict:
    ``"result"``, the returned accuracy as a float (or the ``AssertionError`` saying why it is not a number),
    and ``"calls"``, the (training, grad_enabled) pair of every forward pass of the model.
    """
    model = _TinyClassifier(dropout=0.5)
    model.load_state_dict(state)
    model.train()
    result = common.call(evaluate_accuracy, model, _loader(x, y), torch.device("cpu"), case=case)
    return {"result": _float_or_error(result, case, "the returned accuracy"), "calls": _recorded_calls(model)}


def _probe_reply(reply, keys):
    """The probe's dict, or an ``AssertionError`` when what came back is not one with ``keys``."""
    if not (isinstance(reply, dict) and set(keys) <= set(reply)):
        raise AssertionError(f"the check's probe returned {reply!r:.80}, not a dict with keys {sorted(keys)}")
    return reply


def _received_parameters(value, expected, case):
    """The parameters a probe sent back, checked to be name -> tensor with the reference's names and shapes."""
    if not (isinstance(value, dict) and set(value) == set(expected)
            and all(isinstance(value[name], torch.Tensor) and value[name].shape == expected[name].shape
                    for name in expected)):
        raise AssertionError(f"{case}: the model's parameters after the epoch could not be read back")
    return {name: tensor.to(expected[name].dtype) for name, tensor in value.items()}


def _result(values, index, case, what):
    """The float ``values[index]`` a probe sent back; the ``AssertionError`` it carries instead is raised."""
    value = values[index] if isinstance(values, (list, tuple)) and -len(values) <= index < len(values) else None
    if isinstance(value, BaseException):
        raise AssertionError(str(value))
    if type(value) is not float:
        raise AssertionError(f"{case}: {what} could not be read back")
    return value


# --------------------------------------------------------------------------- checks

def check_train_one_epoch(train_one_epoch):
    """``train_one_epoch(model, loader, optimizer, loss_fn, device)`` against the reference loop.

    Cases: the model is left in train mode and gradients are on during training (even when handed over in
    eval mode); the parameters after one epoch equal the reference loop's (same initial weights, same
    batches, SGD with lr 0.5; rtol 1e-5, atol 1e-6); the returned mean loss is the loss averaged over the
    epoch's *examples* (each batch's mean loss weighted by its size; 1e-5); and the loss decreases over
    five epochs.

    The learner's function runs in ``learner_train_epochs`` (the model, loader and optimizer are built where
    it lives, from the initial weights sent as tensors); the reference loop and every comparison run here.
    """
    x, y = _problem()
    loss_fn = nn.CrossEntropyLoss()
    n_batches = len(_loader(x, y))
    n_cases = 0

    # one epoch, starting from a model left in eval mode (as an evaluation would leave it)
    case = "one epoch from a model left in eval mode"
    reference = _model()
    initial = _parameters(reference)
    reply = _probe_reply(learner.run(learner_train_epochs, train_one_epoch, _state(reference), x, y, 1, True, case),
                         ("results", "calls", "parameters"))
    calls = list(reply["calls"])
    if len(calls) != n_batches:
        raise AssertionError(f"{case}: the model was called {len(calls)} times, expected once per batch "
                             f"({n_batches} batches of at most {BATCH_SIZE})")
    if not all(training for training, _ in calls):
        raise AssertionError(f"{case}: the model was in eval mode during training; call model.train() at the "
                             "start of the epoch (evaluation may have left it in eval mode)")
    if not all(grad for _, grad in calls):
        raise AssertionError(f"{case}: gradients were off during training (torch.no_grad() around the loop?)")
    n_cases += 1

    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=LEARNING_RATE)
    expected_loss = _reference_epoch(reference, _loader(x, y), reference_optimizer, loss_fn)
    expected = _parameters(reference)
    received = _received_parameters(reply["parameters"], expected, case)
    if not _same_parameters(received, expected):
        diagnosis = ""
        if _same_parameters(received, initial, rtol=0.0, atol=0.0):
            diagnosis = ("; the parameters did not change at all: call optimizer.step() after loss.backward() "
                         "(a step before backward sees gradients that zero_grad has just cleared), with the "
                         "optimizer you were given")
        else:
            accumulating = _model()
            _reference_epoch(accumulating, _loader(x, y), torch.optim.SGD(accumulating.parameters(), lr=LEARNING_RATE),
                             loss_fn, zero_grad=False)
            if _same_parameters(received, _parameters(accumulating)):
                diagnosis = ("; they match a loop that never zeroes the gradients, so they add up from batch to "
                             "batch: call optimizer.zero_grad() before loss.backward()")
        name = next(name for name in expected
                    if not torch.allclose(received[name], expected[name], rtol=1e-5, atol=1e-6))
        difference = (received[name] - expected[name]).abs().max().item()
        raise AssertionError(f"{case}: parameter {name!r} after one epoch differs from the reference loop's by up to "
                             f"{difference:.3g} (rtol=1e-5, atol=1e-6){diagnosis}")
    n_cases += 1

    loss = _result(reply["results"], 0, case, "the returned mean loss")
    if abs(loss - expected_loss) > 1e-5:
        batches = [len(b) for _, b in _loader(x, y)]
        raise AssertionError(
            f"{case}: returned mean loss {loss:.6f}, expected {expected_loss:.6f}: the mean over all "
            f"{N_EXAMPLES} examples, i.e. sum(batch mean loss * batch size) / {N_EXAMPLES} (batch sizes "
            f"{batches}; dividing by the number of batches, or returning the last batch's loss, is not it)")
    n_cases += 1

    # the loss goes down over five epochs (a new model and optimizer)
    case = "five epochs"
    reply = _probe_reply(learner.run(learner_train_epochs, train_one_epoch, _state(_model(seed=1)), x, y, 5, False,
                                     case), ("results",))
    losses = [_result(reply["results"], epoch, case, "the returned mean loss") for epoch in range(5)]
    if not losses[-1] < losses[0]:
        raise AssertionError(f"{case}: the mean loss did not decrease: {[round(v, 4) for v in losses]}")
    n_cases += 1
    common.passed("train_one_epoch", n_cases)


def check_evaluate_accuracy(evaluate_accuracy):
    """``evaluate_accuracy(model, loader, device)`` against the accuracy over every example.

    The model has dropout (p=0.5) and a mode recorder, and is handed over in train mode. Cases: the model is
    in eval mode and autograd is off at every forward pass; the accuracy is the fraction of all 50 examples
    classified right (the last batch holds 2 examples, so averaging the per-batch accuracies gives another
    number), to 1e-9; on two label sets, one where that per-batch average differs.

    The learner's function runs in ``learner_evaluate`` (on a model built where it lives, from the weights sent
    as tensors); the predictions and every comparison are computed here.
    """
    x, _ = _problem()
    model = _model(seed=2, dropout=0.5)
    model.eval()
    with torch.no_grad():
        predictions = model(x).argmax(dim=1)  # (N,)
    state = _state(model)
    # labels: all right except every third example, and both examples of the last, partial batch wrong,
    # so the mean of the per-batch accuracies (weighting the 2-example batch like a 16-example one) differs
    wrong = torch.zeros(N_EXAMPLES, dtype=torch.bool)
    wrong[::3] = True
    wrong[-2:] = True
    label_sets = {
        "labels with the last partial batch all wrong": torch.where(wrong, (predictions + 1) % N_CLASSES, predictions),
        "labels from the problem's rule": _problem()[1],
    }
    n_cases = 0
    for case, y in label_sets.items():
        expected = (predictions == y).double().mean().item()
        reply = _probe_reply(learner.run(learner_evaluate, evaluate_accuracy, state, x, y, case), ("result", "calls"))
        calls = list(reply["calls"])
        if not calls:
            raise AssertionError(f"{case}: the model was never called")
        if any(training for training, _ in calls):
            raise AssertionError(f"{case}: the model was in train mode during evaluation (dropout still on); "
                                 "call model.eval() first")
        if any(grad for _, grad in calls):
            raise AssertionError(f"{case}: autograd was recording during evaluation; wrap the loop in "
                                 "`with torch.no_grad():` (no gradients are needed, and they cost memory)")
        accuracy = _result([reply["result"]], 0, case, "the returned accuracy")
        if accuracy > 1.0 + 1e-9:
            raise AssertionError(f"{case}: returned accuracy {accuracy}, expected a fraction in [0, 1] "
                                 f"({expected:.6f}), not a percentage or a count")
        if abs(accuracy - expected) > 1e-9:
            per_batch = [(predictions[i:i + BATCH_SIZE] == y[i:i + BATCH_SIZE]).double().mean().item()
                         for i in range(0, N_EXAMPLES, BATCH_SIZE)]
            hint = (" (that is the mean of the per-batch accuracies; count correct examples over all batches and "
                    "divide by the number of examples)" if abs(accuracy - sum(per_batch) / len(per_batch)) < 1e-9
                    else "")
            raise AssertionError(f"{case}: returned accuracy {accuracy:.6f}, expected {expected:.6f} "
                                 f"({int((predictions == y).sum())} of {N_EXAMPLES} right){hint}")
        n_cases += 1
    common.passed("evaluate_accuracy", n_cases)
