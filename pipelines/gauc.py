"""GAUC as a TFMA metric: AUC grouped by user, weighted by each user's impressions.

Registered in the Evaluator's config (``pipelines.pipeline.eval_config``) as::

    tfma.MetricConfig(class_name="GAUC", module="pipelines.gauc", config='{"name": "gauc"}')

The value is :func:`mvke_tf.metrics.grouped_auc` over the slice's examples: the AUC of each user
having both positive and negative labels, averaged with the user's example count as weight. A
slice with no such user gets NaN (TFMA keeps the key; no error is raised). The group (user) is
the raw feature ``group_key`` (default ``user_id``), one value per example.

The pipeline's batched Evaluator (:mod:`pipelines.evaluator`) computes this metric itself from
the same config; this module is what TFX's stock TFMA Evaluator (``evaluator: tfma``) runs. Its
combiner keeps three compact columns per slice (a 64-bit hash of the group, the label, the
prediction: 17 bytes per example in ``array`` buffers, no Python object per example) and computes
the exact GAUC once, vectorised, in ``extract_output``.

Example weights are not supported: GAUC here is impression-weighted by definition, and asking
for a weighted variant raises ``ValueError``.
"""

from __future__ import annotations

import array
import hashlib
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util

from mvke_tf.metrics import grouped_auc_or_nan

GAUC_NAME = "gauc"
DEFAULT_GROUP_KEY = "user_id"


class GAUC(tfma.metrics.Metric):
    """Group AUC (per-user AUC weighted by impressions) for each model output."""

    def __init__(self, name: str = GAUC_NAME, group_key: str = DEFAULT_GROUP_KEY):
        """Args:
        name: the metric's name in the evaluation results.
        group_key: the raw feature holding the group (user) id, one value per example.
        """
        super().__init__(_gauc_computations, name=name, group_key=group_key)


metric_types.register_metric(GAUC)


def _gauc_computations(
    name: str = GAUC_NAME,
    group_key: str = DEFAULT_GROUP_KEY,
    eval_config: tfma.EvalConfig | None = None,
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    sub_keys: list[Any] | None = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    if example_weighted:
        raise ValueError(
            "GAUC: example-weighted computation is not supported (GAUC weights users by impressions); "
            "fix: set the MetricsSpec's example_weights to unweighted only"
        )
    if sub_keys and any(k is not None for k in sub_keys):
        raise ValueError(f"GAUC: sub_keys (class_ids / top_k) are not supported, got {sub_keys}")
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name)
            computations.append(
                metric_types.MetricComputation(
                    keys=[key],
                    preprocessors=[metric_types.FeaturePreprocessor(feature_keys=[group_key])],
                    combiner=_GAUCCombiner(key, eval_config, group_key),
                )
            )
    return computations


class _GAUCAccumulator:
    """Compact columns of one slice: group hashes, labels, predictions."""

    __slots__ = ("groups", "labels", "predictions")

    def __init__(self) -> None:
        self.groups = array.array("q")
        self.labels = array.array("b")
        self.predictions = array.array("d")


def group_hash(value: Any) -> int:
    """A stable signed 64-bit hash of a group id (the same in every worker process)."""
    if isinstance(value, np.generic):
        value = value.item()
    data = value if isinstance(value, bytes) else str(value).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def _group_of(features: Any, group_key: str) -> int:
    if features is None or group_key not in features:
        raise ValueError(
            f"GAUC: feature {group_key!r} not found in the features extracts; fix: make sure the evaluated "
            "examples carry it (raw examples for the Evaluator)"
        )
    values = np.asarray(features[group_key]).ravel()
    if values.size != 1:
        raise ValueError(f"GAUC: feature {group_key!r} must hold one value per example, got {values.size}")
    return group_hash(values[0])


class _GAUCCombiner(beam.CombineFn):
    """Collects (group, label, prediction) per example into compact columns; GAUC at the end."""

    def __init__(self, key: metric_types.MetricKey, eval_config: tfma.EvalConfig | None, group_key: str):
        self._key = key
        self._eval_config = eval_config
        self._group_key = group_key

    def create_accumulator(self) -> _GAUCAccumulator:
        return _GAUCAccumulator()

    def add_input(self, accumulator: _GAUCAccumulator, element: metric_types.StandardMetricInputs) -> _GAUCAccumulator:
        group = _group_of(element.features, self._group_key)
        for label, prediction, _ in metric_util.to_label_prediction_example_weight(
            element,
            eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            example_weighted=False,
            flatten=True,
        ):
            accumulator.groups.append(group)
            accumulator.labels.append(int(np.asarray(label).ravel()[0] > 0))
            accumulator.predictions.append(float(np.asarray(prediction).ravel()[0]))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_GAUCAccumulator]) -> _GAUCAccumulator:
        accumulators = iter(accumulators)
        result = next(accumulators)
        for acc in accumulators:
            result.groups.extend(acc.groups)
            result.labels.extend(acc.labels)
            result.predictions.extend(acc.predictions)
        return result

    def extract_output(self, accumulator: _GAUCAccumulator) -> dict[metric_types.MetricKey, float]:
        return {
            self._key: grouped_auc_or_nan(
                np.frombuffer(accumulator.labels, dtype=np.int8),
                np.frombuffer(accumulator.predictions, dtype=np.float64),
                np.frombuffer(accumulator.groups, dtype=np.int64),
            )
        }
