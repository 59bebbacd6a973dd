"""SavedModel export with three signatures, saved with ``tf.saved_model.save``.

* ``serving_default``: serialized ``tf.Example`` ``[batch]`` -> per task probability ``[batch]``
  (pair scoring; outputs named by task, e.g. ``click``, ``conversion``).
* ``user_tower``: raw user features -> per task ``<task>_experts [batch, S_task, d_out]``
  (MVKE: the VKE outputs; other models: the user embedding with ``S_task = 1``).
* ``tag_tower``: raw tags ``[batch]`` (one tag each) -> per task ``<task>_embedding [batch, d_out]``
  and ``<task>_gate [batch, S_task]`` (the VKG weights; 1 for non-MVKE models).

Only standard TF ops: string hashing, bucketize, dense math. TF Serving loads it as is.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from mvke_tf.config import FeatureConfig
from mvke_tf.data.dataset import parse_examples


def feature_specs(feature_config: FeatureConfig, user_only: bool = False) -> dict[str, tf.TensorSpec]:
    """Input specs of raw features: strings ``[B]`` / ``[B, max_values]``, numerics float ``[B]``."""
    fields = feature_config.user_fields if user_only else (*feature_config.user_fields, feature_config.tag_field)
    specs = {}
    for f in fields:
        if f.kind == "numeric":
            specs[f.name] = tf.TensorSpec([None], tf.float32, name=f.name)
        elif f.kind == "multi_valued":
            specs[f.name] = tf.TensorSpec([None, f.max_values], tf.string, name=f.name)
        else:
            specs[f.name] = tf.TensorSpec([None], tf.string, name=f.name)
    return specs


def user_tower_outputs(model: tf.keras.Model, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The ``user_tower`` signature's outputs: ``<task>_experts [B, S_task, d_out]``."""
    return {f"{t}_experts": v for t, v in model.user_tower_outputs(features, training=False).items()}


def tag_tower_outputs(model: tf.keras.Model, tags: tf.Tensor) -> dict[str, tf.Tensor]:
    """The ``tag_tower`` signature's outputs: ``<task>_embedding [B, d_out]``, ``<task>_gate [B, S_task]``."""
    out = {}
    for t, (e, w) in model.tag_tower_outputs(tags, training=False).items():
        out[f"{t}_embedding"] = e
        out[f"{t}_gate"] = w
    return out


def serving_functions(model: tf.keras.Model) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """The three signature functions of ``model``, traced."""
    fc = model.feature_config

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_default(examples):
        return model(parse_examples(examples, fc), training=False)

    @tf.function(input_signature=[feature_specs(fc, user_only=True)])
    def user_tower(features):
        return user_tower_outputs(model, features)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="tags")])
    def tag_tower(tags):
        return tag_tower_outputs(model, tags)

    return {
        "serving_default": serving_default.get_concrete_function(),
        "user_tower": user_tower.get_concrete_function(),
        "tag_tower": tag_tower.get_concrete_function(),
    }


def export_saved_model(model: tf.keras.Model, export_dir: str | Path) -> Path:
    """Saves ``model`` as a SavedModel with the three signatures; returns the directory."""
    export_dir = Path(export_dir)
    tf.saved_model.save(model, str(export_dir), signatures=serving_functions(model))
    return export_dir
