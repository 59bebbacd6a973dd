"""The ``top_tags`` signature: per user the best ``k`` tags of a vocabulary frozen at export.

``top_tags(examples [B], k [])`` -> per task ``<task>_tags [B, k]`` (tag strings) and ``<task>_scores
[B, k]`` (probabilities), best first. It is the batch tagging job (``mvke-tf tag-users``,
:class:`mvke_tf.tagging.TopKTagger`) inside the graph, with the same numbers and the same order:

* the tag side is computed once, at export, by the export's own ``tag_tower`` signature over the
  vocabulary, by the code ``tag-users`` runs (:func:`mvke_tf.models.exported_tags.tag_tables`, the same
  batches), and packed as :mod:`mvke_tf.models.fast` packs it:
  ``vec(w (x) e) [T, S*d]`` per task. Any gate (softmax or cosine VKG) is fine: only its weights ``w``
  per tag are read;
* per request the user tower runs once, then per task one ``[B, S*d] x [S*d, T]`` product, the
  score's bias (and for the cosine score the Gram term ``w^T G_u w`` and the tag norms), then top-K.
  The logits are computed with the same ops in the same order as ``tag-users``, so equal scores (e.g.
  two tags that share an embedding bucket, or a user with no features) are ordered the same way:
  ``tf.math.top_k`` puts the lower vocabulary index first.

The dot score is a maximum-inner-product search: it runs on TFRS's
``tfrs.layers.factorized_top_k.BruteForce``, indexed with the packed tag rows and the tag strings as
identifiers, its score extended by the task's bias. The cosine score is not: its per-pair normalisation
``|u_t| |e_t|`` depends on both sides, so no fixed candidate matrix gives it as an inner product; it
runs the :class:`~mvke_tf.models.fast.FastScorer` product and ``tf.math.top_k`` directly. In both,
``k`` is a request input (``int32`` scalar, ``1 <= k <= max_k``): ``tf.math.top_k`` takes it as a
tensor, but the output's second dimension is then unknown in the signature (``[-1, -1]``). A ``k`` out of
range fails an assertion in the graph: ``INVALID_ARGUMENT`` in TF Serving and in ``mvke_tf.serving.server``.

The dot score's tag rows are the BruteForce layers' (non-trainable) variables, tracked by the model as
``top_tags_index``; the cosine score's are graph constants. Only standard ops: TF Serving and the C
API load the export as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from mvke_tf.models.exported_tags import tag_tables
from mvke_tf.models.fast import FastScorer, TaskTagTable, pack_users

TOP_TAGS = "top_tags"
K_INPUT = "k"  # top_tags: int32 scalar, how many tags per user
DEFAULT_TOP_TAGS_MAX_K = 100


class BiasedBruteForce(tfrs.layers.factorized_top_k.BruteForce):
    """TFRS brute-force top-K whose score is the MVKE dot logit: ``<user row, tag row> + bias``.

    The bias is constant over tags, so it does not change the ranking; it is added after the product, as
    :meth:`mvke_tf.models.fast.FastScorer.logits` adds it, so that values and ties are bit for bit those
    of ``tag-users``.
    """

    def __init__(self, bias: float, k: int, name: str | None = None) -> None:
        super().__init__(k=k, name=name)
        self.bias = float(bias)

    def _compute_score(self, queries: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
        return tf.matmul(queries, candidates, transpose_b=True) + self.bias


def top_tags_function(
    model: tf.keras.Model,
    user_experts: Callable[[tf.Tensor], Mapping[str, tf.Tensor]],
    tag_tower: Callable[..., Mapping[str, tf.Tensor]],
    tags: Sequence[str],
    max_k: int,
    tasks: Sequence[str],
) -> tf.types.experimental.ConcreteFunction:
    """The traced ``top_tags`` signature.

    Args:
      model: the exported model; the dot score's BruteForce layers are tracked on it (``top_tags_index``)
        so that the SavedModel holds their tag rows.
      user_experts: serialized examples ``[B]`` -> ``<task>_experts [B, S, d]`` (the ``user_tower`` body).
      tag_tower: the export's ``tag_tower`` signature function.
      tags: the vocabulary, distinct tags (:func:`mvke_tf.data.tag_vocabulary.resolve_tag_vocabulary` reads one
        from a file or a data directory).
      max_k: the largest ``k`` a request may ask for; capped at ``len(tags)``.
      tasks: the tasks to output.
    """
    if max_k < 1:
        raise ValueError(f"top_tags_max_k: must be at least 1, got {max_k}")
    max_k = min(int(max_k), len(tags))
    tables = tag_tables(tag_tower, tags, tasks)
    cosine = any(table.scale is not None for table in tables.values())
    names = np.array([t.encode() for t in tags], dtype=object)
    indexes: dict[str, BiasedBruteForce] = {}
    if not cosine:
        for t in tasks:
            index = BiasedBruteForce(tables[t].bias, k=max_k, name=f"top_tags_{t}")
            indexes[t] = index.index(tables[t].packed, tf.constant(names))
        model.top_tags_index = indexes  # tracked: the SavedModel saves the tag rows
    # The cosine tables become graph constants when the function is traced.
    constants = {
        t: (table.packed.numpy(), table.gate_outer.numpy(), table.tag_norm.numpy(), table.bias, table.scale)
        for t, table in tables.items()
    }
    # No quotes in the message: TensorFlow escapes them in the assertion's text.
    k_range = f"k must be between 1 and {max_k} (top_tags_max_k of this export, at most the {len(tags)} tags)"

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="examples"),
            tf.TensorSpec([], tf.int32, name=K_INPUT),
        ]
    )
    def top_tags(examples: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        checks = [
            tf.debugging.assert_greater_equal(k, 1, message=f"top_tags: {k_range}; fix: ask for at least one tag"),
            tf.debugging.assert_less_equal(
                k, max_k, message=f"top_tags: {k_range}; fix: ask for fewer tags or re-export with a larger max"
            ),
        ]
        with tf.control_dependencies(checks):
            k = tf.identity(k)
        experts = user_experts(examples)
        out = {}
        for t in tasks:
            v = experts[f"{t}_experts"]
            if cosine:
                packed, outer, norm, bias, scale = constants[t]
                table = TaskTagTable(tf.constant(packed), tf.constant(outer), tf.constant(norm), bias, scale)
                logits = FastScorer(tags, {t: table}, "cosine").logits(t, v)
                values, indices = tf.math.top_k(logits, k=k)
                best = tf.gather(tf.constant(names), indices)
            else:
                values, best = indexes[t](pack_users(v), k=k)
            out[f"{t}_tags"] = best
            out[f"{t}_scores"] = tf.sigmoid(values)
        return out

    return top_tags.get_concrete_function()
