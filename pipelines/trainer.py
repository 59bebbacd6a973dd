"""TFX Trainer module: ``run_fn`` trains the library's model on Transform's output.

The model is :func:`mvke_tf.models.build_model` over the *transformed* feature config
(every field integer ids, see :mod:`mvke_tf.data.transform`). The exported SavedModel
carries the Transform graph, so clients send raw ``tf.Example`` records:

* ``serving_default``: serialized raw ``tf.Example`` ``[B]`` -> ``click``, ``conversion`` ``[B]``
  (features the client leaves out count as missing; labels and other columns are not needed);
* ``transform_features``: serialized raw ``tf.Example`` ``[B]`` -> transformed features (TFMA);
* ``user_tower``: serialized raw ``tf.Example`` ``[B]`` -> ``<task>_experts [B, S_task, d]``;
* ``tag_tower``: raw tags ``[B]`` (one tag each) -> ``<task>_embedding``, ``<task>_gate``.

This file is TFX's ``module_file``; it imports only the library, TFX's public API and TFT.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from collections.abc import Mapping  # noqa: E402
from typing import Any  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from mvke_tf.config import FeatureConfig  # noqa: E402
from mvke_tf.data import synthetic  # noqa: E402
from mvke_tf.data import transform as T  # noqa: E402
from mvke_tf.export.saved_model import tag_tower_outputs, user_tower_outputs  # noqa: E402
from mvke_tf.models import ModelConfig, UserTagModel, build_model  # noqa: E402
from mvke_tf.train import compile_model  # noqa: E402

DEFAULT_NUM_BUCKETS = 10  # keep equal to pipelines.preprocessing.DEFAULT_NUM_BUCKETS


def _raw_feature_config(custom_config: Mapping[str, Any]) -> FeatureConfig:
    path = custom_config.get("features_yaml")
    return FeatureConfig.from_yaml(path) if path else synthetic.feature_config()


def _input_fn(
    files: list[str],
    data_accessor: tfx.components.DataAccessor,
    tf_transform_output: tft.TFTransformOutput,
    feature_config: FeatureConfig,
    batch_size: int,
    seed: int,
) -> tf.data.Dataset:
    """Transformed examples -> repeated, shuffled ``(features, labels)`` batches."""
    options = tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle_seed=seed)
    ds = data_accessor.tf_dataset_factory(files, options, tf_transform_output.transformed_metadata.schema)

    def split(batch: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        features = {n: batch[n] for n in feature_config.feature_names}
        labels = {t: tf.cast(batch[t], tf.float32) for t in feature_config.labels}
        return features, labels

    return ds.map(split, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _optional(spec: Any) -> Any:
    """A required one-value ``FixedLenFeature`` gets a "missing" default, so clients may omit it.

    The default maps to the id Transform gives a missing value (``""`` -> -1, NaN -> bucket 0);
    the parsed tensor keeps its dense type, as the Transform graph expects.
    """
    if isinstance(spec, tf.io.FixedLenFeature) and spec.default_value is None and list(spec.shape) in ([], [1]):
        default = {tf.string: "", tf.float32: float("nan")}.get(spec.dtype, 0)
        return tf.io.FixedLenFeature(spec.shape, spec.dtype, default_value=default)
    return spec


def signatures(
    model: UserTagModel, tf_transform_output: tft.TFTransformOutput, raw_config: FeatureConfig
) -> dict[str, Any]:
    """The exported signatures over raw inputs (Transform graph + model)."""
    model.tft_layer = tf_transform_output.transform_features_layer()  # tracked, so its assets are saved
    raw_spec = tf_transform_output.raw_feature_spec()
    feature_spec = {n: _optional(raw_spec[n]) for n in raw_config.feature_names}
    user_spec = {f.name: feature_spec[f.name] for f in raw_config.user_fields}
    names = model.feature_config.feature_names
    examples = tf.TensorSpec([None], tf.string, name="examples")

    @tf.function(input_signature=[examples])
    def serving_default(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        transformed = model.tft_layer(tf.io.parse_example(examples, feature_spec))
        return model({n: transformed[n] for n in names}, training=False)

    @tf.function(input_signature=[examples])
    def transform_features(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return model.tft_layer(tf.io.parse_example(examples, raw_spec))

    @tf.function(input_signature=[examples])
    def user_tower(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        transformed = model.tft_layer(tf.io.parse_example(examples, user_spec))
        features = {f.name: transformed[f.name] for f in model.feature_config.user_fields}
        return user_tower_outputs(model, features)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="tags")])
    def tag_tower(tags: tf.Tensor) -> dict[str, tf.Tensor]:
        # The same ids Transform computes for the tag field.
        return tag_tower_outputs(model, T.multi_valued_ids(tags, raw_config.tag_field))

    return {
        "serving_default": serving_default.get_concrete_function(),
        "transform_features": transform_features.get_concrete_function(),
        "user_tower": user_tower.get_concrete_function(),
        "tag_tower": tag_tower.get_concrete_function(),
    }


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains ``fn_args.train_steps`` steps and exports to ``fn_args.serving_model_dir``."""
    custom = dict(fn_args.custom_config or {})
    raw_config = _raw_feature_config(custom)
    config = T.transformed_feature_config(raw_config, int(custom.get("num_buckets", DEFAULT_NUM_BUCKETS)))
    model_config = ModelConfig.from_dict(custom.get("model_config", {}))
    batch_size = int(custom.get("batch_size", 256))
    epochs = max(1, min(int(custom.get("epochs", 1)), int(fn_args.train_steps)))

    seed = int(custom.get("seed", 0))
    tf.keras.utils.set_random_seed(seed)

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    train = _input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, config, batch_size, seed)
    valid = _input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, config, batch_size, seed)

    model = compile_model(build_model(config, model_config), float(custom.get("learning_rate", 1e-3)))
    model.fit(
        train,
        epochs=epochs,
        steps_per_epoch=max(1, int(fn_args.train_steps) // epochs),
        validation_data=valid,
        validation_steps=max(1, int(fn_args.eval_steps or 1)),
        callbacks=[tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch")],
        verbose=2,
    )
    tf.saved_model.save(model, fn_args.serving_model_dir, signatures=signatures(model, tf_transform_output, raw_config))
