"""``course_utils.robustness`` (chapter 16): attacks, corruptions, cue-conflict shapes and subgroup measures.

References in plain sight: the attacks against ``torch.func.grad`` (a second way to the input gradient) and against
their defining properties (the L-infinity budget, the pixel range); the corruptions against PIL and hand-worked
images; the calibration error against torchmetrics' ``binary_calibration_error``; the rates against counts worked
out by hand; the slant against sheared images.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils import robustness
from course_utils.data import make_shapes


@pytest.fixture
def model_and_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x = torch.rand(5, 1, 8, 8)
    x[:, :, 0] = 0.0  # pixels at the ends of the range: the clamp matters
    x[:, :, 1] = 1.0
    return model, x, torch.tensor([0, 1, 2, 3, 0])


# --------------------------------------------------------------------------- attacks

def test_fgsm_is_the_clamped_sign_of_the_gradient_from_torch_func(model_and_batch):
    model, x, y = model_and_batch
    gradient = torch.func.grad(lambda inputs: F.cross_entropy(model(inputs), y))(x)
    expected = (x + 0.1 * gradient.sign()).clamp(0, 1)
    torch.testing.assert_close(robustness.fgsm(model, x, y, 0.1), expected, rtol=0, atol=1e-6)


def test_fgsm_leaves_the_weights_gradients_and_the_input_alone(model_and_batch):
    model, x, y = model_and_batch
    before = x.clone()
    robustness.fgsm(model, x, y, 0.1)
    assert torch.equal(x, before)
    assert all(parameter.grad is None for parameter in model.parameters())


def test_pgd_stays_in_the_ball_and_the_pixel_range_and_beats_fgsm(model_and_batch):
    model, x, y = model_and_batch
    x_adv = robustness.pgd(model, x, y, eps=0.2, steps=20, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        loss = lambda images: F.cross_entropy(model(images), y).item()  # noqa: E731
        assert loss(x_adv) >= loss(robustness.fgsm(model, x, y, 0.2)) - 1e-6 > loss(x)


def test_pgd_is_repeatable_with_a_generator(model_and_batch):
    model, x, y = model_and_batch
    runs = [robustness.pgd(model, x, y, 0.1, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*runs)


def test_project_linf_clips_to_the_ball_around_x_then_to_the_pixel_range():
    x = torch.tensor([0.0, 0.5, 1.0, 0.5]).reshape(1, 1, 2, 2)
    moved = torch.tensor([-0.5, 0.9, 1.2, 0.45]).reshape(1, 1, 2, 2)
    expected = torch.tensor([0.0, 0.6, 1.0, 0.45]).reshape(1, 1, 2, 2)
    torch.testing.assert_close(robustness.project_linf(moved, x, 0.1), expected)


def test_random_sign_noise_moves_every_pixel_inside_the_range_by_eps():
    x = torch.full((2, 1, 4, 4), 0.5)
    noisy = robustness.random_sign_noise(x, 0.25, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close((noisy - x).abs(), torch.full_like(x, 0.25))
    assert {0.25, 0.75} == set(noisy.unique().tolist())


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: robustness.fgsm(m, x * 255, y, 0.1), r"pixels in \[0, 1\].*normalise inside the model"),
    (lambda m, x, y: robustness.fgsm(m, x[0], y, 0.1), r"float tensor \(N, C, H, W\); got .* shape \(1, 8, 8\)"),
    (lambda m, x, y: robustness.fgsm(m, x.numpy(), y, 0.1), r"got a ndarray"),
    (lambda m, x, y: robustness.fgsm(m, x, y.float(), 0.1), r"y must be an int64 tensor of 5 labels"),
    (lambda m, x, y: robustness.fgsm(m, x, y, -0.1), r"eps must be a non-negative number"),
    (lambda m, x, y: robustness.pgd(m, x, y, 0.1, steps=0), r"steps must be a positive int"),
    (lambda m, x, y: robustness.pgd(m, x, y, 0.1, alpha=float("nan")), r"alpha must be a non-negative number"),
])
def test_attacks_refuse_bad_input(model_and_batch, call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call(*model_and_batch)


# --------------------------------------------------------------------------- corruptions

@pytest.mark.parametrize("name", sorted(robustness.CORRUPTIONS))
def test_every_corruption_keeps_shape_and_range_and_grows_with_severity(name):
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    distances = []
    for severity in range(6):
        out = robustness.corrupt(x, name, severity)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
        distances.append((out - x).abs().mean().item())
    assert distances[0] == 0
    assert distances[5] > distances[1] > 0, distances


def test_gaussian_noise_is_repeatable_by_seed():
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(robustness.corrupt(x, "gaussian noise", 3, seed=1),
                       robustness.corrupt(x, "gaussian noise", 3, seed=1))
    assert not torch.equal(robustness.corrupt(x, "gaussian noise", 3, seed=1),
                           robustness.corrupt(x, "gaussian noise", 3, seed=2))


def test_jpeg_matches_torchvision_io_at_the_same_quality_within_a_few_grey_levels():
    import warnings

    from torchvision.io import decode_jpeg, encode_jpeg

    x = make_shapes(1, size=32, seed=0).tensors()[0][:, :1]  # (1, 1, 32, 32)
    pixels = (x[0] * 255).round().to(torch.uint8)  # (1, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to torchcodec
        expected = decode_jpeg(encode_jpeg(pixels, quality=30)).float() / 255  # (1, 32, 32)
    received = robustness.jpeg(x, 30)[0]
    assert (received - expected).abs().mean() < 2 / 255
    assert (received - x[0]).abs().mean() > 1 / 255  # and JPEG did change the image


def test_jpeg_of_colour_images_keeps_three_channels():
    x = make_shapes(2, size=24, seed=0).tensors()[0]  # (2, 3, 24, 24)
    assert robustness.jpeg(x, 50).shape == (2, 3, 24, 24)


def test_shift_moves_right_and_down_with_black_coming_in():
    x = torch.arange(16.0).reshape(1, 1, 4, 4) / 16
    out = robustness.shift(x, 1)
    torch.testing.assert_close(out[0, 0, 1:, 1:], x[0, 0, :3, :3])
    assert out[0, 0, 0].abs().sum() == 0 and out[0, 0, :, 0].abs().sum() == 0


def test_contrast_scales_around_the_mean():
    x = torch.tensor([0.2, 0.4, 0.6, 0.8]).reshape(1, 1, 2, 2)
    torch.testing.assert_close(robustness.contrast(x, 0.5), torch.tensor([0.35, 0.45, 0.55, 0.65]).reshape(1, 1, 2, 2))


def test_rotation_by_90_degrees_turns_the_image():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 2] = 1.0  # top middle
    assert robustness.rotate(x, 90)[0, 0, 2, 0] == pytest.approx(1.0)  # counter-clockwise: to the left middle


def test_resize_changes_the_size_and_keeps_the_range():
    x = torch.rand(3, 1, 28, 28)
    assert robustness.resize(x, 14).shape == (3, 1, 14, 14)
    big = robustness.resize(x, 42)
    assert big.shape == (3, 1, 42, 42) and big.min() >= 0 and big.max() <= 1


@pytest.mark.parametrize("call, message", [
    (lambda x: robustness.corrupt(x, "fog", 1), r"unknown corruption 'fog'; known: \['blur'"),
    (lambda x: robustness.corrupt(x, "blur", 6), r"severity must be an int from 0 \(none\) to 5; got 6"),
    (lambda x: robustness.corrupt(x, "blur", 1.0), r"severity must be an int"),
    (lambda x: robustness.corrupt(x * 2, "blur", 1), r"pixels in \[0, 1\]"),
    (lambda x: robustness.resize(x, 0), r"size must be a positive int; got 0"),
])
def test_corruptions_refuse_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.rand(2, 1, 8, 8))


# --------------------------------------------------------------------------- shape against texture

def test_cue_shapes_paint_only_inside_the_masks():
    shapes = make_shapes(6, size=24, seed=0)
    for cue in robustness.CUES:
        painted = robustness.cue_shapes(shapes, cue).numpy()
        outside = np.broadcast_to((shapes.masks == 0)[:, None], painted.shape)  # (N, 3, H, W)
        np.testing.assert_array_equal(painted[outside], shapes.images[outside])
        assert painted.min() >= 0 and painted.max() <= 1


def test_colour_cue_is_the_cue_classes_colour():
    shapes = make_shapes(4, size=24, seed=1)
    cue_labels = (shapes.labels + 1) % 5
    painted = robustness.cue_shapes(shapes, "colour", cue_labels).numpy()
    for i in range(4):
        inside = shapes.masks[i] > 0
        np.testing.assert_allclose(painted[i][:, inside].mean(axis=1), robustness.CLASS_COLOURS[cue_labels[i]],
                                   rtol=1e-5)


def test_texture_cue_follows_the_cue_label_not_the_shape():
    shapes = make_shapes(2, size=24, seed=2)
    first = robustness.cue_shapes(shapes, "texture", np.array([0, 0]))
    second = robustness.cue_shapes(shapes, "texture", np.array([1, 1]))
    assert not torch.equal(first, second)


def test_textures_are_distinct_patterns():
    patterns = [robustness.texture_pattern(k, 16) for k in range(5)]
    assert all(set(np.unique(p)) <= {0.0, 1.0} for p in patterns)
    assert len({p.tobytes() for p in patterns}) == 5
    np.testing.assert_array_equal(robustness.texture_pattern(1, 16), robustness.texture_pattern(0, 16).T)


def test_cue_decisions_counts_shape_cue_and_other():
    decisions = robustness.cue_decisions([0, 1, 2, 3], [0, 0, 0, 0], [1, 1, 1, 1])
    assert decisions == {"shape": 0.25, "cue": 0.25, "other": 0.5, "shape_bias": 0.5}


@pytest.mark.parametrize("call, message", [
    (lambda s: robustness.cue_shapes(s, "shape"), r"cue must be one of \('texture', 'colour'\)"),
    (lambda s: robustness.cue_shapes(s, "texture", np.array([0, 5, 0])), r"cue_labels must be 3 class indices"),
    (lambda s: robustness.cue_decisions([0, 1], [0, 1], [1, 1]), r"1 images have shape_labels == cue_labels"),
    (lambda s: robustness.cue_decisions([0, 1], [0], [1]), r"1-d of one length"),
    (lambda s: robustness.texture_pattern(5, 8), r"texture index must be 0-4"),
])
def test_cue_helpers_refuse_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(make_shapes(3, size=16, seed=0))


# --------------------------------------------------------------------------- subgroups

def _bar(shear):
    """A vertical bar of ink (28, 28), sheared by ``shear`` columns per row upwards."""
    image = np.zeros((28, 28))
    for row in range(4, 24):
        image[row, int(round(14 + shear * (14 - row)))] = 1.0
    return image


def test_slant_is_zero_upright_positive_leaning_right_negative_leaning_left():
    values = robustness.slant(np.stack([_bar(0.0), _bar(0.4), _bar(-0.4)]))
    assert values[0] == pytest.approx(0.0, abs=1e-9)
    assert values[1] == pytest.approx(0.4, abs=0.03) and values[2] == pytest.approx(-0.4, abs=0.03)


def test_slant_accepts_a_channel_axis_and_tensors():
    images = np.stack([_bar(0.2), _bar(0.0)])
    np.testing.assert_allclose(robustness.slant(torch.from_numpy(images)[:, None]), robustness.slant(images))


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 3, 28, 28)), r"\(N, H, W\) or \(N, 1, H, W\)"),
    (np.stack([_bar(0.0), np.zeros((28, 28))]), r"images \[1\] are blank"),
    (-np.ones((1, 28, 28)), r"non-negative pixels"),
])
def test_slant_refuses_bad_input(images, message):
    with pytest.raises(ValueError, match=message):
        robustness.slant(images)


def test_binary_rates_against_counts_worked_out_by_hand():
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]  # 4 positives, 6 negatives
    y_pred = [1, 1, 0, 0, 1, 0, 0, 0, 0, 0]  # TP 2, FN 2, FP 1, TN 5
    rates = robustness.binary_rates(torch.tensor(y_true), torch.tensor(y_pred))
    assert rates == {"count": 10, "positives": 4, "accuracy": 0.7, "fnr": 0.5, "fpr": 1 / 6}


def test_binary_rates_without_positives_give_nan_fnr():
    rates = robustness.binary_rates(np.array([0, 0]), np.array([0, 1]))
    assert np.isnan(rates["fnr"]) and rates["fpr"] == 0.5


@pytest.mark.parametrize("y_true, y_pred, message", [
    ([0, 2], [0, 1], r"y_true must hold 0 and 1 only"),
    ([0, 1], [0, 1, 1], r"one shape"),
    ([[0, 1]], [[0, 1]], r"must be 1-d"),
])
def test_binary_rates_refuse_bad_input(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        robustness.binary_rates(y_true, y_pred)


def test_expected_calibration_error_matches_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    generator = torch.Generator().manual_seed(0)
    probability = torch.rand(500, generator=generator)  # P(class 1)
    target = (torch.rand(500, generator=generator) < probability**2).long()  # over-confident on purpose
    probabilities = torch.stack([1 - probability, probability], dim=1)  # (500, 2)
    expected = multiclass_calibration_error(probabilities, target, num_classes=2, n_bins=10, norm="l1").item()
    confidence, predicted = probabilities.max(dim=1)
    received = robustness.expected_calibration_error(confidence, predicted == target, bins=10)
    assert received == pytest.approx(expected, abs=1e-6)
    assert received > 0.01  # and the set is miscalibrated: the ECE is not trivially 0


def test_expected_calibration_error_is_zero_when_confidence_equals_accuracy():
    confidence = np.full(10, 0.7)
    correct = np.array([1] * 7 + [0] * 3, dtype=bool)
    assert robustness.expected_calibration_error(confidence, correct) == pytest.approx(0.0)


@pytest.mark.parametrize("confidence, correct, message", [
    ([1.2, 0.5], [1, 0], r"probabilities in \[0, 1\]"),
    ([0.5], [1, 0], r"one non-zero length"),
    ([], [], r"one non-zero length"),
])
def test_expected_calibration_error_refuses_bad_input(confidence, correct, message):
    with pytest.raises(ValueError, match=message):
        robustness.expected_calibration_error(confidence, correct)


def test_group_balanced_weights_give_every_group_the_same_total():
    groups = np.array([True, False, False, False, True, False])
    weights = robustness.group_balanced_weights(groups)
    assert weights[groups].sum().item() == pytest.approx(1.0) and weights[~groups].sum().item() == pytest.approx(1.0)
    drawn = torch.multinomial(weights, 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert groups[drawn.numpy()].mean() == pytest.approx(0.5, abs=0.02)


def test_group_balanced_weights_refuse_empty_groups():
    with pytest.raises(ValueError, match=r"1-d and non-empty"):
        robustness.group_balanced_weights(np.array([]))
