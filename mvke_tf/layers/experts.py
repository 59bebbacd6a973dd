"""Mixture-of-experts building blocks: softmax gates and gated mixtures."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class SoftmaxGate(tf.keras.layers.Layer):
    """A gate over experts: ``[B, in]`` -> weights ``[B, num_experts]`` (softmax)."""

    def __init__(self, num_experts: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_experts = int(num_experts)
        self.dense = tf.keras.layers.Dense(self.num_experts, name="logits")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(self.dense(x), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_experts": self.num_experts}


def mix(weights: tf.Tensor, experts: tf.Tensor) -> tf.Tensor:
    """Gated mixture: weights ``[B, S]`` and experts ``[B, S, d]`` -> ``[B, d]``."""
    return tf.reduce_sum(weights[..., None] * experts, axis=-2)
