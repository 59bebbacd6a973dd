"""What the multi-task ranking models of :mod:`mvke_tf.models.ranking` add to the shared layers.

Their expert mixtures and PLE extraction are in :mod:`mvke_tf.layers.experts`.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def ranking_score(p_ctr: tf.Tensor, p_cvr: tf.Tensor, weights: Sequence[float]) -> tf.Tensor:
    """The online ranking score: ``w0 * pCTR + w1 * pCVR`` (the app-store system weighs both alike)."""
    return float(weights[0]) * p_ctr + float(weights[1]) * p_cvr
