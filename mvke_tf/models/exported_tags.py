"""The tag side of :mod:`mvke_tf.models.fast` from an exported ``tag_tower`` signature (not a Keras model).

``tag_tower`` (tags ``[T]`` -> per task ``<task>_embedding [T, d]``, ``<task>_gate [T, S]``, ``<task>_bias``
and, for the cosine score, ``<task>_scale``) runs over the vocabulary in batches of :data:`TAG_BATCH`; each
task's outputs are packed into a :class:`~mvke_tf.models.fast.TaskTagTable` as
:meth:`~mvke_tf.models.fast.FastScorer.from_model` packs a Keras model's. One algorithm for both users of the
SavedModel contract: the batch tagging job (:class:`mvke_tf.tagging.TaggingModel`) and the export's
``top_tags`` signature (:mod:`mvke_tf.models.top_tags`), so their numbers and tie order are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

from mvke_tf.models.fast import FastScorer, TaskTagTable, pack_tags

TAG_BATCH = 4096  # tags per tag_tower call


def tag_tables(
    tag_tower: Callable[..., Mapping[str, tf.Tensor]],
    tags: Sequence[str],
    tasks: Sequence[str],
    batch_size: int = TAG_BATCH,
) -> dict[str, TaskTagTable]:
    """Runs ``tag_tower`` (an exported signature function) over ``tags`` and packs each task's table."""
    embeddings: dict[str, list[tf.Tensor]] = {t: [] for t in tasks}
    gates: dict[str, list[tf.Tensor]] = {t: [] for t in tasks}
    bias: dict[str, float] = {}
    scale: dict[str, float] = {}
    for start in range(0, len(tags), batch_size):
        out = tag_tower(tags=tf.constant(list(tags[start : start + batch_size])))
        for t in tasks:
            embeddings[t].append(out[f"{t}_embedding"])
            gates[t].append(out[f"{t}_gate"])
            bias[t] = float(out[f"{t}_bias"][0])  # constant over tags
            if f"{t}_scale" in out:
                scale[t] = float(out[f"{t}_scale"][0])
    tables = {}
    for t in tasks:
        e, w = tf.concat(embeddings[t], axis=0), tf.concat(gates[t], axis=0)
        outer = tf.reshape(w[:, :, None] * w[:, None, :], [tf.shape(w)[0], -1])
        tables[t] = TaskTagTable(pack_tags(e, w), outer, tf.norm(e, axis=-1), bias[t], scale.get(t))
    return tables


def tag_scorer(
    tag_tower: Callable[..., Mapping[str, tf.Tensor]],
    tags: Sequence[str],
    tasks: Sequence[str],
    batch_size: int = TAG_BATCH,
) -> FastScorer:
    """:func:`tag_tables` as a :class:`~mvke_tf.models.fast.FastScorer`: the cosine score where the export
    has a ``<task>_scale`` output, else the dot score."""
    tables = tag_tables(tag_tower, tags, tasks, batch_size)
    score = "cosine" if any(table.scale is not None for table in tables.values()) else "dot"
    return FastScorer(tags, tables, score)
