"""The batched Evaluator's grouped AUCs (GAUC, MeanGroupAUC): exact, each batch's columns spilled by shard.

Part of the batched Evaluator (:mod:`mvke_tf.pipelines.evaluator`): each batch's compact columns (group
hash, labels, predictions and slice memberships) are written, split by a hash of the group into shards,
to files in a temporary directory (:class:`_SpillShards`); one step per shard reads its files and
computes its groups' AUCs (:func:`_shard_terms`); the shards' weighted sums are added exactly
(:class:`_SumTermsCombineFn`) and the directory is deleted (:func:`_delete_spilled`).
"""

from __future__ import annotations

import io
import os
import pickle
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue
from mvke_tf.pipelines.evaluator_batches import EvalBatch

from mvke_tf.metrics import exact_sums, group_aucs

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
