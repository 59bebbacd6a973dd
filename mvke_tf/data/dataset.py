"""``tf.data`` input pipelines over CSV, Parquet or TFRecord files.

A field's kind in the feature config decides how it is read, whatever the file's type
(:mod:`mvke_tf.data.table`): a categorical or multi-valued field may be stored as integers or strings
(``25`` reads as ``"25"``), a numeric one as integers or floats. Every format yields the same batches:
``(features, labels)`` where ``features`` maps
each field of the :class:`~mvke_tf.config.FeatureConfig` to

* categorical: ``tf.string [batch]``
* numeric: ``tf.float32 [batch]`` (NaN where missing)
* multi_valued: ``tf.string [batch, max_values]`` (padded with ``""``)

and ``labels`` maps each task label to ``tf.float32 [batch]``. Extra columns (e.g.
``user_id``, a label's true probability ``p_<label>``) can be passed through in ``features`` with
``extra_columns``; another column is read as a string unless its file stores it as a number.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from mvke_tf.config import MULTI_VALUED, NUMERIC, FeatureConfig, FieldSpec

_INT_EXTRAS = {"domain"}  # a multi-domain model's domain id (mvke_tf.models.family: dataset_columns)


def resolve_files(pattern: str | Path | Sequence[str | Path]) -> list[str]:
    """Expands a glob, a directory (its ``part-*`` files) or a list into file paths."""
    if isinstance(pattern, (list, tuple)):
        files = [f for p in pattern for f in resolve_files(p)]
    else:
        p = Path(pattern)
        if p.is_dir():
            files = []
            for pattern in ("part-*.csv", "part-*.parquet", "part-*.tfrecord*"):
                files = files or sorted(glob.glob(str(p / pattern)))
        else:
            files = sorted(glob.glob(str(p)))
    if not files:
        raise FileNotFoundError(f"no data files match {pattern!s}; generate them with `mvke-tf data synth`")
    kinds = {_kind(f) for f in files}
    if len(kinds) > 1:
        raise ValueError(f"{pattern!s} mixes {' and '.join(sorted(kinds))} files; fix: pass one format")
    return files


def has_column(files: str | Path | Sequence[str | Path], name: str) -> bool:
    """Whether the data has column ``name``: in the CSV header, or in the first TFRecord example."""
    first = resolve_files(files)[0]
    if _kind(first) == "csv":
        return name in _read_header(first)
    if _kind(first) == "parquet":
        import pyarrow.parquet as pq

        return name in pq.ParquetFile(first).schema_arrow.names
    compression = "GZIP" if first.endswith(".gz") else ""
    for record in tf.data.TFRecordDataset(first, compression_type=compression).take(1):
        return name in tf.train.Example.FromString(record.numpy()).features.feature
    return False


def _kind(path: str) -> str:
    if path.endswith(".csv"):
        return "csv"
    if path.endswith(".parquet"):
        return "parquet"
    if ".tfrecord" in path:
        return "tfrecord"
    raise ValueError(f"{path}: unknown format; fix: give .csv, .parquet or .tfrecord[.gz] files")


def _column_dtype(config: FeatureConfig, name: str) -> tf.DType:
    if name in config.labels or name in _INT_EXTRAS:
        return tf.int64
    if name.startswith("p_") and name[2:] in config.labels:  # a label's true probability, where data has one
        return tf.float32
    try:
        spec = config.field(name)
    except KeyError:
        return tf.string
    return tf.float32 if spec.kind == NUMERIC else tf.string


def stored_types(path: str) -> dict[str, str]:
    """``{feature: "bytes_list" | "int64_list" | "float_list"}`` of the first ``tf.Example`` of a TFRecord file."""
    compression = "GZIP" if path.endswith(".gz") else ""
    for record in tf.data.TFRecordDataset(path, compression_type=compression).take(1):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        return {n: f.WhichOneof("kind") for n, f in features.items() if f.WhichOneof("kind")}
    return {}


def example_parse_spec(
    config: FeatureConfig, columns: Sequence[str] | None = None, stored: Mapping[str, str] | None = None
) -> dict:
    """``tf.io.parse_example`` features for ``columns`` (default: the model's features).

    Multi-valued fields parse to ragged strings; a missing numeric is NaN, a missing
    categorical ``""``; labels are required. ``stored`` (:func:`stored_types`): a feature field stored
    as another type than its kind reads as (ids as integers, numbers as integers) parses as what is
    stored, ragged, for :func:`read_as_kind` to convert.
    """
    spec = {}
    columns = columns if columns is not None else config.feature_names
    mistyped = _mistyped(config, stored or {}, columns)
    for n in columns:
        dt = _column_dtype(config, n)
        if n in mistyped:
            spec[n] = tf.io.RaggedFeature({"int64_list": tf.int64, "float_list": tf.float32}.get(stored[n], tf.string))
        elif n in config.feature_names and config.field(n).kind == MULTI_VALUED:
            spec[n] = tf.io.RaggedFeature(tf.string)
        elif dt == tf.float32:
            spec[n] = tf.io.FixedLenFeature([], tf.float32, default_value=math.nan)
        elif n in config.labels:
            spec[n] = tf.io.FixedLenFeature([], tf.int64)
        else:
            spec[n] = tf.io.FixedLenFeature([], dt, default_value=0 if dt == tf.int64 else "")
    return spec


_STORED = {tf.string: "bytes_list", tf.float32: "float_list", tf.int64: "int64_list"}


def _mistyped(config: FeatureConfig, stored: Mapping[str, str], columns: Sequence[str]) -> dict[str, tf.DType]:
    """``{column: the dtype it reads as}`` for columns stored as another type (ids as integers, ...)."""
    out = {}
    for n in columns:
        want = _column_dtype(config, n)
        if stored.get(n) and stored[n] != _STORED[want]:
            out[n] = want
    return out


def read_as_kind(
    parsed: dict[str, Any], config: FeatureConfig, stored: Mapping[str, str], columns: Sequence[str]
) -> dict[str, Any]:
    """The typing rule on parsed mistyped columns (see :func:`example_parse_spec`): integer ids -> their decimal
    strings, integer numbers -> float32, each in the layout of its kind (missing: ``""`` / NaN / 0)."""
    out = dict(parsed)
    for n, want in _mistyped(config, stored, columns).items():
        x = out[n]
        if want == tf.string:
            if x.dtype.is_floating:
                x = tf.cast(x, tf.int64)  # ids stored as whole floats
            x = tf.strings.as_string(x)
            if n in config.feature_names and config.field(n).kind == MULTI_VALUED:
                out[n] = x
                continue
            default: Any = ""
        else:
            x = tf.cast(x, want)
            default = math.nan if want == tf.float32 else 0
        out[n] = x.to_tensor(default_value=default, shape=[None, 1])[:, 0]
    return out


def fields_parse_spec(
    fields: Sequence[FieldSpec], extra: Mapping[str, tf.io.FixedLenFeature] | None = None
) -> dict[str, Any]:
    """``tf.io.parse_example`` features of ``fields``: a missing categorical is ``""``, a missing number
    NaN, a multi-valued field a ragged list; ``extra``: more features (a ranker's dense inputs, the
    domain id), as they are."""
    spec: dict[str, Any] = {}
    for f in fields:
        if f.kind == MULTI_VALUED:
            spec[f.name] = tf.io.RaggedFeature(tf.string)
        elif f.kind == NUMERIC:
            spec[f.name] = tf.io.FixedLenFeature([], tf.float32, default_value=math.nan)
        else:
            spec[f.name] = tf.io.FixedLenFeature([], tf.string, default_value="")
    spec.update(extra or {})
    return spec


def parse_fields(
    serialized: tf.Tensor, fields: Sequence[FieldSpec], extra: Mapping[str, tf.io.FixedLenFeature] | None = None
) -> dict[str, tf.Tensor]:
    """Serialized ``tf.Example`` ``[B]`` -> ``{field: [B]}`` (multi-valued: ``[B, max_values]``, cut and
    padded with ``""``) plus ``extra``'s features."""
    parsed = tf.io.parse_example(serialized, fields_parse_spec(fields, extra))
    for f in fields:
        if f.kind == MULTI_VALUED:
            parsed[f.name] = parsed[f.name].to_tensor(default_value="", shape=[None, f.max_values])
    return parsed


def _finish(config: FeatureConfig, batch: dict[str, tf.Tensor], extra: Sequence[str]):
    """Splits a parsed batch into (features, labels) with the documented shapes."""
    features: dict[str, tf.Tensor] = {}
    for spec in (*config.user_fields, config.tag_field):
        x = batch[spec.name]
        if spec.kind == MULTI_VALUED:
            if isinstance(x, tf.RaggedTensor):
                x = x.to_tensor(default_value="", shape=[None, spec.max_values])
            else:  # already a padded dense tensor
                x = x[:, : spec.max_values]
                x = tf.pad(x, [[0, 0], [0, spec.max_values - tf.shape(x)[1]]], constant_values="")
        features[spec.name] = x
    for name in extra:
        features[name] = batch[name]
    labels = {t: tf.cast(batch[t], tf.float32) for t in config.labels if t in batch}
    return features, labels


def _shuffle_repeat_batch(
    ds: tf.data.Dataset, shuffle: bool, buffer: int, seed: int, num_epochs: int | None, batch_size: int
) -> tf.data.Dataset:
    # Shuffling single records before batching; parsing happens per batch (vectorized).
    if shuffle:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.repeat(num_epochs).batch(batch_size)


def _read_header(path: str) -> list[str]:
    opener = tf.io.gfile.GFile(path, "r")
    with opener as f:
        return f.readline().rstrip("\r\n").split(",")


def _split_multi_valued(config: FeatureConfig, names: Sequence[str]):
    """Columns (a tuple in ``names`` order, or a dict) -> a dict whose multi-valued fields, stored joined by their
    separator, are split into ragged lists."""
    multi = {s.name: s.separator for s in (*config.user_fields, config.tag_field) if s.kind == MULTI_VALUED}

    def to_dict(*columns):
        out = dict(columns[0]) if len(columns) == 1 and isinstance(columns[0], dict) else dict(zip(names, columns))
        for name, sep in multi.items():
            if name in out:
                parts = tf.strings.split(out[name], sep)
                # "" splits to [""]: drop empty pieces so an empty list stays empty.
                out[name] = tf.ragged.boolean_mask(parts, tf.not_equal(parts, ""))
        return out

    return to_dict


def _parquet_dataset(paths: Sequence[str], config: FeatureConfig, wanted: Sequence[str]) -> tf.data.Dataset:
    """Rows of Parquet files as the CSV reader yields them (one element per row): ids as strings (integers as their
    decimal strings), lists joined by the field's separator, numbers float32 (NaN missing), labels int64."""
    import numpy as np

    from mvke_tf.data.table import check_rows, id_text, read_chunks, split_values

    dtypes = {n: _column_dtype(config, n) for n in wanted}
    multi = {s.name: s.separator for s in (*config.user_fields, config.tag_field) if s.kind == MULTI_VALUED}

    def chunks():
        for path in paths:
            for rows in read_chunks(path, 8192):
                problems = check_rows(rows, config)
                if problems:
                    raise ValueError(problems[0])
                out = {}
                for n in wanted:
                    values = rows.values[n]
                    if n in multi:
                        out[n] = np.array(
                            [multi[n].join(id_text(x) for x in split_values(v, multi[n])) for v in values]
                        )
                    elif dtypes[n] == tf.string:
                        out[n] = np.array(["" if v is None else id_text(v) for v in values], dtype=object)
                    elif dtypes[n] == tf.float32:
                        out[n] = np.array([math.nan if v is None else v for v in values], dtype=np.float32)
                    else:
                        out[n] = np.array([0 if v is None else v for v in values], dtype=np.int64)
                yield out

    signature = {n: tf.TensorSpec([None], dtypes[n]) for n in wanted}
    return tf.data.Dataset.from_generator(chunks, output_signature=signature).unbatch()


def make_dataset(
    files: str | Path | Sequence[str | Path],
    config: FeatureConfig,
    batch_size: int = 2048,
    shuffle: bool = False,
    num_epochs: int | None = 1,
    extra_columns: Sequence[str] = (),
    seed: int = 0,
    shuffle_buffer: int = 100_000,
) -> tf.data.Dataset:
    """Batched ``(features, labels)`` dataset over CSV, Parquet or (gzipped) TFRecord files.

    Args:
      files: a directory of ``part-*`` files, a glob, or a list of files (one format).
      config: which columns are features and labels.
      batch_size: examples per batch (the last batch may be smaller).
      shuffle: shuffle examples (for training).
      num_epochs: passes over the data; ``None`` repeats forever.
      extra_columns: other columns to pass through in ``features``.
      seed: shuffle seed.
      shuffle_buffer: examples held for shuffling.
    """
    paths = resolve_files(files)
    kind = _kind(paths[0])
    wanted = [*config.feature_names, *config.labels, *extra_columns]
    if kind == "csv":
        header = _read_header(paths[0])
        missing = [c for c in wanted if c not in header]
        if missing:
            raise ValueError(f"{paths[0]}: CSV header lacks column(s) {missing}")
        cols = sorted(header.index(c) for c in wanted)
        names = [header[i] for i in cols]
        defaults = []
        for n in names:
            dt = _column_dtype(config, n)
            # Labels are required (no default): a missing label fails loudly.
            if n in config.labels:
                defaults.append(tf.constant([], tf.int64))
            elif dt == tf.float32:
                defaults.append(tf.constant([math.nan], tf.float32))
            elif dt == tf.int64:
                defaults.append(tf.constant([0], tf.int64))
            else:
                defaults.append(tf.constant([""], tf.string))
        ds = tf.data.experimental.CsvDataset(paths, defaults, header=True, select_cols=cols)
        ds = _shuffle_repeat_batch(ds, shuffle, shuffle_buffer, seed, num_epochs, batch_size)
        ds = ds.map(_split_multi_valued(config, names), num_parallel_calls=tf.data.AUTOTUNE)
    elif kind == "parquet":
        ds = _parquet_dataset(paths, config, wanted)
        ds = _shuffle_repeat_batch(ds, shuffle, shuffle_buffer, seed, num_epochs, batch_size)
        ds = ds.map(_split_multi_valued(config, wanted), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        stored = stored_types(paths[0])
        spec = example_parse_spec(config, wanted, stored)
        ds = tf.data.TFRecordDataset(paths, compression_type="GZIP" if paths[0].endswith(".gz") else None)
        ds = _shuffle_repeat_batch(ds, shuffle, shuffle_buffer, seed, num_epochs, batch_size)
        ds = ds.map(
            lambda s: read_as_kind(tf.io.parse_example(s, spec), config, stored, wanted),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    ds = ds.map(lambda b: _finish(config, b, extra_columns), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
