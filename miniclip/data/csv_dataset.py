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
dataset folder can be moved or used from anywhere. Paths are followed wherever they point, as
OpenCLIP does: an absolute path, or one whose ../ leaves the CSV's folder, is read as written, so
a CSV file can make miniclip read any image its user may read.
Quoting is pandas.read_csv's default (OpenCLIP reads the file with pandas), which the csv module
gives with QUOTE_MINIMAL: a field that starts with " is quoted until the next " that ends a
field, may hold the separator and line breaks, and writes a quote inside it as "".
Why: it is the format OpenCLIP users already have, and the one its issues show people stumble
on: the tab default (a comma file read with tabs gives one column named "filepath,title"), and
column names. So a file whose header has commas but no tab is read as comma-separated, with a
warning that says so; and a file that cannot be read as its header says is an error (UserError)
naming the file and line, never rows silently lost or cut:
- a missing column: the message lists the columns there are; a used column named twice;
- a row with more fields than the header (unquoted commas in a caption of a comma file);
- a quote that opens a field and swallows the rows after it: the quoted field spans lines and
  either does not end like a field (strict csv) or holds a line that looks like a row of its own;
- a file that is not UTF-8 (Latin-1, Windows-1252): the line and column of the first bad byte.
How: the csv module reads all rows up front (paths and captions are small); images are opened
when a sample is asked for. A bad row (missing file, unreadable image, empty caption, missing
field) raises BadSampleError naming the file and line, which the loader can skip and count.
Checked by tests/data/test_csv_dataset.py.
"""
import csv
import os
import warnings

from miniclip.data.files import IMAGE_EXTENSIONS, BadSampleError, open_image
from miniclip.errors import UserError


class CsvDataset:
    """dataset[i] = (PIL image, caption) of the file's i-th row; `path` a .csv or .tsv file."""

    def __init__(self, path, img_key="filepath", caption_key="title", sep="\t", class_key=None):
        self.path = str(path)
        self.folder = os.path.dirname(os.path.abspath(self.path))
        keys = {"img_key (--csv-img-key)": img_key, "caption_key (--csv-caption-key)": caption_key,
                "class_key (--csv-class-key)": class_key}
        try:
            # utf-8-sig drops the byte-order mark Excel writes, which would otherwise be part of the
            # first column's name.
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                self._read(f, sep, keys)
        except UnicodeDecodeError:
            raise UserError(self._not_utf8()) from None

    def _read(self, f, sep, keys):
        """Fill self.rows [(where, image path, caption)] and self.classes from the open file."""
        header = f.readline()
        if sep not in header and "," in header:
            warnings.warn(f"{self.path}: the header line has no {sep!r} but has commas, so the "
                          f"file is read as comma-separated (pass sep=',' to say so and silence this)")
            sep = ","
        f.seek(0)
        self.sep, row_lines = sep, []   # row_lines: the file lines of the row just read

        def lines():
            for line in f:
                row_lines.append(line)
                yield line

        reader = csv.reader(lines(), delimiter=sep)
        self.columns = next(reader, [])
        row_lines.clear()
        positions = self._positions(keys)
        self.image_column = positions[0]
        self.rows, self.classes = [], []
        for fields in reader:
            first, last = reader.line_num - len(row_lines) + 1, reader.line_num
            if fields and last > first:
                self._check_quote(fields, row_lines, first, last)
            row_lines.clear()
            if not fields:
                continue   # a blank line
            if len(fields) > len(self.columns):
                raise UserError(f"{self.path}: expected {len(self.columns)} fields in line {first}, saw "
                                f"{len(fields)} (separator {sep!r}): a field that holds the separator must be "
                                f"quoted, e.g. \"a dog, running\"")
            # A short row gets None for the fields it lacks: a bad sample, reported when it is read.
            image, caption, label = (fields[i] if i is not None and i < len(fields) else None for i in positions)
            self.rows.append((f"line {first}" if first == last else f"lines {first}-{last}", image, caption))
            self.classes.append(label)

    def _positions(self, keys):
        """The column index of img_key, caption_key and class_key (None without a class_key)."""
        missing = [f"no column {key!r} for the {flag}" for flag, key in keys.items()
                   if key is not None and key not in self.columns]
        if missing:
            raise UserError(f"{self.path}: {', '.join(missing)}; the header line (separator {self.sep!r}) "
                            f"has the columns {self.columns}")
        for flag, key in keys.items():
            if key is not None and self.columns.count(key) > 1:
                raise UserError(f"{self.path} line 1: the column {key!r} of the {flag} is named "
                                f"{self.columns.count(key)} times in the header {self.columns}; rename the others")
        return [None if key is None else self.columns.index(key) for key in keys.values()]

    def _check_quote(self, fields, row_lines, first, last):
        """A row that spans lines holds a quoted line break: refuse it when the quote looks unclosed."""
        try:
            next(csv.reader(row_lines, delimiter=self.sep, strict=True))
        except csv.Error:
            reason = "does not end where a field can end"
        else:
            inside = [n for n, line in enumerate(row_lines[1:], first + 1) if self._looks_like_a_row(line)]
            if not inside:
                return
            reason = f"holds line {inside[0]}, which looks like a row of its own"
        column = next((self.columns[i] for i, field in enumerate(fields)
                       if ("\n" in field or "\r" in field) and i < len(self.columns)), "?")
        raise UserError(f"{self.path} line {first}: the quoted field {column!r} that opens on this line runs "
                        f"to line {last} and {reason}, so it probably swallowed the rows after it. A field "
                        f"that starts with \" is quoted until the next \" that ends a field (as pandas reads "
                        f"CSV): close the quote, or write a quote inside a quoted field as \"\"")

    def _looks_like_a_row(self, line):
        """As many fields as the header, and an image file name in the image column."""
        fields = next(csv.reader([line], delimiter=self.sep), [])
        return (len(fields) == len(self.columns)
                and fields[self.image_column].strip().lower().endswith(IMAGE_EXTENSIONS))

    def _not_utf8(self):
        """Where the file's first byte that is not UTF-8 is: line, column and value."""
        with open(self.path, "rb") as f:
            if f.read(2) in (b"\xff\xfe", b"\xfe\xff"):   # the byte-order mark of Excel's "Unicode Text"
                return (f"{self.path}: the file is UTF-16, it must be UTF-8 (convert it, e.g. "
                        f"iconv -f utf-16 -t utf-8, or save it from Excel as 'CSV UTF-8')")
            f.seek(0)
            for number, line in enumerate(f, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as e:
                    return (f"{self.path} line {number}, column {e.start + 1}: byte 0x{line[e.start]:02x} is not "
                            f"UTF-8; the file must be UTF-8 (Latin-1 or Windows-1252? convert it, e.g. "
                            f"iconv -f cp1252 -t utf-8)")
        return f"{self.path}: not UTF-8"

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
        return f"{self.path} {self.rows[index][0]}"

    def __getitem__(self, index):
        _, image_path, caption = self.rows[index]
        where = self.describe(index)
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
