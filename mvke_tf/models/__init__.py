"""Models: one typed ModelConfig selects the variant."""

from mvke_tf.models.config import MODEL_TYPES, ModelConfig
from mvke_tf.models.user_tag import UserTagModel, build_model, dummy_features

__all__ = ["MODEL_TYPES", "ModelConfig", "UserTagModel", "build_model", "dummy_features"]
