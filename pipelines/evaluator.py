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
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import pickle
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue
from mvke_tf.pipelines.gauc import DEFAULT_GROUP_KEY
from tensorflow_model_analysis.evaluators import metrics_validator
from tensorflow_model_analysis.metrics import metric_types
from tfx import v1 as tfx
from tfx.components.evaluator import constants
from tfx.dsl.components.base import base_beam_executor, executor_spec
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, path_utils, proto_utils

from mvke_tf.metrics import ScoreHistogram, exact_sums, exact_to_float, group_aucs

BATCH_SIZE = 4096
# Group-hash shards of the exact GAUC: the reduce holds one shard's columns at a time (2M eval rows:
# about 8,000 rows, a few MB), and each bundle of the evaluation writes up to this many files.
GAUC_SHARDS = 256
# Rows a worker buffers before writing them to the shards' files: about 8 MB of columns (main job),
# and records of about 500 rows per shard, so that a record's own overhead stays small.
SPILL_ROWS = 1 << 17
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


# ----------------------------------------------------------------------------- exact GAUC, spilled by shard
#
# Each batch's compact GAUC columns go to files, one per (bundle, shard of groups), as the batches are
# evaluated; Beam carries only the files' paths. One step per shard then reads its files, computes its
# groups' AUCs and frees them. What stays in memory at once: a worker's spill buffer (``spill_rows``
# rows, fixed), one shard's columns in the reduce (about rows / shards, or the largest group if one
# group is bigger: a group is never split) and the paths. On Beam's DirectRunner a grouped PCollection
# is held whole, encoded, by the runner and again as the next stage's input: holding the columns there
# (as a CombinePerKey over the columns did) made the peak grow with the eval rows.


def _spill_record_path(directory: str, bundle: str, shard: int) -> str:
    return os.path.join(directory, f"shard-{shard:05d}-{bundle}.columns")


class _SpillShards(beam.DoFn):
    """:class:`EvalBatch` es -> ``(shard, file path)``: the batches' GAUC columns by shard of ``group_key``.

    A shard is ``group hash % shards``. The rows are buffered up to ``spill_rows``, then each shard's rows
    are appended to its file of the bundle as one pickled record (:func:`_read_spilled`): ``groups`` int64
    ``[n]``, ``labels`` ``{output: uint8 [n]}``, ``predictions`` ``{(model, output): float32 [n]}``, ``keys``
    (the slice keys) and the slice memberships as pairs ``pair_rows`` int32 ``[p]`` (rows of the record)
    and ``pair_keys`` int32 ``[p]`` (indices into ``keys``). The files are emitted when the bundle
    finishes; a failed bundle's files are never read (the whole directory is deleted at the end).
    """

    def __init__(self, directory: str, group_key: str, shards: int, spill_rows: int) -> None:
        self._directory = directory
        self._group_key = group_key
        self._shards = int(shards)
        self._spill_rows = int(spill_rows)

    def setup(self) -> None:
        tf.io.gfile.makedirs(self._directory)  # on a worker of its own, maybe another machine

    def start_bundle(self) -> None:
        self._bundle = uuid.uuid4().hex  # files of a retried bundle never collide with the failed one's
        self._files: dict[int, tuple[str, Any]] = {}
        self._clear()

    def _clear(self) -> None:
        self._keys: dict[tuple, int] = {}
        self._parts: list[tuple] = []
        self._rows = 0

    def process(self, batch: EvalBatch) -> None:
        if not batch.size:
            return
        pair_rows, pair_keys = [], []
        for key, rows in batch.slices.items():
            pair_rows.append(np.asarray(rows, dtype=np.int32) + np.int32(self._rows))  # < spill_rows + a batch
            pair_keys.append(np.full(len(rows), self._keys.setdefault(key, len(self._keys)), dtype=np.int32))
        self._parts.append(
            (
                batch.groups[self._group_key],
                {o: y.astype(np.uint8) for o, y in batch.labels.items()},
                dict(batch.predictions),
                np.concatenate(pair_rows) if pair_rows else np.zeros(0, np.int32),
                np.concatenate(pair_keys) if pair_keys else np.zeros(0, np.int32),
            )
        )
        self._rows += batch.size
        if self._rows >= self._spill_rows:
            self._spill()

    def _spill(self) -> None:
        """Appends each shard's buffered rows to its file of the bundle; empties the buffer."""
        if not self._parts:
            return
        parts, keys = self._parts, list(self._keys)
        groups = np.concatenate([p[0] for p in parts])
        labels = {o: np.concatenate([p[1][o] for p in parts]) for o in parts[0][1]}
        predictions = {mo: np.concatenate([p[2][mo] for p in parts]) for mo in parts[0][2]}
        pair_rows = np.concatenate([p[3] for p in parts])
        pair_keys = np.concatenate([p[4] for p in parts])
        del parts  # the batches' own arrays are freed as they are copied out
        self._clear()
        shard_of = groups % self._shards  # the hashes are non-negative
        order = np.argsort(shard_of, kind="stable")
        bounds = np.searchsorted(shard_of[order], np.arange(self._shards + 1))
        local = np.empty(len(groups), dtype=np.int64)  # a row's index within its shard's record
        local[order] = np.arange(len(groups)) - np.repeat(bounds[:-1], np.diff(bounds))
        pair_shard = shard_of[pair_rows]
        pair_order = np.argsort(pair_shard, kind="stable")
        pair_bounds = np.searchsorted(pair_shard[pair_order], np.arange(self._shards + 1))
        for shard in np.flatnonzero(np.diff(bounds)).tolist():
            rows = order[bounds[shard] : bounds[shard + 1]]
            pairs = pair_order[pair_bounds[shard] : pair_bounds[shard + 1]]
            record = {
                "groups": groups[rows],
                "labels": {o: y[rows] for o, y in labels.items()},
                "predictions": {mo: p[rows] for mo, p in predictions.items()},
                "keys": keys,
                "pair_rows": local[pair_rows[pairs]].astype(np.int32),
                "pair_keys": pair_keys[pairs],
            }
            if shard not in self._files:
                path = _spill_record_path(self._directory, self._bundle, shard)
                self._files[shard] = (path, tf.io.gfile.GFile(path, "wb"))
            pickle.dump(record, self._files[shard][1], protocol=pickle.HIGHEST_PROTOCOL)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        self._spill()
        files, self._files = self._files, {}
        for shard, (path, f) in sorted(files.items()):
            f.close()
            yield GlobalWindows.windowed_value((shard, path))

    def teardown(self) -> None:
        for _, f in getattr(self, "_files", {}).values():  # a failed bundle's files: closed, never read
            f.close()


def _read_spilled(path: str) -> Iterator[dict]:
    """The records :class:`_SpillShards` wrote to ``path`` (files this evaluation wrote itself)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        data = io.BytesIO(f.read())  # one file of one shard: small
    while data.tell() < len(data.getbuffer()):
        yield pickle.load(data)


def _shard_terms(shard_files: tuple[int, Iterable[str]], group_key: str, weightings: Sequence[str]) -> dict:
    """One shard's files -> ``{(group key, weighting, slice key, model, output): (sum of w_g * AUC_g, sum of
    w_g)}``, both held exactly (:func:`~mvke_tf.metrics.exact_sum`: the shards' terms add up bit for bit)."""
    _, paths = shard_files
    key_index: dict[tuple, int] = {}
    groups, labels, predictions, pair_rows, pair_keys = [], {}, {}, [], []
    offset = 0
    for path in sorted(paths):
        for record in _read_spilled(path):
            ids = np.array([key_index.setdefault(k, len(key_index)) for k in record["keys"]], dtype=np.int64)
            pair_rows.append(record["pair_rows"].astype(np.int64) + offset)
            pair_keys.append(ids[record["pair_keys"]])
            groups.append(record["groups"])
            for o, y in record["labels"].items():
                labels.setdefault(o, []).append(y)
            for mo, p in record["predictions"].items():
                predictions.setdefault(mo, []).append(p)
            offset += len(record["groups"])
    if not offset:
        return {}
    keys = list(key_index)
    rows, key_of_pair = np.concatenate(pair_rows), np.concatenate(pair_keys)
    _, group_index = np.unique(np.concatenate(groups), return_inverse=True)
    n_groups = int(group_index.max()) + 1
    # One pass over every (row, slice key) pair: a group of a slice is the pair (slice key, group).
    slice_group = key_of_pair * n_groups + group_index[rows]
    out = {}
    for (model, output), scores in predictions.items():
        label = np.concatenate(labels[output])[rows]
        found, aucs, sizes = group_aucs(label, np.concatenate(scores)[rows], slice_group)
        key_of_group = found // n_groups
        for w in weightings:
            weights = sizes if w == "examples" else np.ones(len(sizes))
            totals, weight_sums = exact_sums(aucs * weights, key_of_group), exact_sums(weights, key_of_group)
            for k, total in totals.items():
                out[(group_key, w, keys[k], model, output)] = (total, weight_sums[k])
    return out


class _SumTermsCombineFn(beam.CombineFn):
    """Adds the shards' exact grouped-AUC terms: ``{(group key, weighting, slice key, model, output): (sum,
    weight)}`` (integers: the sum is exact, whatever the order)."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, acc: dict, terms: dict) -> dict:
        for k, (total, weight) in terms.items():
            t, w = acc.get(k, (0, 0))
            acc[k] = (t + total, w + weight)
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        result: dict = {}
        for acc in accumulators:
            self.add_input(result, acc)
        return result

    def extract_output(self, acc: dict) -> dict:
        return acc


def _delete_spilled(terms: dict, directory: str) -> dict:
    """Deletes the evaluation's spilled columns (every shard's terms are in ``terms``); passes ``terms`` on."""
    if tf.io.gfile.exists(directory):  # a retry may find it gone
        tf.io.gfile.rmtree(directory)
    return terms


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


__all__ = ["BATCH_SIZE", "BatchedEvaluation", "BatchedEvaluator", "Executor", "metric_requests", "sliced_metrics"]
