"""Reading images and captions from disk, with errors that say which sample is bad.

What: `open_image` and `read_caption` for the file-based datasets (csv_dataset.py, folders.py),
and `BadSampleError`, the one exception they raise for bad data.
Why: a dataset of a million files always has a few bad ones. A bare "OSError: image file is
truncated" deep in a training run does not say which file; BadSampleError does (file, CSV line),
and it is the exception the loader may skip (skip_bad_samples=True) and count, while any other
exception is a bug and always stops the run.
How: Pillow opens files lazily, so `open_image` calls load() to decode the whole image here, where
a truncated or corrupt file can still be named. An image of more pixels than Pillow's
Image.MAX_IMAGE_PIXELS (Pillow's guard against decompression bombs: a small file that decodes to
gigabytes) is a bad sample too, refused before it is decoded. 16-bit greyscale images (PNG and
TIFF scans, Pillow's modes "I;16" and "I") are scaled to 8 bits here: Pillow's convert("RGB")
clips their values at 255, which turns such an image white.
Checked by tests/data/test_csv_dataset.py and tests/data/test_folders.py (missing, truncated and
non-image files, empty captions, decompression bombs, 16-bit greyscale).
"""
import numpy as np
from PIL import Image

from miniclip.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class BadSampleError(UserError):
    """A sample whose data cannot be used; the message names the sample (file, CSV line, ...).

    A UserError: a command that stops on it prints the message, not a traceback."""


def open_image(path, where):
    """Open and decode an image file; `where` names the sample in the error message."""
    try:
        with Image.open(path) as image:
            pixels, limit = image.width * image.height, Image.MAX_IMAGE_PIXELS
            if limit is not None and pixels > limit:   # Pillow only warns up to twice the limit
                raise BadSampleError(f"{where}: image {path} has {image.width} x {image.height} = {pixels:,} "
                                     f"pixels, more than Pillow's Image.MAX_IMAGE_PIXELS = {limit:,} (a "
                                     f"decompression bomb?); raise that limit if the image is genuine")
            image.load()
            return to_8_bit(image) if image.mode == "I" or image.mode.startswith("I;16") else image
    except FileNotFoundError:
        raise BadSampleError(f"{where}: image file not found: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:   # a warning made an error
        raise BadSampleError(f"{where}: image {path} is too large to decode: {e}") from None
    except OSError as e:   # Pillow's "cannot identify image file" and "image file is truncated"
        raise BadSampleError(f"{where}: cannot read image {path}: {e}") from e


def to_8_bit(image):
    """A greyscale image of 16-bit integers as 8-bit "L": value * 255 / (2^16 - 1). Mode "I" holds
    32-bit integers: a 16-bit scan when its values fit in 16 bits (older Pillow opened 16-bit PNGs
    so), else scaled by the int32 range."""
    values = np.asarray(image, dtype=np.float64)                        # (H, W)
    full = 2 ** 16 - 1 if image.mode.startswith("I;16") or values.max(initial=0) <= 2 ** 16 - 1 else 2 ** 31 - 1
    return Image.fromarray(np.round(np.clip(values, 0, full) * (255 / full)).astype(np.uint8))   # mode "L"


def read_caption(path, where):
    """The stripped text of a caption file; an empty caption is an error too."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except FileNotFoundError:
        raise BadSampleError(f"{where}: caption file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadSampleError(f"{where}: cannot read caption file {path}: {e}") from e
    if not text:
        raise BadSampleError(f"{where}: empty caption in {path}")
    return text
