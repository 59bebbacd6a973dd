"""SavedModel export of the pair-ranking models (:class:`~mvke_tf.models.ranking.RankingModel`).

One signature, ``serving_default``: serialized ``tf.Example`` ``[batch]`` (``examples``) -> every
model output: per-task probabilities, and with ESMM ``click`` (pCTR), ``conversion`` (pCTCVR),
``cvr`` (pCVR) and ``rank_score``. The raw features are parsed and hashed inside the graph with
standard ops only, so TF Serving loads it as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from mvke_tf.config import MULTI_VALUED, NUMERIC, FieldSpec
from mvke_tf.export.warmup import write_warmup_requests
from mvke_tf.models.ranking import RankingModel


def ranking_parse_spec(fields: Sequence[FieldSpec], dense_fields: Sequence[str]) -> dict:
    """``tf.io.parse_example`` features: a missing categorical is ``""``, a missing number NaN."""
    spec: dict = {}
    for f in fields:
        if f.kind == MULTI_VALUED:
            spec[f.name] = tf.io.RaggedFeature(tf.string)
        elif f.kind == NUMERIC:
            spec[f.name] = tf.io.FixedLenFeature([], tf.float32, default_value=math.nan)
        else:
            spec[f.name] = tf.io.FixedLenFeature([], tf.string, default_value="")
    for name in dense_fields:
        spec[name] = tf.io.FixedLenFeature([], tf.float32, default_value=math.nan)
    return spec


def parse_ranking_examples(serialized: tf.Tensor, model: RankingModel) -> dict[str, tf.Tensor]:
    """Serialized ``tf.Example`` ``[batch]`` -> the model's feature dict (multi-valued padded)."""
    parsed = tf.io.parse_example(serialized, ranking_parse_spec(model.fields, model.dense_fields))
    for f in model.fields:
        if f.kind == MULTI_VALUED:
            parsed[f.name] = parsed[f.name][:, : f.max_values].to_tensor(default_value="", shape=[None, f.max_values])
    return parsed


def export_ranking_model(
    model: RankingModel, export_dir: str | Path, warmup_examples: list[bytes] | None = None
) -> Path:
    """Saves ``model`` with a ``serving_default`` signature on serialized examples; returns the directory.

    Args:
      model: a built ranking model.
      export_dir: the SavedModel directory (for TF Serving: ``<model base path>/<version>``).
      warmup_examples: serialized examples for ``assets.extra/tf_serving_warmup_requests``;
        default: one all-missing example.
    """

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_default(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return model(parse_ranking_examples(examples, model), training=False)

    export_dir = Path(export_dir)
    tf.saved_model.save(model, str(export_dir), signatures={"serving_default": serving_default})
    examples = warmup_examples or [tf.train.Example().SerializeToString()]
    write_warmup_requests(export_dir, {"serving_default": {"examples": examples}})
    return export_dir
