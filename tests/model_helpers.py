"""Helpers shared by the model, export and tagging tests."""

import numpy as np


def randomize_weights(model, seed: int = 0, stddev: float = 0.3) -> None:
    """Every weight of ``model`` drawn afresh from N(0, stddev).

    Freshly initialised MVKE gates are uniform to ~1e-4, so a check that tolerates 1e-5 passes even
    with the gate left out or another tag's gate used; random weights make such a bug fail by far.
    """
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0.0, stddev, w.shape).astype(w.dtype.as_numpy_dtype))


def gate_spread(gates) -> float:
    """How far the gates ``[B, S]`` are from uniform: max |w - 1/S| (0 for uniform gates)."""
    gates = np.asarray(gates)
    return float(np.abs(gates - 1.0 / gates.shape[-1]).max())
