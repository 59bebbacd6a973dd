"""Scoring an MDMT model: its predictions over batches and the AUC per (domain, task), mean and total.

One job: turn a trained :class:`~mvke_tf.models.multidomain.MultiDomainModel` and labelled rows into the
paper's numbers (:func:`predict_multidomain`, :func:`mdmt_metrics`); the training loop's validation and the
benchmarks both score with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from mvke_tf.models.multidomain import MultiDomainModel


def predict_multidomain(model: MultiDomainModel, batches: Iterable[Any]) -> dict[str, np.ndarray]:
    """``{task: [N] probabilities}`` over ``(features, ...)`` batches, in order."""
    step = model.__dict__.get("_traced_call")
    if step is None:
        step = model.__dict__["_traced_call"] = tf.function(model.call, reduce_retracing=True)
    out: dict[str, list[np.ndarray]] = {t: [] for t in model.config.tasks}
    for batch in batches:
        features = batch[0] if isinstance(batch, tuple) else batch
        for t, p in step(features).items():
            out[t].append(p.numpy())
    return {t: np.concatenate(v) for t, v in out.items()}


def mdmt_metrics(
    labels: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray], domain: np.ndarray, num_domains: int
) -> dict[str, Any]:
    """AUC per (domain, task), their mean, and the macro AUC over tasks pooled across domains.

    Returns ``{"auc": {domain: {task: auc}}, "mean_auc": float, "total_auc": float}``;
    ``total_auc`` is the official code's "total AUC" (per task over all samples, then the
    mean over tasks). A (domain, task) with one class only gets NaN and is left out of means.
    """
    from mvke_tf.metrics import auc_or_nan as safe_auc

    per: dict[int, dict[str, float]] = {}
    for d in range(num_domains):
        m = domain == d
        per[d] = {t: safe_auc(np.asarray(labels[t])[m], np.asarray(probs[t])[m]) for t in probs}
    values = [v for row in per.values() for v in row.values() if not np.isnan(v)]
    pooled = [safe_auc(np.asarray(labels[t]), np.asarray(probs[t])) for t in probs]
    return {"auc": per, "mean_auc": float(np.mean(values)), "total_auc": float(np.nanmean(pooled))}


__all__ = ["mdmt_metrics", "predict_multidomain"]
