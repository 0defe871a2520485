"""CLIP's image preprocessing: a PIL image (or uint8 array) -> normalised float32 (3, S, S).

What: the steps of OpenAI CLIP's `_transform` (clip/clip.py) and OpenCLIP's `image_transform`
(src/open_clip/transform.py), with their default settings:
    eval:  resize the shorter side to S (bicubic) -> centre crop S x S -> RGB -> /255 -> (x - mean) / std
    train: random crop of 90-100 % of the area, aspect 3/4 to 4/3, resized to S x S (bicubic)
           -> RGB -> /255 -> (x - mean) / std
Why: a model only works on inputs prepared the way it was trained. OpenAI's weights expect exactly
this mean, std and bicubic resizing; a different resize or normalisation does not fail, it just
quietly costs accuracy.
How: resizing and cropping are the Pillow calls torchvision makes on PIL images (Image.resize with
BICUBIC, which also antialiases when shrinking; Image.crop), and the normalisation is float32 in
torch's order, so the eval output is bit-for-bit OpenCLIP's. The train crop takes its randomness
from an `rng` argument (np.random.Generator): the loader passes one seeded by (seed, epoch, sample),
so the augmentation of a sample does not depend on which thread prepares it.
Checked by tests/data/test_transforms.py against open_clip's image_transform and torchvision.
"""
import math

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_pil(image):
    """A PIL image as is; a uint8 (H, W, 3) or (H, W) NumPy array as a PIL image."""
    if isinstance(image, Image.Image):
        return image
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise TypeError(f"expected a PIL image or a uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
    return Image.fromarray(image)


def resize_shortest(image, size):
    """Resize (bicubic) so that the shorter side is `size`, keeping the aspect ratio."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)   # truncated, as torchvision does
    new_size = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new_size, Image.BICUBIC)


def center_crop(image, size):
    """The central size x size square (round() as torchvision, so odd margins match)."""
    width, height = image.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def random_resized_crop_box(width, height, rng, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)):
    """(top, left, h, w) of a random crop: torchvision's RandomResizedCrop.get_params, drawn from rng.

    The crop covers a fraction `scale` of the area with aspect ratio w/h in `ratio` (drawn uniformly
    in log space, so 3/4 and 4/3 are equally likely); after 10 misses it falls back to the
    central crop with the aspect ratio clamped into `ratio`.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(image, size, rng, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)):
    """Crop a random box (see random_resized_crop_box), then resize it to size x size (bicubic)."""
    top, left, h, w = random_resized_crop_box(*image.size, rng, scale, ratio)
    return image.crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC)


def to_tensor_normalize(image, mean=CLIP_MEAN, std=CLIP_STD):
    """An RGB PIL image or uint8 (H, W, 3) array -> float32 (3, H, W): (pixel / 255 - mean) / std."""
    # Channels first before the arithmetic: broadcasting over a last axis of length 3 is slow.
    x = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)            # (3, H, W) uint8
    x = x.astype(np.float32, order="C") / np.float32(255)
    mean = np.asarray(mean, np.float32)[:, None, None]   # (3, 1, 1)
    std = np.asarray(std, np.float32)[:, None, None]
    return (x - mean) / std                               # (3, H, W)


def image_transform(image_size, is_train, mean=CLIP_MEAN, std=CLIP_STD, scale=(0.9, 1.0)):
    """OpenCLIP's image_transform (same name and defaults): a function (image, rng) -> (3, S, S).

    The eval transform ignores rng; the train transform needs one (np.random.Generator).
    """
    def eval_transform(image, rng=None):
        square = (image_size, image_size, 3)
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == square:
            # Already RGB at the model's size (the built-in shapes): resizing and cropping would
            # return the same pixels, so skip the round trip through Pillow.
            return to_tensor_normalize(image, mean, std)
        image = center_crop(resize_shortest(to_pil(image), image_size), image_size)
        # RGB after resizing, in the reference's order: for palette ("P") images Pillow resizes
        # the palette indices with nearest-neighbour, so the order changes the pixels.
        return to_tensor_normalize(image.convert("RGB"), mean, std)

    def train_transform(image, rng):
        if rng is None:
            raise ValueError("the train transform is random: pass rng=np.random.default_rng(...)")
        image = random_resized_crop(to_pil(image), image_size, rng, scale)
        return to_tensor_normalize(image.convert("RGB"), mean, std)

    return train_transform if is_train else eval_transform
