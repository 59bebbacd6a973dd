"""Pure-TF building blocks of the Transform step (no TFX / TFT imports here).

``mvke_tf.pipelines.preprocessing`` (TFX Transform) turns raw columns into integer ids with these
functions; :func:`transformed_feature_config` describes the result as a
:class:`~mvke_tf.config.FeatureConfig` whose every field is integer ids, so
``build_model(transformed_feature_config(fc, ...), model_config)`` trains on Transform's
output unchanged (:class:`~mvke_tf.layers.embedding.FieldEmbedding` takes integer ids
modulo ``hash_buckets``, ``-1`` meaning missing).

Conventions of the transformed features:

* categorical: ``int64 [B]``, ``to_hash_bucket_fast(value, hash_buckets)``; a missing or
  empty value is ``-1`` (embedded as row 0, like any other id; it is a single field).
* multi_valued: ``int64 [B, max_values]`` hashed ids, padded / missing ``-1`` (masked out).
  With ``hierarchy_separator`` each value contributes the ids of its path prefixes
  (``t11``, ``t11_3``, ``t11_3_2``, ...), ``HIERARCHY_DEPTH`` of them (shorter paths
  padded with ``-1``), flattened to ``int64 [B, max_values * HIERARCHY_DEPTH]``; the
  model's masked mean over that row is the library's mean over values and prefixes.
* numeric: ``int64 [B]`` bucket: ``0`` when missing, else ``1 + quantile bucket``.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, FeatureConfig, FieldSpec

DEFAULT_NUM_BUCKETS = 10
"""Quantile buckets per numeric field (its transformed field has ``DEFAULT_NUM_BUCKETS + 1`` ids)."""

CONFIG_BOUNDARIES = 0
"""``num_buckets`` value that bucketizes each numeric field at its feature config ``boundaries`` (the library's
reading of the field, e.g. the deciles ``mvke-tf data describe`` wrote) instead of quantiles Transform computes."""

# Path prefixes kept per hierarchical id; the same depth the library's string path uses.
HIERARCHY_DEPTH = 4
MISSING_ID = -1


def to_dense_column(x: tf.Tensor | tf.SparseTensor, default: str | float | int) -> tf.Tensor:
    """A raw column ``[B]``, ``[B, 1]`` or sparse ``[B, (0|1)]`` -> dense ``[B]``.

    CSV ExampleGen leaves a cell out when it is empty, so columns with missing values
    reach Transform as ``SparseTensor``; missing rows get ``default``.
    """
    if isinstance(x, tf.SparseTensor):
        dense_shape = tf.stack([x.dense_shape[0], tf.constant(1, tf.int64)])
        x = tf.sparse.to_dense(tf.SparseTensor(x.indices, x.values, dense_shape), default_value=default)
    if x.shape.rank == 2:
        x = tf.squeeze(x, axis=1) if x.shape[1] == 1 else x[:, 0]
    return x


def id_strings(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor | tf.SparseTensor:
    """A raw id column of any physical type -> the same column of strings (dense or sparse as given).

    A field's kind in the feature config decides how it is read, not the file's type: a categorical or
    multi-valued field whose values are integers (an age, a zip code, an occupation code) is read as
    their decimal strings, ``25`` as ``"25"``, as a CSV cell holding ``25`` is. Schema inference types such
    a column ``INT``, and the hashing takes strings only.
    """
    if isinstance(x, tf.SparseTensor):
        if x.values.dtype == tf.string:
            return x
        return tf.SparseTensor(x.indices, tf.strings.as_string(x.values), x.dense_shape)
    return x if x.dtype == tf.string else tf.strings.as_string(x)


def float_column(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor | tf.SparseTensor:
    """A raw numeric column of any physical type -> float32 (dense or sparse as given): a numeric field's
    integer values (an age, an amount in whole units; schema inference types the column ``INT``) read as
    numbers, and a missing one can then be NaN."""
    if isinstance(x, tf.SparseTensor):
        return tf.SparseTensor(x.indices, tf.cast(x.values, tf.float32), x.dense_shape)
    return tf.cast(x, tf.float32)


def joined_column(x: tf.Tensor | tf.SparseTensor, separator: str) -> tf.Tensor:
    """A multi-valued raw column -> ``separator``-joined strings ``[B]`` (``""`` where empty).

    CSV rows hold the list already joined (one string per row); ``tf.train.Example`` rows may hold
    it as a list of strings (a sparse ``[B, (n)]`` column in Transform, or dense ``[B, n]``), or of
    integers (:func:`id_strings`).
    """
    x = id_strings(x)
    if isinstance(x, tf.SparseTensor):
        return tf.strings.reduce_join(tf.RaggedTensor.from_sparse(x), axis=1, separator=separator)
    if x.shape.rank == 2:
        return tf.strings.reduce_join(x, axis=1, separator=separator)
    return x


def categorical_ids(values: tf.Tensor, spec: FieldSpec) -> tf.Tensor:
    """Strings ``[B]`` -> hashed ``int64 [B]`` ids, ``-1`` where empty."""
    ids = tf.strings.to_hash_bucket_fast(values, spec.hash_buckets)
    return tf.where(tf.equal(values, ""), tf.constant(MISSING_ID, tf.int64), ids)


def width(spec: FieldSpec) -> int:
    """Columns of a transformed multi_valued field (``max_values``, times depth if hierarchical)."""
    return spec.max_values * (HIERARCHY_DEPTH if spec.hierarchy_separator else 1)


def multi_valued_ids(joined: tf.Tensor, spec: FieldSpec) -> tf.Tensor:
    """``separator``-joined strings ``[B]`` -> ``int64 [B, width(spec)]`` ids, ``-1`` padded."""
    values = tf.strings.split(joined, spec.separator)  # ragged [B, (n)]
    values = tf.ragged.boolean_mask(values, tf.not_equal(values, ""))
    values = values[:, : spec.max_values].to_tensor(default_value="", shape=[None, spec.max_values])
    present = tf.not_equal(values, "")
    if not spec.hierarchy_separator:
        ids = tf.strings.to_hash_bucket_fast(values, spec.hash_buckets)
        return tf.where(present, ids, tf.constant(MISSING_ID, tf.int64))
    parts = tf.strings.split(values, spec.hierarchy_separator)  # ragged [B, max_values, (levels)]
    parts = parts[:, :, :HIERARCHY_DEPTH].to_tensor(default_value="", shape=[None, spec.max_values, HIERARCHY_DEPTH])
    prefixes, masks = [], []
    for k in range(1, HIERARCHY_DEPTH + 1):
        prefixes.append(tf.strings.reduce_join(parts[..., :k], axis=-1, separator=spec.hierarchy_separator))
        masks.append(tf.logical_and(present, tf.not_equal(parts[..., k - 1], "")))
    ids = tf.strings.to_hash_bucket_fast(tf.stack(prefixes, axis=-1), spec.hash_buckets)
    ids = tf.where(tf.stack(masks, axis=-1), ids, tf.constant(MISSING_ID, tf.int64))
    return tf.reshape(ids, [-1, width(spec)])


def config_buckets(values: tf.Tensor, spec: FieldSpec) -> tf.Tensor:
    """Floats ``[B]`` -> bucket ``[B]`` at ``spec.boundaries`` (``0`` below the first), as the library's
    embedding bucketizes; for :func:`numeric_bucket_ids`."""
    return tf.raw_ops.Bucketize(input=tf.cast(values, tf.float32), boundaries=list(spec.boundaries))


def numeric_bucket_ids(values: tf.Tensor, buckets: tf.Tensor) -> tf.Tensor:
    """``0`` where ``values`` is NaN, else ``buckets + 1`` (``buckets`` from a bucketizer)."""
    shifted = tf.cast(buckets, tf.int64) + 1
    return tf.where(tf.math.is_nan(tf.cast(values, tf.float32)), tf.zeros_like(shifted), shifted)


def transformed_feature_config(config: FeatureConfig, num_buckets: int) -> FeatureConfig:
    """The :class:`FeatureConfig` of Transform's output: every field integer ids.

    Args:
      config: the raw feature config.
      num_buckets: quantile buckets per numeric field (``tft.bucketize``'s ``num_buckets``); 0: the
        field's own ``boundaries`` (:data:`CONFIG_BOUNDARIES`, as the library reads the field).

    Returns:
      Numeric fields become categorical with ``hash_buckets = num_buckets + 1`` (bucket 0
      is missing; with ``num_buckets=0`` ``len(boundaries) + 2``, the field's ``vocab_size``);
      multi_valued fields get ``max_values = width(spec)`` and no
      ``hierarchy_separator``; categorical fields are unchanged.
    """
    if num_buckets < 0:
        raise ValueError(f"num_buckets={num_buckets} must be >= 1, or 0 for the fields' own boundaries")

    def convert(spec: FieldSpec) -> FieldSpec:
        if spec.kind == NUMERIC:
            buckets = num_buckets + 1 if num_buckets != CONFIG_BOUNDARIES else spec.vocab_size
            return FieldSpec(spec.name, CATEGORICAL, hash_buckets=buckets, group=spec.group)
        if spec.kind == MULTI_VALUED:
            return dataclasses.replace(spec, max_values=width(spec), hierarchy_separator="")
        return spec

    return dataclasses.replace(
        config,
        user_fields=tuple(convert(f) for f in config.user_fields),
        tag_field=convert(config.tag_field),
    )


__all__ = [
    "HIERARCHY_DEPTH",
    "MISSING_ID",
    "CONFIG_BOUNDARIES",
    "categorical_ids",
    "config_buckets",
    "float_column",
    "id_strings",
    "multi_valued_ids",
    "numeric_bucket_ids",
    "to_dense_column",
    "transformed_feature_config",
    "width",
]
