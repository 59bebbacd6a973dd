"""Grouped AUC metrics for TFMA: GAUC (AUC grouped by user, weighted by each user's impressions) and
``MeanGroupAUC`` (the plain mean AUC over (group, output) pairs, e.g. over (domain, task)).

Registered in the Evaluator's config (``mvke_tf.pipelines.pipeline.eval_config``) as::

    tfma.MetricConfig(class_name="GAUC", module="mvke_tf.pipelines.gauc", config='{"name": "gauc"}')

The value is :func:`mvke_tf.metrics.grouped_auc` over the slice's examples: the AUC of each user
having both positive and negative labels, averaged with the user's example count as weight. A
slice with no such user gets NaN (TFMA keeps the key; no error is raised). The group (user) is
the raw feature ``group_key`` (default ``user_id``), one value per example.

The pipeline's batched Evaluator (:mod:`mvke_tf.pipelines.evaluator`) computes this metric itself from
the same config; this module is what TFX's stock TFMA Evaluator (``evaluator: tfma``) runs. Its
combiner keeps three compact columns per slice (a 64-bit hash of the group, the label, the
prediction: 17 bytes per example in ``array`` buffers, no Python object per example) and computes
the exact GAUC once, vectorised, in ``extract_output``.

``MeanGroupAUC`` (a multi-domain model's blessing metric) goes in a ``MetricsSpec`` without output
names, as ``config='{"name": "mean_domain_task_auc", "group_key": "domain", "outputs": ["click",
"conversion"]}'``: each (domain, task) pair holding both classes counts once, whatever its size.

Example weights are not supported: the groups are weighted by each metric's definition, and asking
for a weighted variant raises ``ValueError``.
"""

from __future__ import annotations

import array
import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util

from mvke_tf.metrics import grouped_auc_terms

GAUC_NAME = "gauc"
MEAN_GROUP_AUC_NAME = "mean_group_auc"
DEFAULT_GROUP_KEY = "user_id"


class GAUC(tfma.metrics.Metric):
    """Group AUC (per-user AUC weighted by impressions) for each model output."""

    def __init__(self, name: str = GAUC_NAME, group_key: str = DEFAULT_GROUP_KEY):
        """Args:
        name: the metric's name in the evaluation results.
        group_key: the raw feature holding the group (user) id, one value per example.
        """
        super().__init__(_gauc_computations, name=name, group_key=group_key)


class MeanGroupAUC(tfma.metrics.Metric):
    """The plain mean of the AUCs of every (group, output) pair holding both classes.

    With the domain id as ``group_key`` and every task as ``outputs``, the mean AUC over (domain, task)
    that multi-domain models are compared by. Placed in a ``MetricsSpec`` without output names: it
    reads the outputs it is given and reports one value per slice (output name ``""``).
    """

    def __init__(self, name: str = MEAN_GROUP_AUC_NAME, group_key: str = "domain", outputs: Sequence[str] = ()):
        """Args:
        name: the metric's name in the evaluation results.
        group_key: the raw feature holding the group (e.g. domain) id, one value per example.
        outputs: the model outputs (tasks) averaged over.
        """
        if not outputs:
            raise ValueError(f"{type(self).__name__}: outputs is empty; fix: list the tasks, e.g. [click, conversion]")
        super().__init__(_mean_group_auc_computations, name=name, group_key=group_key, outputs=list(outputs))


metric_types.register_metric(GAUC)
metric_types.register_metric(MeanGroupAUC)


def _check_unweighted(metric: str, example_weighted: bool, sub_keys: list[Any] | None) -> None:
    if example_weighted:
        raise ValueError(
            f"{metric}: example-weighted computation is not supported (groups are weighted by the metric's "
            "definition); fix: set the MetricsSpec's example_weights to unweighted only"
        )
    if sub_keys and any(k is not None for k in sub_keys):
        raise ValueError(f"{metric}: sub_keys (class_ids / top_k) are not supported, got {sub_keys}")


def _gauc_computations(
    name: str = GAUC_NAME,
    group_key: str = DEFAULT_GROUP_KEY,
    eval_config: tfma.EvalConfig | None = None,
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    sub_keys: list[Any] | None = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    _check_unweighted("GAUC", example_weighted, sub_keys)
    return [
        _computation(
            metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name),
            eval_config,
            group_key,
            [output_name],
            "examples",
        )
        for model_name in model_names or [""]
        for output_name in output_names or [""]
    ]


def _computation(
    key: metric_types.MetricKey,
    eval_config: tfma.EvalConfig | None,
    group_key: str,
    outputs: Sequence[str],
    weighting: str,
) -> metric_types.MetricComputation:
    return metric_types.MetricComputation(
        keys=[key],
        preprocessors=[metric_types.FeaturePreprocessor(feature_keys=[group_key])],
        combiner=_GroupAUCCombiner(key, eval_config, group_key, outputs, weighting),
    )


def _mean_group_auc_computations(
    name: str = MEAN_GROUP_AUC_NAME,
    group_key: str = "domain",
    outputs: Sequence[str] = (),
    eval_config: tfma.EvalConfig | None = None,
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    sub_keys: list[Any] | None = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    _check_unweighted("MeanGroupAUC", example_weighted, sub_keys)
    if any(output_names or []):
        raise ValueError(
            f"MeanGroupAUC: it spans the outputs {list(outputs)} and takes no output names, got {output_names}; "
            "fix: put it in a MetricsSpec without output_names"
        )
    return [
        _computation(metric_types.MetricKey(name=name, model_name=m), eval_config, group_key, outputs, "uniform")
        for m in model_names or [""]
    ]


class _GroupAUCAccumulator:
    """Compact columns of one slice: group hashes, and labels and predictions per output."""

    __slots__ = ("groups", "labels", "predictions")

    def __init__(self, outputs: Sequence[str]) -> None:
        self.groups = array.array("q")
        self.labels = {o: array.array("b") for o in outputs}
        self.predictions = {o: array.array("d") for o in outputs}


def group_hash(value: Any) -> int:
    """A stable signed 64-bit hash of a group id (the same in every worker process)."""
    if isinstance(value, np.generic):
        value = value.item()
    data = value if isinstance(value, bytes) else str(value).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def _group_of(features: Any, group_key: str) -> int:
    if features is None or group_key not in features:
        raise ValueError(
            f"grouped AUC: feature {group_key!r} not found in the features extracts; fix: make sure the "
            "evaluated examples carry it (raw examples for the Evaluator)"
        )
    values = np.asarray(features[group_key]).ravel()
    if values.size != 1:
        raise ValueError(f"grouped AUC: feature {group_key!r} must hold one value per example, got {values.size}")
    return group_hash(values[0])


class _GroupAUCCombiner(beam.CombineFn):
    """Collects (group, label and prediction of each output) per example into compact columns; at the end
    the mean of the (group, output) AUCs, weighted as ``weighting`` says
    (:func:`~mvke_tf.metrics.grouped_auc_terms`)."""

    def __init__(
        self,
        key: metric_types.MetricKey,
        eval_config: tfma.EvalConfig | None,
        group_key: str,
        outputs: Sequence[str],
        weighting: str,
    ):
        self._key = key
        self._eval_config = eval_config
        self._group_key = group_key
        self._outputs = list(outputs)
        self._weighting = weighting

    def create_accumulator(self) -> _GroupAUCAccumulator:
        return _GroupAUCAccumulator(self._outputs)

    def add_input(
        self, accumulator: _GroupAUCAccumulator, element: metric_types.StandardMetricInputs
    ) -> _GroupAUCAccumulator:
        group = _group_of(element.features, self._group_key)
        accumulator.groups.append(group)
        for output in self._outputs:
            pairs = list(
                metric_util.to_label_prediction_example_weight(
                    element,
                    eval_config=self._eval_config,
                    model_name=self._key.model_name,
                    output_name=output,
                    example_weighted=False,
                    flatten=True,
                )
            )
            if len(pairs) != 1:
                raise ValueError(f"grouped AUC: output {output!r} must hold one prediction per example")
            label, prediction, _ = pairs[0]
            accumulator.labels[output].append(int(np.asarray(label).ravel()[0] > 0))
            accumulator.predictions[output].append(float(np.asarray(prediction).ravel()[0]))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_GroupAUCAccumulator]) -> _GroupAUCAccumulator:
        accumulators = iter(accumulators)
        result = next(accumulators)
        for acc in accumulators:
            result.groups.extend(acc.groups)
            for output in self._outputs:
                result.labels[output].extend(acc.labels[output])
                result.predictions[output].extend(acc.predictions[output])
        return result

    def extract_output(self, accumulator: _GroupAUCAccumulator) -> dict[metric_types.MetricKey, float]:
        groups = np.frombuffer(accumulator.groups, dtype=np.int64)
        total = weight = 0.0
        for output in self._outputs:
            t, w = grouped_auc_terms(
                np.frombuffer(accumulator.labels[output], dtype=np.int8),
                np.frombuffer(accumulator.predictions[output], dtype=np.float64),
                groups,
                self._weighting,
            )
            total, weight = total + t, weight + w
        return {self._key: total / weight if weight else math.nan}
