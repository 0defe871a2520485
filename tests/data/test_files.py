"""open_image: decompression bombs are bad samples (skippable), 16-bit greyscale is not white."""
import numpy as np
import pytest
from PIL import Image

from miniclip.data.files import BadSampleError, open_image
from miniclip.data.folders import ImageClassFolder
from miniclip.data.loader import Loader
from miniclip.data.transforms import image_transform

from tests.data.image_files import write_image


@pytest.fixture
def small_pixel_limit(monkeypatch):
    """Pillow's decompression-bomb limit lowered to 1,000 pixels: a 40 x 40 image is over it
    (Pillow warns), a 50 x 50 one over twice it (Pillow raises)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


def test_an_image_over_the_pixel_limit_is_a_bad_sample_naming_the_file_and_pixels(tmp_path, small_pixel_limit):
    """Was: Pillow's DecompressionBombError escaped as a bug, which --skip-bad-samples could not skip."""
    warned = write_image(tmp_path / "warned.png", 100, size=(40, 40))
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(
            BadSampleError, match=rf"sample 1: image {warned} has 40 x 40 = 1,600 pixels, more than Pillow's "
                                  rf"Image.MAX_IMAGE_PIXELS = 1,000 \(a decompression bomb\?\)"):
        open_image(warned, "sample 1")
    refused = write_image(tmp_path / "refused.png", 100, size=(50, 50))
    with pytest.raises(BadSampleError, match=rf"sample 2: image {refused} is too large to decode: "
                                             rf"Image size \(2500 pixels\) exceeds limit of 2000 pixels"):
        open_image(refused, "sample 2")


def test_the_loader_skips_an_image_over_the_pixel_limit(tmp_path, small_pixel_limit):
    for name, size in (("a", (20, 20)), ("b", (50, 50)), ("c", (30, 30))):
        write_image(tmp_path / "things" / f"{name}.png", 100, size=size)
    loader = Loader(ImageClassFolder(tmp_path), 4, image_transform(8, is_train=False), workers=1,
                    shuffle=False, skip_bad_samples=True)
    with pytest.warns(UserWarning, match=r"skipped 1 bad samples in epoch 0.*b.png is too large to decode"):
        (images, labels), = loader.epoch(0)
    assert images.shape == (2, 3, 8, 8) and list(labels) == [0, 0]


@pytest.mark.parametrize("extension", ["png", "tif"])
def test_16_bit_greyscale_is_scaled_to_8_bits(tmp_path, extension):
    """Was: values above 255 clipped by convert("RGB"), so a 16-bit scan came out white."""
    values = np.array([[0, 257, 32896], [65535, 1000, 50000]], np.uint16)    # (H, W)
    path = tmp_path / f"scan.{extension}"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I;16"
    image = open_image(path, "scan")
    assert image.mode == "L"
    expected = np.round(values / 257).astype(np.uint8)                        # 65535 -> 255
    np.testing.assert_array_equal(np.asarray(image), expected)
    np.testing.assert_array_equal(np.asarray(image.convert("RGB"))[..., 1], expected)


def test_32_bit_integer_greyscale(tmp_path):
    """Mode "I" (how older Pillow opened 16-bit PNGs): 16-bit values scaled as such, larger ones by int32's range."""
    path = tmp_path / "scan.tif"
    Image.fromarray(np.array([[0, 65535, 32896]], np.int32)).save(path)
    np.testing.assert_array_equal(np.asarray(open_image(path, "scan")), [[0, 255, 128]])
    Image.fromarray(np.array([[-5, 2 ** 31 - 1, 2 ** 30]], np.int32)).save(path)
    np.testing.assert_array_equal(np.asarray(open_image(path, "scan")), [[0, 255, 128]])
