"""Input readers of the tagging job: the tag vocabulary (a tag file or the tag column of data files), the users
files (CSV, Parquet, TFRecord of ``tf.Example``) as ``(user_id, serialized tf.Example)``, and their field types.

Every error names the file, the line or row, and the fix.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import tensorflow as tf

from mvke_tf.config import MULTI_VALUED, NUMERIC, FeatureConfig, FieldSpec
from mvke_tf.data.dataset import resolve_files
from mvke_tf.data.table import id_text, is_number, read_chunks, split_values
from mvke_tf.tagging.errors import TaggingError

if TYPE_CHECKING:
    from mvke_tf.tagging.scoring import TaggingModel

_USERS_FIX = (
    "fix: give UTF-8 CSV files with a header row (the user id and user feature columns) or TFRecord files of tf.Example"
)
DEFAULT_TAG_FIELD = "tags"
DEFAULT_USER_ID = "user_id"
_READ_BATCH = 4096


def read_tags(path: str | os.PathLike) -> list[str]:
    """One tag per line (blank lines ignored, duplicates dropped, order kept); UTF-8 text."""
    if not tf.io.gfile.exists(str(path)):
        raise FileNotFoundError(f"--tags {path}: no such file")
    with tf.io.gfile.GFile(str(path), "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TaggingError(
                f"--tags {path}: line {number} is not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                "fix: give a UTF-8 text file of one tag per line"
            ) from None
    text = data.decode("utf-8")
    tags = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if not tags:
        raise TaggingError(f"--tags {path}: no tags in the file (one tag per line)")
    return tags


def _find_feature_config(start: str) -> FeatureConfig | None:
    """``features.yaml`` in ``start`` or up to two directories above it (the ``data synth`` layout)."""
    d = Path(start)
    for cand in (d, d.parent, d.parent.parent):
        if (cand / "features.yaml").exists():
            return FeatureConfig.from_yaml(cand / "features.yaml")
    return None


def default_user_id_column(users: str, features: str | os.PathLike | None = None) -> str:
    """The users' id column: the feature config's ``user_id`` (``--features``, or the ``features.yaml`` found next
    to the users files), else ``user_id``."""
    fc = None
    if features and Path(features).is_file():
        fc = FeatureConfig.from_yaml(features)
    elif not features:
        try:
            first = resolve_files(users)[0]
        except (FileNotFoundError, ValueError):
            return DEFAULT_USER_ID
        fc = _find_feature_config(os.path.dirname(first))
    return fc.user_id if fc is not None and fc.user_id else DEFAULT_USER_ID


def _utf8_lines(path: str, fh: Iterator[bytes]) -> Iterator[str]:
    """The lines of a file opened in binary mode, decoded as UTF-8 (a leading BOM dropped).

    Decoded here rather than by the file object so that an undecodable byte names the file and the line.
    """
    for n, raw in enumerate(fh, 1):
        try:
            yield raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise TaggingError(
                f"{path}: line {n} is not UTF-8 text (byte 0x{raw[e.start]:02x} at position {e.start + 1}); "
                f"{_USERS_FIX}"
            ) from None


def _csv_rows(path: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, row)`` for every non-blank row of a CSV file, the header first; a row's number is the
    line it starts on (a quoted field may span lines)."""
    with tf.io.gfile.GFile(path, "rb") as fh:
        # strict: a quote left open is an error where the file ends, not a field that swallows the rest.
        reader = csv.reader(_utf8_lines(path, fh), strict=True)
        start = 1
        try:
            for row in reader:
                if row:
                    yield start, row
                start = reader.line_num + 1
        except csv.Error as e:
            if reader.line_num > start:  # the record began earlier: that is where the problem is
                raise TaggingError(
                    f"{path}: line {start} is not valid CSV ({e} at line {reader.line_num}: a quote opened on "
                    f"line {start} is not closed); {_USERS_FIX}"
                ) from None
            raise TaggingError(f"{path}: line {start} is not valid CSV ({e}); {_USERS_FIX}") from None


def _data_files(path: str) -> list[str]:
    """Data files under a directory: its ``part-*`` files, else those of its subdirectories."""
    try:
        return resolve_files(path)
    except FileNotFoundError:
        for pattern in ("*/part-*.csv", "*/part-*.parquet", "*/part-*.tfrecord*"):
            files = sorted(tf.io.gfile.glob(os.path.join(path, pattern)))
            if files:
                return files
        raise


def tags_from_data(path: str | os.PathLike, feature_config: FeatureConfig | None = None) -> list[str]:
    """Every distinct tag in the tag column of the data files under ``path`` (sorted)."""
    path = str(path)
    files = _data_files(path)
    fc = feature_config or _find_feature_config(path if tf.io.gfile.isdir(path) else os.path.dirname(files[0]))
    field = fc.tag_field if fc else FieldSpec(DEFAULT_TAG_FIELD, MULTI_VALUED, max_values=8)
    tags: set[str] = set()
    for f in files:
        if f.endswith(".csv"):
            rows = _csv_rows(f)
            _, header = next(rows, (0, []))
            if field.name not in header:
                raise TaggingError(f"--tags-from-data: {f} has no '{field.name}' column")
            col = header.index(field.name)
            for n, row in rows:
                if len(row) != len(header):
                    raise TaggingError(
                        f"--tags-from-data: {f}: line {n} has {len(row)} columns, the header {len(header)}; "
                        "fix: give every row one value per header column (quote values holding commas)"
                    )
                tags.update(t for t in row[col].split(field.separator) if t)
        elif f.endswith(".parquet"):
            for chunk in read_chunks(f, _READ_BATCH):
                if field.name not in chunk.values:
                    raise TaggingError(f"--tags-from-data: {f} has no '{field.name}' column")
                tags.update(str(t) for v in chunk.values[field.name] for t in split_values(v, field.separator))
        else:
            ds = tf.data.TFRecordDataset(f, compression_type="GZIP" if f.endswith(".gz") else None)
            spec = {field.name: tf.io.RaggedFeature(tf.string)}
            for batch in ds.batch(_READ_BATCH):
                values = tf.io.parse_example(batch, spec)[field.name].flat_values.numpy()
                tags.update(v.decode() for v in values if v)
    if not tags:
        raise TaggingError(f"--tags-from-data {path}: no tags found in column '{field.name}'")
    return sorted(tags)


def _csv_example(row: Sequence[str], columns: Sequence[tuple[int, FieldSpec]], where: str) -> bytes:
    feats = {}
    for i, spec in columns:
        v = row[i]
        if spec.kind == NUMERIC:
            if v != "":
                try:
                    x = float(v)
                except ValueError:
                    raise TaggingError(
                        f"{where}, column '{spec.name}': {v!r} is not a number (a numeric field); "
                        "fix: write a number, or leave it empty for a missing value"
                    ) from None
                feats[spec.name] = tf.train.Feature(float_list=tf.train.FloatList(value=[x]))
        elif spec.kind == MULTI_VALUED:
            vals = [s.encode() for s in v.split(spec.separator) if s]
            feats[spec.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=vals))
        else:
            feats[spec.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _parquet_user_records(
    path: str, user_fields: Sequence[FieldSpec] | None, user_id_column: str
) -> Iterator[tuple[str, bytes]]:
    """Parquet users as CSV users: the ``user_fields`` of each row as a ``tf.Example`` (ids as strings, numbers
    as floats; :meth:`TaggingModel.retype` then gives them the model's types)."""
    if user_fields is None:
        raise TaggingError(f"{path}: Parquet users need the feature config for the field types; pass --features FILE")
    for chunk in read_chunks(path, _READ_BATCH):
        missing = [c for c in (user_id_column, *(f.name for f in user_fields)) if c not in chunk.values]
        if missing:
            raise TaggingError(f"{path}: no column(s) {missing}; fix: add them, or pass the matching --features file")
        for i in range(chunk.num_rows):
            feats = {}
            for spec in user_fields:
                v = chunk.values[spec.name][i]
                values = split_values(v, spec.separator) if spec.kind == MULTI_VALUED else ([] if v is None else [v])
                if not values:
                    continue
                if spec.kind == NUMERIC:
                    if not all(is_number(x) for x in values):
                        raise TaggingError(
                            f"{path} {chunk.where(i)}, column '{spec.name}': {v!r} is not a number (a numeric "
                            "field); fix: write a number, or leave it empty for a missing value"
                        )
                    feats[spec.name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                else:
                    text = [id_text(x).encode() for x in values]
                    feats[spec.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=text))
            example = tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
            yield str(chunk.values[user_id_column][i]), example


def iter_user_records(
    path: str, user_fields: Sequence[FieldSpec] | None, user_id_column: str = "user_id"
) -> Iterator[tuple[str, bytes]]:
    """``(user_id, serialized tf.Example)`` for every row of one CSV, Parquet or TFRecord file.

    TFRecord rows are passed on as they are (the SavedModel parses the fields it needs); CSV rows
    become ``tf.Example`` with the ``user_fields`` (their kinds come from the feature config).
    """
    if path.endswith(".csv"):
        if user_fields is None:
            raise TaggingError(
                f"{path}: CSV users need the feature config for the field types; pass --features FILE "
                "(features.yaml as written by `mvke-tf data synth`) or use TFRecord users"
            )
        rows = _csv_rows(path)
        first = next(rows, None)
        if first is None:
            return
        header = first[1]
        missing = [c for c in (user_id_column, *(f.name for f in user_fields)) if c not in header]
        if missing:
            raise TaggingError(
                f"{path}: CSV header lacks column(s) {missing}; fix: add them, or pass the --features file "
                "that describes this data (and --user-id-column)"
            )
        uid = header.index(user_id_column)
        columns = [(header.index(f.name), f) for f in user_fields]
        for n, row in rows:
            if len(row) != len(header):
                raise TaggingError(
                    f"{path}: line {n} has {len(row)} columns, the header {len(header)}; "
                    "fix: give every row one value per header column (quote values holding commas)"
                )
            yield row[uid], _csv_example(row, columns, f"{path}: line {n}")
        return
    if path.endswith(".parquet"):
        yield from _parquet_user_records(path, user_fields, user_id_column)
        return
    ds = tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else None)
    # The user id as a string, whether the file stores it as bytes or as an integer.
    spec = {user_id_column: tf.io.RaggedFeature(tf.string)}
    batches = iter(ds.batch(_READ_BATCH))
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except tf.errors.OpError as e:  # DataLossError for garbage or a compression that does not match the name
            # TensorFlow wraps the reason in the op's names: "{{function_node ...}} <reason> [Op:IteratorGetNext]".
            reason = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", e.message.splitlines()[0]).strip()
            raise TaggingError(
                f"{path}: not a readable TFRecord file ({reason}); "
                "fix: give TFRecord files of tf.Example, GZIP-compressed exactly when named *.gz, or CSV files"
            ) from None
        try:
            parsed = tf.io.parse_example(batch, spec)[user_id_column]
        except tf.errors.InvalidArgumentError:
            spec = {user_id_column: tf.io.RaggedFeature(tf.int64)}
            try:
                parsed = tf.strings.as_string(tf.io.parse_example(batch, spec)[user_id_column])
            except tf.errors.InvalidArgumentError as e:
                raise TaggingError(f"{path}: cannot read the '{user_id_column}' feature as an id: {e.message}") from e
        ids = parsed.to_tensor(default_value="", shape=[None, 1])[:, 0].numpy()
        for uid, record in zip(ids, batch.numpy()):
            if not uid:
                raise TaggingError(f"{path}: a record lacks the '{user_id_column}' feature")
            yield uid.decode(), record


def resolve_user_fields(
    users_files: Sequence[str], model: TaggingModel, features: str | os.PathLike | FeatureConfig | None
) -> list[FieldSpec] | None:
    """The user fields to build ``tf.Example`` from CSV rows (``None`` for TFRecord input)."""
    if isinstance(features, FeatureConfig):
        return list(features.user_fields)
    if features is not None:
        if not Path(features).exists():
            raise FileNotFoundError(f"--features {features}: no such file")
        return list(FeatureConfig.from_yaml(features).user_fields)
    if not users_files[0].endswith((".csv", ".parquet")):
        return None
    fc = _find_feature_config(os.path.dirname(users_files[0]))
    if fc is None:
        raise TaggingError(
            f"--users {users_files[0]}: CSV input needs the field types; fix: pass --features features.yaml"
        )
    return list(fc.user_fields)


def _new_user_batches(
    path: str, user_fields: Sequence[FieldSpec] | None, user_id_column: str, seen: set[str], batch_size: int
) -> Iterator[tuple[list[str], list[bytes]]]:
    """Batches of users of one file not ``seen`` before (``seen`` is updated)."""
    ids: list[str] = []
    examples: list[bytes] = []
    for uid, ex in iter_user_records(path, user_fields, user_id_column):
        if uid in seen:
            continue
        seen.add(uid)
        ids.append(uid)
        examples.append(ex)
        if len(ids) >= batch_size:
            yield ids, examples
            ids, examples = [], []
    if ids:
        yield ids, examples
