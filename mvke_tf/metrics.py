"""Ranking metrics in NumPy: exact AUC, exact GAUC, and a bounded binned AUC.

* :func:`auc` and :func:`grouped_auc` are exact (ties count one half) and vectorised: GAUC over a
  million examples and tens of thousands of users is one sort, not a Python loop over users.
* :class:`ScoreHistogram` is the bounded summary the pipeline's evaluator keeps per slice: counts of
  positives and negatives and the sum of predictions in 10,000 prediction buckets. Its
  :meth:`~ScoreHistogram.auc` follows TensorFlow Model Analysis's AUC step for step (the same buckets,
  thresholds, confusion matrices and Riemann sums), so it gives TFMA's value, not an approximation
  of it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _average_ranks(sorted_values: np.ndarray, segment_start: np.ndarray | None = None) -> np.ndarray:
    """1-based ranks of already-sorted values, ties sharing their average rank.

    With ``segment_start`` (a boolean mask of where each segment begins), ranks restart at 1 in
    every segment and ties never span two segments.
    """
    n = len(sorted_values)
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = sorted_values[1:] != sorted_values[:-1]
    if segment_start is not None:
        new_run |= segment_start
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], n]
    average = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # global 1-based average position
    if segment_start is None:
        return average
    first = np.flatnonzero(segment_start)
    offset = np.repeat(first, np.diff(np.r_[first, n]))
    return average - offset


def auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve, exact, with ties counted as one half.

    Args:
      labels: ``[n]`` binary labels.
      scores: ``[n]`` scores, higher meaning more likely positive.

    Raises:
      ValueError: if the labels hold only one class or the shapes differ.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = _average_ranks(s[order])
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc_or_nan(labels: Any, scores: Any) -> float:
    """:func:`auc`, or NaN when the labels hold one class only (or there are none)."""
    y = np.asarray(labels).ravel()
    positives = int(np.count_nonzero(y))
    return auc(y, scores) if 0 < positives < len(y) else math.nan


GROUP_WEIGHTINGS = ("examples", "uniform")


def grouped_auc_terms(labels: Any, scores: Any, groups: Any, weighting: str = "examples") -> tuple[float, float]:
    """``(sum over groups of w_g * AUC_g, sum of w_g)`` over the groups holding both classes.

    ``weighting``: ``examples`` (``w_g = n_g``, the group's example count: GAUC) or ``uniform``
    (``w_g = 1``: the plain mean of the groups' AUCs, e.g. over domains). The two sums of several parts
    add up, so the mean can be computed in parts (e.g. one per shard of users) and combined:
    ``sum(first) / sum(second)``.
    """
    if weighting not in GROUP_WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is not one of {GROUP_WEIGHTINGS}")
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    if not y.shape == s.shape == g.shape:
        raise ValueError(f"labels {y.shape}, scores {s.shape} and groups {g.shape} differ in shape")
    if len(y) == 0:
        return 0.0, 0.0
    _, group_id = np.unique(g, return_inverse=True)
    order = np.lexsort((s, group_id))
    gid, ys = group_id[order], y[order]
    start = np.ones(len(gid), dtype=bool)
    start[1:] = gid[1:] != gid[:-1]
    ranks = _average_ranks(s[order], segment_start=start)
    sizes = np.bincount(gid).astype(np.float64)
    n_pos = np.bincount(gid, weights=ys.astype(np.float64))
    n_neg = sizes - n_pos
    rank_sum = np.bincount(gid, weights=ranks * ys)
    both = (n_pos > 0) & (n_neg > 0)
    per_group = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2.0) / (n_pos[both] * n_neg[both])
    weights = sizes[both] if weighting == "examples" else np.ones(int(both.sum()))
    return float(np.sum(per_group * weights)), float(np.sum(weights))


def grouped_auc(labels: Any, scores: Any, groups: Any) -> float:
    """GAUC: per-group AUC weighted by group size, over groups holding both classes.

    Raises:
      ValueError: if no group holds both classes.
    """
    total, weight = grouped_auc_terms(labels, scores, groups)
    if weight == 0:
        raise ValueError("GAUC needs at least one group with both positive and negative labels")
    return total / weight


def grouped_auc_or_nan(labels: Any, scores: Any, groups: Any) -> float:
    """:func:`grouped_auc`, or NaN when no group holds both classes (or there are no examples)."""
    total, weight = grouped_auc_terms(labels, scores, groups)
    return total / weight if weight else math.nan


# ----------------------------------------------------------------------------- binned AUC

# TFMA's defaults: 10,000 prediction buckets on [0, 1] (plus one below and one above), AUC over
# 10,000 thresholds, and the epsilon it uses to turn ">=" bucket edges into ">" thresholds.
NUM_BUCKETS = 10_000
_EPSILON = 1e-7


def _rebin_index(num_buckets: int) -> np.ndarray:
    """For each histogram bucket (0 .. num_buckets + 1), the threshold interval TFMA rebins it into."""
    thresholds = [(i + 1) * 1.0 / (num_buckets - 1) for i in range(num_buckets - 2)]
    thresholds = [-_EPSILON] + thresholds + [1.0 + _EPSILON]
    edges = np.array([t + _EPSILON if t != 0 else t for t in thresholds])
    lower = np.array([(b - 1) / num_buckets * 1.0 + 0.0 for b in range(num_buckets + 2)])
    lower[0], lower[-1] = -np.inf, np.inf
    return np.searchsorted(edges[1:], lower, side="right")


_REBIN = {NUM_BUCKETS: _rebin_index(NUM_BUCKETS)}


class ScoreHistogram:
    """Counts of positives and negatives, and the sum of predictions, in prediction buckets.

    Bucket ``b`` holds predictions ``p`` with ``b = int(p * num_buckets) + 1`` (0 below 0, the last
    bucket at 1 and above), as TFMA's calibration histogram. Memory is three arrays of
    ``num_buckets + 2`` floats, whatever the number of examples; histograms of parts add up.
    """

    __slots__ = ("num_buckets", "positives", "negatives", "prediction_sum")

    def __init__(self, num_buckets: int = NUM_BUCKETS) -> None:
        self.num_buckets = int(num_buckets)
        self.positives = np.zeros(self.num_buckets + 2)
        self.negatives = np.zeros(self.num_buckets + 2)
        self.prediction_sum = 0.0

    def add(self, labels: np.ndarray, predictions: np.ndarray) -> ScoreHistogram:
        """Adds examples: ``labels`` (0/1) and ``predictions`` ``[n]``; returns self."""
        p = np.asarray(predictions, dtype=np.float64).ravel()
        y = np.asarray(labels, dtype=np.float64).ravel()
        bucket = np.clip(np.floor(p * self.num_buckets + 1), 0, self.num_buckets + 1).astype(np.int64)
        size = self.num_buckets + 2
        positives = np.bincount(bucket, weights=y, minlength=size)
        self.positives += positives
        self.negatives += np.bincount(bucket, minlength=size) - positives
        self.prediction_sum += float(p.sum())
        return self

    def merge(self, other: ScoreHistogram) -> ScoreHistogram:
        """Adds ``other``'s counts to this histogram; returns self."""
        if other.num_buckets != self.num_buckets:
            raise ValueError(f"cannot merge histograms of {other.num_buckets} and {self.num_buckets} buckets")
        self.positives += other.positives
        self.negatives += other.negatives
        self.prediction_sum += other.prediction_sum
        return self

    @property
    def example_count(self) -> float:
        return float(self.positives.sum() + self.negatives.sum())

    @property
    def label_sum(self) -> float:
        return float(self.positives.sum())

    def _confusion(self) -> tuple[np.ndarray, ...]:
        """TFMA's confusion matrices at its thresholds: ``tp, fp, tn, fn`` ``[num_buckets]``."""
        rebin = _REBIN.get(self.num_buckets)
        if rebin is None:
            rebin = _REBIN.setdefault(self.num_buckets, _rebin_index(self.num_buckets))
        pos = np.bincount(rebin, weights=self.positives, minlength=self.num_buckets)
        neg = np.bincount(rebin, weights=self.negatives, minlength=self.num_buckets)
        tp, fp = np.cumsum(pos[::-1])[::-1], np.cumsum(neg[::-1])[::-1]  # at or above each threshold
        fn, tn = np.r_[0.0, np.cumsum(pos)[:-1]], np.r_[0.0, np.cumsum(neg)[:-1]]  # below it
        tp[-1] = fp[-1] = 0.0  # the last threshold (1 + epsilon) takes nothing
        fn[-1], tn[-1] = tp[0], fp[0]
        return tp, fp, tn, fn

    def auc(self, curve: str = "ROC") -> float:
        """TFMA's AUC (``curve="ROC"``) or PR AUC (``"PR"``, interpolated) from the histogram."""
        tp, fp, tn, fn = self._confusion()
        with np.errstate(divide="ignore", invalid="ignore"):
            if curve.upper() == "PR":
                dtp = tp[:-1] - tp[1:]
                p = tp + fp
                dp = p[:-1] - p[1:]
                slope = dtp / np.maximum(dp, 0)
                intercept = tp[1:] - slope * p[1:]
                ratio = np.where((p[:-1] > 0) & (p[1:] > 0), p[:-1] / np.maximum(p[1:], 0), np.ones_like(p[1:]))
                return float(np.nansum(slope * (dtp + intercept * np.log(ratio)) / np.maximum(tp[1:] + fn[1:], 0)))
            if curve.upper() != "ROC":
                raise ValueError(f"curve={curve!r}: use 'ROC' or 'PR'")
            recall = tp / (tp + fn)
            fp_rate = fp / (fp + tn)
            heights = (recall[:-1] + recall[1:]) / 2.0
            return float(np.nansum((fp_rate[:-1] - fp_rate[1:]) * heights))

    def calibration(self) -> float:
        """Sum of predictions / sum of labels (NaN without positives)."""
        labels = self.label_sum
        return self.prediction_sum / labels if labels > 0 else math.nan
