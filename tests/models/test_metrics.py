"""mvke_tf.metrics against references it shares no code with: a brute-force pair count and scikit-learn."""

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mvke_tf.metrics import (
    ScoreHistogram,
    auc,
    auc_or_nan,
    grouped_auc,
    grouped_auc_terms,
)


def _pairs_auc(labels, scores) -> float:
    """P(score of a positive > score of a negative), ties one half: every pair counted."""
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def _data(n, groups, seed, ties=True):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    s = rng.random(n) + 0.4 * y
    if ties:
        s = np.round(s, 1)  # many ties, which must count one half
    return y.astype(int), s, rng.integers(0, groups, n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_the_pair_count_and_sklearn_with_ties(seed):
    y, s, _ = _data(300, 1, seed)
    expected = _pairs_auc(y, s)
    assert auc(y, s) == pytest.approx(expected, abs=1e-12)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # Order, dtype and a constant shift do not matter.
    order = np.random.default_rng(seed).permutation(len(y))
    assert auc(y[order], s[order].astype(np.float32) + 3) == pytest.approx(expected, abs=1e-12)


def test_auc_edge_cases():
    assert auc([0, 1], [0.5, 0.5]) == 0.5
    assert auc([1, 0, 1, 0], [4, 3, 2, 1]) == pytest.approx(_pairs_auc([1, 0, 1, 0], [4, 3, 2, 1]))
    with pytest.raises(ValueError, match="both positive and negative"):
        auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="shape"):
        auc([1, 0], [0.1])
    assert math.isnan(auc_or_nan([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(auc_or_nan([], []))
    assert auc_or_nan([0, 1], [0.1, 0.2]) == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_grouped_auc_equals_sklearn_per_group_weighted_by_size(seed):
    y, s, g = _data(2000, 40, seed)
    total = weight = 0.0
    for group in np.unique(g):
        m = g == group
        if 0 < y[m].sum() < m.sum():  # only groups with both classes count
            total += roc_auc_score(y[m], s[m]) * m.sum()
            weight += m.sum()
    assert grouped_auc(y, s, g) == pytest.approx(total / weight, abs=1e-12)
    # String group ids and an unsorted input give the same value.
    names = np.array([f"user-{i}" for i in g])
    assert grouped_auc(y, s, names) == pytest.approx(total / weight, abs=1e-12)
    # Terms of disjoint parts (e.g. shards of users) add up to the whole.
    first = g < 20
    a, b = grouped_auc_terms(y[first], s[first], g[first]), grouped_auc_terms(y[~first], s[~first], g[~first])
    assert (a[0] + b[0]) / (a[1] + b[1]) == pytest.approx(total / weight, abs=1e-12)


def test_uniform_group_weighting_is_the_plain_mean_of_sklearn_aucs():
    y, s, g = _data(2000, 7, 3)
    aucs = [roc_auc_score(y[g == u], s[g == u]) for u in np.unique(g) if 0 < y[g == u].sum() < (g == u).sum()]
    total, weight = grouped_auc_terms(y, s, g, "uniform")
    assert weight == len(aucs) and total / weight == pytest.approx(np.mean(aucs), abs=1e-12)
    with pytest.raises(ValueError, match="weighting='size'"):
        grouped_auc_terms(y, s, g, "size")


def test_grouped_auc_does_not_mix_groups_or_ties_across_groups():
    # Group A ranks perfectly, group B perfectly wrong; equal scores sit in different groups.
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.9, 0.1, 0.1, 0.9, 0.9])
    g = np.array(["a", "a", "b", "b", "b"])
    assert grouped_auc(y, s, g) == pytest.approx((1.0 * 2 + 0.0 * 3) / 5)
    assert grouped_auc_terms([1, 0], [0.3, 0.4], ["a", "b"]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="at least one group"):
        grouped_auc([1, 0], [0.3, 0.4], ["a", "b"])


def test_score_histogram_auc_is_close_to_exact_and_merges():
    rng = np.random.default_rng(5)
    y = (rng.random(20_000) < 0.1).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=20_000) + 1.5 * y - 2)))
    whole = ScoreHistogram().add(y, p)
    # 10,000 buckets on [0, 1]: within a few 1e-4 of the exact value, as TFMA's AUC is.
    assert whole.auc() == pytest.approx(roc_auc_score(y, p), abs=5e-4)
    assert whole.auc("PR") == pytest.approx(average_precision_score(y, p), abs=5e-3)
    parts = ScoreHistogram().add(y[:7000], p[:7000]).merge(ScoreHistogram().add(y[7000:], p[7000:]))
    assert parts.auc() == whole.auc() and parts.auc("PR") == whole.auc("PR")
    assert whole.example_count == 20_000 and whole.label_sum == y.sum()
    assert whole.calibration() == pytest.approx(p.sum() / y.sum())
    assert math.isnan(ScoreHistogram().add([0, 0], [0.2, 0.3]).calibration())
    with pytest.raises(ValueError, match="curve"):
        whole.auc("XYZ")
