"""Tests of miniclip/search.py: ranking, the contact sheet, and `python -m miniclip.search`.

- rank_images on planted features: the order and the scores are known, ties keep file order.
- The command line with the "colour model" of test_zeroshot.py (image feature = mean colour, text
  feature = the colour named): "a red thing" must rank red > orange > magenta > blue with
  cosines 1, 0.894, 0.707, 0, and the contact sheet must show them in that order, in a grid of
  the size sheet_size gives.
- The command line with a real tiny model: output format and a valid PNG; and bad input.
"""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from miniclip import search
from miniclip.search import PADDING, THUMBNAIL, TITLE_HEIGHT, LABEL_HEIGHT, rank_images, sheet_size
from tests.test_zeroshot import REPO, colour_model, tiny_checkpoint, write_image  # noqa: F401 (fixtures)


def test_rank_images_planted_features():
    image_features = np.array([[0.0, 1.0], [0.6, 0.8], [1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    order, scores = rank_images(image_features, np.array([1.0, 0.0]), top_k=4)
    assert order.tolist() == [2, 3, 1, 4]            # 1.0, 0.8, then the tie 0.6 = 0.6 in file order
    np.testing.assert_allclose(scores, [1.0, 0.8, 0.6, 0.6])
    order, _ = rank_images(image_features, np.array([1.0, 0.0]), top_k=50)
    assert len(order) == 5                           # top_k larger than the folder: all of it


@pytest.mark.parametrize("count, grid", [(1, (1, 1)), (3, (3, 1)), (4, (4, 1)), (5, (4, 2)), (8, (4, 2)),
                                         (9, (4, 3))])
def test_sheet_size(count, grid):
    columns, rows = grid
    assert sheet_size(count) == (PADDING + columns * (THUMBNAIL + PADDING),
                                 TITLE_HEIGHT + PADDING + rows * (THUMBNAIL + LABEL_HEIGHT + PADDING))


def cell_centre(column, row):
    """The pixel at the centre of a grid cell's thumbnail square."""
    return (PADDING + column * (THUMBNAIL + PADDING) + THUMBNAIL // 2,
            TITLE_HEIGHT + PADDING + row * (THUMBNAIL + LABEL_HEIGHT + PADDING) + THUMBNAIL // 2)


def run_search(capsys, *argv):
    search.main([str(a) for a in argv] + ["--device", "cpu", "--workers", "0"])
    return capsys.readouterr().out


def test_search_ranks_a_planted_case(tmp_path, capsys, colour_model):
    images = tmp_path / "images"
    write_image(images / "blue.png", (0, 0, 255))
    write_image(images / "more" / "orange.png", (255, 128, 0), size=(30, 12))   # subfolders too
    write_image(images / "magenta.png", (255, 0, 255))
    write_image(images / "red.png", (255, 0, 0), size=(5, 9))
    out_png = tmp_path / "sheet.png"
    out = run_search(capsys, "--checkpoint", "unused", "--images", images, "a red thing", "--top-k", "3",
                     "--out", out_png)
    lines = out.splitlines()
    assert lines[0] == f"query: 'a red thing': the top 3 of 4 images under {images}"
    assert lines[1].split() == ["rank", "score", "image"]
    ranked = [line.split() for line in lines[2:5]]
    assert [r[0] for r in ranked] == ["1", "2", "3"]
    assert [r[2] for r in ranked] == [str(images / "red.png"), str(images / "more" / "orange.png"),
                                      str(images / "magenta.png")]
    np.testing.assert_allclose([float(r[1]) for r in ranked],
                               [1.0, 255 / np.hypot(255, 128), 2 ** -0.5], atol=2e-3)
    assert lines[5] == f"contact sheet: {out_png} ({sheet_size(3)[0]} x {sheet_size(3)[1]})"

    with Image.open(out_png) as sheet:
        assert sheet.format == "PNG" and sheet.size == sheet_size(3)
        sheet = sheet.convert("RGB")
        assert sheet.getpixel(cell_centre(0, 0)) == (255, 0, 0)          # rank 1: red
        assert sheet.getpixel(cell_centre(1, 0)) == (255, 128, 0)        # rank 2: orange
        assert sheet.getpixel(cell_centre(2, 0)) == (255, 0, 255)        # rank 3: magenta


def test_search_contact_sheet_grid_with_two_rows(tmp_path, capsys, colour_model):
    for i in range(6):
        write_image(tmp_path / "images" / f"{i}.png", (255, 40 * i, 0))  # redder first
    out_png = tmp_path / "sheet.png"
    run_search(capsys, "--checkpoint", "unused", "--images", tmp_path / "images", "red", "--top-k", "5",
               "--out", out_png)
    with Image.open(out_png) as sheet:
        assert sheet.size == sheet_size(5)                               # 4 columns, 2 rows
        assert sheet.convert("RGB").getpixel(cell_centre(0, 1)) == (255, 160, 0)   # rank 5: 4.png


def test_search_skip_bad_samples_ranks_the_readable_images(tmp_path, capsys, colour_model):
    images = tmp_path / "images"
    write_image(images / "a_blue.png", (0, 0, 255))
    (images / "b_broken.png").write_bytes(b"not a png")
    write_image(images / "c_red.png", (255, 0, 0))
    out_png = tmp_path / "sheet.png"
    with pytest.warns(UserWarning, match="skipped 1 bad samples"):
        out = run_search(capsys, "--checkpoint", "unused", "--images", images, "red", "--out", out_png,
                         "--batch-size", "2", "--skip-bad-samples")
    lines = out.splitlines()
    assert lines[0] == f"query: 'red': the top 2 of 2 images under {images}"
    assert [line.split()[2] for line in lines[2:4]] == [str(images / "c_red.png"), str(images / "a_blue.png")]
    assert lines[-1].startswith(f"skipped 1 unreadable images (--skip-bad-samples); the first: "
                                f"{images / 'b_broken.png'}: cannot read image")
    with Image.open(out_png) as sheet:
        assert sheet.size == sheet_size(2)


def test_search_with_a_tiny_model(tmp_path, capsys, tiny_checkpoint):
    checkpoint, _, _ = tiny_checkpoint
    write_image(tmp_path / "images" / "a.png", (255, 0, 0), size=(64, 40))
    write_image(tmp_path / "images" / "b.jpg", (0, 0, 255), size=(20, 20), mode="L")
    write_image(tmp_path / "images" / "c.png", (0, 255, 0), size=(32, 32), mode="RGBA")
    out_png = tmp_path / "out.png"
    out = run_search(capsys, "--checkpoint", checkpoint, "--images", tmp_path / "images", "a red circle",
                     "--out", out_png)
    lines = out.splitlines()
    assert lines[0].startswith("query: 'a red circle': the top 3 of 3 images")  # --top-k 8 > 3 images
    scores = [float(line.split()[1]) for line in lines[2:5]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    with Image.open(out_png) as sheet:
        assert sheet.format == "PNG" and sheet.size == sheet_size(3)


def test_search_errors(tmp_path, capsys, tiny_checkpoint):
    checkpoint, _, _ = tiny_checkpoint
    write_image(tmp_path / "images" / "a.png", (255, 0, 0))
    (tmp_path / "empty" / "sub").mkdir(parents=True)

    def error(*argv):
        with pytest.raises(SystemExit) as exit_info:
            search.main([str(a) for a in argv] + ["--device", "cpu"])
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    out_png = tmp_path / "x.png"
    assert "--checkpoint missing.safetensors: no such file" in error(
        "--checkpoint", "missing.safetensors", "--images", tmp_path / "images", "red", "--out", out_png)
    assert "--images nowhere: no such folder" in error(
        "--checkpoint", checkpoint, "--images", "nowhere", "red", "--out", out_png)
    assert f"--images {tmp_path / 'empty'} holds no image files" in error(
        "--checkpoint", checkpoint, "--images", tmp_path / "empty", "red", "--out", out_png)
    assert "the query is empty" in error(
        "--checkpoint", checkpoint, "--images", tmp_path / "images", "  ", "--out", out_png)
    assert "need --top-k >= 1" in error(
        "--checkpoint", checkpoint, "--images", tmp_path / "images", "red", "--top-k", "0", "--out", out_png)
    assert "name it *.png" in error(
        "--checkpoint", checkpoint, "--images", tmp_path / "images", "red", "--out", tmp_path / "x.jpg")
    assert "its folder does not exist" in error(
        "--checkpoint", checkpoint, "--images", tmp_path / "images", "red", "--out", tmp_path / "no" / "x.png")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert f"cannot read image {tmp_path / 'images' / 'broken.jpg'}" in error(
        "--checkpoint", checkpoint, "--images", tmp_path / "images", "red", "--out", out_png)
    assert not out_png.exists()


def test_python_dash_m_runs_main(tmp_path):
    result = subprocess.run([sys.executable, "-m", "miniclip.search", "--checkpoint", "model.safetensors",
                             "--images", str(tmp_path), "a red circle"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == (f"python -m miniclip.search: error: --images {tmp_path} holds no image files "
                             f"(subfolders included)\n")
