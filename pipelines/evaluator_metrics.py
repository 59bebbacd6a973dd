"""The batched Evaluator's metrics: score histograms per slice, and TFMA's metric values per slice.

Part of the batched Evaluator (:mod:`mvke_tf.pipelines.evaluator`): the batches are added to one
:class:`~mvke_tf.metrics.ScoreHistogram` per (slice, model, output), from which ExampleCount, AUC (ROC
and PR), Calibration, MeanLabel and MeanPrediction come out with TFMA's own formulas;
:func:`sliced_metrics` turns them, and the grouped AUCs' exact sums
(:mod:`mvke_tf.pipelines.evaluator_grouped_auc`), into TFMA's ``(slice key, {MetricKey: value})`` pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import apache_beam as beam
from mvke_tf.pipelines.evaluator_batches import EvalBatch
from mvke_tf.pipelines.evaluator_config import _GROUPED_METRICS, MetricRequest
from tensorflow_model_analysis.metrics import metric_types

from mvke_tf.metrics import ScoreHistogram, exact_to_float

# ----------------------------------------------------------------------------- histogram metrics


class _HistogramsCombineFn(beam.CombineFn):
    """All batches -> ``{slice key: {(model, output): ScoreHistogram}}``."""

    def create_accumulator(self) -> dict[tuple, dict[tuple[str, str], ScoreHistogram]]:
        return {}

    def add_input(self, acc: dict, batch: EvalBatch) -> dict:
        for key, rows in batch.slices.items():
            per_key = acc.setdefault(key, {})
            for (model, output), scores in batch.predictions.items():
                hist = per_key.get((model, output))
                if hist is None:
                    hist = per_key[(model, output)] = ScoreHistogram()
                hist.add(batch.labels[output][rows], scores[rows])
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        accumulators = iter(accumulators)
        result = next(accumulators)
        for acc in accumulators:
            for key, per_key in acc.items():
                mine = result.setdefault(key, {})
                for mo, hist in per_key.items():
                    if mo in mine:
                        mine[mo].merge(hist)
                    else:
                        mine[mo] = hist
        return result

    def extract_output(self, acc: dict) -> dict:
        return acc


# ----------------------------------------------------------------------------- metrics per slice


def _grouped_value(request: MetricRequest, terms: Mapping[tuple, tuple[int, int]], key: tuple, model: str) -> float:
    """The (weighted) mean of the groups' AUCs, over every output the request reads (``terms``: exact sums)."""
    weighting = _GROUPED_METRICS[request.class_name]
    total = weight = 0
    for output in request.label_outputs:
        t, w = terms.get((request.group_key, weighting, key, model, output), (0, 0))
        total, weight = total + t, weight + w
    return exact_to_float(total) / exact_to_float(weight) if weight else math.nan


def _metric_value(request: MetricRequest, hist: ScoreHistogram | None) -> float:
    if hist is None:
        return math.nan
    count = hist.example_count
    if request.class_name == "ExampleCount":
        return count
    if request.class_name in ("AUC", "AUCPrecisionRecall"):
        return hist.auc(request.curve)
    if request.class_name == "Calibration":
        return hist.calibration()
    if request.class_name == "MeanLabel":
        return hist.label_sum / count if count else math.nan
    return hist.prediction_sum / count if count else math.nan  # MeanPrediction


def sliced_metrics(
    histograms: Mapping[tuple, Mapping[tuple[str, str], ScoreHistogram]],
    group_terms: Mapping[tuple, tuple[int, int]],
    requests: Sequence[MetricRequest],
    models: Sequence[str],
    baseline: str | None,
) -> list[tuple[tuple, dict]]:
    """TFMA's ``(slice key, {MetricKey: value})`` pairs, with candidate-minus-baseline diffs.

    ``group_terms``: the grouped metrics' exact sums (:func:`~mvke_tf.metrics.exact_sum`), keyed
    ``(group key, weighting, slice key, model, output)``.
    """
    out = []
    for key in sorted(histograms, key=lambda k: (len(k), str(k))):
        metrics = {}
        for model in models:
            for r in requests:
                if r.class_name in _GROUPED_METRICS:
                    value = _grouped_value(r, group_terms, key, model)
                else:
                    value = _metric_value(r, histograms[key].get((model, r.output_name)))
                metrics[metric_types.MetricKey(name=r.name, model_name=model, output_name=r.output_name)] = value
        if baseline is not None:
            for k, value in list(metrics.items()):
                if k.model_name != baseline:
                    base = metrics[k._replace(model_name=baseline)]
                    metrics[k._replace(is_diff=True)] = value - base
        out.append((key, metrics))
    return out
