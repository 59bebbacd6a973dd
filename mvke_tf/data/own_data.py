"""A team's own table in the pipeline's layout: describe it (``mvke-tf data describe``), check it against its
feature config, convert it to typed gzipped ``tf.Example`` files (``mvke-tf data convert``).

The jobs behind the commands, as functions that return what they print, so notebooks and tests use them
without the command line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mvke_tf.config import CATEGORICAL, MULTI_VALUED, NUMERIC, ConfigError, FeatureConfig, FieldSpec
from mvke_tf.data import describe as D
from mvke_tf.data.schema import write_schema
from mvke_tf.data.table import Rows, check_rows, expand, id_text, read_chunks, read_sample, split_values

FEATURES_FILE = "features.yaml"
SCHEMA_FILE = "schema.pbtxt"
PROFILE_FILE = "profile.json"
DEFAULT_SAMPLE_ROWS = 20_000


def sample(files: Sequence[str], max_rows: int = DEFAULT_SAMPLE_ROWS) -> list[Rows]:
    """The first rows of each file, ``max_rows`` in all, shared out evenly (at least 1,000 per file)."""
    per_file = max(1_000, max_rows // max(1, len(files)))
    out, total = [], 0
    for path in files:
        if total >= max_rows:
            break
        rows = read_sample(path, min(per_file, max_rows - total))
        out.append(rows)
        total += rows.num_rows
    return out


def describe_data(
    data: str | Sequence[str],
    out_dir: str | os.PathLike,
    *,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    overwrite: bool = False,
    **roles: Any,
) -> list[str]:
    """Profiles a sample of ``data`` (files, globs or directories) and writes ``features.yaml``, ``schema.pbtxt``
    and ``profile.json`` to ``out_dir``; returns the report's lines.

    A ``features.yaml`` already there is the user's: it is kept (``overwrite`` replaces it and the schema),
    the sample is checked against it and where the data now suggests otherwise it is said. A
    ``profile.json`` already there is the last run's: what changed since is listed.

    Args:
      roles: :func:`mvke_tf.data.describe.describe`'s ``labels``, ``user_id``, ``tag_field``,
        ``categorical``, ``numeric``, ``drop``, ``separator``, ``max_categorical_ints``.
    """
    files = expand(data)
    samples = sample(files, sample_rows)
    formats = {r.format for r in samples}
    if len(formats) > 1:
        raise ConfigError(f"{data}: the files mix formats {sorted(formats)}; fix: describe one format at a time")
    separator = roles.get("separator", "|")
    profiles = D.profile_rows(samples, separator)
    description = D.describe(profiles, **roles)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"described {sum(r.num_rows for r in samples):,} rows of {len(samples)} of {len(files)} file(s):", ""]
    lines += D.summary_table(description)
    lines.append("")
    for role, value in description.guessed.items():
        shown = ", ".join(value) if isinstance(value, list) else (value or "(none)")
        flag = {"labels": "--labels", "user_id": "--user-id", "tag_field": "--tag-field"}[role]
        lines.append(f"{role}: {shown} (guessed; {flag} to choose)")
    previous = out / PROFILE_FILE
    if previous.is_file():
        before = {n: D.ColumnProfile.from_dict(p) for n, p in json.loads(previous.read_text())["columns"].items()}
        changed = D.changes(before, description.profiles)
        lines.append(
            f"changed since the last describe ({previous}):" if changed else "no change since the last describe"
        )
        lines += [f"  {c}" for c in changed]
    features_path, schema_path = out / FEATURES_FILE, out / SCHEMA_FILE
    if features_path.is_file() and not overwrite:
        kept = FeatureConfig.from_yaml(features_path)
        lines.append(f"kept {features_path} (yours; --overwrite replaces it and {SCHEMA_FILE})")
        lines += [f"  the data now suggests {d}" for d in config_differences(kept, description.features)]
        problems = [p for rows in samples for p in check_rows(rows, kept)]
        lines += [f"  problem: {p}" for p in problems]
    else:
        write_features(description.features, features_path)
        write_schema(D.schema_for(description, samples[0].format), schema_path, _schema_header(files))
        lines.append(f"wrote {features_path} and {schema_path}: check the table, edit features.yaml where it is wrong")
    record = {"files": files[: len(samples)], "columns": {n: p.to_dict() for n, p in description.profiles.items()}}
    previous.write_text(json.dumps(record, indent=1) + "\n")
    return lines


FEATURES_HEADER = """\
# The data's fields, written by `mvke-tf data describe` from a sample (check them; edit what is wrong):
#   kind: categorical (one id per row, integer or string), multi_valued (a list of ids, `separator`-joined in
#   CSV), numeric (a number, bucketized by `boundaries`); hash_buckets: embedding rows (a few times the ids).
#   labels: the 0/1 task columns, in task order (the model's tasks); user_id: the user column ('' for none).
"""


def write_features(features: FeatureConfig, path: str | os.PathLike) -> None:
    """``features`` as YAML, each field with only the keys its kind uses, under a header that explains them."""
    import yaml

    keys = {
        CATEGORICAL: ("name", "kind", "hash_buckets"),
        MULTI_VALUED: ("name", "kind", "hash_buckets", "max_values", "separator", "hierarchy_separator"),
        NUMERIC: ("name", "kind", "boundaries"),
    }

    def field(spec: FieldSpec) -> dict[str, Any]:
        d = spec.to_dict()
        out = {k: d[k] for k in keys[spec.kind] if k in ("name", "kind") or d[k] != FIELD_DEFAULTS[k]}
        if spec.group:
            out["group"] = spec.group
        return out

    d = {
        "user_fields": [field(f) for f in features.user_fields],
        "tag_field": field(features.tag_field),
        "labels": list(features.labels),
        "user_id": features.user_id,
    }
    Path(path).write_text(FEATURES_HEADER + yaml.safe_dump(d, sort_keys=False, default_flow_style=None))


FIELD_DEFAULTS = {
    "hash_buckets": None,
    "boundaries": None,
    "max_values": 1,
    "separator": "|",
    "hierarchy_separator": "",
}


def _schema_header(files: Sequence[str]) -> str:
    return (
        "# Curated schema written by `mvke-tf data describe` from a sample of the data: every column, labels 0/1,\n"
        "# the features.yaml fields required. Give it to `mvke-tf pipeline run --schema` (found by default next to\n"
        "# features.yaml in --data-root); edit it when the data's contract changes.\n"
    )


def config_differences(kept: FeatureConfig, suggested: FeatureConfig) -> list[str]:
    """Where ``suggested`` (from today's data) differs from ``kept`` in what matters: fields, kinds, sizes."""
    out = []
    old = {f.name: f for f in (*kept.user_fields, kept.tag_field)}
    new = {f.name: f for f in (*suggested.user_fields, suggested.tag_field)}
    for name, f in new.items():
        if name not in old:
            out.append(f"a new field {name} ({f.kind})")
        elif f.kind != old[name].kind:
            out.append(f"field {name}: kind {f.kind} (features.yaml: {old[name].kind})")
        elif f.kind != NUMERIC and f.hash_buckets > 2 * old[name].hash_buckets:
            out.append(f"field {name}: {f.hash_buckets} hash buckets (features.yaml: {old[name].hash_buckets})")
    out += [f"no field {name} (the data lacks it)" for name in old if name not in new]
    return out


def check_files(
    features: FeatureConfig, patterns: Sequence[str], rows_per_file: int = 2_000, max_files: int = 2
) -> list[str]:
    """The typing rule (:func:`mvke_tf.data.table.check_rows`) on the first rows of the first files of each
    pattern: one line per problem (empty: the data reads as features.yaml says)."""
    problems = []
    for pattern in patterns:
        try:
            files = expand(pattern)
        except FileNotFoundError as e:
            problems.append(str(e))
            continue
        for path in files[:max_files]:
            problems += check_rows(read_sample(path, rows_per_file), features)
    return problems


# ----------------------------------------------------------------------------- convert
def _column_kinds(features: FeatureConfig, columns: Sequence[str]) -> dict[str, str]:
    """How each column is written: a feature by its kind (ids as strings, numbers as floats), a label as int."""
    kinds = {}
    for c in columns:
        if c in features.labels:
            kinds[c] = "int"
        elif c in features.feature_names:
            kinds[c] = "float" if features.field(c).kind == NUMERIC else "string"
        elif c == features.user_id:
            kinds[c] = "string"
        else:
            kinds[c] = ""  # as it is in the file
    return kinds


def _column_array(values: Sequence[Any], kind: str, separator: str | None):
    """One column as an Arrow ``list<...>`` array (a row's values; ``None`` where missing) of the ``kind`` it is
    written as: ``string`` (ids, text), ``float``, ``int``, or ``""``: as the file holds it (integers if every
    value is one, else numbers, else strings)."""
    import pyarrow as pa

    rows = [split_values(v, separator) if separator else ([] if v is None else v if isinstance(v, list) else [v])
            for v in values]  # fmt: skip
    if not kind:
        flat = [x for r in rows for x in r]
        kind = "string" if any(isinstance(x, str) for x in flat) else "float" if any(
            isinstance(x, float) for x in flat) else "int"  # fmt: skip
    if kind == "string":
        rows = [[id_text(x).encode("utf-8") for x in r] for r in rows]
        item = pa.binary()
    else:
        rows = [[float(x) if kind == "float" else int(x) for x in r] for r in rows]
        item = pa.float32() if kind == "float" else pa.int64()
    return pa.array([r or None for r in rows], type=pa.list_(item))


def _examples(rows: Rows, features: FeatureConfig, kinds: dict[str, str]) -> list[bytes]:
    """``rows`` as serialized ``tf.Example``: each column typed by ``kinds`` (see :func:`_column_array`), a
    multi-valued field split into its values, a missing value left out as ExampleGen leaves an empty cell out.
    tfx_bsl's encoder writes the protos in C++ (a per-row Python loop took 0.4 ms a row)."""
    import pyarrow as pa
    from tfx_bsl.coders import example_coder

    lists = {f.name: f.separator for f in (*features.user_fields, features.tag_field) if f.kind == MULTI_VALUED}
    arrays = [_column_array(rows.values[c], kinds[c], lists.get(c)) for c in rows.columns]
    batch = pa.RecordBatch.from_arrays(arrays, names=list(rows.columns))
    return list(example_coder.RecordBatchToExamplesEncoder().encode(batch))


def raw_examples(rows: Rows, features: FeatureConfig) -> list[bytes]:
    """``rows`` as serialized ``tf.Example`` with every value of the type the file holds it as (what ExampleGen
    writes from the file: an integer cell as ``int64``), lists split; e.g. requests to a pipeline's model."""
    return list(_examples(rows, features, {c: "" for c in rows.columns}))


def convert(
    data_root: str | os.PathLike,
    out_root: str | os.PathLike,
    features: FeatureConfig,
    patterns: Sequence[str] = ("*/*",),
    rows_per_chunk: int = 10_000,
    progress: Any = None,
) -> list[str]:
    """Rewrites the data files under ``data_root`` as typed gzipped ``tf.Example`` files under ``out_root``, the
    same relative paths with ``.tfrecord.gz`` for the file's extension, so ``pipeline run --input-format
    tfrecord`` copies them instead of parsing them (docs/benchmarks.md). Every value is checked by the typing
    rule first: a categorical or multi-valued field is written as strings (``25`` as ``"25"``), a numeric one
    as floats, a label as an integer; other columns as they are. Returns the files written.

    ``features.yaml`` and the schema of the typed files are written to ``out_root`` too.
    """
    root = Path(data_root)
    files = []
    for p in patterns:
        files += expand(str(root / p))
    files = sorted(dict.fromkeys(files))
    import tensorflow as tf

    written = []
    for path in files:
        relative = os.path.relpath(path, root)
        stem = relative
        for ext in (".csv.gz", ".csv", ".parquet", ".pq", ".tfrecord.gz", ".tfrecord"):
            if stem.endswith(ext):
                stem = stem[: -len(ext)]
                break
        target = Path(out_root) / f"{stem}.tfrecord.gz"
        if target.resolve() == Path(path).resolve():
            raise ConfigError(f"{path}: would be overwritten by its conversion; fix: give --out another directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        rows_written = 0
        with tf.io.TFRecordWriter(str(tmp), options="GZIP") as writer:
            for rows in read_chunks(path, rows_per_chunk):
                problems = check_rows(rows, features)
                if problems:
                    writer.close()
                    tmp.unlink(missing_ok=True)
                    raise ConfigError(problems[0])
                kinds = _column_kinds(features, rows.columns)
                for record in _examples(rows, features, kinds):
                    writer.write(record)
                rows_written += rows.num_rows
        os.replace(tmp, target)
        written.append(str(target))
        if progress:
            progress(f"{path} -> {target} ({rows_written:,} rows)")
    write_features(features, Path(out_root) / FEATURES_FILE)
    typed = D.Description(features, D.profile_rows(sample(written)), {})
    write_schema(D.schema_for(typed, "tfrecord"), Path(out_root) / SCHEMA_FILE, _schema_header(written))
    return written


__all__ = [
    "check_files",
    "config_differences",
    "convert",
    "describe_data",
    "raw_examples",
    "sample",
    "write_features",
]
