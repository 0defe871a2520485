"""Small image files for the dataset tests: near-uniform images, a truncated JPEG."""
import numpy as np
from PIL import Image


def write_image(path, value, size=(12, 9)):
    """A small JPEG or PNG (by extension) whose pixels are all near `value`, so tests can tell
    which file a sample came from (JPEG changes the values by a few levels at most)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def write_truncated_jpeg(path):
    """A JPEG cut in half: Pillow opens it, but decoding it fails with "image file is truncated"."""
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    Image.fromarray(image).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path
