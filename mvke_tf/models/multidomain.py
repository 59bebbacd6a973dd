"""Multi-domain multi-task (MDMT) models: M3oE (SIGIR 2024) and its baselines.

Every model embeds the same fields, flattens them to ``x [B, F * d]`` and ends in one
tower per (domain, task): ``Linear -> LayerNorm -> ReLU -> Linear -> sigmoid``. Each
sample is scored by its own domain's towers, and the loss is the sum over (domain,
task) of the binary cross-entropy averaged within that domain's samples of the batch.
A :class:`MultiDomainConfig`'s ``model_type`` is the model's name, ``multi_domain_<architecture>``
(:mod:`mvke_tf.models.family`); the architectures:

* ``mlp``: an independent MLP per (domain, task);
* ``shared_bottom``: one shared MLP;
* ``mmoe``: K shared experts, a softmax gate per (domain, task);
* ``ple``: one CGC level: K shared experts plus one specific expert per (domain, task),
  each (domain, task) gate mixing the shared experts and its own;
* ``star``: the STAR domain representation layer (star topology + MLP + skip);
* ``m3oe``: the STAR representation, then shared / domain / task experts fused by
  learned weights alpha, beta (:class:`~mvke_tf.layers.multidomain.FusedExperts`).

M3oE's fusion weights are trained by bi-level optimisation (``fusion="bilevel"``): the
model parameters by the main optimiser on training batches, the raw alpha / beta by a
second optimiser on held-out validation batches, alternating. ``fusion="code"`` is the
official code's schedule (alpha / beta in the main optimiser too, plus one extra
fusion step per epoch on a training batch); ``fusion="fixed"`` pins alpha = beta = 0.5.

This module's one job: the model, its config and the named presets. The rest lives apart:

* :mod:`mvke_tf.models.multidomain_training`: the bi-level training schedule
  (:func:`~mvke_tf.models.multidomain_training.train_multidomain`);
* :mod:`mvke_tf.models.multidomain_metrics`: predictions and the per (domain, task) AUCs
  (``predict_multidomain``, ``mdmt_metrics``).

Those names are still importable from here (resolved lazily: they import this module). The paper's comparison
settings (``fit_predict_in_setting``, ``SETTINGS``) are the benchmarks' harness, ``benchmarks.multidomain_settings``
in a checkout of the repository; asking this module for them says so.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mvke_tf.config import ConfigError, FieldSpec
from mvke_tf.layers.embedding import FieldsEmbedding, missing_inputs
from mvke_tf.layers.experts import SoftmaxGate, mix
from mvke_tf.layers.multidomain import FusedExperts, GroupedMLP, StarDomainLayer
from mvke_tf.models.family import FamilyConfig, model_prefix, renamed_attribute

MULTIDOMAIN_ARCHITECTURES = ("m3oe", "star", "mlp", "shared_bottom", "mmoe", "ple")
MULTIDOMAIN_MODEL_NAMES = tuple(model_prefix("multi_domain") + a for a in MULTIDOMAIN_ARCHITECTURES)
"""The multi-domain models' names: ``multi_domain_<architecture>`` (:mod:`mvke_tf.models.family`)."""
FUSION_MODES = ("bilevel", "code", "fixed")


@dataclasses.dataclass(frozen=True)
class MultiDomainConfig(FamilyConfig):
    """Architecture of an MDMT model. Sizes default to a CPU-scale version of the paper's.

    Attributes:
      model_type: the model's name, one of :data:`MULTIDOMAIN_MODEL_NAMES` (``multi_domain_<architecture>``;
        a bare architecture, as older versions wrote it, is accepted with a FutureWarning until mvke-tf 0.2).
      domains: number of domains D (domain ids are 0..D-1).
      tasks: task names, in order; each is an output and a label column.
      embedding_dim: field embedding size d.
      bottom_units: the STAR layer's units (star, m3oe; the first layer is the star
        layer), and the MLP of ``mlp`` and ``shared_bottom``. The code: [512, 256].
      skip_units: the STAR layer's skip MLP from x; the last size must equal
        ``bottom_units[-1]``. The code: [256].
      expert_units: every expert's ``[Linear -> LayerNorm -> ReLU]`` sizes (m3oe, mmoe, ple).
      num_shared_experts: K shared experts (m3oe, mmoe, ple).
      tower_units: hidden size of each (domain, task) tower.
      fusion: M3oE's fusion-weight schedule: ``bilevel`` (the paper), ``code`` (the
        official code) or ``fixed`` (alpha = beta = 0.5, not trained: "w/o AutoML").
      fusion_every: bilevel only: one fusion step on a validation batch after every
        ``fusion_every`` training steps.
      fusion_init: initial raw value of the fusion weights (sigmoid(1.0) = 0.73).
      domain_feature: the feature holding each sample's domain id.
    """

    config_name = "multi-domain config"
    family_name = "multi_domain"
    architectures = MULTIDOMAIN_ARCHITECTURES

    model_type: str = "multi_domain_m3oe"
    domains: int = 3
    tasks: tuple[str, ...] = ("click", "conversion")
    embedding_dim: int = 8
    bottom_units: tuple[int, ...] = (64, 32)
    skip_units: tuple[int, ...] = (32,)
    expert_units: tuple[int, ...] = (32, 32)
    num_shared_experts: int = 4
    tower_units: int = 16
    fusion: str = "bilevel"
    fusion_every: int = 1
    fusion_init: float = 1.0
    domain_feature: str = "domain"

    def __post_init__(self) -> None:
        for name in ("tasks", "bottom_units", "skip_units", "expert_units"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._resolve_model_type()
        if not isinstance(self.domains, int) or self.domains < 1:
            raise ConfigError(f"domains={self.domains!r} must be an integer >= 1")
        if (
            not self.tasks
            or len(set(self.tasks)) != len(self.tasks)
            or not all(isinstance(t, str) and t for t in self.tasks)
        ):
            raise ConfigError(
                f"tasks={list(self.tasks)} must be distinct, non-empty names; fix: e.g. [click, conversion]"
            )
        if self.architecture == "m3oe" and (self.domains < 2 or len(self.tasks) < 2):
            raise ConfigError(
                f"{self.model_type} fuses each domain's (task's) expert with the others: it needs domains >= 2 "
                f"and >= 2 tasks, got domains={self.domains}, tasks={list(self.tasks)}; fix: use multi_domain_star "
                "or multi_domain_mmoe"
            )
        if self.embedding_dim < 1:
            raise ConfigError(f"embedding_dim={self.embedding_dim} must be >= 1")
        for name in ("bottom_units", "skip_units", "expert_units"):
            units = getattr(self, name)
            if not units or any(not isinstance(u, int) or u < 1 for u in units):
                raise ConfigError(f"{name}={list(units)} must be a non-empty list of positive layer sizes")
        if self.skip_units[-1] != self.bottom_units[-1]:
            raise ConfigError(
                f"skip_units[-1]={self.skip_units[-1]} must equal bottom_units[-1]={self.bottom_units[-1]} "
                "(the skip output is added to the STAR MLP's); fix: make the last sizes equal"
            )
        if self.num_shared_experts < 1:
            raise ConfigError(f"num_shared_experts={self.num_shared_experts} must be >= 1")
        if self.tower_units < 1:
            raise ConfigError(f"tower_units={self.tower_units} must be >= 1")
        if self.fusion not in FUSION_MODES:
            raise ConfigError(
                f"fusion={self.fusion!r} is not one of {', '.join(FUSION_MODES)}; fix: 'bilevel' (the paper), "
                "'code' (the official code) or 'fixed' (alpha = beta = 0.5)"
            )
        if not isinstance(self.fusion_every, int) or self.fusion_every < 1:
            raise ConfigError(f"fusion_every={self.fusion_every!r} must be an integer >= 1")
        if not self.domain_feature:
            raise ConfigError("domain_feature: empty; fix: name the feature holding the domain id")


@dataclasses.dataclass(frozen=True)
class TrainingSchedule:
    """How an MDMT model is trained (:func:`~mvke_tf.models.multidomain_training.train_multidomain`'s settings
    as one value).

    Attributes:
      learning_rate: Adam learning rate of the model parameters.
      fusion_learning_rate: Adam learning rate of M3oE's fusion weights (upper level).
      weight_decay: Adam weight decay of both optimisers (Keras' decoupled form).
      lr_decay: factor on the main learning rate every ``lr_decay_every`` epochs (StepLR).
      lr_decay_every: epochs between two decays; 0 never decays.
      epochs: most epochs.
      patience: early stopping: stop after this many epochs without a better validation
        mean (domain, task) AUC and restore the best epoch's weights; None trains every epoch.
      batch_size: training batch size.
    """

    learning_rate: float = 3e-3
    fusion_learning_rate: float = 1e-3
    weight_decay: float = 0.0
    lr_decay: float = 1.0
    lr_decay_every: int = 0
    epochs: int = 3
    patience: int | None = None
    batch_size: int = 512

    def __post_init__(self) -> None:
        for name in ("learning_rate", "fusion_learning_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if not 0 < self.lr_decay <= 1 or self.lr_decay_every < 0:
            raise ConfigError(
                f"lr_decay={self.lr_decay!r}, lr_decay_every={self.lr_decay_every!r}: use a factor in (0, 1] "
                "and a number of epochs >= 0 (0: no decay)"
            )
        if self.epochs < 1 or self.batch_size < 1 or (self.patience is not None and self.patience < 1):
            raise ConfigError(
                f"epochs={self.epochs}, batch_size={self.batch_size}, patience={self.patience}: "
                "use epochs >= 1, batch_size >= 1 and patience >= 1 (or None)"
            )

    def train_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~mvke_tf.models.multidomain_training.train_multidomain` this schedule
        sets."""
        return {
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "fusion_learning_rate": self.fusion_learning_rate,
            "weight_decay": self.weight_decay,
            "lr_decay": self.lr_decay,
            "lr_decay_every": self.lr_decay_every,
            "patience": self.patience,
        }


PRESETS: dict[str, tuple[dict[str, Any], TrainingSchedule]] = {
    # The library's CPU scale: what benchmarks/multidomain_lineup.py has always run.
    "small": (
        dict(
            embedding_dim=8,
            bottom_units=(64, 32),
            skip_units=(32,),
            expert_units=(32, 32),
            num_shared_experts=4,
            tower_units=16,
            fusion="bilevel",
        ),
        TrainingSchedule(learning_rate=3e-3, fusion_learning_rate=1e-3, epochs=3, batch_size=512),
    ),
    # The official M3oE code's example (examples/run_movielens.py, MDMTRec, CTRTrainer):
    # embedding 16; fcn_dims [512, 256, 256, 64] = STAR [512, 256] + skip [256], experts
    # [256, 64], towers [64]; 4 shared experts; Adam lr 1e-2, weight decay 1e-5 (both
    # optimisers), fusion weights lr 1e-3; StepLR 0.85 every 4 epochs; 50 epochs with early
    # stopping on the validation mean (domain, task) AUC, patience 10. Its fusion schedule
    # is "code": its main optimiser's parameter filter (`~ flag(name)` on a bool, always
    # truthy) also hands it the fusion weights, and the fusion optimiser steps once per
    # epoch. Batch: the code's 40,960 would be one step per epoch on a few thousand rows;
    # 2,048 keeps about its ~20 steps per epoch (ML-1M) at this library's data sizes.
    "official": (
        dict(
            embedding_dim=16,
            bottom_units=(512, 256),
            skip_units=(256,),
            expert_units=(256, 64),
            num_shared_experts=4,
            tower_units=64,
            fusion="code",
        ),
        TrainingSchedule(
            learning_rate=1e-2,
            fusion_learning_rate=1e-3,
            weight_decay=1e-5,
            lr_decay=0.85,
            lr_decay_every=4,
            epochs=50,
            patience=10,
            batch_size=2048,
        ),
    ),
}


def preset(
    name: str, model_type: str = "multi_domain_m3oe", **overrides: Any
) -> tuple[MultiDomainConfig, TrainingSchedule]:
    """``(architecture, schedule)`` of a named preset (``PRESETS``) for the model ``model_type``.

    ``overrides`` replace architecture fields (``domains``, ``tasks``, ``fusion``, ...).
    Baselines use the preset's sizes where they have the part: ``bottom_units`` for
    mlp / shared_bottom / star, ``expert_units`` for mmoe / ple, ``tower_units`` for all.
    """
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is not one of {', '.join(PRESETS)}; fix: pick one of them")
    arch, schedule = PRESETS[name]
    return MultiDomainConfig(model_type=model_type, **{**arch, **overrides}), schedule


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class MultiDomainModel(tf.keras.Model):
    """An MDMT model: feature dict (with the domain id) -> ``{task: probability [B]}``.

    Inputs: the fields of ``fields`` (see
    :class:`~mvke_tf.layers.embedding.FieldsEmbedding`) and ``config.domain_feature``,
    ``[B]`` integer domain ids in ``[0, D)``. Internally: embeddings ``[B, F, d]`` ->
    ``x [B, F * d]`` -> body -> per (domain, task) representation ``[B, D, T, h]`` (or
    one shared ``[B, h]``) -> towers ``[B, D, T]`` logits -> each sample's own domain row
    ``[B, T]``.
    """

    def __init__(
        self,
        config: MultiDomainConfig | Mapping[str, Any],
        fields: Sequence[FieldSpec | Mapping[str, Any]],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config if isinstance(config, MultiDomainConfig) else MultiDomainConfig.from_dict(config)
        self.fields = tuple(s if isinstance(s, FieldSpec) else FieldSpec.from_dict(s) for s in fields)
        self.tasks = self.config.tasks
        c = self.config
        d, t = c.domains, len(c.tasks)
        self.embedding = FieldsEmbedding(self.fields, c.embedding_dim, name="embedding")
        self.star = self.fused = self.bottom = self.experts = self.specific = self.gates = None
        if c.architecture in ("star", "m3oe"):
            self.star = StarDomainLayer(d, c.bottom_units, c.skip_units, name="star")
        if c.architecture == "m3oe":
            self.fused = FusedExperts(
                d,
                t,
                c.num_shared_experts,
                c.expert_units,
                trainable_fusion=c.fusion != "fixed",
                fusion_init=c.fusion_init,
                name="fused_experts",
            )
        elif c.architecture == "mlp":
            self.bottom = GroupedMLP(c.bottom_units, d * t, name="mlps")
        elif c.architecture == "shared_bottom":
            self.bottom = GroupedMLP(c.bottom_units, 1, name="bottom")
        elif c.architecture in ("mmoe", "ple"):
            k = c.num_shared_experts
            self.experts = GroupedMLP(c.expert_units, k, name="shared_experts")
            if c.architecture == "ple":
                self.specific = GroupedMLP(c.expert_units, d * t, name="specific_experts")
                k += 1
            self.gates = SoftmaxGate(k, num_gates=d * t, name="gates")
        self.towers = GroupedMLP((c.tower_units,), d * t, output_dim=1, name="towers")
        self.fusion_optimizer: tf.keras.optimizers.Optimizer | None = None

    # ------------------------------------------------------------------ forward
    def _representation(self, x: tf.Tensor, domain: tf.Tensor) -> tf.Tensor:
        """``x [B, in]`` -> ``[B, D*T, h]`` (one row per tower) or ``[B, h]`` (shared by all)."""
        c = self.config
        d, t = c.domains, len(c.tasks)
        if c.architecture == "star":
            return self.star(x, domain)
        if c.architecture == "m3oe":
            fused = self.fused(self.star(x, domain))  # [B, D, T, h]
            return tf.reshape(fused, [-1, d * t, fused.shape[-1]])
        if c.architecture == "mlp":
            return self.bottom(x)
        if c.architecture == "shared_bottom":
            return self.bottom(x)[:, 0]
        experts = self.experts(x)  # [B, K, h]
        if c.architecture == "ple":
            own = self.specific(x)  # [B, D*T, h]: each (domain, task) gate also sees its own expert
            experts = tf.concat([tf.tile(experts[:, None], [1, d * t, 1, 1]), own[:, :, None]], axis=2)
        return mix(self.gates(x), experts)  # gates [B, D*T, K (+1)] -> [B, D*T, h]

    def _domain_ids(self, domain: tf.Tensor) -> tf.Tensor:
        """``[B]`` domain ids as int32, checked to lie in ``[0, D)``: an id out of range must fail (in
        serving: INVALID_ARGUMENT), not read another domain's tower or a clipped one."""
        c = self.config
        domain = tf.cast(domain, tf.int32)
        message = (
            f"{c.domain_feature}: a domain id outside [0, {c.domains}) (the model has {c.domains} domains); "
            f"fix: send each example's {c.domain_feature} as an integer in 0..{c.domains - 1}"
        )
        with tf.control_dependencies(
            [
                tf.debugging.assert_non_negative(domain, message=message),
                tf.debugging.assert_less(domain, tf.constant(c.domains, tf.int32), message=message),
            ]
        ):
            return tf.identity(domain)

    def build_weights(self) -> None:
        """Creates the weights with an all-missing batch of domain 0."""
        inputs = missing_inputs(self.fields)
        inputs[self.config.domain_feature] = tf.zeros([2], tf.int32)
        self(inputs)

    def logits(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Each sample's own-domain tower logits, ``[B, T]`` (tasks in config order)."""
        c = self.config
        if c.domain_feature not in features:
            raise KeyError(f"input features lack the domain id '{c.domain_feature}'")
        domain = self._domain_ids(features[c.domain_feature])
        emb = self.embedding(features)  # [B, F, d]
        x = tf.reshape(emb, [-1, emb.shape[1] * emb.shape[2]])
        rep = self._representation(x, domain)
        all_logits = tf.reshape(self.towers(rep), [-1, c.domains, len(c.tasks)])  # [B, D, T]
        # A gather (not a masked sum): other domains' towers get exactly zero gradient.
        return tf.gather(all_logits, domain, axis=1, batch_dims=1)

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> dict[str, tf.Tensor]:
        probs = tf.sigmoid(self.logits(features, training=training))
        return {task: tf.identity(probs[:, i], name=task) for i, task in enumerate(self.config.tasks)}

    # --------------------------------------------------------------------- loss
    def mdmt_loss(
        self, features: Mapping[str, tf.Tensor], labels: Mapping[str, tf.Tensor], training: bool
    ) -> tf.Tensor:
        """Sum over (domain, task) of the BCE averaged within that domain's samples.

        Domains absent from the batch contribute 0 (the count is floored at 1).
        """
        c = self.config
        logits = self.logits(features, training=training)  # [B, T]
        y = tf.stack([tf.cast(tf.reshape(labels[t], [-1]), tf.float32) for t in c.tasks], axis=1)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)  # [B, T]
        onehot = tf.one_hot(self._domain_ids(features[c.domain_feature]), c.domains)  # [B, D]
        per_domain = tf.einsum("bd,bt->dt", onehot, bce) / tf.maximum(tf.reduce_sum(onehot, 0), 1.0)[:, None]
        loss = tf.reduce_sum(per_domain)
        if self.losses:
            loss += tf.add_n(self.losses)
        return loss

    # ------------------------------------------------------------------ training
    @property
    def fusion_variables(self) -> list[tf.Variable]:
        """The raw alpha / beta scalars when they are trained (m3oe, fusion != fixed)."""
        if self.fused is None or not self.fused.trainable_fusion:
            return []
        return list(self.fused.fusion_weights)

    @property
    def main_variables(self) -> list[tf.Variable]:
        """What the main optimiser trains: everything but alpha / beta in bilevel mode."""
        if self.config.fusion == "bilevel":
            fusion = {id(v) for v in self.fusion_variables}
            return [v for v in self.trainable_variables if id(v) not in fusion]
        return list(self.trainable_variables)

    def fusion_values(self) -> dict[str, float]:
        """Current alpha / beta (after the sigmoid); empty for models without fusion."""
        return {k: float(v) for k, v in self.fused.fusion_values().items()} if self.fused is not None else {}

    def compile(
        self,
        optimizer: Any = "adam",
        fusion_optimizer: tf.keras.optimizers.Optimizer | None = None,
        **kwargs: Any,
    ) -> None:
        """Compiles with the main optimiser and, for m3oe, a separate fusion-weight optimiser."""
        super().compile(optimizer=optimizer, **kwargs)
        self.fusion_optimizer = fusion_optimizer or tf.keras.optimizers.Adam(1e-3)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One main step on a training batch (model parameters; alpha / beta too in code mode)."""
        features, labels = data[0], data[1]
        with tf.GradientTape() as tape:
            loss = self.mdmt_loss(features, labels, training=True)
        # Listed after the forward pass: on a first call it is what builds the variables.
        variables = self.main_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return {"loss": loss}

    def fusion_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One step of the fusion weights alone (the upper level of the bi-level problem)."""
        features, labels = data[0], data[1]
        with tf.GradientTape() as tape:
            loss = self.mdmt_loss(features, labels, training=False)
        variables = self.fusion_variables
        if not variables:
            return {"fusion_loss": loss}
        grads = tape.gradient(loss, variables)
        self.fusion_optimizer.apply_gradients(zip(grads, variables))
        # d loss / d raw weight, in FusedExperts.FUSION_NAMES order: what the diagnosis traces.
        return {"fusion_loss": loss, "fusion_grad": tf.stack(grads)}

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        return {"loss": self.mdmt_loss(data[0], data[1], training=False)}

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config.to_dict(),
            "fields": [s.to_dict() for s in self.fields],
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> MultiDomainModel:
        return cls(config["config"], config["fields"], name=config.get("name"))


# Moved to their own modules (issue 29); ``from mvke_tf.models.multidomain import X`` still works for them.
# Resolved on first use, since those modules import this one.
_MOVED = {
    "mdmt_metrics": "mvke_tf.models.multidomain_metrics",
    "predict_multidomain": "mvke_tf.models.multidomain_metrics",
    "train_multidomain": "mvke_tf.models.multidomain_training",
}


# The benchmarks' harness, out of the installed package (issue 29): a clear error instead of a bare AttributeError.
_TO_BENCHMARKS = ("SETTINGS", "fit_predict_in_setting")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    if name in _TO_BENCHMARKS:
        raise AttributeError(
            f"{name} moved out of mvke_tf.models.multidomain: it is the multi-domain benchmarks' harness; fix: in a "
            f"checkout of the repository, from benchmarks.multidomain_settings import {name}"
        )
    # mvke-tf 0.1.0's name, until mvke-tf 0.2
    return renamed_attribute(__name__, globals(), {"MULTIDOMAIN_MODEL_TYPES": "MULTIDOMAIN_ARCHITECTURES"}, name)


__all__ = [
    "FUSION_MODES",
    "MULTIDOMAIN_ARCHITECTURES",
    "MULTIDOMAIN_MODEL_NAMES",
    "MultiDomainConfig",
    "MultiDomainModel",
    "PRESETS",
    "TrainingSchedule",
    "preset",
]
