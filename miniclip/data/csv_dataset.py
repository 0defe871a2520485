"""Image-caption pairs listed in a CSV/TSV file, in OpenCLIP's format.

What: a file with a header line and one row per pair, e.g. (tab-separated, OpenCLIP's default)
    filepath<TAB>title
    images/0001.jpg<TAB>a dog on a beach
dataset[i] = (PIL image, caption). Defaults as OpenCLIP's --csv-separator, --csv-img-key and
--csv-caption-key: separator tab, columns "filepath" and "title". An optional class column
(class_key, --csv-class-key) says which class each pair shows: caption_classes() maps each
caption to its class, so that the multi-positive loss treats "a photo of the digit seven." and "a
scan of the digit seven." as positives of each other (miniclip/losses.py). Relative image paths are taken
relative to the CSV file's folder (OpenCLIP takes them relative to the working directory), so a
dataset folder can be moved or used from anywhere.
Why: it is the format OpenCLIP users already have, and the one its issues show people stumble
on: the tab default (a comma file read with tabs gives one column named "filepath,title"), and
column names. So a file whose header has commas but no tab is read as comma-separated, with a
warning that says so; a missing column is an error that lists the columns there are.
How: the csv module reads all rows up front (paths and captions are small); images are opened
when a sample is asked for. A bad row (missing file, unreadable image, empty caption, missing
field) raises BadSampleError naming the file and line, which the loader can skip and count.
Checked by tests/data/test_csv_dataset.py.
"""
import csv
import os
import warnings

from miniclip.data.files import BadSampleError, open_image


class CsvDataset:
    """dataset[i] = (PIL image, caption) of the file's i-th row; `path` a .csv or .tsv file."""

    def __init__(self, path, img_key="filepath", caption_key="title", sep="\t", class_key=None):
        self.path = str(path)
        self.folder = os.path.dirname(os.path.abspath(self.path))
        # utf-8-sig drops the byte-order mark Excel writes, which would otherwise be part of the
        # first column's name.
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            header = f.readline()
            if sep not in header and "," in header:
                warnings.warn(f"{self.path}: the header line has no {sep!r} but has commas, so the "
                              f"file is read as comma-separated (pass sep=',' to say so and silence this)")
                sep = ","
            f.seek(0)
            reader = csv.DictReader(f, delimiter=sep)
            columns = reader.fieldnames or []
            for key, flag in ((img_key, "img_key (--csv-img-key)"),
                              (caption_key, "caption_key (--csv-caption-key)"),
                              (class_key, "class_key (--csv-class-key)")):
                if key is not None and key not in columns:
                    raise ValueError(f"{self.path}: no column {key!r} for the {flag}; the header line "
                                     f"(separator {sep!r}) has the columns {columns}")
            # reader.line_num is the file line the row ended on (a quoted caption may span lines).
            self.rows, self.classes = [], []
            for row in reader:
                self.rows.append((reader.line_num, row[img_key], row[caption_key]))
                self.classes.append(None if class_key is None else row[class_key])

    def __len__(self):
        return len(self.rows)

    def caption_classes(self):
        """{caption: class} for every caption the class column gives one class (a caption seen
        with two classes says nothing about either, so it is left out); {} without the column."""
        found, ambiguous = {}, set()
        for (_, _, caption), label in zip(self.rows, self.classes):
            if caption is None or label is None or not caption.strip():
                continue
            caption = caption.strip()
            if found.setdefault(caption, label) != label:
                ambiguous.add(caption)
        return {caption: label for caption, label in found.items() if caption not in ambiguous}

    def describe(self, index):
        return f"{self.path} line {self.rows[index][0]}"

    def __getitem__(self, index):
        _, image_path, caption = self.rows[index]
        where = self.describe(index)
        # DictReader gives None for the fields a short row lacks.
        if image_path is None or caption is None:
            raise BadSampleError(f"{where}: the row has fewer fields than the header")
        if not caption.strip():
            raise BadSampleError(f"{where}: empty caption")
        if not image_path.strip():
            raise BadSampleError(f"{where}: empty image path")
        full_path = os.path.join(self.folder, image_path)   # an absolute image_path is kept as is
        if not os.path.exists(full_path):
            raise BadSampleError(f"{where}: image file not found: {full_path} "
                                 f"(relative paths are relative to the CSV file's folder)")
        return open_image(full_path, where), caption.strip()
