"""TFX Transform module: ``preprocessing_fn`` driven by the :class:`~mvke_tf.config.FeatureConfig`.

Outputs (see :mod:`mvke_tf.data.transform` for the id conventions):

* every feature field of the config, as integer ids (categorical ``[B]``, multi_valued
  ``[B, width]`` with ``-1`` padding, numeric quantile buckets ``[B]`` with 0 = missing);
* the labels (``click``, ``conversion``) as ``int64 [B]``;
* the user id (``user_id`` of the feature config) and the slice keys (``custom_config["slice_keys"]``)
  that are no feature passed through as strings, when present;
* whatever a column's physical type, its kind decides how it is read: integer-valued categorical and
  multi-valued columns (an ``INT`` column in the inferred schema) are hashed as their decimal strings,
  integer-valued numeric columns bucketized as floats (at Transform's quantiles, or with
  ``num_buckets: 0`` at features.yaml's boundaries, as the library reads them);
* any other field the model family reads (:meth:`mvke_tf.models.family.ModelFamily.input_fields`),
  e.g. a pair-ranking model's item id ``ad_id``, hashed as its field spec says, when the data has it;
* the integer columns the family passes through (:meth:`~mvke_tf.models.family.ModelFamily.dataset_columns`),
  e.g. a multi-domain model's domain id as ``int64 [B]`` (a missing one as -1, which the model rejects).

The feature config comes from ``custom_config["features_yaml"]`` (the Trainer gets the
same path), the model family from ``custom_config["model_family"]`` (:func:`family_of_custom_config`, the
Trainer's too), else the synthetic generator's :func:`~mvke_tf.data.synthetic.feature_config`.
This file is also TFX's ``module_file``, so it sets the Keras environment first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, FeatureConfig
from mvke_tf.data import transform as T
from mvke_tf.data.transform import DEFAULT_NUM_BUCKETS
from mvke_tf.models.family import ModelFamily, family_of


def load_feature_config(custom_config: Mapping[str, Any] | None = None) -> FeatureConfig:
    """The raw feature config: ``custom_config["features_yaml"]`` or the synthetic default."""
    path = (custom_config or {}).get("features_yaml")
    if path:
        return FeatureConfig.from_yaml(path)
    from mvke_tf.data import synthetic

    return synthetic.feature_config()


def family_of_custom_config(custom_config: Mapping[str, Any] | None = None) -> ModelFamily:
    """The model family (:mod:`mvke_tf.models.family`) of a TFX ``custom_config``: its ``model_family``
    (as :meth:`mvke_tf.pipelines.config.PipelineConfig.custom_config` writes it), ``user_tag`` where it has none."""
    return family_of(str((custom_config or {}).get("model_family", "user_tag")))


def num_buckets(custom_config: Mapping[str, Any] | None = None) -> int:
    """Quantile buckets per numeric field (``custom_config["num_buckets"]``, default 10; 0: features.yaml's
    boundaries)."""
    return int((custom_config or {}).get("num_buckets", DEFAULT_NUM_BUCKETS))


def transformed_feature_config(custom_config: Mapping[str, Any] | None = None) -> FeatureConfig:
    """The feature config of this module's output (what the Trainer builds the model from)."""
    return T.transformed_feature_config(load_feature_config(custom_config), num_buckets(custom_config))


def preprocessing_fn(inputs: Mapping[str, Any], custom_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Raw columns (dense or sparse) -> integer-id features, labels and slicing columns."""
    config = load_feature_config(custom_config)
    buckets = num_buckets(custom_config)
    custom = dict(custom_config or {})
    family = family_of_custom_config(custom)
    model_config = family.config_from_dict(custom.get("model_config", {}))
    outputs: dict[str, Any] = {}
    for spec in family.input_fields(config, model_config, columns=set(inputs)):
        if spec.name not in inputs:
            raise KeyError(f"preprocessing_fn: input column {spec.name!r} is missing; have {sorted(inputs)}")
        if spec.kind == NUMERIC:
            x = T.to_dense_column(T.float_column(inputs[spec.name]), float("nan"))
            missing = tf.math.is_nan(x)
            filled = tf.where(missing, tf.zeros_like(x), x)
            if buckets == T.CONFIG_BOUNDARIES:  # features.yaml's boundaries, as the library reads the field
                b = T.config_buckets(filled, spec)
            else:  # quantiles of the train split, computed by Transform
                weights = tf.cast(tf.logical_not(missing), tf.float32)
                b = tft.bucketize(filled, buckets, weights=weights, name=spec.name)
            outputs[spec.name] = T.numeric_bucket_ids(x, b)
        elif spec.kind == MULTI_VALUED:
            outputs[spec.name] = T.multi_valued_ids(T.joined_column(inputs[spec.name], spec.separator), spec)
        elif spec.kind == CATEGORICAL:
            outputs[spec.name] = T.categorical_ids(T.to_dense_column(T.id_strings(inputs[spec.name]), ""), spec)
    for name in family.dataset_columns(model_config):  # e.g. a domain id: the model checks its range
        if name not in inputs:
            raise KeyError(f"preprocessing_fn: input column {name!r} is missing; have {sorted(inputs)}")
        outputs[name] = tf.cast(T.to_dense_column(inputs[name], -1), tf.int64)
    for label in config.labels:
        if label in inputs:
            outputs[label] = tf.cast(T.to_dense_column(inputs[label], 0), tf.int64)
    # The user id and the pipeline's slice keys pass through as strings, where the data has them.
    for name in dict.fromkeys((config.user_id, *custom.get("slice_keys", ()))):
        if name in inputs and name not in outputs:
            outputs[name] = T.to_dense_column(T.id_strings(inputs[name]), "")
    return outputs
