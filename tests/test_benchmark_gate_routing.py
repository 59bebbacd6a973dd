"""The routing statistics of the gate study, on gate vectors with known structure."""

import math

import numpy as np
import pytest

from benchmarks.gate_routing import gate_routing


def test_uniform_gates_have_no_routing():
    stats = gate_routing(np.full((12, 3), 1 / 3), np.repeat(["a", "b", "c"], 4))
    assert stats["entropy"] == pytest.approx(1.0)
    assert stats["deviation"] == pytest.approx(0.0)
    assert stats["eta2"] == 0.0


def test_branch_routing_is_separated():
    # Each branch routes to its own expert, with a little per-tag noise.
    rng = np.random.default_rng(0)
    branch = np.repeat(np.arange(3), 20)
    logits = 4.0 * np.eye(3)[branch] + rng.normal(scale=0.3, size=(60, 3))
    w = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    stats = gate_routing(w, branch)
    assert stats["eta2"] > 0.9 and stats["centroid_accuracy"] == 1.0
    assert stats["entropy"] < 0.5
    # Reference entropy for one row.
    one = gate_routing(w[:1], branch[:1])
    assert one["entropy"] == pytest.approx(-(w[0] * np.log(w[0])).sum() / math.log(3))


def test_routing_unrelated_to_branch_is_at_chance():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.0, size=(600, 4))
    w = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    stats = gate_routing(w, rng.integers(0, 6, size=600))
    assert stats["eta2"] < 0.03  # chance: (6 - 1) / (600 - 1) = 0.008
    assert stats["centroid_accuracy"] < 0.3  # chance 1/6
