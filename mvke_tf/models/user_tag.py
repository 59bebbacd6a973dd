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

from mvke_tf.config import FeatureConfig
from mvke_tf.layers.embedding import FieldEmbedding, FieldsEmbedding
from mvke_tf.layers.interaction import MLP, DeepFMTower
from mvke_tf.models.config import ModelConfig


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class UserTagModel(tf.keras.Model):
    """User-tower x tag-tower model selected by :class:`ModelConfig`.

    Inputs: a feature dict as produced by :func:`mvke_tf.data.dataset.make_dataset`.
    Outputs: ``{task: probability [batch]}``.
    """

    def __init__(
        self,
        feature_config: FeatureConfig | Mapping[str, Any],
        model_config: ModelConfig | Mapping[str, Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(feature_config, FeatureConfig):
            feature_config = FeatureConfig.from_dict(feature_config)
        if not isinstance(model_config, ModelConfig):
            model_config = ModelConfig.from_dict(model_config)
        self.feature_config = feature_config
        self.model_config = mc = model_config
        self.tasks = mc.tasks
        self.user_embedding = FieldsEmbedding(
            feature_config.user_fields, mc.embedding_dim, mc.embedding_l2, name="user_fields"
        )
        self.tag_embedding = FieldEmbedding(
            feature_config.tag_field, mc.embedding_dim, mc.embedding_l2, name="tag_field"
        )
        self.tag_towers = {t: MLP(mc.tag_units, dropout=mc.dropout, name=f"tag_tower_{t}") for t in self.tasks}
        # noMTL two-tower: one independent user tower per task over the shared embeddings.
        self.user_towers = {
            t: DeepFMTower(mc.dnn_units, mc.top_units, mc.dropout, name=f"user_tower_{t}") for t in self.tasks
        }

    # ------------------------------------------------------------ towers
    def user_vectors(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> dict[str, tf.Tensor]:
        """Per task the user embedding ``[batch, d_out]``."""
        fields = self.user_embedding(features)  # [batch, F, d]
        return {t: self.user_towers[t](fields, training=training) for t in self.tasks}

    def tag_vectors(self, tags: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        """Per task the tag embedding ``[batch, d_out]``.

        Args:
          tags: ``[batch, max_tags]`` tag sets (padded with ``""``) or ``[batch]`` single tags.
        """
        if self.feature_config.tag_field.kind == "multi_valued" and tags.shape.rank == 1:
            tags = tags[:, None]
        shared = self.tag_embedding(tags)  # [batch, d]
        return {t: self.tag_towers[t](shared, training=training) for t in self.tasks}

    def build(self, input_shape: Any) -> None:
        # One learned logit offset per task: labels are rare (a few % clicks), and a
        # plain dot product would have to learn that base rate in every direction.
        self.score_bias = {
            t: self.add_weight(name=f"score_bias_{t}", shape=(), initializer=tf.keras.initializers.Constant(-3.0))
            for t in self.tasks
        }
        super().build(input_shape)

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> dict[str, tf.Tensor]:
        users = self.user_vectors(features, training=training)
        tags = self.tag_vectors(features[self.feature_config.tag_field.name], training=training)
        return {
            t: tf.sigmoid(tf.reduce_sum(users[t] * tags[t], axis=-1) + self.score_bias[t], name=t) for t in self.tasks
        }

    # ------------------------------------------------------ serialization
    def get_config(self) -> dict[str, Any]:
        return {"feature_config": self.feature_config.to_dict(), "model_config": self.model_config.to_dict()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], custom_objects: Any = None) -> UserTagModel:
        return cls(config["feature_config"], config["model_config"])


def build_model(feature_config: FeatureConfig, model_config: ModelConfig) -> UserTagModel:
    """Builds the model variant ``model_config.model_type`` (weights created eagerly)."""
    model = UserTagModel(feature_config, model_config, name=model_config.model_type)
    model(dummy_features(feature_config))
    return model


def dummy_features(feature_config: FeatureConfig, batch: int = 2) -> dict[str, tf.Tensor]:
    """A small all-missing feature batch with the right dtypes and shapes (to build weights)."""
    out: dict[str, tf.Tensor] = {}
    for spec in (*feature_config.user_fields, feature_config.tag_field):
        if spec.kind == "numeric":
            out[spec.name] = tf.fill([batch], float("nan"))
        elif spec.kind == "multi_valued":
            out[spec.name] = tf.fill([batch, spec.max_values], "")
        else:
            out[spec.name] = tf.fill([batch], "")
    return out
