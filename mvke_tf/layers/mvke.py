"""Virtual-Kernel Experts (VKE) and Virtual-Kernel Gates (VKG), Xu et al., KDD 2022.

Notation: B batch, F user fields, d embedding size, K virtual kernels (one per VKE).
The defaults follow the released TF1 code (``core/mvke_ops.py``); the paper's variants
are options (``activation`` for the projections, ``gate="attention"`` for the gate).
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class VirtualKernelExperts(tf.keras.layers.Layer):
    """The VKE bottom: each learnable virtual kernel attends over the user fields.

    ``[B, F, d]`` -> ``[B, F, K, d]``: for kernel k, the fields re-weighted by
    ``softmax_F(Kf . Q_k / sqrt(d))`` times the value projection, plus the residual
    field embeddings, layer-normalised. ``Q = Dense(VK)``, ``Kf = Dense(E)``,
    ``Vf = Dense(E)``; linear by default (the code), ``activation`` applies the
    paper's sigma.

    The virtual kernels ``VK [K, d]`` are initialised N(0, ``kernel_stddev``); the code's
    0.01 is the default. They are also the keys of the :class:`VirtualKernelGate`.
    """

    def __init__(
        self, num_kernels: int, activation: str | None = None, kernel_stddev: float = 0.01, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if int(num_kernels) < 1:
            raise ValueError(f"num_kernels must be >= 1, got {num_kernels}")
        if not float(kernel_stddev) > 0:
            raise ValueError(f"kernel_stddev must be > 0, got {kernel_stddev}")
        self.num_kernels = int(num_kernels)
        self.activation = activation
        self.kernel_stddev = float(kernel_stddev)

    def build(self, input_shape: tf.TensorShape) -> None:
        dim = int(input_shape[-1])
        self.dim = dim
        self.virtual_kernels = self.add_weight(
            name="virtual_kernels",
            shape=(self.num_kernels, dim),
            initializer=tf.keras.initializers.RandomNormal(stddev=self.kernel_stddev),
        )
        self.query = tf.keras.layers.Dense(dim, activation=self.activation, name="query")
        self.key = tf.keras.layers.Dense(dim, activation=self.activation, name="key")
        self.value = tf.keras.layers.Dense(dim, activation=self.activation, name="value")
        self.norm = tf.keras.layers.LayerNormalization(axis=-1, name="layer_norm")
        super().build(input_shape)

    def attention(self, fields: tf.Tensor) -> tf.Tensor:
        """Field attention of every kernel: ``[B, F, d]`` -> ``[B, F, K]`` (sums to 1 over F)."""
        q = self.query(self.virtual_kernels)  # [K, d]
        k = self.key(fields)  # [B, F, d]
        scores = tf.einsum("bfd,kd->bfk", k, q) / math.sqrt(self.dim)
        return tf.nn.softmax(scores, axis=1)

    def call(self, fields: tf.Tensor) -> tf.Tensor:
        att = self.attention(fields)  # [B, F, K]
        v = self.value(fields)  # [B, F, d]
        mixed = att[..., None] * v[:, :, None, :] + fields[:, :, None, :]  # [B, F, K, d]
        return self.norm(mixed)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_kernels": self.num_kernels,
            "activation": self.activation,
            "kernel_stddev": self.kernel_stddev,
        }


GATES = ("dot", "attention", "cosine")


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class VirtualKernelGate(tf.keras.layers.Layer):
    """VKG: the tag embedding queries the virtual kernels of the VKEs serving a task.

    ``(tag [B, d_t], kernels [S, d])`` -> gate weights ``[B, S]`` (softmax over S).

    * ``gate="dot"`` (the code): ``softmax(tag . kernelsT)``, which needs ``d_t == d``.
    * ``gate="attention"`` (the paper): ``softmax((W_q tag) . (W_k kernels)T / sqrt(d_a))``.
    * ``gate="cosine"``: ``softmax(s * cos(tag, kernel))``, which needs ``d_t == d``.

    ``scale`` (a float) multiplies the scores by a learned positive scalar
    ``s = exp(log_s)`` started at that value: a learned inverse temperature. ``None``
    keeps the scores as they are (the code's and the paper's gates); the cosine gate
    needs one, because cosines in [-1, 1] would keep the softmax near uniform.

    The weights depend only on the tag and the kernels, never on the user: that is what
    makes the paper's fast all-users x all-tags prediction possible.
    """

    def __init__(
        self, gate: str = "dot", attention_dim: int | None = None, scale: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if gate not in GATES:
            raise ValueError(
                f"gate must be 'dot' (the code), 'attention' (the paper) or 'cosine' (normalised), got {gate!r}"
            )
        if scale is not None and not float(scale) > 0:
            raise ValueError(f"scale must be > 0 (the learned scale's start) or None, got {scale}")
        if gate == "cosine" and scale is None:
            raise ValueError("gate='cosine' needs a scale (cosines alone keep the softmax near uniform); fix: scale=10")
        self.gate = gate
        self.attention_dim = attention_dim
        self.scale = None if scale is None else float(scale)

    def build(self, input_shape: Any) -> None:
        tag_shape, kernel_shape = input_shape
        d_t, d_k = int(tag_shape[-1]), int(kernel_shape[-1])
        if self.gate in ("dot", "cosine") and d_t != d_k:
            raise ValueError(
                f"gate={self.gate!r} needs the tag embedding size ({d_t}) to equal the kernel size ({d_k}); "
                "fix: make the tag tower's last size equal embedding_dim, or use gate='attention'"
            )
        if self.gate == "attention":
            units = int(self.attention_dim or d_k)
            self.tag_projection = tf.keras.layers.Dense(units, use_bias=False, name="tag_projection")
            self.kernel_projection = tf.keras.layers.Dense(units, use_bias=False, name="kernel_projection")
            self._scale = 1.0 / math.sqrt(units)
        if self.scale is not None:
            self.log_scale = self.add_weight(
                name="log_scale", shape=(), initializer=tf.keras.initializers.Constant(math.log(self.scale))
            )
        super().build(input_shape)

    def scores(self, tag: tf.Tensor, kernels: tf.Tensor) -> tf.Tensor:
        """The gate's logits ``[B, S]`` (before the softmax)."""
        if self.gate == "dot":
            scores = tf.matmul(tag, kernels, transpose_b=True)
        elif self.gate == "cosine":
            scores = tf.matmul(tf.math.l2_normalize(tag, -1), tf.math.l2_normalize(kernels, -1), transpose_b=True)
        else:
            scores = tf.matmul(self.tag_projection(tag), self.kernel_projection(kernels), transpose_b=True)
            scores = scores * self._scale
        if self.scale is not None:
            scores = scores * tf.exp(self.log_scale)
        return scores

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        tag, kernels = inputs
        return tf.nn.softmax(self.scores(tag, kernels), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gate": self.gate, "attention_dim": self.attention_dim, "scale": self.scale}
