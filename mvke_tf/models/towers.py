"""User towers: field embeddings ``[B, F, d]`` -> per task ``[B, S_task, d_out]``.

``S_task`` is the number of expert outputs the tag side still has to mix: for MVKE it is
the number of VKEs serving the task (the gate weights come from the tag, see
:class:`~mvke_tf.layers.mvke.VirtualKernelGate`); for every other variant the user
embedding is already final and ``S_task = 1`` (mixed with weight 1).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mvke_tf.layers.experts import SoftmaxGate, mix
from mvke_tf.layers.interaction import MLP, DeepFMTower
from mvke_tf.layers.mvke import VirtualKernelExperts
from mvke_tf.models.config import UserTagConfig


def _deepfm(mc: UserTagConfig, name: str) -> DeepFMTower:
    return DeepFMTower(mc.dnn_units, mc.top_units, mc.dropout, name=name)


class UserTower(tf.keras.layers.Layer):
    """Base class: subclasses build per-task expert outputs from the field embeddings."""

    def __init__(self, model_config: UserTagConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_config = model_config
        self.tasks = model_config.tasks

    def kernels(self, task: str) -> tf.Tensor | None:
        """The virtual kernels ``[S_task, d]`` serving ``task`` (MVKE only), else None."""
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "model_config": self.model_config.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UserTower:
        config = dict(config)
        config["model_config"] = UserTagConfig.from_dict(config["model_config"])
        return cls(**config)


class SeparateTowers(UserTower):
    """``two_tower`` (the paper's noMTL): an independent DeepFM tower per task."""

    def __init__(self, model_config: UserTagConfig, **kwargs: Any) -> None:
        super().__init__(model_config, **kwargs)
        self.towers = {t: _deepfm(model_config, f"deepfm_{t}") for t in self.tasks}

    def call(self, fields: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        return {t: self.towers[t](fields, training=training)[:, None, :] for t in self.tasks}


class SharedBottom(UserTower):
    """``hard_sharing``: one shared DeepFM tower, then a small linear head per task."""

    def __init__(self, model_config: UserTagConfig, **kwargs: Any) -> None:
        super().__init__(model_config, **kwargs)
        self.bottom = _deepfm(model_config, "deepfm_shared")
        self.heads = {t: MLP((model_config.output_dim,), name=f"head_{t}") for t in self.tasks}

    def call(self, fields: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        shared = tf.nn.relu(self.bottom(fields, training=training))
        return {t: self.heads[t](shared)[:, None, :] for t in self.tasks}


class GatedExperts(UserTower):
    """``moe`` (one gate shared by the tasks), ``mmoe`` (a gate per task) and ``cgc``
    (a gate per task over its assigned experts: task-specific plus shared ones).

    Each expert is a DeepFM tower; gates read the flattened field embeddings; a linear
    head per task follows the mixture.
    """

    def __init__(self, model_config: UserTagConfig, **kwargs: Any) -> None:
        super().__init__(model_config, **kwargs)
        mc = model_config
        self.assign = mc.assignment()
        self.experts = [_deepfm(mc, f"expert_{i}") for i in range(mc.num_experts)]
        if mc.architecture == "moe":
            self.gates = {"shared": SoftmaxGate(mc.num_experts, name="gate")}
        else:
            self.gates = {t: SoftmaxGate(len(self.assign[t]), name=f"gate_{t}") for t in self.tasks}
        self.heads = {t: MLP((mc.output_dim,), name=f"head_{t}") for t in self.tasks}

    def call(self, fields: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        outs = tf.stack([tf.nn.relu(e(fields, training=training)) for e in self.experts], axis=1)  # [B, E, d_out]
        flat = tf.reshape(fields, [-1, fields.shape[1] * fields.shape[2]])
        result = {}
        for t in self.tasks:
            idx = list(self.assign[t])
            gate = self.gates.get("shared") or self.gates[t]
            mixed = mix(gate(flat), tf.gather(outs, idx, axis=1))
            result[t] = self.heads[t](mixed)[:, None, :]
        return result


class VirtualKernelTower(UserTower):
    """``mvke_mt`` (one pool of K VKEs, subsets per task) and ``mvke_st`` (each task its
    own independent pool of ``st_num_kernels`` VKEs).

    Per pool: :class:`VirtualKernelExperts` gives ``[B, F, K, d]``; VKE k's interaction
    tower f_u^k (DeepFM, or one shared tower) turns its ``[B, F, d]`` into E_u^k ``[B, d_out]``.
    """

    def __init__(self, model_config: UserTagConfig, **kwargs: Any) -> None:
        super().__init__(model_config, **kwargs)
        mc = model_config
        if mc.architecture == "mvke_mt":
            pools = {"shared": mc.num_experts}
            self.route = {t: ("shared", idx) for t, idx in mc.assignment().items()}
        else:
            pools = {t: mc.st_num_kernels for t in self.tasks}
            self.route = {t: (t, tuple(range(mc.st_num_kernels))) for t in self.tasks}
        self.vke = {
            p: VirtualKernelExperts(k, mc.vke_activation, mc.kernel_stddev, name=f"vke_{p}") for p, k in pools.items()
        }
        self.interaction = {}
        for p, k in pools.items():
            if mc.shared_vke_tower:
                shared = _deepfm(mc, f"deepfm_{p}")
                self.interaction[p] = [shared] * k
            else:
                self.interaction[p] = [_deepfm(mc, f"deepfm_{p}_{i}") for i in range(k)]

    def call(self, fields: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        per_pool = {}
        for p, layer in self.vke.items():
            experts = layer(fields)  # [B, F, K, d]
            towers = self.interaction[p]
            per_pool[p] = tf.stack(
                [towers[k](experts[:, :, k, :], training=training) for k in range(len(towers))], axis=1
            )  # [B, K, d_out]
        return {t: tf.gather(per_pool[p], list(idx), axis=1) for t, (p, idx) in self.route.items()}

    def kernels(self, task: str) -> tf.Tensor:
        pool, idx = self.route[task]
        return tf.gather(self.vke[pool].virtual_kernels, list(idx), axis=0)


def make_user_tower(model_config: UserTagConfig) -> UserTower:
    """The user tower of ``model_config.architecture``."""
    cls = {
        "two_tower": SeparateTowers,
        "hard_sharing": SharedBottom,
        "moe": GatedExperts,
        "mmoe": GatedExperts,
        "cgc": GatedExperts,
        "mvke_st": VirtualKernelTower,
        "mvke_mt": VirtualKernelTower,
    }[model_config.architecture]
    return cls(model_config, name=f"user_tower_{model_config.architecture}")
