"""Data for the course, offline by default (introduced in ``notebooks/00_setup.ipynb``).

Three kinds of data:

* the bundled pack in ``data/`` (5,000 real MNIST digits, four CC0/public-domain
  photos and 1,920 grey natural-image patches in six classes, chapter 13), checked
  against its SHA-256 before loading; see ``data/README.md``;
* a synthetic colour-shapes dataset, generated from a seed, with class labels,
  segmentation masks and bounding boxes;
* opt-in torchvision datasets (MNIST, Fashion-MNIST, CIFAR-10) that download
  only when you pass ``download=True``.

Shape letters: N images, C channels, H height, W width.
"""
import hashlib
import os
import pathlib
from dataclasses import dataclass

import numpy as np
import torch

REPO_DIR = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = pathlib.Path(os.environ.get("COURSE_DATA_DIR", REPO_DIR / "data"))
DOWNLOAD_DIR = pathlib.Path(os.environ.get("COURSE_DOWNLOAD_DIR", DATA_DIR / "downloads"))

# SHA-256 of every file of the bundled pack, as written by scripts/build_data_pack.py.
DATA_PACK_SHA256 = {
    "mnist_5k.npz": "246e0c30eeea57c8d0037d3f38c8e00651ec204cc61b8022563e9aeeb9d756f4",
    "photos/astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "photos/coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "photos/chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "photos/camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    "natural_patches.npz": "23796dd99df96105dfc9e0f4822ccef82b792ef72732708ed3c5f883348a11cf",
}
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "camera")
MNIST_TRAIN_PER_DIGIT = 400  # the first 400 of each digit (file order) train, the other 100 test
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the usual MNIST statistics, for inputs scaled to [0, 1]


class DataIntegrityError(RuntimeError):
    """A bundled data file is missing or its contents differ from the recorded SHA-256."""


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_path(name, data_dir=None):
    """Path of bundled file ``name`` (a key of ``DATA_PACK_SHA256``) after checking its SHA-256."""
    if name not in DATA_PACK_SHA256:
        raise KeyError(f"{name!r} is not part of the data pack; known files: {sorted(DATA_PACK_SHA256)}")
    path = pathlib.Path(data_dir or DATA_DIR) / name
    if not path.is_file():
        raise DataIntegrityError(
            f"bundled file {path} is missing: the data pack ships with the repository "
            "(restore it with `git checkout -- data/`)"
        )
    found = _sha256(path)
    if found != DATA_PACK_SHA256[name]:
        raise DataIntegrityError(
            f"bundled file {path} is damaged or was changed: SHA-256 {found}, expected "
            f"{DATA_PACK_SHA256[name]} (restore it with `git checkout -- data/`)"
        )
    return path


def verify_data_pack(data_dir=None):
    """Check every bundled file; return ``{name: sha256}`` or raise ``DataIntegrityError``."""
    return {name: _sha256(verified_path(name, data_dir)) for name in DATA_PACK_SHA256}


# --------------------------------------------------------------------------- MNIST (bundled)

def load_mnist_5k(split="train", data_dir=None):
    """The bundled MNIST digits as NumPy arrays.

    Args:
        split: ``"train"`` (4,000 images, 400 per digit), ``"test"`` (1,000, 100 per
            digit) or ``"all"`` (5,000). The split is fixed: see ``data/README.md``.

    Returns:
        images: uint8 array (N, 28, 28), 0-255, white digit on black.
        labels: int64 array (N,), digits 0-9.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all'; got {split!r}")
    with np.load(verified_path("mnist_5k.npz", data_dir)) as pack:
        images = pack["images"]  # (5000, 28, 28) uint8
        labels = pack["labels"].astype(np.int64)  # (5000,)
    if split == "all":
        return images, labels
    # rank of each image among the images of its own digit, in file order
    rank = np.zeros(len(labels), dtype=np.int64)
    for digit in range(10):
        where = np.flatnonzero(labels == digit)
        rank[where] = np.arange(len(where))
    keep = rank < MNIST_TRAIN_PER_DIGIT if split == "train" else rank >= MNIST_TRAIN_PER_DIGIT
    return images[keep], labels[keep]


def mnist_5k_tensors(split="train", size=28, normalize=True, data_dir=None):
    """The bundled MNIST digits as float tensors ready for a network.

    Args:
        split: as in ``load_mnist_5k``.
        size: 28 (as stored) or 32 (zero-padded by 2 on every side, LeNet-5's input).
        normalize: subtract ``MNIST_MEAN`` and divide by ``MNIST_STD`` after scaling to [0, 1].

    Returns:
        x: float32 tensor (N, 1, size, size).
        y: int64 tensor (N,).
    """
    if size not in (28, 32):
        raise ValueError(f"size must be 28 or 32; got {size!r}")
    images, labels = load_mnist_5k(split, data_dir)
    x = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)  # (N, 1, 28, 28)
    if size == 32:
        x = torch.nn.functional.pad(x, (2, 2, 2, 2))  # (N, 1, 32, 32)
    if normalize:
        x = (x - MNIST_MEAN) / MNIST_STD
    return x, torch.from_numpy(labels)


def mnist_5k_loaders(batch_size=64, size=28, normalize=True, seed=0, data_dir=None):
    """``(train_loader, test_loader)`` over the bundled digits; the train loader shuffles with ``seed``."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    train = torch.utils.data.TensorDataset(*mnist_5k_tensors("train", size, normalize, data_dir))
    test = torch.utils.data.TensorDataset(*mnist_5k_tensors("test", size, normalize, data_dir))
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
        torch.utils.data.DataLoader(test, batch_size=batch_size, shuffle=False),
    )


# --------------------------------------------------------------------------- photos (bundled)

def load_photo(name, grey=False, data_dir=None):
    """One of the bundled photos as floats in [0, 1].

    Args:
        name: one of ``PHOTO_NAMES`` (astronaut, coffee, chelsea, camera).
        grey: convert to luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B).

    Returns:
        float32 array (H, W, 3), or (H, W) when ``grey`` or the photo is grey (camera).
    """
    if name not in PHOTO_NAMES:
        raise ValueError(f"photo must be one of {PHOTO_NAMES}; got {name!r}")
    from PIL import Image

    with Image.open(verified_path(f"photos/{name}.png", data_dir)) as image:
        array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3) or (H, W)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]  # drop alpha
    if grey and array.ndim == 3:
        array = array @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (H, W)
    return np.ascontiguousarray(array)


# --------------------------------------------------------------------------- natural-image patches (bundled)

NATURAL_PATCH_CLASSES = ("brick", "grass", "gravel", "coins", "cat", "galaxies")


def load_natural_patches(split="train", data_dir=None):
    """The bundled natural-image patches (chapter 13, transfer learning) as NumPy arrays.

    1,920 grey 32 x 32 patches cut from six CC0 / public-domain photos of the scikit-image wheel, one class per
    photo (``NATURAL_PATCH_CLASSES``): 240 training and 80 test patches per class. Each photo is cut into a 4 x 4
    grid of tiles and the test patches come from 4 tiles that no training patch touches (``data/README.md``).

    Args:
        split: ``"train"`` (1,440 patches), ``"test"`` (480) or ``"all"`` (1,920).

    Returns:
        images: uint8 array (N, 32, 32), 0-255 grey.
        labels: int64 array (N,), indices into ``NATURAL_PATCH_CLASSES``.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all'; got {split!r}")
    with np.load(verified_path("natural_patches.npz", data_dir)) as pack:
        images = pack["images"]  # (1920, 32, 32) uint8
        labels = pack["labels"].astype(np.int64)  # (1920,)
        is_test = pack["is_test"]  # (1920,) bool
    if split == "all":
        return images, labels
    keep = is_test if split == "test" else ~is_test
    return images[keep], labels[keep]


# --------------------------------------------------------------------------- synthetic shapes

SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring")


@dataclass
class Shapes:
    """A generated colour-shapes dataset.

    images: float32 (N, 3, H, W) in [0, 1]
    labels: int64 (N,), index into ``classes``
    masks: int64 (N, H, W), 0 for background and ``label + 1`` on the shape
    boxes: float32 (N, 4), the shape's tight box as (x_min, y_min, x_max, y_max) in
        pixels, max exclusive (the torchvision ``xyxy`` convention)
    classes: the class names
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    classes: tuple

    def __len__(self):
        return len(self.labels)

    def tensors(self):
        """``(images, labels)`` as torch tensors: float32 (N, 3, H, W), int64 (N,)."""
        return torch.from_numpy(self.images), torch.from_numpy(self.labels)

    def dataset(self):
        """A ``TensorDataset`` of ``(image, label)`` pairs."""
        return torch.utils.data.TensorDataset(*self.tensors())


def _shape_mask(kind, yy, xx, cy, cx, r):
    """Boolean (H, W) mask of one shape of 'radius' r centred at (cy, cx)."""
    dy, dx = yy - cy, xx - cx
    if kind == "circle":
        return dy**2 + dx**2 <= r**2
    if kind == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if kind == "triangle":  # apex up, base at cy + r/2
        return (dy <= r * 0.6) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.62)
    if kind == "cross":
        arm = max(r * 0.3, 1.0)
        return ((np.abs(dy) <= arm) & (np.abs(dx) <= r)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))
    if kind == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (r * 0.55) ** 2)
    raise ValueError(f"unknown shape {kind!r}; known: {SHAPE_CLASSES}")


def make_shapes(n=1000, size=32, seed=0, classes=SHAPE_CLASSES, noise=0.05):
    """Generate ``n`` images of one coloured shape each on a textured background.

    Each image gets a random class, colour, size (radius 18-38% of ``size``), position
    (fully inside the image), a random-coloured background with a sinusoidal texture
    and Gaussian pixel noise. The same ``seed`` gives the same data, on any machine.

    Returns:
        a ``Shapes`` with images (N, 3, size, size), labels (N,), masks (N, size, size)
        and boxes (N, 4).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16 (smaller shapes are unreadable); got {size!r}")
    classes = tuple(classes)
    unknown = [c for c in classes if c not in SHAPE_CLASSES]
    if unknown or not classes:
        raise ValueError(f"classes must be a non-empty subset of {SHAPE_CLASSES}; got {classes!r}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # (H, W) each
    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=np.int64)
    boxes = np.zeros((n, 4), dtype=np.float32)
    labels = rng.integers(0, len(classes), size=n).astype(np.int64)
    for i in range(n):
        background = rng.uniform(0.0, 1.0, size=3).astype(np.float32)  # (3,)
        freq = rng.uniform(0.1, 0.6, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        texture = 0.12 * np.sin(freq[0] * yy + freq[1] * xx + phase)  # (H, W)
        image = background[:, None, None] + texture[None]  # (3, H, W)
        # a shape colour far enough from the background to be visible
        colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        while np.abs(colour - background).sum() < 0.6:
            colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        r = rng.uniform(0.18, 0.38) * size
        cy, cx = rng.uniform(r, size - 1 - r, size=2)
        inside = _shape_mask(classes[labels[i]], yy, xx, cy, cx, r)  # (H, W) bool
        image[:, inside] = colour[:, None]
        image += rng.normal(0.0, noise, size=image.shape).astype(np.float32)
        images[i] = np.clip(image, 0.0, 1.0)
        masks[i][inside] = labels[i] + 1
        rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return Shapes(images=images, labels=labels, masks=masks, boxes=boxes, classes=classes)


# --------------------------------------------------------------------------- torchvision (opt-in)

TORCHVISION_DATASETS = {
    # name: (torchvision class name, size of the download, folder torchvision writes)
    "mnist": ("MNIST", "about 12 MB", "MNIST"),
    "fashion-mnist": ("FashionMNIST", "about 30 MB", "FashionMNIST"),
    "cifar10": ("CIFAR10", "about 170 MB", "cifar-10-batches-py"),
}


class DatasetNotDownloaded(FileNotFoundError):
    """An opt-in dataset is not on disk and downloading was not asked for."""


def load_torchvision_dataset(name, train=True, transform=None, root=None, download=False):
    """Load MNIST, Fashion-MNIST or CIFAR-10 through torchvision; download only if asked.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        train: the training split (True) or the test split (False).
        transform: passed to torchvision (e.g. ``torchvision.transforms.v2.ToImage()``).
        root: folder holding the data; ``data/downloads`` (``$COURSE_DOWNLOAD_DIR``) by default.
        download: fetch the files when they are missing. Off by default: the course
            runs offline, so nothing is fetched unless you write ``download=True``.

    Raises:
        DatasetNotDownloaded: the files are missing (or damaged) and ``download`` is False;
            the message gives the one line that downloads them.
    """
    import torchvision

    if name not in TORCHVISION_DATASETS:
        raise ValueError(f"name must be one of {sorted(TORCHVISION_DATASETS)}; got {name!r}")
    class_name, download_size, _ = TORCHVISION_DATASETS[name]
    root = pathlib.Path(root) if root is not None else DOWNLOAD_DIR
    dataset_class = getattr(torchvision.datasets, class_name)
    try:
        return dataset_class(root=str(root), train=train, transform=transform, download=download)
    except RuntimeError as error:
        if download or "not found" not in str(error).lower():
            raise
        raise DatasetNotDownloaded(
            f"{class_name} is not in {root} (or is damaged), and the course never downloads by itself. "
            f"To download it once ({download_size}), run:\n"
            f"    load_torchvision_dataset({name!r}, download=True)"
        ) from error
