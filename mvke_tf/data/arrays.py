"""In-memory arrays -> ``tf.data``: the one helper every in-memory dataset of the library uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def arrays_dataset(
    features: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    batch_size: int = 512,
    shuffle: bool = False,
    seed: int = 0,
    num_epochs: int | None = 1,
) -> Any:
    """A ``tf.data.Dataset`` of ``(features, labels)`` batches over columns held in memory.

    Args:
      features, labels: ``{name: [N, ...]}`` arrays with the same N (object arrays of text become
        ``tf.string``).
      batch_size: rows per batch (the last batch of the last pass may be smaller).
      shuffle: reshuffle the rows on every pass (with ``seed``), e.g. for training.
      seed: the shuffle seed.
      num_epochs: passes over the rows; ``None`` repeats forever.

    The columns become constant tensors once; the dataset shuffles row indices and gathers whole
    batches, which is about ten times cheaper than shuffling dict rows of strings one by one.
    """
    import tensorflow as tf  # here, so that reading data never needs TensorFlow

    def column(v: np.ndarray) -> tf.Tensor:
        v = np.asarray(v)
        return tf.constant(v.astype(str) if v.dtype == object else v)

    feats = {k: column(v) for k, v in features.items()}
    labs = {k: column(v) for k, v in labels.items()}
    n = len(next(iter(labels.values()))) if labels else len(next(iter(features.values())))
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)

    def gather(index: tf.Tensor) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        return {k: tf.gather(v, index) for k, v in feats.items()}, {k: tf.gather(v, index) for k, v in labs.items()}

    return ds.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
