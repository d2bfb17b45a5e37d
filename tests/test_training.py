"""fit, evaluate and predict against a loop written out by hand, as chapter 05 writes it."""
import pytest
import torch
from torch import nn

from course_utils.device import seed_everything
from course_utils.training import History, evaluate, fit, predict


def toy_problem(n=96, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=generator)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()  # (n,)
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False)


def toy_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))


def test_fit_matches_a_loop_written_by_hand():
    loader = toy_problem()
    seed_everything(0)
    reference = toy_model()
    seed_everything(0)
    model = toy_model()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for _ in range(3):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(reference(x), y).backward()
            optimizer.step()
    fit(model, loader, epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu", progress=False)
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs)


def test_history_records_loss_that_decreases_and_validation():
    loader = toy_problem()
    seed_everything(0)
    history = fit(toy_model(), loader, epochs=5, lr=0.05, val_loader=loader, device="cpu", progress=False)
    assert isinstance(history, History) and history.epoch == [1, 2, 3, 4, 5]
    assert history.train_loss[-1] < history.train_loss[0]
    assert len(history.val_accuracy) == 5 and 0 <= history.val_accuracy[-1] <= 1
    assert all(s > 0 for s in history.seconds)
    assert set(history.last()) >= {"train_loss", "val_accuracy"}


def test_evaluate_counts_every_example_and_restores_train_mode():
    x = torch.zeros(10, 1, 2, 2)
    y = torch.tensor([0] * 7 + [1] * 3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)  # 4 + 4 + 2
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))  # always predicts class 0
    model.train()
    result = evaluate(model, loader, device="cpu")
    assert result["accuracy"] == pytest.approx(0.7)
    expected_loss = nn.functional.cross_entropy(model(x), y).item()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert model.training


def test_learning_rate_is_the_one_each_epoch_trained_with():
    model = toy_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    history = fit(model, toy_problem(), epochs=3, optimizer=optimizer, scheduler=scheduler, device="cpu", progress=False)
    assert history.learning_rate == [0.1, 0.05, 0.025], "StepLR halves the rate after each epoch, from 0.1"
    assert scheduler.get_last_lr() == [0.0125], "the scheduler still steps once per epoch"


class RecordsWhereItIsSent(nn.Module):
    """A linear classifier that remembers where each ``.to``/``.cpu``/``.cuda`` sends it.

    Those all go through ``nn.Module._apply(fn)``, where ``fn`` converts one tensor; the
    device it gives a probe tensor is the device the model is sent to.
    """

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(16, 2)
        self.sent_to = []

    def forward(self, x):
        return self.linear(x.flatten(1))  # (N, 16) -> (N, 2)

    def _apply(self, fn, recurse=True):
        self.sent_to.append(fn(torch.zeros(1)).device)
        return super()._apply(fn, recurse)


@pytest.mark.parametrize("run", [evaluate, predict])
def test_evaluate_and_predict_move_the_model_to_the_device(run):
    model = RecordsWhereItIsSent()
    run(model, toy_problem(), device="cpu")
    assert model.sent_to == [torch.device("cpu")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("run", [evaluate, predict])
def test_evaluate_and_predict_move_a_cpu_model_to_cuda(run):
    model = toy_model()
    run(model, toy_problem(), device="cuda")
    assert all(parameter.device.type == "cuda" for parameter in model.parameters())


def fails_after_one_batch():
    """A loader whose second batch never comes: the disk went away."""
    yield next(iter(toy_problem()))
    raise RuntimeError("disk gone")


class InterruptedOnSecondBatch(nn.Module):
    """Stands for a learner pressing Ctrl-C during the second batch; records the mode it ran in."""

    def __init__(self):
        super().__init__()
        self.batches = 0
        self.modes_seen = []

    def forward(self, x):
        self.batches += 1
        self.modes_seen.append(self.training)
        if self.batches == 2:
            raise KeyboardInterrupt
        return x.flatten(1)[:, :2]  # (N, 2)


@pytest.mark.parametrize("run", [evaluate, predict])
@pytest.mark.parametrize("interruption", ["loader raises", "model raises KeyboardInterrupt"])
def test_every_submodules_mode_is_restored_when_interrupted(run, interruption):
    interrupted = InterruptedOnSecondBatch()
    model = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm2d(1), interrupted)
    model.train()
    model[1].eval()  # frozen batch-norm statistics inside a model that trains: must stay frozen
    before = [module.training for module in model.modules()]  # [True, True, False, True]
    if interruption == "loader raises":
        with pytest.raises(RuntimeError, match="disk gone"):
            run(model, fails_after_one_batch(), device="cpu")
    else:
        with pytest.raises(KeyboardInterrupt):
            run(model, toy_problem(), device="cpu")
    assert interrupted.modes_seen[0] is False, "the batches run in eval mode"
    assert [module.training for module in model.modules()] == before


def records_linear_output_dtype():
    """A classifier whose linear layer's output dtype shows what autocast computed in."""
    dtypes = []
    linear = nn.Linear(16, 2)

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = linear

        def forward(self, x):
            out = self.linear(x.flatten(1))  # (N, 2)
            dtypes.append(out.dtype)
            return out

    return Recorder(), dtypes


@pytest.mark.parametrize("run", [
    lambda model: fit(model, toy_problem(), epochs=1, device="cpu", progress=False, mixed_precision=True),
    lambda model: evaluate(model, toy_problem(), device="cpu", mixed_precision=True),
    lambda model: predict(model, toy_problem(), device="cpu", mixed_precision=True),
], ids=["fit", "evaluate", "predict"])
def test_mixed_precision_on_the_cpu_computes_in_bfloat16(run):
    model, dtypes = records_linear_output_dtype()
    run(model)
    assert dtypes and set(dtypes) == {torch.bfloat16}


@pytest.mark.parametrize("run", [
    lambda model: fit(model, toy_problem(), epochs=1, device="cpu", progress=False),
    lambda model: evaluate(model, toy_problem(), device="cpu"),
], ids=["fit", "evaluate"])
def test_cpu_default_stays_float32(run):
    model, dtypes = records_linear_output_dtype()
    run(model)
    assert set(dtypes) == {torch.float32}


def test_loss_totals_stay_float32_under_bfloat16():
    # bfloat16 keeps 8 significant bits: counting 300 ones in it stops at 256, float32 counts to 300
    x = torch.randn(300, 1, 4, 4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(300, dtype=torch.long)))

    def bfloat16_one(logits, y):
        return logits.sum() * 0 + torch.ones((), dtype=torch.bfloat16)  # 1.0 per example, in bfloat16

    model, _ = records_linear_output_dtype()
    result = evaluate(model, loader, device="cpu", loss_fn=bfloat16_one, mixed_precision=True)
    history = fit(model, loader, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                  loss_fn=bfloat16_one, device="cpu", progress=False, mixed_precision=True)
    assert result["loss"] == 1.0 and history.train_loss == [1.0]


def test_predict_concatenates_the_eval_mode_outputs():
    seed_everything(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 2))
    x = torch.randn(10, 1, 4, 4)
    pairs = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(10)), batch_size=4)  # 4 + 4 + 2
    images_only = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4)  # batches are (x,)
    bare = [x[:4], x[4:]]
    model.eval()
    with torch.no_grad():
        expected = torch.cat([model(x[:4]), model(x[4:8]), model(x[8:])])  # (10, 2)
    model.train()
    for loader in (pairs, images_only, bare):
        out = predict(model, loader, device="cpu")
        assert out.dtype == torch.float32 and out.device.type == "cpu" and not out.requires_grad
        torch.testing.assert_close(out, expected)
    assert model.training


@pytest.mark.parametrize("model, loader, error, message", [
    ("net", [torch.zeros(1, 16)], TypeError, "model must be an nn.Module"),
    (nn.Linear(16, 2), 5, TypeError, "loader must be a DataLoader"),
    (nn.Linear(16, 2), [{"image": torch.zeros(1, 16)}], ValueError, r"must yield image tensors.*got a dict"),
    (nn.Linear(16, 2), [(torch.zeros(1, 16), 0, "name")], ValueError, "got a tuple of length 3"),
    (nn.Linear(16, 2), [], ValueError, "loader yielded no batches"),
    (nn.LSTM(16, 2), [torch.zeros(1, 16)], TypeError, "model must return a tensor per batch; got tuple"),
])
def test_predict_names_bad_input(model, loader, error, message):
    with pytest.raises(error, match=message):
        predict(model, loader, device="cpu")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"epochs": 0}, ValueError, "epochs must be a positive int"),
    ({"epochs": 1, "model": "net"}, TypeError, "model must be an nn.Module"),
    ({"epochs": 1, "train_loader": 5}, TypeError, "train_loader must be a DataLoader"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    arguments = {"model": toy_model(), "train_loader": toy_problem(), **kwargs}
    with pytest.raises(error, match=message):
        fit(**arguments, device="cpu", progress=False)


def test_batches_must_be_pairs():
    loader = [(torch.zeros(2, 1, 4, 4),)]
    with pytest.raises(ValueError, match=r"must yield \(images, labels\) pairs"):
        fit(toy_model(), loader, epochs=1, device="cpu", progress=False)


def test_live_plot_redraws_after_every_epoch(monkeypatch):
    import IPython.display

    updates = []

    class Handle:
        def update(self, figure):
            updates.append(len(figure.axes))

    monkeypatch.setattr(IPython.display, "display", lambda *args, **kwargs: Handle())
    fit(toy_model(), toy_problem(), epochs=2, device="cpu", progress=False, live_plot=True, val_loader=toy_problem())
    assert updates == [2, 2], "one figure with the loss and accuracy axes per epoch"
