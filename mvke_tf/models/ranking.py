"""Multi-task pair-ranking models: user, item and context fields together -> per-task probabilities.

Unlike the two-tower models of :mod:`mvke_tf.models.user_tag`, every field meets every other one
from the first layer on, as in a CTR/CVR ranker. One :class:`RankingConfig` selects the model; its
``model_type`` is the model's name, ``ranking_<architecture>`` (:mod:`mvke_tf.models.family`), and the
architecture's body is one of:

* ``single_task``: a separate model per task (own embeddings, MLP, tower): the no-sharing baseline;
* ``shared_bottom``: shared embeddings and MLP, a tower per task;
* ``omoe``: MLP experts mixed by one softmax gate shared by the tasks;
* ``mmoe``: the same experts, one gate per task (Ma et al., KDD 2018);
* ``ple``: Progressive Layered Extraction (Tang et al., RecSys 2020; ``ple_levels=1`` is CGC).

Options shared by all of them:

* ``fm_cross``: a first-order (linear) term and the FM second-order cross term over the same field
  embeddings, added to every task's logit (the app-store "Guess You Like" system keeps FM's cross
  and adds its output to MMoE's final output);
* ``esmm``: ESMM heads (Ma et al., SIGIR 2018) for ``tasks = (click, conversion)``: pCTR = σ(logit_ctr),
  pCVR = σ(logit_cvr), pCTCVR = pCTR · pCVR; trained on all impressions with
  ``0.95 · BCE(click, pCTR) + 0.05 · BCE(click ∧ conversion, pCTCVR)``, so pCVR is never fitted on the
  biased clicked-only sample. The model also returns ``cvr`` (pCVR) and ``rank_score``
  (``w0 · pCTR + w1 · pCVR``).

* ``task_heads``: per task ``binary`` (a sigmoid probability, BCE; the default) or ``regression``
  (the linear output itself, MSE), e.g. for the synthetic regression tasks of MMoE's task-correlation
  study (:mod:`mvke_tf.data.task_correlation`).

The app-store model, ``ranking_app_store``, is an ``mmoe`` body with two experts, FM cross and ESMM heads:
``RankingConfig(model_type="ranking_app_store", num_experts=2, fm_cross=True, esmm=True)`` (:data:`APP_STORE`;
``config_for_data("ranking_app_store", ...)`` starts from its fields).

Inputs are embedded fields, dense inputs, or both: a model of dense inputs only (``fields=()``, e.g.
one float vector ``x [batch, d]`` as ``dense_fields=("x",), dense_sizes=(d,)``) feeds them straight to
its bottom / experts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from mvke_tf.config import ConfigError, FeatureConfig, FieldSpec
from mvke_tf.layers.embedding import FieldsEmbedding, missing_inputs
from mvke_tf.layers.experts import ExtractionLayer, MixtureOfExperts
from mvke_tf.layers.interaction import MLP, FactorizationMachine
from mvke_tf.layers.ranking import ranking_score
from mvke_tf.models.family import FamilyConfig, model_prefix

RANKING_TYPES = ("single_task", "shared_bottom", "omoe", "mmoe", "ple")
"""The bodies a ranking model is built of (:attr:`RankingConfig.body`); each is an architecture too."""
RANKING_ARCHITECTURES = ("app_store", *RANKING_TYPES)
"""The ranking family's architectures; ``app_store`` is an ``mmoe`` body (:data:`APP_STORE`)."""
RANKING_MODEL_NAMES = tuple(model_prefix("ranking") + a for a in RANKING_ARCHITECTURES)
"""The ranking models' names: ``ranking_<architecture>`` (:mod:`mvke_tf.models.family`)."""
HEAD_TYPES = ("binary", "regression")
# Extra outputs of ESMM models (beside one per task): they carry no loss.
CVR_OUTPUT = "cvr"
RANK_OUTPUT = "rank_score"
_ESMM_DEFAULT_WEIGHTS = (0.95, 0.05)


def _units(name: str, units: tuple[int, ...], allow_empty: bool = False) -> None:
    if (not units and not allow_empty) or any(int(u) < 1 for u in units):
        raise ConfigError(f"{name}={list(units)} must be a list of positive layer sizes; fix: e.g. [64, 32]")


@dataclasses.dataclass(frozen=True)
class RankingConfig(FamilyConfig):
    """Architecture of a multi-task ranking model.

    Attributes:
      model_type: the model's name, one of :data:`RANKING_MODEL_NAMES` (``ranking_<architecture>``; a bare
        architecture, as older versions wrote it, is accepted with a FutureWarning until mvke-tf 0.2).
      tasks: task names = label columns = output names, in order. With ``esmm`` exactly two:
        the click task and the click-and-convert task.
      embedding_dim: field embedding size d.
      expert_units: each expert's MLP (omoe, mmoe, ple).
      num_experts: experts of omoe / mmoe.
      num_shared_experts, num_task_experts: experts per level of ple.
      ple_levels: extraction levels of ple (1 = CGC).
      bottom_units: the shared MLP of shared_bottom, and each task's MLP of single_task.
      tower_units: each task's tower before its one-unit logit (may be empty: logit directly).
      fm_cross: add the linear and FM cross terms to every task logit.
      esmm: ESMM heads (see the module docstring).
      task_loss_weights: loss weight per task (default 1 each; with esmm 0.95 / 0.05).
      task_heads: head type per task, one of :data:`HEAD_TYPES` (default: all ``binary``):
        ``binary`` outputs σ(logit) and trains with BCE; ``regression`` outputs the logit itself
        (linear) and trains with MSE.
      rank_weights: ``(w_ctr, w_cvr)`` of the ranking score (esmm).
      dropout: dropout in experts, bottoms and towers.
      embedding_l2: L2 penalty on the embedding tables.
    """

    config_name = "ranking config"
    family_name = "ranking"
    architectures = RANKING_ARCHITECTURES

    model_type: str = "ranking_mmoe"
    tasks: tuple[str, ...] = ("click", "conversion")
    embedding_dim: int = 8
    expert_units: tuple[int, ...] = (64, 32)
    num_experts: int = 2
    num_shared_experts: int = 1
    num_task_experts: int = 1
    ple_levels: int = 1
    bottom_units: tuple[int, ...] = (64, 32)
    tower_units: tuple[int, ...] = (32,)
    fm_cross: bool = False
    esmm: bool = False
    task_loss_weights: tuple[float, ...] = ()
    task_heads: tuple[str, ...] = ()
    rank_weights: tuple[float, float] = (0.5, 0.5)
    dropout: float = 0.0
    embedding_l2: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "tasks",
            "expert_units",
            "bottom_units",
            "tower_units",
            "task_loss_weights",
            "task_heads",
            "rank_weights",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._resolve_model_type()
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(
                f"tasks={list(self.tasks)} must be distinct, non-empty names; fix: e.g. [click, conversion]"
            )
        reserved = {CVR_OUTPUT, RANK_OUTPUT} & set(self.tasks)
        if self.esmm and reserved:
            raise ConfigError(f"tasks {sorted(reserved)}: reserved for ESMM's extra outputs; fix: rename the task")
        if self.esmm and len(self.tasks) != 2:
            raise ConfigError(
                f"esmm needs exactly two tasks (click, click-and-convert), got {list(self.tasks)}; "
                "fix: tasks: [click, conversion] or esmm: false"
            )
        if self.embedding_dim < 1:
            raise ConfigError(f"embedding_dim={self.embedding_dim} must be >= 1")
        _units("expert_units", self.expert_units)
        _units("bottom_units", self.bottom_units)
        _units("tower_units", self.tower_units, allow_empty=True)
        for name in ("num_experts", "num_shared_experts", "num_task_experts", "ple_levels"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.task_loss_weights and len(self.task_loss_weights) != len(self.tasks):
            raise ConfigError(
                f"task_loss_weights has {len(self.task_loss_weights)} entries for {len(self.tasks)} tasks; "
                "fix: give one weight per task or none"
            )
        if any(w < 0 for w in self.task_loss_weights):
            raise ConfigError(f"task_loss_weights={list(self.task_loss_weights)} must be >= 0")
        if self.task_heads and len(self.task_heads) != len(self.tasks):
            raise ConfigError(
                f"task_heads has {len(self.task_heads)} entries for {len(self.tasks)} tasks; "
                "fix: give one head type per task or none"
            )
        bad_heads = sorted(set(self.task_heads) - set(HEAD_TYPES))
        if bad_heads:
            raise ConfigError(f"task_heads {bad_heads} unknown; fix: use {' or '.join(HEAD_TYPES)} per task")
        if self.esmm and "regression" in self.task_heads:
            raise ConfigError("task_heads: ESMM heads are probabilities; fix: all binary heads or esmm: false")
        if len(self.rank_weights) != 2:
            raise ConfigError(f"rank_weights={list(self.rank_weights)} must be two numbers: (w_ctr, w_cvr)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must be in [0, 1)")

    @property
    def body(self) -> str:
        """The body the model is built of (one of :data:`RANKING_TYPES`): the architecture, ``mmoe`` for
        ``app_store``."""
        return "mmoe" if self.architecture == "app_store" else self.architecture

    @property
    def loss_weights(self) -> dict[str, float]:
        default = _ESMM_DEFAULT_WEIGHTS if self.esmm else (1.0,) * len(self.tasks)
        return dict(zip(self.tasks, (float(w) for w in (self.task_loss_weights or default))))

    @property
    def heads(self) -> dict[str, str]:
        """``{task: head type}`` (see ``task_heads``)."""
        return dict(zip(self.tasks, self.task_heads or ("binary",) * len(self.tasks)))


APP_STORE = RankingConfig(model_type="ranking_app_store", num_experts=2, fm_cross=True, esmm=True)
"""The app-store "Guess You Like" model: two experts, a pCTR and a pCVR gate, FM cross, ESMM heads."""


def ranking_config_for(name: str, overrides: Mapping[str, Any] | None = None) -> RankingConfig:
    """The :class:`RankingConfig` of a model name of :data:`RANKING_MODEL_NAMES`, plus field overrides
    (``ranking_app_store``: over :data:`APP_STORE`'s fields); the ranking family's
    :meth:`~mvke_tf.models.family.ModelFamily.config_for`."""
    from mvke_tf.models.family import family_of

    return family_of("ranking").config_for(name, overrides)


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class RankingModel(tf.keras.Model):
    """A multi-task ranker over embedded fields and optional dense inputs (see the module docstring).

    Inputs: a feature dict: each field's raw values as :func:`mvke_tf.data.dataset.make_dataset`
    yields them (``[batch]`` strings or floats, ``[batch, max_values]`` for multi-valued fields) and
    each dense input as float ``[batch]``, or ``[batch, size]`` where ``dense_sizes`` gives it a size
    above 1 (already normalised; NaN counts as 0). ``fields`` may be empty when there are dense inputs.

    Outputs: ``{task: probability [batch]}`` (a regression head: its linear output ``[batch]``); with
    ESMM ``{click: pCTR, conversion: pCTCVR, "cvr": pCVR, "rank_score": w0·pCTR + w1·pCVR}``.
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec | Mapping[str, Any]],
        config: RankingConfig | Mapping[str, Any],
        dense_fields: Sequence[str] = (),
        dense_sizes: Sequence[int] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.fields = tuple(f if isinstance(f, FieldSpec) else FieldSpec.from_dict(f) for f in fields)
        self.config = rc = config if isinstance(config, RankingConfig) else RankingConfig.from_dict(config)
        self.dense_fields = tuple(dense_fields)
        self.dense_sizes = tuple(int(k) for k in dense_sizes) or (1,) * len(self.dense_fields)
        if len(self.dense_sizes) != len(self.dense_fields) or any(k < 1 for k in self.dense_sizes):
            raise ConfigError(
                f"dense_sizes={list(self.dense_sizes)} for dense_fields={list(self.dense_fields)}: "
                "fix: one positive size per dense input, or none (all scalars)"
            )
        if not self.fields and not self.dense_fields:
            raise ConfigError("fields: empty and no dense_fields; fix: give the ranking model at least one input")
        if not self.fields and rc.fm_cross:
            raise ConfigError("fm_cross needs embedded fields and fields is empty; fix: fm_cross: false or add fields")
        names = [f.name for f in self.fields] + list(self.dense_fields)
        if len(set(names)) != len(names):
            raise ConfigError(f"fields and dense_fields repeat a name: {names}; fix: name each input once")
        self.tasks = rc.tasks
        # single_task shares nothing, not even the embeddings: one "branch" per task; others: one branch.
        branches = rc.tasks if rc.body == "single_task" else ("shared",)
        self.embeddings = {
            b: FieldsEmbedding(self.fields, rc.embedding_dim, rc.embedding_l2, name=f"fields_{b}")
            for b in (branches if self.fields else ())
        }
        if rc.fm_cross:
            # First-order weights: a one-dimensional embedding per field value (and a weight per dense input).
            self.linear = {b: FieldsEmbedding(self.fields, 1, name=f"linear_{b}") for b in branches}
            self.linear_dense = (
                {b: tf.keras.layers.Dense(1, use_bias=False, name=f"linear_dense_{b}") for b in branches}
                if self.dense_fields
                else {}
            )
            self.fm = FactorizationMachine(reduce=True, name="fm_cross")
        if rc.body == "single_task":
            self.bottoms = {
                t: MLP(rc.bottom_units, output_activation="relu", dropout=rc.dropout, name=f"bottom_{t}")
                for t in rc.tasks
            }
        elif rc.body == "shared_bottom":
            self.bottom = MLP(rc.bottom_units, output_activation="relu", dropout=rc.dropout, name="bottom")
        elif rc.body in ("omoe", "mmoe"):
            gates = 1 if rc.body == "omoe" else len(rc.tasks)
            self.moe = MixtureOfExperts(rc.num_experts, rc.expert_units, gates, rc.dropout, name=rc.body)
        else:
            self.levels = [
                ExtractionLayer(
                    len(rc.tasks),
                    rc.num_task_experts,
                    rc.num_shared_experts,
                    rc.expert_units,
                    last=level == rc.ple_levels - 1,
                    dropout=rc.dropout,
                    name=f"ple_level_{level}",
                )
                for level in range(rc.ple_levels)
            ]
        self.towers = {t: MLP((*rc.tower_units, 1), dropout=rc.dropout, name=f"tower_{t}") for t in rc.tasks}

    # ------------------------------------------------------------ forward
    def _dense(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor | None:
        if not self.dense_fields:
            return None
        missing = [n for n in self.dense_fields if n not in features]
        if missing:
            raise KeyError(f"input features lack dense field(s) {missing}; the model expects {list(self.dense_fields)}")
        # Scalars [B] become one column each, vectors [B, k] k columns: [B, sum(dense_sizes)].
        columns = [
            tf.reshape(tf.cast(features[n], tf.float32), [-1, k]) for n, k in zip(self.dense_fields, self.dense_sizes)
        ]
        x = columns[0] if len(columns) == 1 else tf.concat(columns, axis=-1)
        return tf.where(tf.math.is_nan(x), tf.zeros_like(x), x)

    def _branch_input(self, branch: str, features: Mapping[str, tf.Tensor], dense: tf.Tensor | None):
        """``(field embeddings [B, F, d], MLP input [B, F*d + n_dense], wide logit [B] or None)``;
        without fields ``(None, dense [B, n_dense], None)``."""
        if not self.fields:
            return None, dense, None
        emb = self.embeddings[branch](features)
        flat = tf.reshape(emb, [-1, emb.shape[1] * emb.shape[2]])
        x = flat if dense is None else tf.concat([flat, dense], axis=-1)
        wide = None
        if self.config.fm_cross:
            wide = tf.reduce_sum(self.linear[branch](features), axis=[1, 2]) + self.fm(emb)[:, 0]
            if dense is not None:
                wide += self.linear_dense[branch](dense)[:, 0]
        return emb, x, wide

    def logits(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> dict[str, tf.Tensor]:
        """Each task's logit ``[batch]`` (before the sigmoid and the ESMM product)."""
        rc = self.config
        dense = self._dense(features)
        hidden: dict[str, tf.Tensor] = {}
        wide: dict[str, tf.Tensor | None] = {}
        if rc.body == "single_task":
            for t in rc.tasks:
                _, x, wide[t] = self._branch_input(t, features, dense)
                hidden[t] = self.bottoms[t](x, training=training)
        else:
            _, x, w = self._branch_input("shared", features, dense)
            wide = dict.fromkeys(rc.tasks, w)
            if rc.body == "shared_bottom":
                shared = self.bottom(x, training=training)
                hidden = dict.fromkeys(rc.tasks, shared)
            elif rc.body in ("omoe", "mmoe"):
                mixed = self.moe(x, training=training)
                hidden = {t: mixed[0 if rc.body == "omoe" else i] for i, t in enumerate(rc.tasks)}
            else:
                inputs = [x] * (len(rc.tasks) + 1)
                for level in self.levels:
                    inputs = level(inputs, training=training)
                hidden = dict(zip(rc.tasks, inputs))
        out = {}
        for t in rc.tasks:
            logit = self.towers[t](hidden[t], training=training)[:, 0]
            out[t] = logit if wide[t] is None else logit + wide[t]
        return out

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> dict[str, tf.Tensor]:
        logits = self.logits(features, training=training)
        if not self.config.esmm:
            heads = self.config.heads
            return {
                t: tf.identity(logits[t], name=t) if heads[t] == "regression" else tf.sigmoid(logits[t], name=t)
                for t in self.tasks
            }
        ctr_task, ctcvr_task = self.tasks
        p_ctr = tf.sigmoid(logits[ctr_task])
        p_cvr = tf.sigmoid(logits[ctcvr_task])
        return {
            ctr_task: tf.identity(p_ctr, name=ctr_task),
            ctcvr_task: tf.multiply(p_ctr, p_cvr, name=ctcvr_task),
            CVR_OUTPUT: tf.identity(p_cvr, name=CVR_OUTPUT),
            RANK_OUTPUT: tf.identity(ranking_score(p_ctr, p_cvr, self.config.rank_weights), name=RANK_OUTPUT),
        }

    # ------------------------------------------------------ serialization
    def get_config(self) -> dict[str, Any]:
        return {
            "fields": [f.to_dict() for f in self.fields],
            "config": self.config.to_dict(),
            "dense_fields": list(self.dense_fields),
            "dense_sizes": list(self.dense_sizes),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], custom_objects: Any = None) -> RankingModel:
        return cls(config["fields"], config["config"], config.get("dense_fields", ()), config.get("dense_sizes", ()))


def build_ranking_model(
    fields: Sequence[FieldSpec | Mapping[str, Any]],
    config: RankingConfig | Mapping[str, Any],
    dense_fields: Sequence[str] = (),
    dense_sizes: Sequence[int] = (),
) -> RankingModel:
    """Builds a :class:`RankingModel` with its weights created (``dense_sizes``: see :class:`RankingModel`)."""
    if not isinstance(config, RankingConfig):
        config = RankingConfig.from_dict(config)
    model = RankingModel(fields, config, dense_fields, dense_sizes, name=config.model_type)
    inputs = missing_inputs(model.fields, dense_fields=model.dense_fields)
    inputs.update({n: tf.zeros([2, k]) for n, k in zip(model.dense_fields, model.dense_sizes) if k > 1})
    model(inputs)
    return model


ITEM_ID = "ad_id"
"""The synthetic data's item id column; :func:`ranking_fields` embeds it as a hashed categorical."""
ITEM_ID_BUCKETS = 10_000


def item_id_field(name: str = ITEM_ID, buckets: int = ITEM_ID_BUCKETS) -> FieldSpec:
    """The item id as a hashed categorical field (the same spec for raw data and Transform's ids)."""
    return FieldSpec(name, "categorical", hash_buckets=int(buckets), group="item")


def ranking_fields(
    feature_config: FeatureConfig,
    context_fields: Sequence[FieldSpec] = (),
    item_id: str | FieldSpec | None = ITEM_ID,
    item_id_buckets: int = ITEM_ID_BUCKETS,
) -> tuple[FieldSpec, ...]:
    """The pair-ranking input of a user-tagging dataset: user fields, item fields, context fields.

    On the synthetic data the item is the ad: its tag set (the feature config's tag field) and its
    id, hashed into ``item_id_buckets`` rows; the id lets the model memorise each ad's own click and
    conversion propensity, which the tags alone do not carry. The data has no context columns.

    Args:
      feature_config: the dataset's features (its user fields and tag field are used).
      context_fields: fields of the request's context (time, placement, ...) when a dataset has them.
      item_id: the item id column (a name: a categorical hashed into ``item_id_buckets``; or a
        :class:`FieldSpec`); None leaves it out (e.g. data without the column, or Transform output
        that does not carry it). A field of that name already among the user fields is not repeated.
      item_id_buckets: hash buckets of a named ``item_id``.

    Returns:
      ``(*user_fields, tag_field, item_id, *context_fields)``.
    """
    item: tuple[FieldSpec, ...] = ()
    if item_id is not None:
        spec = item_id if isinstance(item_id, FieldSpec) else item_id_field(item_id, item_id_buckets)
        if spec.name not in feature_config.feature_names:
            item = (spec,)
    return (*feature_config.user_fields, feature_config.tag_field, *item, *context_fields)


def ranking_feature_config(feature_config: FeatureConfig, fields: Sequence[FieldSpec]) -> FeatureConfig:
    """A :class:`FeatureConfig` under which :func:`~mvke_tf.data.dataset.make_dataset` yields every
    field of ``fields`` (e.g. :func:`ranking_fields`'s item id and context fields) and the same labels."""
    tag = feature_config.tag_field.name
    return FeatureConfig(
        user_fields=tuple(f for f in fields if f.name != tag),
        tag_field=feature_config.tag_field,
        labels=feature_config.labels,
        user_id=feature_config.user_id,
    )


def rank(
    scores: Mapping[str, Any] | np.ndarray | Sequence[float],
    groups: np.ndarray | Sequence[Any] | None = None,
    top_k: int | None = None,
    key: str | None = None,
) -> np.ndarray:
    """Orders candidates by ranking score, best first, within each group (e.g. a request or a user).

    Args:
      scores: ``[n]`` ranking scores, or a model's output dict (``{name: [n]}``, tensors or arrays),
        from which ``key`` is taken: by default ``rank_score`` (ESMM models: ``w0·pCTR + w1·pCVR``),
        or the only output of a single-task model.
      groups: ``[n]`` group ids; candidates are ranked only against their own group. None: one group.
      top_k: keep the best ``top_k`` of each group.
      key: the output to rank by when ``scores`` is a dict (e.g. ``click`` for a non-ESMM model).

    Returns:
      Indices into ``scores``: groups in order of first appearance, each group's candidates by
      descending score (ties keep input order).
    """
    if isinstance(scores, Mapping):
        if key is None:
            if RANK_OUTPUT in scores:
                key = RANK_OUTPUT
            elif len(scores) == 1:
                key = next(iter(scores))
            else:
                raise ValueError(
                    f"scores has outputs {sorted(scores)} and no {RANK_OUTPUT!r}; fix: pass key= the output to rank by"
                )
        if key not in scores:
            raise ValueError(f"key {key!r} is not among the outputs {sorted(scores)}")
        scores = scores[key]
    scores = np.asarray(scores)
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1 (or None for every candidate)")
    if scores.ndim != 1:
        raise ValueError(f"scores must be one-dimensional [n], got shape {scores.shape}")
    if groups is None:
        groups = np.zeros(len(scores), dtype=np.int64)
    groups = np.asarray(groups)
    if groups.shape != scores.shape:
        raise ValueError(f"groups shape {groups.shape} != scores shape {scores.shape}; fix: one group id per score")
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, group_index = np.unique(groups, return_index=True, return_inverse=True)
    group_order = np.argsort(np.argsort(first))[group_index]  # groups numbered by first appearance
    order = np.lexsort((-scores, group_order))  # stable: ties keep input order
    if top_k:
        sorted_groups = group_order[order]
        starts = np.searchsorted(sorted_groups, sorted_groups, side="left")
        order = order[np.arange(len(order)) - starts < top_k]
    return order
