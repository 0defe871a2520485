"""zeroshot, search and `bench step` with --device cuda, on a checkpoint trained on the stand-in."""
import pytest
from PIL import Image

from tests.device.conftest import on_standin, write_config


@pytest.fixture(scope="module")
def class_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    for name, colour in (("red", (200, 20, 20)), ("blue", (20, 20, 200))):
        (root / name).mkdir()
        for i in range(2):
            Image.new("RGB", (20, 20), colour).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_zeroshot_on_the_device(trained_on_device, class_tree, tmp_path):
    result, _ = on_standin("miniclip.zeroshot", ["--checkpoint", trained_on_device, "--device", "cuda",
                                                 "--class-dir", class_tree, "--workers", "1"], tmp_path)
    assert "top-1 accuracy" in result.stdout


@pytest.mark.slow
def test_search_on_the_device(trained_on_device, class_tree, tmp_path):
    out = tmp_path / "sheet.png"
    on_standin("miniclip.search", ["--checkpoint", trained_on_device, "--device", "cuda", "--images",
                                   class_tree, "--workers", "1", "--out", out, "a red square"], tmp_path)
    assert out.is_file()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "amp"])
def test_bench_step_on_the_device(tmp_path, precision):
    result, _ = on_standin("miniclip.bench", ["step", "--device", "cuda", "--model", write_config(tmp_path),
                                              "--batch", "8", "--steps", "1", "--warmup", "1",
                                              "--precision", precision], tmp_path)
    assert "cuda" in result.stdout and "miniclip" in result.stdout
