"""The batched Evaluator's eval config: the metrics and slices it computes, and the refusal of the rest.

Part of the batched Evaluator (:mod:`mvke_tf.pipelines.evaluator`): :func:`metric_requests` reads the
``tfma.EvalConfig``'s metrics specs into one :class:`MetricRequest` per (metric, output), and
:class:`SliceSpec` its slicing specs; anything the batched evaluator does not compute is an
:class:`UnsupportedEvalConfigError` naming it and the fix.
"""

from __future__ import annotations

import dataclasses
import json

import tensorflow_model_analysis as tfma
from mvke_tf.pipelines.gauc import DEFAULT_GROUP_KEY

_HISTOGRAM_METRICS = {"ExampleCount", "AUC", "AUCPrecisionRecall", "Calibration", "MeanLabel", "MeanPrediction"}
_GROUPED_METRICS = {"GAUC": "examples", "MeanGroupAUC": "uniform"}  # -> the groups' weighting
SUPPORTED_METRICS = tuple(sorted(_HISTOGRAM_METRICS | set(_GROUPED_METRICS)))


class UnsupportedEvalConfigError(ValueError):
    """The EvalConfig asks for something the batched evaluator does not compute."""


def _unsupported(what: str) -> UnsupportedEvalConfigError:
    return UnsupportedEvalConfigError(
        f"batched evaluator: {what}; fix: use only {', '.join(SUPPORTED_METRICS)} with slicing by feature_keys, "
        "or set `evaluator: tfma` in the pipeline settings to run the stock TFMA Evaluator"
    )


# ----------------------------------------------------------------------------- what to compute


@dataclasses.dataclass(frozen=True)
class MetricRequest:
    """One metric of one output: its TFMA class, the name it is reported under, and its options."""

    class_name: str
    name: str
    output_name: str
    curve: str = "ROC"
    group_key: str = DEFAULT_GROUP_KEY
    outputs: tuple[str, ...] = ()
    """MeanGroupAUC: the outputs it averages over (its own ``output_name`` is ``""``)."""

    @property
    def label_outputs(self) -> tuple[str, ...]:
        """The outputs whose labels and predictions this metric reads."""
        return self.outputs if self.class_name == "MeanGroupAUC" else (self.output_name,)


_DEFAULT_NAMES = {
    "ExampleCount": "example_count",
    "AUC": "auc",
    "AUCPrecisionRecall": "auc_precision_recall",
    "Calibration": "calibration",
    "MeanLabel": "mean_label",
    "MeanPrediction": "mean_prediction",
    "GAUC": "gauc",
    "MeanGroupAUC": "mean_group_auc",
}


def metric_requests(eval_config: tfma.EvalConfig) -> list[MetricRequest]:
    """The metrics of ``eval_config``'s metrics specs, one per (metric, output); refuses the unsupported."""
    out = []
    for spec in eval_config.metrics_specs:
        if spec.query_key:
            raise _unsupported(f"metrics spec with query_key {spec.query_key!r}")
        if spec.HasField("example_weights") and spec.example_weights.weighted:
            raise _unsupported("example-weighted metrics")
        if spec.HasField("binarize") or spec.HasField("aggregate"):
            raise _unsupported("binarize / aggregate options")
        outputs = list(spec.output_names) or [""]
        for metric in spec.metrics:
            if metric.class_name not in SUPPORTED_METRICS:
                raise _unsupported(f"metric {metric.class_name!r}")
            options = json.loads(metric.config) if metric.config else {}
            if metric.class_name == "AUCPrecisionRecall":
                options = {**options, "curve": "PR"}
            allowed = {"name", "curve"} if metric.class_name in ("AUC", "AUCPrecisionRecall") else {"name"}
            if metric.class_name == "GAUC":
                allowed = {"name", "group_key"}
            if metric.class_name == "MeanGroupAUC":
                allowed = {"name", "group_key", "outputs"}
                if spec.output_names or not options.get("outputs"):
                    raise _unsupported(
                        "MeanGroupAUC needs its 'outputs' in its config and a metrics spec without output_names"
                    )
            extra = sorted(set(options) - allowed)
            if extra:
                raise _unsupported(f"option(s) {extra} of metric {metric.class_name!r}")
            curve = str(options.get("curve", "ROC")).upper()
            if curve not in ("ROC", "PR"):
                raise _unsupported(f"AUC curve {curve!r}")
            name = options.get("name", _DEFAULT_NAMES[metric.class_name])
            for output in outputs:
                out.append(
                    MetricRequest(
                        metric.class_name,
                        name,
                        output,
                        curve=curve,
                        group_key=options.get("group_key", DEFAULT_GROUP_KEY),
                        outputs=tuple(options.get("outputs", ())),
                    )
                )
    if not out:
        raise _unsupported("no metrics in the metrics specs")
    return out


@dataclasses.dataclass(frozen=True)
class SliceSpec:
    """A slicing spec by feature keys (sorted, as TFMA's slice keys are) and fixed feature values."""

    keys: tuple[str, ...]
    values: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_proto(cls, spec: tfma.SlicingSpec) -> SliceSpec:
        if spec.slice_keys_sql:
            raise _unsupported("slicing by SQL")
        return cls(tuple(sorted(spec.feature_keys)), tuple(sorted(spec.feature_values.items())))

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.keys) | {k for k, _ in self.values}))
