"""Field embeddings: raw feature values (or already-hashed ids) to dense vectors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, FieldSpec


def field_ids(spec: FieldSpec, values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Maps one field's raw values to embedding row ids.

    Strings are hashed into ``spec.hash_buckets`` (``to_hash_bucket_fast``, a standard
    op TF Serving has); integers are taken as already-hashed ids (e.g. from Transform)
    and reduced modulo the bucket count; numerics are bucketized by ``spec.boundaries``
    with NaN in bucket 0.

    Args:
      spec: the field.
      values: ``[batch]`` for categorical and numeric fields, ``[batch, max_values]``
        for multi-valued fields (strings padded with ``""``, integer ids padded with -1).

    Returns:
      ``(ids, mask)``: ids shaped like ``values``; for multi-valued fields a float mask
      ``[batch, max_values]`` that is 1 where a value is present, else ``None``. With
      ``hierarchy_separator``, both gain a trailing ``depth`` axis (one id per prefix).
    """
    if spec.kind == NUMERIC:
        x = tf.cast(values, tf.float32)
        bucket = tf.raw_ops.Bucketize(input=x, boundaries=list(spec.boundaries)) + 1
        return tf.where(tf.math.is_nan(x), tf.zeros_like(bucket), bucket), None
    if values.dtype == tf.string:
        present = tf.not_equal(values, "")
        if spec.hierarchy_separator:
            return _hierarchy_ids(spec, values, present)
        ids = tf.strings.to_hash_bucket_fast(values, spec.hash_buckets)
    else:
        ids64 = tf.cast(values, tf.int64)
        present = ids64 >= 0
        ids = tf.math.floormod(tf.maximum(ids64, 0), spec.hash_buckets)
    if spec.kind == MULTI_VALUED:
        return ids, tf.cast(present, tf.float32)
    return ids, None


_MAX_HIERARCHY_DEPTH = 4


def _hierarchy_ids(spec: FieldSpec, values: tf.Tensor, present: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Ids of every path prefix: ``[...]`` -> ``[..., depth]`` plus a float mask.

    ``t11_3_2`` gives the hashed ids of ``t11``, ``t11_3`` and ``t11_3_2``; shorter paths
    are masked out at the missing depths. Only standard string ops (TF Serving has them).
    """
    parts = tf.strings.split(values, spec.hierarchy_separator)  # ragged [..., (levels)]
    dense = parts.to_tensor(default_value="", shape=values.shape.as_list() + [_MAX_HIERARCHY_DEPTH])
    prefixes, masks = [], []
    for k in range(1, _MAX_HIERARCHY_DEPTH + 1):
        prefixes.append(tf.strings.reduce_join(dense[..., :k], axis=-1, separator=spec.hierarchy_separator))
        masks.append(tf.logical_and(present, tf.not_equal(dense[..., k - 1], "")))
    ids = tf.strings.to_hash_bucket_fast(tf.stack(prefixes, axis=-1), spec.hash_buckets)
    mask = tf.cast(tf.stack(masks, axis=-1), tf.float32)
    return ids, mask


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class FieldEmbedding(tf.keras.layers.Layer):
    """Embeds one feature field: ``[batch]`` or ``[batch, max_values]`` -> ``[batch, dim]``.

    Multi-valued fields are mean-pooled over the present values (an empty list gives
    the zero vector); categorical and numeric fields are looked up directly.
    """

    def __init__(self, spec: FieldSpec | Mapping[str, Any], dim: int, l2: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec if isinstance(spec, FieldSpec) else FieldSpec.from_dict(spec)
        self.dim = int(dim)
        self.l2 = float(l2)
        self.table = tf.keras.layers.Embedding(
            self.spec.vocab_size,
            self.dim,
            embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.05),
            embeddings_regularizer=tf.keras.regularizers.l2(self.l2) if self.l2 else None,
            name=f"{self.spec.name}_table",
        )

    def call(self, values: tf.Tensor) -> tf.Tensor:
        ids, mask = field_ids(self.spec, values)
        emb = self.table(ids)
        if mask is None:
            return emb
        if self.spec.hierarchy_separator and values.dtype == tf.string:
            # Flatten [batch, (values,) depth] so one masked mean pools prefixes and values alike.
            emb = tf.reshape(emb, [tf.shape(emb)[0], -1, self.dim])
            mask = tf.reshape(mask, [tf.shape(mask)[0], -1])
        summed = tf.reduce_sum(emb * mask[..., None], axis=-2)
        count = tf.reduce_sum(mask, axis=-1, keepdims=True)
        return summed / tf.maximum(count, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "spec": self.spec.to_dict(), "dim": self.dim, "l2": self.l2}


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class FieldsEmbedding(tf.keras.layers.Layer):
    """Embeds F fields and stacks them: a feature dict -> ``[batch, F, dim]``."""

    def __init__(
        self, specs: Sequence[FieldSpec | Mapping[str, Any]], dim: int, l2: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.specs = tuple(s if isinstance(s, FieldSpec) else FieldSpec.from_dict(s) for s in specs)
        self.dim = int(dim)
        self.l2 = float(l2)
        self.fields = [FieldEmbedding(s, self.dim, self.l2, name=f"emb_{s.name}") for s in self.specs]

    @property
    def num_fields(self) -> int:
        return len(self.specs)

    def call(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        missing = [s.name for s in self.specs if s.name not in features]
        if missing:
            raise KeyError(f"input features lack field(s) {missing}; the model expects {[s.name for s in self.specs]}")
        return tf.stack([layer(features[s.name]) for s, layer in zip(self.specs, self.fields)], axis=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "specs": [s.to_dict() for s in self.specs], "dim": self.dim, "l2": self.l2}


__all__ = ["FieldEmbedding", "FieldsEmbedding", "field_ids", "missing_inputs", "CATEGORICAL", "MULTI_VALUED", "NUMERIC"]


def missing_inputs(
    fields: Sequence[FieldSpec], batch: int = 2, dense_fields: Sequence[str] = ()
) -> dict[str, tf.Tensor]:
    """An all-missing input batch for ``fields`` (and float zeros ``[batch]`` per dense input), with
    the dtypes and shapes :class:`FieldsEmbedding` reads: used to create a model's weights."""
    out: dict[str, tf.Tensor] = {}
    for f in fields:
        if f.kind == NUMERIC:
            out[f.name] = tf.fill([batch], float("nan"))
        elif f.kind == MULTI_VALUED:
            out[f.name] = tf.fill([batch, f.max_values], "")
        else:
            out[f.name] = tf.fill([batch], "")
    for name in dense_fields:
        out[name] = tf.zeros([batch], tf.float32)
    return out
