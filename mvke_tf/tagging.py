"""Batch tagging: every user x every tag through an exported SavedModel (the paper's user-profile job).

The job needs only the SavedModel contract (``mvke_tf.export`` or the TFX Pusher):

* ``user_tower`` (serialized ``tf.Example`` ``[B]`` -> ``<task>_experts [B, S, d]``) runs once per
  user, in batches;
* ``tag_tower`` (tags ``[T]`` -> ``<task>_embedding [T, d]``, ``<task>_gate [T, S]``) runs once over
  the whole tag vocabulary;
* the two are combined exactly with the decomposition of :mod:`mvke_tf.models.fast`: per task one
  ``[B, S*d] x [S*d, T]`` matrix product (plus the score bias, and for the cosine score the Gram
  term), then top-K per user.

Output: per user and task the top-K tags with their probabilities, one output shard per input
shard (``part-NNNNN.parquet`` with columns ``user_id, task, rank, tag, score``, or
``part-NNNNN.tfrecord.gz`` with one ``tf.Example`` per user and task: ``user_id``, ``task``,
``tags`` and ``scores``, best first). Each shard is written to a temporary file and renamed, then recorded in
``_manifest.json`` with the size, modification time and SHA-256 of its users file (and of the files
before it, whose users it excludes); a rerun of the same job (same model, tags and settings,
``_job.json``) skips exactly the shards recorded there whose inputs are unchanged, and recomputes the
rest. The leading ``_`` keeps the job's own files out of dataset readers: ``pandas.read_parquet(out)``
and ``pyarrow.parquet.read_table(out)`` read the shards alone.

Everything is checked (settings, model, tags, each users file's header and first row) before anything
is written, and a run that fails before finishing a shard leaves nothing behind that would refuse or
mislead the next run.

Users are deduplicated by ``user_id``: the first row of a user (files in sorted order) is scored,
in the shard that row is in.

``by="tag"`` (``--by tag``) writes audience lists instead: per task and tag the ``top_n`` users with
the highest probability, ties broken by the order users are read. It streams over user batches with
a running top-N per (task, tag) (:class:`AudienceState`, ``[tasks, T, <= N]``) merged batch by batch
(:class:`AudienceScorer`), checkpoints that state after each users file, and writes one output file
(``tag, task, rank, user_id, score``) at the end (see :func:`_tag_audiences`).

This module never imports TFX or Beam (see :mod:`mvke_tf.tagging_beam`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from mvke_tf.config import MULTI_VALUED, NUMERIC, FeatureConfig, FieldSpec
from mvke_tf.data.dataset import resolve_files
from mvke_tf.data.table import id_text, is_number, read_chunks, split_values
from mvke_tf.export.input_types import read_input_types, retype_examples
from mvke_tf.models.fast import FastScorer, TaskTagTable, pack_tags

FORMATS = ("parquet", "tfrecord")
DIRECTIONS = ("user", "tag")  # --by: top-K tags per user, or top-N users per tag (audience lists)
DEFAULT_TOP_N = 100
MANIFEST = "_manifest.json"
# Earlier versions wrote the manifest as manifest.json, among the shards, where dataset readers take it for
# data and fail; a rerun of such a job replaces it.
LEGACY_MANIFEST = "manifest.json"
JOB_FILE = "_job.json"
_TMP = ".tmp-"  # .<name>.tmp-<run>: a file being written by run <run> (hidden from dataset readers by the dot)
_USERS_FIX = (
    "fix: give UTF-8 CSV files with a header row (the user id and user feature columns) or TFRecord files of tf.Example"
)
DEFAULT_TAG_FIELD = "tags"
DEFAULT_USER_ID = "user_id"
_READ_BATCH = 4096


class TaggingError(ValueError):
    """A user-facing error of the tagging job (bad model dir, no users, unknown task ...)."""


# ----------------------------------------------------------------------------- inputs
def resolve_model_dir(path: str | os.PathLike) -> str:
    """A SavedModel directory, or a Pusher base directory -> its newest numeric version."""
    path = str(path)
    if not tf.io.gfile.isdir(path):
        raise TaggingError(f"--model {path}: no such directory")
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = [
        d.rstrip("/")
        for d in tf.io.gfile.listdir(path)
        if d.rstrip("/").isdigit() and tf.io.gfile.exists(os.path.join(path, d.rstrip("/"), "saved_model.pb"))
    ]
    if not versions:
        raise TaggingError(
            f"--model {path}: neither a SavedModel (no saved_model.pb) nor a Pusher base directory "
            "(no numeric version subdirectory holding one)"
        )
    return os.path.join(path, max(versions, key=int))


def read_tags(path: str | os.PathLike) -> list[str]:
    """One tag per line (blank lines ignored, duplicates dropped, order kept); UTF-8 text."""
    if not tf.io.gfile.exists(str(path)):
        raise FileNotFoundError(f"--tags {path}: no such file")
    with tf.io.gfile.GFile(str(path), "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TaggingError(
                f"--tags {path}: line {number} is not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                "fix: give a UTF-8 text file of one tag per line"
            ) from None
    text = data.decode("utf-8")
    tags = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if not tags:
        raise TaggingError(f"--tags {path}: no tags in the file (one tag per line)")
    return tags


def _find_feature_config(start: str) -> FeatureConfig | None:
    """``features.yaml`` in ``start`` or up to two directories above it (the ``data synth`` layout)."""
    d = Path(start)
    for cand in (d, d.parent, d.parent.parent):
        if (cand / "features.yaml").exists():
            return FeatureConfig.from_yaml(cand / "features.yaml")
    return None


def default_user_id_column(users: str, features: str | os.PathLike | None = None) -> str:
    """The users' id column: the feature config's ``user_id`` (``--features``, or the ``features.yaml`` found next
    to the users files), else ``user_id``."""
    fc = None
    if features and Path(features).is_file():
        fc = FeatureConfig.from_yaml(features)
    elif not features:
        try:
            first = resolve_files(users)[0]
        except (FileNotFoundError, ValueError):
            return DEFAULT_USER_ID
        fc = _find_feature_config(os.path.dirname(first))
    return fc.user_id if fc is not None and fc.user_id else DEFAULT_USER_ID


def _utf8_lines(path: str, fh: Iterator[bytes]) -> Iterator[str]:
    """The lines of a file opened in binary mode, decoded as UTF-8 (a leading BOM dropped).

    Decoded here rather than by the file object so that an undecodable byte names the file and the line.
    """
    for n, raw in enumerate(fh, 1):
        try:
            yield raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise TaggingError(
                f"{path}: line {n} is not UTF-8 text (byte 0x{raw[e.start]:02x} at position {e.start + 1}); "
                f"{_USERS_FIX}"
            ) from None


def _csv_rows(path: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, row)`` for every non-blank row of a CSV file, the header first; a row's number is the
    line it starts on (a quoted field may span lines)."""
    with tf.io.gfile.GFile(path, "rb") as fh:
        # strict: a quote left open is an error where the file ends, not a field that swallows the rest.
        reader = csv.reader(_utf8_lines(path, fh), strict=True)
        start = 1
        try:
            for row in reader:
                if row:
                    yield start, row
                start = reader.line_num + 1
        except csv.Error as e:
            if reader.line_num > start:  # the record began earlier: that is where the problem is
                raise TaggingError(
                    f"{path}: line {start} is not valid CSV ({e} at line {reader.line_num}: a quote opened on "
                    f"line {start} is not closed); {_USERS_FIX}"
                ) from None
            raise TaggingError(f"{path}: line {start} is not valid CSV ({e}); {_USERS_FIX}") from None


def _data_files(path: str) -> list[str]:
    """Data files under a directory: its ``part-*`` files, else those of its subdirectories."""
    try:
        return resolve_files(path)
    except FileNotFoundError:
        for pattern in ("*/part-*.csv", "*/part-*.parquet", "*/part-*.tfrecord*"):
            files = sorted(tf.io.gfile.glob(os.path.join(path, pattern)))
            if files:
                return files
        raise


def tags_from_data(path: str | os.PathLike, feature_config: FeatureConfig | None = None) -> list[str]:
    """Every distinct tag in the tag column of the data files under ``path`` (sorted)."""
    path = str(path)
    files = _data_files(path)
    fc = feature_config or _find_feature_config(path if tf.io.gfile.isdir(path) else os.path.dirname(files[0]))
    field = fc.tag_field if fc else FieldSpec(DEFAULT_TAG_FIELD, MULTI_VALUED, max_values=8)
    tags: set[str] = set()
    for f in files:
        if f.endswith(".csv"):
            rows = _csv_rows(f)
            _, header = next(rows, (0, []))
            if field.name not in header:
                raise TaggingError(f"--tags-from-data: {f} has no '{field.name}' column")
            col = header.index(field.name)
            for n, row in rows:
                if len(row) != len(header):
                    raise TaggingError(
                        f"--tags-from-data: {f}: line {n} has {len(row)} columns, the header {len(header)}; "
                        "fix: give every row one value per header column (quote values holding commas)"
                    )
                tags.update(t for t in row[col].split(field.separator) if t)
        elif f.endswith(".parquet"):
            for chunk in read_chunks(f, _READ_BATCH):
                if field.name not in chunk.values:
                    raise TaggingError(f"--tags-from-data: {f} has no '{field.name}' column")
                tags.update(str(t) for v in chunk.values[field.name] for t in split_values(v, field.separator))
        else:
            ds = tf.data.TFRecordDataset(f, compression_type="GZIP" if f.endswith(".gz") else None)
            spec = {field.name: tf.io.RaggedFeature(tf.string)}
            for batch in ds.batch(_READ_BATCH):
                values = tf.io.parse_example(batch, spec)[field.name].flat_values.numpy()
                tags.update(v.decode() for v in values if v)
    if not tags:
        raise TaggingError(f"--tags-from-data {path}: no tags found in column '{field.name}'")
    return sorted(tags)


def _csv_example(row: Sequence[str], columns: Sequence[tuple[int, FieldSpec]], where: str) -> bytes:
    feats = {}
    for i, spec in columns:
        v = row[i]
        if spec.kind == NUMERIC:
            if v != "":
                try:
                    x = float(v)
                except ValueError:
                    raise TaggingError(
                        f"{where}, column '{spec.name}': {v!r} is not a number (a numeric field); "
                        "fix: write a number, or leave it empty for a missing value"
                    ) from None
                feats[spec.name] = tf.train.Feature(float_list=tf.train.FloatList(value=[x]))
        elif spec.kind == MULTI_VALUED:
            vals = [s.encode() for s in v.split(spec.separator) if s]
            feats[spec.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=vals))
        else:
            feats[spec.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _parquet_user_records(
    path: str, user_fields: Sequence[FieldSpec] | None, user_id_column: str
) -> Iterator[tuple[str, bytes]]:
    """Parquet users as CSV users: the ``user_fields`` of each row as a ``tf.Example`` (ids as strings, numbers
    as floats; :meth:`TaggingModel.retype` then gives them the model's types)."""
    if user_fields is None:
        raise TaggingError(f"{path}: Parquet users need the feature config for the field types; pass --features FILE")
    for chunk in read_chunks(path, _READ_BATCH):
        missing = [c for c in (user_id_column, *(f.name for f in user_fields)) if c not in chunk.values]
        if missing:
            raise TaggingError(f"{path}: no column(s) {missing}; fix: add them, or pass the matching --features file")
        for i in range(chunk.num_rows):
            feats = {}
            for spec in user_fields:
                v = chunk.values[spec.name][i]
                values = split_values(v, spec.separator) if spec.kind == MULTI_VALUED else ([] if v is None else [v])
                if not values:
                    continue
                if spec.kind == NUMERIC:
                    if not all(is_number(x) for x in values):
                        raise TaggingError(
                            f"{path} {chunk.where(i)}, column '{spec.name}': {v!r} is not a number (a numeric "
                            "field); fix: write a number, or leave it empty for a missing value"
                        )
                    feats[spec.name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                else:
                    text = [id_text(x).encode() for x in values]
                    feats[spec.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=text))
            example = tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
            yield str(chunk.values[user_id_column][i]), example


def iter_user_records(
    path: str, user_fields: Sequence[FieldSpec] | None, user_id_column: str = "user_id"
) -> Iterator[tuple[str, bytes]]:
    """``(user_id, serialized tf.Example)`` for every row of one CSV, Parquet or TFRecord file.

    TFRecord rows are passed on as they are (the SavedModel parses the fields it needs); CSV rows
    become ``tf.Example`` with the ``user_fields`` (their kinds come from the feature config).
    """
    if path.endswith(".csv"):
        if user_fields is None:
            raise TaggingError(
                f"{path}: CSV users need the feature config for the field types; pass --features FILE "
                "(features.yaml as written by `mvke-tf data synth`) or use TFRecord users"
            )
        rows = _csv_rows(path)
        first = next(rows, None)
        if first is None:
            return
        header = first[1]
        missing = [c for c in (user_id_column, *(f.name for f in user_fields)) if c not in header]
        if missing:
            raise TaggingError(
                f"{path}: CSV header lacks column(s) {missing}; fix: add them, or pass the --features file "
                "that describes this data (and --user-id-column)"
            )
        uid = header.index(user_id_column)
        columns = [(header.index(f.name), f) for f in user_fields]
        for n, row in rows:
            if len(row) != len(header):
                raise TaggingError(
                    f"{path}: line {n} has {len(row)} columns, the header {len(header)}; "
                    "fix: give every row one value per header column (quote values holding commas)"
                )
            yield row[uid], _csv_example(row, columns, f"{path}: line {n}")
        return
    if path.endswith(".parquet"):
        yield from _parquet_user_records(path, user_fields, user_id_column)
        return
    ds = tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else None)
    # The user id as a string, whether the file stores it as bytes or as an integer.
    spec = {user_id_column: tf.io.RaggedFeature(tf.string)}
    batches = iter(ds.batch(_READ_BATCH))
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except tf.errors.OpError as e:  # DataLossError for garbage or a compression that does not match the name
            # TensorFlow wraps the reason in the op's names: "{{function_node ...}} <reason> [Op:IteratorGetNext]".
            reason = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", e.message.splitlines()[0]).strip()
            raise TaggingError(
                f"{path}: not a readable TFRecord file ({reason}); "
                "fix: give TFRecord files of tf.Example, GZIP-compressed exactly when named *.gz, or CSV files"
            ) from None
        try:
            parsed = tf.io.parse_example(batch, spec)[user_id_column]
        except tf.errors.InvalidArgumentError:
            spec = {user_id_column: tf.io.RaggedFeature(tf.int64)}
            try:
                parsed = tf.strings.as_string(tf.io.parse_example(batch, spec)[user_id_column])
            except tf.errors.InvalidArgumentError as e:
                raise TaggingError(f"{path}: cannot read the '{user_id_column}' feature as an id: {e.message}") from e
        ids = parsed.to_tensor(default_value="", shape=[None, 1])[:, 0].numpy()
        for uid, record in zip(ids, batch.numpy()):
            if not uid:
                raise TaggingError(f"{path}: a record lacks the '{user_id_column}' feature")
            yield uid.decode(), record


# ----------------------------------------------------------------------------- model
class TaggingModel:
    """The SavedModel's ``user_tower`` and ``tag_tower`` plus the per-task score parameters."""

    def __init__(self, model_dir: str | os.PathLike, tasks: Sequence[str] | None = None) -> None:
        self.dir = resolve_model_dir(model_dir)
        try:
            self.loaded = tf.saved_model.load(self.dir)
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise TaggingError(f"--model {self.dir}: cannot load the SavedModel: {e}") from e
        sigs = self.loaded.signatures
        for name in ("user_tower", "tag_tower"):
            if name not in sigs:
                raise TaggingError(
                    f"--model {self.dir}: the SavedModel has no '{name}' signature (it has {sorted(sigs)}); "
                    "export it with mvke_tf.export.export_saved_model or the TFX pipeline"
                )
        self._user_fn = sigs["user_tower"]
        self._tag_fn = sigs["tag_tower"]
        # Signature outputs are a dict in no fixed order: sort for reproducible output rows.
        available = sorted(k[: -len("_experts")] for k in self._user_fn.structured_outputs if k.endswith("_experts"))
        if tasks is None:
            tasks = available
        unknown = [t for t in tasks if t not in available]
        if unknown or not tasks:
            raise TaggingError(f"--tasks: unknown task(s) {unknown or list(tasks)}; the model has {available}")
        self.tasks = list(tasks)
        _, inputs = self._user_fn.structured_input_signature
        if set(inputs) != {"examples"}:
            raise TaggingError(
                f"--model {self.dir}: 'user_tower' takes {sorted(inputs)}, not serialized tf.Examples ('examples'); "
                "re-export it with mvke_tf.export.export_saved_model or the TFX pipeline"
            )
        # The score's bias (and the cosine score's scale) per task: constant over tags, from tag_tower itself.
        probe = self._tag_fn(tags=tf.constant([""]))
        missing = [t for t in self.tasks if f"{t}_bias" not in probe]
        if missing:
            raise TaggingError(f"--model {self.dir}: 'tag_tower' has no '<task>_bias' output for {missing}; re-export")
        self.bias: dict[str, float] = {t: float(probe[f"{t}_bias"][0]) for t in self.tasks}
        self.scale: dict[str, float] = {t: float(probe[f"{t}_scale"][0]) for t in self.tasks if f"{t}_scale" in probe}
        self.score = "cosine" if self.scale else "dot"
        # How the model parses each raw column (the training data's types, for a pipeline export).
        self.input_types = read_input_types(self.dir)

    def retype(self, examples: Sequence[bytes]) -> list[bytes]:
        """Users' examples in the types the model parses (the typing rule: an id as an integer or a string, ...)."""
        try:
            return retype_examples(examples, self.input_types)
        except ValueError as e:
            raise TaggingError(f"--users: {e}") from None

    def user_experts(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        """Serialized user ``tf.Example`` ``[B]`` -> per task ``[B, S, d]``."""
        out = self._user_fn(examples=examples)
        return {t: out[f"{t}_experts"] for t in self.tasks}

    def scorer(self, tags: Sequence[str], batch_size: int = 4096) -> FastScorer:
        """Runs ``tag_tower`` once over ``tags`` and packs the per-task tag tables."""
        if not tags:
            raise TaggingError("no tags to score against")
        es: dict[str, list[tf.Tensor]] = {t: [] for t in self.tasks}
        ws: dict[str, list[tf.Tensor]] = {t: [] for t in self.tasks}
        for start in range(0, len(tags), batch_size):
            out = self._tag_fn(tags=tf.constant(list(tags[start : start + batch_size])))
            for t in self.tasks:
                es[t].append(out[f"{t}_embedding"])
                ws[t].append(out[f"{t}_gate"])
        tables = {}
        for t in self.tasks:
            e, w = tf.concat(es[t], axis=0), tf.concat(ws[t], axis=0)
            outer = tf.reshape(w[:, :, None] * w[:, None, :], [tf.shape(w)[0], -1])
            tables[t] = TaskTagTable(pack_tags(e, w), outer, tf.norm(e, axis=-1), self.bias[t], self.scale.get(t))
        return FastScorer(tags, tables, self.score)


class TopKTagger:
    """Serialized user examples -> per task top-K ``(probabilities [B, k], tag indices [B, k])``.

    One compiled graph per batch: ``user_tower``, per task one ``[B, S*d] x [S*d, T]`` product, top-K.
    """

    def __init__(self, model: TaggingModel, tags: Sequence[str], top_k: int) -> None:
        if top_k < 1:
            raise TaggingError(f"--top-k: must be at least 1, got {top_k}")
        self.model = model
        self.tags = list(tags)
        self.scorer = model.scorer(self.tags)
        self.k = min(top_k, len(self.tags))
        self._fn = tf.function(self._top_k, input_signature=[tf.TensorSpec([None], tf.string)])

    def _top_k(self, examples: tf.Tensor) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
        experts = self.model.user_experts(examples)
        out = {}
        for t in self.model.tasks:
            values, indices = tf.math.top_k(self.scorer.logits(t, experts[t]), k=self.k)
            out[t] = (tf.sigmoid(values), indices)
        return out

    def __call__(self, examples: Sequence[bytes]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = self._fn(tf.constant(self.model.retype(examples), tf.string))
        return {t: (v.numpy(), i.numpy()) for t, (v, i) in out.items()}

    def rows(self, user_ids: Sequence[str], examples: Sequence[bytes], min_score: float = 0.0) -> dict[str, np.ndarray]:
        """Output rows (user-major, then task, then rank) as column arrays, scores >= ``min_score``."""
        res = self(examples)
        tasks = self.model.tasks
        scores = np.stack([res[t][0] for t in tasks], axis=1)  # [B, T, k]
        idx = np.stack([res[t][1] for t in tasks], axis=1)
        b, n_tasks, k = scores.shape
        keep = scores >= min_score
        cols = {
            "user_id": np.broadcast_to(np.asarray(user_ids, dtype=object)[:, None, None], scores.shape)[keep],
            "task": np.broadcast_to(np.asarray(tasks, dtype=object)[None, :, None], scores.shape)[keep],
            "rank": np.broadcast_to(np.arange(1, k + 1, dtype=np.int32)[None, None, :], scores.shape)[keep],
            "tag_index": idx[keep].astype(np.int32),
            "score": scores[keep].astype(np.float32),
        }
        return cols


# ----------------------------------------------------------------------------- audiences (--by tag)
@dataclasses.dataclass
class AudienceState:
    """The best users so far per task and tag, best first: each array ``[tasks, T, n]``, ``n <= top_n``.

    ``positions`` order the users as the job reads them (the first row of each user, files in sorted
    order); among equal logits the user with the lower position ranks first. The arrays never grow past
    ``top_n`` along the last axis, whatever the number of users.
    """

    logits: np.ndarray  # float32
    positions: np.ndarray  # int64
    user_ids: np.ndarray  # object (str)

    @classmethod
    def empty(cls, num_tasks: int, num_tags: int) -> AudienceState:
        shape = (num_tasks, num_tags, 0)
        return cls(np.zeros(shape, np.float32), np.zeros(shape, np.int64), np.empty(shape, object))

    def __getitem__(self, task_index: int) -> AudienceState:
        """One task's state (arrays ``[T, n]``)."""
        return AudienceState(self.logits[task_index], self.positions[task_index], self.user_ids[task_index])

    def take(self, values: np.ndarray, indices: np.ndarray, positions: np.ndarray, user_ids: np.ndarray):
        """The state after a top-k over ``concat([self, batch], -1)``: ``indices [..., k]`` index that concatenation.

        ``positions`` and ``user_ids`` ``[B]`` are the batch's users (the last ``B`` columns).
        """
        n = self.logits.shape[-1]
        in_state = indices < n
        batch_index = np.maximum(indices - n, 0)
        if n:
            state_index = np.minimum(indices, n - 1)
            pos = np.where(in_state, np.take_along_axis(self.positions, state_index, -1), positions[batch_index])
            ids = np.where(in_state, np.take_along_axis(self.user_ids, state_index, -1), user_ids[batch_index])
        else:
            pos, ids = positions[batch_index], user_ids[batch_index]
        return AudienceState(np.asarray(values, np.float32), pos.astype(np.int64), ids.astype(object))

    def save(self, path: Path) -> str:
        """Writes the state (``.npz``, via a temporary file and a rename); returns its SHA-256."""
        unique_ids, inverse = np.unique(self.user_ids.astype(str).ravel(), return_inverse=True)
        tmp = _temp_path(path)
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                logits=self.logits,
                positions=self.positions,
                user_index=inverse.reshape(self.user_ids.shape).astype(np.int64),
                unique_ids=unique_ids,
            )
        os.replace(tmp, path)
        return _sha256(path)

    @classmethod
    def load(cls, path: Path) -> AudienceState:
        with np.load(path, allow_pickle=False) as z:
            ids = z["unique_ids"].astype(object)[z["user_index"]] if z["unique_ids"].size else None
            logits, positions = z["logits"], z["positions"]
        return cls(logits, positions, ids if ids is not None else np.empty(logits.shape, object))


def combine_audiences(a: AudienceState, b: AudienceState, top_n: int) -> AudienceState:
    """The top-``top_n`` of two states with any positions (e.g. partial states of parallel workers).

    Sorts the concatenation by (logit descending, position ascending): the same order as the running
    merge, so combining in any grouping gives the same result.
    """
    logits = np.concatenate([a.logits, b.logits], -1)
    positions = np.concatenate([a.positions, b.positions], -1)
    ids = np.concatenate([a.user_ids, b.user_ids], -1)
    order = np.lexsort((positions, -logits), axis=-1)[..., :top_n]
    return AudienceState(
        np.take_along_axis(logits, order, -1),
        np.take_along_axis(positions, order, -1),
        np.take_along_axis(ids, order, -1),
    )


class AudienceScorer:
    """Serialized user examples -> the running top-N users per (task, tag), merged batch by batch.

    One compiled graph per batch: ``user_tower``, per task one ``[B, S*d] x [S*d, T]`` product,
    transposed to ``[T, B]``, concatenated after the state's ``[T, n]`` logits, and one
    ``tf.math.top_k`` over the last axis (``[tasks, T, n + B] -> [tasks, T, min(N, n + B)]``).
    """

    def __init__(self, model: TaggingModel, tags: Sequence[str], top_n: int) -> None:
        if top_n < 1:
            raise TaggingError(f"--top-n: must be at least 1, got {top_n}")
        self.model = model
        self.tags = list(tags)
        self.top_n = top_n
        self.scorer = model.scorer(self.tags)
        spec = [
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([len(model.tasks), len(self.tags), None], tf.float32),
        ]
        self._fn = tf.function(self._merge, input_signature=spec)

    def empty(self) -> AudienceState:
        return AudienceState.empty(len(self.model.tasks), len(self.tags))

    def _merge(self, examples: tf.Tensor, state_logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        experts = self.model.user_experts(examples)
        batch = tf.stack([tf.transpose(self.scorer.logits(t, experts[t])) for t in self.model.tasks])
        return _top_n_of_concat(state_logits, batch, self.top_n)

    def update(
        self, state: AudienceState, user_ids: Sequence[str], examples: Sequence[bytes], positions: Sequence[int]
    ) -> AudienceState:
        """``state`` merged with one batch of users; returns the new state (``state`` is not changed).

        The batch's ``positions`` must be ascending and above every position in ``state``: then the
        order ``tf.math.top_k`` keeps among equal values (the lower index first) is the position order.
        """
        positions = _check_batch_order(state, positions)
        values, indices = self._fn(tf.constant(self.model.retype(examples), tf.string), tf.constant(state.logits))
        return state.take(values.numpy(), indices.numpy(), positions, np.asarray(user_ids, dtype=object))


def _top_n_of_concat(state_logits: tf.Tensor, batch_logits: tf.Tensor, top_n: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``tf.math.top_k`` over ``concat([state [..., n], batch [..., B]], -1)``: values and indices ``[..., k]``.

    ``k = min(top_n, n + B)``. Among equal values ``top_k`` keeps the lower index first.
    """
    both = tf.concat([state_logits, batch_logits], axis=-1)
    return tf.math.top_k(both, k=tf.minimum(top_n, tf.shape(both)[-1]))


def _check_batch_order(state: AudienceState, positions: Sequence[int]) -> np.ndarray:
    positions = np.asarray(positions, np.int64)
    if len(positions) > 1 and np.any(np.diff(positions) <= 0):
        raise ValueError("positions: must be strictly ascending within a batch; sort the batch by position")
    if state.positions.size and len(positions) and positions[0] <= state.positions.max():
        raise ValueError("positions: a batch must come after every user in the state; merge with combine_audiences")
    return positions


def merge_batch(
    state: AudienceState, batch_logits: np.ndarray, positions: Sequence[int], user_ids: Sequence[str], top_n: int
) -> AudienceState:
    """``state`` merged with a batch's logits ``[tasks, T, B]`` (what :meth:`AudienceScorer.update` does in its graph).

    The batch's ``positions`` ``[B]`` must be ascending and above every position in ``state``.
    """
    positions = _check_batch_order(state, positions)
    values, indices = _top_n_of_concat(tf.constant(state.logits), tf.constant(batch_logits, tf.float32), top_n)
    return state.take(values.numpy(), indices.numpy(), positions, np.asarray(user_ids, dtype=object))


# ----------------------------------------------------------------------------- outputs
def parquet_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("user_id", pa.string()),
            ("task", pa.string()),
            ("rank", pa.int32()),
            ("tag", pa.string()),
            ("score", pa.float32()),
        ]
    )


class _ShardWriter:
    """Writes one output shard to ``<name>.tmp`` and renames it into place on ``commit``."""

    def __init__(self, path: Path, fmt: str, tags: Sequence[str]) -> None:
        self.path, self.fmt = path, fmt
        self.tmp = _temp_path(path)
        self.tags = np.asarray(tags, dtype=object)
        self.rows = 0
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(str(self.tmp), parquet_schema())
        else:
            self._writer = tf.io.TFRecordWriter(str(self.tmp), options="GZIP")

    def write(self, cols: Mapping[str, np.ndarray]) -> None:
        n = len(cols["score"])
        self.rows += n
        if not n:
            return
        if self.fmt == "parquet":
            import pyarrow as pa

            arrays = [
                pa.array(cols["user_id"], pa.string()),
                pa.array(cols["task"], pa.string()),
                pa.array(cols["rank"], pa.int32()),
                pa.array(self.tags[cols["tag_index"]], pa.string()),
                pa.array(cols["score"], pa.float32()),
            ]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=parquet_schema()))
            return
        # One tf.Example per (user, task): rows arrive grouped by user, then task, rank-ordered.
        keys = list(zip(cols["user_id"], cols["task"]))
        start = 0
        for i in range(1, n + 1):
            if i == n or keys[i] != keys[start]:
                ex = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "user_id": _bytes([keys[start][0]]),
                            "task": _bytes([keys[start][1]]),
                            "tags": _bytes(self.tags[cols["tag_index"][start:i]]),
                            "scores": tf.train.Feature(
                                float_list=tf.train.FloatList(value=cols["score"][start:i].tolist())
                            ),
                        }
                    )
                )
                self._writer.write(ex.SerializeToString())
                start = i

    def commit(self) -> None:
        self._writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)


def _bytes(values: Sequence[str]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))


def output_name(index: int, fmt: str) -> str:
    return f"part-{index:05d}." + ("parquet" if fmt == "parquet" else "tfrecord.gz")


def audience_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("tag", pa.string()),
            ("task", pa.string()),
            ("rank", pa.int32()),
            ("user_id", pa.string()),
            ("score", pa.float32()),
        ]
    )


def audience_rows(state: AudienceState, tasks: Sequence[str], tags: Sequence[str], min_score: float = 0.0):
    """Per task (in ``tasks`` order) the output columns of its audiences: tag-major, then rank.

    Yields ``(task, columns)`` with ``tag, task, rank, user_id, score`` arrays (scores >= ``min_score``).
    """
    tags = np.asarray(tags, dtype=object)
    for i, task in enumerate(tasks):
        scores = tf.sigmoid(state.logits[i]).numpy()  # [T, n]
        n_tags, n = scores.shape
        keep = scores >= min_score
        yield (
            task,
            {
                "tag": np.broadcast_to(tags[:, None], scores.shape)[keep],
                "task": np.full(int(keep.sum()), task, dtype=object),
                "rank": np.broadcast_to(np.arange(1, n + 1, dtype=np.int32)[None, :], scores.shape)[keep],
                "user_id": state.user_ids[i][keep],
                "score": scores[keep].astype(np.float32),
            },
        )


def _write_audiences(
    path: Path, fmt: str, state: AudienceState, tasks: Sequence[str], tags: Sequence[str], min_score: float
) -> int:
    """Writes the audience lists to ``path`` (a temporary file, then a rename); returns the number of rows."""
    tmp = _temp_path(path)
    rows = 0
    try:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = audience_schema()
            with pq.ParquetWriter(str(tmp), schema) as writer:
                for _, cols in audience_rows(state, tasks, tags, min_score):
                    rows += len(cols["score"])
                    arrays = [pa.array(cols[name], schema.field(name).type) for name in schema.names]
                    writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        else:
            # One tf.Example per (tag, task): its users best first.
            with tf.io.TFRecordWriter(str(tmp), options="GZIP") as writer:
                for task, cols in audience_rows(state, tasks, tags, min_score):
                    rows += len(cols["score"])
                    starts = np.flatnonzero(cols["rank"] == 1)  # every kept list starts at rank 1
                    for a, b in zip(starts, [*starts[1:], len(cols["score"])]):
                        ex = tf.train.Example(
                            features=tf.train.Features(
                                feature={
                                    "tag": _bytes([cols["tag"][a]]),
                                    "task": _bytes([task]),
                                    "user_ids": _bytes(cols["user_id"][a:b]),
                                    "scores": tf.train.Feature(
                                        float_list=tf.train.FloatList(value=cols["score"][a:b].tolist())
                                    ),
                                }
                            )
                        )
                        writer.write(ex.SerializeToString())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return rows


def read_output(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a tagging output directory (either format; ``--by user`` or ``--by tag``), in shard order."""
    out_dir = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for f in sorted(out_dir.glob("part-*")):
        if ".tmp-" in f.name:
            continue
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows.extend(pq.read_table(str(f)).to_pylist())
        elif f.name.endswith(".tfrecord.gz"):
            for rec in tf.data.TFRecordDataset(str(f), compression_type="GZIP"):
                feats = tf.train.Example.FromString(rec.numpy()).features.feature
                if "user_ids" in feats:  # --by tag: one example per (tag, task)
                    tag, task = feats["tag"].bytes_list.value[0].decode(), feats["task"].bytes_list.value[0].decode()
                    users = zip(feats["user_ids"].bytes_list.value, feats["scores"].float_list.value)
                    for r, (user, s) in enumerate(users):
                        rows.append({"tag": tag, "task": task, "rank": r + 1, "user_id": user.decode(), "score": s})
                    continue
                user, task = feats["user_id"].bytes_list.value[0].decode(), feats["task"].bytes_list.value[0].decode()
                for r, (tag, s) in enumerate(zip(feats["tags"].bytes_list.value, feats["scores"].float_list.value)):
                    rows.append({"user_id": user, "task": task, "rank": r + 1, "tag": tag.decode(), "score": s})
    return rows


# ----------------------------------------------------------------------------- the job
@dataclasses.dataclass
class ShardResult:
    input: str
    output: str
    users: int
    rows: int
    status: str  # "computed" | "skipped" (output already there)
    seconds: float
    # What the shard was computed from: a rerun skips it only if these still hold.
    input_bytes: int = 0
    input_mtime_ns: int = 0
    input_sha256: str = ""
    upstream_sha256: str = ""  # the users files before this one (their users are not scored in this shard)
    output_bytes: int = 0


def _fingerprint(model_dir: str) -> str:
    f = os.path.join(model_dir, "saved_model.pb")
    with tf.io.gfile.GFile(f, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:16]


def resolve_user_fields(
    users_files: Sequence[str], model: TaggingModel, features: str | os.PathLike | FeatureConfig | None
) -> list[FieldSpec] | None:
    """The user fields to build ``tf.Example`` from CSV rows (``None`` for TFRecord input)."""
    if isinstance(features, FeatureConfig):
        return list(features.user_fields)
    if features is not None:
        if not Path(features).exists():
            raise FileNotFoundError(f"--features {features}: no such file")
        return list(FeatureConfig.from_yaml(features).user_fields)
    if not users_files[0].endswith((".csv", ".parquet")):
        return None
    fc = _find_feature_config(os.path.dirname(users_files[0]))
    if fc is None:
        raise TaggingError(
            f"--users {users_files[0]}: CSV input needs the field types; fix: pass --features features.yaml"
        )
    return list(fc.user_fields)


def _new_user_batches(
    path: str, user_fields: Sequence[FieldSpec] | None, user_id_column: str, seen: set[str], batch_size: int
) -> Iterator[tuple[list[str], list[bytes]]]:
    """Batches of users of one file not ``seen`` before (``seen`` is updated)."""
    ids: list[str] = []
    examples: list[bytes] = []
    for uid, ex in iter_user_records(path, user_fields, user_id_column):
        if uid in seen:
            continue
        seen.add(uid)
        ids.append(uid)
        examples.append(ex)
        if len(ids) >= batch_size:
            yield ids, examples
            ids, examples = [], []
    if ids:
        yield ids, examples


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(str(path), "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _file_fingerprint(path: str) -> dict[str, Any]:
    """Size, modification time and SHA-256 of a users file."""
    stat = tf.io.gfile.stat(path)
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return {"input_bytes": stat.length, "input_mtime_ns": stat.mtime_nsec, "input_sha256": digest.hexdigest()}


def _is_done(record: Mapping[str, Any] | None, result: ShardResult, target: Path) -> bool:
    """Whether a manifest record still describes ``target``: same input content, same files before it, output intact.

    The modification time is recorded but not compared: a file touched or copied without a change in its
    content gives the same shard.
    """
    if not record:
        return False
    same = ("input", "input_bytes", "input_sha256", "upstream_sha256")
    return (
        all(record.get(k) == getattr(result, k) for k in same)
        and bool(result.input_sha256)
        and target.is_file()
        and target.stat().st_size == record.get("output_bytes")
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TaggingError(f"{path}: unreadable ({e}); fix: delete the output directory and rerun") from None
    if not isinstance(data, dict):
        raise TaggingError(f"{path}: not a JSON object; fix: delete the output directory and rerun")
    return data


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Written to a temporary file and renamed: a killed run leaves the old file or the new one, never half."""
    tmp = _temp_path(path)
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def check_out_dir(out: str | os.PathLike) -> Path:
    """``--out`` if it is, or can be made, a directory this run writes; else a one-line :class:`TaggingError`.
    Nothing is created here (the job makes the directory when it writes)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TaggingError(f"--out {out}: is a file, not a directory; fix: give a directory path (made if missing)")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise TaggingError(f"--out {out}: {existing} is a file, not a directory; fix: give a directory path")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise TaggingError(f"--out {out}: {existing} is not writable; fix: give a directory you can write to")
    return out


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), ``""`` where that is unknown.

    A pid alone does not name a run: pids are reused, and a dead run's pid may be a new process's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2 :].split()[19]  # field 22, counted after the command name
    except (OSError, ValueError, IndexError):
        return ""


def _run_id() -> str:
    """This run's owner id in temporary file names: the process's pid and start time."""
    return f"{os.getpid()}-{_process_start(os.getpid()) or 0}"


def _temp_path(path: Path) -> Path:
    """Where ``path`` is written before its rename: ``.<name>.tmp-<run>`` beside it. The dot keeps Parquet
    and other dataset readers from taking a half-written file for data."""
    return path.with_name(f".{path.name}{_TMP}{_run_id()}")


def _run_alive(pid: int, start: str) -> bool:
    """Whether the run of ``pid`` started at ``start`` still runs (a reused pid is another run)."""
    if not _pid_running(pid):
        return False
    now = _process_start(pid)
    return not (now and start not in ("", "0") and now != start)


def _remove_stale_temp_files(out_dir: Path, own_names: set[str]) -> list[str]:
    """Removes temporary files of this job (``name`` in ``own_names``) whose run is gone.

    A run killed mid-shard leaves its temporary file, which no reader can open. A file whose run still
    runs may belong to a concurrent run and is left alone; a run is its pid and the process's start time,
    so a dead run whose pid a new process got is seen as dead. Files of earlier versions
    (``<name>.tmp-<pid>``, without the dot) are removed when their pid runs no process.
    """
    removed = []
    if not out_dir.is_dir():
        return removed
    current = re.compile(r"\.(.+)" + re.escape(_TMP) + r"(\d+)-(\d+)")
    legacy = re.compile(r"(.+)" + re.escape(_TMP) + r"(\d+)")
    for f in out_dir.iterdir():
        m = current.fullmatch(f.name)
        if m and m.group(1) in own_names and not _run_alive(int(m.group(2)), m.group(3)):
            f.unlink(missing_ok=True)
            removed.append(f.name)
            continue
        m = legacy.fullmatch(f.name)
        if m and m.group(1) in own_names and not _pid_running(int(m.group(2))):
            f.unlink(missing_ok=True)
            removed.append(f.name)
    return removed


def check_direction(by: str, top_n: int | None) -> int | None:
    """Validates ``--by`` and ``--top-n``; returns ``top_n`` (``None`` for ``--by user``, default 100 for ``tag``)."""
    if by not in DIRECTIONS:
        raise TaggingError(f"--by: {by!r} not supported; use user (top-K tags per user) or tag (top-N users per tag)")
    if by == "user":
        if top_n is not None:
            raise TaggingError(
                "--top-n: applies to --by tag (the N best users per tag); with --by user give --top-k, or add --by tag"
            )
        return None
    top_n = DEFAULT_TOP_N if top_n is None else top_n
    if top_n < 1:
        raise TaggingError(f"--top-n: must be at least 1, got {top_n}")
    return top_n


def _state_name(index: int) -> str:
    return f"_state-{index:05d}.npz"


def _tag_audiences(
    tm: TaggingModel,
    files: Sequence[str],
    tags: Sequence[str],
    out_dir: Path,
    job: dict[str, Any],
    user_fields: Sequence[FieldSpec] | None,
    user_id_column: str,
    batch_size: int,
    progress: Callable[[int], None] | None,
    start: float,
) -> dict[str, Any]:
    """``--by tag``: per task and tag the ``top_n`` users with the highest probability; returns the manifest.

    Streams over user batches with one :class:`AudienceState` (``[tasks, T, <= top_n]``: its size does
    not depend on the number of users), merged batch by batch by :class:`AudienceScorer`. The output
    (one file, ``part-00000``: columns ``tag, task, rank, user_id, score``) depends on every user, so it
    is written at the end; the checkpoint is the state after each users file, saved as
    ``_state-NNNNN.npz`` and recorded in the manifest with the file's fingerprint and its SHA-256. A
    rerun of the same job resumes after the last recorded file if the files up to it are unchanged and
    its state intact (else from the start), and skips everything if the output of the same inputs is
    there. Before a run changes anything it marks the manifest incomplete and removes an older output:
    a ``part-*`` file is always the result of the inputs its manifest names. Only the newest state is
    kept. Deduplication keeps the set of user ids read, as ``--by user`` does.
    """
    fmt, top_n, min_score = job["format"], job["top_n"], job["min_score"]
    job_path, manifest_path = out_dir / JOB_FILE, out_dir / MANIFEST
    target = out_dir / output_name(0, fmt)
    previous_manifest = _read_json(manifest_path) or {}
    previous = _read_json(job_path) or {k: previous_manifest[k] for k in job if k in previous_manifest}
    orphan = not previous_manifest and not any(out_dir.glob("part-*"))
    if previous and previous != job and not orphan:
        diff = sorted(k for k in {*job, *previous} if previous.get(k) != job.get(k))
        raise TaggingError(
            f"--out {out_dir}: holds the output of a different job (differs in {diff}); "
            "use a new output directory or delete this one"
        )
    _remove_stale_temp_files(out_dir, {target.name, MANIFEST, JOB_FILE, *(_state_name(i) for i in range(len(files)))})
    recorded = [r for r in previous_manifest.get("shards", []) if isinstance(r, dict)] if previous == job else []

    fingerprints = []
    upstream = hashlib.sha256()
    for path in files:
        fingerprint = {"input": path, **_file_fingerprint(path), "upstream_sha256": upstream.hexdigest()}
        upstream.update(fingerprint["input_sha256"].encode())
        fingerprints.append(fingerprint)
    same = ("input", "input_bytes", "input_sha256", "upstream_sha256")
    resume = 0
    for index, rec in enumerate(recorded[: len(files)]):
        if any(rec.get(k) != fingerprints[index][k] for k in same):
            break
        resume = index + 1
    if resume:
        state_path = out_dir / _state_name(resume - 1)
        if not state_path.is_file() or recorded[resume - 1].get("state_sha256") != _sha256(state_path):
            resume = 0  # that state was replaced by a later one, or damaged: start over
    kept = [{**r, "status": "skipped"} for r in recorded[:resume]]

    if (
        previous_manifest.get("complete")
        and resume == len(files)
        and target.is_file()
        and target.stat().st_size == previous_manifest.get("output_bytes")
    ):
        if progress:
            progress(previous_manifest.get("users", 0))
        manifest = {
            **previous_manifest,
            "shards": kept,
            "users_computed": 0,
            "shards_computed": 0,
            "shards_skipped": len(kept),
            "seconds": round(time.perf_counter() - start, 3),
            "users_per_second": None,
        }
        _write_json(manifest_path, manifest)
        return manifest

    job_written = job_path.exists() and previous == job
    if manifest_path.exists() or target.exists():
        # The old output (if any) no longer describes what this run will write: first say so, then remove it.
        _write_json(manifest_path, {**job, "complete": False, "shards": kept})
        target.unlink(missing_ok=True)

    scorer = AudienceScorer(tm, tags, top_n)
    seen: set[str] = set()
    if resume:
        state = AudienceState.load(out_dir / _state_name(resume - 1))
        if resume < len(files):  # later files skip the users of the earlier ones
            for path in files[:resume]:
                before = len(seen)
                seen.update(uid for uid, _ in iter_user_records(path, user_fields, user_id_column))
                if progress:
                    progress(len(seen) - before)
    else:
        state = scorer.empty()
    shards = list(kept)
    total_users = kept[-1]["users_total"] if kept else 0
    for index in range(resume, len(files)):
        shard_start = time.perf_counter()
        users = 0
        for ids, examples in _new_user_batches(files[index], user_fields, user_id_column, seen, batch_size):
            # _new_user_batches adds a batch's ids to ``seen`` before yielding it: their positions end at len(seen).
            positions = np.arange(len(seen) - len(ids), len(seen), dtype=np.int64)
            state = scorer.update(state, ids, examples, positions)
            users += len(ids)
            if progress:
                progress(len(ids))
        total_users = len(seen)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = _state_name(index)
        state_sha = state.save(out_dir / name)
        # The job file goes with the first checkpoint: a run that fails before one leaves no job behind.
        if not job_written:
            _write_json(job_path, job)
            job_written = True
        shards.append(
            {
                **fingerprints[index],
                "users": users,
                "users_total": total_users,
                "status": "computed",
                "seconds": time.perf_counter() - shard_start,
                "state": name,
                "state_sha256": state_sha,
            }
        )
        _write_json(manifest_path, {**job, "complete": False, "shards": shards})
        for old in out_dir.glob("_state-*.npz"):  # only the newest checkpoint is kept
            if old.name != name:
                old.unlink(missing_ok=True)
    if total_users == 0:
        for f in (target, manifest_path, job_path, *out_dir.glob("_state-*.npz")):
            f.unlink(missing_ok=True)
        raise TaggingError(f"--users: no users in {len(files)} file(s) ({files[0]} ...)")
    rows = _write_audiences(target, fmt, state, tm.tasks, tags, min_score)
    computed = [s for s in shards if s["status"] == "computed"]
    computed_users = sum(s["users"] for s in computed)
    manifest = {
        **job,
        "complete": True,
        "score": tm.score,
        "top_n_effective": min(top_n, total_users),
        "shards": shards,
        "users": total_users,
        "users_computed": computed_users,
        "shards_computed": len(computed),
        "shards_skipped": len(shards) - len(computed),
        "output": target.name,
        "output_bytes": target.stat().st_size,
        "rows": rows,
        "state": shards[-1]["state"],
        "seconds": round(time.perf_counter() - start, 3),
        "users_per_second": round(computed_users / max(sum(s["seconds"] for s in computed), 1e-9), 1)
        if computed
        else None,
    }
    _write_json(manifest_path, manifest)
    return manifest


def tag_users(
    model: str | os.PathLike,
    users: str | os.PathLike | Sequence[str],
    tags: Sequence[str],
    out: str | os.PathLike,
    top_k: int = 20,
    min_score: float = 0.0,
    fmt: str = "parquet",
    batch_size: int = 1024,
    tasks: Sequence[str] | None = None,
    features: str | os.PathLike | FeatureConfig | None = None,
    user_id_column: str = "user_id",
    progress: Callable[[int], None] | None = None,
    by: str = "user",
    top_n: int | None = None,
) -> dict[str, Any]:
    """Tags every user in ``users`` with its top-``top_k`` ``tags`` per task; returns the manifest.

    With ``by="tag"`` it writes audience lists instead: per task and tag the ``top_n`` users with the
    highest probability (see :func:`_tag_audiences`).

    Args:
      model: a SavedModel directory or a Pusher base directory (newest numeric version).
      users: CSV or TFRecord (``tf.Example``) files: a glob, a directory or a list.
      tags: the tag vocabulary (e.g. :func:`read_tags` or :func:`tags_from_data`).
      out: output directory; a rerun of the same job skips the shards whose users files are unchanged
        (resume), and recomputes the others.
      top_k: tags per user and task; ``min_score``: drop tags with a lower probability.
      fmt: ``parquet`` or ``tfrecord``.
      batch_size: users per ``user_tower`` call and matrix product.
      tasks: which tasks (default: all the model has).
      features: feature config (``features.yaml`` or object), needed for CSV users when the
        model's ``user_tower`` takes serialized examples; found next to the data by default.
      user_id_column: the user id column / feature.
      progress: called with the number of users done after each batch.
      by: ``user`` (top-K tags per user) or ``tag`` (top-N users per tag).
      top_n: users per tag and task with ``by="tag"`` (default 100).
    """
    # Everything is checked before anything is written: a rejected run leaves the output directory as it was.
    if fmt not in FORMATS:
        raise TaggingError(f"--format: {fmt!r} not supported; use one of {list(FORMATS)}")
    top_n = check_direction(by, top_n)
    if top_k < 1:
        raise TaggingError(f"--top-k: must be at least 1, got {top_k}")
    if batch_size < 1:
        raise TaggingError(f"--batch-size: must be at least 1, got {batch_size}")
    if not 0.0 <= min_score <= 1.0:
        raise TaggingError(f"--min-score: a probability in [0, 1], got {min_score}")
    if fmt == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError as e:
            raise TaggingError("--format parquet needs pyarrow (pip install pyarrow), or use --format tfrecord") from e
    files = resolve_files(users)
    tags = list(dict.fromkeys(tags))
    if not tags:
        raise TaggingError("no tags to score against; fix: pass a non-empty tag vocabulary")
    start = time.perf_counter()
    tm = TaggingModel(model, tasks)
    user_fields = resolve_user_fields(files, tm, features)
    for path in files:  # each file's header and first row: a bad file fails now, not after hours of others
        next(iter_user_records(path, user_fields, user_id_column), None)
    out_dir = Path(out)
    job = {
        "model": tm.dir,
        "model_fingerprint": _fingerprint(tm.dir),
        "input_files": files,
        "num_tags": len(tags),
        "tags_sha256": hashlib.sha256("\n".join(tags).encode()).hexdigest(),
        "tasks": tm.tasks,
        # --by user keeps the job of earlier versions (their outputs still resume).
        **({"top_k": top_k} if by == "user" else {"by": by, "top_n": top_n}),
        "min_score": min_score,
        "format": fmt,
        "user_id_column": user_id_column,
    }
    if by == "tag":
        return _tag_audiences(tm, files, tags, out_dir, job, user_fields, user_id_column, batch_size, progress, start)
    job_path = out_dir / JOB_FILE
    manifest_path = out_dir / MANIFEST
    if not manifest_path.exists() and (out_dir / LEGACY_MANIFEST).exists():
        manifest_path = out_dir / LEGACY_MANIFEST
    previous_manifest = _read_json(manifest_path) or {}
    previous = _read_json(job_path) or {k: previous_manifest[k] for k in job if k in previous_manifest}
    # A job file with no shard or manifest beside it is left by a run that stopped before its first shard
    # (or by an earlier version, which wrote it before checking the arguments): it holds no results to protect.
    orphan = not previous_manifest and not any(out_dir.glob("part-*"))
    if previous and previous != job and not orphan:
        diff = sorted(k for k in job if previous.get(k) != job[k])
        raise TaggingError(
            f"--out {out_dir}: holds the output of a different job (differs in {diff}); "
            "use a new output directory or delete this one"
        )
    names = [output_name(i, fmt) for i in range(len(files))]
    _remove_stale_temp_files(out_dir, {*names, MANIFEST, JOB_FILE})
    # The shards a run of this job finished and recorded, by output name (a legacy manifest records no inputs:
    # its shards are recomputed).
    done: dict[str, dict[str, Any]] = {
        s["output"]: s for s in previous_manifest.get("shards", []) if isinstance(s, dict) and "output" in s
    }
    job_written = job_path.exists() and previous == job

    def record(name: str, result: dict[str, Any] | None) -> None:
        """Updates the manifest's list of finished shards (``None``: ``name`` is about to be replaced)."""
        if result is None and name not in done:
            return
        if result is None:
            del done[name]
        else:
            done[name] = result
        _write_json(out_dir / MANIFEST, {**job, "complete": False, "shards": [done[n] for n in sorted(done)]})

    tagger: TopKTagger | None = None  # built lazily: a fully resumed job loads no tag tables
    seen: set[str] = set()
    shards: list[ShardResult] = []
    upstream = hashlib.sha256()
    for index, path in enumerate(files):
        shard_start = time.perf_counter()
        target = out_dir / names[index]
        fingerprint = {**_file_fingerprint(path), "upstream_sha256": upstream.hexdigest()}
        result = ShardResult(path, target.name, users=0, rows=0, status="computed", seconds=0.0, **fingerprint)
        upstream.update(result.input_sha256.encode())
        if _is_done(done.get(target.name), result, target):
            for uid, _ in iter_user_records(path, user_fields, user_id_column):
                if uid not in seen:
                    seen.add(uid)
                    result.users += 1
            if progress:
                progress(result.users)
            result.rows, result.output_bytes = done[target.name]["rows"], target.stat().st_size
            result.status, result.seconds = "skipped", time.perf_counter() - shard_start
            shards.append(result)
            continue
        if tagger is None:
            tagger = TopKTagger(tm, tags, top_k)
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = _ShardWriter(target, fmt, tags)
        try:
            for ids, examples in _new_user_batches(path, user_fields, user_id_column, seen, batch_size):
                writer.write(tagger.rows(ids, examples, min_score))
                result.users += len(ids)
                if progress:
                    progress(len(ids))
        except BaseException:
            writer.abort()
            raise
        # The job file goes with the first shard: a run that fails before one is done leaves no job behind.
        if not job_written:
            _write_json(job_path, job)
            job_written = True
        record(target.name, None)  # the old record must not outlive the old file it describes
        writer.commit()
        result.rows, result.output_bytes = writer.rows, target.stat().st_size
        result.seconds = time.perf_counter() - shard_start
        record(target.name, dataclasses.asdict(result))
        shards.append(result)
    total_users = sum(s.users for s in shards)
    if total_users == 0:
        # Every shard is empty: remove them with the job's files, so that nothing of this failed run counts as done.
        for n in (*names, MANIFEST, JOB_FILE):
            (out_dir / n).unlink(missing_ok=True)
        raise TaggingError(f"--users: no users in {len(files)} file(s) ({files[0]} ...)")
    secs = time.perf_counter() - start
    computed = [s for s in shards if s.status == "computed"]
    computed_users = sum(s.users for s in computed)
    manifest = {
        **job,
        "complete": True,
        "score": tm.score,
        "top_k_effective": min(top_k, len(tags)),
        "shards": [dataclasses.asdict(s) for s in shards],
        "users": total_users,
        "users_computed": computed_users,
        "shards_computed": len(computed),
        "shards_skipped": len(shards) - len(computed),
        "seconds": round(secs, 3),
        "users_per_second": round(computed_users / max(sum(s.seconds for s in computed), 1e-9), 1)
        if computed
        else None,
    }
    _write_json(out_dir / MANIFEST, manifest)
    (out_dir / LEGACY_MANIFEST).unlink(missing_ok=True)  # this job's, from an earlier version (checked above)
    return manifest


__all__ = [
    "DIRECTIONS",
    "FORMATS",
    "AudienceScorer",
    "AudienceState",
    "combine_audiences",
    "merge_batch",
    "TaggingError",
    "TaggingModel",
    "TopKTagger",
    "iter_user_records",
    "read_output",
    "read_tags",
    "resolve_model_dir",
    "tag_users",
    "tags_from_data",
]
