"""What a finished local pipeline run did: data anomalies, the blessing and the push.

Reads ML Metadata (SQLite) and the artifact files only; it imports neither TFX nor TFDV, so
it also works after a failed run (e.g. the anomalies gate stopped it before the Trainer).

::

  report = run_report("runs/tfx/metadata.db")
  print("\\n".join(report.lines()))
  if not report.ok: ...
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

ANOMALIES_FILE = "SchemaDiff.pb"


@dataclasses.dataclass(frozen=True)
class FieldAnomaly:
    """One anomalous field of one split (``field`` is ``"<dataset>"`` for dataset-level anomalies)."""

    split: str
    field: str
    description: str

    def line(self) -> str:
        return f"field '{self.field}' ({self.split}): {self.description}"


@dataclasses.dataclass(frozen=True)
class RunReport:
    """The summary of one pipeline run.

    Attributes:
      run_id: the MLMD ``pipeline_run`` context name.
      anomalies: anomalies found by the ExampleValidator (empty: clean data).
      anomalies_uri: the ExampleValidator output directory, or None if it did not run.
      blessed: the Evaluator's verdict; None if the Evaluator did not run.
      blessing_uri: the Evaluator's blessing directory.
      evaluation_uri: the Evaluator's TFMA output directory.
      model_uri: the Trainer's model directory.
      pushed: the pushed version directory (``<serving_dir>/<version>``), or None if nothing was pushed.
      failed: components whose execution failed in this run.
    """

    run_id: str
    anomalies: tuple[FieldAnomaly, ...] = ()
    anomalies_uri: str | None = None
    blessed: bool | None = None
    blessing_uri: str | None = None
    evaluation_uri: str | None = None
    model_uri: str | None = None
    pushed: str | None = None
    failed: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Clean data, a blessed model and no failed component."""
        return not self.anomalies and self.blessed is True and not self.failed

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [f"pipeline run {self.run_id}"]
        if self.anomalies_uri is None:
            out.append("data validation: did not run")
        elif self.anomalies:
            by_field: dict[tuple[str, str], list[str]] = {}
            for a in self.anomalies:  # one line per field (and description), naming its splits
                by_field.setdefault((a.field, a.description), []).append(a.split)
            out.append(f"data validation: anomalies in {len({f for f, _ in by_field})} field(s)")
            out += [f"  field '{f}' ({', '.join(splits)}): {d}" for (f, d), splits in by_field.items()]
        else:
            out.append("data validation: no anomalies")
        out.append(f"  anomalies: {self.anomalies_uri}" if self.anomalies_uri else "")
        out.append(f"model: {self.model_uri or 'not trained'}")
        out.append(f"evaluation: {self.evaluation_uri or 'not evaluated'}")
        verdict = {True: "BLESSED", False: "NOT BLESSED", None: "no verdict"}[self.blessed]
        out.append(f"blessing: {verdict}" + (f" ({self.blessing_uri})" if self.blessing_uri else ""))
        out.append(f"pushed: {self.pushed}" if self.pushed else "pushed: nothing (the serving directory is unchanged)")
        if self.failed:
            out.append(f"failed components: {', '.join(self.failed)}")
        return [line for line in out if line]


def read_anomalies(anomalies_uri: str | os.PathLike) -> tuple[FieldAnomaly, ...]:
    """Anomalies of an ``ExampleAnomalies`` artifact directory (``Split-<name>/SchemaDiff.pb``)."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    found = []
    for split_dir in sorted(Path(anomalies_uri).glob("Split-*")):
        path = split_dir / ANOMALIES_FILE
        if not path.is_file():
            continue
        proto = anomalies_pb2.Anomalies()
        proto.ParseFromString(path.read_bytes())
        split = split_dir.name[len("Split-") :]
        for name, info in sorted(proto.anomaly_info.items()):
            found.append(FieldAnomaly(split, name, _describe(info)))
        if proto.HasField("dataset_anomaly_info"):
            found.append(FieldAnomaly(split, "<dataset>", _describe(proto.dataset_anomaly_info)))
    return tuple(found)


def _describe(info) -> str:
    short = info.short_description or "; ".join(r.short_description for r in info.reason if r.short_description)
    long = info.description or "; ".join(r.description for r in info.reason if r.description)
    if short and long and long != short:
        return f"{short}: {long}"
    return short or long or "anomaly"


def _blessing(uri: str, properties) -> bool | None:
    if os.path.exists(os.path.join(uri, "BLESSED")):
        return True
    if os.path.exists(os.path.join(uri, "NOT_BLESSED")):
        return False
    if "blessed" in properties:
        return bool(properties["blessed"].int_value)
    return None


def run_report(metadata_path: str | os.PathLike, pipeline_name: str | None = None) -> RunReport:
    """The report of the latest run recorded in the SQLite ML Metadata file ``metadata_path``.

    Raises:
      FileNotFoundError: no metadata file.
      LookupError: no pipeline run recorded (for ``pipeline_name``, when given).
    """
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    if not os.path.isfile(metadata_path):
        raise FileNotFoundError(f"no ML Metadata at {metadata_path}; fix: give the metadata.db of a local run")
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(metadata_path)
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(connection)

    runs = store.get_contexts_by_type("pipeline_run")
    if pipeline_name:
        pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
        owned = {e.id for e in store.get_executions_by_context(pipeline.id)} if pipeline else set()
        runs = [r for r in runs if {e.id for e in store.get_executions_by_context(r.id)} & owned]
    if not runs:
        raise LookupError(f"no pipeline run in {metadata_path}" + (f" for {pipeline_name!r}" if pipeline_name else ""))
    run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))

    executions = store.get_executions_by_context(run.id)
    type_names = {t.id: t.name for t in store.get_execution_types()}
    failed = tuple(
        type_names.get(e.type_id, "?").rsplit(".", 1)[-1]
        for e in executions
        if e.last_known_state == metadata_store_pb2.Execution.FAILED
    )
    # Outputs of this run's components (not the resolver's picks from earlier runs).
    producers = {e.id for e in executions if "resolver" not in type_names.get(e.type_id, "").lower()}
    events = store.get_events_by_execution_ids(list(producers)) if producers else []
    output_ids = sorted({ev.artifact_id for ev in events if ev.type == metadata_store_pb2.Event.OUTPUT})
    artifacts = store.get_artifacts_by_id(output_ids) if output_ids else []
    artifact_types = {t.id: t.name for t in store.get_artifact_types()}
    latest: dict[str, object] = {}
    for artifact in sorted(artifacts, key=lambda a: a.id):
        if artifact.state == metadata_store_pb2.Artifact.LIVE:
            latest[artifact_types.get(artifact.type_id, "")] = artifact

    report: dict = {"run_id": run.name, "failed": failed}
    if (anomalies := latest.get("ExampleAnomalies")) is not None:
        report.update(anomalies_uri=anomalies.uri, anomalies=read_anomalies(anomalies.uri))
    if (blessing := latest.get("ModelBlessing")) is not None:
        report.update(blessing_uri=blessing.uri, blessed=_blessing(blessing.uri, blessing.custom_properties))
    if (evaluation := latest.get("ModelEvaluation")) is not None:
        report["evaluation_uri"] = evaluation.uri
    if (model := latest.get("Model")) is not None:
        report["model_uri"] = model.uri
    if (pushed := latest.get("PushedModel")) is not None:
        props = pushed.custom_properties
        destination = props["pushed_destination"].string_value if "pushed_destination" in props else ""
        if "pushed" in props and props["pushed"].int_value == 1 and destination and os.path.isdir(destination):
            report["pushed"] = destination
    return RunReport(**report)
