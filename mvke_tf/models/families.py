"""The library's three model families (:mod:`mvke_tf.models.family`): user tagging, pair ranking and
multi-domain, each beside its models' module (:mod:`~mvke_tf.models.user_tag`, :mod:`~mvke_tf.models.ranking`,
:mod:`~mvke_tf.models.multidomain`). Importing :mod:`mvke_tf.models` imports this module, which registers them.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import tensorflow as tf

from mvke_tf.config import ConfigError, FeatureConfig, FieldSpec
from mvke_tf.data.tag_vocabulary import resolve_tag_vocabulary
from mvke_tf.models.compiling import compile_per_task
from mvke_tf.models.config import USER_TAG_ARCHITECTURES, UserTagConfig
from mvke_tf.models.family import EXAMPLES_INPUT, TAGS_INPUT, ModelFamily, examples_spec, register_family
from mvke_tf.models.multidomain import MULTIDOMAIN_ARCHITECTURES, MultiDomainConfig, MultiDomainModel
from mvke_tf.models.multidomain_training import train_multidomain
from mvke_tf.models.ranking import (
    APP_STORE,
    ITEM_ID,
    RANKING_ARCHITECTURES,
    RankingConfig,
    RankingModel,
    build_ranking_model,
    ranking_feature_config,
    ranking_fields,
)
from mvke_tf.models.top_tags import DEFAULT_TOP_TAGS_MAX_K, K_INPUT, TOP_TAGS, top_tags_function
from mvke_tf.models.user_tag import UserTagModel, build_user_tag_model


@register_family
class UserTagFamily(ModelFamily):
    name = "user_tag"
    config_class = UserTagConfig
    model_class = UserTagModel
    architectures = USER_TAG_ARCHITECTURES
    signatures = ("serving_default", "user_tower", "tag_tower")
    has_tag_tower = True

    def make_config(self, model_name: str, overrides: Mapping[str, Any], scale: float = 1.0) -> Any:
        """The config with every hidden layer scaled by ``scale`` (:meth:`UserTagConfig.scaled`)."""
        config = UserTagConfig.from_dict({**overrides, "model_type": model_name})
        return config.scaled(scale) if scale != 1.0 else config

    def build(
        self, feature_config: FeatureConfig, config: Any, fields: Sequence[FieldSpec] | None = None
    ) -> tf.keras.Model:
        return build_user_tag_model(feature_config, config)

    # The two halves of the model, as the user_tower and tag_tower signatures return them.
    @staticmethod
    def user_tower_outputs(model: UserTagModel, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """``<task>_experts [B, S_task, d_out]``."""
        return {f"{t}_experts": v for t, v in model.user_tower_outputs(dict(features), training=False).items()}

    @staticmethod
    def tag_tower_outputs(model: UserTagModel, tags: tf.Tensor) -> dict[str, tf.Tensor]:
        """``<task>_embedding [B, d_out]``, ``<task>_gate [B, S_task]``, ``<task>_bias [B]`` and, for
        cosine-score models, ``<task>_scale [B]``."""
        out = {}
        for t, (e, w) in model.tag_tower_outputs(tags, training=False).items():
            out[f"{t}_embedding"] = e
            out[f"{t}_gate"] = w
            ones = tf.ones_like(e[:, 0])
            out[f"{t}_bias"] = ones * tf.cast(model.score_bias[t], e.dtype)
            if model.config.score == "cosine":
                out[f"{t}_scale"] = ones * tf.cast(model.cosine_scale[t], e.dtype)
        return out

    def serving_signatures(
        self,
        model: tf.keras.Model,
        inputs: Any,
        *,
        tags: Any = None,
        top_tags_max_k: int | None = None,
    ) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """``serving_default``, ``user_tower`` (the user fields -> :meth:`user_tower_outputs`), ``tag_tower``
        (raw tags -> :meth:`tag_tower_outputs`) and, given ``tags`` (a tag vocabulary, as
        :func:`~mvke_tf.data.tag_vocabulary.resolve_tag_vocabulary` takes it), ``top_tags``
        (:mod:`mvke_tf.models.top_tags`) with ``k`` up to ``top_tags_max_k`` (default
        :data:`~mvke_tf.models.top_tags.DEFAULT_TOP_TAGS_MAX_K`)."""
        concrete = super().serving_signatures(model, inputs)

        def user_experts(examples: tf.Tensor) -> dict[str, tf.Tensor]:
            return self.user_tower_outputs(model, inputs.features(examples, model.feature_config.user_fields))

        # The same function serves user_tower and, traced inside it, top_tags' user side.
        user_tower = tf.function(user_experts, input_signature=[examples_spec()])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=TAGS_INPUT)])
        def tag_tower(tags: tf.Tensor) -> dict[str, tf.Tensor]:
            return self.tag_tower_outputs(model, inputs.tags(tags, model.feature_config.tag_field))

        concrete["user_tower"] = user_tower.get_concrete_function()
        concrete["tag_tower"] = tag_tower.get_concrete_function()
        if tags is not None:
            vocabulary = resolve_tag_vocabulary(tags, getattr(model, "feature_config", None))
            max_k = DEFAULT_TOP_TAGS_MAX_K if top_tags_max_k is None else top_tags_max_k
            concrete[TOP_TAGS] = top_tags_function(
                model, user_experts, concrete["tag_tower"], vocabulary, max_k, list(model.tasks)
            )
        return concrete

    def warmup_inputs(
        self,
        model: tf.keras.Model,
        examples: Any,
        tags: Sequence[str | bytes] | None = None,
        feature_config: FeatureConfig | None = None,
        top_tags_k: int | None = None,
    ) -> dict[str, dict[str, Any]]:
        """``serving_default`` and ``user_tower`` on ``examples``, ``tag_tower`` on ``tags`` (default: two
        made-up tags of ``feature_config``), ``top_tags`` on ``examples`` and ``k = top_tags_k``."""
        import numpy as np

        raw = tags if tags is not None else [f"{feature_config.tag_field.name}_{i}" for i in range(2)]  # made up
        encoded = [t.encode() if isinstance(t, str) else t for t in raw]
        requests = super().warmup_inputs(model, examples)
        requests["user_tower"] = {EXAMPLES_INPUT: examples}
        requests["tag_tower"] = {TAGS_INPUT: np.array(encoded, dtype=object)}
        if top_tags_k is not None:
            requests[TOP_TAGS] = {EXAMPLES_INPUT: examples, K_INPUT: np.array(top_tags_k, dtype=np.int32)}
        return requests


@register_family
class RankingFamily(ModelFamily):
    name = "ranking"
    config_class = RankingConfig
    model_class = RankingModel
    architectures = RANKING_ARCHITECTURES
    renamed = {"app_store": "app_store"}

    def make_config(self, model_name: str, overrides: Mapping[str, Any], scale: float = 1.0) -> Any:
        """``ranking_app_store`` starts from :data:`~mvke_tf.models.ranking.APP_STORE`'s fields."""
        preset = APP_STORE.to_dict() if model_name == APP_STORE.model_type else {}
        return super().make_config(model_name, {**preset, **overrides}, scale)

    def input_fields(
        self, feature_config: FeatureConfig, config: Any, columns: Collection[str] | None = None
    ) -> tuple[FieldSpec, ...]:
        """The user fields, the item's tags and, where the data has it, the item id (see :func:`ranking_fields`)."""
        has_item = columns is None or ITEM_ID in columns
        return ranking_fields(feature_config, item_id=ITEM_ID if has_item else None)

    def build(
        self, feature_config: FeatureConfig, config: Any, fields: Sequence[FieldSpec] | None = None
    ) -> tf.keras.Model:
        return build_ranking_model(fields or self.input_fields(feature_config, config), config)

    def dataset_config(self, feature_config: FeatureConfig, model: tf.keras.Model) -> FeatureConfig:
        return ranking_feature_config(feature_config, model.fields)

    def compile(self, model: tf.keras.Model, learning_rate: float = 1e-3) -> tf.keras.Model:
        """As every family (BCE, AUC); a task with a ``regression`` head gets MSE and RMSE instead."""
        heads = model.config.heads
        if "regression" not in heads.values():
            return compile_per_task(model, model.config.loss_weights, learning_rate)
        binary = {t for t, h in heads.items() if h == "binary"}
        model.compile(
            optimizer=tf.keras.optimizers.Adam(learning_rate),
            loss={
                t: tf.keras.losses.BinaryCrossentropy() if t in binary else tf.keras.losses.MeanSquaredError()
                for t in heads
            },
            loss_weights=model.config.loss_weights,
            metrics={
                t: [tf.keras.metrics.AUC(name="auc", num_thresholds=2000)]
                if t in binary
                else [tf.keras.metrics.RootMeanSquaredError(name="rmse")]
                for t in heads
            },
        )
        return model

    def extra_inputs(self, model: tf.keras.Model) -> dict[str, tf.io.FixedLenFeature]:
        """The dense inputs (``[size]`` floats where a dense input is a vector), a missing one NaN (the
        model reads NaN as 0)."""
        return {
            n: tf.io.FixedLenFeature(
                [k] if k > 1 else [], tf.float32, default_value=[math.nan] * k if k > 1 else math.nan
            )
            for n, k in zip(model.dense_fields, model.dense_sizes)
        }


@register_family
class MultiDomainFamily(ModelFamily):
    name = "multi_domain"
    config_class = MultiDomainConfig
    model_class = MultiDomainModel
    architectures = MULTIDOMAIN_ARCHITECTURES
    renamed = {"m3oe": "m3oe", "star": "star", **{f"md_{a}": a for a in ("mlp", "shared_bottom", "mmoe", "ple")}}
    has_domains = True
    # The bi-level loop (mvke_tf.models.multidomain_training.train_multidomain) runs on one device.
    strategies = ("default",)

    def build(
        self, feature_config: FeatureConfig, config: Any, fields: Sequence[FieldSpec] | None = None
    ) -> tf.keras.Model:
        model = MultiDomainModel(config, fields or self.input_fields(feature_config, config), name=config.model_type)
        model.build_weights()
        return model

    def extra_inputs(self, model: tf.keras.Model) -> dict[str, tf.io.FixedLenFeature]:
        """The domain id; a missing one parses as -1, which the model rejects (never a default tower)."""
        return {model.config.domain_feature: tf.io.FixedLenFeature([], tf.int64, default_value=-1)}

    def made_up_columns(self, model: tf.keras.Model, n: int) -> dict[str, list]:
        return {model.config.domain_feature: [i % model.config.domains for i in range(n)]}

    def compile(self, model: tf.keras.Model, learning_rate: float = 1e-3) -> tf.keras.Model:
        """Adam for the model's weights; M3oE's fusion weights get their own Adam (bi-level training)."""
        model.compile(
            optimizer=tf.keras.optimizers.Adam(learning_rate),
            fusion_optimizer=tf.keras.optimizers.Adam(learning_rate),
        )
        return model

    def dataset_columns(self, config: Any) -> tuple[str, ...]:
        return (config.domain_feature,)

    def domain_feature(self, config: Any) -> str | None:
        return config.domain_feature

    def needs_held_out(self, config: Any) -> bool:
        """M3oE with the paper's bi-level schedule trains alpha / beta on held-out batches."""
        return config.architecture == "m3oe" and config.fusion == "bilevel"

    def fit(
        self,
        model: tf.keras.Model,
        train: tf.data.Dataset,
        *,
        epochs: int = 1,
        steps_per_epoch: int | None = None,
        held_out: tf.data.Dataset | None = None,
        validation: tf.data.Dataset | None = None,
        validation_steps: int | None = None,
        callbacks: Sequence[tf.keras.callbacks.Callback] = (),
        verbose: int = 1,
    ) -> dict[str, list[float]]:
        """The model's fusion schedule (:func:`~mvke_tf.models.multidomain_training.train_multidomain`); the history
        adds ``fusion_loss`` and the fusion weights after each epoch (``alpha_domain``, ...). A custom loop
        (two optimisers, two data streams) that runs the Keras ``callbacks`` where ``fit`` runs them.
        """
        if self.needs_held_out(model.config) and held_out is None:
            raise ConfigError(
                f"{model.config.model_type} (fusion: bilevel) trains its fusion weights on held-out batches and got "
                "none; fix: give a held-out split (a val/ directory, a pipeline val_pattern) or set fusion: code"
            )
        return train_multidomain(
            model,
            train,
            held_out,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            validation=validation,
            validation_steps=validation_steps,
            callbacks=callbacks,
            verbose=verbose,
        )

    def training_summary(self, model: tf.keras.Model) -> dict[str, Any]:
        """The learned fusion weights alpha / beta (after the sigmoid), for M3oE."""
        values = model.fusion_values()
        return {"fusion_weights": values} if values else {}


__all__ = ["MultiDomainFamily", "RankingFamily", "UserTagFamily"]
