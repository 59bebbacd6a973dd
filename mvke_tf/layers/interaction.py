"""Feature-interaction blocks: MLP, FM and the DeepFM tower."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class MLP(tf.keras.layers.Layer):
    """Dense stack: ``[batch, in]`` -> ``[batch, units[-1]]``.

    Hidden layers use ``activation``; the last layer uses ``output_activation``
    (linear by default, so the output can be an embedding or a logit).
    """

    def __init__(
        self,
        units: Sequence[int],
        activation: str = "relu",
        output_activation: str | None = None,
        dropout: float = 0.0,
        batch_norm: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        if not self.units or any(u < 1 for u in self.units):
            raise ValueError(f"MLP units must be a non-empty list of positive sizes, got {list(units)}")
        self.activation = activation
        self.output_activation = output_activation
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)
        self.dense = [
            tf.keras.layers.Dense(
                u, activation=activation if i < len(self.units) - 1 else output_activation, name=f"dense_{i}"
            )
            for i, u in enumerate(self.units)
        ]
        self.norms = [tf.keras.layers.BatchNormalization() for _ in self.units[:-1]] if batch_norm else []
        self.drops = [tf.keras.layers.Dropout(self.dropout) for _ in self.units[:-1]] if dropout else []

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        for i, layer in enumerate(self.dense):
            x = layer(x)
            if i < len(self.dense) - 1:
                if self.norms:
                    x = self.norms[i](x, training=training)
                if self.drops:
                    x = self.drops[i](x, training=training)
        return x

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": list(self.units),
            "activation": self.activation,
            "output_activation": self.output_activation,
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
        }


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class FactorizationMachine(tf.keras.layers.Layer):
    """Second-order FM interaction over field embeddings.

    ``[batch, F, dim]`` -> ``[batch, dim]`` (``reduce=False``: the bi-interaction vector
    ``0.5 * ((sum_f e_f)^2 - sum_f e_f^2)``) or ``[batch, 1]`` (``reduce=True``: its sum,
    the classic FM cross term ``sum_{i<j} <e_i, e_j>``).
    """

    def __init__(self, reduce: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reduce = bool(reduce)

    def call(self, embeddings: tf.Tensor) -> tf.Tensor:
        square_of_sum = tf.square(tf.reduce_sum(embeddings, axis=-2))
        sum_of_square = tf.reduce_sum(tf.square(embeddings), axis=-2)
        cross = 0.5 * (square_of_sum - sum_of_square)
        return tf.reduce_sum(cross, axis=-1, keepdims=True) if self.reduce else cross

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "reduce": self.reduce}


@tf.keras.utils.register_keras_serializable(package="mvke_tf")
class DeepFMTower(tf.keras.layers.Layer):
    """DeepFM interaction tower producing an embedding (MVKE paper, Table 5).

    ``[batch, F, dim]`` -> ``[batch, top_units[-1]]``: the FM bi-interaction vector
    ``[batch, dim]`` and a DNN over the flattened fields ``[batch, dnn_units[-1]]`` are
    concatenated and passed through the top layers (the last one linear).
    """

    def __init__(
        self,
        dnn_units: Sequence[int] = (512, 256, 128),
        top_units: Sequence[int] = (256, 128, 30),
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dnn_units = tuple(int(u) for u in dnn_units)
        self.top_units = tuple(int(u) for u in top_units)
        self.dropout = float(dropout)
        self.fm = FactorizationMachine(name="fm")
        self.dnn = MLP(self.dnn_units, output_activation="relu", dropout=self.dropout, name="dnn")
        self.top = MLP(self.top_units, dropout=self.dropout, name="top")

    @property
    def output_dim(self) -> int:
        return self.top_units[-1]

    def call(self, embeddings: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        num_fields, dim = embeddings.shape[-2], embeddings.shape[-1]
        flat = tf.reshape(embeddings, [-1, num_fields * dim])
        deep = self.dnn(flat, training=training)
        return self.top(tf.concat([self.fm(embeddings), deep], axis=-1), training=training)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "dnn_units": list(self.dnn_units),
            "top_units": list(self.top_units),
            "dropout": self.dropout,
        }
