"""Read labelled texts from CSV / TSV / JSONL files, class folders, the bundled demo set or TFDS.

Every reader returns a `LabelledTexts`: texts, labels and, for each row, where it came from
(`file:line`, the line where the row starts), so that a bad row can be named in a one-line error.

CSV follows RFC 4180 quoting: a quoted field may hold commas, doubled quotes and newlines (kept in
the text), and may be as long as a whole file; a quote left open is an error naming the line where
it opens. TSV is read unquoted, quotes literal, as GLUE's files need. A text that is empty after
stripping whitespace (a CSV/TSV/JSONL row, or a class folder's .txt file) is an error naming the
file and line: an empty example is almost always a broken file, never something to train on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tensorflow_datasets as tfds

from recipes.common.labels import class_folders
from recipes.common.tfds_data import prepared_builder, split_for
from zoo.errors import UserError
from zoo.progress import progress

DEMO_DIR = Path(__file__).parent / "demo_data"
DEMO_FILES = {"train": "sentiment_train.jsonl", "validation": "sentiment_dev.jsonl"}


@dataclass
class LabelledTexts:
    texts: list[str]
    labels: list[str | None]  # integer labels are kept as their decimal strings
    origins: list[str]  # "file:line" per row

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> LabelledTexts:
        return LabelledTexts(
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.origins[i] for i in indices],
        )


def read_texts(
    source: str, split: str, text_column: str, label_column: str | None
) -> LabelledTexts:
    """Read one split. `label_column=None` reads unlabelled text (labels are None)."""
    if source == "demo":
        if split not in DEMO_FILES:
            raise UserError(f"the demo set has no '{split}' split (it has {', '.join(DEMO_FILES)})")
        return read_texts(
            str(DEMO_DIR / DEMO_FILES[split]), split, "text", label_column and "label"
        )
    if source.startswith("tfds:"):
        return _read_tfds(source[5:], split)
    path = Path(source)
    if path.is_dir():
        return _read_class_folders(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = jsonl_rows(path)
    elif suffix in (".csv", ".tsv", ".txt"):
        rows = _delimited_rows(path, "\t" if suffix != ".csv" else ",")
    else:
        raise UserError(
            f"{path}: unsupported file type '{suffix}' (use .csv, .tsv, .jsonl or a folder of class folders)"
        )
    texts, labels, origins = [], [], []
    for line, row in rows:
        origin = f"{path}:{line}"
        for column in (text_column, label_column):
            if column is not None and column not in row:
                raise UserError(
                    f"{origin}: no column '{column}' (columns: {', '.join(map(str, row))}); "
                    f"set data.text_column / data.label_column"
                )
        text = row[text_column]
        if not isinstance(text, str):
            raise UserError(f"{origin}: '{text_column}' is not a string: {text!r}")
        text = text.strip()
        if not text:
            raise UserError(f"{origin}: empty text in column '{text_column}'")
        texts.append(text)
        labels.append(_label_value(row[label_column], origin) if label_column else None)
        origins.append(origin)
    if not texts:
        raise UserError(f"{path}: no examples (empty file)")
    return LabelledTexts(texts, labels, origins)


def _label_value(value, origin: str):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"{origin}: label must be a name or an integer, not {value!r}")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise UserError(f"{origin}: empty label")
    return str(value)


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; undecodable bytes are an error naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise _utf8_error(path, data, e) from None


def _utf8_error(path: Path, data: bytes, e: UnicodeDecodeError) -> UserError:
    line = data[: e.start].count(b"\n") + 1
    return UserError(
        f"{path}:{line}: not valid UTF-8 (byte {data[e.start]:#x}); re-save the file as UTF-8"
    )


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{number}: malformed JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a JSON object per line")
        yield number, row


def csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """`(line, fields)` of every record of a CSV (`delimiter` ","; RFC 4180 quoting) or TSV (tab;
    unquoted) file, `line` being where the record starts; blank lines give empty records. Read from
    the file itself, so a quoted field keeps its newlines. Undecodable bytes and a quote left open
    are UserErrors naming the line."""
    # A quoted field may be a whole review: the csv module's default limit (128 KiB) is far too low.
    # 2**31 - 1 fits a C long everywhere (sys.maxsize does not on Windows).
    csv.field_size_limit(2**31 - 1)
    # TSV files such as GLUE's carry bare quotes inside texts: read them literally.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    kind = "TSV" if quoting == csv.QUOTE_NONE else "CSV"
    with open(path, newline="", encoding="utf-8-sig") as file:
        raw: list[str] = []  # the lines of the record being read

        def lines() -> Iterator[str]:
            for line in file:
                raw.append(line)
                yield line

        reader = csv.reader(lines(), delimiter=delimiter, quoting=quoting)
        # One record is held back: the csv module silently ends a quote left open at the end of the
        # file, so only once the file is read do we know whether the last record closed its quotes.
        pending = None
        try:
            for fields in reader:
                if pending is not None:
                    yield pending[:2]
                pending = (reader.line_num - len(raw) + 1, fields, raw[:])
                raw.clear()
        except UnicodeDecodeError:
            data = path.read_bytes()
            try:
                data.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                raise _utf8_error(path, data, e) from None
            raise
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num}: malformed {kind} ({e})") from None
    if pending is not None:
        start, fields, last = pending
        if quoting != csv.QUOTE_NONE and any('"' in line for line in last):
            opened = _unclosed_quote(last, start, delimiter)
            if opened is not None:
                raise UserError(
                    f"{path}:{opened}: unclosed quote (the field that opens here runs to the end of the file)"
                )
        yield start, fields


def _unclosed_quote(lines: list[str], start: int, delimiter: str) -> int | None:
    """The line where a quoted field opens and never closes in one CSV record's raw `lines` (the
    first is line `start`), or None: the csv module's own reading, whose state it does not expose."""
    # start of a field, in an unquoted field, in quotes, just after a quote in quotes
    state, opened = (
        "start",
        None,
    )
    for number, line in enumerate(lines, start):
        for ch in line:
            if state == "quoted":
                state = "quote" if ch == '"' else "quoted"  # a closing quote, or the first of ""
            elif ch == '"' and state == "start":
                state, opened = "quoted", number
            elif ch == '"' and state == "quote":
                state = "quoted"  # "" inside quotes: an escaped quote
            elif ch == delimiter or ch in "\r\n":
                state = "start"
            else:
                state = "field"  # quotes inside an unquoted field are literal
    return opened if state == "quoted" else None


def _delimited_rows(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    records = csv_records(path, delimiter)
    header = next(records, None)
    if header is None:
        return
    header = [h.strip() for h in header[1]]
    for line, row in records:
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise UserError(
                f"{path}:{line}: {len(row)} fields, expected {len(header)} ({', '.join(header)})"
            )
        yield line, dict(zip(header, row))


def _read_class_folders(root: Path) -> LabelledTexts:
    classes = class_folders(root)
    if not classes:
        raise UserError(f"{root}: no class folders (expected {root}/<label>/*.txt)")
    texts, labels, origins = [], [], []
    for folder in classes:
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise UserError(f"{folder}: empty class folder (no .txt files)")
        for file in files:
            text = "\n".join(read_lines(file)).strip()
            if not text:
                raise UserError(f"{file}:1: empty text (the file is empty or only whitespace)")
            texts.append(text)
            labels.append(folder.name)
            origins.append(str(file))
    return LabelledTexts(texts, labels, origins)


def _read_tfds(name: str, split: str) -> LabelledTexts:

    builder = prepared_builder(name, "point data.train at a local CSV/TSV/JSONL file instead")
    tfds_split = split_for(builder, name, split)
    features = builder.info.features
    text_key = next(k for k, f in features.items() if isinstance(f, tfds.features.Text))
    label_key = next(k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel))
    names = features[label_key].names
    texts, labels, origins = [], [], []
    examples = progress(
        tfds.as_numpy(builder.as_dataset(split=tfds_split)), desc=f"reading {name}", unit="example"
    )
    for i, example in enumerate(examples):
        if example[label_key] < 0:  # GLUE test splits carry label -1: unlabelled
            continue
        texts.append(example[text_key].decode("utf-8").strip())
        labels.append(names[int(example[label_key])])
        origins.append(f"tfds:{name}/{tfds_split}[{i}]")
    return LabelledTexts(texts, labels, origins)
