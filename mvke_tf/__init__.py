"""mvke-tf: multi-objective user-profile modeling and multi-task recommendation in TF/Keras.

Importing the package sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is loaded, so
``tf.keras`` is Keras 2 (``tf_keras``), the Keras that TFX 1.16 and TFRS 0.7 expect.
"""

from mvke_tf import _env

_env.configure()

__version__ = "0.1.0"

__all__ = ["__version__"]
