"""The pipeline's Evaluator: TFMA's config, validation and output, with the metrics computed in batches.

TFMA evaluates one example at a time in Python: every example is unbatched, fanned out once per
slice, and passed through every metric's combiner. On the main job that cost 1.9 ms per eval row
(docs/pipeline.md, "Performance"). This component keeps everything of TFMA a user sees -- the
``tfma.EvalConfig`` (metrics, slices, thresholds), the baseline comparison, the written results
(``tfma.load_eval_result`` reads them) and the validation that blesses the model -- and computes the
metrics on batches of 4,096 examples with NumPy:

* read the eval split's files with ``tf.data`` and run each model's signature on a batch (the
  models are loaded once per worker process);
* parse the labels, the slicing features and the GAUC group from the same batch;
* add each batch to one :class:`~mvke_tf.metrics.ScoreHistogram` per (slice, model, output):
  ExampleCount, AUC (ROC and PR), Calibration, MeanLabel and MeanPrediction come out of it with
  TFMA's own formulas (equal to TFMA's values; ``tests/pipelines/test_evaluator.py``), in bounded memory;
* GAUC (``mvke_tf.pipelines.gauc``) is exact, in memory that does not grow with the eval set: each batch's
  compact columns (group hash, labels, predictions and slice memberships: about 50 bytes per example
  with the main job's slices, no Python object per example) are written, split by a hash of the group (user) into
  ``GAUC_SHARDS`` shards, to files in a temporary directory (``tf.io.gfile``: local or ``gs://``,
  readable by every worker process); Beam carries only the files' paths; one step per shard reads
  its files and computes its users' AUCs; the shards' weighted sums are added exactly
  (:func:`~mvke_tf.metrics.exact_sum`, the same float whatever the number of shards and their
  order) and the directory is deleted.

Supported metrics: ``ExampleCount``, ``AUC`` (``curve`` ROC or PR, the default 10,000 thresholds),
``Calibration``, ``MeanLabel``, ``MeanPrediction``, ``GAUC`` and ``MeanGroupAUC`` (the mean AUC over
(group, output) pairs, e.g. (domain, task), the same sharded way); slicing specs by ``feature_keys``
(and ``feature_values``). Anything else is refused with the metric's name and the fix: run the
stock TFMA Evaluator (``evaluator: tfma`` in the pipeline settings).

The parts are modules beside this one: :mod:`~mvke_tf.pipelines.evaluator_config` (what to compute,
and what is refused), :mod:`~mvke_tf.pipelines.evaluator_batches` (files -> batches),
:mod:`~mvke_tf.pipelines.evaluator_metrics` (histograms and the metrics per slice) and
:mod:`~mvke_tf.pipelines.evaluator_grouped_auc` (the exact GAUC, spilled by shard); this module wires
them into :func:`BatchedEvaluation` and holds the TFX executor and component (TFX records the
executor by this module's import path), and re-exports their public names.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf
import tensorflow_model_analysis as tfma
from mvke_tf.pipelines.evaluator_batches import EvalBatch, _EvaluateFiles
from mvke_tf.pipelines.evaluator_config import (
    _GROUPED_METRICS,
    SUPPORTED_METRICS,
    MetricRequest,
    SliceSpec,
    UnsupportedEvalConfigError,
    _unsupported,
    metric_requests,
)
from mvke_tf.pipelines.evaluator_grouped_auc import _delete_spilled, _shard_terms, _SpillShards, _SumTermsCombineFn
from mvke_tf.pipelines.evaluator_metrics import _HistogramsCombineFn, sliced_metrics
from tensorflow_model_analysis.evaluators import metrics_validator
from tfx import v1 as tfx
from tfx.components.evaluator import constants
from tfx.dsl.components.base import base_beam_executor, executor_spec
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, path_utils, proto_utils

BATCH_SIZE = 4096
# Group-hash shards of the exact GAUC: the reduce holds one shard's columns at a time (2M eval rows:
# about 8,000 rows, a few MB), and each bundle of the evaluation writes up to this many files.
GAUC_SHARDS = 256
# Rows a worker buffers before writing them to the shards' files: about 8 MB of columns (main job),
# and records of about 500 rows per shard, so that a record's own overhead stays small.
SPILL_ROWS = 1 << 17


@beam.ptransform_fn
def BatchedEvaluation(  # noqa: N802 - Beam PTransform naming
    pipeline: beam.Pipeline,
    files: Sequence[str],
    eval_config: tfma.EvalConfig,
    model_paths: Mapping[str, str],
    feature_spec: Mapping[str, Any],
    batch_size: int = BATCH_SIZE,
    temp_dir: str | None = None,
    gauc_shards: int = GAUC_SHARDS,
    spill_rows: int = SPILL_ROWS,
) -> dict[str, beam.PCollection]:
    """``files`` of serialized ``tf.Example`` -> TFMA's ``Evaluation`` (metrics, plots, validations).

    Args:
      files: the eval split's TFRecord files (``.gz``: gzipped).
      eval_config: the config with the model specs already named (``update_eval_config_with_defaults``).
      model_paths: model spec name -> SavedModel directory.
      feature_spec: the raw data's ``tf.io`` feature spec (from the schema): labels, slicing features
        and GAUC groups are parsed with it.
      batch_size: examples per model call.
      temp_dir: where the grouped metrics' columns are spilled, in a directory of this evaluation's own
        that the pipeline deletes when done; every worker must reach it (the Executor: its output
        artifact). Default: the pipeline's ``--temp_location``, else the local temporary directory
        (enough for workers on this machine only).
      gauc_shards: shards of the groups (users): the GAUC step holds one shard's columns at a time.
      spill_rows: rows a worker buffers before writing them to the shards' files.
    """
    if gauc_shards < 1 or spill_rows < 1:
        raise ValueError(
            f"batched evaluator: gauc_shards={gauc_shards}, spill_rows={spill_rows}; "
            "fix: give both as positive integers"
        )
    requests = metric_requests(eval_config)
    slice_specs = [SliceSpec.from_proto(s) for s in eval_config.slicing_specs] or [SliceSpec(())]
    for spec in eval_config.cross_slicing_specs:
        raise _unsupported(f"cross slicing spec {spec}")
    model_specs = list(eval_config.model_specs)
    baseline = next((m.name for m in model_specs if m.is_baseline), None)
    outputs = sorted({o for r in requests for o in r.label_outputs})
    label_keys: dict[str, str] = {}
    for output in outputs:
        keys = {m.label_keys.get(output) or m.label_key for m in model_specs}
        if len(keys) != 1 or not next(iter(keys)):
            raise _unsupported(f"output {output!r} needs one label key, the model specs give {sorted(keys)}")
        label_keys[output] = keys.pop()
    prediction_keys = {
        m.name: {o: m.prediction_keys.get(o) or m.prediction_key or o for o in outputs} for m in model_specs
    }
    weightings: dict[str, set[str]] = {}
    for r in requests:
        if r.class_name in _GROUPED_METRICS:
            weightings.setdefault(r.group_key, set()).add(_GROUPED_METRICS[r.class_name])
    group_keys = sorted(weightings)
    needed = set(label_keys.values()) | set(group_keys) | {f for s in slice_specs for f in s.features}
    missing = sorted(needed - set(feature_spec))
    if missing:
        raise ValueError(
            f"batched evaluator: the schema has no feature(s) {missing} (labels, slicing features, GAUC groups); "
            "fix: add them to the schema or change the eval config"
        )
    parse_spec = {}
    for name in needed:
        dtype = feature_spec[name].dtype
        if name in label_keys.values():
            parse_spec[name] = tf.io.FixedLenFeature([], dtype)  # a missing label is an error, as in TFMA
        else:
            parse_spec[name] = tf.io.RaggedFeature(dtype)
    evaluate = _EvaluateFiles(
        model_paths,
        {m.name: m.signature_name or "serving_default" for m in model_specs},
        label_keys,
        prediction_keys,
        parse_spec,
        slice_specs,
        group_keys,
        batch_size,
    )
    batches = (
        pipeline
        | "Files" >> beam.Create(sorted(files))
        | "SpreadFiles" >> beam.Reshuffle()
        | "PredictAndParse" >> beam.ParDo(evaluate)
    )
    histograms = batches | "Histograms" >> beam.CombineGlobally(_HistogramsCombineFn())
    shard_terms = [pipeline | "NoGroups" >> beam.Create([{}])]
    spill_dir = os.path.join(temp_dir or _default_temp_dir(pipeline), f"batched-evaluator-{uuid.uuid4().hex}")
    for i, group_key in enumerate(group_keys):  # e.g. users (GAUC) and domains (MeanGroupAUC), each sharded apart
        spill = _SpillShards(os.path.join(spill_dir, f"group-{i}"), group_key, gauc_shards, spill_rows)
        shard_terms.append(
            batches
            | f"SpillShards[{group_key}]" >> beam.ParDo(spill)
            | f"FilesPerShard[{group_key}]" >> beam.GroupByKey()
            | f"GroupAUCPerShard[{group_key}]" >> beam.Map(_shard_terms, group_key, sorted(weightings[group_key]))
        )
    gauc_terms = shard_terms | "AllShards" >> beam.Flatten() | "SumShards" >> beam.CombineGlobally(_SumTermsCombineFn())
    if group_keys:
        gauc_terms = gauc_terms | "DeleteSpilled" >> beam.Map(_delete_spilled, spill_dir)
    models = [m.name for m in model_specs]
    metrics = histograms | "SlicedMetrics" >> beam.FlatMap(
        lambda h, g: sliced_metrics(h, g, requests, models, baseline), beam.pvalue.AsSingleton(gauc_terms)
    )
    return {
        tfma.METRICS_KEY: metrics,
        tfma.PLOTS_KEY: pipeline | "NoPlots" >> beam.Create([]),
        tfma.VALIDATIONS_KEY: metrics | "Validate" >> beam.Map(metrics_validator.validate_metrics, eval_config),
    }


def _default_temp_dir(pipeline: beam.pvalue.PBegin) -> str:
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    return pipeline.pipeline.options.view_as(GoogleCloudOptions).temp_location or tempfile.gettempdir()


# ----------------------------------------------------------------------------- the TFX component

_SPILL_DIR = "batched_evaluator_tmp"  # in the output artifact while the evaluation runs, then deleted


def _feature_spec(schema_artifacts: list) -> dict[str, Any]:
    from tensorflow_transform.tf_metadata import schema_utils

    schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri(schema_artifacts)))
    return dict(schema_utils.schema_as_feature_spec(schema).feature_spec)


class Executor(base_beam_executor.BaseBeamExecutor):
    """TFX executor: the Evaluator's inputs, outputs and blessing, with :func:`BatchedEvaluation`."""

    def Do(self, input_dict: dict, output_dict: dict, exec_properties: dict) -> None:  # noqa: N802 - TFX API
        self._log_startup(input_dict, output_dict, exec_properties)
        if not input_dict.get(standard_component_specs.SCHEMA_KEY):
            raise ValueError("batched evaluator: no schema input; fix: pass schema=<SchemaGen output> to the Evaluator")
        has_baseline = bool(input_dict.get(standard_component_specs.BASELINE_MODEL_KEY))
        eval_config = tfma.EvalConfig()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.EVAL_CONFIG_KEY], eval_config)
        eval_config = tfma.utils.update_eval_config_with_defaults(
            eval_config, has_baseline=has_baseline, rubber_stamp=True
        )
        tfma.utils.verify_eval_config(eval_config)
        model_paths = {}
        for spec in eval_config.model_specs:
            specs = standard_component_specs
            role = specs.BASELINE_MODEL_KEY if spec.is_baseline else specs.MODEL_KEY
            artifact = artifact_utils.get_single_instance(input_dict[role])
            model_paths[spec.name] = path_utils.serving_model_path(
                artifact.uri, path_utils.is_old_model_artifact(artifact)
            )
        splits = json.loads(exec_properties.get(standard_component_specs.EXAMPLE_SPLITS_KEY) or "null") or ["eval"]
        files = []
        for split in splits:
            for uri in artifact_utils.get_split_uris(input_dict[standard_component_specs.EXAMPLES_KEY], split):
                files += sorted(tf.io.gfile.glob(os.path.join(uri, "*")))
        if not files:
            raise ValueError(f"batched evaluator: no files in the example split(s) {splits}")
        output_uri = artifact_utils.get_single_uri(output_dict[standard_component_specs.EVALUATION_KEY])
        # Every worker reaches the output artifact (a gs:// path on a remote runner).
        spill_dir = os.path.join(output_uri, _SPILL_DIR)
        try:
            with self._make_beam_pipeline() as pipeline:
                evaluation = pipeline | "Evaluate" >> BatchedEvaluation(
                    files,
                    eval_config,
                    model_paths,
                    _feature_spec(input_dict[standard_component_specs.SCHEMA_KEY]),
                    temp_dir=spill_dir,
                )
                _ = evaluation | "Write" >> tfma.WriteResults(
                    writers=tfma.default_writers(output_uri, eval_config=eval_config)
                )
        finally:  # the pipeline deletes its own spill; this also catches a failed run's
            if tf.io.gfile.exists(spill_dir):
                tf.io.gfile.rmtree(spill_dir)
        self._bless(input_dict, output_dict, output_uri, exec_properties)

    @staticmethod
    def _bless(input_dict: dict, output_dict: dict, output_uri: str, exec_properties: dict) -> None:
        """Writes the ModelBlessing the Pusher reads, as the stock Evaluator does."""
        if not output_dict.get(standard_component_specs.BLESSING_KEY):
            return
        blessing = artifact_utils.get_single_instance(output_dict[standard_component_specs.BLESSING_KEY])
        model = input_dict[standard_component_specs.MODEL_KEY][0]
        blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
        blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
        if input_dict.get(standard_component_specs.BASELINE_MODEL_KEY):
            baseline = input_dict[standard_component_specs.BASELINE_MODEL_KEY][0]
            blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline.uri)
            blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline.id)
        if "current_component_id" in exec_properties:
            blessing.set_string_custom_property("component_id", exec_properties["current_component_id"])
        ok = tfma.load_validation_result(output_uri).validation_ok
        name = constants.BLESSED_FILE_NAME if ok else constants.NOT_BLESSED_FILE_NAME
        io_utils.write_string_file(os.path.join(blessing.uri, name), "")
        blessing.set_int_custom_property(
            constants.ARTIFACT_PROPERTY_BLESSED_KEY, constants.BLESSED_VALUE if ok else constants.NOT_BLESSED_VALUE
        )


class BatchedEvaluator(tfx.components.Evaluator):
    """The stock Evaluator's interface (inputs, eval_config, outputs) with the batched executor."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)


# With the parts' public names: ``from mvke_tf.pipelines.evaluator import X`` keeps working for every public
# name this module used to define.
__all__ = [
    "BATCH_SIZE",
    "GAUC_SHARDS",
    "SPILL_ROWS",
    "SUPPORTED_METRICS",
    "BatchedEvaluation",
    "BatchedEvaluator",
    "EvalBatch",
    "Executor",
    "MetricRequest",
    "SliceSpec",
    "UnsupportedEvalConfigError",
    "metric_requests",
    "sliced_metrics",
]
