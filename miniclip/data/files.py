"""Reading images and captions from disk, with errors that say which sample is bad.

What: `open_image` and `read_caption` for the file-based datasets (csv_dataset.py, folders.py),
and `BadSampleError`, the one exception they raise for bad data.
Why: a dataset of a million files always has a few bad ones. A bare "OSError: image file is
truncated" deep in a training run does not say which file; BadSampleError does (file, CSV line),
and it is the exception the loader may skip (skip_bad_samples=True) and count, while any other
exception is a bug and always stops the run.
How: Pillow opens files lazily, so `open_image` calls load() to decode the whole image here, where
a truncated or corrupt file can still be named.
Checked by tests/data/test_csv_dataset.py and tests/data/test_folders.py (missing, truncated and
non-image files, empty captions).
"""
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
            image.load()
            return image
    except FileNotFoundError:
        raise BadSampleError(f"{where}: image file not found: {path}") from None
    except OSError as e:   # Pillow's "cannot identify image file" and "image file is truncated"
        raise BadSampleError(f"{where}: cannot read image {path}: {e}") from e


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
