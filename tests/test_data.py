"""course_utils.data: the bundled pack, the synthetic shapes, and the opt-in torchvision loaders.

The torchvision tests write tiny archives in torchvision's own on-disk formats and load
them with torchvision's real dataset classes, so no test downloads anything.
"""
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch

from course_utils import data


# --------------------------------------------------------------------------- the bundled pack

def test_every_bundled_file_matches_its_sha256():
    assert set(data.verify_data_pack()) == set(data.DATA_PACK_SHA256)


def test_a_damaged_file_is_refused_with_its_name(tmp_path):
    shutil.copytree(data.DATA_DIR, tmp_path / "data")
    with open(tmp_path / "data" / "mnist_5k.npz", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(data.DataIntegrityError, match="mnist_5k.npz is damaged or was changed"):
        data.load_mnist_5k(data_dir=tmp_path / "data")


def test_a_missing_file_is_refused_with_how_to_restore_it(tmp_path):
    with pytest.raises(data.DataIntegrityError, match="missing.*git checkout -- data/"):
        data.load_photo("camera", data_dir=tmp_path)


def test_mnist_split_is_4000_train_1000_test_balanced_and_disjoint():
    train_x, train_y = data.load_mnist_5k("train")
    test_x, test_y = data.load_mnist_5k("test")
    all_x, _ = data.load_mnist_5k("all")
    assert train_x.shape == (4000, 28, 28) and train_x.dtype == np.uint8
    assert test_x.shape == (1000, 28, 28)
    assert np.bincount(train_y).tolist() == [400] * 10
    assert np.bincount(test_y).tolist() == [100] * 10
    # together they are the whole file, each image once
    joined = np.concatenate([train_x, test_x]).reshape(5000, -1)  # (5000, 784)
    assert len(np.unique(joined, axis=0)) == len(np.unique(all_x.reshape(5000, -1), axis=0))


def test_mnist_tensors_are_normalised_and_padded_for_lenet():
    x, y = data.mnist_5k_tensors("train", size=32, normalize=False)
    assert x.shape == (4000, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert torch.all(x[:, :, :2, :] == 0) and torch.all(x[:, :, :, -2:] == 0)
    z, _ = data.mnist_5k_tensors("train")
    assert abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1.0) < 0.1


def natural_patch_file():
    """The arrays of ``data/natural_patches.npz`` as stored (after the SHA-256 check)."""
    with np.load(data.verified_path("natural_patches.npz")) as pack:
        return {name: pack[name] for name in pack.files}


def test_natural_patches_are_six_balanced_classes_of_240_train_and_80_test():
    train_x, train_y = data.load_natural_patches("train")
    test_x, test_y = data.load_natural_patches("test")
    assert train_x.shape == (1440, 32, 32) and train_x.dtype == np.uint8 and train_y.dtype == np.int64
    assert test_x.shape == (480, 32, 32)
    assert np.bincount(train_y).tolist() == [240] * 6 and np.bincount(test_y).tolist() == [80] * 6
    assert tuple(natural_patch_file()["classes"].tolist()) == data.NATURAL_PATCH_CLASSES


def test_no_test_patch_overlaps_a_training_patch_of_the_same_photo():
    pack = natural_patch_file()
    for label in range(len(data.NATURAL_PATCH_CLASSES)):
        mine = pack["labels"] == label
        train = pack["corners"][mine & ~pack["is_test"]].astype(np.int64)  # (240, 2) top, left
        test = pack["corners"][mine & pack["is_test"]].astype(np.int64)  # (80, 2)
        name = data.NATURAL_PATCH_CLASSES[label]
        assert _overlap_free(test, train), f"a test patch of {name} overlaps a training one"


def _overlap_free(test, train, size=32):
    """Two size x size squares overlap when both their row and column offsets are below ``size``."""
    offsets = np.abs(test[:, None, :] - train[None, :, :])  # (n_test, n_train, 2)
    return not ((offsets[..., 0] < size) & (offsets[..., 1] < size)).any()


def test_cat_patches_are_crops_of_the_bundled_chelsea_photo_in_grey():
    from PIL import Image

    pack = natural_patch_file()
    with Image.open(data.verified_path("photos/chelsea.png")) as image:
        grey = np.asarray(image.convert("L"))  # (300, 451) uint8, ITU-R 601 luma as the build script
    cat = pack["labels"] == data.NATURAL_PATCH_CLASSES.index("cat")
    for patch, (top, left) in zip(pack["images"][cat], pack["corners"][cat].astype(np.int64)):
        assert np.array_equal(patch, grey[top:top + 32, left:left + 32])


def test_the_natural_patches_are_small():
    assert data.verified_path("natural_patches.npz").stat().st_size < 3_000_000


def test_natural_patches_reject_an_unknown_split():
    with pytest.raises(ValueError, match="split must be 'train', 'test' or 'all'"):
        data.load_natural_patches("validation")


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "validation"}, "split must be 'train', 'test' or 'all'"),
    ({"size": 30}, "size must be 28 or 32"),
])
def test_mnist_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.mnist_5k_tensors(**kwargs)


def test_mnist_loaders_shuffle_repeatably():
    first = next(iter(data.mnist_5k_loaders(batch_size=16, seed=3)[0]))[1]
    again = next(iter(data.mnist_5k_loaders(batch_size=16, seed=3)[0]))[1]
    other = next(iter(data.mnist_5k_loaders(batch_size=16, seed=4)[0]))[1]
    assert torch.equal(first, again) and not torch.equal(first, other)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        data.mnist_5k_loaders(batch_size=0)


@pytest.mark.parametrize("name, shape", [("astronaut", (512, 512, 3)), ("coffee", (400, 600, 3)),
                                         ("chelsea", (300, 451, 3)), ("camera", (512, 512))])
def test_photos_load_as_floats_in_unit_range(name, shape):
    photo = data.load_photo(name)
    assert photo.shape == shape and photo.dtype == np.float32
    assert 0.0 <= photo.min() and photo.max() <= 1.0
    assert data.load_photo(name, grey=True).shape == shape[:2]


def test_unknown_photo_lists_the_known_ones():
    with pytest.raises(ValueError, match="astronaut"):
        data.load_photo("lena")


# --------------------------------------------------------------------------- synthetic shapes

def test_shapes_are_deterministic_for_a_seed():
    a, b = data.make_shapes(20, seed=5), data.make_shapes(20, seed=5)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, data.make_shapes(20, seed=6).images)


def test_shapes_masks_and_boxes_agree():
    shapes = data.make_shapes(50, size=40, seed=0)
    assert shapes.images.shape == (50, 3, 40, 40) and shapes.images.dtype == np.float32
    assert 0.0 <= shapes.images.min() and shapes.images.max() <= 1.0
    for mask, label, (x0, y0, x1, y1) in zip(shapes.masks, shapes.labels, shapes.boxes):
        assert set(np.unique(mask)) == {0, label + 1}
        rows, cols = np.nonzero(mask)
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x0, y0, x1, y1)


def test_shapes_cover_every_class_and_make_a_dataset():
    shapes = data.make_shapes(200, seed=1)
    assert set(shapes.labels.tolist()) == set(range(len(data.SHAPE_CLASSES)))
    image, label = shapes.dataset()[0]
    assert image.shape == (3, 32, 32) and label.dtype == torch.int64


def test_shapes_can_be_a_subset_of_classes():
    shapes = data.make_shapes(30, classes=("circle", "square"), seed=0)
    assert shapes.classes == ("circle", "square") and shapes.labels.max() <= 1


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must be a positive int"),
    ({"size": 8}, "size must be an int >= 16"),
    ({"classes": ("hexagon",)}, "classes must be a non-empty subset"),
])
def test_shapes_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.make_shapes(**kwargs)


# --------------------------------------------------------------------------- torchvision, opt-in

def _write_idx(path, array):
    """Write an array in the IDX format of the MNIST files (big-endian, uint8 payload), gzip-free."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_style_datasets_load_from_torchvision_files(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    train = data.load_torchvision_dataset(name, train=True, root=tmp_path)
    test = data.load_torchvision_dataset(name, train=False, root=tmp_path)
    assert len(train) == 6 and len(test) == 4
    image, label = test[3]
    assert image.size == (28, 28) and label == 3


def test_cifar10_loads_from_torchvision_files(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8), "labels": [1, 7]}
        (folder / batch).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    # Our files cannot have the MD5 sums of the real ones; everything else is torchvision's own code.
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: (tmp_path / path).exists())
    train = data.load_torchvision_dataset("cifar10", train=True, root=tmp_path)
    assert len(train) == 10 and train.classes[7] == "class7"
    image, label = train[1]
    assert image.size == (32, 32) and label == 7


@pytest.mark.parametrize("name", sorted(data.TORCHVISION_DATASETS))
def test_missing_dataset_names_the_line_that_downloads_it(tmp_path, name):
    with pytest.raises(data.DatasetNotDownloaded, match=rf"load_torchvision_dataset\('{name}', download=True\)"):
        data.load_torchvision_dataset(name, root=tmp_path)


def test_unknown_torchvision_dataset_is_named():
    with pytest.raises(ValueError, match="cifar10"):
        data.load_torchvision_dataset("imagenet")
