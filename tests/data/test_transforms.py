"""CLIP preprocessing against OpenCLIP's image_transform and torchvision, on real Pillow images.

Eval: bit-for-bit equal (assert_array_equal, no tolerance). The reason it can be exact: the
resize and crop are the very Pillow calls torchvision makes for PIL images, and the
normalisation is the same float32 operations in the same order ((x / 255 - mean) / std), each
correctly rounded by IEEE arithmetic in NumPy and in torch alike.
Train: the random crop box is ours (drawn from a NumPy Generator, not torch's), so it is checked
by applying our box with torchvision's resized_crop (exact), by its statistics (area and aspect in
range), by the deterministic fallback against torchvision's, and for determinism per seed.
"""
import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

from miniclip.data.transforms import CLIP_MEAN, CLIP_STD, image_transform, random_resized_crop_box


def photos():
    """Real images: a JPEG photo (512x600 RGB) and a PNG with alpha (128x128 RGBA), plus the
    photo as grayscale, as a palette image and cropped to odd, wide and tall sizes."""
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    photo.load()
    icon = Image.open(matplotlib.cbook.get_sample_data("Minduka_Present_Blue_Pack.png", asfileobj=False))
    icon.load()
    return {"jpeg 512x600": photo, "png rgba": icon, "gray": photo.convert("L"),
            "palette": photo.convert("P"), "97x61": photo.crop((10, 20, 107, 81)),
            "wide 301x40": photo.crop((0, 0, 301, 40)), "tall 31x200": photo.crop((5, 5, 36, 205)),
            "smaller than S 20x25": photo.resize((20, 25))}


@pytest.mark.oracle
@pytest.mark.parametrize("size", [32, 64, 224])
def test_eval_transform_equals_open_clip_exactly(open_clip, size):
    reference = open_clip.image_transform(size, is_train=False)
    ours = image_transform(size, is_train=False)
    for name, image in photos().items():
        expected = reference(image).numpy()
        got = ours(image)
        assert got.dtype == np.float32 and got.shape == (3, size, size), name
        np.testing.assert_array_equal(got, expected, err_msg=f"{name} at {size} px")


@pytest.mark.oracle
def test_train_crop_resize_and_normalise_equal_torchvision(torch):
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode
    photo = photos()["jpeg 512x600"]
    transform = image_transform(64, is_train=True)
    for seed in range(5):
        got = transform(photo, np.random.default_rng(seed))
        top, left, h, w = random_resized_crop_box(*photo.size, np.random.default_rng(seed))
        crop = TF.resized_crop(photo, top, left, h, w, [64, 64], InterpolationMode.BICUBIC)
        expected = TF.normalize(TF.to_tensor(crop), CLIP_MEAN, CLIP_STD).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"seed {seed}, box {(top, left, h, w)}")


@pytest.mark.oracle
def test_crop_box_fed_torch_random_numbers_equals_torchvision(torch):
    # Our box code asks its rng for the same draws, in the same order, as torchvision's
    # get_params asks torch; answering them from torch's stream must give the same boxes.
    from torchvision.transforms import RandomResizedCrop

    class TorchRandom:
        def uniform(self, low, high):
            return torch.empty(1).uniform_(low, high).item()

        def integers(self, low, high):
            return torch.randint(low, high, size=(1,)).item()

    for width, height in [(512, 600), (97, 61), (64, 64), (150, 90)]:   # 97x61, 150x90: some attempts miss
        for seed in range(50):
            torch.manual_seed(seed)
            expected = RandomResizedCrop.get_params(torch.zeros(3, height, width), [0.9, 1.0], [3 / 4, 4 / 3])
            torch.manual_seed(seed)
            assert random_resized_crop_box(width, height, TorchRandom()) == tuple(expected), (width, height, seed)


@pytest.mark.oracle
def test_crop_fallback_equals_torchvision(torch):
    # A 1000x10 image has no crop with 90 % of its area and aspect <= 4/3, so every attempt
    # misses and both fall back to the same deterministic central crop.
    from torchvision.transforms import RandomResizedCrop
    expected = RandomResizedCrop.get_params(torch.zeros(3, 10, 1000), [0.9, 1.0], [3 / 4, 4 / 3])
    assert random_resized_crop_box(1000, 10, np.random.default_rng(0)) == tuple(expected)
    expected = RandomResizedCrop.get_params(torch.zeros(3, 1000, 10), [0.9, 1.0], [3 / 4, 4 / 3])
    assert random_resized_crop_box(10, 1000, np.random.default_rng(0)) == tuple(expected)


def test_crop_boxes_are_in_range():
    # (Images with aspect ratios well outside 3/4..4/3 may fall back to a smaller central crop:
    # test_crop_fallback_equals_torchvision.)
    rng = np.random.default_rng(0)
    for width, height in [(512, 600), (70, 61), (64, 64), (33, 45)]:
        boxes = np.array([random_resized_crop_box(width, height, rng) for _ in range(300)])
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
        # w and h are rounded to whole pixels, which moves the area and aspect by up to ~1 pixel.
        area = h * w / (width * height)
        assert area.min() > 0.9 - 2 / min(width, height) and area.max() <= 1.0
        aspect = w / h
        assert aspect.min() > 3 / 4 - 2 / min(h) and aspect.max() < 4 / 3 + 2 / min(h)
        assert len({tuple(b) for b in boxes}) > 10, "the crop is not random"


def test_train_transform_shape_range_and_determinism():
    photo = photos()["jpeg 512x600"]
    transform = image_transform(32, is_train=True)
    a = transform(photo, np.random.default_rng(7))
    assert a.dtype == np.float32 and a.shape == (3, 32, 32)
    mean, std = np.array(CLIP_MEAN)[:, None, None], np.array(CLIP_STD)[:, None, None]
    assert (a >= (0 - mean) / std - 1e-6).all() and (a <= (1 - mean) / std + 1e-6).all()
    np.testing.assert_array_equal(a, transform(photo, np.random.default_rng(7)))
    assert not np.array_equal(a, transform(photo, np.random.default_rng(8)))
    with pytest.raises(ValueError, match="rng"):
        transform(photo, None)


def test_arrays_and_pil_images_give_the_same_result():
    photo = photos()["jpeg 512x600"]
    for size in (64, 600):   # 64: resized; 512x600 at 600: the short side grows
        transform = image_transform(size, is_train=False)
        np.testing.assert_array_equal(transform(np.asarray(photo)), transform(photo))
    square = np.asarray(photo.crop((0, 0, 64, 64)))
    # An RGB array already at the model's size skips Pillow: still the same numbers.
    np.testing.assert_array_equal(image_transform(64, is_train=False)(square),
                                  image_transform(64, is_train=False)(Image.fromarray(square)))
    with pytest.raises(TypeError, match="uint8"):
        image_transform(64, is_train=False)(square.astype(np.float32))
