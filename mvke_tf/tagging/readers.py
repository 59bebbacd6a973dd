"""Input readers of the tagging job: the users files (CSV, Parquet, TFRecord of ``tf.Example``) as ``(user_id,
serialized tf.Example)``, and their field types. The tag vocabulary is read by :mod:`mvke_tf.data.tag_vocabulary`
(the export's ``top_tags`` reads it there too).

Every error names the file, the line or row, and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import tensorflow as tf

from mvke_tf.config import MULTI_VALUED, NUMERIC, FeatureConfig, FieldSpec
from mvke_tf.data.dataset import resolve_files
from mvke_tf.data.table import csv_rows, id_text, is_number, read_chunks, split_values
from mvke_tf.data.tag_vocabulary import find_feature_config
from mvke_tf.tagging.errors import TaggingError

if TYPE_CHECKING:
    from mvke_tf.tagging.scoring import TaggingModel

_USERS_FIX = (
    "fix: give UTF-8 CSV files with a header row (the user id and user feature columns) or TFRecord files of tf.Example"
)
DEFAULT_USER_ID = "user_id"
_READ_BATCH = 4096


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
        fc = find_feature_config(os.path.dirname(first))
    return fc.user_id if fc is not None and fc.user_id else DEFAULT_USER_ID


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
        rows = csv_rows(path, _USERS_FIX)
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
    fc = find_feature_config(os.path.dirname(users_files[0]))
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
