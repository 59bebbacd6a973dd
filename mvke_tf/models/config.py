"""Typed model configuration: one dataclass selects and sizes every model variant."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mvke_tf.config import ConfigError

# Model variants this library builds. Later variants register here as they land.
MODEL_TYPES = ("two_tower",)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and sizes. Defaults follow the MVKE paper's Table 5.

    Attributes:
      model_type: which variant to build (see ``MODEL_TYPES``).
      tasks: task names, in order; each is a model output and a label column.
      embedding_dim: field embedding size d (paper: 30).
      dnn_units: DeepFM DNN layers (paper: [512, 256, 128]).
      top_units: top layers after DeepFM; the last is the user embedding size (paper: [256, 128, 30]).
      tag_units: each task's tag tower; the last size must equal ``top_units[-1]``.
      dropout: dropout rate in the MLPs.
      embedding_l2: L2 penalty on embedding tables.
      task_loss_weights: loss weight per task (default 1 each: L = L_ctr + L_cvr).
    """

    model_type: str = "two_tower"
    tasks: tuple[str, ...] = ("click", "conversion")
    embedding_dim: int = 30
    dnn_units: tuple[int, ...] = (512, 256, 128)
    top_units: tuple[int, ...] = (256, 128, 30)
    tag_units: tuple[int, ...] = (256, 128, 30)
    dropout: float = 0.0
    embedding_l2: float = 0.0
    task_loss_weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("tasks", "dnn_units", "top_units", "tag_units", "task_loss_weights"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(
                f"model_type={self.model_type!r} is not one of {', '.join(MODEL_TYPES)}; fix: pick one of them"
            )
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

    @property
    def loss_weights(self) -> dict[str, float]:
        weights = self.task_loss_weights or (1.0,) * len(self.tasks)
        return dict(zip(self.tasks, (float(w) for w in weights)))

    @property
    def output_dim(self) -> int:
        return self.top_units[-1]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"model config: unknown key(s) {unknown}; fix: use only {sorted(known)}")
        return cls(**dict(d))

    def scaled(self, factor: float) -> ModelConfig:
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
