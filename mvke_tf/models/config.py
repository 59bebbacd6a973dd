"""The user-tag family's config (:class:`UserTagConfig`): one dataclass selects and sizes every two-tower
user-tagging model (the other families have theirs: :class:`~mvke_tf.models.ranking.RankingConfig`,
:class:`~mvke_tf.models.multidomain.MultiDomainConfig`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from mvke_tf.config import ConfigError
from mvke_tf.layers.mvke import GATES
from mvke_tf.models.family import FamilyConfig, model_prefix, renamed_attribute

# Architectures (the MVKE paper's Table 3 line-up). All share the embedding and DeepFM
# blocks and a hard-shared tag tower; they differ in the user tower.
USER_TAG_ARCHITECTURES = ("two_tower", "hard_sharing", "moe", "mmoe", "cgc", "mvke_st", "mvke_mt")
# Their model names (mvke_tf.models.family's rule: the user-tag family's names are its architectures).
USER_TAG_MODEL_NAMES = tuple(model_prefix("user_tag") + a for a in USER_TAG_ARCHITECTURES)
MVKE_TYPES = ("mvke_st", "mvke_mt")
# Variants whose experts are assigned to tasks by ``expert_assignment``.
ASSIGNED_TYPES = ("cgc", "mvke_mt")
# The MVKE paper's assignment of its five VKEs to its two tasks: VKE 1-3 and VKE 2-5 (1-based), two shared.
PAPER_ASSIGNMENT = ((0, 1, 2), (1, 2, 3, 4))
PAPER_NUM_EXPERTS = 5


@dataclasses.dataclass(frozen=True)
class UserTagConfig(FamilyConfig):
    """Architecture and sizes of a user-tag model. Defaults follow the MVKE paper's Table 5.

    Attributes:
      model_type: the model's name, one of :data:`USER_TAG_MODEL_NAMES` (here also its architecture).
      tasks: task names, in order; each is a model output and a label column.
      embedding_dim: field embedding size d (paper: 30).
      dnn_units: DeepFM DNN layers (paper: [512, 256, 128]).
      top_units: top layers after DeepFM; the last is the user embedding size (paper: [256, 128, 30]).
      tag_units: each task's tag tower; the last size must equal ``top_units[-1]``.
      dropout: dropout rate in the MLPs.
      embedding_l2: L2 penalty on embedding tables.
      task_loss_weights: loss weight per task (default 1 each: L = L_ctr + L_cvr).
      num_experts: experts of moe / mmoe / cgc, and virtual kernels K of mvke_mt (paper: 5).
      expert_assignment: per task, the 0-based experts / VKEs serving it (cgc, mvke_mt). None (the default):
        for two tasks over five experts the paper's click <- VKE 1-3 and conversion <- VKE 2-5 in its 1-based
        numbering, ((0, 1, 2), (1, 2, 3, 4)), VKEs 2 and 3 shared; for any other number of tasks or experts every
        task is served by every expert (see :meth:`assignment`).
      st_num_kernels: VKEs per task of mvke_st (each task its own independent MVKE).
      vke_activation: activation of the VKE query/key/value projections (None: linear,
        as in the released code; the paper writes an activation sigma, e.g. "tanh").
      gate: "dot" (the code: softmax(tag . VK^T)), "attention" (the paper: projected,
        scaled attention) or "cosine" (softmax(s * cos(tag, VK)), needs ``gate_scale``).
      gate_scale: start of a learned inverse temperature s multiplying the gate's scores
        (None: no scale, as the code and the paper). See docs/architecture.md for why the
        code's gate stays near uniform and what this changes.
      kernel_stddev: standard deviation of the virtual kernels' N(0, .) initialisation
        (the code: 0.01).
      score: "dot" (the code: sigmoid(u . t + b)) or "cosine" (the paper:
        sigmoid(s * cos(u, t) + b) with a learned scale s).
      shared_vke_tower: one interaction tower's weights for all VKEs (the code's ``shared_model``).
    """

    config_name = "model config"
    family_name = "user_tag"
    architectures = USER_TAG_ARCHITECTURES

    model_type: str = "two_tower"
    tasks: tuple[str, ...] = ("click", "conversion")
    embedding_dim: int = 30
    dnn_units: tuple[int, ...] = (512, 256, 128)
    top_units: tuple[int, ...] = (256, 128, 30)
    tag_units: tuple[int, ...] = (256, 128, 30)
    dropout: float = 0.0
    embedding_l2: float = 0.0
    task_loss_weights: tuple[float, ...] = ()
    num_experts: int = 5
    expert_assignment: tuple[tuple[int, ...], ...] | None = None
    st_num_kernels: int = 3
    vke_activation: str | None = None
    gate: str = "dot"
    gate_scale: float | None = None
    kernel_stddev: float = 0.01
    score: str = "dot"
    shared_vke_tower: bool = False

    def __post_init__(self) -> None:
        self._resolve_model_type()
        for name in ("tasks", "dnn_units", "top_units", "tag_units", "task_loss_weights"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.expert_assignment is not None:
            assigned = tuple(tuple(int(i) for i in s) for s in self.expert_assignment)
            object.__setattr__(self, "expert_assignment", assigned)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(
                f"tasks={list(self.tasks)} must be distinct, non-empty names; fix: e.g. [click, conversion]"
            )
        if self.embedding_dim < 1:
            raise ConfigError(f"embedding_dim={self.embedding_dim} must be >= 1")
        for name in ("dnn_units", "top_units", "tag_units"):
            units = getattr(self, name)
            if not units or any(int(u) < 1 for u in units):
                raise ConfigError(f"{name}={list(units)} must be a non-empty list of positive layer sizes")
        if self.tag_units[-1] != self.top_units[-1]:
            raise ConfigError(
                f"tag_units[-1]={self.tag_units[-1]} must equal top_units[-1]={self.top_units[-1]} "
                "(user and tag embeddings meet in a dot product); fix: make the last sizes equal"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must be in [0, 1)")
        if self.task_loss_weights and len(self.task_loss_weights) != len(self.tasks):
            raise ConfigError(
                f"task_loss_weights has {len(self.task_loss_weights)} entries for {len(self.tasks)} tasks; "
                "fix: give one weight per task or none"
            )

        if self.num_experts < 1:
            raise ConfigError(f"num_experts={self.num_experts} must be >= 1")
        if self.st_num_kernels < 1:
            raise ConfigError(f"st_num_kernels={self.st_num_kernels} must be >= 1")
        if self.gate not in GATES:
            raise ConfigError(
                f"gate={self.gate!r} must be 'dot' (the code), 'attention' (the paper) or 'cosine'; fix: pick one"
            )
        for name in ("gate_scale", "kernel_stddev"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, None if value is None else float(value))
            except (TypeError, ValueError):
                raise ConfigError(f"{name}={value!r} must be a number; fix: e.g. {name}: 10") from None
        if self.gate_scale is not None and not self.gate_scale > 0:
            raise ConfigError(f"gate_scale={self.gate_scale} must be > 0 (the learned scale's start) or null")
        if self.gate == "cosine" and self.gate_scale is None:
            raise ConfigError(
                "gate='cosine' needs gate_scale (cosines alone keep the gate uniform); fix: gate_scale: 10"
            )
        if not self.kernel_stddev > 0:
            raise ConfigError(f"kernel_stddev={self.kernel_stddev} must be > 0 (the code uses 0.01)")
        if self.score not in ("dot", "cosine"):
            raise ConfigError(f"score={self.score!r} must be 'dot' (the code) or 'cosine' (the paper)")
        if self.architecture in MVKE_TYPES and self.gate != "attention" and self.tag_units[-1] != self.embedding_dim:
            raise ConfigError(
                f"gate={self.gate!r} compares the tag embedding (tag_units[-1]={self.tag_units[-1]}) with the virtual "
                f"kernels (embedding_dim={self.embedding_dim}); fix: make them equal or use gate='attention'"
            )
        if self.architecture in ASSIGNED_TYPES:
            self._check_assignment()

    def _check_assignment(self) -> None:
        if self.expert_assignment is None:
            return  # the default (see assignment()) is valid by construction
        a, k = self.expert_assignment, self.num_experts
        if len(a) != len(self.tasks):
            raise ConfigError(
                f"expert_assignment has {len(a)} sets for {len(self.tasks)} tasks {list(self.tasks)}; "
                "fix: give one set of expert indices per task"
            )
        for task, experts in zip(self.tasks, a):
            if not experts:
                raise ConfigError(f"expert_assignment for task '{task}' is empty; fix: assign at least one expert")
            bad = [i for i in experts if not 0 <= i < k]
            if bad:
                raise ConfigError(
                    f"expert_assignment for task '{task}' holds {bad}, outside 0..{k - 1} (num_experts={k}); "
                    "fix: use 0-based indices below num_experts"
                )
            if len(set(experts)) != len(experts):
                raise ConfigError(f"expert_assignment for task '{task}' repeats an expert: {list(experts)}")
        unused = sorted(set(range(k)) - {i for s in a for i in s})
        if unused:
            raise ConfigError(
                f"expert_assignment leaves expert(s) {unused} unused by every task; "
                "fix: assign them or lower num_experts"
            )

    def assignment(self) -> dict[str, tuple[int, ...]]:
        """Per task, the experts serving it (all of them for variants without an assignment)."""
        every = tuple(range(self.num_experts))
        if self.architecture not in ASSIGNED_TYPES:
            return {t: every for t in self.tasks}
        if self.expert_assignment is not None:
            return dict(zip(self.tasks, self.expert_assignment))
        if len(self.tasks) == 2 and self.num_experts == PAPER_NUM_EXPERTS:
            return dict(zip(self.tasks, PAPER_ASSIGNMENT))
        return {t: every for t in self.tasks}

    @property
    def loss_weights(self) -> dict[str, float]:
        weights = self.task_loss_weights or (1.0,) * len(self.tasks)
        return dict(zip(self.tasks, (float(w) for w in weights)))

    @property
    def output_dim(self) -> int:
        return self.top_units[-1]

    def scaled(self, factor: float) -> UserTagConfig:
        """A copy with every hidden layer scaled by ``factor`` (for fast tests / CPU runs).

        The embedding size and the output size stay as they are.
        """

        def scale(units: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(max(4, int(round(u * factor))) for u in units[:-1]) + (units[-1],)

        return dataclasses.replace(
            self,
            dnn_units=tuple(max(4, int(round(u * factor))) for u in self.dnn_units),
            top_units=scale(self.top_units),
            tag_units=scale(self.tag_units),
        )


RENAMED = {"ModelConfig": "UserTagConfig", "MODEL_TYPES": "USER_TAG_MODEL_NAMES"}
"""``ModelConfig`` and ``MODEL_TYPES``, the names of mvke-tf 0.1.0: importable, with a warning, until mvke-tf 0.2."""


def __getattr__(name: str) -> Any:
    return renamed_attribute(__name__, globals(), RENAMED, name)
