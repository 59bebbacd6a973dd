"""Model families: what the command line, training, export and the TFX module files need to know
about a model, declared once per family; and how models are named.

Three families share the interface of :class:`ModelFamily` (:mod:`mvke_tf.models.families`):

* ``user_tag``: the two-tower user-tagging models (MVKE and the paper's baselines,
  :class:`~mvke_tf.models.user_tag.UserTagModel`); exported with ``serving_default``, ``user_tower``
  and ``tag_tower``;
* ``ranking``: the pair-ranking models (the app-store MMoE + FM + ESMM model and its baselines,
  :class:`~mvke_tf.models.ranking.RankingModel`); ``serving_default`` only;
* ``multi_domain``: the multi-domain multi-task models (M3oE, STAR and their baselines,
  :class:`~mvke_tf.models.multidomain.MultiDomainModel`); ``serving_default`` only, the domain id
  being one of the features.

Model names. A model's name is ``<family name>_<architecture>``; the models of :data:`DEFAULT_FAMILY`
(``user_tag``, the library's first family: the MVKE paper's models) drop the prefix:

* ``user_tag``: ``two_tower``, ``hard_sharing``, ``moe``, ``mmoe``, ``cgc``, ``mvke_st``, ``mvke_mt``;
* ``ranking``: ``ranking_app_store``, ``ranking_single_task``, ``ranking_shared_bottom``, ``ranking_omoe``,
  ``ranking_mmoe``, ``ranking_ple``;
* ``multi_domain``: ``multi_domain_m3oe``, ``multi_domain_star``, ``multi_domain_mlp``,
  ``multi_domain_shared_bottom``, ``multi_domain_mmoe``, ``multi_domain_ple``.

A family lists its architectures once (:attr:`ModelFamily.architectures`) and derives its names from them
(:attr:`ModelFamily.prefix`, :attr:`ModelFamily.model_names`), so a family registered later follows the rule
by itself. The name is the same string everywhere: the library, ``mvke-tf train --model``, ``mvke-tf pipeline
run --model``, a pipeline config's ``model:`` and the ``model_type`` of the family's config object
(:class:`FamilyConfig`, whose :attr:`~FamilyConfig.architecture` is the name less the prefix). The names of
mvke-tf 0.1.0 (``app_store``, ``m3oe``, ``star``, ``md_<architecture>``, and a bare architecture as a ranking
or multi-domain config's ``model_type``) are accepted until mvke-tf 0.2, with a one-line FutureWarning each:
every entry point resolves a name through :func:`canonical_model_name`.

Each family names its models, its config class, the fields its models read from a dataset's
:class:`~mvke_tf.config.FeatureConfig`, how a model is built and compiled, and builds its export's serving
signatures and their warm-up requests (:meth:`ModelFamily.serving_signatures`,
:meth:`ModelFamily.warmup_inputs`; the TFX examples' ``make_serving_signatures``, once per family). What
a family can do is declared as attributes (:attr:`ModelFamily.has_tag_tower`,
:attr:`ModelFamily.has_domains`), never read off its signature names. Every model has the attributes
``config``, ``fields`` and ``tasks``. Code outside this package dispatches through :func:`family_of` and
never tests a model's class.

Families are registered (:func:`register_family`, also a class decorator): :data:`FAMILIES` and
:data:`MODEL_NAMES` hold what is registered, the three above once :mod:`mvke_tf.models` is imported (it
imports :mod:`mvke_tf.models.families`; this module imports no model, so that the config modules can import
it); a family defined elsewhere (e.g. in a test) is registered the same way and then works with every entry
point.
"""

from __future__ import annotations

import abc
import importlib
import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import tensorflow as tf

from mvke_tf.config import STRATEGIES, ConfigError, FeatureConfig, FieldSpec, SerializableConfig
from mvke_tf.models.compiling import build_training_state, compile_per_task

DEFAULT_FAMILY = "user_tag"
"""The family whose model names are its architectures alone (no prefix): the library's first family."""
RENAMED_UNTIL = "mvke-tf 0.2"
"""Until when the names of mvke-tf 0.1.0 are accepted (:func:`canonical_model_name`)."""


def model_prefix(family_name: str) -> str:
    """The prefix of the family ``family_name``'s model names: none for :data:`DEFAULT_FAMILY`,
    ``<family name>_`` for every other family."""
    return "" if family_name == DEFAULT_FAMILY else f"{family_name}_"


EXAMPLES_INPUT = "examples"  # serving_default, user_tower, top_tags: serialized tf.Example [batch]
TAGS_INPUT = "tags"  # tag_tower: one raw tag per row [batch]


def examples_spec() -> tf.TensorSpec:
    """The input of every signature on serialized ``tf.Example``: ``examples: string [batch]``."""
    return tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)


class ModelFamily(abc.ABC):
    """One family of models: its names, config, fields, builder, compile step, capabilities and signatures.

    A family declares :attr:`name`, :attr:`config_class`, :attr:`model_class`, :attr:`architectures` and
    :meth:`build`; the rest has defaults.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    model_class: ClassVar[type]
    architectures: ClassVar[tuple[str, ...]]
    """The family's architectures, listed once; its model names are derived from them (:attr:`model_names`)."""
    renamed: ClassVar[Mapping[str, str]] = {}
    """Model names of mvke-tf 0.1.0 that broke the naming rule -> the architecture they name now (accepted
    until :data:`RENAMED_UNTIL`, :func:`canonical_model_name`)."""
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

    @property
    def prefix(self) -> str:
        """What the family's model names start with: :func:`model_prefix` of its name."""
        return model_prefix(self.name)

    @property
    def model_names(self) -> tuple[str, ...]:
        """The names a user picks on the command line and in pipeline configs: :attr:`prefix` + architecture."""
        return tuple(self.prefix + a for a in self.architectures)

    def config_for(self, model_name: str, overrides: Mapping[str, Any] | None = None, scale: float = 1.0) -> Any:
        """The config of ``model_name`` (one of :attr:`model_names`, or an old name of one) with ``overrides``
        (fields of :attr:`config_class`, never ``model_type``: the name sets it) applied; ``scale``: see
        :meth:`make_config`."""
        name = canonical_model_name(model_name)
        if name not in self.model_names:
            raise ConfigError(
                f"model {model_name!r} is not a {self.name} model; fix: use one of {', '.join(self.model_names)}"
            )
        overrides = dict(overrides or {})
        if "model_type" in overrides:
            raise ConfigError(f"model {name!r}: the name sets model_type; fix: drop model_type from the overrides")
        return self.make_config(name, overrides, scale)

    def make_config(self, model_name: str, overrides: Mapping[str, Any], scale: float = 1.0) -> Any:
        """:meth:`config_for`'s config of ``model_name`` (one of :attr:`model_names`). This one: the config
        class's defaults, ``overrides`` and ``model_type=model_name``; no ``scale`` but 1."""
        if scale != 1.0:
            raise ConfigError(
                f"--scale applies to the two-tower models; size a {self.name.replace('_', '-')} model with --config"
            )
        return self.config_class.from_dict({**overrides, "model_type": model_name})

    def config_from_dict(self, d: Mapping[str, Any]) -> Any:
        """A config of this family from its ``to_dict`` (an older version's too: see :class:`FamilyConfig`)."""
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
            return canonical_model_name(thing) in self.model_names
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
      ConfigError: when its name or one of its model names is taken (by a family, a model name or an old
        model name), or its model names break the naming rule (:attr:`ModelFamily.model_names`).
      TypeError: when ``family`` is no :class:`ModelFamily`.
    """
    instance = family() if isinstance(family, type) else family
    if not isinstance(instance, ModelFamily):
        raise TypeError(f"register_family: {family!r} is no ModelFamily; fix: subclass {ModelFamily.__qualname__}")
    name = instance.name
    old = {n for f in FAMILIES.values() for n in f.renamed}
    if name in FAMILIES or name in MODEL_NAMES or name in old:
        raise ConfigError(
            f"model family {name!r}: name is taken; fix: pick another name, or unregister_family({name!r}) first"
        )
    names = tuple(instance.model_names)
    if names != tuple(instance.prefix + a for a in getattr(instance, "architectures", ())) or not names:
        raise ConfigError(
            f"model family {name!r}: model_names {list(names)} are not {instance.prefix!r} + each of its "
            "architectures; fix: list the architectures (ModelFamily.architectures) and let the family name them"
        )
    taken = sorted(n for n in names if n in MODEL_NAMES or n in FAMILIES or n == name or n in old)
    if taken or len(set(names)) != len(names):
        raise ConfigError(
            f"model family {name!r}: model_names {taken or list(names)} are taken or repeated; "
            "fix: give each model a name no registered family uses"
        )
    FAMILIES[name] = instance
    return family


def unregister_family(name: str) -> ModelFamily:
    """Removes the family ``name`` from the registry; returns it."""
    if name not in FAMILIES:
        raise ConfigError(f"model family {name!r} is not registered; fix: use one of {', '.join(FAMILIES)}")
    return FAMILIES.pop(name)


_warned: set[tuple[str, str]] = set()  # (old name, new name) already warned of in this process


def canonical_model_name(name: str, family: str | None = None) -> str:
    """``name`` under the naming rule (module docstring): a model name of mvke-tf 0.1.0 becomes its name now,
    with a one-line FutureWarning (once per old name and process); any other name (a current one, or an
    unknown one: the caller's lookup names the known ones) is returned as it is.

    Every entry point resolves the name a user gives through this function: :func:`family_of`,
    :meth:`ModelFamily.config_for`, :func:`config_for_data`, the family configs (:class:`FamilyConfig`), the
    pipeline's config and the command line.

    Args:
      name: a model name; the old ones are each family's :attr:`ModelFamily.renamed` (``app_store``,
        ``m3oe``, ``star``, ``md_<architecture>``).
      family: the family whose config holds ``name`` as its ``model_type``: there a bare architecture of a
        family with a prefix (``mmoe`` in a ``RankingConfig``: an older version's config) is an old name too.
    """
    if not isinstance(name, str):
        return name
    new = next((f.prefix + f.renamed[name] for f in FAMILIES.values() if name in f.renamed), None)
    owner = FAMILIES.get(family) if family is not None else None
    if new is None and owner is not None and owner.prefix and name in owner.architectures:
        new = owner.prefix + name
    if new is None:
        return name
    if (name, new) not in _warned:
        _warned.add((name, new))
        warnings.warn(
            f"model name {name!r} is now {new!r}; the old name is accepted until {RENAMED_UNTIL}",
            FutureWarning,
            stacklevel=3,
        )
    return new


def family_of(thing: Any) -> ModelFamily:
    """The family of a model name (an old one too: :func:`canonical_model_name`), a family name, a config or
    a model.

    Raises:
      ConfigError: naming the known models, when ``thing`` belongs to none.
    """
    if isinstance(thing, str):
        if thing in FAMILIES:
            return FAMILIES[thing]
        thing = canonical_model_name(thing)
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
    model_name = canonical_model_name(model_name)
    return family_of(model_name).config_for(model_name, overrides, scale)


def build_model(
    feature_config: FeatureConfig, config: Any, fields: Sequence[FieldSpec] | None = None
) -> tf.keras.Model:
    """The model of ``config`` (a config of any family: ``UserTagConfig``, ``RankingConfig``,
    ``MultiDomainConfig``, ...), its weights created: :meth:`ModelFamily.build` of :func:`family_of` ``config``.

    ``fields``: the model's input fields (default: those :meth:`ModelFamily.input_fields` reads from data
    with every optional column).
    """
    return family_of(config).build(feature_config, config, fields)


class FamilyConfig(SerializableConfig):
    """What the config classes of the families share: ``model_type`` holds the model's full name (the one
    it was made from, :func:`config_for_data`), :attr:`architecture` the name less the family's prefix.

    A subclass (a frozen dataclass with a ``model_type`` field) sets :attr:`family_name` and
    :attr:`architectures` and calls :meth:`_resolve_model_type` first in its ``__post_init__``: an old name
    (e.g. the bare architecture an older version serialized, in a model directory, a TFX ``custom_config``
    or a YAML file) then loads as its new name, with :func:`canonical_model_name`'s warning.
    """

    family_name: ClassVar[str]
    architectures: ClassVar[tuple[str, ...]]
    model_type: str

    @property
    def architecture(self) -> str:
        """The model's architecture: ``model_type`` less :func:`model_prefix` of the family."""
        return self.model_type.removeprefix(model_prefix(self.family_name))

    def _resolve_model_type(self) -> None:
        """``model_type`` resolved by :func:`canonical_model_name`; ConfigError unless one of the family's names."""
        name = canonical_model_name(self.model_type, self.family_name)
        object.__setattr__(self, "model_type", name)
        names = [model_prefix(self.family_name) + a for a in self.architectures]
        if name not in names:
            raise ConfigError(f"model_type={name!r} is not one of {', '.join(names)}; fix: pick one of them")


_FAMILY_CLASSES = ("UserTagFamily", "RankingFamily", "MultiDomainFamily")


def __getattr__(name: str) -> Any:
    # The built-in families live in mvke_tf.models.families (they import the models; this module imports none).
    if name in _FAMILY_CLASSES:
        return getattr(importlib.import_module("mvke_tf.models.families"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def renamed_attribute(module: str, namespace: Mapping[str, Any], renamed: Mapping[str, str], name: str) -> Any:
    """A module-level ``__getattr__``'s body for identifiers renamed since mvke-tf 0.1.0 (``renamed``: old name
    -> new name in ``namespace``): the new object, with a one-line FutureWarning."""
    if name not in renamed:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = renamed[name]
    warnings.warn(f"{name} is now {new}; the old name is accepted until {RENAMED_UNTIL}", FutureWarning, stacklevel=3)
    return namespace[new]
