"""Exact ranking metrics in NumPy (reference implementations, also used for reports)."""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
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
    s_sorted = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # Average ranks over runs of tied scores.
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def grouped_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """GAUC: per-group AUC weighted by group size, over groups holding both classes."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores).ravel()
    g = np.asarray(groups).ravel()
    total, weight = 0.0, 0
    order = np.argsort(g, kind="mergesort")
    g_sorted = g[order]
    bounds = np.r_[0, np.flatnonzero(g_sorted[1:] != g_sorted[:-1]) + 1, len(g)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        idx = order[lo:hi]
        pos = y[idx].sum()
        if 0 < pos < len(idx):
            total += auc(y[idx], s[idx]) * len(idx)
            weight += len(idx)
    if weight == 0:
        raise ValueError("GAUC needs at least one group with both positive and negative labels")
    return total / weight
