"""course_utils.recipes: the schedule against torch's schedulers, the weight-decay groups, the training loop's
hooks, the range test, and the augmentation explorer without a browser."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from course_utils import recipes  # noqa: E402
from course_utils.checks.training_recipes import reference_schedule  # noqa: E402
from course_utils.models.resnet import BasicBlock, ResNet  # noqa: E402


@pytest.mark.parametrize("base_lr, warmup, total, start_factor, eta_min", [(0.1, 3, 12, 0.1, 0.01),
                                                                           (1.0, 1, 5, 0.5, 0.0)])
def test_warmup_cosine_matches_sequential_lr_of_linear_lr_and_cosine_annealing_lr(base_lr, warmup, total,
                                                                                  start_factor, eta_min):
    ours = [recipes.warmup_cosine_lr(t, base_lr, warmup, total, start_factor, eta_min) for t in range(total + 1)]
    expected = reference_schedule(base_lr, warmup, total, start_factor, eta_min)  # SequentialLR(LinearLR, Cosine...)
    assert ours == pytest.approx(expected.tolist(), rel=1e-6)


@pytest.mark.parametrize("arguments, message", [((-1, 0.1, 2, 10), "step must be a non-negative int"),
                                                ((0, 0.1, 10, 10), "warmup_steps must be smaller than total_steps"),
                                                ((0, 0.1, 2, 10, 0.0), r"start_factor must be in \(0, 1\]"),
                                                ((1.5, 0.1, 2, 10), "step must be a non-negative int")])
def test_warmup_cosine_refuses_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        recipes.warmup_cosine_lr(*arguments)


class WithEverything(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm(4)
        self.gn = nn.GroupNorm(2, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_weight_decay_groups_keep_biases_norms_and_skipped_names_out_of_decay():
    model = WithEverything()
    decay, no_decay = recipes.param_groups_weight_decay(model, 0.05, skip=["pos_embed"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["conv.weight", "fc.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == sorted(
        ["conv.bias", "bn.weight", "bn.bias", "ln.weight", "ln.bias", "gn.weight", "gn.bias", "pos_embed", "fc.bias"])
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    torch.optim.AdamW([decay, no_decay], lr=1e-3)  # torch accepts them


def test_weight_decay_groups_refuse_bad_input():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        recipes.param_groups_weight_decay([torch.zeros(2)], 0.1)
    with pytest.raises(ValueError, match="weight_decay must be a non-negative number"):
        recipes.param_groups_weight_decay(nn.Linear(2, 2), -1.0)
    with pytest.raises(ValueError, match=r"skip names parameters the model does not have: \['cls_token'\]"):
        recipes.param_groups_weight_decay(nn.Linear(2, 2), 0.1, skip=["cls_token"])


def tiny_data(n=24, side=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, side, side, generator=generator), torch.randint(3, (n,), generator=generator)


def tiny_resnet():
    torch.manual_seed(0)
    return ResNet(BasicBlock, (1, 1, 1, 1), num_classes=3, in_channels=1, width=2)


def test_train_with_recipe_steps_the_scheduler_every_batch_and_records_each_rate():
    x, y = tiny_data()
    model = tiny_resnet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: recipes.warmup_cosine_lr(t, 1.0, 2, 6, 0.1))
    history = recipes.train_with_recipe(model, x, y, epochs=2, optimizer=optimizer, batch_size=8,
                                        scheduler=scheduler, device="cpu")
    assert history.learning_rate == pytest.approx([recipes.warmup_cosine_lr(t, 0.1, 2, 6, 0.1) for t in range(6)])
    assert len(history.loss) == len(history.grad_norm) == 6 and len(history.epoch_seconds) == 2


def test_train_with_recipe_clips_updates_the_ema_resizes_and_mixes():
    x, y = tiny_data(n=20)
    model = tiny_resnet()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    history = recipes.train_with_recipe(
        model, x, y, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), batch_size=8,
        clip_grad_norm=1e-3, ema=ema, image_size=lambda epoch: 8 if epoch == 0 else 16, label_smoothing=0.1,
        batch_transform=v2.MixUp(alpha=1.0, num_classes=3), augment=v2.RandomHorizontalFlip(), device="cpu")
    assert history.image_size == [8, 16]
    assert len(history.loss) == 4  # 20 // 8 = 2 full batches per epoch; the last 4 images are dropped
    assert int(ema.n_averaged) == 4
    assert not torch.equal(ema.module.conv1.weight, model.conv1.weight)


def test_train_with_recipe_refuses_bad_input():
    x, y = tiny_data()
    model = tiny_resnet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"x must be a float tensor \(N, C, H, W\)"):
        recipes.train_with_recipe(model, x[:, 0], y, 1, optimizer)
    with pytest.raises(TypeError, match=r"y must be an int64 tensor of shape \(24,\)"):
        recipes.train_with_recipe(model, x, y.float(), 1, optimizer)
    with pytest.raises(ValueError, match=r"batch_size \(64\) is larger than the data \(24 images\)"):
        recipes.train_with_recipe(model, x, y, 1, optimizer, batch_size=64)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        recipes.train_with_recipe(model, x, y, 0, optimizer)


def test_lr_range_test_grows_the_rate_exponentially_and_puts_the_weights_back():
    x, y = tiny_data()
    model = tiny_resnet()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rates, losses = recipes.lr_range_test(model, x, y, start_lr=1e-3, end_lr=1e-1, steps=5, batch_size=8,
                                          device="cpu")
    assert rates == pytest.approx([1e-3, 10**-2.5, 1e-2, 10**-1.5, 1e-1])
    assert len(losses) == 5
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    with pytest.raises(ValueError, match="need 0 < start_lr < end_lr"):
        recipes.lr_range_test(model, x, y, start_lr=1.0, end_lr=0.1)


# --------------------------------------------------------------------------- the augmentation explorer

@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_explorer_function_applies_the_named_torchvision_transform_per_image_with_the_seed(images):
    view = recipes.augment_for_explorer(images, "rotation", strength=3, seed=7)
    assert view.description == "RandomRotation(degrees=27), seed 7"
    as_bytes = (images * 255).round().to(torch.uint8)
    torch.manual_seed(7)
    transform = v2.RandomRotation(degrees=27)
    expected = torch.stack([transform(image) for image in as_bytes]).float() / 255
    torch.testing.assert_close(view.images, expected)
    again = recipes.augment_for_explorer(images, "rotation", strength=3, seed=7)
    assert torch.equal(view.images, again.images)


def test_explorer_function_leaves_the_callers_random_state_alone(images):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    recipes.augment_for_explorer(images, "RandAugment", strength=5, seed=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", recipes.AUGMENTATIONS)
def test_every_augmentation_keeps_the_shape_and_range(images, name):
    view = recipes.augment_for_explorer(images, name, strength=10, seed=0)
    assert view.images.shape == images.shape and 0 <= float(view.images.min()) and float(view.images.max()) <= 1
    assert view.description.endswith(", seed 0")


def test_strength_zero_flip_changes_nothing_and_full_strength_flips_every_image(images):
    as_bytes = (images * 255).round() / 255
    torch.testing.assert_close(recipes.augment_for_explorer(images, "horizontal flip", 0, 0).images, as_bytes)
    torch.testing.assert_close(recipes.augment_for_explorer(images, "horizontal flip", 10, 0).images,
                               as_bytes.flip(-1))


@pytest.mark.parametrize("arguments, message", [
    ((torch.rand(2, 2, 8, 8), "rotation", 3, 0), r"C = 1 or 3"),
    ((torch.rand(2, 3, 8, 8) * 2, "rotation", 3, 0), r"floats in \[0, 1\]"),
    ((torch.rand(2, 3, 8, 8), "shear", 3, 0), "augmentation must be one of"),
    ((torch.rand(2, 3, 8, 8), "rotation", 11, 0), "strength must be an int from 0 to 10"),
    ((torch.rand(2, 3, 8, 8), "rotation", 3, -1), "seed must be a non-negative int"),
])
def test_explorer_function_refuses_bad_input(arguments, message):
    with pytest.raises(ValueError, match=message):
        recipes.augment_for_explorer(*arguments)


def test_explorer_widget_updates_the_summary_and_view_when_each_control_moves(images):
    box = recipes.augmentation_explorer(images, strength=5, seed=0)
    assert box.augmentation.value == "horizontal flip"
    assert box.summary.value == "RandomHorizontalFlip(p=0.5), seed 0"
    box.augmentation.value = "rotation"
    assert box.summary.value == "RandomRotation(degrees=45), seed 0" and box.view[0].name == "rotation"
    box.strength.value = 2
    assert box.summary.value == "RandomRotation(degrees=18), seed 0"
    box.seed.value = 3
    assert box.summary.value == "RandomRotation(degrees=18), seed 3"
    expected = recipes.augment_for_explorer(images, "rotation", 2, 3).images
    assert torch.equal(box.view[0].images, expected)
    assert box.output is not None and set(box.augmentation.options) == set(recipes.AUGMENTATIONS)


def test_explorer_widget_refuses_unknown_names(images):
    with pytest.raises(ValueError, match="names must be a non-empty list"):
        recipes.augmentation_explorer(images, names=["shear"])
