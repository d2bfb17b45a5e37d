"""The chapter 06 checks pass on LeNet-5 and AlexNet written here, and fail on a stub and on wrong networks.

LeNet-5's reference is the paper's layer table (LeCun et al. 1998, Fig. 2); AlexNet's is torchvision's.
"""
import pytest
import torch
from torch import nn

from course_utils.checks import lenet_alexnet as checks
from split_mode import failure, split_mode


class LeNet5(nn.Module):
    def __init__(self, num_classes=10, activation=nn.Tanh, pool=nn.AvgPool2d):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, kernel_size=5)
        self.s2 = pool(2)
        self.c3 = nn.Conv2d(6, 16, kernel_size=5)
        self.s4 = pool(2)
        self.c5 = nn.Linear(16 * 5 * 5, 120)
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)
        self.act = activation()

    def forward(self, x):
        x = self.s2(self.act(self.c1(x)))  # (N, 6, 14, 14)
        x = self.s4(self.act(self.c3(x)))  # (N, 16, 5, 5)
        x = x.flatten(1)  # (N, 400)
        x = self.act(self.c5(x))
        x = self.act(self.f6(x))
        return self.output(x)


def lenet5_sequential_c5_conv():
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
                         nn.AvgPool2d(2), nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(), nn.Linear(120, 84),
                         nn.Tanh(), nn.Linear(84, 10))


def alexnet(without_dropout=False):
    model = nn.Sequential()
    model.features = nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
    model.avgpool = nn.AdaptiveAvgPool2d(6)
    model.flatten = nn.Flatten()
    dropout = nn.Identity if without_dropout else nn.Dropout
    model.classifier = nn.Sequential(dropout(), nn.Linear(9216, 4096), nn.ReLU(inplace=True),
                                     dropout(), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 1000))
    return model


class Stub(nn.Module):
    def __init__(self):
        raise NotImplementedError("exercise: replace this line with your code")


def test_lenet5_table_counts_61706_parameters():
    assert sum(row.parameters for row in checks.lenet5_table()) == 61_706


def test_lenet5_check_passes_on_a_class_with_a_linear_c5(capsys):
    checks.check_lenet5(LeNet5)
    assert "✓ LeNet-5 against the paper's layer table (11 layers, 61,706 parameters)" in capsys.readouterr().out


def test_lenet5_check_passes_on_a_sequential_with_a_convolutional_c5():
    checks.check_lenet5(lenet5_sequential_c5_conv)


def test_lenet5_check_accepts_a_network_instead_of_a_class():
    checks.check_lenet5(LeNet5())


def test_lenet5_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match=r"Stub is not implemented yet \(building the network with Stub\(\)\)"):
        checks.check_lenet5(Stub)


def test_lenet5_check_fails_on_relu():
    with pytest.raises(AssertionError, match=r"layer 2: learner's model applies relu \(act, ReLU\)"):
        checks.check_lenet5(lambda: LeNet5(activation=nn.ReLU))


def test_lenet5_check_fails_on_max_pooling():
    with pytest.raises(AssertionError, match=r"layer 3: learner's model applies max_pool2d \(s2, MaxPool2d\)"):
        checks.check_lenet5(lambda: LeNet5(pool=nn.MaxPool2d))


def test_alexnet_check_passes_on_alexnet_written_out(capsys):
    torch.manual_seed(1)
    checks.check_alexnet(alexnet)
    assert "✓ AlexNet against torchvision.models.alexnet (61,100,840 parameters" in capsys.readouterr().out


def test_alexnet_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match=r"Stub is not implemented yet \(building the network with Stub\(\)\)"):
        checks.check_alexnet(Stub)


def test_alexnet_check_fails_without_dropout():
    with pytest.raises(AssertionError, match=r"the reference's dropout \(classifier.0, Dropout\).* has no counterpart"):
        checks.check_alexnet(lambda: alexnet(without_dropout=True))


# --------------------------------------------------------------------------- under the grader (split mode)

def lenet5_with_relu():
    return LeNet5(activation=nn.ReLU)


def lenet5_with_max_pooling():
    return LeNet5(pool=nn.MaxPool2d)


@pytest.mark.parametrize("model", [LeNet5, lenet5_sequential_c5_conv, LeNet5()],
                         ids=["class", "function", "network"])
def test_split_mode_passes_lenet5(model, capsys):
    split_mode(checks.check_lenet5, model)
    assert "✓ LeNet-5 against the paper's layer table (11 layers, 61,706 parameters)" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong", [(checks.check_lenet5, Stub), (checks.check_lenet5, lenet5_with_relu),
                                          (checks.check_lenet5, lenet5_with_max_pooling),
                                          (checks.check_alexnet, Stub)],
                         ids=["lenet5 stub", "lenet5 relu", "lenet5 max pooling", "alexnet stub"])
def test_split_mode_fails_wrong_networks_with_the_same_message(check, wrong):
    expected = failure(check, wrong)
    assert failure(split_mode, check, wrong) == expected


def test_split_mode_passes_alexnet(capsys):
    torch.manual_seed(1)
    split_mode(checks.check_alexnet, alexnet)
    assert "✓ AlexNet against torchvision.models.alexnet (61,100,840 parameters" in capsys.readouterr().out
