"""Process environment the stack needs before TensorFlow is imported.

TFX 1.16 and TensorFlow Recommenders 0.7 are written against Keras 2 (``tf_keras``).
TensorFlow 2.16 switches ``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is
set *before* TensorFlow's first import, so this module is imported first by the
package ``__init__``, the CLI, the test ``conftest.py`` and the pipeline entry points.
"""

from __future__ import annotations

import os
import sys


def configure(quiet: bool = False) -> None:
    """Sets the environment variables the stack relies on.

    Args:
      quiet: also silence TensorFlow's C++ logging (used by the CLI; the CUDA probing
        on CPU-only machines prints errors that are not errors).
    """
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        # Too late to switch Keras versions; say so instead of failing obscurely later.
        import warnings

        warnings.warn(
            "TensorFlow was imported before mvke_tf and TF_USE_LEGACY_KERAS is not '1': "
            "tf.keras may be Keras 3, which mvke_tf does not support. Import mvke_tf "
            "first or export TF_USE_LEGACY_KERAS=1.",
            RuntimeWarning,
            stacklevel=3,
        )
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if quiet:
        # Not TF_ENABLE_ONEDNN_OPTS=0: it would silence one more line at the price of oneDNN's CPU
        # kernels (training steps 1.7x slower measured); the log level already hides that line.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def skip_autograph_for_tf_keras() -> None:
    """Lets AutoGraph call Keras' own code as it is, as it did when Keras was the ``keras`` package.

    AutoGraph leaves the modules on its do-not-convert list untouched; the list has ``keras``
    but not ``tf_keras``, the name Keras 2 has under TensorFlow 2.16. Without this, every trace
    (a model's first fit, evaluation, export) re-transpiles Keras' ``Layer.__call__``, its
    traceback wrappers and the optimizer, which Keras never needed: measured 2.1x slower for the
    first ``train_and_evaluate`` of a small MVKE (122 s vs 58 s, same AUCs to 5 decimals).
    Our own layers' ``call`` is still converted: Keras converts each layer's ``call`` itself.
    Idempotent; a no-op where TensorFlow's internal rule list is not found.
    """
    try:
        from tensorflow.python.autograph.core import config
    except ImportError:  # pragma: no cover - a TensorFlow without the internal module
        return
    rules = tuple(getattr(config, "CONVERSION_RULES", ()))
    if not any(isinstance(r, config.DoNotConvert) and r.matches("tf_keras") for r in rules):
        config.CONVERSION_RULES = (config.DoNotConvert("tf_keras"), *rules)
