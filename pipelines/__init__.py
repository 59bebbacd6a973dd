"""TFX 1.16 pipeline for mvke-tf: ExampleGen -> Transform -> Trainer -> Evaluator -> Pusher.

The library (:mod:`mvke_tf`) never imports TFX; everything TFX-specific lives here.
"""

import os

# Keras 2 (tf_keras) for TFX 1.16; must be set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
