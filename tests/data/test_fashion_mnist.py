"""Fashion-MNIST: the IDX parser and the dataset on hand-made files (everywhere), then Debian's
real files when installed."""
import gzip
import os
import struct

import numpy as np
import pytest

from miniclip.data.fashion_mnist import CLASSNAMES, DEFAULT_ROOT, ROOT_VARIABLE, FashionMNIST, read_idx
from miniclip.data.transforms import CLIP_MEAN, CLIP_STD, image_transform
from tests.data.fashion_mnist_files import write_fashion_mnist, write_idx

needs_debian_files = pytest.mark.skipif(
    not os.path.exists(os.path.join(DEFAULT_ROOT, "t10k-labels-idx1-ubyte.gz")),
    reason=f"Fashion-MNIST is not in {DEFAULT_ROOT}: sudo apt-get install dataset-fashion-mnist")


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "x.gz", array)), array)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "y.gz", labels)), labels)


def test_read_idx_errors(tmp_path):
    array = np.zeros((4, 2), np.uint8)
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        read_idx(write_idx(tmp_path / "float.gz", array, magic=bytes([0, 0, 0x0D, 2])))
    path = tmp_path / "short.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 4, 2) + bytes(5))
    with pytest.raises(ValueError, match=r"shape \(4, 2\) \(8 values\) but the file holds 5"):
        read_idx(path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST(root=str(tmp_path / "nowhere"))


def test_the_dataset_on_synthetic_files_found_through_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_VARIABLE, str(write_fashion_mnist(tmp_path / "fashion", n_train=40, n_test=20)))
    dataset = FashionMNIST("test", seed=3)
    assert dataset.images.shape == (20, 28, 28) and dataset.images.dtype == np.uint8
    np.testing.assert_array_equal(dataset.labels, np.arange(20) % 10)
    image, text = dataset[13]
    assert image.shape == (28, 28)
    assert text in [t.format(CLASSNAMES[3]) for t in dataset.templates]
    assert text == FashionMNIST("test", seed=3)[13][1]   # the template is fixed by (seed, index)
    assert FashionMNIST("test", target="label")[13][1] == 3
    assert len(FashionMNIST("train")) == 40
    assert [len(p) for p in dataset.class_prompts()] == [len(dataset.templates)] * 10
    monkeypatch.setenv(ROOT_VARIABLE, str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match=f"(?s)elsewhere.*{ROOT_VARIABLE}"):
        FashionMNIST("test")


@needs_debian_files
def test_test_split_shapes_labels_and_captions():
    dataset = FashionMNIST("test")
    assert dataset.images.shape == (10000, 28, 28) and dataset.images.dtype == np.uint8
    assert len(dataset) == 10000 and len(dataset.classnames) == 10
    np.testing.assert_array_equal(np.bincount(dataset.labels), [1000] * 10)   # a balanced test set
    image, text = dataset[0]
    assert image.shape == (28, 28) and text in [t.format(CLASSNAMES[dataset.labels[0]]) for t in dataset.templates]
    assert FashionMNIST("test", target="label")[5][1] == dataset.labels[5]
    # Through the model's transform: RGB at the model's size, three equal channels (gray).
    x = image_transform(64, is_train=False)(image)
    assert x.shape == (3, 64, 64)
    pixels = x * np.array(CLIP_STD, np.float32)[:, None, None] + np.array(CLIP_MEAN, np.float32)[:, None, None]
    np.testing.assert_allclose(pixels[0], pixels[1], atol=1e-6)   # undoing the normalisation rounds
    np.testing.assert_allclose(pixels[0], pixels[2], atol=1e-6)
    assert len(dataset.class_prompts()) == 10


@needs_debian_files
def test_train_split_is_the_known_one():
    dataset = FashionMNIST("train")
    assert dataset.images.shape == (60000, 28, 28)
    np.testing.assert_array_equal(np.bincount(dataset.labels), [6000] * 10)
    # The first ten labels of Fashion-MNIST's training set, as published with the dataset.
    np.testing.assert_array_equal(dataset.labels[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    assert 0 < dataset.images[0].mean() < 255
