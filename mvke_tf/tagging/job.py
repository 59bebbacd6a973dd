"""Orchestration of the local tagging job: :func:`tag_users` (``--by user``: one output shard per users file,
resumable shard by shard) and :func:`_tag_audiences` (``--by tag``: one audience file, checkpointed after each
users file). What each step does lives in the sibling modules; this one decides what runs, what is skipped
and what the manifest says.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mvke_tf.config import FeatureConfig, FieldSpec
from mvke_tf.tagging.audiences import AudienceScorer, AudienceState
from mvke_tf.tagging.errors import TaggingError
from mvke_tf.tagging.readers import _new_user_batches, iter_user_records, resolve_user_fields
from mvke_tf.tagging.request import TagRequest
from mvke_tf.tagging.resume import (
    JOB_FILE,
    MANIFEST,
    ShardResult,
    _file_fingerprint,
    _fingerprint,
    _is_done,
    _read_json,
    _remove_stale_temp_files,
    _sha256,
    _state_name,
    _write_json,
)
from mvke_tf.tagging.scoring import TaggingModel, TopKTagger
from mvke_tf.tagging.writers import _ShardWriter, _write_audiences, output_name


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
    request = TagRequest(
        model, users, tags, out, top_k, min_score, fmt, batch_size, tasks, features, user_id_column, by, top_n
    )
    return run_local(request, progress)


def run_local(request: TagRequest, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Runs the job of ``request`` in this process (what :func:`tag_users` does); returns the manifest."""
    # The request's settings are checked (it is made); now its inputs, before anything is written.
    files, tags = request.inputs()
    top_k, min_score, fmt, batch_size = request.top_k, request.min_score, request.fmt, request.batch_size
    by, user_id_column = request.by, request.user_id_column
    start = time.perf_counter()
    tm = TaggingModel(request.model, request.tasks)
    user_fields = resolve_user_fields(files, tm, request.features)
    for path in files:  # each file's header and first row: a bad file fails now, not after hours of others
        next(iter_user_records(path, user_fields, user_id_column), None)
    out_dir = Path(request.out)
    job = {
        "model": tm.dir,
        "model_fingerprint": _fingerprint(tm.dir),
        "input_files": files,
        "num_tags": len(tags),
        "tags_sha256": hashlib.sha256("\n".join(tags).encode()).hexdigest(),
        "tasks": tm.tasks,
        **request.direction(),  # --by user keeps the job of earlier versions (their outputs still resume)
        "min_score": min_score,
        "format": fmt,
        "user_id_column": user_id_column,
    }
    if by == "tag":
        return _tag_audiences(tm, files, tags, out_dir, job, user_fields, user_id_column, batch_size, progress, start)
    job_path = out_dir / JOB_FILE
    previous_manifest = _read_json(out_dir / MANIFEST) or {}
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
    # The shards a run of this job finished and recorded, by output name (a record without its inputs'
    # fingerprints is recomputed: _is_done).
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
    return manifest
