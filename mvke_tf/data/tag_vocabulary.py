"""The tag vocabulary: a file of one tag per line, or every tag in the tag column of data files.

Read the same way by the batch tagging job (``mvke-tf tag-users --tags`` / ``--tags-from-data``) and by the
export's ``top_tags`` signature (:func:`resolve_tag_vocabulary`), so both score the same tags. Every error
names the file, the line or column, and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from mvke_tf.config import MULTI_VALUED, FeatureConfig, FieldSpec
from mvke_tf.data.dataset import resolve_files
from mvke_tf.data.table import csv_rows, read_chunks, split_values

DEFAULT_TAG_FIELD = "tags"  # the tag column when no feature config is found
_READ_BATCH = 4096
_TAGS_FIX = "fix: give UTF-8 CSV files with a header row that names the tag column"


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
            raise ValueError(
                f"--tags {path}: line {number} is not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                "fix: give a UTF-8 text file of one tag per line"
            ) from None
    text = data.decode("utf-8")
    tags = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if not tags:
        raise ValueError(f"--tags {path}: no tags in the file (one tag per line)")
    return tags


def find_feature_config(start: str) -> FeatureConfig | None:
    """``features.yaml`` in ``start`` or up to two directories above it (the ``data synth`` layout)."""
    d = Path(start)
    for cand in (d, d.parent, d.parent.parent):
        if (cand / "features.yaml").exists():
            return FeatureConfig.from_yaml(cand / "features.yaml")
    return None


def data_files(path: str) -> list[str]:
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
    files = data_files(path)
    fc = feature_config or find_feature_config(path if tf.io.gfile.isdir(path) else os.path.dirname(files[0]))
    field = fc.tag_field if fc else FieldSpec(DEFAULT_TAG_FIELD, MULTI_VALUED, max_values=8)
    tags: set[str] = set()
    for f in files:
        if f.endswith(".csv"):
            rows = csv_rows(f, _TAGS_FIX)
            _, header = next(rows, (0, []))
            if field.name not in header:
                raise ValueError(f"--tags-from-data: {f} has no '{field.name}' column")
            col = header.index(field.name)
            for n, row in rows:
                if len(row) != len(header):
                    raise ValueError(
                        f"--tags-from-data: {f}: line {n} has {len(row)} columns, the header {len(header)}; "
                        "fix: give every row one value per header column (quote values holding commas)"
                    )
                tags.update(t for t in row[col].split(field.separator) if t)
        elif f.endswith(".parquet"):
            for chunk in read_chunks(f, _READ_BATCH):
                if field.name not in chunk.values:
                    raise ValueError(f"--tags-from-data: {f} has no '{field.name}' column")
                tags.update(str(t) for v in chunk.values[field.name] for t in split_values(v, field.separator))
        else:
            ds = tf.data.TFRecordDataset(f, compression_type="GZIP" if f.endswith(".gz") else None)
            spec = {field.name: tf.io.RaggedFeature(tf.string)}
            for batch in ds.batch(_READ_BATCH):
                values = tf.io.parse_example(batch, spec)[field.name].flat_values.numpy()
                tags.update(v.decode() for v in values if v)
    if not tags:
        raise ValueError(f"--tags-from-data {path}: no tags found in column '{field.name}'")
    return sorted(tags)


# A list of tags, a file of one tag per line, or a data directory whose tag column is read.
TagVocabulary = Sequence[str] | str | os.PathLike


def resolve_tag_vocabulary(source: TagVocabulary, feature_config: FeatureConfig | None = None) -> list[str]:
    """The tags of ``source`` as ``mvke-tf tag-users`` reads them: a file (``--tags``: one per line) or a
    data directory (``--tags-from-data``: every tag of its tag column, sorted); a list as it is.
    Duplicates are dropped, the first occurrence kept (``tag-users`` does the same)."""
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        tags = tags_from_data(path, feature_config) if tf.io.gfile.isdir(path) else read_tags(path)
    else:
        tags = [t.decode() if isinstance(t, bytes) else str(t) for t in source]
    tags = list(dict.fromkeys(tags))
    if not tags:
        raise ValueError("tags: the top_tags vocabulary is empty; fix: give at least one tag")
    return tags


__all__ = [
    "DEFAULT_TAG_FIELD",
    "TagVocabulary",
    "data_files",
    "find_feature_config",
    "read_tags",
    "resolve_tag_vocabulary",
    "tags_from_data",
]
