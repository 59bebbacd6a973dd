"""``tf.data`` input pipelines over the generated CSV or TFRecord files.

Both formats yield the same batches: ``(features, labels)`` where ``features`` maps
each field of the :class:`~mvke_tf.config.FeatureConfig` to

* categorical: ``tf.string [batch]``
* numeric: ``tf.float32 [batch]`` (NaN where missing)
* multi_valued: ``tf.string [batch, max_values]`` (padded with ``""``)

and ``labels`` maps each task label to ``tf.float32 [batch]``. Extra columns (e.g.
``user_id``, ``p_click``) can be passed through in ``features`` with ``extra_columns``.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from mvke_tf.config import MULTI_VALUED, NUMERIC, FeatureConfig, FieldSpec

_FLOAT_EXTRAS = {"p_click", "p_conversion"}
_INT_EXTRAS = {"day", "domain"}  # the multi-domain data's domain id (mvke_tf.data.multidomain)


def resolve_files(pattern: str | Path | Sequence[str | Path]) -> list[str]:
    """Expands a glob, a directory (its ``part-*`` files) or a list into file paths."""
    if isinstance(pattern, (list, tuple)):
        files = [f for p in pattern for f in resolve_files(p)]
    else:
        p = Path(pattern)
        if p.is_dir():
            files = sorted(glob.glob(str(p / "part-*.csv"))) or sorted(glob.glob(str(p / "part-*.tfrecord*")))
        else:
            files = sorted(glob.glob(str(p)))
    if not files:
        raise FileNotFoundError(f"no data files match {pattern!s}; generate them with `mvke-tf data synth`")
    kinds = {_kind(f) for f in files}
    if len(kinds) > 1:
        raise ValueError(f"{pattern!s} mixes CSV and TFRecord files; pass one format")
    return files


def has_column(files: str | Path | Sequence[str | Path], name: str) -> bool:
    """Whether the data has column ``name``: in the CSV header, or in the first TFRecord example."""
    first = resolve_files(files)[0]
    if _kind(first) == "csv":
        return name in _read_header(first)
    compression = "GZIP" if first.endswith(".gz") else ""
    for record in tf.data.TFRecordDataset(first, compression_type=compression).take(1):
        return name in tf.train.Example.FromString(record.numpy()).features.feature
    return False


def _kind(path: str) -> str:
    if path.endswith(".csv"):
        return "csv"
    if ".tfrecord" in path:
        return "tfrecord"
    raise ValueError(f"{path}: unknown format; expected a .csv or .tfrecord[.gz] file")


def _column_dtype(config: FeatureConfig, name: str) -> tf.DType:
    if name in config.labels or name in _INT_EXTRAS:
        return tf.int64
    if name in _FLOAT_EXTRAS:
        return tf.float32
    try:
        spec = config.field(name)
    except KeyError:
        return tf.string
    return tf.float32 if spec.kind == NUMERIC else tf.string


def example_parse_spec(config: FeatureConfig, columns: Sequence[str] | None = None) -> dict:
    """``tf.io.parse_example`` features for ``columns`` (default: the model's features).

    Multi-valued fields parse to ragged strings; a missing numeric is NaN, a missing
    categorical ``""``; labels are required.
    """
    spec = {}
    for n in columns if columns is not None else config.feature_names:
        dt = _column_dtype(config, n)
        if n in config.feature_names and config.field(n).kind == MULTI_VALUED:
            spec[n] = tf.io.RaggedFeature(tf.string)
        elif dt == tf.float32:
            spec[n] = tf.io.FixedLenFeature([], tf.float32, default_value=math.nan)
        elif n in config.labels:
            spec[n] = tf.io.FixedLenFeature([], tf.int64)
        else:
            spec[n] = tf.io.FixedLenFeature([], dt, default_value=0 if dt == tf.int64 else "")
    return spec


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


def parse_examples(serialized: tf.Tensor, config: FeatureConfig) -> dict[str, tf.Tensor]:
    """Serialized ``tf.Example`` ``[batch]`` -> the model's feature dict (padded, dense)."""
    return parse_fields(serialized, (*config.user_fields, config.tag_field))


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
    """Batched ``(features, labels)`` dataset over CSV or gzipped TFRecord files.

    Args:
      files: a directory of ``part-*`` files, a glob, or a list of files.
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
        multi = {s.name: s.separator for s in (*config.user_fields, config.tag_field) if s.kind == MULTI_VALUED}

        def to_dict(*columns):
            out = dict(zip(names, columns))
            for name, sep in multi.items():
                parts = tf.strings.split(out[name], sep)
                # "" splits to [""]: drop empty pieces so an empty list stays empty.
                out[name] = tf.ragged.boolean_mask(parts, tf.not_equal(parts, ""))
            return out

        ds = ds.map(to_dict, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        spec = example_parse_spec(config, wanted)
        ds = tf.data.TFRecordDataset(paths, compression_type="GZIP" if paths[0].endswith(".gz") else None)
        ds = _shuffle_repeat_batch(ds, shuffle, shuffle_buffer, seed, num_epochs, batch_size)
        ds = ds.map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda b: _finish(config, b, extra_columns), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
