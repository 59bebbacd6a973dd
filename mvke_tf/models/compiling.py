"""The one way the library compiles a multi-task Keras model."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf


def compile_per_task(
    model: tf.keras.Model, loss_weights: Mapping[str, float], learning_rate: float = 1e-3
) -> tf.keras.Model:
    """Adam, a binary cross-entropy per weighted output, and an exact-ish AUC (2,000 thresholds) on each.

    Args:
      model: a model whose outputs are named by task (``{task: probability [B]}``).
      loss_weights: ``{output: weight}``; only these outputs get a loss and a metric, so extra
        outputs (a ranker's ``cvr`` or ``rank_score``) stay untrained by themselves.
      learning_rate: Adam's learning rate.
    """
    tasks = list(loss_weights)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss={t: tf.keras.losses.BinaryCrossentropy() for t in tasks},
        loss_weights=dict(loss_weights),
        metrics={t: [tf.keras.metrics.AUC(name="auc", num_thresholds=2000)] for t in tasks},
    )
    return model
