"""SavedModel export with three signatures, saved with ``tf.saved_model.save``.

The contract (the same for the pipeline's export, :func:`pipelines.trainer.signatures`):

* ``serving_default``: ``examples: string [batch]`` (serialized raw ``tf.Example``) -> per task
  probability ``[batch]`` named by task (``click``, ``conversion``): pair scoring, the tag in the example.
* ``user_tower``: ``examples: string [batch]`` (serialized raw ``tf.Example`` with the user fields; other
  features are ignored, missing ones count as missing) -> per task ``<task>_experts [batch, S_task, d_out]``
  (MVKE: the VKE outputs after the value projection; other models: the user embedding, ``S_task = 1``).
* ``tag_tower``: ``tags: string [batch]`` (one raw tag each) -> per task ``<task>_embedding [batch, d_out]``,
  ``<task>_gate [batch, S_task]`` (the VKG weights; 1 for non-MVKE models) and ``<task>_bias [batch]``
  (the task's score bias, repeated per row; cosine-score models add ``<task>_scale [batch]``).

Fast prediction from the two towers: ``p = sigmoid(sum_s gate_s * <experts_s, embedding> + bias)``
(dot score). Warm-up requests for TF Serving are written to ``assets.extra/tf_serving_warmup_requests``
(:mod:`mvke_tf.export.warmup`). Only standard TF ops (string hashing, bucketize, dense math): TF
Serving loads the SavedModel as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import tensorflow as tf

from mvke_tf.config import MULTI_VALUED, FeatureConfig
from mvke_tf.data.dataset import example_parse_spec, parse_examples
from mvke_tf.export.examples import dummy_rows, dummy_tags, examples_from_rows
from mvke_tf.export.warmup import DEFAULT_MODEL_NAME, standard_requests, write_warmup_requests

SIGNATURES = ("serving_default", "user_tower", "tag_tower")
EXAMPLES_INPUT = "examples"  # serving_default, user_tower: serialized tf.Example [batch]
TAGS_INPUT = "tags"  # tag_tower: one raw tag per row [batch]


def feature_specs(feature_config: FeatureConfig, user_only: bool = False) -> dict[str, tf.TensorSpec]:
    """Specs of the parsed raw features: strings ``[B]`` / ``[B, max_values]``, numerics float ``[B]``."""
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


def parse_user_examples(serialized: tf.Tensor, feature_config: FeatureConfig) -> dict[str, tf.Tensor]:
    """Serialized ``tf.Example`` ``[B]`` -> the user fields, as :func:`~mvke_tf.data.dataset.parse_examples`.

    Missing features get the defaults (``""``, NaN, an empty list); multi-valued lists are truncated
    and padded to ``max_values``.
    """
    names = [f.name for f in feature_config.user_fields]
    parsed = tf.io.parse_example(serialized, example_parse_spec(feature_config, names))
    features = {}
    for f in feature_config.user_fields:
        x = parsed[f.name]
        if f.kind == MULTI_VALUED:
            x = x.to_tensor(default_value="", shape=[None, f.max_values])
        features[f.name] = x
    return features


def user_tower_outputs(model: tf.keras.Model, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The ``user_tower`` signature's outputs: ``<task>_experts [B, S_task, d_out]``."""
    return {f"{t}_experts": v for t, v in model.user_tower_outputs(features, training=False).items()}


def tag_tower_outputs(model: tf.keras.Model, tags: tf.Tensor) -> dict[str, tf.Tensor]:
    """The ``tag_tower`` signature's outputs.

    ``<task>_embedding [B, d_out]``, ``<task>_gate [B, S_task]``, ``<task>_bias [B]`` and, for
    cosine-score models, ``<task>_scale [B]``.
    """
    out = {}
    for t, (e, w) in model.tag_tower_outputs(tags, training=False).items():
        out[f"{t}_embedding"] = e
        out[f"{t}_gate"] = w
        ones = tf.ones_like(e[:, 0])
        out[f"{t}_bias"] = ones * tf.cast(model.score_bias[t], e.dtype)
        if model.model_config.score == "cosine":
            out[f"{t}_scale"] = ones * tf.cast(model.cosine_scale[t], e.dtype)
    return out


def serving_functions(model: tf.keras.Model) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """The three signature functions of ``model``, traced."""
    fc = model.feature_config
    examples = tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)

    @tf.function(input_signature=[examples])
    def serving_default(examples):
        return model(parse_examples(examples, fc), training=False)

    @tf.function(input_signature=[examples])
    def user_tower(examples):
        return user_tower_outputs(model, parse_user_examples(examples, fc))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=TAGS_INPUT)])
    def tag_tower(tags):
        return tag_tower_outputs(model, tags)

    return {
        "serving_default": serving_default.get_concrete_function(),
        "user_tower": user_tower.get_concrete_function(),
        "tag_tower": tag_tower.get_concrete_function(),
    }


def write_warmup(
    export_dir: str | Path,
    feature_config: FeatureConfig,
    examples: list[bytes] | None = None,
    tags: list[str] | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    dtypes: Mapping[str, tf.DType] | None = None,
) -> str:
    """Writes the warm-up file: one request per signature of :data:`SIGNATURES`.

    Args:
      export_dir: the SavedModel directory.
      feature_config: the raw feature config (for the made-up rows).
      examples: serialized ``tf.Example`` for ``serving_default`` and ``user_tower``; default: two made-up rows.
      tags: raw tags for ``tag_tower``; default: two made-up tags.
      model_name: the requests' ``model_spec.name`` (TF Serving does not check it for warm-up).
      dtypes: raw column types of the made-up rows (see :func:`~mvke_tf.export.examples_from_rows`), e.g. the
        pipeline's raw feature spec's, so that the made-up examples parse.
    """
    if examples is None:
        examples = examples_from_rows(dummy_rows(feature_config, 2, dtypes=dtypes), feature_config, dtypes)
    if tags is None:
        tags = dummy_tags(feature_config, 2)
    return write_warmup_requests(export_dir, standard_requests(examples, tags), model_name)


def export_saved_model(
    model: tf.keras.Model,
    export_dir: str | Path,
    warmup_examples: list[bytes] | None = None,
    warmup_tags: list[str] | None = None,
) -> Path:
    """Saves ``model`` as a SavedModel with the three signatures and warm-up requests; returns the directory.

    Args:
      model: a built :class:`~mvke_tf.models.UserTagModel`.
      export_dir: the SavedModel directory (for TF Serving: ``<model base path>/<version>``).
      warmup_examples: serialized ``tf.Example`` for the warm-up requests (e.g. from
        :func:`~mvke_tf.export.examples_from_rows`); default: two made-up rows.
      warmup_tags: tags for the ``tag_tower`` warm-up request; default: two made-up tags.
    """
    export_dir = Path(export_dir)
    tf.saved_model.save(model, str(export_dir), signatures=serving_functions(model))
    write_warmup(export_dir, model.feature_config, warmup_examples, warmup_tags)
    return export_dir
