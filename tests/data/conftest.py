"""The `images` fixture: a folder of small image files, good and bad, in pytest's tmp_path."""
import pytest

from tests.data.image_files import write_image, write_truncated_jpeg


@pytest.fixture
def images(tmp_path):
    """tmp_path/images/{a,b,c}.jpg with values 30, 120, 210, plus a truncated and a non-image .jpg."""
    folder = tmp_path / "images"
    for name, value in (("a", 30), ("b", 120), ("c", 210)):
        write_image(folder / f"{name}.jpg", value)
    write_truncated_jpeg(folder / "truncated.jpg")
    (folder / "not_an_image.jpg").write_text("hello")
    return folder
