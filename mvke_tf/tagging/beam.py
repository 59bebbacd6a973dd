"""Batch tagging as an Apache Beam pipeline: the same job as :func:`mvke_tf.tagging.tag_users`.

    read users (one element per row, with its file and row position)
      -> dedupe by user_id (the first row wins, as in the local job)
      -> RunInference(TaggingModelHandler): Beam batches the users (``batch_elements_kwargs``) and
         loads the SavedModel once per worker process (its shared-model handle); ``load_model`` runs
         the tag tower once, and every batch is one user_tower call + one matrix product per task
         (the same :class:`~mvke_tf.tagging.TopKTagger` / :class:`~mvke_tf.tagging.AudienceScorer`
         as the local job)
      --by user: per user its top-K rows
      --by tag:  per batch and task the batch's top-N users of every tag ([T, <= N])
                 -> CombinePerKey(task): the exact global top-N (ties: the user read first)
      -> beam.io.WriteToParquet (``user_id, task, rank, tag, score`` or ``tag, task, rank, user_id, score``)

DirectRunner by default; the same code runs on Dataflow, Flink or Spark (pass ``--runner`` and its
options in ``beam_args``; the model, user and output paths must then be readable by the workers,
e.g. ``gs://``).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from mvke_tf.config import FeatureConfig
from mvke_tf.tagging.audiences import AudienceScorer, AudienceState, combine_audiences
from mvke_tf.tagging.errors import TaggingError
from mvke_tf.tagging.readers import iter_user_records, resolve_user_fields
from mvke_tf.tagging.request import TagRequest
from mvke_tf.tagging.resume import MANIFEST
from mvke_tf.tagging.scoring import TaggingModel, TopKTagger
from mvke_tf.tagging.writers import audience_rows, audience_schema, parquet_schema

# A user's position (the order of the local job's users, used to break ties): its file index and row.
_ROW_BITS = 40


def _read_file(item: tuple[int, str], user_fields, user_id_column: str) -> Iterator[tuple[str, tuple]]:
    index, path = item
    for row, (uid, example) in enumerate(iter_user_records(path, user_fields, user_id_column)):
        yield uid, (index, row, example)


def _first(values: Iterable[tuple]) -> tuple:
    return min(values, key=lambda v: (v[0], v[1]))


def _user_element(kv: tuple[str, tuple]) -> tuple[str, int, bytes]:
    """``(user_id, (file index, row, example))`` -> ``(user_id, position, example)``.

    Positions order users as the local job reads them (files in sorted order, then rows).
    """
    uid, (index, row, example) = kv
    return uid, (index << _ROW_BITS) | row, example


class TaggingModelHandler(ModelHandler):
    """``RunInference`` handler for a tagging SavedModel; elements are ``(user_id, position, example)``.

    * ``by="user"``: the model is a :class:`~mvke_tf.tagging.TopKTagger`; a batch gives one
      ``PredictionResult(user_id, rows)`` per user (its output rows as dicts, task then rank).
    * ``by="tag"``: the model is an :class:`~mvke_tf.tagging.AudienceScorer`; a batch gives per task
      ``(task, AudienceState [T, <= top_n])``, the batch's own top-N users of every tag.
    """

    def __init__(
        self,
        model_dir: str,
        tags: Sequence[str],
        tasks: Sequence[str],
        by: str = "user",
        top_k: int = 20,
        top_n: int | None = None,
        min_score: float = 0.0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__()
        self.model_dir, self.tags, self.tasks = model_dir, list(tags), list(tasks)
        self.by, self.top_k, self.top_n, self.min_score = by, top_k, top_n, min_score
        self.batch_size = batch_size

    def load_model(self) -> TopKTagger | AudienceScorer:
        import mvke_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads on the worker)

        model = TaggingModel(self.model_dir, self.tasks)
        if self.by == "tag":
            return AudienceScorer(model, self.tags, self.top_n)
        return TopKTagger(model, self.tags, self.top_k)

    def run_inference(
        self,
        batch: Sequence[tuple[str, int, bytes]],
        model: TopKTagger | AudienceScorer,
        inference_args: Mapping[str, Any] | None = None,
    ) -> Iterable[Any]:
        if self.by == "tag":
            # AudienceScorer.update breaks ties by the order of the batch: give it the position order.
            batch = sorted(batch, key=lambda e: e[1])
            state = model.update(model.empty(), [e[0] for e in batch], [e[2] for e in batch], [e[1] for e in batch])
            return [(task, state[i]) for i, task in enumerate(model.model.tasks)]
        cols = model.rows([e[0] for e in batch], [e[2] for e in batch], self.min_score)
        rows: dict[str, list[dict[str, Any]]] = {e[0]: [] for e in batch}
        for uid, task, rank, ti, score in zip(
            cols["user_id"], cols["task"], cols["rank"], cols["tag_index"], cols["score"]
        ):
            rows[uid].append(
                {"user_id": uid, "task": task, "rank": int(rank), "tag": model.tags[ti], "score": float(score)}
            )
        return [PredictionResult(uid, user_rows) for uid, user_rows in rows.items()]

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return {"min_batch_size": min(self.batch_size, 32), "max_batch_size": self.batch_size}

    def get_num_bytes(self, batch: Sequence[tuple[str, int, bytes]]) -> int:
        return sum(len(e[2]) for e in batch)

    def get_metrics_namespace(self) -> str:
        return "TagUsers"


class TopNCombineFn(beam.CombineFn):
    """Partial :class:`~mvke_tf.AudienceState` s -> their exact top-N (any order of merging)."""

    def __init__(self, top_n: int) -> None:
        self.top_n = top_n

    def create_accumulator(self) -> AudienceState | None:
        return None

    def add_input(self, acc: AudienceState | None, state: AudienceState) -> AudienceState:
        return state if acc is None else combine_audiences(acc, state, self.top_n)

    def merge_accumulators(self, accs: Iterable[AudienceState | None]) -> AudienceState | None:
        states = [a for a in accs if a is not None]
        if not states:
            return None
        return functools.reduce(lambda a, b: combine_audiences(a, b, self.top_n), states)

    def extract_output(self, acc: AudienceState | None) -> AudienceState | None:
        return acc


def _audience_rows(
    kv: tuple[str, AudienceState | None], tags: Sequence[str], min_score: float
) -> Iterator[dict[str, Any]]:
    task, state = kv
    if state is None:
        return
    one = AudienceState(state.logits[None], state.positions[None], state.user_ids[None])
    for _, cols in audience_rows(one, [task], tags, min_score):
        for tag, rank, uid, score in zip(cols["tag"], cols["rank"], cols["user_id"], cols["score"]):
            yield {"tag": tag, "task": task, "rank": int(rank), "user_id": uid, "score": float(score)}


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
    by: str = "user",
    top_n: int | None = None,
) -> dict[str, Any]:
    """Runs the tagging job with Beam; writes ``out/part-*.parquet`` and ``out/_manifest.json``.

    Arguments as :func:`mvke_tf.tagging.tag_users` (Parquet output only); ``beam_args`` are Beam
    pipeline options (default ``--runner=DirectRunner``), ``num_shards`` 0 lets the runner choose.
    """
    request = TagRequest(
        model,
        users,
        tags,
        out,
        top_k=top_k,
        min_score=min_score,
        batch_size=batch_size,
        tasks=tasks,
        features=features,
        user_id_column=user_id_column,
        by=by,
        top_n=top_n,
    )
    return run_pipeline(request, beam_args, num_shards)


def run_pipeline(request: TagRequest, beam_args: Sequence[str] = (), num_shards: int = 0) -> dict[str, Any]:
    """Runs the job of ``request`` (Parquet output only) as a Beam pipeline (what :func:`run_beam` does)."""
    if request.fmt != "parquet":
        raise TaggingError(f"--format: the Beam runner writes Parquet only, not {request.fmt!r}; use --format parquet")
    files, tags = request.inputs()
    by, top_k, top_n, min_score = request.by, request.top_k, request.top_n, request.min_score
    start = time.perf_counter()
    # Validate here (model dir, signatures, tasks, CSV field types) rather than fail on a worker.
    tm = TaggingModel(request.model, request.tasks)
    user_fields = resolve_user_fields(files, tm, request.features)
    model_dir, task_list = tm.dir, tm.tasks
    del tm
    out = str(request.out)
    os.makedirs(out, exist_ok=True)
    args = list(beam_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")
    options = PipelineOptions(args)
    handler = TaggingModelHandler(model_dir, tags, task_list, by, top_k, top_n, min_score, request.batch_size)
    with beam.Pipeline(options=options) as p:
        scored = (
            p
            | "Files" >> beam.Create(list(enumerate(files)))
            | "Read" >> beam.FlatMap(_read_file, user_fields, request.user_id_column)
            | "FirstRowPerUser" >> beam.CombinePerKey(_first)
            | "Position" >> beam.Map(_user_element)
            | "Score" >> RunInference(handler)
        )
        if by == "tag":
            rows = (
                scored
                | "TopNPerTask" >> beam.CombinePerKey(TopNCombineFn(top_n))
                | "Rows" >> beam.FlatMap(_audience_rows, tags, min_score)
            )
            schema = audience_schema()
        else:
            rows = scored | "Rows" >> beam.FlatMap(lambda result: result.inference)
            schema = parquet_schema()
        _ = rows | "Write" >> beam.io.WriteToParquet(
            os.path.join(out, "part"), schema, file_name_suffix=".parquet", num_shards=num_shards
        )
    outputs = sorted(f for f in os.listdir(out) if f.startswith("part-") and f.endswith(".parquet"))
    manifest = {
        "runner": "beam",
        "beam_args": args,
        "model": model_dir,
        "input_files": files,
        "num_tags": len(tags),
        "tasks": task_list,
        **request.direction(),
        "min_score": min_score,
        "format": "parquet",
        "outputs": outputs,
        "seconds": round(time.perf_counter() - start, 3),
    }
    with open(os.path.join(out, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest
