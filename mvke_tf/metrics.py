"""Ranking metrics in NumPy: exact AUC, exact GAUC, and a bounded binned AUC.

* :func:`auc` and :func:`grouped_auc` are exact (ties count one half) and vectorised: GAUC over a
  million examples and tens of thousands of users is one sort, not a Python loop over users. The
  groups' weighted AUCs are summed exactly (:func:`exact_sum`), so GAUC computed in parts (shards of
  users) is the same float as GAUC computed at once, whatever the split and the order of the parts.
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

# Every finite double is an integer multiple of 2**-1074; with the 53-bit mantissa as an integer,
# ``m * 2**(e - 53)`` for ``np.frexp``'s exponent ``e >= -1073``, a multiple of 2**-1127 with a
# non-negative shift. Sums are kept as Python integers in that unit: exact, so parts add in any order.
_EXACT_SHIFT = 1074 + 53
_HALF_BITS = 26  # mantissas are summed as two halves of at most 27 bits: no int64 overflow below 2**36 terms


def exact_sum(values: Any) -> int:
    """The exact sum of ``values`` (``[n]`` finite floats) as an integer count of ``2**-1127``.

    Integers add exactly, in any order and grouping: the sum of several parts' ``exact_sum`` is the
    ``exact_sum`` of all the values. :func:`exact_to_float` gives the correctly rounded float.

    Raises:
      ValueError: if a value is NaN or infinite.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    return exact_sums(v, np.zeros(len(v), dtype=np.int64)).get(0, 0)


def exact_sums(values: Any, segments: Any) -> dict[int, int]:
    """:func:`exact_sum` of ``values`` ``[n]`` per segment id ``segments`` ``[n]`` (integers):
    ``{segment: sum}`` for every segment present, vectorised (no Python loop over the values).

    Raises:
      ValueError: if a value is NaN or infinite, or the shapes differ.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    seg = np.asarray(segments).astype(np.int64).ravel()
    if v.shape != seg.shape:
        raise ValueError(f"exact_sums: values {v.shape} and segments {seg.shape} differ in shape")
    if not np.all(np.isfinite(v)):
        raise ValueError("exact_sums: the values hold NaN or infinity; fix: sum finite values only")
    out = dict.fromkeys(np.unique(seg).tolist(), 0)
    nonzero = v != 0
    v, seg = v[nonzero], seg[nonzero]
    if not len(v):
        return out
    mantissa, exponent = np.frexp(v)
    m = (mantissa * 2.0**53).astype(np.int64)  # exact: |mantissa| in [0.5, 1) has 53 significant bits
    shift = exponent.astype(np.int64) + (_EXACT_SHIFT - 53)
    order = np.lexsort((shift, seg))
    seg, shift, m = seg[order], shift[order], m[order]
    starts = np.flatnonzero(np.r_[True, (shift[1:] != shift[:-1]) | (seg[1:] != seg[:-1])])
    # m = high * 2**26 + low with 0 <= low < 2**26: each half sums in int64 without overflow.
    high = np.add.reduceat(m >> _HALF_BITS, starts)
    low = np.add.reduceat(m & ((1 << _HALF_BITS) - 1), starts)
    for g, s, h, lo in zip(seg[starts].tolist(), shift[starts].tolist(), high.tolist(), low.tolist()):
        out[g] += ((h << _HALF_BITS) + lo) << s
    return out


def exact_to_float(units: int) -> float:
    """The float nearest to ``units * 2**-1127`` (an :func:`exact_sum`), correctly rounded."""
    return units / (1 << _EXACT_SHIFT)  # int / int is correctly rounded in Python


def _group_weights(sizes: np.ndarray, weighting: str) -> np.ndarray:
    if weighting not in GROUP_WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is not one of {GROUP_WEIGHTINGS}")
    return sizes if weighting == "examples" else np.ones(len(sizes))


def grouped_auc_exact_terms(labels: Any, scores: Any, groups: Any, weighting: str = "examples") -> tuple[int, int]:
    """:func:`grouped_auc_terms`' two sums held exactly (:func:`exact_sum`): the terms of disjoint parts
    (e.g. shards of users) add up to the whole's, bit for bit, in any order."""
    _group_weights(np.zeros(0), weighting)  # refuses an unknown weighting before any work
    _, aucs, sizes = group_aucs(labels, scores, groups)
    weights = _group_weights(sizes, weighting)
    return exact_sum(aucs * weights), exact_sum(weights)


def grouped_auc_terms(labels: Any, scores: Any, groups: Any, weighting: str = "examples") -> tuple[float, float]:
    """``(sum over groups of w_g * AUC_g, sum of w_g)`` over the groups holding both classes.

    ``weighting``: ``examples`` (``w_g = n_g``, the group's example count: GAUC) or ``uniform``
    (``w_g = 1``: the plain mean of the groups' AUCs, e.g. over domains). The sums are the correctly
    rounded exact sums; to compute the mean in parts (e.g. one per shard of users) bit for bit, add the
    parts' :func:`grouped_auc_exact_terms` and convert with :func:`exact_to_float`.
    """
    total, weight = grouped_auc_exact_terms(labels, scores, groups, weighting)
    return exact_to_float(total), exact_to_float(weight)


def group_aucs(labels: Any, scores: Any, groups: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each group holding both classes: ``(group [G], AUC [G], example count [G])``, groups sorted.

    ``labels``, ``scores``, ``groups``: ``[n]``. A group's AUC depends on its own rows only: its ranks
    are exact half-integers and its one division is the same whatever else is in the arrays, so a group
    gives the same float in any part (shard, slice) that holds all of its rows.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    if not y.shape == s.shape == g.shape:
        raise ValueError(f"labels {y.shape}, scores {s.shape} and groups {g.shape} differ in shape")
    if len(y) == 0:
        return g[:0], np.zeros(0), np.zeros(0)
    unique, group_id = np.unique(g, return_inverse=True)
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
    aucs = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2.0) / (n_pos[both] * n_neg[both])
    return unique[both], aucs, sizes[both]


def grouped_auc(labels: Any, scores: Any, groups: Any) -> float:
    """GAUC: per-group AUC weighted by group size, over groups holding both classes.

    Raises:
      ValueError: if no group holds both classes.
    """
    total, weight = grouped_auc_terms(labels, scores, groups)
    if weight == 0:
        raise ValueError("GAUC needs at least one group with both positive and negative labels")
    return total / weight


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
