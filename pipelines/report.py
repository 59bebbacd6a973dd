"""What a finished local pipeline run did: data anomalies, the blessing and the push.

Reads ML Metadata (SQLite) and the artifact files only; it imports neither TFX nor TFDV, so
it also works after a failed run (e.g. the anomalies gate stopped it before the Trainer).
For each anomalous field it counts the rows (ExampleGen's tf.Examples of the run, per split)
that violate the run's schema, so the report says how many rows to repair.

::

  report = run_report("runs/tfx/metadata.db")
  print("\\n".join(report.lines()))
  if not report.ok: ...
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Collection, Iterable
from pathlib import Path

ANOMALIES_FILE = "SchemaDiff.pb"
DATASET = "<dataset>"


@dataclasses.dataclass(frozen=True)
class FieldAnomaly:
    """One anomalous field of one split (``field`` is ``"<dataset>"`` for dataset-level anomalies).

    ``rows`` of ``total`` rows of the split violate the schema in this field (None: not counted).
    """

    split: str
    field: str
    description: str
    rows: int | None = None
    total: int | None = None

    @property
    def counted(self) -> str:
        """``"37 of 1,612 rows"``, or ``""`` when not counted."""
        if self.rows is None:
            return ""
        return f"{self.rows:,} of {self.total:,} rows" if self.total is not None else f"{self.rows:,} rows"

    def line(self) -> str:
        counted = f"{self.counted}: " if self.counted else ""
        return f"field '{self.field}' ({self.split}): {counted}{self.description}"


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
      infra_blessed: the CppInfraValidator's verdict (the C++ runtime serves the model); None if it did not run.
      infra_reason: its one-line reason (what failed, or what was checked).
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
    infra_blessed: bool | None = None
    infra_reason: str | None = None
    pushed: str | None = None
    failed: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Clean data, a blessed model and no failed component."""
        return not self.anomalies and self.blessed is True and self.infra_blessed is not False and not self.failed

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [f"pipeline run {self.run_id}"]
        if self.anomalies_uri is None:
            out.append("data validation: did not run")
        elif self.anomalies:
            # One line per field and description, naming its splits; per split where rows were counted.
            by_field: dict[tuple[str, str, str, str], list[str]] = {}
            for a in self.anomalies:
                by_field.setdefault((a.field, a.description, a.counted, a.counted and a.split), []).append(a.split)
            out.append(f"data validation: anomalies in {len({key[0] for key in by_field})} field(s)")
            out += [
                f"  field '{f}' ({', '.join(splits)}): {c + ': ' if c else ''}{d}"
                for (f, d, c, _), splits in by_field.items()
            ]
        else:
            out.append("data validation: no anomalies")
        out.append(f"  anomalies: {self.anomalies_uri}" if self.anomalies_uri else "")
        out.append(f"model: {self.model_uri or 'not trained'}")
        out.append(f"evaluation: {self.evaluation_uri or 'not evaluated'}")
        verdict = {True: "BLESSED", False: "NOT BLESSED", None: "no verdict"}[self.blessed]
        out.append(f"blessing: {verdict}" + (f" ({self.blessing_uri})" if self.blessing_uri else ""))
        if self.infra_blessed is not None:
            verdict = "serves it" if self.infra_blessed else "cannot serve it"
            out.append(f"C++ runtime: {verdict}: {self.infra_reason}")
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
            found.append(FieldAnomaly(split, DATASET, _describe(proto.dataset_anomaly_info)))
    return tuple(found)


def _describe(info) -> str:
    short = info.short_description or "; ".join(r.short_description for r in info.reason if r.short_description)
    long = info.description or "; ".join(r.description for r in info.reason if r.description)
    if short and long and long != short:
        return f"{short}: {long}"
    return short or long or "anomaly"


def _field_check(feature, string_domains: dict[str, Collection[str]]):
    """``check(tf.train.Feature | None) -> bool``: True when the value violates the schema ``feature``.

    ``feature`` None: the column is not in the schema, so every row that has it violates it.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2

    if feature is None:
        return lambda value: value is not None
    lo, hi = 0, None
    if feature.HasField("shape"):
        lo = hi = math.prod(d.size for d in feature.shape.dim)
    elif feature.HasField("value_count"):
        lo, hi = feature.value_count.min, (feature.value_count.max or None)
    required = feature.presence.min_fraction >= 1.0 or lo > 0
    kind = feature.type
    domain: Collection[str] | None = None
    if feature.HasField("string_domain"):
        domain = set(feature.string_domain.value)
    elif feature.HasField("domain"):
        domain = string_domains.get(feature.domain)
    bools = None
    if feature.HasField("bool_domain"):
        b = feature.bool_domain
        bools = {b.true_value, b.false_value} if kind == schema_pb2.BYTES and b.true_value else {0, 1}
    ints = feature.int_domain if feature.HasField("int_domain") else None
    floats = feature.float_domain if feature.HasField("float_domain") else None

    def parse(v):  # a value as the schema's type; None: it does not parse
        if kind == schema_pb2.INT:
            if isinstance(v, bytes):
                try:
                    return int(v.decode().strip())
                except (UnicodeDecodeError, ValueError):
                    return None
            return int(v) if float(v).is_integer() else None
        if kind == schema_pb2.FLOAT:
            if isinstance(v, bytes):
                try:
                    return float(v.decode().strip())
                except (UnicodeDecodeError, ValueError):
                    return None
            return float(v)
        return v.decode(errors="replace") if isinstance(v, bytes) else str(v)

    def bad_value(x) -> bool:
        if x is None:
            return True
        if bools is not None and x not in bools:
            return True
        if ints is not None and ((ints.HasField("min") and x < ints.min) or (ints.HasField("max") and x > ints.max)):
            return True
        if floats is not None and (
            (floats.HasField("min") and x < floats.min) or (floats.HasField("max") and x > floats.max)
        ):
            return True
        return domain is not None and x not in domain

    def check(value) -> bool:
        kind_field = value.WhichOneof("kind") if value is not None else None
        values = list(getattr(value, kind_field).value) if kind_field else []
        if not values:
            return required
        if len(values) < lo or (hi is not None and len(values) > hi):
            return True
        return any(bad_value(parse(v)) for v in values)

    return check


def example_files(examples_uri: str | os.PathLike, split: str) -> list[Path]:
    """The TFRecord files of one split of an ``Examples`` artifact (``Split-<name>/*``)."""
    return sorted(p for p in (Path(examples_uri) / f"Split-{split}").glob("*") if p.is_file())


def count_violations(files: Iterable[str | os.PathLike], schema, fields: Collection[str]) -> tuple[dict[str, int], int]:
    """Rows of the tf.Example files (gzipped when named ``*.gz``) that violate ``schema`` in each of ``fields``.

    A row violates a field when the field is missing or empty but required (presence 1.0 or a shape),
    has a value that does not parse as the schema's type (``b"n/a"`` in a FLOAT column), a value outside
    its bool / int / float / string domain, or the wrong number of values; or, for a field not in the
    schema, when the row has it. Streams the files.

    Returns:
      ``({field: rows}, total rows)``.
    """
    import tensorflow as tf

    by_name = {f.name: f for f in schema.feature}
    domains = {d.name: set(d.value) for d in schema.string_domain}
    checks = {name: _field_check(by_name.get(name), domains) for name in fields}
    counts = dict.fromkeys(checks, 0)
    total = 0
    for path in files:
        compression = "GZIP" if str(path).endswith(".gz") else ""
        for record in tf.data.TFRecordDataset(str(path), compression_type=compression):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            total += 1
            for name, check in checks.items():
                if check(feature.get(name)):
                    counts[name] += 1
    return counts, total


def count_anomalous_rows(
    anomalies: Iterable[FieldAnomaly], examples_uri: str | os.PathLike, schema_uri: str | os.PathLike
) -> tuple[FieldAnomaly, ...]:
    """``anomalies`` with their ``rows`` and ``total`` counted in the ExampleGen output ``examples_uri``,
    against the schema artifact ``schema_uri`` (``schema.pbtxt``). Dataset-level anomalies are not counted."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    anomalies = tuple(anomalies)
    schema = text_format.Parse((Path(schema_uri) / "schema.pbtxt").read_text(), schema_pb2.Schema())
    fields_by_split: dict[str, set[str]] = {}
    for a in anomalies:
        if a.field != DATASET:
            fields_by_split.setdefault(a.split, set()).add(a.field)
    counted: dict[str, tuple[dict[str, int], int]] = {}
    for split, fields in fields_by_split.items():
        files = example_files(examples_uri, split)
        if files:
            counted[split] = count_violations(files, schema, sorted(fields))
    out = []
    for a in anomalies:
        if a.split in counted and a.field in counted[a.split][0]:
            counts, total = counted[a.split]
            a = dataclasses.replace(a, rows=counts[a.field], total=total)
        out.append(a)
    return tuple(out)


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
    outputs = [ev for ev in events if ev.type == metadata_store_pb2.Event.OUTPUT]
    output_ids = sorted({ev.artifact_id for ev in outputs})
    artifacts = store.get_artifacts_by_id(output_ids) if output_ids else []
    artifact_types = {t.id: t.name for t in store.get_artifact_types()}
    execution_types = {e.id: type_names.get(e.type_id, "") for e in executions}
    producer = {ev.artifact_id: execution_types.get(ev.execution_id, "") for ev in outputs}
    latest: dict[str, object] = {}
    # ExampleGen's raw examples and SchemaGen's / ImportSchemaGen's schema (Transform also outputs Examples
    # and a Schema: its transformed examples and post-transform schema).
    raw: dict[str, object] = {}
    for artifact in sorted(artifacts, key=lambda a: a.id):
        if artifact.state == metadata_store_pb2.Artifact.LIVE:
            type_name = artifact_types.get(artifact.type_id, "")
            latest[type_name] = artifact
            made_by = producer.get(artifact.id, "").rsplit(".", 1)[-1]
            if (
                (type_name == "Examples" and "ExampleGen" in made_by)
                or (type_name == "Schema" and "SchemaGen" in made_by)
                # Transform also outputs ExampleAnomalies (post-transform); the data check is the validator's.
                or (type_name == "ExampleAnomalies" and "ExampleValidator" in made_by)
            ):
                raw[type_name] = artifact

    report: dict = {"run_id": run.name, "failed": failed}
    if (anomalies := raw.get("ExampleAnomalies", latest.get("ExampleAnomalies"))) is not None:
        found = read_anomalies(anomalies.uri)
        if found and "Examples" in raw and "Schema" in raw:
            try:
                found = count_anomalous_rows(found, raw["Examples"].uri, raw["Schema"].uri)
            except Exception as e:  # noqa: BLE001 - the anomalies are reported without row counts
                logging.getLogger(__name__).warning("could not count the anomalous rows: %s", e)
        report.update(anomalies_uri=anomalies.uri, anomalies=found)
    if (blessing := latest.get("ModelBlessing")) is not None:
        report.update(blessing_uri=blessing.uri, blessed=_blessing(blessing.uri, blessing.custom_properties))
    if (infra := latest.get("InfraBlessing")) is not None:
        props = infra.custom_properties
        blessed = props["blessed"].int_value == 1 if "blessed" in props else None
        report.update(infra_blessed=blessed, infra_reason=props["reason"].string_value if "reason" in props else "")
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
