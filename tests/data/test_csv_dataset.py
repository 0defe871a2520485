"""CSV/TSV datasets in OpenCLIP's format: separators, relative paths, and every kind of bad row."""
import warnings

import numpy as np
import pytest

from miniclip.data.csv_dataset import CsvDataset
from miniclip.data.files import BadSampleError
from miniclip.data.loader import Loader
from miniclip.data.transforms import image_transform
from miniclip.errors import UserError


def write_csv(path, rows, sep="\t"):
    path.write_text("\n".join(sep.join(row) for row in rows) + "\n", encoding="utf-8")
    return path


def pixel(image):
    return np.asarray(image)[0, 0, 0]


def test_tab_separated_with_paths_relative_to_the_csv_file(tmp_path, images, monkeypatch):
    path = write_csv(tmp_path / "train.tsv", [("filepath", "title"), ("images/a.jpg", "a dark square"),
                                               ("images/b.jpg", "a grey square"),
                                               (str(images / "c.jpg"), "an absolute path")])
    monkeypatch.chdir(images)   # not the CSV's folder: relative paths must not depend on it
    dataset = CsvDataset(path)
    assert len(dataset) == 3
    values = [pixel(dataset[i][0]) for i in range(3)]
    assert [dataset[i][1] for i in range(3)] == ["a dark square", "a grey square", "an absolute path"]
    np.testing.assert_allclose(values, [30, 120, 210], atol=4)
    assert dataset.describe(1) == f"{path} line 3"


def test_comma_file_is_detected_and_said_so(tmp_path, images):
    path = write_csv(tmp_path / "train.csv", [("filepath", "title"), ("images/a.jpg", "a dark square")], sep=",")
    with pytest.warns(UserWarning, match="comma-separated"):
        dataset = CsvDataset(path)
    assert dataset[0][1] == "a dark square"
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # saying sep="," is not warned about
        assert CsvDataset(path, sep=",")[0][1] == "a dark square"


def test_quoted_captions_and_other_column_names(tmp_path, images):
    path = tmp_path / "data.tsv"
    path.write_text('id\timage\tcaption\n7\timages/b.jpg\t"a caption with a\ttab, a comma and\na new line"\n'
                    '8\timages/a.jpg\tsecond\n')
    dataset = CsvDataset(path, img_key="image", caption_key="caption")
    assert dataset[0][1] == "a caption with a\ttab, a comma and\na new line"
    assert dataset.describe(0) == f"{path} lines 2-3"   # the quoted caption spans lines 2-3
    assert dataset.describe(1) == f"{path} line 4"


def test_excel_file_with_byte_order_mark_and_windows_line_ends(tmp_path, images):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefffilepath,title\r\nimages/a.jpg,caf\u00e9\r\n".encode("utf-8"))
    dataset = CsvDataset(path, sep=",")
    assert len(dataset) == 1 and dataset[0][1] == "caf\u00e9"


def test_wrong_column_lists_the_columns_there_are(tmp_path, images):
    path = write_csv(tmp_path / "train.tsv", [("filepath", "caption"), ("images/a.jpg", "x")])
    with pytest.raises(ValueError, match=r"no column 'title'.*\['filepath', 'caption'\]"):
        CsvDataset(path)
    with pytest.raises(ValueError, match=r"no column 'path'.*img_key"):
        CsvDataset(path, img_key="path", caption_key="caption")
    with pytest.raises(UserError, match=r"no column 'path' for the img_key \(--csv-img-key\), no column 'text' "
                                        r"for the caption_key \(--csv-caption-key\); the header line "
                                        r"\(separator '\\t'\) has the columns \['filepath', 'caption'\]$"):
        CsvDataset(path, img_key="path", caption_key="text")


def sixteen_rows(captions):
    """A TSV file's text: the header and 16 rows n.jpg<TAB>caption, some captions replaced."""
    rows = [f"a photo number {i}" for i in range(16)]
    for i, caption in captions.items():
        rows[i] = caption
    return "filepath\ttitle\n" + "".join(f"{i}.jpg\t{c}\n" for i, c in enumerate(rows))


@pytest.mark.parametrize("later, reason", [
    ({}, "runs to line 17 and does not end where a field can end"),                    # to the end of the file
    ({5: 'the "big" dog', 9: 'a dog called "Rex"'}, "runs to line 7 and does not end where a field can end"),
    ({5: 'the end of a quote"'}, "runs to line 7 and holds line 4, which looks like a row of its own"),
])
def test_an_unclosed_quote_that_swallows_rows_is_an_error_naming_its_line(tmp_path, later, reason):
    """Was: the rows after the quote became one caption (16 rows read as 12, or as 2)."""
    path = tmp_path / "quotes.tsv"
    path.write_text(sixteen_rows({1: '"best photo ever', **later}))
    with pytest.raises(UserError, match=f"quotes.tsv line 3: the quoted field 'title' that opens on this line "
                                        f"{reason}, so it probably swallowed the rows after it"):
        CsvDataset(path)


def test_quotes_are_read_as_pandas_reads_them(tmp_path):
    """A quote inside a field is text; one that starts a field quotes it; "" is a quote."""
    path = tmp_path / "quotes.tsv"
    path.write_text(sixteen_rows({1: 'the "big" dog', 2: '"Hello" she said', 3: '"two\nlines, ""quoted"""',
                                  4: 'tail quote"'}))
    dataset = CsvDataset(path)
    assert len(dataset) == 16
    assert [row[2] for row in dataset.rows[1:5]] == ['the "big" dog', "Hello she said", 'two\nlines, "quoted"',
                                                     'tail quote"']
    assert dataset.describe(3) == f"{path} lines 5-6" and dataset.describe(4) == f"{path} line 7"


def test_more_fields_than_columns_is_an_error_naming_the_line(tmp_path):
    """Was: a comma file with unquoted commas cut every caption at its first comma."""
    path = tmp_path / "commas.csv"
    path.write_text('filepath,title\na.jpg,"a dog, running"\nb.jpg,a cat, sleeping\n')
    with pytest.raises(UserError, match=r"commas.csv: expected 2 fields in line 3, saw 3 \(separator ','\): a "
                                        r"field that holds the separator must be quoted"):
        CsvDataset(path, sep=",")


def test_a_used_column_named_twice_is_an_error(tmp_path):
    path = tmp_path / "twice.tsv"
    path.write_text("filepath\ttitle\tnotes\ttitle\na.jpg\tfirst\tx\tsecond\n")
    with pytest.raises(UserError, match=r"twice.tsv line 1: the column 'title' of the caption_key "
                                        r"\(--csv-caption-key\) is named 2 times in the header"):
        CsvDataset(path)
    path.write_text("filepath\ttitle\tnotes\tnotes\na.jpg\tfirst\tx\ty\n")   # unused columns may repeat
    assert CsvDataset(path).rows[0][2] == "first"


def test_a_file_that_is_not_utf8_names_the_line_and_column(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("filepath\ttitle\nimages/a.jpg\tun caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.tsv line 2, column 20: byte 0xe9 is not UTF-8"):
        CsvDataset(path)
    path.write_bytes("filepath\ttitle\nimages/a.jpg\tun caf\u00e9\n".encode("utf-16"))   # Excel's "Unicode Text"
    with pytest.raises(UserError, match=r"latin1.tsv: the file is UTF-16, it must be UTF-8"):
        CsvDataset(path)


def test_missing_csv_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        CsvDataset(tmp_path / "nope.csv")


@pytest.mark.parametrize("row, message", [
    (("images/missing.jpg", "x"), r"line 3: image file not found: .*images/missing.jpg"),
    (("images/truncated.jpg", "x"), r"line 3: cannot read image .*truncated.jpg: image file is truncated"),
    (("images/not_an_image.jpg", "x"), r"line 3: cannot read image .*cannot identify image file"),
    (("images/a.jpg", "  "), r"line 3: empty caption"),
    (("images/a.jpg",), r"line 3: the row has fewer fields than the header"),
])
def test_bad_row_names_the_file_and_line(tmp_path, images, row, message):
    path = write_csv(tmp_path / "train.tsv", [("filepath", "title"), ("images/a.jpg", "good"), row])
    dataset = CsvDataset(path)
    assert dataset[0][1] == "good"
    with pytest.raises(BadSampleError, match="train.tsv " + message):
        dataset[1]


def test_loader_stops_on_a_bad_row_or_skips_and_counts_it(tmp_path, images):
    rows = [("filepath", "title"), ("images/a.jpg", "a"), ("images/missing.jpg", "m"), ("images/b.jpg", "b"),
            ("images/truncated.jpg", "t"), ("images/c.jpg", "c"), ("images/a.jpg", "")]
    dataset = CsvDataset(write_csv(tmp_path / "train.tsv", rows))
    transform = image_transform(8, is_train=False)
    loader = Loader(dataset, batch_size=4, transform=transform, workers=2, shuffle=False)
    with pytest.raises(BadSampleError, match="line 3: image file not found"):
        list(loader.epoch(0))

    loader = Loader(dataset, batch_size=4, transform=transform, workers=2, shuffle=False, skip_bad_samples=True)
    with pytest.warns(UserWarning, match="skipped 3 bad samples in epoch 0"):
        batches = list(loader.epoch(0))
    assert [texts for _, texts in batches] == [["a", "b"], ["c"]]
    assert [images.shape for images, _ in batches] == [(2, 3, 8, 8), (1, 3, 8, 8)]
    assert len(loader.skipped) == 3
    assert [m.split(": ")[0] for m in loader.skipped] == [f"{dataset.path} line {n}" for n in (3, 5, 7)]
