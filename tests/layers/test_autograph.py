"""AutoGraph leaves Keras' own code alone (as it did for the ``keras`` package) and still converts ours."""

import tensorflow as tf
import tf_keras
from tensorflow.python.autograph.core import config
from tensorflow.python.autograph.impl import conversion

from mvke_tf import _env
from mvke_tf.layers import MLP


def test_tf_keras_is_left_unconverted_once():
    assert conversion.is_allowlisted(tf_keras.layers.Layer.__call__)
    assert conversion.is_allowlisted(tf_keras.optimizers.Adam.apply_gradients)
    before = config.CONVERSION_RULES
    _env.skip_autograph_for_tf_keras()
    assert config.CONVERSION_RULES is before  # idempotent: one rule, however often it is called
    assert sum(isinstance(r, config.DoNotConvert) and r.matches("tf_keras") for r in before) == 1


def test_our_layers_call_is_still_converted():
    assert not conversion.is_allowlisted(MLP.call)

    class Clip(tf.keras.layers.Layer):
        """Data-dependent Python control flow: works only if Keras hands ``call`` to AutoGraph."""

        def call(self, x):
            if tf.reduce_sum(x) > 0:
                return x
            return -x

    inputs = tf.keras.Input((2,))
    model = tf.keras.Model(inputs, Clip()(inputs))
    predict = tf.function(lambda x: model(x))
    assert predict(tf.constant([[1.0, 2.0]])).numpy().tolist() == [[1.0, 2.0]]
    assert predict(tf.constant([[-1.0, -2.0]])).numpy().tolist() == [[1.0, 2.0]]
