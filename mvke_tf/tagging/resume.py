"""Resume of the tagging job: the job file and manifest (``_job.json``, ``_manifest.json``, written via a
temporary file and a rename), the fingerprints that decide whether a shard is still done (size and SHA-256
of its users file and of the files before it), and the temporary files of runs that are gone.

A temporary file is ``.<name>.tmp-<pid>-<start>`` beside its target: the dot hides it from dataset readers,
the process's pid and start time name the run that owns it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

from mvke_tf.tagging.errors import TaggingError

MANIFEST = "_manifest.json"
JOB_FILE = "_job.json"
_TMP = ".tmp-"  # .<name>.tmp-<run>: a file being written by run <run> (hidden from dataset readers by the dot)


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


def _state_name(index: int) -> str:
    return f"_state-{index:05d}.npz"
