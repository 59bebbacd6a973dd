"""Keras layers: small, serializable building blocks composed into the models."""

from mvke_tf.layers.embedding import FieldEmbedding, FieldsEmbedding, field_ids
from mvke_tf.layers.interaction import MLP, DeepFMTower, FactorizationMachine

__all__ = ["FieldEmbedding", "FieldsEmbedding", "field_ids", "MLP", "DeepFMTower", "FactorizationMachine"]
