"""Output writers of the tagging job: the ``--by user`` shards (``part-NNNNN.parquet`` or ``.tfrecord.gz``,
each written to a temporary file and renamed), the ``--by tag`` audience file, their schemas, and
:func:`read_output`, which reads either back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from mvke_tf.tagging.resume import _temp_path

if TYPE_CHECKING:
    from mvke_tf.tagging.audiences import AudienceState


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
