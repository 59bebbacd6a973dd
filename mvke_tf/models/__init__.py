"""Models of three families (:mod:`mvke_tf.models.family`): user tagging (:class:`UserTagConfig`), pair
ranking (:class:`~mvke_tf.models.ranking.RankingConfig`) and multi-domain
(:class:`~mvke_tf.models.multidomain.MultiDomainConfig`). A family's config selects and sizes its models;
:func:`build_model` builds the model of any family's config."""

from typing import Any

from mvke_tf.models import config as _config
from mvke_tf.models import families as _families  # noqa: F401  (registers the built-in families)
from mvke_tf.models.config import USER_TAG_MODEL_NAMES, UserTagConfig
from mvke_tf.models.family import build_model, renamed_attribute
from mvke_tf.models.user_tag import UserTagModel, dummy_features

__all__ = ["USER_TAG_MODEL_NAMES", "UserTagConfig", "UserTagModel", "build_model", "dummy_features"]


def __getattr__(name: str) -> Any:
    # ModelConfig and MODEL_TYPES (mvke-tf 0.1.0): still importable, with a FutureWarning, until mvke-tf 0.2.
    return renamed_attribute(__name__, vars(_config), _config.RENAMED, name)
