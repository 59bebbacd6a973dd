"""A tiny SavedModel for the serving tests that need a server but not the MVKE model (export in ~1 s).

Signatures:

* ``serving_default``: ``examples`` ``DT_STRING [B]`` (serialized ``tf.Example`` with a float feature
  ``x``, missing -> 0) -> ``y`` ``DT_FLOAT [B]`` = ``2 x``; parses with ``tf.io.parse_example`` like
  the real model, so malformed examples fail the same way.
* ``scale``: ``x`` ``DT_FLOAT [B, 3]`` -> ``z`` ``DT_FLOAT [B]`` = ``2 * sum(x, axis=1)``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import tensorflow as tf


class _Tiny(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        f = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)})
        return {"y": f["x"] * self.w}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def scale(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"z": tf.reduce_sum(x, axis=1) * self.w}


def export_tiny(base: Path, version: int = 1) -> Path:
    """Writes the tiny model to ``<base>/<version>/`` (TF Serving layout) and returns ``base``."""
    m = _Tiny()
    tf.saved_model.save(m, str(base / str(version)), signatures={"serving_default": m.serve, "scale": m.scale})
    return base


def example(x: float) -> bytes:
    """One serialized ``tf.Example`` with feature ``x``."""
    feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def examples(n: int, start: float = 0.0) -> np.ndarray:
    """``n`` serialized examples (``x = start, start + 1, ...``) as an object array ``[n]``."""
    out = np.empty(n, dtype=object)
    out[:] = [example(start + i) for i in range(n)]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
