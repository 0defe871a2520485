"""Folder datasets: name.jpg + name.txt pairs, and the class tree for zero-shot evaluation."""
import numpy as np
import pytest

from miniclip.data.files import BadSampleError
from miniclip.data.folders import ImageClassFolder, ImageTextFolder
from miniclip.errors import UserError

from tests.data.image_files import write_image


def test_image_text_pairs_in_sorted_order_with_subfolders(tmp_path):
    for name, value, text in (("00001/b", 120, "second"), ("00000/z", 30, " first \n"), ("00001/a", 210, "third")):
        write_image(tmp_path / f"{name}.jpg", value)
        (tmp_path / f"{name}.txt").write_text(text)
    (tmp_path / "notes.md").write_text("not an image, ignored")
    dataset = ImageTextFolder(tmp_path)
    assert len(dataset) == 3
    assert [dataset[i][1] for i in range(3)] == ["first", "third", "second"]
    np.testing.assert_allclose([np.asarray(dataset[i][0])[0, 0, 0] for i in range(3)], [30, 210, 120], atol=4)
    assert dataset.describe(2) == str(tmp_path / "00001" / "b.jpg")


def test_image_text_pairs_bad_samples(tmp_path):
    write_image(tmp_path / "no_caption.png", 50)
    write_image(tmp_path / "empty_caption.png", 50)
    (tmp_path / "empty_caption.txt").write_text("\n")
    dataset = ImageTextFolder(tmp_path)
    with pytest.raises(BadSampleError, match=r"empty_caption.png: empty caption in .*empty_caption.txt"):
        dataset[0]
    with pytest.raises(BadSampleError, match=r"no_caption.png: caption file not found: .*no_caption.txt"):
        dataset[1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        ImageTextFolder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ImageTextFolder(tmp_path / "missing")


def test_class_tree_names_labels_and_prompts(tmp_path):
    write_image(tmp_path / "golden_retriever" / "1.jpg", 30)
    write_image(tmp_path / "golden_retriever" / "nested" / "2.png", 40)
    write_image(tmp_path / "cat" / "3.jpg", 200)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "README.txt").write_text("a file at the top level is not a class")
    dataset = ImageClassFolder(tmp_path)
    assert dataset.classnames == ["cat", "golden retriever"]
    assert [dataset[i][1] for i in range(len(dataset))] == [0, 1, 1]
    assert dataset.describe(2).endswith("2.png")
    prompts = dataset.class_prompts()
    assert prompts[1][0] == "a photo of a golden retriever."
    assert len(prompts[0]) == len(dataset.templates) > 1

    captions = ImageClassFolder(tmp_path, target="caption", templates=("a {}.", "the {}!"))
    texts = [captions[i][1] for i in range(3)]
    assert texts[0] in ("a cat.", "the cat!") and texts[1] in ("a golden retriever.", "the golden retriever!")
    assert texts == [captions[i][1] for i in range(3)], "captions must not change between calls"


def test_class_tree_errors(tmp_path):
    with pytest.raises(UserError, match="no class subfolders"):
        ImageClassFolder(tmp_path)
    write_image(tmp_path / "dog" / "1.jpg", 30)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(UserError, match="empty_class has no image files"):
        ImageClassFolder(tmp_path)
