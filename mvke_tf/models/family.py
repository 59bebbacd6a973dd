"""Model families: what the command line, training, export and the TFX module files need to know
about a model, declared once per family.

Three families share the interface of :class:`ModelFamily`:

* ``user_tag``: the two-tower user-tagging models (MVKE and the paper's baselines,
  :class:`~mvke_tf.models.user_tag.UserTagModel`); exported with ``serving_default``, ``user_tower``
  and ``tag_tower``;
* ``ranking``: the pair-ranking models (the app-store MMoE + FM + ESMM model and its baselines,
  :class:`~mvke_tf.models.ranking.RankingModel`); ``serving_default`` only;
* ``multi_domain``: the multi-domain multi-task models (M3oE, STAR and their baselines,
  :class:`~mvke_tf.models.multidomain.MultiDomainModel`); ``serving_default`` only, the domain id
  being one of the features.

Each family names the models a user picks (``--model``), its config class, the fields its models
read from a dataset's :class:`~mvke_tf.config.FeatureConfig`, how a model is built and compiled, and
builds its export's serving signatures and their warm-up requests (:meth:`ModelFamily.serving_signatures`,
:meth:`ModelFamily.warmup_inputs`; the TFX examples' ``make_serving_signatures``, once per family). What
a family can do is declared as attributes (:attr:`ModelFamily.has_tag_tower`,
:attr:`ModelFamily.has_domains`), never read off its signature names. Every model has the attributes
``config``, ``fields`` and ``tasks``. Code outside this package dispatches through :func:`family_of` and
never tests a model's class.

Families are registered (:func:`register_family`, also a class decorator): :data:`FAMILIES` and
:data:`MODEL_NAMES` hold what is registered, the three above at import; a family defined elsewhere
(e.g. in a test) is registered the same way and then works with every entry point.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import tensorflow as tf

from mvke_tf.config import STRATEGIES, ConfigError, FeatureConfig, FieldSpec
from mvke_tf.models.compiling import build_training_state, compile_per_task
from mvke_tf.models.config import MODEL_TYPES, ModelConfig
from mvke_tf.models.multidomain import MULTIDOMAIN_MODEL_TYPES, MultiDomainConfig, MultiDomainModel
from mvke_tf.models.multidomain_training import train_multidomain
from mvke_tf.models.ranking import (
    ITEM_ID,
    RANKING_MODEL_NAMES,
    RankingConfig,
    RankingModel,
    build_ranking_model,
    ranking_config_for,
    ranking_feature_config,
    ranking_fields,
)
from mvke_tf.models.user_tag import UserTagModel, build_model

MULTIDOMAIN_PREFIX = "md_"
"""Multi-domain variants that share a name with a two-tower or ranking type are offered as ``md_<type>``
(``md_mmoe``, ``md_ple``, ``md_shared_bottom``, ``md_mlp``); ``m3oe`` and ``star`` keep their names."""


EXAMPLES_INPUT = "examples"  # serving_default, user_tower, top_tags: serialized tf.Example [batch]
TAGS_INPUT = "tags"  # tag_tower: one raw tag per row [batch]


def examples_spec() -> tf.TensorSpec:
    """The input of every signature on serialized ``tf.Example``: ``examples: string [batch]``."""
    return tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)


class ModelFamily(abc.ABC):
    """One family of models: its names, config, fields, builder, compile step, capabilities and signatures."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    model_class: ClassVar[type]
    model_names: ClassVar[tuple[str, ...]]
    """The names a user picks on the command line and in pipeline configs."""
    signatures: ClassVar[tuple[str, ...]] = ("serving_default",)
    """The names of the signatures :meth:`serving_signatures` builds (see :mod:`mvke_tf.export.saved_model`),
    besides ``top_tags``."""
    has_tag_tower: ClassVar[bool] = False
    """Whether the models score users against tags through a tag tower: the export has ``user_tower`` and
    ``tag_tower`` and, given a tag vocabulary, ``top_tags``."""
    has_domains: ClassVar[bool] = False
    """Whether each example names its domain (a feature, :meth:`domain_feature`) and the model scores each
    domain apart."""
    strategies: ClassVar[tuple[str, ...]] = STRATEGIES
    """The ``tf.distribute`` strategies its training runs under (:data:`mvke_tf.config.STRATEGIES`)."""

    @abc.abstractmethod
    def config_for(self, model_name: str, overrides: Mapping[str, Any] | None = None, scale: float = 1.0) -> Any:
        """The config of ``model_name`` (one of :attr:`model_names`) with ``overrides`` applied."""

    def config_from_dict(self, d: Mapping[str, Any]) -> Any:
        return self.config_class.from_dict(d)

    def input_fields(
        self, feature_config: FeatureConfig, config: Any, columns: Collection[str] | None = None
    ) -> tuple[FieldSpec, ...]:
        """The fields a model of ``config`` reads from data described by ``feature_config``.

        ``columns``: the data's columns, when known (a family may read an optional column, e.g. the
        ranking models' item id, only where the data has it); None: every optional column is there.
        """
        return (*feature_config.user_fields, feature_config.tag_field)

    @abc.abstractmethod
    def build(
        self, feature_config: FeatureConfig, config: Any, fields: Sequence[FieldSpec] | None = None
    ) -> tf.keras.Model:
        """A model with its weights created; ``fields``: from :meth:`input_fields` (default: all there)."""

    def dataset_config(self, feature_config: FeatureConfig, model: tf.keras.Model) -> FeatureConfig:
        """The feature config under which :func:`~mvke_tf.data.dataset.make_dataset` yields the
        model's every input."""
        return feature_config

    def compile(self, model: tf.keras.Model, learning_rate: float = 1e-3) -> tf.keras.Model:
        """Adam, per-task binary cross-entropy weighted by the config, per-task AUC."""
        return compile_per_task(model, model.config.loss_weights, learning_rate)

    def dataset_columns(self, config: Any) -> tuple[str, ...]:
        """Integer data columns a model of ``config`` reads besides its fields (passed through as
        features, e.g. a domain id)."""
        return ()

    def domain_feature(self, config: Any) -> str | None:
        """The feature naming each example's domain, for models that score every domain apart; else None.

        The pipeline's Evaluator slices by it and blesses on the mean AUC over (domain, task).
        """
        return None

    def needs_held_out(self, config: Any) -> bool:
        """Whether training reads a held-out stream besides the training data (e.g. M3oE's upper level)."""
        return False

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
        """Trains a compiled model; returns the per-epoch history (``loss``, ``val_*`` with ``validation``).

        ``train`` and ``validation`` yield ``(features, labels)`` batches; with ``steps_per_epoch`` the
        training data may repeat. ``held_out``: see :meth:`needs_held_out`.
        """
        build_training_state(model, train)  # one trace of the train step instead of two
        history = model.fit(
            train,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation,
            validation_steps=validation_steps,
            callbacks=list(callbacks),
            verbose=verbose,
        )
        return dict(history.history)

    def training_summary(self, model: tf.keras.Model) -> dict[str, Any]:
        """What training learned besides the weights that a run should log (e.g. fusion weights)."""
        return {}

    def extra_inputs(self, model: tf.keras.Model) -> dict[str, tf.io.FixedLenFeature]:
        """Inputs besides ``model.fields`` that ``serving_default`` parses from a raw example."""
        return {}

    def made_up_columns(self, model: tf.keras.Model, n: int) -> dict[str, list]:
        """Values of :meth:`extra_inputs` for ``n`` made-up rows (warm-up requests), when they have no
        usable default."""
        return {}

    def serve(self, model: tf.keras.Model, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """``serving_default``'s outputs for parsed (and, in a pipeline, transformed) ``features``."""
        return model(dict(features), training=False)

    def serving_signatures(
        self,
        model: tf.keras.Model,
        inputs: Any,
        *,
        tags: Any = None,
        top_tags_max_k: int | None = None,
    ) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """The traced serving signatures of ``model`` (the names of :attr:`signatures`) over the input step
        ``inputs`` (:class:`mvke_tf.export.saved_model.RawInputs` or the pipeline's Transform step).

        This one: ``serving_default`` (:meth:`serve` on the examples parsed as ``model.fields`` and
        :meth:`extra_inputs`). ``tags``, ``top_tags_max_k``: the ``top_tags`` signature, for families with
        a tag tower (:attr:`has_tag_tower`); any other family raises ValueError given ``tags``.
        """
        if tags is not None:
            raise ValueError(
                f"tags: a top_tags signature needs a two-tower (user tagging) model; {self.name} models have "
                f"{list(self.signatures)}; fix: export without a tag vocabulary"
            )
        extra = self.extra_inputs(model)

        @tf.function(input_signature=[examples_spec()])
        def serving_default(examples: tf.Tensor) -> dict[str, tf.Tensor]:
            return self.serve(model, inputs.features(examples, model.fields, extra))

        return {"serving_default": serving_default.get_concrete_function()}

    def warmup_inputs(
        self,
        model: tf.keras.Model,
        examples: Any,
        tags: Sequence[str | bytes] | None = None,
        feature_config: FeatureConfig | None = None,
        top_tags_k: int | None = None,
    ) -> dict[str, dict[str, Any]]:
        """One warm-up request (``{input name: batch}``) per signature of :meth:`serving_signatures`, in
        the order of :attr:`signatures`, given made-up serialized ``examples`` (a numpy object array).

        ``tags``, ``feature_config``: raw tags for a tag tower (default: made up from ``feature_config``);
        ``top_tags_k``: the ``k`` of a ``top_tags`` request (None: the export has no ``top_tags``).
        """
        return {"serving_default": {EXAMPLES_INPUT: examples}}

    def owns(self, thing: Any) -> bool:
        """Whether ``thing`` (a model name, a config or a model) belongs to this family."""
        if isinstance(thing, str):
            return thing in self.model_names
        return isinstance(thing, (self.config_class, self.model_class))


FAMILIES: dict[str, ModelFamily] = {}
"""The registered families by name, in registration order (:func:`register_family`)."""


class _ModelNames(Sequence):
    """Every registered model name, in family order: a live view of :data:`FAMILIES`."""

    def _names(self) -> tuple[str, ...]:
        return tuple(n for f in FAMILIES.values() for n in f.model_names)

    def __getitem__(self, i):  # type: ignore[override]
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


MODEL_NAMES: Sequence[str] = _ModelNames()
"""Every model name, in family order (of the families registered now)."""

_F = TypeVar("_F", ModelFamily, type)


def register_family(family: _F) -> _F:
    """Registers a model family (an instance, or a :class:`ModelFamily` subclass, which is instantiated:
    ``@register_family`` decorates a family class); returns its argument.

    Raises:
      ConfigError: when its name or one of its model names is taken (by a family or a model name).
      TypeError: when ``family`` is no :class:`ModelFamily`.
    """
    instance = family() if isinstance(family, type) else family
    if not isinstance(instance, ModelFamily):
        raise TypeError(f"register_family: {family!r} is no ModelFamily; fix: subclass {ModelFamily.__qualname__}")
    name = instance.name
    if name in FAMILIES or name in MODEL_NAMES:
        raise ConfigError(
            f"model family {name!r}: name is taken; fix: pick another name, or unregister_family({name!r}) first"
        )
    taken = sorted(n for n in instance.model_names if n in MODEL_NAMES or n in FAMILIES or n == name)
    if taken or len(set(instance.model_names)) != len(instance.model_names):
        raise ConfigError(
            f"model family {name!r}: model_names {taken or list(instance.model_names)} are taken or repeated; "
            "fix: give each model a name no registered family uses"
        )
    FAMILIES[name] = instance
    return family


def unregister_family(name: str) -> ModelFamily:
    """Removes the family ``name`` from the registry; returns it."""
    if name not in FAMILIES:
        raise ConfigError(f"model family {name!r} is not registered; fix: use one of {', '.join(FAMILIES)}")
    return FAMILIES.pop(name)


@register_family
class UserTagFamily(ModelFamily):
    name = "user_tag"
    config_class = ModelConfig
    model_class = UserTagModel
    model_names = MODEL_TYPES
    signatures = ("serving_default", "user_tower", "tag_tower")
    has_tag_tower = True

    def config_for(self, model_name: str, overrides: Mapping[str, Any] | None = None, scale: float = 1.0) -> Any:
        config = ModelConfig.from_dict({**ModelConfig(model_type=model_name).to_dict(), **dict(overrides or {})})
        return config.scaled(scale) if scale != 1.0 else config

    def build(
        self, feature_config: FeatureConfig, config: Any, fields: Sequence[FieldSpec] | None = None
    ) -> tf.keras.Model:
        return build_model(feature_config, config)

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
        :func:`~mvke_tf.export.top_tags.resolve_tag_vocabulary` takes it), ``top_tags`` with ``k`` up to
        ``top_tags_max_k`` (default :data:`~mvke_tf.export.top_tags.DEFAULT_TOP_TAGS_MAX_K`)."""
        from mvke_tf.export.top_tags import DEFAULT_TOP_TAGS_MAX_K, TOP_TAGS, resolve_tag_vocabulary, top_tags_function

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

        from mvke_tf.export.examples import dummy_tags
        from mvke_tf.export.top_tags import K_INPUT, TOP_TAGS

        raw = tags if tags is not None else dummy_tags(feature_config, 2)
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
    model_names = RANKING_MODEL_NAMES

    def config_for(self, model_name: str, overrides: Mapping[str, Any] | None = None, scale: float = 1.0) -> Any:
        if scale != 1.0:
            raise ConfigError("--scale applies to the two-tower models; size a ranking model with --config")
        return ranking_config_for(model_name, overrides)

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
    model_names = tuple(t if t in ("m3oe", "star") else MULTIDOMAIN_PREFIX + t for t in MULTIDOMAIN_MODEL_TYPES)
    has_domains = True
    # The bi-level loop (mvke_tf.models.multidomain_training.train_multidomain) runs on one device.
    strategies = ("default",)

    def config_for(self, model_name: str, overrides: Mapping[str, Any] | None = None, scale: float = 1.0) -> Any:
        if scale != 1.0:
            raise ConfigError("--scale applies to the two-tower models; size a multi-domain model with --config")
        if model_name not in self.model_names:
            raise ConfigError(f"model {model_name!r} is not a multi-domain model; fix: use one of {self.model_names}")
        overrides = dict(overrides or {})
        if "model_type" in overrides:
            raise ConfigError(
                f"model {model_name!r}: the name sets model_type; fix: drop model_type from the overrides"
            )
        return MultiDomainConfig.from_dict({**overrides, "model_type": model_name.removeprefix(MULTIDOMAIN_PREFIX)})

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
        return config.model_type == "m3oe" and config.fusion == "bilevel"

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
        adds ``fusion_loss`` and the fusion weights after each epoch (``alpha_domain``, ...).

        A custom loop (two optimisers, two data streams): Keras ``callbacks`` are not run.
        """
        if self.needs_held_out(model.config) and held_out is None:
            raise ConfigError(
                "m3oe (fusion: bilevel) trains its fusion weights on held-out batches and got none; fix: give "
                "a held-out split (a val/ directory, a pipeline val_pattern) or set fusion: code"
            )
        return train_multidomain(
            model,
            train,
            held_out,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            validation=validation,
            validation_steps=validation_steps,
            verbose=verbose,
        )

    def training_summary(self, model: tf.keras.Model) -> dict[str, Any]:
        """The learned fusion weights alpha / beta (after the sigmoid), for M3oE."""
        values = model.fusion_values()
        return {"fusion_weights": values} if values else {}


def family_of(thing: Any) -> ModelFamily:
    """The family of a model name, a family name, a config or a model.

    Raises:
      ConfigError: naming the known models, when ``thing`` belongs to none.
    """
    if isinstance(thing, str) and thing in FAMILIES:
        return FAMILIES[thing]
    for family in FAMILIES.values():
        if family.owns(thing):
            return family
    shown = thing if isinstance(thing, str) else type(thing).__name__
    raise ConfigError(f"model {shown!r} is in no model family; fix: use one of {', '.join(MODEL_NAMES)}")


def config_for_data(
    model_name: str,
    feature_config: FeatureConfig,
    overrides: Mapping[str, Any] | None = None,
    scale: float = 1.0,
) -> Any:
    """The config of ``model_name`` for the data ``feature_config`` describes: ``overrides`` applied, and the
    tasks the data's labels (``feature_config.labels``, in order) unless ``overrides`` name them.

    The one place every entry point (``train_and_evaluate`` given a model name, ``mvke-tf train``, the
    pipeline's Trainer) takes a model's tasks from the data; a config class's own default tasks are the
    papers' and hold only for a config built by hand.
    """
    overrides = dict(overrides or {})
    if "tasks" not in overrides:
        overrides["tasks"] = list(feature_config.labels)
    return family_of(model_name).config_for(model_name, overrides, scale)
