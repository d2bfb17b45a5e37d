"""course_utils.transfer: inputs, stages, freezing, parameter groups, the linear probe and the torchvision ResNet.

The ResNet tests build their own "pretrained" state dict (a seeded ResNet-18 saved to a temporary file), so
nothing is downloaded.
"""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from course_utils import transfer
from course_utils.models.efficientnet_lite import EfficientNetLite


def test_grey_to_input_scales_as_the_lite_weights_expect_and_repeats_the_channels():
    images = np.array([[[0, 127], [255, 127]]], dtype=np.uint8)  # (1, 2, 2)
    x = transfer.grey_to_input(images, size=2)
    assert x.shape == (1, 3, 2, 2)
    assert torch.allclose(x[0, :, 0, 0], torch.full((3,), -127 / 128)) and x[0, 1, 1, 0] == 1.0
    assert x[0, 2, 0, 1] == 0.0


def test_grey_to_input_takes_per_channel_statistics():
    images = np.full((1, 4, 4), 255, dtype=np.uint8)
    mean, std = 255 * np.array([0.485, 0.456, 0.406]), 255 * np.array([0.229, 0.224, 0.225])
    x = transfer.grey_to_input(images, size=8, mean=mean, std=std)
    assert x.shape == (1, 3, 8, 8)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor((1 - mean / 255) / (std / 255), dtype=torch.float32))


def test_labels_per_class_draws_that_many_of_every_class():
    labels = np.repeat(np.arange(4), 25)
    chosen = transfer.labels_per_class(labels, 7, seed=3)
    assert np.bincount(labels[chosen]).tolist() == [7] * 4 and len(set(chosen)) == 28
    assert np.array_equal(chosen, transfer.labels_per_class(labels, 7, seed=3))


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 8, 8), dtype=np.float32), "grey uint8 images .* dtype float32"),
    (np.zeros((2, 8, 8, 3), dtype=np.uint8), r"shape \(2, 8, 8, 3\)"),
    ([[0]], "got a list"),
])
def test_grey_to_input_refuses_what_is_not_grey_uint8_images(images, message):
    with pytest.raises(TypeError, match=message):
        transfer.grey_to_input(images, size=8)


def test_grey_to_input_refuses_a_bad_size():
    with pytest.raises(ValueError, match="size must be a positive int; got 0"):
        transfer.grey_to_input(np.zeros((1, 4, 4), dtype=np.uint8), size=0)


def test_labels_per_class_refuses_more_than_a_class_has():
    with pytest.raises(ValueError, match=r"cannot draw 3 examples per class: .* \{1: 2\}"):
        transfer.labels_per_class(np.array([0, 0, 0, 1, 1]), 3)


def test_efficientnet_stages_cover_every_parameter_once_in_order():
    model = EfficientNetLite()
    stages = transfer.efficientnet_stages(model)
    assert [name for name, _ in stages] == ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head", "fc"]
    ids = [id(p) for _, stage in stages for p in stage.parameters()]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert [len(stage) for name, stage in stages if name.startswith("stage")] == [1, 2, 2, 3, 3, 4, 1]


def test_pooled_stage_features_match_the_forward_pass():
    torch.manual_seed(0)
    model = EfficientNetLite().eval()
    x = torch.randn(3, 3, 64, 64)
    features = transfer.pooled_stage_features(model, x, batch_size=2)
    assert [f.shape[1] for f in features.values()] == [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    with torch.no_grad():
        pooled = model.pool(model.head(model.blocks(model.stem(x)))).flatten(1)  # (3, 1280)
    assert torch.allclose(features["head"], pooled, atol=1e-5)


def test_frozen_batchnorm_goes_back_to_eval_after_train():
    model = EfficientNetLite()
    transfer.freeze(model.stem)
    model.train()
    assert transfer.frozen_batchnorm_to_eval(model) == 1
    assert not model.stem.bn.training and model.head.bn.training


def test_stage_parameter_groups_decay_from_the_output_and_skip_frozen_stages():
    model = EfficientNetLite()
    stages = transfer.efficientnet_stages(model)
    transfer.freeze(model.stem)
    groups = transfer.stage_parameter_groups(stages, base_lr=1.0, decay=0.5)
    assert [g["name"] for g in groups] == [name for name, _ in stages[1:]]
    assert [g["lr"] for g in groups] == [0.5**k for k in range(8, -1, -1)]
    torch.optim.SGD(groups)  # no parameter twice


def test_linear_probe_separates_separable_features_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    separable = torch.randn(200, 8, generator=generator) + 4 * nn.functional.one_hot(labels, 8)  # (200, 8)
    noise = torch.randn(200, 8, generator=generator)
    assert transfer.fit_linear_probe(separable[:100], labels[:100], separable[100:], labels[100:]) > 0.95
    assert transfer.fit_linear_probe(noise[:100], labels[:100], noise[100:], labels[100:]) < 0.45


def test_train_classifier_keeps_frozen_batchnorm_statistics_only_when_asked():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 2
    for keep, unchanged in ((True, True), (False, False)):
        model = EfficientNetLite(num_classes=2)
        transfer.freeze(model.stem)
        before = model.stem.bn.running_mean.clone()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
        transfer.train_classifier(model, x, y, optimizer, epochs=1, batch_size=8, keep_frozen_bn_eval=keep)
        assert torch.equal(model.stem.bn.running_mean, before) == unchanged


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    """A seeded ResNet-18 saved as if it were downloaded weights (nothing is downloaded)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_resnet_for_transfer_loads_the_weights_and_replaces_the_head(resnet18_weights):
    state_dict = torch.load(resnet18_weights, weights_only=True)
    model = transfer.resnet_for_transfer(6, arch="resnet18", state_dict=state_dict)
    assert torch.equal(model.layer3[1].conv2.weight, state_dict["layer3.1.conv2.weight"])
    assert model.fc.weight.shape == (6, 512) and not model.training
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 6)


def test_resnet_for_transfer_freezes_by_parameter_name(resnet18_weights):
    state_dict = torch.load(resnet18_weights, weights_only=True)
    model = transfer.resnet_for_transfer(6, arch="resnet18", state_dict=state_dict, trainable=("layer4", "fc"))
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
    model = transfer.resnet_for_transfer(6, arch="resnet18", state_dict=state_dict, trainable=("stem",))
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {"conv1.weight", "bn1.weight",
                                                                                   "bn1.bias"}


def test_resnet_for_transfer_refuses_an_unknown_stage():
    with pytest.raises(ValueError, match="trainable stages must be among"):
        transfer.resnet_for_transfer(6, arch="resnet18", trainable=("layer5",))
