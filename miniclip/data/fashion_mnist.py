"""Fashion-MNIST (70 000 28x28 grayscale photos of clothes, 10 classes) from Debian's package files.

What: FashionMNIST(split="train" | "test") reads {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
from /usr/share/datasets/fashion-mnist (`apt-get install dataset-fashion-mnist`) or any folder with
those four files: root=, or the environment variable MINICLIP_FASHION_MNIST (which is how
`python -m miniclip.train --dataset fashion-mnist` and the tests are pointed at other files). dataset[i] = (uint8 (28, 28) image, caption) with a caption such as
"a photo of a sneaker." made from a template, or with target="label" the class index; the image
transform resizes it to the model's size and converts it to RGB. `classnames` and
`class_prompts()` give the zero-shot classifier's prompts.
Why: a real dataset that is small enough to train on a CPU in minutes, installed by the system
package manager (no download code), with a known zero-shot task.
How: the IDX format (yann.lecun.com/exdb/mnist) is a 4-byte magic number (two zero bytes, a type
code, 0x08 for unsigned bytes, and the number of dimensions), one big-endian uint32 per dimension,
then the values in C order. NumPy reads the whole file as one array.
Checked by tests/data/test_fashion_mnist.py (shapes, label range, class balance, captions), on
small synthetic IDX files everywhere (tests/data/fashion_mnist_files.py) and on Debian's files
where they are installed.
"""
import gzip
import math
import os
import struct

import numpy as np

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
ROOT_VARIABLE = "MINICLIP_FASHION_MNIST"   # overrides DEFAULT_ROOT when set
# Fashion-MNIST's classes, worded so that every template's "a {}" reads well.
CLASSNAMES = ("t-shirt", "pair of trousers", "pullover", "dress", "coat",
              "sandal", "shirt", "sneaker", "bag", "pair of ankle boots")
TEMPLATES = ("a photo of a {}.", "a black and white photo of a {}.", "a low resolution photo of a {}.",
             "a photo of the {}.", "a product photo of a {}.")


def read_idx(path):
    """An IDX file of unsigned bytes (gzip-compressed) as a uint8 array of its shape."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Fashion-MNIST file not found: {path}\n"
                                f"Install it with `sudo apt-get install dataset-fashion-mnist` (Debian, "
                                f"Ubuntu), or point {ROOT_VARIABLE}= (or root=) at a folder holding the "
                                f"four *-ubyte.gz files.")
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic number {data[:4].hex()})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    values = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if values.size != math.prod(shape):
        raise ValueError(f"{path}: the header says shape {shape} ({math.prod(shape)} values) "
                         f"but the file holds {values.size} values")
    return values.reshape(shape)


def default_root():
    """$MINICLIP_FASHION_MNIST when set, else Debian's folder."""
    return os.environ.get(ROOT_VARIABLE) or DEFAULT_ROOT


class FashionMNIST:
    """dataset[i] = (uint8 (28, 28) image, caption), or with target="label" (image, class index)."""

    def __init__(self, split="train", root=None, target="caption", templates=TEMPLATES, seed=0):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if target not in ("caption", "label"):
            raise ValueError(f"target must be 'caption' or 'label', got {target!r}")
        root = root or default_root()
        prefix = "train" if split == "train" else "t10k"
        self.images = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))   # (N, 28, 28)
        self.labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))   # (N,)
        if len(self.images) != len(self.labels):
            raise ValueError(f"{root}: {len(self.images)} {split} images but {len(self.labels)} labels")
        self.split, self.target, self.templates, self.seed = split, target, tuple(templates), seed
        self.classnames = list(CLASSNAMES)

    def __len__(self):
        return len(self.labels)

    def describe(self, index):
        return f"Fashion-MNIST {self.split} image {index}"

    def __getitem__(self, index):
        label = int(self.labels[index])
        if self.target == "label":
            return self.images[index], label
        # The template is a pure function of (seed, index), like every random choice in miniclip.data.
        template = self.templates[np.random.default_rng((self.seed, index)).integers(len(self.templates))]
        return self.images[index], template.format(CLASSNAMES[label])

    def class_prompts(self):
        return [[t.format(name) for t in self.templates] for name in CLASSNAMES]
