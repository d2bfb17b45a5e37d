"""The chapter 05 checks pass on a correct training loop and fail, with a clear message, on the usual mistakes.

The correct loop below is written out here, independently of the check's own reference loop.
"""
import pytest
import torch

from course_utils.checks import numpy_to_pytorch as checks
from split_mode import failure, split_mode


# --------------------------------------------------------------------------- correct implementations

def correct_train_one_epoch(model, loader, optimizer, loss_fn, device):
    model.train()
    total_loss, count = torch.zeros(()), 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * len(y)
        count += len(y)
    return (total_loss / count).item()


def correct_evaluate_accuracy(model, loader, device):
    model.eval()
    correct, count = 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += (model(x).argmax(dim=1) == y).sum().item()
            count += len(y)
    return correct / count


# --------------------------------------------------------------------------- wrong training loops

def stub_train(model, loader, optimizer, loss_fn, device):
    raise NotImplementedError("exercise: replace this line with your code")


def train_without_zero_grad(model, loader, optimizer, loss_fn, device):
    model.train()
    total, count = 0.0, 0
    for x, y in loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        count += len(y)
    return total / count


def train_without_model_train(model, loader, optimizer, loss_fn, device):
    total, count = 0.0, 0
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        count += len(y)
    return total / count


def train_step_before_backward(model, loader, optimizer, loss_fn, device):
    model.train()
    total, count = 0.0, 0
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        optimizer.step()
        loss.backward()
        total += loss.item() * len(y)
        count += len(y)
    return total / count


def train_mean_over_batches(model, loader, optimizer, loss_fn, device):
    model.train()
    losses = []
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)  # wrong: the last batch of 2 weighs like one of 16


def train_returns_last_loss(model, loader, optimizer, loss_fn, device):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return loss.item()


def train_under_no_grad(model, loader, optimizer, loss_fn, device):
    model.train()
    with torch.no_grad():
        for x, y in loader:
            model(x)
    return 0.0


# --------------------------------------------------------------------------- wrong evaluations

def stub_evaluate(model, loader, device):
    raise NotImplementedError("exercise: replace this line with your code")


def evaluate_without_eval(model, loader, device):
    correct, count = 0, 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(dim=1) == y).sum().item()
            count += len(y)
    return correct / count


def evaluate_without_no_grad(model, loader, device):
    model.eval()
    correct, count = 0, 0
    for x, y in loader:
        correct += (model(x).argmax(dim=1) == y).sum().item()
        count += len(y)
    return correct / count


def evaluate_mean_over_batches(model, loader, device):
    model.eval()
    accuracies = []
    with torch.no_grad():
        for x, y in loader:
            accuracies.append((model(x).argmax(dim=1) == y).float().mean().item())
    return sum(accuracies) / len(accuracies)


def evaluate_as_percentage(model, loader, device):
    return 100 * correct_evaluate_accuracy(model, loader, device)


# --------------------------------------------------------------------------- tests

def test_train_check_passes_on_a_correct_loop(capsys):
    checks.check_train_one_epoch(correct_train_one_epoch)
    assert "train_one_epoch: all" in capsys.readouterr().out


def test_train_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_train_one_epoch(stub_train)


def test_train_check_fails_without_zero_grad():
    with pytest.raises(AssertionError, match="never zeroes the gradients"):
        checks.check_train_one_epoch(train_without_zero_grad)


def test_train_check_fails_when_the_model_is_not_put_in_train_mode():
    with pytest.raises(AssertionError, match=r"eval mode during training; call model.train\(\)"):
        checks.check_train_one_epoch(train_without_model_train)


def test_train_check_fails_when_step_comes_before_backward():
    with pytest.raises(AssertionError, match="did not change at all"):
        checks.check_train_one_epoch(train_step_before_backward)


def test_train_check_fails_on_a_loss_averaged_over_batches():
    with pytest.raises(AssertionError, match="returned mean loss .* expected .* mean over all 50 examples"):
        checks.check_train_one_epoch(train_mean_over_batches)


def test_train_check_fails_on_the_last_batch_loss():
    with pytest.raises(AssertionError, match="returned mean loss"):
        checks.check_train_one_epoch(train_returns_last_loss)


def test_train_check_fails_when_gradients_are_off():
    with pytest.raises(AssertionError, match="gradients were off during training"):
        checks.check_train_one_epoch(train_under_no_grad)


def test_evaluate_check_passes_on_a_correct_evaluation(capsys):
    checks.check_evaluate_accuracy(correct_evaluate_accuracy)
    assert "evaluate_accuracy: all" in capsys.readouterr().out


def test_evaluate_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_evaluate_accuracy(stub_evaluate)


def test_evaluate_check_fails_without_model_eval():
    with pytest.raises(AssertionError, match=r"train mode during evaluation .* model.eval\(\)"):
        checks.check_evaluate_accuracy(evaluate_without_eval)


def test_evaluate_check_fails_without_no_grad():
    with pytest.raises(AssertionError, match=r"autograd was recording during evaluation"):
        checks.check_evaluate_accuracy(evaluate_without_no_grad)


def test_evaluate_check_fails_on_accuracy_averaged_over_batches():
    with pytest.raises(AssertionError, match="mean of the per-batch accuracies"):
        checks.check_evaluate_accuracy(evaluate_mean_over_batches)


def test_evaluate_check_fails_on_a_percentage():
    with pytest.raises(AssertionError, match=r"fraction in \[0, 1\]"):
        checks.check_evaluate_accuracy(evaluate_as_percentage)


def test_evaluate_check_reports_a_crash_as_a_failed_case():
    def crashes(model, loader, device):
        return model(torch.zeros(1, 99))

    with pytest.raises(AssertionError, match="raised RuntimeError"):
        checks.check_evaluate_accuracy(crashes)


# --------------------------------------------------------------------------- under the grader (split mode)

def train_returns_a_list(model, loader, optimizer, loss_fn, device):
    return [correct_train_one_epoch(model, loader, optimizer, loss_fn, device)]


def evaluate_crashes(model, loader, device):
    return model(torch.zeros(1, 99))


def test_split_mode_passes_the_correct_answers(capsys):
    split_mode(checks.check_train_one_epoch, correct_train_one_epoch)
    split_mode(checks.check_evaluate_accuracy, correct_evaluate_accuracy)
    out = capsys.readouterr().out
    assert "✓ train_one_epoch: all 4 cases passed." in out
    assert "✓ evaluate_accuracy: all 2 cases passed." in out


@pytest.mark.parametrize("wrong", [stub_train, train_without_zero_grad, train_without_model_train,
                                   train_step_before_backward, train_mean_over_batches, train_returns_last_loss,
                                   train_under_no_grad, train_returns_a_list], ids=lambda f: f.__name__)
def test_split_mode_fails_wrong_training_loops_with_the_same_message(wrong):
    expected = failure(checks.check_train_one_epoch, wrong)
    assert failure(split_mode, checks.check_train_one_epoch, wrong) == expected


@pytest.mark.parametrize("wrong", [stub_evaluate, evaluate_without_eval, evaluate_without_no_grad,
                                   evaluate_mean_over_batches, evaluate_as_percentage, evaluate_crashes],
                         ids=lambda f: f.__name__)
def test_split_mode_fails_wrong_evaluations_with_the_same_message(wrong):
    expected = failure(checks.check_evaluate_accuracy, wrong)
    assert failure(split_mode, checks.check_evaluate_accuracy, wrong) == expected


def test_split_mode_builds_the_model_on_the_learners_side():
    """The learner's function receives real objects (a model, a DataLoader, an optimizer), never handles."""
    seen = []

    def train_one_epoch(model, loader, optimizer, loss_fn, device):
        seen.append((type(model).__name__, type(loader).__name__, type(optimizer).__name__, type(loss_fn).__name__))
        return correct_train_one_epoch(model, loader, optimizer, loss_fn, device)

    split_mode(checks.check_train_one_epoch, train_one_epoch)
    assert set(seen) == {("_TinyClassifier", "DataLoader", "SGD", "CrossEntropyLoss")}
