"""Reading a team's own table (CSV, Parquet or TFRecord files) row by row, and the typing rule.

One rule decides how a value is read, whatever the file's physical type: a field's *kind* in the
:class:`~mvke_tf.config.FeatureConfig`. A categorical or multi-valued field takes integers or strings
(``25`` and ``"25"`` are the same id), a numeric field integers or floats, a label 0 or 1.
:func:`read_sample` gives the first rows of files in any of the three formats as plain Python values,
and :func:`check_rows` applies the rule to them, each problem one line naming the file, the row,
the column and the fix. ``mvke-tf data describe`` and the start of ``mvke-tf pipeline run`` use both.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import gzip
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

from mvke_tf.config import MULTI_VALUED, NUMERIC, FeatureConfig

FORMATS = ("csv", "parquet", "tfrecord")


def file_format(path: str) -> str:
    """``csv``, ``parquet`` or ``tfrecord`` from a file's name (``.csv[.gz]``, ``.parquet``, ``.tfrecord[.gz]``)."""
    name = os.path.basename(path)
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if ".tfrecord" in name:
        return "tfrecord"
    raise ValueError(f"{path}: unknown format; fix: name the files .csv, .parquet or .tfrecord[.gz]")


def expand(patterns: str | Sequence[str]) -> list[str]:
    """Files of globs or directories (a directory: its data files, one level down too), sorted."""
    if isinstance(patterns, str):
        patterns = [patterns]
    files: list[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = []
            for sub in ("*", os.path.join("*", "*")):
                found += [f for f in glob.glob(os.path.join(pattern, sub)) if _is_data_file(f)]
        else:
            found = [f for f in glob.glob(pattern) if _is_data_file(f)]
        if not found:
            raise FileNotFoundError(
                f"{pattern}: no data files there; fix: give a CSV, Parquet or TFRecord file or glob"
            )
        files += sorted(found)
    return list(dict.fromkeys(files))


def _is_data_file(path: str) -> bool:
    if not os.path.isfile(path) or os.path.basename(path).startswith("."):
        return False
    try:
        file_format(path)
    except ValueError:
        return False
    return True


@dataclasses.dataclass
class Rows:
    """Consecutive rows of one file: ``columns`` in file order, ``values[column][i]`` of row ``i``
    (``None`` when missing; a list for a list-valued cell of Parquet / TFRecord), and where row ``i``
    is in the file (``where(i)``: ``line 7`` of a CSV file, ``record 6`` otherwise)."""

    path: str
    format: str
    columns: list[str]
    values: dict[str, list[Any]]
    offset: int = 0  # the file's row number of row 0 (0-based, header not counted)

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.values.values()), []))

    def where(self, i: int) -> str:
        n = self.offset + i
        return f"line {n + 2}" if self.format == "csv" else f"record {n}"


def read_sample(path: str, max_rows: int = 10_000) -> Rows:
    """The first ``max_rows`` rows of one CSV, Parquet or TFRecord file (gzipped or not)."""
    for rows in read_chunks(path, max_rows):
        return rows
    raise ValueError(f"{path}: no rows; fix: give a file with data")


def read_chunks(path: str, rows_per_chunk: int = 10_000) -> Iterator[Rows]:
    """Every row of one CSV, Parquet or TFRecord file (gzipped or not), ``rows_per_chunk`` at a time.

    A CSV cell is the value it spells (``25`` an int, ``2.5`` a float, ``""`` missing); Parquet and
    TFRecord values keep their types (a list where a cell holds several values).
    """
    reader = {"csv": _csv_chunks, "parquet": _parquet_chunks, "tfrecord": _tfrecord_chunks}[file_format(path)]
    yield from reader(path, max(1, rows_per_chunk))


def utf8_lines(path: str, fh: Iterator[bytes], fix: str) -> Iterator[str]:
    """The lines of a file opened in binary mode, decoded as UTF-8 (a leading BOM dropped).

    Decoded here rather than by the file object so that an undecodable byte names the file and the line.
    """
    for n, raw in enumerate(fh, 1):
        try:
            yield raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}: line {n} is not UTF-8 text (byte 0x{raw[e.start]:02x} at position {e.start + 1}); {fix}"
            ) from None


def csv_rows(path: str, fix: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, row)`` for every non-blank row of a CSV file, the header first; a row's number is the
    line it starts on (a quoted field may span lines). Kept as text: a tag or an id ``007`` stays ``007``.
    A problem raises ValueError naming the file and the line, ending with ``fix``."""
    import tensorflow as tf  # for GCS paths; this module is otherwise free of TensorFlow (``data describe``)

    with tf.io.gfile.GFile(path, "rb") as fh:
        # strict: a quote left open is an error where the file ends, not a field that swallows the rest.
        reader = csv.reader(utf8_lines(path, fh, fix), strict=True)
        start = 1
        try:
            for row in reader:
                if row:
                    yield start, row
                start = reader.line_num + 1
        except csv.Error as e:
            if reader.line_num > start:  # the record began earlier: that is where the problem is
                raise ValueError(
                    f"{path}: line {start} is not valid CSV ({e} at line {reader.line_num}: a quote opened on "
                    f"line {start} is not closed); {fix}"
                ) from None
            raise ValueError(f"{path}: line {start} is not valid CSV ({e}); {fix}") from None


def _cell(text: str) -> Any:
    """A CSV cell as the value it spells: int, float, str; ``None`` when empty."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) or text.strip().lower() in ("inf", "-inf", "nan") else text


def _csv_chunks(path: str, size: int) -> Iterator[Rows]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file; fix: give a CSV file with a header line") from None
        offset = 0
        while True:
            values: dict[str, list[Any]] = {c: [] for c in header}
            n = 0
            for row in reader:
                if len(row) != len(header):
                    raise ValueError(
                        f"{path} line {reader.line_num}: {len(row)} values for {len(header)} columns; "
                        "fix: one value per header column (quote values that hold a comma)"
                    )
                for c, text in zip(header, row):
                    values[c].append(_cell(text))
                n += 1
                if n == size:
                    break
            if n == 0:
                return
            yield Rows(path, "csv", header, values, offset)
            offset += n
            if n < size:
                return


def _parquet_chunks(path: str, size: int) -> Iterator[Rows]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    columns = list(table.schema_arrow.names)
    offset = 0
    for batch in table.iter_batches(batch_size=size):
        values = {c: [_plain(v) for v in column.to_pylist()] for c, column in zip(batch.schema.names, batch.columns)}
        yield Rows(path, "parquet", columns, values, offset)
        offset += batch.num_rows


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, list):
        return [_plain(x) for x in v if x is not None]
    return v


def _tfrecord_chunks(path: str, size: int) -> Iterator[Rows]:
    import tensorflow as tf

    compression = "GZIP" if path.endswith(".gz") else ""
    dataset = tf.data.TFRecordDataset(path, compression_type=compression).batch(size)
    offset = 0
    for batch in dataset.as_numpy_iterator():
        rows = [_example_values(tf.train.Example.FromString(record)) for record in batch]
        columns = sorted({c for r in rows for c in r})
        # A column is list-valued when any row holds several values; a single value is then a list of one.
        list_valued = {c for c in columns if any(len(r.get(c, ())) > 1 for r in rows)}
        values: dict[str, list[Any]] = {c: [] for c in columns}
        for r in rows:
            for c in columns:
                items = r.get(c, [])
                if c in list_valued:
                    values[c].append(items or None)
                else:
                    values[c].append(items[0] if items else None)
        yield Rows(path, "tfrecord", columns, values, offset)
        offset += len(rows)


def _example_values(example: Any) -> dict[str, list[Any]]:
    row = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        items = list(getattr(feature, kind).value) if kind else []
        row[name] = [_plain(v) for v in items]
    return row


def split_values(value: Any, separator: str) -> list[Any]:
    """A multi-valued cell as its list of values: a list as it is, a joined string split on ``separator``."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [v for v in value.split(separator) if v != ""]
    return [value]


def id_text(value: Any) -> str:
    """An id as the typing rule reads it: its decimal string (``25`` and ``25.0`` are ``"25"``), text as it is."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_rows(rows: Rows, features: FeatureConfig, max_problems: int = 5) -> list[str]:
    """The typing rule applied to ``rows``: each problem one line naming the file, the row, the column and the fix.

    Checked: every feature field, label and the user id (where features.yaml names one) is a column; a numeric
    field holds numbers; a categorical field holds one integer or string per row (a list only where
    the field is multi-valued); a label holds 0 or 1 in every row. At most ``max_problems`` rows are
    named per column.
    """
    problems: list[str] = []
    wanted = (*features.feature_names, *features.labels, *([features.user_id] if features.user_id else []))
    missing = [c for c in wanted if c not in rows.values]
    if missing:
        problems.append(
            f"{rows.path}: no column(s) {missing} (it has {rows.columns}); fix: name those columns in the data, "
            "or correct features.yaml (mvke-tf data describe writes one from the data)"
        )
    for spec in (*features.user_fields, features.tag_field):
        if spec.name not in rows.values:
            continue
        bad = []
        for i, v in enumerate(rows.values[spec.name]):
            if v is None:
                continue
            if spec.kind == NUMERIC and not is_number(v):
                bad.append((i, v, "is not a number", "give a number, or make the field categorical in features.yaml"))
            elif spec.kind != MULTI_VALUED and isinstance(v, list):
                bad.append((i, v, "is a list", "make the field multi_valued in features.yaml"))
            elif spec.kind != NUMERIC and isinstance(v, float) and not v.is_integer():
                bad.append((i, v, "is a fraction, not an id", "give ids as integers or strings, or make it numeric"))
            if len(bad) >= max_problems:
                break
        problems += [
            f"{rows.path} {rows.where(i)}, column {spec.name} ({spec.kind}): {v!r} {why}; fix: {fix}"
            for i, v, why, fix in bad
        ]
    for label in features.labels:
        if label not in rows.values:
            continue
        bad_rows = [i for i, v in enumerate(rows.values[label]) if v not in (0, 1) or isinstance(v, list)][
            :max_problems
        ]
        problems += [
            f"{rows.path} {rows.where(i)}, column {label} (label): {rows.values[label][i]!r} is not 0 or 1; "
            "fix: give every row a 0/1 label"
            for i in bad_rows
        ]
    return problems


__all__ = [
    "FORMATS",
    "Rows",
    "check_rows",
    "expand",
    "file_format",
    "id_text",
    "is_number",
    "read_chunks",
    "read_sample",
    "split_values",
]
