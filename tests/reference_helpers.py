"""Reference parsing the tests compare the exports with: raw ``tf.Example`` -> a model's fields, through the
library's field parser (:func:`mvke_tf.data.dataset.parse_fields`) outside any signature."""

import tensorflow as tf

from mvke_tf.config import FeatureConfig
from mvke_tf.data.dataset import parse_fields


def parse_examples(serialized: tf.Tensor, config: FeatureConfig) -> dict[str, tf.Tensor]:
    """Serialized ``tf.Example`` ``[batch]`` -> the model's feature dict (user fields and the tag; padded, dense)."""
    return parse_fields(serialized, (*config.user_fields, config.tag_field))


def parse_user_examples(serialized: tf.Tensor, config: FeatureConfig) -> dict[str, tf.Tensor]:
    """Serialized ``tf.Example`` ``[batch]`` -> the user fields, as ``user_tower`` parses them."""
    return parse_fields(serialized, config.user_fields)
