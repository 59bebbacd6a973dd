"""Multi-domain multi-task (MDMT) models: M3oE (SIGIR 2024) and its baselines.

Every model embeds the same fields, flattens them to ``x [B, F * d]`` and ends in one
tower per (domain, task): ``Linear -> LayerNorm -> ReLU -> Linear -> sigmoid``. Each
sample is scored by its own domain's towers, and the loss is the sum over (domain,
task) of the binary cross-entropy averaged within that domain's samples of the batch.
The bodies:

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
See :func:`train_multidomain`.

Besides the MDMT setting (one model for every domain and task), the paper's table has two
cheaper ones, run by :func:`fit_predict_in_setting`: ``mtl_per_domain`` (a separate
multi-task model per domain, trained on that domain's samples only) and ``mdl_per_task``
(a separate multi-domain model per task, trained on that task's loss only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from mvke_tf.config import ConfigError, FieldSpec, SerializableConfig
from mvke_tf.layers.embedding import FieldsEmbedding, missing_inputs
from mvke_tf.layers.experts import SoftmaxGate, mix
from mvke_tf.layers.multidomain import FusedExperts, GroupedMLP, StarDomainLayer

MULTIDOMAIN_MODEL_TYPES = ("m3oe", "mlp", "shared_bottom", "mmoe", "ple", "star")
FUSION_MODES = ("bilevel", "code", "fixed")
SETTINGS = ("mdmt", "mtl_per_domain", "mdl_per_task")


@dataclasses.dataclass(frozen=True)
class MultiDomainConfig(SerializableConfig):
    """Architecture of an MDMT model. Sizes default to a CPU-scale version of the paper's.

    Attributes:
      model_type: one of ``MULTIDOMAIN_MODEL_TYPES``.
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

    model_type: str = "m3oe"
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
        if self.model_type not in MULTIDOMAIN_MODEL_TYPES:
            raise ConfigError(
                f"model_type={self.model_type!r} is not one of {', '.join(MULTIDOMAIN_MODEL_TYPES)}; "
                "fix: pick one of them"
            )
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
        if self.model_type == "m3oe" and (self.domains < 2 or len(self.tasks) < 2):
            raise ConfigError(
                f"m3oe fuses each domain's (task's) expert with the others: it needs domains >= 2 and >= 2 "
                f"tasks, got domains={self.domains}, tasks={list(self.tasks)}; fix: use star or mmoe"
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
    """How an MDMT model is trained (:func:`train_multidomain`'s settings as one value).

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
        """The keyword arguments of :func:`train_multidomain` this schedule sets."""
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
    # The library's CPU scale: what benchmarks/multidomain.py has always run.
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


def preset(name: str, model_type: str = "m3oe", **overrides: Any) -> tuple[MultiDomainConfig, TrainingSchedule]:
    """``(architecture, schedule)`` of a named preset (``PRESETS``) for ``model_type``.

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
        if c.model_type in ("star", "m3oe"):
            self.star = StarDomainLayer(d, c.bottom_units, c.skip_units, name="star")
        if c.model_type == "m3oe":
            self.fused = FusedExperts(
                d,
                t,
                c.num_shared_experts,
                c.expert_units,
                trainable_fusion=c.fusion != "fixed",
                fusion_init=c.fusion_init,
                name="fused_experts",
            )
        elif c.model_type == "mlp":
            self.bottom = GroupedMLP(c.bottom_units, d * t, name="mlps")
        elif c.model_type == "shared_bottom":
            self.bottom = GroupedMLP(c.bottom_units, 1, name="bottom")
        elif c.model_type in ("mmoe", "ple"):
            k = c.num_shared_experts
            self.experts = GroupedMLP(c.expert_units, k, name="shared_experts")
            if c.model_type == "ple":
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
        if c.model_type == "star":
            return self.star(x, domain)
        if c.model_type == "m3oe":
            fused = self.fused(self.star(x, domain))  # [B, D, T, h]
            return tf.reshape(fused, [-1, d * t, fused.shape[-1]])
        if c.model_type == "mlp":
            return self.bottom(x)
        if c.model_type == "shared_bottom":
            return self.bottom(x)[:, 0]
        experts = self.experts(x)  # [B, K, h]
        if c.model_type == "ple":
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


def train_multidomain(
    model: MultiDomainModel,
    train: tf.data.Dataset,
    val: tf.data.Dataset | None = None,
    epochs: int = 1,
    learning_rate: float = 1e-3,
    fusion_learning_rate: float = 1e-3,
    seed: int | None = None,
    *,
    steps_per_epoch: int | None = None,
    validation: tf.data.Dataset | None = None,
    validation_steps: int | None = None,
    weight_decay: float = 0.0,
    lr_decay: float = 1.0,
    lr_decay_every: int = 0,
    patience: int | None = None,
    trace_fusion: bool = False,
    verbose: int = 0,
) -> dict[str, Any]:
    """Trains ``model`` with its fusion schedule; returns per-epoch values.

    * bilevel (m3oe): after every ``fusion_every`` training steps, one fusion step on the
      next validation batch (``val`` is cycled; required).
    * code (m3oe): main steps on everything, then one fusion step per epoch on the
      epoch's first training batch (the official trainer's schedule).
    * fixed, and every baseline: main steps only.

    Args:
      model: the model (compiled here with Adam if it is not compiled yet).
      train: batches of ``(features, labels)``: one pass per epoch, or ``steps_per_epoch`` batches
        per epoch of a dataset read on across epochs (e.g. a repeated one).
      val: held-out batches of ``(features, labels)`` for the fusion steps (the upper level).
      epochs: most epochs of training.
      learning_rate: Adam learning rate of the model parameters.
      fusion_learning_rate: Adam learning rate of the fusion weights.
      seed: if given, ``tf.keras.utils.set_random_seed(seed)`` before building: Python's, NumPy's
        and TensorFlow's seeds. Not ``tf.random.set_seed`` alone: Keras draws the seeds of its
        unseeded initialisers from Python's ``random``, so that left the weights unseeded.
      steps_per_epoch: training steps per epoch (None: one pass over ``train``).
      validation: batches scored after every epoch (``val_loss``, ``val_<task>_auc`` and
        ``val_mean_auc``, the mean AUC over (domain, task)), at most ``validation_steps`` of them.
      weight_decay: Adam weight decay of both optimisers (used when compiling here).
      lr_decay, lr_decay_every: multiply the main learning rate by ``lr_decay`` after every
        ``lr_decay_every`` epochs (0: never), like torch's StepLR.
      patience: with ``validation``: stop after ``patience`` epochs without a better
        ``val_mean_auc`` and restore the best epoch's weights (the official trainer's early stop).
      trace_fusion: m3oe: also record every fusion step (``history["trace"]``: the upper-level
        loss, the gradient of that loss w.r.t. the four raw fusion weights, and their values after
        the step) to diagnose the upper level.
      verbose: > 0 prints one line per epoch.

    Returns:
      ``{"loss", "fusion_loss"}`` (per-epoch means), the ``val_*`` values with ``validation``, and
      for m3oe the fusion weights after each epoch (``alpha_domain``, ``alpha_task``, ...);
      with early stopping ``best_epoch`` (1-based, a one-element list); with ``trace_fusion``
      ``trace``.
    """
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    if getattr(model, "optimizer", None) is None:
        decay = {"weight_decay": weight_decay} if weight_decay else {}
        model.compile(
            optimizer=tf.keras.optimizers.Adam(learning_rate, **decay),
            fusion_optimizer=tf.keras.optimizers.Adam(fusion_learning_rate, **decay),
        )
    c = model.config
    fusing = bool(model.fusion_variables)
    if fusing and c.fusion == "bilevel" and val is None:
        raise ValueError("bilevel fusion needs validation batches; fix: pass val=...")
    if patience is not None and validation is None:
        raise ValueError("early stopping (patience) scores the validation batches; fix: pass validation=...")
    # Build the model and both optimisers eagerly: variables created inside a traced
    # step would be created again on the retrace tf.function does after a first call.
    first_batch = next(iter(train))
    model.logits(first_batch[0])
    model.optimizer.build(model.main_variables)
    if fusing:
        model.fusion_optimizer.build(model.fusion_variables)
    # Traced once per model and kept on it, so training the same model again (a new seed's
    # weights assigned into it, as benchmarks do) skips tracing, which costs seconds for M3oE on
    # a CPU; reduce_retracing lets an epoch's shorter last batch reuse a shape-relaxed trace.
    steps = model.__dict__.get("_traced_steps")
    if steps is None:
        steps = (
            tf.function(model.train_step, reduce_retracing=True),
            tf.function(model.fusion_step, reduce_retracing=True),
        )
        model.__dict__["_traced_steps"] = steps
    main_step, fusion_step = steps
    val_batches = iter(val.repeat()) if fusing and c.fusion == "bilevel" else None
    batches = iter(train) if steps_per_epoch is not None else None  # read on across epochs
    history: dict[str, Any] = {"loss": [], "fusion_loss": []}
    trace: dict[str, list[Any]] = {"step": [], "fusion_loss": [], "fusion_grad": [], "fusion_raw": []}
    best_auc, best_weights, best_epoch, stale = -np.inf, None, 0, 0
    main_steps = 0

    def run_fusion(batch: Any) -> float:
        out = fusion_step(batch)
        if trace_fusion:
            trace["step"].append(main_steps)
            trace["fusion_loss"].append(float(out["fusion_loss"]))
            trace["fusion_grad"].append([float(g) for g in out["fusion_grad"].numpy()])
            trace["fusion_raw"].append([float(v.numpy()) for v in model.fusion_variables])
        return float(out["fusion_loss"])

    for epoch in range(epochs):
        losses, fusion_losses, first = [], [], None
        epoch_batches = iter(train) if batches is None else (next(batches) for _ in range(steps_per_epoch))
        for step, batch in enumerate(epoch_batches):
            first = batch if first is None else first
            losses.append(float(main_step(batch)["loss"]))
            main_steps += 1
            if val_batches is not None and (step + 1) % c.fusion_every == 0:
                fusion_losses.append(run_fusion(next(val_batches)))
        if fusing and c.fusion == "code" and first is not None:
            fusion_losses.append(run_fusion(first))
        if lr_decay_every and (epoch + 1) % lr_decay_every == 0 and lr_decay != 1.0:
            model.optimizer.learning_rate = float(model.optimizer.learning_rate) * lr_decay
        values = {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "fusion_loss": float(np.mean(fusion_losses)) if fusion_losses else float("nan"),
        }
        if validation is not None:
            values.update(_validate(model, validation, validation_steps))
        values.update(model.fusion_values())
        for name, value in values.items():
            history.setdefault(name, []).append(value)
        if verbose:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items())
            print(f"epoch {epoch + 1}/{epochs}: {len(losses)} steps; {shown}", flush=True)
        if patience is not None:
            score = values["val_mean_auc"]
            if score > best_auc:
                best_auc, best_weights, best_epoch, stale = score, model.get_weights(), epoch + 1, 0
            else:
                stale += 1
                if stale >= patience:
                    break
    if patience is not None and best_weights is not None:
        model.set_weights(best_weights)
        history["best_epoch"] = [best_epoch]
    if trace_fusion:
        history["trace"] = trace
    return history


def _validate(model: MultiDomainModel, batches: tf.data.Dataset, steps: int | None) -> dict[str, float]:
    """``val_loss`` (the mean batch loss), ``val_<task>_auc`` and ``val_mean_auc`` over at most
    ``steps`` batches (``val_mean_auc``: the mean AUC over the (domain, task) pairs with both classes)."""
    from mvke_tf.metrics import auc_or_nan

    if steps is not None:
        batches = batches.take(steps)
    dom = model.config.domain_feature
    losses, domains = [], []
    labels, probs = {t: [] for t in model.tasks}, {t: [] for t in model.tasks}
    scored = model.__dict__.get("_traced_scoring")
    if scored is None:  # traced once per model: eager M3oE costs more than the epoch's validation

        def scoring(features: Any, y: Any) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
            return model.mdmt_loss(features, y, training=False), model(features, training=False)

        scored = model.__dict__["_traced_scoring"] = tf.function(scoring, reduce_retracing=True)
    for features, y in batches:
        loss, out = scored(features, y)
        losses.append(float(loss))
        domains.append(np.asarray(features[dom]).reshape(-1))
        for t in model.tasks:
            labels[t].append(np.asarray(y[t]).reshape(-1))
            probs[t].append(out[t].numpy())
    values = {"val_loss": float(np.mean(losses)) if losses else float("nan")}
    if not losses:
        return {**values, **{f"val_{t}_auc": float("nan") for t in model.tasks}, "val_mean_auc": float("nan")}
    y_all = {t: np.concatenate(labels[t]) for t in model.tasks}
    p_all = {t: np.concatenate(probs[t]) for t in model.tasks}
    m = mdmt_metrics(y_all, p_all, np.concatenate(domains), model.config.domains)
    for t in model.tasks:
        values[f"val_{t}_auc"] = auc_or_nan(y_all[t], p_all[t])
    values["val_mean_auc"] = m["mean_auc"]
    return values


def _rows(
    features: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], mask: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return {k: np.asarray(v)[mask] for k, v in features.items()}, {k: np.asarray(v)[mask] for k, v in labels.items()}


def fit_predict_in_setting(
    setting: str,
    config: MultiDomainConfig,
    fields: Sequence[FieldSpec | Mapping[str, Any]],
    train: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    val: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    test_features: Mapping[str, np.ndarray],
    *,
    epochs: int = 1,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    fusion_learning_rate: float = 1e-3,
    seed: int = 0,
    schedule: TrainingSchedule | None = None,
) -> tuple[dict[str, np.ndarray], list[MultiDomainModel]]:
    """Trains ``config``'s model in one of ``SETTINGS`` and scores the test rows.

    * ``mdmt``: one model on every domain and task.
    * ``mtl_per_domain``: one model per domain (``domains=1``), trained and scored on that
      domain's rows only; each domain's predictions come from its own model.
    * ``mdl_per_task``: one model per task (``tasks=(task,)``) over every domain; each
      task's predictions come from its own model.

    Args:
      setting: one of ``SETTINGS``.
      config: the model's config (its ``domains`` and ``tasks`` describe the data).
      fields: the embedded fields.
      train, val: ``(features, labels)`` numpy dicts (:func:`mvke_tf.data.multidomain.to_features`).
      test_features: the test rows' features.
      epochs, batch_size, learning_rate, fusion_learning_rate, seed: as in :func:`train_multidomain`.
      schedule: if given, replaces ``epochs``, ``batch_size`` and the learning rates, and adds its
        weight decay, StepLR and early stopping (scored on ``val``).

    Returns:
      ``({task: [N_test] probabilities}, the trained models)``.
    """
    from mvke_tf.data.multidomain import make_dataset

    if setting not in SETTINGS:
        raise ConfigError(f"setting={setting!r} is not one of {', '.join(SETTINGS)}; fix: pick one of them")
    if setting != "mdmt" and config.model_type == "m3oe":
        raise ConfigError(
            f"setting={setting!r} leaves one domain or one task per model, which m3oe cannot fuse; "
            "fix: run m3oe in the mdmt setting"
        )
    dom = config.domain_feature
    n_test = len(np.asarray(test_features[dom]))

    if schedule is not None:
        batch_size = schedule.batch_size
        train_kwargs = schedule.train_kwargs()
    else:
        train_kwargs = dict(epochs=epochs, learning_rate=learning_rate, fusion_learning_rate=fusion_learning_rate)

    def fit_predict(cfg: MultiDomainConfig, tr: Any, va: Any, te: Mapping[str, np.ndarray]) -> Any:
        model = MultiDomainModel(cfg, fields)
        va_ds = make_dataset(*va, batch_size=batch_size, seed=seed)
        scored = {}
        if train_kwargs.get("patience"):  # early stopping scores the validation rows in order
            scored["validation"] = make_dataset(*va, batch_size=4096, shuffle=False)
        model.history_ = train_multidomain(
            model, make_dataset(*tr, batch_size=batch_size, seed=seed), va_ds, seed=seed, **train_kwargs, **scored
        )
        dummy = {t: np.zeros(len(np.asarray(te[dom])), np.float32) for t in cfg.tasks}
        return model, predict_multidomain(model, make_dataset(dict(te), dummy, batch_size=4096, shuffle=False))

    if setting == "mdmt":
        model, probs = fit_predict(config, train, val, test_features)
        return probs, [model]

    out = {t: np.full(n_test, np.nan, np.float32) for t in config.tasks}
    models: list[MultiDomainModel] = []
    if setting == "mtl_per_domain":
        single = dataclasses.replace(config, domains=1)
        test_domain = np.asarray(test_features[dom])
        for d in range(config.domains):
            parts = []
            for feats, labs in (train, val):
                f, lab = _rows(feats, labs, np.asarray(feats[dom]) == d)
                f[dom] = np.zeros_like(f[dom])  # the only domain of this model
                parts.append((f, lab))
            mask = test_domain == d
            if not mask.any():
                continue
            if not len(parts[0][1][config.tasks[0]]):
                raise ValueError(f"domain {d} has test rows but no training rows; fix: give every domain training data")
            te = {k: np.asarray(v)[mask] for k, v in test_features.items()}
            te[dom] = np.zeros_like(te[dom])
            model, probs = fit_predict(single, parts[0], parts[1], te)
            models.append(model)
            for t in config.tasks:
                out[t][mask] = probs[t]
        return out, models

    for t in config.tasks:  # mdl_per_task
        one = dataclasses.replace(config, tasks=(t,))
        tr = (train[0], {t: train[1][t]})
        va = (val[0], {t: val[1][t]})
        model, probs = fit_predict(one, tr, va, test_features)
        models.append(model)
        out[t] = probs[t]
    return out, models


def predict_multidomain(model: MultiDomainModel, batches: Iterable[Any]) -> dict[str, np.ndarray]:
    """``{task: [N] probabilities}`` over ``(features, ...)`` batches, in order."""
    step = model.__dict__.get("_traced_call")
    if step is None:
        step = model.__dict__["_traced_call"] = tf.function(model.call, reduce_retracing=True)
    out: dict[str, list[np.ndarray]] = {t: [] for t in model.config.tasks}
    for batch in batches:
        features = batch[0] if isinstance(batch, tuple) else batch
        for t, p in step(features).items():
            out[t].append(p.numpy())
    return {t: np.concatenate(v) for t, v in out.items()}


def mdmt_metrics(
    labels: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray], domain: np.ndarray, num_domains: int
) -> dict[str, Any]:
    """AUC per (domain, task), their mean, and the macro AUC over tasks pooled across domains.

    Returns ``{"auc": {domain: {task: auc}}, "mean_auc": float, "total_auc": float}``;
    ``total_auc`` is the official code's "total AUC" (per task over all samples, then the
    mean over tasks). A (domain, task) with one class only gets NaN and is left out of means.
    """
    from mvke_tf.metrics import auc_or_nan as safe_auc

    per: dict[int, dict[str, float]] = {}
    for d in range(num_domains):
        m = domain == d
        per[d] = {t: safe_auc(np.asarray(labels[t])[m], np.asarray(probs[t])[m]) for t in probs}
    values = [v for row in per.values() for v in row.values() if not np.isnan(v)]
    pooled = [safe_auc(np.asarray(labels[t]), np.asarray(probs[t])) for t in probs]
    return {"auc": per, "mean_auc": float(np.mean(values)), "total_auc": float(np.nanmean(pooled))}


__all__ = [
    "FUSION_MODES",
    "MULTIDOMAIN_MODEL_TYPES",
    "SETTINGS",
    "MultiDomainConfig",
    "MultiDomainModel",
    "PRESETS",
    "TrainingSchedule",
    "fit_predict_in_setting",
    "mdmt_metrics",
    "predict_multidomain",
    "preset",
    "train_multidomain",
]
