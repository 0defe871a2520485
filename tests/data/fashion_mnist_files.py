"""Small synthetic Fashion-MNIST files (gzip'ed IDX, the real files' format) for tests that must
run on any machine: the reader and the trainer's --dataset fashion-mnist path.

write_fashion_mnist(folder) writes the four *-ubyte.gz files: 28x28 uint8 images whose class
shows as a bright bar (class k: a horizontal bar at row 3 + 4 (k mod 5) for k < 5, a vertical
one for k >= 5), on a noisy dark background; labels cycle through the 10 classes.
"""
import gzip
import struct

import numpy as np


def write_idx(path, array, magic=None):
    """An IDX file of unsigned bytes, gzip'ed; magic replaces the 4-byte header's magic number."""
    header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


def synthetic_images(labels, seed):
    """uint8 (N, 28, 28): one bar per image at its class's place, plus noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (len(labels), 28, 28))
    for image, label in zip(images, labels):
        where = slice(3 + 4 * (label % 5), 7 + 4 * (label % 5))
        if label < 5:
            image[where, 2:26] += 180
        else:
            image[2:26, where] += 180
    return images.astype(np.uint8)


def write_fashion_mnist(folder, n_train=300, n_test=100):
    """The four files of a Fashion-MNIST folder with n_train / n_test synthetic images."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        labels = np.arange(n) % 10
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", synthetic_images(labels, seed))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder
