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
in the shard that row is in. This module never imports TFX or Beam (see :mod:`mvke_tf.tagging_beam`).
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
from mvke_tf.models.fast import FastScorer, TaskTagTable, pack_tags

FORMATS = ("parquet", "tfrecord")
MANIFEST = "_manifest.json"
# Earlier versions wrote the manifest as manifest.json, among the shards, where dataset readers take it for
# data and fail; a rerun of such a job replaces it.
LEGACY_MANIFEST = "manifest.json"
JOB_FILE = "_job.json"
_TMP = ".tmp-"  # <name>.tmp-<pid>: a file being written by process <pid>
_USERS_FIX = (
    "fix: give UTF-8 CSV files with a header row (the user id and user feature columns) or TFRecord files of tf.Example"
)
DEFAULT_TAG_FIELD = "tags"
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
    """One tag per line (blank lines ignored, duplicates dropped, order kept)."""
    if not tf.io.gfile.exists(str(path)):
        raise FileNotFoundError(f"--tags {path}: no such file")
    with tf.io.gfile.GFile(str(path), "r") as f:
        tags = list(dict.fromkeys(line.strip() for line in f if line.strip()))
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
    """``(line number, row)`` for every non-blank row of a CSV file, the header first."""
    with tf.io.gfile.GFile(path, "rb") as fh:
        reader = csv.reader(_utf8_lines(path, fh))
        try:
            for row in reader:
                if row:
                    yield reader.line_num, row
        except csv.Error as e:
            raise TaggingError(f"{path}: line {reader.line_num} is not valid CSV ({e}); {_USERS_FIX}") from None


def _data_files(path: str) -> list[str]:
    """Data files under a directory: its ``part-*`` files, else those of its subdirectories."""
    try:
        return resolve_files(path)
    except FileNotFoundError:
        for pattern in ("*/part-*.csv", "*/part-*.tfrecord*"):
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


def iter_user_records(
    path: str, user_fields: Sequence[FieldSpec] | None, user_id_column: str = "user_id"
) -> Iterator[tuple[str, bytes]]:
    """``(user_id, serialized tf.Example)`` for every row of one CSV or TFRecord file.

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
    ds = tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else None)
    spec = {user_id_column: tf.io.FixedLenFeature([], tf.string, default_value="")}
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
            ids = tf.io.parse_example(batch, spec)[user_id_column].numpy()
        except tf.errors.InvalidArgumentError as e:
            raise TaggingError(f"{path}: cannot read the '{user_id_column}' feature as a string: {e.message}") from e
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
        out = self._fn(tf.constant(list(examples), tf.string))
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
        self.tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
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


def read_output(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a tagging output directory (either format), as dicts, in shard order."""
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
    if not users_files[0].endswith(".csv"):
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
    tmp = path.with_name(path.name + f"{_TMP}{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_stale_temp_files(out_dir: Path, own_names: set[str]) -> list[str]:
    """Removes ``<name>.tmp-<pid>`` files of this job (``name`` in ``own_names``) whose process is gone.

    A run killed mid-shard leaves its temporary file, which no reader can open. A file whose process
    still runs may belong to a concurrent run and is left alone.
    """
    removed = []
    if not out_dir.is_dir():
        return removed
    pattern = re.compile(r"(.+)" + re.escape(_TMP) + r"(\d+)")
    for f in out_dir.iterdir():
        m = pattern.fullmatch(f.name)
        if m and m.group(1) in own_names and not _pid_running(int(m.group(2))):
            f.unlink(missing_ok=True)
            removed.append(f.name)
    return removed


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
) -> dict[str, Any]:
    """Tags every user in ``users`` with its top-``top_k`` ``tags`` per task; returns the manifest.

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
    """
    # Everything is checked before anything is written: a rejected run leaves the output directory as it was.
    if fmt not in FORMATS:
        raise TaggingError(f"--format: {fmt!r} not supported; use one of {list(FORMATS)}")
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
        "top_k": top_k,
        "min_score": min_score,
        "format": fmt,
        "user_id_column": user_id_column,
    }
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
    "FORMATS",
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
