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
* GAUC (``pipelines.gauc``) is exact: the batches are split by a hash of the group (user) into
  shards, each shard's compact columns (about 30 bytes per example, no Python object per example)
  give their users' AUCs, and the shards' weighted sums are added.

Supported metrics: ``ExampleCount``, ``AUC`` (``curve`` ROC or PR, the default 10,000 thresholds),
``Calibration``, ``MeanLabel``, ``MeanPrediction``, ``GAUC`` and ``MeanGroupAUC`` (the mean AUC over
(group, output) pairs, e.g. (domain, task), the same sharded way); slicing specs by ``feature_keys``
(and ``feature_values``). Anything else is refused with the metric's name and the fix: run the
stock TFMA Evaluator (``evaluator: tfma`` in the pipeline settings).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_analysis as tfma  # noqa: E402
from tensorflow_model_analysis.evaluators import metrics_validator  # noqa: E402
from tensorflow_model_analysis.metrics import metric_types  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.components.evaluator import constants  # noqa: E402
from tfx.dsl.components.base import base_beam_executor, executor_spec  # noqa: E402
from tfx.types import artifact_utils, standard_component_specs  # noqa: E402
from tfx.utils import io_utils, path_utils, proto_utils  # noqa: E402

from mvke_tf.metrics import ScoreHistogram, grouped_auc_terms  # noqa: E402
from pipelines.gauc import DEFAULT_GROUP_KEY  # noqa: E402

BATCH_SIZE = 4096
GAUC_SHARDS = 8  # user-hash shards of the exact GAUC (the unit of parallelism for that step)
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


# ----------------------------------------------------------------------------- one batch


@dataclasses.dataclass
class EvalBatch:
    """One batch's columns: labels and predictions per output, the GAUC group and each slicing spec's rows.

    ``slices`` maps each slice key to the rows of the batch in that slice (a key that several slicing
    specs produce holds each row once, as TFMA counts an example once per slice).
    """

    labels: dict[str, np.ndarray]  # output -> [n] 0/1
    predictions: dict[tuple[str, str], np.ndarray]  # (model, output) -> [n]
    groups: dict[str, np.ndarray]  # group feature -> [n] int64 hashes
    slices: dict[tuple, np.ndarray]

    @property
    def size(self) -> int:
        return len(next(iter(self.labels.values()))) if self.labels else 0


def _value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v.item() if isinstance(v, np.generic) else v


def _spec_rows(spec: SliceSpec, values: Mapping[str, tf.RaggedTensor], n: int) -> list[tuple[np.ndarray, tuple]]:
    """Rows of each slice of ``spec`` in a batch of ``n``, with TFMA's semantics: an example missing a
    key is in no slice of the spec; a multi-valued key puts it in one slice per value (combination)."""
    if not spec.features:
        return [(np.arange(n), ())]
    fixed = dict(spec.values)
    present = np.ones(n, dtype=bool)
    codes = np.zeros(n, dtype=np.int64)
    vocabularies = []
    for name in spec.features:
        ragged = values[name]
        lengths = ragged.row_lengths().numpy()
        if lengths.max(initial=0) > 1:
            return _spec_rows_multivalued(spec, values, n)
        flat = ragged.flat_values.numpy()
        column = np.empty(n, dtype=flat.dtype if flat.dtype != object else object)
        has = lengths == 1
        column[has] = flat
        if name in fixed:
            has &= np.array([str(_value(v)) == fixed[name] if h else False for v, h in zip(column, has)])
        present &= has
        # A fixed value (feature_values) is part of the slice key too, as in TFMA.
        vocabulary, inverse = np.unique(column[has], return_inverse=True)
        code = np.zeros(n, dtype=np.int64)
        code[has] = inverse
        codes = codes * len(vocabulary) + code if len(vocabulary) else codes
        vocabularies.append((name, vocabulary))
    rows = np.flatnonzero(present)
    order = np.argsort(codes[rows], kind="stable")
    rows, sorted_codes = rows[order], codes[rows][order]
    bounds = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1], True])
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        code, key = int(sorted_codes[lo]), []
        for name, vocabulary in reversed(vocabularies):
            code, index = divmod(code, len(vocabulary))
            key.append((name, _value(vocabulary[index])))
        out.append((rows[lo:hi], tuple(reversed(key))))
    return out


def _slice_rows(specs: Sequence[SliceSpec], values: Mapping[str, tf.RaggedTensor], n: int) -> dict[tuple, np.ndarray]:
    """Every slice key of the batch with its rows, each row once per key over all the specs."""
    out: dict[tuple, np.ndarray] = {}
    for spec in specs:
        for rows, key in _spec_rows(spec, values, n):
            out[key] = np.union1d(out[key], rows) if key in out else rows
    return out


def _spec_rows_multivalued(
    spec: SliceSpec, values: Mapping[str, tf.RaggedTensor], n: int
) -> list[tuple[np.ndarray, tuple]]:
    """:func:`_spec_rows` when a slicing feature holds several values in some example (row by row)."""
    fixed = dict(spec.values)
    per_row: list[tuple[int, tuple]] = [(i, ()) for i in range(n)]
    for name in spec.features:
        ragged = values[name]
        flat, splits = ragged.flat_values.numpy(), ragged.row_splits.numpy()
        expanded = []
        for i, key in per_row:
            for v in flat[splits[i] : splits[i + 1]]:
                v = _value(v)
                if name in fixed and str(v) != fixed[name]:
                    continue
                expanded.append((i, key + ((name, v),)))
        per_row = expanded
    groups: dict[tuple, list[int]] = {}
    for i, key in per_row:
        groups.setdefault(key, []).append(i)
    return [(np.asarray(idx), key) for key, idx in groups.items()]


class _EvaluateFiles(beam.DoFn):
    """A file of serialized ``tf.Example``s -> :class:`EvalBatch` es (models loaded once per process)."""

    _MODELS: dict[str, Any] = {}  # path -> loaded SavedModel, shared by the DoFn instances of a process

    def __init__(
        self,
        models: Mapping[str, str],
        signatures: Mapping[str, str],
        label_keys: Mapping[str, str],
        prediction_keys: Mapping[str, Mapping[str, str]],
        parse_spec: Mapping[str, Any],
        slice_specs: Sequence[SliceSpec],
        group_keys: Sequence[str],
        batch_size: int,
    ) -> None:
        self._models = dict(models)
        self._signatures = dict(signatures)
        self._label_keys = dict(label_keys)
        self._prediction_keys = {m: dict(k) for m, k in prediction_keys.items()}
        self._parse_spec = dict(parse_spec)
        self._slice_specs = list(slice_specs)
        self._group_keys = list(group_keys)
        self._batch_size = int(batch_size)
        self._functions: dict[str, Any] = {}

    def setup(self) -> None:
        for name, path in self._models.items():
            if path not in self._MODELS:
                self._MODELS[path] = tf.saved_model.load(path)
            signature = self._MODELS[path].signatures[self._signatures[name]]
            inputs = signature.structured_input_signature[1]
            if len(inputs) != 1:
                raise ValueError(
                    f"batched evaluator: signature {self._signatures[name]!r} of {path} takes {sorted(inputs)}; "
                    "fix: export a signature that takes one tensor of serialized tf.Examples"
                )
            self._functions[name] = (signature, next(iter(inputs)))

    def _predict(self, serialized: tf.Tensor) -> dict[tuple[str, str], np.ndarray]:
        out = {}
        for name, (signature, input_name) in self._functions.items():
            result = signature(**{input_name: serialized})
            for output, key in self._prediction_keys[name].items():
                if key not in result:
                    raise KeyError(
                        f"batched evaluator: model {name or 'candidate'!r} has no output {key!r} "
                        f"(it has {sorted(result)}); fix: the model spec's prediction_keys"
                    )
                out[(name, output)] = np.asarray(result[key].numpy(), dtype=np.float32).reshape(-1)
        return out

    def process(self, path: str) -> Iterator[EvalBatch]:
        compression = "GZIP" if path.endswith(".gz") else ""
        dataset = tf.data.TFRecordDataset(path, compression_type=compression).batch(self._batch_size)
        for serialized in dataset.prefetch(2):
            parsed = tf.io.parse_example(serialized, self._parse_spec)
            n = int(serialized.shape[0])
            labels = {}
            for output, key in self._label_keys.items():
                y = parsed[key]
                labels[output] = np.asarray(y.numpy(), dtype=np.float64).reshape(n, -1)[:, 0]
            groups = {}
            for key in self._group_keys:
                g = parsed[key]
                first = g.to_tensor(shape=[None, 1])[:, 0] if isinstance(g, tf.RaggedTensor) else g
                if first.dtype != tf.string:
                    first = tf.strings.as_string(first)
                groups[key] = tf.strings.to_hash_bucket_fast(first, 2**62).numpy()
            values = {name: parsed[name] for spec in self._slice_specs for name in spec.features}
            yield EvalBatch(
                labels=labels,
                predictions=self._predict(serialized),
                groups=groups,
                slices=_slice_rows(self._slice_specs, values, n),
            )


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


# ----------------------------------------------------------------------------- exact GAUC


def _shard_batch(batch: EvalBatch, group_key: str, shards: int) -> Iterator[tuple[int, dict]]:
    """Splits a batch's GAUC columns by user-hash shard: ``(shard, columns)``."""
    groups = batch.groups[group_key]
    shard_of = groups % shards
    for shard in np.unique(shard_of):
        mask = shard_of == shard
        index = np.full(batch.size, -1, dtype=np.int64)
        index[mask] = np.arange(int(mask.sum()))
        slices = {}
        for key, rows in batch.slices.items():
            local = index[rows]
            local = local[local >= 0]
            if len(local):
                slices[key] = local.astype(np.int32)
        yield (
            int(shard),
            {
                "groups": groups[mask],
                "labels": {o: y[mask].astype(np.uint8) for o, y in batch.labels.items()},
                "predictions": {mo: p[mask] for mo, p in batch.predictions.items()},
                "slices": slices,
            },
        )


class _GroupAUCCombineFn(beam.CombineFn):
    """One shard's columns -> ``{(group key, weighting, slice key, model, output): (sum of w_g * AUC_g,
    sum of w_g)}`` (:func:`~mvke_tf.metrics.grouped_auc_terms`).

    The accumulator is a list of the batches' compact columns (NumPy arrays); the groups' AUCs are
    computed once, in ``extract_output``.
    """

    def __init__(self, group_key: str, weightings: Sequence[str]) -> None:
        self._group_key = group_key
        self._weightings = tuple(weightings)

    def create_accumulator(self) -> list[dict]:
        return []

    def add_input(self, acc: list[dict], columns: dict) -> list[dict]:
        acc.append(columns)
        return acc

    def merge_accumulators(self, accumulators: Iterable[list[dict]]) -> list[dict]:
        return [c for acc in accumulators for c in acc]

    def extract_output(self, acc: list[dict]) -> dict[tuple, tuple[float, float]]:
        rows_by_key: dict[tuple, list[np.ndarray]] = {}
        offset = 0
        for columns in acc:
            for key, rows in columns["slices"].items():
                rows_by_key.setdefault(key, []).append(rows.astype(np.int64) + offset)
            offset += len(columns["groups"])
        if not acc:
            return {}
        groups = np.concatenate([c["groups"] for c in acc])
        labels = {o: np.concatenate([c["labels"][o] for c in acc]) for o in acc[0]["labels"]}
        predictions = {mo: np.concatenate([c["predictions"][mo] for c in acc]) for mo in acc[0]["predictions"]}
        out = {}
        for key, parts in rows_by_key.items():
            rows = np.concatenate(parts)
            for (model, output), scores in predictions.items():
                for w in self._weightings:
                    terms = grouped_auc_terms(labels[output][rows], scores[rows], groups[rows], w)
                    out[(self._group_key, w, key, model, output)] = terms
        return out


class _SumTermsCombineFn(beam.CombineFn):
    """Adds the shards' grouped-AUC terms: ``{(group key, weighting, slice key, model, output): (sum, weight)}``."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, acc: dict, terms: dict) -> dict:
        for k, (total, weight) in terms.items():
            t, w = acc.get(k, (0.0, 0.0))
            acc[k] = (t + total, w + weight)
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        result: dict = {}
        for acc in accumulators:
            self.add_input(result, acc)
        return result

    def extract_output(self, acc: dict) -> dict:
        return acc


# ----------------------------------------------------------------------------- metrics per slice


def _grouped_value(request: MetricRequest, terms: Mapping[tuple, tuple[float, float]], key: tuple, model: str) -> float:
    """The (weighted) mean of the groups' AUCs, over every output the request reads."""
    weighting = _GROUPED_METRICS[request.class_name]
    total = weight = 0.0
    for output in request.label_outputs:
        t, w = terms.get((request.group_key, weighting, key, model, output), (0.0, 0.0))
        total, weight = total + t, weight + w
    return total / weight if weight else math.nan


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
    group_terms: Mapping[tuple, tuple[float, float]],
    requests: Sequence[MetricRequest],
    models: Sequence[str],
    baseline: str | None,
) -> list[tuple[tuple, dict]]:
    """TFMA's ``(slice key, {MetricKey: value})`` pairs, with candidate-minus-baseline diffs.

    ``group_terms``: the grouped metrics' sums, keyed ``(group key, weighting, slice key, model, output)``.
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


@beam.ptransform_fn
def BatchedEvaluation(  # noqa: N802 - Beam PTransform naming
    pipeline: beam.Pipeline,
    files: Sequence[str],
    eval_config: tfma.EvalConfig,
    model_paths: Mapping[str, str],
    feature_spec: Mapping[str, Any],
    batch_size: int = BATCH_SIZE,
) -> dict[str, beam.PCollection]:
    """``files`` of serialized ``tf.Example`` -> TFMA's ``Evaluation`` (metrics, plots, validations).

    Args:
      files: the eval split's TFRecord files (``.gz``: gzipped).
      eval_config: the config with the model specs already named (``update_eval_config_with_defaults``).
      model_paths: model spec name -> SavedModel directory.
      feature_spec: the raw data's ``tf.io`` feature spec (from the schema): labels, slicing features
        and GAUC groups are parsed with it.
      batch_size: examples per model call.
    """
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
    for group_key in group_keys:  # e.g. users (GAUC) and domains (MeanGroupAUC), each sharded apart
        shard_terms.append(
            batches
            | f"ShardBy[{group_key}]" >> beam.FlatMap(_shard_batch, group_key, GAUC_SHARDS)
            | f"GroupAUCPerShard[{group_key}]"
            >> beam.CombinePerKey(_GroupAUCCombineFn(group_key, sorted(weightings[group_key])))
            | f"DropShard[{group_key}]" >> beam.Values()
        )
    gauc_terms = shard_terms | "AllShards" >> beam.Flatten() | "SumShards" >> beam.CombineGlobally(_SumTermsCombineFn())
    models = [m.name for m in model_specs]
    metrics = histograms | "SlicedMetrics" >> beam.FlatMap(
        lambda h, g: sliced_metrics(h, g, requests, models, baseline), beam.pvalue.AsSingleton(gauc_terms)
    )
    return {
        tfma.METRICS_KEY: metrics,
        tfma.PLOTS_KEY: pipeline | "NoPlots" >> beam.Create([]),
        tfma.VALIDATIONS_KEY: metrics | "Validate" >> beam.Map(metrics_validator.validate_metrics, eval_config),
    }


# ----------------------------------------------------------------------------- the TFX component


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
        with self._make_beam_pipeline() as pipeline:
            evaluation = pipeline | "Evaluate" >> BatchedEvaluation(
                files, eval_config, model_paths, _feature_spec(input_dict[standard_component_specs.SCHEMA_KEY])
            )
            _ = evaluation | "Write" >> tfma.WriteResults(
                writers=tfma.default_writers(output_uri, eval_config=eval_config)
            )
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


__all__ = ["BATCH_SIZE", "BatchedEvaluation", "BatchedEvaluator", "Executor", "metric_requests", "sliced_metrics"]
