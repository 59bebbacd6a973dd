"""The data every size trains on: one generated world on disk, each size a prefix of its training files, and
the one eval day all sizes share."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mvke_tf.data import synthetic
from mvke_tf.metrics import auc_or_nan

TASKS = ("click", "conversion")
# The world's layout is fixed whatever sizes a run trains at: 4M training rows (the largest
# size) followed by a 200k-row eval day. Smaller sizes take the first N training rows, so the
# default run and a later --full run share every training prefix and the very same eval rows.
MAX_TRAIN_ROWS = 4_000_000
EVAL_ROWS = 200_000
# Training rows per part file: every size is a whole number of shards (a prefix of the files).
SHARD_ROWS = 200_000
NUM_USERS = 40_000  # as benchmarks.models


def world_config(
    max_train_rows: int = MAX_TRAIN_ROWS, eval_rows: int = EVAL_ROWS, num_users: int = NUM_USERS, **overrides: Any
) -> synthetic.SyntheticConfig:
    """The generator config whose last day is exactly the ``eval_rows`` rows after ``max_train_rows``.

    ``day = 1 + row * days // num_rows``, so with ``num_rows = max_train_rows + eval_rows`` and
    ``days = num_rows / eval_rows`` the last day starts at row ``max_train_rows``.
    """
    total = max_train_rows + eval_rows
    if total % eval_rows or max_train_rows % synthetic._CHUNK_ROWS or eval_rows % synthetic._CHUNK_ROWS:
        raise ValueError(
            f"max_train_rows={max_train_rows}, eval_rows={eval_rows}: use multiples of "
            f"{synthetic._CHUNK_ROWS:,} (the generator's chunk) with eval_rows dividing their sum"
        )
    return synthetic.SyntheticConfig(num_rows=total, num_users=num_users, days=total // eval_rows, seed=0, **overrides)


def _chunks(first_row: int, rows: int) -> range:
    return range(first_row // synthetic._CHUNK_ROWS, (first_row + rows) // synthetic._CHUNK_ROWS)


def _write_csv(path: Path, chunk_list: Iterable[dict[str, Any]]) -> None:
    """Rows of ``chunk_list`` in one CSV file, formatted exactly as :func:`synthetic.generate` writes them.

    Written to a temporary name and renamed, so an interrupted run never leaves a partial shard.
    """
    names = synthetic.columns()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for cols in chunk_list:
            for i in range(len(cols["day"])):
                writer.writerow([synthetic._fmt(cols[n][i]) for n in names])
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prepare_data(
    config: synthetic.SyntheticConfig,
    root: Path,
    train_rows: int,
    shard_rows: int = SHARD_ROWS,
    eval_rows: int = EVAL_ROWS,
    log: Any = None,
) -> dict[str, Any]:
    """Writes (or extends) ``root/{train,eval}`` with the first ``train_rows`` training rows and the eval day.

    The rows are those :func:`synthetic.generate` would write for ``config`` (same chunks, same
    formatting), but only the chunks needed: training shards already on disk are kept, so a
    larger run extends a smaller one. Returns ``root/data.json``: the eval rows, their oracle AUC
    and the eval file's sha256.
    """
    if train_rows % shard_rows or shard_rows % synthetic._CHUNK_ROWS:
        raise ValueError(f"train_rows={train_rows}: use a multiple of shard_rows={shard_rows}")
    world = None
    info_path = root / "data.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if info.get("generator") not in (None, config.to_dict()):
        raise ValueError(f"{root} holds data of another generator config; fix: use another --work-dir")
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "eval").mkdir(parents=True, exist_ok=True)
    eval_first = config.num_rows - eval_rows
    eval_file = root / "eval" / "part-00000.csv"
    if not eval_file.exists() or "eval" not in info:
        world = world or synthetic.SyntheticWorld(config)
        cols = [world.chunk(i, synthetic._CHUNK_ROWS) for i in _chunks(eval_first, eval_rows)]
        if any((c["day"] != config.days).any() for c in cols):
            raise AssertionError("eval chunks are not all on the last day")
        _write_csv(eval_file, cols)
        oracle = {
            t: auc_or_nan(np.concatenate([c[t] for c in cols]), np.concatenate([c[f"p_{t}"] for c in cols]))
            for t in TASKS
        }
        info["eval"] = {
            "rows": eval_rows,
            "first_row": eval_first,
            "positives": {t: int(sum(c[t].sum() for c in cols)) for t in TASKS},
            "oracle_auc": oracle,
            "sha256": file_sha256(eval_file),
        }
    for shard in range(train_rows // shard_rows):
        path = root / "train" / f"part-{shard:05d}.csv"
        if path.exists():
            continue
        world = world or synthetic.SyntheticWorld(config)
        if log:
            log(f"writing training rows {shard * shard_rows:,}-{(shard + 1) * shard_rows:,}")
        cols = [world.chunk(i, synthetic._CHUNK_ROWS) for i in _chunks(shard * shard_rows, shard_rows)]
        _write_csv(path, cols)
    info["generator"] = config.to_dict()
    info["shard_rows"] = shard_rows
    info_path.write_text(json.dumps(info, indent=2))
    return info


def size_dir(root: Path, train_rows: int, shard_rows: int = SHARD_ROWS) -> Path:
    """A data directory for :func:`train_and_evaluate` with the first ``train_rows`` training rows.

    ``train/`` links the first shards of ``root/train``, ``eval`` links ``root/eval`` (the one
    eval day every size shares); ``metadata.json`` carries the columns and the row counts.
    """
    out = root / "sizes" / str(train_rows)
    (out / "train").mkdir(parents=True, exist_ok=True)
    for shard in range(train_rows // shard_rows):
        link = out / "train" / f"part-{shard:05d}.csv"
        if not link.exists():
            link.symlink_to(Path("..", "..", "..", "train", link.name))
    if not (out / "eval").exists():
        (out / "eval").symlink_to(Path("..", "..", "eval"))
    synthetic.feature_config().to_yaml(out / "features.yaml")
    info = json.loads((root / "data.json").read_text())
    meta = {
        "columns": synthetic.columns(),
        "splits": {"train": {"rows": train_rows}, "eval": {"rows": info["eval"]["rows"]}},
        "generator": info["generator"],
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=2))
    return out
