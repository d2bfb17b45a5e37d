"""fit and evaluate against a loop written out by hand, as chapter 05 writes it."""
import pytest
import torch
from torch import nn

from course_utils.device import seed_everything
from course_utils.training import History, evaluate, fit


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


def test_fit_uses_the_scheduler_once_per_epoch():
    model = toy_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    history = fit(model, toy_problem(), epochs=3, optimizer=optimizer, scheduler=scheduler, device="cpu", progress=False)
    assert history.learning_rate == [0.5, 0.25, 0.125]


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
