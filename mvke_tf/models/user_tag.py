"""Two-tower user-tagging models: user features x tag -> per-task probability.

Every variant shares the same skeleton:

* user tower: field embeddings ``[batch, F, d]`` -> per task a user embedding ``[batch, d_out]``
  (the variant decides how: separate towers, shared experts, virtual-kernel experts ...);
* tag tower: the pooled tag-set embedding ``[batch, d]`` -> per task a small MLP
  (hard sharing: one tower per task over the shared tag embedding) -> ``[batch, d_out]``;
* score: ``p_task = sigmoid(<user_task, tag_task>)``.

Outputs are a dict keyed by task name (``click``, ``conversion``), never ``output_1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from mvke_tf.config import FeatureConfig, FieldSpec
from mvke_tf.layers.embedding import FieldEmbedding, FieldsEmbedding, missing_inputs
from mvke_tf.layers.experts import mix
from mvke_tf.layers.interaction import MLP
from mvke_tf.layers.mvke import VirtualKernelGate
from mvke_tf.models.config import MVKE_TYPES, UserTagConfig
from mvke_tf.models.family import build_model
from mvke_tf.models.towers import make_user_tower


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class UserTagModel(tf.keras.Model):
    """User-tower x tag-tower model selected by :class:`~mvke_tf.models.config.UserTagConfig`.

    Inputs: a feature dict as produced by :func:`mvke_tf.data.dataset.make_dataset`.
    Outputs: ``{task: probability [batch]}``.

    The forward pass, per task j::

        V = user_tower(E)            # [B, S_j, d_out]  (MVKE: the VKE outputs E_u^k)
        e = tag_tower_j(tag)         # [B, d_out]
        w = gate_j(e, VK_{S_j})      # [B, S_j]         (1 for non-MVKE models)
        u = sum_k w_k V_k            # [B, d_out]       tag-specific user embedding
        p = sigmoid(u . e + b_j)     # or sigmoid(s_j * cos(u, e) + b_j)

    Because ``w`` depends only on the tag, ``u . e = vec(V) . vec(w (x) e)``: see
    :func:`mvke_tf.models.fast.score_all_pairs` for the all-users x all-tags product.
    """

    def __init__(
        self,
        feature_config: FeatureConfig | Mapping[str, Any],
        model_config: UserTagConfig | Mapping[str, Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(feature_config, FeatureConfig):
            feature_config = FeatureConfig.from_dict(feature_config)
        if not isinstance(model_config, UserTagConfig):
            model_config = UserTagConfig.from_dict(model_config)
        self.feature_config = feature_config
        self.model_config = mc = model_config
        self.tasks = mc.tasks
        self.is_mvke = mc.architecture in MVKE_TYPES
        self.user_embedding = FieldsEmbedding(
            feature_config.user_fields, mc.embedding_dim, mc.embedding_l2, name="user_fields"
        )
        self.tag_embedding = FieldEmbedding(
            feature_config.tag_field, mc.embedding_dim, mc.embedding_l2, name="tag_field"
        )
        # Hard sharing on the tag side: one small tower per task over the shared tag embedding.
        self.tag_towers = {t: MLP(mc.tag_units, dropout=mc.dropout, name=f"tag_tower_{t}") for t in self.tasks}
        self.user_tower = make_user_tower(mc)
        self.gates = (
            {t: VirtualKernelGate(mc.gate, scale=mc.gate_scale, name=f"vkg_{t}") for t in self.tasks}
            if self.is_mvke
            else {}
        )

    @property
    def config(self) -> UserTagConfig:
        """The model's config: the attribute every model family has (here also ``model_config``)."""
        return self.model_config

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        """The fields the model reads: the user fields, then the tag field."""
        return (*self.feature_config.user_fields, self.feature_config.tag_field)

    def build(self, input_shape: Any) -> None:
        # One learned logit offset per task: labels are rare (a few % clicks), and a
        # plain dot product would have to learn that base rate in every direction.
        self.score_bias = {
            t: self.add_weight(name=f"score_bias_{t}", shape=(), initializer=tf.keras.initializers.Constant(-3.0))
            for t in self.tasks
        }
        if self.model_config.score == "cosine":
            self.cosine_scale = {
                t: self.add_weight(name=f"cosine_scale_{t}", shape=(), initializer=tf.keras.initializers.Constant(5.0))
                for t in self.tasks
            }
        super().build(input_shape)

    # ------------------------------------------------------------ towers
    def user_tower_outputs(
        self, features: Mapping[str, tf.Tensor], training: bool | None = None
    ) -> dict[str, tf.Tensor]:
        """Per task the expert outputs to be mixed by the tag's gate: ``[B, S_task, d_out]``.

        MVKE: the outputs E_u^k of the VKEs serving the task; other models: ``S_task = 1``.
        """
        return self.user_tower(self.user_embedding(features), training=training)

    def tag_tower_outputs(
        self, tags: tf.Tensor, training: bool | None = None
    ) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
        """Per task ``(tag embedding [B, d_out], gate weights [B, S_task])``.

        Args:
          tags: ``[B, max_tags]`` tag sets (padded with ``""``) or ``[B]`` single tags.
        """
        if self.feature_config.tag_field.kind == "multi_valued" and tags.shape.rank == 1:
            tags = tags[:, None]
        shared = self.tag_embedding(tags)  # [B, d]
        out = {}
        for t in self.tasks:
            e = self.tag_towers[t](shared, training=training)
            if self.is_mvke:
                w = self.gates[t]((e, self.user_tower.kernels(t)))
            else:
                w = tf.ones([tf.shape(e)[0], 1], e.dtype)
            out[t] = (e, w)
        return out

    def user_vectors(self, features: Mapping[str, tf.Tensor], tags: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per task the tag-specific user embedding ``u = sum_k w_k E_u^k``: ``[B, d_out]``."""
        experts = self.user_tower_outputs(features)
        return {t: mix(w, experts[t]) for t, (_, w) in self.tag_tower_outputs(tags).items()}

    def logit(self, task: str, user: tf.Tensor, tag: tf.Tensor) -> tf.Tensor:
        """The score's logit for aligned rows of user ``[B, d]`` and tag ``[B, d]`` embeddings."""
        dot = tf.reduce_sum(user * tag, axis=-1)
        if self.model_config.score == "cosine":
            norms = tf.norm(user, axis=-1) * tf.norm(tag, axis=-1)
            return self.cosine_scale[task] * dot / tf.maximum(norms, 1e-12) + self.score_bias[task]
        return dot + self.score_bias[task]

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> dict[str, tf.Tensor]:
        experts = self.user_tower_outputs(features, training=training)
        tags = self.tag_tower_outputs(features[self.feature_config.tag_field.name], training=training)
        out = {}
        for t in self.tasks:
            e, w = tags[t]
            out[t] = tf.sigmoid(self.logit(t, mix(w, experts[t]), e), name=t)
        return out

    # ------------------------------------------------------ serialization
    def get_config(self) -> dict[str, Any]:
        return {"feature_config": self.feature_config.to_dict(), "model_config": self.model_config.to_dict()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], custom_objects: Any = None) -> UserTagModel:
        return cls(config["feature_config"], config["model_config"])


def build_user_tag_model(feature_config: FeatureConfig, model_config: UserTagConfig) -> UserTagModel:
    """Builds the user-tag model ``model_config.model_type`` (weights created eagerly).

    :func:`~mvke_tf.models.family.build_model` (also importable from here) builds the model of any family's
    config.
    """
    model = UserTagModel(feature_config, model_config, name=model_config.model_type)
    model(dummy_features(feature_config))
    return model


def dummy_features(feature_config: FeatureConfig, batch: int = 2) -> dict[str, tf.Tensor]:
    """A small all-missing feature batch with the right dtypes and shapes (to build weights)."""
    return missing_inputs((*feature_config.user_fields, feature_config.tag_field), batch)


__all__ = ["UserTagModel", "build_model", "build_user_tag_model", "dummy_features"]
