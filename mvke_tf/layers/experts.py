"""Expert and gating layers shared by the three model families.

* :class:`SoftmaxGate` and :func:`mix`: softmax gates over experts and the gated sum; the
  two-tower models (:mod:`mvke_tf.models.towers`, :mod:`mvke_tf.models.user_tag`), the
  rankers, the multi-domain MMoE / PLE bodies (:mod:`mvke_tf.models.multidomain`) and M3oE's
  shared experts (:class:`~mvke_tf.layers.multidomain.FusedExperts`) mix
  with them.
* :class:`MixtureOfExperts` (MoE / MMoE) and :class:`ExtractionLayer` (one PLE level, CGC):
  MLP experts with their gates, as the rankers of :mod:`mvke_tf.models.ranking` use them on
  the flattened field embeddings (plus any dense inputs), ``[batch, in]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from mvke_tf.layers.interaction import MLP


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class SoftmaxGate(tf.keras.layers.Layer):
    """Softmax gates over experts, all read from one linear layer.

    * ``num_gates=None``: one gate, ``[B, in]`` -> weights ``[B, num_experts]``.
    * ``num_gates=G``: G gates, ``[B, in]`` -> weights ``[B, G, num_experts]``; each gate's
      row sums to 1 over the experts. One Dense of ``G * num_experts`` units, so many gates
      (e.g. one per (domain, task)) cost one matmul.
    """

    def __init__(self, num_experts: int, num_gates: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_experts = int(num_experts)
        self.num_gates = None if num_gates is None else int(num_gates)
        if self.num_experts < 1 or (self.num_gates is not None and self.num_gates < 1):
            raise ValueError(f"num_experts={num_experts}, num_gates={num_gates}: both must be >= 1 (or num_gates None)")
        units = self.num_experts * (self.num_gates or 1)
        self.dense = tf.keras.layers.Dense(units, name="logits")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        logits = self.dense(x)
        if self.num_gates is not None:
            logits = tf.reshape(logits, [-1, self.num_gates, self.num_experts])
        return tf.nn.softmax(logits, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_experts": self.num_experts, "num_gates": self.num_gates}


def mix(weights: tf.Tensor, experts: tf.Tensor) -> tf.Tensor:
    """Gated mixture of experts, ``sum_e weights[..., e] * experts[..., e, :]``.

    * weights ``[B, S]``, experts ``[B, S, d]`` -> ``[B, d]`` (one gate);
    * weights ``[B, G, E]``, experts ``[B, E, d]`` -> ``[B, G, d]`` (G gates over shared experts);
    * weights ``[B, G, E]``, experts ``[B, G, E, d]`` -> ``[B, G, d]`` (each gate its own experts).
    """
    w_rank, e_rank = weights.shape.rank, experts.shape.rank
    if e_rank == w_rank + 1:
        return tf.reduce_sum(weights[..., None] * experts, axis=-2)
    if w_rank == 3 and e_rank == 3:
        return tf.linalg.matmul(weights, experts)
    raise ValueError(
        f"mix: weights {weights.shape} and experts {experts.shape} do not fit; expected [B, S] with [B, S, d], "
        "[B, G, E] with [B, E, d], or [B, G, E] with [B, G, E, d]"
    )


def _expert(units: Sequence[int], dropout: float, name: str) -> MLP:
    # Experts end in a ReLU as well: their outputs are mixed, then read by the task towers.
    return MLP(units, output_activation="relu", dropout=dropout, name=name)


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class MixtureOfExperts(tf.keras.layers.Layer):
    """MoE / MMoE (Ma et al., KDD 2018): ``num_experts`` MLP experts and ``num_gates`` softmax gates.

    ``[batch, in]`` -> a list of ``num_gates`` mixtures ``[batch, expert_units[-1]]``. One gate
    shared by every task is OMoE; one gate per task is MMoE. Gates read the same input as the experts.
    """

    def __init__(
        self, num_experts: int, expert_units: Sequence[int], num_gates: int, dropout: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.num_experts = int(num_experts)
        self.expert_units = tuple(int(u) for u in expert_units)
        self.num_gates = int(num_gates)
        self.dropout = float(dropout)
        self.experts = [_expert(self.expert_units, self.dropout, f"expert_{i}") for i in range(self.num_experts)]
        self.gates = [SoftmaxGate(self.num_experts, name=f"gate_{g}") for g in range(self.num_gates)]

    def call(self, x: tf.Tensor, training: bool | None = None) -> list[tf.Tensor]:
        experts = tf.stack([e(x, training=training) for e in self.experts], axis=1)  # [B, E, d]
        return [mix(gate(x), experts) for gate in self.gates]

    def gate_weights(self, x: tf.Tensor) -> list[tf.Tensor]:
        """Each gate's weights over the experts, ``[batch, num_experts]`` (for inspection)."""
        return [gate(x) for gate in self.gates]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "expert_units": list(self.expert_units),
            "num_gates": self.num_gates,
            "dropout": self.dropout,
        }


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class ExtractionLayer(tf.keras.layers.Layer):
    """One level of PLE (Tang et al., RecSys 2020); with ``last=True`` it is CGC.

    Inputs: ``num_tasks + 1`` tensors ``[batch, in]``: each task's input, then the shared input
    (at the first level all are the same tensor). Each task's gate mixes its own experts and the
    shared experts; unless this is the last level, a shared gate mixes every expert into the next
    level's shared input. Returns ``num_tasks`` (+ 1 shared) tensors ``[batch, expert_units[-1]]``.
    """

    def __init__(
        self,
        num_tasks: int,
        num_task_experts: int,
        num_shared_experts: int,
        expert_units: Sequence[int],
        last: bool = True,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)
        self.num_task_experts = int(num_task_experts)
        self.num_shared_experts = int(num_shared_experts)
        self.expert_units = tuple(int(u) for u in expert_units)
        self.last = bool(last)
        self.dropout = float(dropout)
        self.task_experts = [
            [_expert(self.expert_units, self.dropout, f"task{t}_expert_{i}") for i in range(self.num_task_experts)]
            for t in range(self.num_tasks)
        ]
        self.shared_experts = [
            _expert(self.expert_units, self.dropout, f"shared_expert_{i}") for i in range(self.num_shared_experts)
        ]
        per_task = self.num_task_experts + self.num_shared_experts
        self.task_gates = [SoftmaxGate(per_task, name=f"task{t}_gate") for t in range(self.num_tasks)]
        total = self.num_tasks * self.num_task_experts + self.num_shared_experts
        self.shared_gate = None if self.last else SoftmaxGate(total, name="shared_gate")

    def call(self, inputs: Sequence[tf.Tensor], training: bool | None = None) -> list[tf.Tensor]:
        *task_inputs, shared_input = inputs
        shared = [e(shared_input, training=training) for e in self.shared_experts]
        own = [[e(x, training=training) for e in experts] for x, experts in zip(task_inputs, self.task_experts)]
        outs = [
            mix(gate(x), tf.stack(mine + shared, axis=1)) for x, gate, mine in zip(task_inputs, self.task_gates, own)
        ]
        if self.shared_gate is not None:
            every = [o for mine in own for o in mine] + shared
            outs.append(mix(self.shared_gate(shared_input), tf.stack(every, axis=1)))
        return outs

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "num_task_experts": self.num_task_experts,
            "num_shared_experts": self.num_shared_experts,
            "expert_units": list(self.expert_units),
            "last": self.last,
            "dropout": self.dropout,
        }
