"""Batch tagging as an Apache Beam pipeline: the same job as :func:`mvke_tf.tagging.tag_users`.

    read users (one element per row, with its file and row position)
      -> dedupe by user_id (the first row wins, as in the local job)
      -> beam.BatchElements
      -> TagDoFn: the SavedModel is loaded once per worker (``setup``), the tag tower runs once
         there, and every batch is one user_tower call + one matrix product per task + top-K
         (the same :class:`~mvke_tf.tagging.TopKTagger` as the local job)
      -> beam.io.WriteToParquet (``user_id, task, rank, tag, score``)

DirectRunner by default; the same code runs on Dataflow, Flink or Spark (pass ``--runner`` and its
options in ``beam_args``; the model, user and output paths must then be readable by the workers,
e.g. ``gs://``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from mvke_tf import tagging
from mvke_tf.config import FeatureConfig
from mvke_tf.data.dataset import resolve_files


def _read_file(item: tuple[int, str], user_fields, user_id_column: str) -> Iterator[tuple[str, tuple]]:
    index, path = item
    for row, (uid, example) in enumerate(tagging.iter_user_records(path, user_fields, user_id_column)):
        yield uid, (index, row, example)


def _first(values: Iterable[tuple]) -> tuple:
    return min(values, key=lambda v: (v[0], v[1]))


class TagDoFn(beam.DoFn):
    """Batches of ``(user_id, example)`` -> output row dicts; the model is loaded once per worker."""

    def __init__(self, model_dir: str, tags: Sequence[str], tasks: Sequence[str] | None, top_k: int, min_score: float):
        self.model_dir, self.tags, self.tasks = model_dir, list(tags), list(tasks) if tasks else None
        self.top_k, self.min_score = top_k, min_score
        self._tagger: tagging.TopKTagger | None = None

    def setup(self) -> None:
        import mvke_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads on the worker)

        self._tagger = tagging.TopKTagger(tagging.TaggingModel(self.model_dir, self.tasks), self.tags, self.top_k)

    def process(self, batch: Sequence[tuple[str, bytes]]) -> Iterator[dict[str, Any]]:
        ids = [uid for uid, _ in batch]
        cols = self._tagger.rows(ids, [ex for _, ex in batch], self.min_score)
        tags = self._tagger.tags
        for uid, task, rank, ti, score in zip(
            cols["user_id"], cols["task"], cols["rank"], cols["tag_index"], cols["score"]
        ):
            yield {"user_id": uid, "task": task, "rank": int(rank), "tag": tags[ti], "score": float(score)}


def run_beam(
    model: str | os.PathLike,
    users: str | os.PathLike | Sequence[str],
    tags: Sequence[str],
    out: str | os.PathLike,
    top_k: int = 20,
    min_score: float = 0.0,
    batch_size: int = 1024,
    tasks: Sequence[str] | None = None,
    features: str | os.PathLike | FeatureConfig | None = None,
    user_id_column: str = "user_id",
    beam_args: Sequence[str] = (),
    num_shards: int = 0,
) -> dict[str, Any]:
    """Runs the tagging job with Beam; writes ``out/part-*.parquet`` and ``out/_manifest.json``.

    Arguments as :func:`mvke_tf.tagging.tag_users` (Parquet output only); ``beam_args`` are Beam
    pipeline options (default ``--runner=DirectRunner``), ``num_shards`` 0 lets the runner choose.
    """
    if top_k < 1:
        raise tagging.TaggingError(f"--top-k: must be at least 1, got {top_k}")
    if batch_size < 1:
        raise tagging.TaggingError(f"--batch-size: must be at least 1, got {batch_size}")
    files = resolve_files(users)
    tags = list(dict.fromkeys(tags))
    if not tags:
        raise tagging.TaggingError("no tags to score against")
    start = time.perf_counter()
    # Validate here (model dir, signatures, tasks, CSV field types) rather than fail on a worker.
    tm = tagging.TaggingModel(model, tasks)
    user_fields = tagging.resolve_user_fields(files, tm, features)
    model_dir, task_list = tm.dir, tm.tasks
    del tm
    out = str(out)
    os.makedirs(out, exist_ok=True)
    args = list(beam_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")
    options = PipelineOptions(args)
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | "Files" >> beam.Create(list(enumerate(files)))
            | "Read" >> beam.FlatMap(_read_file, user_fields, user_id_column)
            | "FirstRowPerUser" >> beam.CombinePerKey(_first)
            | "Example" >> beam.Map(lambda kv: (kv[0], kv[1][2]))
            | "Batch" >> beam.BatchElements(min_batch_size=min(batch_size, 32), max_batch_size=batch_size)
            | "TopK" >> beam.ParDo(TagDoFn(model_dir, tags, task_list, top_k, min_score))
            | "Write"
            >> beam.io.WriteToParquet(
                os.path.join(out, "part"),
                tagging.parquet_schema(),
                file_name_suffix=".parquet",
                num_shards=num_shards,
            )
        )
    outputs = sorted(f for f in os.listdir(out) if f.startswith("part-") and f.endswith(".parquet"))
    manifest = {
        "runner": "beam",
        "beam_args": args,
        "model": model_dir,
        "input_files": files,
        "num_tags": len(tags),
        "tasks": task_list,
        "top_k": top_k,
        "min_score": min_score,
        "format": "parquet",
        "outputs": outputs,
        "seconds": round(time.perf_counter() - start, 3),
    }
    with open(os.path.join(out, tagging.MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest
