"""A curated data schema, kept in the repository, for ImportSchemaGen (``python -m pipelines run --schema``).

SchemaGen infers a schema from each run's data, including things that hold for that sample only:
string domains of ids, tags and behaviour lists, a fixed shape for numeric columns that happened to
have no missing value, ... :func:`curate_schema` keeps what the data must satisfy and drops the rest:

* labels are ``INT`` with a ``bool_domain`` (0/1) and present in every row;
* the tag field, the user id and every user field are required (present in every row); categorical
  and id columns hold exactly one string per row; multi-valued columns (behaviour lists, tags) hold
  at least one string and no fixed shape, so one schema fits both input formats: a ``|``-joined
  string per CSV cell, a list of strings per ``tf.train.Example`` (``mvke-tf data synth --format tfrecord``);
* numeric fields keep their inferred type (``FLOAT`` for the generator) and may be missing (an empty CSV cell);
* string domains only for closed vocabularies (by default the synthetic generator's small basic
  attributes such as ``gender``), with their full value list; none for ids, tags or behaviour lists.

::

  python -m pipelines.schema --data-root data/ --out pipelines/schemas/synthetic.pbtxt
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tensorflow_metadata.proto.v0 import schema_pb2

from mvke_tf.config import MULTI_VALUED, NUMERIC, FeatureConfig
from mvke_tf.data import synthetic

# The synthetic generator's basic attributes with a small, fixed vocabulary (the same for every seed and
# size): "<first 3 letters of the name><index>", e.g. gen0..gen2.
SYNTHETIC_VOCABULARIES: dict[str, tuple[str, ...]] = {
    name: tuple(f"{name[:3]}{i}" for i in range(n)) for name, n in synthetic.BASIC_FIELDS.items() if n <= 10
}
CHECKED_IN = Path(__file__).with_name("schemas") / "synthetic.pbtxt"
MULTIDOMAIN_CHECKED_IN = Path(__file__).with_name("schemas") / "multidomain.pbtxt"

_HEADER = """\
# Curated schema of the synthetic generator's columns (mvke_tf.data.synthetic), for ImportSchemaGen:
#   python -m pipelines run --schema pipelines/schemas/synthetic.pbtxt ...
# Produced by pipelines/schema.py (infer the schema with TFDV, then curate_schema) from the generator's
# default config with 20,000 rows:
#   python -m mvke_tf data synth --rows 20000 --out DIR   (every other generator setting at its default)
#   python -m pipelines.schema --data-root DIR --out pipelines/schemas/synthetic.pbtxt
# tests/pipelines/test_schema.py checks that it equals the curated schema of freshly generated data.
"""


def _require(feature: schema_pb2.Feature, single: bool = True) -> None:
    feature.presence.min_fraction = 1.0
    feature.presence.min_count = 1
    if single:
        feature.ClearField("value_count")
        feature.shape.Clear()
        feature.shape.dim.add().size = 1


def curate_schema(
    inferred: schema_pb2.Schema,
    features: FeatureConfig,
    closed_vocabularies: Mapping[str, Sequence[str]] | Sequence[str] = SYNTHETIC_VOCABULARIES,
) -> schema_pb2.Schema:
    """The curated schema of an inferred one (see the module docstring).

    Args:
      inferred: a schema inferred by TFDV / SchemaGen.
      features: the feature config (labels, tag field, user id, user fields).
      closed_vocabularies: fields whose string domain is kept. A mapping gives each field's complete
        value list (replacing the inferred values, which may miss rare values of a small sample); a
        sequence of names keeps the inferred values.

    Returns:
      A new schema; features and string domains sorted by name, so the text form is stable.
    """
    vocab = dict(closed_vocabularies) if isinstance(closed_vocabularies, Mapping) else {}
    closed = set(closed_vocabularies)
    numeric = {f.name for f in features.user_fields if f.kind == NUMERIC}
    required = {features.user_id, features.tag_field.name} | {f.name for f in features.user_fields} - numeric
    lists = {f.name for f in (*features.user_fields, features.tag_field) if f.kind == MULTI_VALUED}
    inferred_domains = {d.name: d for d in inferred.string_domain}

    schema = schema_pb2.Schema()
    schema.CopyFrom(inferred)
    del schema.feature[:]
    del schema.string_domain[:]
    domains: dict[str, schema_pb2.StringDomain] = {}
    for source in sorted(inferred.feature, key=lambda f: f.name):
        feature = schema.feature.add()
        feature.CopyFrom(source)
        name = feature.name
        feature.ClearField("domain_info")  # domain, string_domain, int_domain, bool_domain, ...
        if name in features.labels:
            feature.type = schema_pb2.INT
            feature.bool_domain.SetInParent()
            _require(feature)
        elif name in numeric:
            # Empty cells (missing values): any count of rows may lack a value, so no shape / value_count.
            # The inferred type is kept: TFDV flags INT data against a FLOAT schema ("Unexpected data type"),
            # so forcing FLOAT would reject an all-integer column (the generator writes floats: "3.0").
            feature.ClearField("value_count")
            feature.ClearField("shape")
            feature.presence.Clear()
            feature.presence.min_count = 1
        elif name in lists:
            _require(feature, single=False)
            feature.ClearField("shape")
            feature.value_count.Clear()
            feature.value_count.min = 1
        elif name in required:
            _require(feature, single=feature.type == schema_pb2.BYTES)
        if name in closed and feature.type == schema_pb2.BYTES:
            values = vocab.get(name)
            if values is None:
                if source.HasField("string_domain"):
                    values = source.string_domain.value
                elif source.HasField("domain") and source.domain in inferred_domains:
                    values = inferred_domains[source.domain].value
            if values:
                feature.domain = name
                domains[name] = schema_pb2.StringDomain(name=name, value=sorted(set(values)))
    schema.string_domain.extend(domains[n] for n in sorted(domains))
    return schema


def infer_curated_schema(
    csv: str | os.PathLike,
    features: FeatureConfig,
    closed_vocabularies: Mapping[str, Sequence[str]] | Sequence[str] = SYNTHETIC_VOCABULARIES,
) -> schema_pb2.Schema:
    """Infers the schema of CSV data with TFDV and curates it.

    Args:
      csv: a data directory (its ``*/part-*.csv`` and ``*.csv`` files) or a file pattern.
    """
    import tensorflow_data_validation as tfdv

    path = Path(csv)
    if path.is_dir():
        pattern = str(path / "*" / "part-*.csv") if list(path.glob("*/part-*.csv")) else str(path / "*.csv")
    else:
        pattern = str(csv)
    stats = tfdv.generate_statistics_from_csv(pattern)
    return curate_schema(tfdv.infer_schema(stats), features, closed_vocabularies)


def write_schema(schema: schema_pb2.Schema, path: str | os.PathLike, header: str = "") -> None:
    """Writes ``schema`` as a text proto (with ``header``, ``#`` comment lines, on top)."""
    from google.protobuf import text_format

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(header + text_format.MessageToString(schema))


def load_schema(path: str | os.PathLike) -> schema_pb2.Schema:
    """Reads a text-proto schema (comments allowed)."""
    from google.protobuf import text_format

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no schema at {path}; fix: write one with python -m pipelines.schema")
    return text_format.Parse(Path(path).read_text(), schema_pb2.Schema())


def with_domain(schema: schema_pb2.Schema, name: str, domains: int) -> schema_pb2.Schema:
    """``schema`` plus a required integer domain id in ``[0, domains)``: a row of another domain is an
    anomaly, so bad data stops before training instead of failing the model's range check."""
    out = schema_pb2.Schema()
    out.CopyFrom(schema)
    feature = out.feature.add(name=name, type=schema_pb2.INT)
    feature.int_domain.min, feature.int_domain.max = 0, domains - 1
    _require(feature)
    return out


MULTIDOMAIN_HEADER = """\
# Curated schema of the multi-domain synthetic data (mvke-tf data synth --multidomain: the synthetic
# generator's columns plus an int64 'domain' id in 0..2, three domains by default), for ImportSchemaGen.
# It is pipelines/schemas/synthetic.pbtxt plus the domain feature (pipelines/schema.py, with_domain);
# tests/pipelines/test_schema.py checks that. A model with more domains needs a larger int_domain max.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.schema", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, help="CSV data directory (e.g. the synthetic generator's)")
    parser.add_argument("--out", required=True, help="schema.pbtxt to write")
    parser.add_argument(
        "--features-yaml", default="", help="feature config (default: <data-root>/features.yaml, else synthetic)"
    )
    args = parser.parse_args(argv)
    yaml = Path(args.features_yaml or Path(args.data_root) / "features.yaml")
    features = FeatureConfig.from_yaml(yaml) if yaml.is_file() else synthetic.feature_config()
    schema = infer_curated_schema(args.data_root, features)
    write_schema(schema, args.out, _HEADER)
    print(f"wrote the curated schema of {args.data_root} ({len(schema.feature)} features) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
