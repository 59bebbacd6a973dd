"""Multi-domain multi-task blocks: the STAR domain layer, grouped MLPs, M3oE expert fusion.

Shapes: B = batch, D = domains, T = tasks, K = shared experts, G = a group count
(experts or towers held as one batched weight, one slice per group).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from mvke_tf.layers.experts import SoftmaxGate, mix


def _layer_norm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float = 1e-5) -> tf.Tensor:
    """LayerNorm over the last axis with (possibly per-group) scale and offset."""
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + epsilon) * gamma + beta


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class GroupedMLP(tf.keras.layers.Layer):
    """G independent MLPs of ``[Linear -> LayerNorm -> ReLU]`` blocks, held as batched weights.

    ``[B, in]`` (the same input for every group) or ``[B, G, in]`` (one input per group)
    -> ``[B, G, units[-1]]``; with ``output_dim``, a final plain Linear gives
    ``[B, G, output_dim]`` (towers producing logits). One einsum per layer instead of G
    small matmuls: the same maths, far fewer ops on CPU.
    """

    def __init__(self, units: Sequence[int], groups: int, output_dim: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        self.groups = int(groups)
        self.output_dim = None if output_dim is None else int(output_dim)
        if not self.units or any(u < 1 for u in self.units) or self.groups < 1:
            raise ValueError(f"GroupedMLP needs positive units and groups, got units={list(units)}, groups={groups}")

    def build(self, input_shape: tf.TensorShape) -> None:
        fan_in = int(input_shape[-1])
        g = self.groups
        self.kernels, self.biases, self.gammas, self.betas = [], [], [], []
        for i, u in enumerate(self.units):
            self.kernels.append(self.add_weight(f"kernel_{i}", (g, fan_in, u), initializer="glorot_uniform"))
            self.biases.append(self.add_weight(f"bias_{i}", (g, u), initializer="zeros"))
            self.gammas.append(self.add_weight(f"ln_gamma_{i}", (g, u), initializer="ones"))
            self.betas.append(self.add_weight(f"ln_beta_{i}", (g, u), initializer="zeros"))
            fan_in = u
        if self.output_dim is not None:
            self.out_kernel = self.add_weight("out_kernel", (g, fan_in, self.output_dim), initializer="glorot_uniform")
            self.out_bias = self.add_weight("out_bias", (g, self.output_dim), initializer="zeros")
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        grouped = x.shape.rank == 3
        for kernel, bias, gamma, beta in zip(self.kernels, self.biases, self.gammas, self.betas):
            x = tf.einsum("bgi,giu->bgu" if grouped else "bi,giu->bgu", x, kernel) + bias
            x = tf.nn.relu(_layer_norm(x, gamma, beta))
            grouped = True
        if self.output_dim is not None:
            x = tf.einsum("bgi,giu->bgu", x, self.out_kernel) + self.out_bias
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": list(self.units), "groups": self.groups, "output_dim": self.output_dim}


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class StarDomainLayer(tf.keras.layers.Layer):
    """STAR-style domain representation: ``x [B, in]``, ``domain [B]`` -> ``[B, units[-1]]``.

    The first layer is the star topology: ``h = x (W_d * W_shared) + b_d + b_shared`` for
    each sample's own domain d (elementwise product of the shared and the domain's
    kernel), followed by LayerNorm and ReLU, then further ``[Linear -> LayerNorm -> ReLU]``
    blocks for ``units[1:]``. A skip MLP from ``x`` to ``units[-1]`` is added to the
    output (the official M3oE code's ``[512, 256]`` star MLP plus ``x -> 256`` skip).

    Domain kernels start at ones, so training starts from a plain shared layer and each
    domain learns its multiplicative deviation (two random factors would start tiny).
    """

    def __init__(self, num_domains: int, units: Sequence[int], skip_units: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_domains = int(num_domains)
        self.units = tuple(int(u) for u in units)
        self.skip_units = tuple(int(u) for u in skip_units)
        if not self.units or not self.skip_units or self.skip_units[-1] != self.units[-1]:
            raise ValueError(
                f"StarDomainLayer: skip_units[-1] must equal units[-1] (they are added), "
                f"got units={list(units)}, skip_units={list(skip_units)}"
            )
        self.mlp = GroupedMLP(self.units[1:], groups=1, name="mlp") if len(self.units) > 1 else None
        self.skip = GroupedMLP(self.skip_units, groups=1, name="skip")

    def build(self, input_shape: tf.TensorShape) -> None:
        fan_in, u, d = int(input_shape[-1]), self.units[0], self.num_domains
        self.shared_kernel = self.add_weight("shared_kernel", (fan_in, u), initializer="glorot_uniform")
        self.shared_bias = self.add_weight("shared_bias", (u,), initializer="zeros")
        self.domain_kernel = self.add_weight("domain_kernel", (d, fan_in, u), initializer="ones")
        self.domain_bias = self.add_weight("domain_bias", (d, u), initializer="zeros")
        self.ln_gamma = self.add_weight("ln_gamma", (u,), initializer="ones")
        self.ln_beta = self.add_weight("ln_beta", (u,), initializer="zeros")
        super().build(input_shape)

    def call(self, x: tf.Tensor, domain: tf.Tensor) -> tf.Tensor:
        domain = tf.cast(domain, tf.int32)
        # Every domain's product kernel on every sample ([B, D, u]), then each sample's own
        # row: D is small, and a gather keeps the other domains' gradients exactly zero.
        all_domains = tf.einsum("bi,diu->bdu", x, self.domain_kernel * self.shared_kernel) + self.domain_bias
        h = tf.gather(all_domains, domain, axis=1, batch_dims=1) + self.shared_bias
        h = tf.nn.relu(_layer_norm(h, self.ln_gamma, self.ln_beta))
        if self.mlp is not None:
            h = self.mlp(h)[:, 0]
        return h + self.skip(x)[:, 0]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_domains": self.num_domains,
            "units": list(self.units),
            "skip_units": list(self.skip_units),
        }


def fuse_own_and_others(experts: tf.Tensor, own: int | tf.Tensor, beta: tf.Tensor) -> tf.Tensor:
    """M3oE's specific-expert fusion: ``beta * E_own + (1 - beta) / (K - 1) * sum_{j != own} E_j``.

    Args:
      experts: ``[B, K, h]``, one expert output per domain (or per task), K >= 2.
      own: the own expert's index: an int, or ``[B]`` ints (each sample's own domain).
      beta: scalar weight in [0, 1] of the own expert.

    Returns:
      ``[B, h]``.
    """
    k = experts.shape[-2]
    if isinstance(own, int):
        own_out = experts[:, own]
    else:
        own_out = tf.gather(experts, tf.cast(own, tf.int32), axis=1, batch_dims=1)
    others = tf.reduce_sum(experts, axis=1) - own_out
    return beta * own_out + (1.0 - beta) / float(k - 1) * others


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class FusedExperts(tf.keras.layers.Layer):
    """M3oE's three expert modules and their two-level fusion.

    ``rep [B, in]`` -> ``[B, D, T, h]``: for each (domain slot d, task t)::

        fused = gate_{d,t}(sg(rep)) . shared_experts
              + alpha_d * (beta_d * Dom_d + (1 - beta_d)/(D - 1) * sum_{j != d} Dom_j)
              + alpha_t * (beta_t * Task_t + (1 - beta_t)/(T - 1) * sum_{j != t} Task_j)

    with K shared experts, one expert per domain and one per task (each
    ``[Linear -> LayerNorm -> ReLU] x len(expert_units)``), a softmax gate over the shared
    experts per (domain, task) that reads ``tf.stop_gradient(rep)`` (as the official
    code does: the gates do not shape the representation), and
    ``alpha, beta = sigmoid(raw scalar)``. The four raw scalars are the fusion weights
    (``fusion_weights``), trained by their own optimiser in bi-level mode; with
    ``trainable_fusion=False`` they are constants (raw 0, i.e. alpha = beta = 0.5).

    The caller picks each sample's own domain slot, so slot d's domain part treats d as
    the own domain.
    """

    FUSION_NAMES = ("alpha_domain", "alpha_task", "beta_domain", "beta_task")

    def __init__(
        self,
        num_domains: int,
        num_tasks: int,
        num_shared_experts: int,
        expert_units: Sequence[int],
        trainable_fusion: bool = True,
        fusion_init: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_domains = int(num_domains)
        self.num_tasks = int(num_tasks)
        self.num_shared_experts = int(num_shared_experts)
        self.expert_units = tuple(int(u) for u in expert_units)
        self.trainable_fusion = bool(trainable_fusion)
        self.fusion_init = float(fusion_init)
        if self.num_domains < 2 or self.num_tasks < 2:
            raise ValueError("FusedExperts needs at least 2 domains and 2 tasks (the fusion averages the others)")
        self.shared = GroupedMLP(self.expert_units, self.num_shared_experts, name="shared_experts")
        self.domain_experts = GroupedMLP(self.expert_units, self.num_domains, name="domain_experts")
        self.task_experts = GroupedMLP(self.expert_units, self.num_tasks, name="task_experts")
        # One softmax gate per (domain, task) over the K shared experts, held as one Dense.
        self.gates = SoftmaxGate(self.num_shared_experts, num_gates=self.num_domains * self.num_tasks, name="gates")
        init = self.fusion_init if self.trainable_fusion else 0.0
        self.fusion_weights = [
            self.add_weight(name, (), initializer=tf.keras.initializers.Constant(init), trainable=self.trainable_fusion)
            for name in self.FUSION_NAMES
        ]

    def fusion_values(self) -> dict[str, tf.Tensor]:
        """``{alpha_domain, alpha_task, beta_domain, beta_task}`` after the sigmoid."""
        return {n: tf.sigmoid(w) for n, w in zip(self.FUSION_NAMES, self.fusion_weights)}

    def expert_outputs(self, rep: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """(gate weights ``[B, D, T, K]``, shared ``[B, K, h]``, domain ``[B, D, h]``, task ``[B, T, h]``)."""
        d, t, k = self.num_domains, self.num_tasks, self.num_shared_experts
        gates = tf.reshape(self.gates(tf.stop_gradient(rep)), [-1, d, t, k])
        return gates, self.shared(rep), self.domain_experts(rep), self.task_experts(rep)

    def fuse(self, gates: tf.Tensor, shared: tf.Tensor, domain_out: tf.Tensor, task_out: tf.Tensor) -> tf.Tensor:
        """The two-level fusion of given expert outputs -> ``[B, D, T, h]``."""
        a_d, a_t, b_d, b_t = (tf.sigmoid(w) for w in self.fusion_weights)
        d, t, k = self.num_domains, self.num_tasks, self.num_shared_experts
        shared_part = tf.reshape(mix(tf.reshape(gates, [-1, d * t, k]), shared), [-1, d, t, shared.shape[-1]])
        dom = tf.stack([fuse_own_and_others(domain_out, i, b_d) for i in range(self.num_domains)], axis=1)
        task = tf.stack([fuse_own_and_others(task_out, i, b_t) for i in range(self.num_tasks)], axis=1)
        return shared_part + a_d * dom[:, :, None, :] + a_t * task[:, None, :, :]

    def call(self, rep: tf.Tensor) -> tf.Tensor:
        return self.fuse(*self.expert_outputs(rep))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_domains": self.num_domains,
            "num_tasks": self.num_tasks,
            "num_shared_experts": self.num_shared_experts,
            "expert_units": list(self.expert_units),
            "trainable_fusion": self.trainable_fusion,
            "fusion_init": self.fusion_init,
        }


__all__ = ["FusedExperts", "GroupedMLP", "StarDomainLayer", "fuse_own_and_others"]
