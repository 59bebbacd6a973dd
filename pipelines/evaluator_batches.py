"""The batched Evaluator's batches: eval files -> predictions, labels, GAUC groups and slice rows.

Part of the batched Evaluator (:mod:`mvke_tf.pipelines.evaluator`): :class:`_EvaluateFiles` reads a file of
serialized ``tf.Example``s with ``tf.data`` in batches, runs each model's signature on a batch (the models
are loaded once per worker process) and parses the labels, the slicing features and the GAUC groups
from the same batch into an :class:`EvalBatch`, with each slice's rows found as TFMA slices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from mvke_tf.pipelines.evaluator_config import SliceSpec

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
