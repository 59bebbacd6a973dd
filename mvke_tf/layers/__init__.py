"""Keras layers: small, serializable building blocks composed into the models."""

from mvke_tf import _env
from mvke_tf.layers.embedding import FieldEmbedding, FieldsEmbedding, field_ids
from mvke_tf.layers.interaction import MLP, DeepFMTower, FactorizationMachine

_env.skip_autograph_for_tf_keras()  # before any model is built or traced (see its docstring)

__all__ = ["FieldEmbedding", "FieldsEmbedding", "field_ids", "MLP", "DeepFMTower", "FactorizationMachine"]
