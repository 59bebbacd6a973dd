"""Exact fast prediction of all users x all tags (MVKE paper, section 4.3).

The VKG gate weights ``w_t`` depend only on the tag (and the learned kernels), never on
the user. With a user's VKE outputs ``V_u [S, d]`` and a tag's embedding ``e_t [d]``::

    u_t . e_t = (sum_k w_tk V_uk) . e_t = vec(V_u) . vec(w_t (x) e_t)

so every user x tag logit is one entry of the matrix product ``U T^T`` with
``U = [N_u, S*d]`` (stacked VKE outputs, computed once per user) and ``T = [N_t, S*d]``
(computed once per tag): a maximum-inner-product problem, usable with brute-force or
ScaNN-style top-K retrieval. For the cosine score, ``|u_t|^2 = w_t^T G_u w_t`` with the
user's Gram matrix ``G_u = V_u V_u^T``: a second product ``vec(G_u) . vec(w_t w_t^T)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf


def pack_users(experts: tf.Tensor) -> tf.Tensor:
    """``[N_u, S, d]`` VKE outputs -> ``[N_u, S*d]`` user rows."""
    n = tf.shape(experts)[0]
    return tf.reshape(experts, [n, -1])


def pack_tags(embedding: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Tag embeddings ``[N_t, d]`` and gate weights ``[N_t, S]`` -> ``[N_t, S*d]`` (``w (x) e``)."""
    n = tf.shape(embedding)[0]
    return tf.reshape(weights[:, :, None] * embedding[:, None, :], [n, -1])


@dataclasses.dataclass
class TaskTagTable:
    """One task's precomputed tag side: everything the product needs per tag."""

    packed: tf.Tensor  # [N_t, S*d]: vec(w (x) e)
    gate_outer: tf.Tensor  # [N_t, S*S]: vec(w w^T), for the cosine norm
    tag_norm: tf.Tensor  # [N_t]: |e|
    bias: float
    scale: float | None  # cosine scale; None for the dot score


class FastScorer:
    """Scores users against a fixed tag vocabulary with matrix products.

    Build it once per model and tag vocabulary (``FastScorer.from_model``), then feed
    user-tower outputs in batches. Exact: it equals the model's pair scoring.
    """

    def __init__(self, tags: Sequence[str], tables: Mapping[str, TaskTagTable], score: str) -> None:
        self.tags = list(tags)
        self.tables = dict(tables)
        self.score = score

    @classmethod
    def from_model(cls, model: tf.keras.Model, tags: Sequence[str], batch_size: int = 4096) -> FastScorer:
        """Runs the model's tag tower once over ``tags`` (single tags, e.g. all 1,800 leaves)."""
        parts: dict[str, list[tuple[tf.Tensor, tf.Tensor]]] = {t: [] for t in model.tasks}
        for start in range(0, len(tags), batch_size):
            out = model.tag_tower_outputs(tf.constant(list(tags[start : start + batch_size])))
            for t in model.tasks:
                parts[t].append(out[t])
        tables = {}
        for t in model.tasks:
            e = tf.concat([p[0] for p in parts[t]], axis=0)
            w = tf.concat([p[1] for p in parts[t]], axis=0)
            outer = tf.reshape(w[:, :, None] * w[:, None, :], [tf.shape(w)[0], -1])
            scale = float(model.cosine_scale[t].numpy()) if model.model_config.score == "cosine" else None
            bias = float(model.score_bias[t].numpy())
            tables[t] = TaskTagTable(pack_tags(e, w), outer, tf.norm(e, axis=-1), bias, scale)
        return cls(tags, tables, model.model_config.score)

    def logits(self, task: str, experts: tf.Tensor) -> tf.Tensor:
        """User VKE outputs ``[N_u, S, d]`` -> logits ``[N_u, N_t]`` for every tag."""
        table = self.tables[task]
        dot = tf.matmul(pack_users(experts), table.packed, transpose_b=True)
        if self.score == "cosine":
            gram = tf.reshape(tf.matmul(experts, experts, transpose_b=True), [tf.shape(experts)[0], -1])
            user_norm = tf.sqrt(tf.maximum(tf.matmul(gram, table.gate_outer, transpose_b=True), 0.0))
            cos = dot / tf.maximum(user_norm * table.tag_norm[None, :], 1e-12)
            return table.scale * cos + table.bias
        return dot + table.bias

    def probabilities(self, task: str, experts: tf.Tensor) -> tf.Tensor:
        """``[N_u, N_t]`` probabilities of every user x tag pair."""
        return tf.sigmoid(self.logits(task, experts))

    def top_k(self, task: str, experts: tf.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per user the ``k`` best tags: ``(scores [N_u, k], tag indices [N_u, k])``, best first."""
        k = min(k, len(self.tags))
        values, indices = tf.math.top_k(self.logits(task, experts), k=k)
        return tf.sigmoid(values).numpy(), indices.numpy()


def score_all_pairs(
    model: tf.keras.Model, features: Mapping[str, tf.Tensor], tags: Sequence[str]
) -> dict[str, np.ndarray]:
    """All users in ``features`` x all ``tags``: per task probabilities ``[N_u, N_t]``."""
    scorer = FastScorer.from_model(model, tags)
    experts = model.user_tower_outputs(features)
    return {t: scorer.probabilities(t, experts[t]).numpy() for t in model.tasks}
