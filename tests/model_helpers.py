"""Helpers shared by the model, export, tagging and training tests."""

import numpy as np

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, FieldSpec


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


def chance_bar(labels, sigmas: float = 3.0) -> float:
    """0.5 plus ``sigmas`` standard deviations of a random scorer's AUC on these 0/1 labels (Hanley &
    McNeil at AUC 0.5). A model that learned nothing passes it with probability ~0.1% at 3 sigmas,
    ~3e-5 at 4, ~3e-7 at 5: the bound of "it learned something" that states its false-pass rate."""
    n_pos = float(np.sum(labels))
    n_neg = len(labels) - n_pos
    return 0.5 + sigmas * float(np.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg)))


# A tiny multi-domain model's fields, sizes and batches (three domains, click and conversion).
MD_SPECS = (
    FieldSpec("cat", CATEGORICAL, hash_buckets=16),
    FieldSpec("tags", MULTI_VALUED, hash_buckets=32, max_values=3),
    FieldSpec("num", NUMERIC, boundaries=(0.0, 1.0)),
)
MD_TINY = dict(
    embedding_dim=4,
    bottom_units=(8, 6),
    skip_units=(6,),
    expert_units=(5, 5),
    num_shared_experts=2,
    tower_units=4,
)
MD_BATCH = 12


def md_batch(seed: int = 0, n: int = MD_BATCH):
    """``(features, labels)`` numpy dicts of ``n`` rows, domains 0, 1, 2 in turn."""
    rng = np.random.default_rng(seed)
    feats = {
        "cat": np.array([f"c{i}" for i in rng.integers(0, 5, n)]),
        "tags": np.array([[f"t{rng.integers(0, 9)}", f"t{rng.integers(0, 9)}", ""] for _ in range(n)]),
        "num": rng.normal(size=n).astype(np.float32),
        "domain": (np.arange(n) % 3).astype(np.int32),
    }
    labels = {"click": (rng.uniform(size=n) < 0.5).astype(np.float32)}
    labels["conversion"] = labels["click"] * (rng.uniform(size=n) < 0.5)
    return feats, labels
