"""The synthetic generator's curated schema, kept in the repository, for ImportSchemaGen
(``python -m mvke_tf.pipelines run --schema``).

:func:`mvke_tf.data.schema.curate_schema` keeps what the data must satisfy (labels 0/1, required fields,
lists of at least one value, ...); here it also closes the generator's small vocabularies (``gender``,
...) with their full value lists. A team's own data gets its schema from ``mvke-tf data describe``.

::

  python -m mvke_tf.pipelines.schema --data-root data/ --out pipelines/schemas/synthetic.pbtxt
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tensorflow_metadata.proto.v0 import schema_pb2

from mvke_tf.config import FeatureConfig
from mvke_tf.data import schema as data_schema
from mvke_tf.data import synthetic
from mvke_tf.data.schema import make_required, write_schema

# The synthetic generator's basic attributes with a small, fixed vocabulary (the same for every seed and
# size): "<first 3 letters of the name><index>", e.g. gen0..gen2.
SYNTHETIC_VOCABULARIES: dict[str, tuple[str, ...]] = {
    name: tuple(f"{name[:3]}{i}" for i in range(n)) for name, n in synthetic.BASIC_FIELDS.items() if n <= 10
}
CHECKED_IN = Path(__file__).with_name("schemas") / "synthetic.pbtxt"
MULTIDOMAIN_CHECKED_IN = Path(__file__).with_name("schemas") / "multidomain.pbtxt"

_HEADER = """\
# Curated schema of the synthetic generator's columns (mvke_tf.data.synthetic), for ImportSchemaGen:
#   python -m mvke_tf.pipelines run --schema pipelines/schemas/synthetic.pbtxt ...
# Produced by pipelines/schema.py (infer the schema with TFDV, then curate_schema) from the generator's
# default config with 20,000 rows:
#   python -m mvke_tf data synth --rows 20000 --out DIR   (every other generator setting at its default)
#   python -m mvke_tf.pipelines.schema --data-root DIR --out pipelines/schemas/synthetic.pbtxt
# tests/pipelines/test_schema.py checks that it equals the curated schema of freshly generated data.
"""


def curate_schema(
    inferred: schema_pb2.Schema,
    features: FeatureConfig,
    closed_vocabularies: Mapping[str, Sequence[str]] | Sequence[str] = SYNTHETIC_VOCABULARIES,
) -> schema_pb2.Schema:
    """:func:`mvke_tf.data.schema.curate_schema`, closing the synthetic generator's small vocabularies by default."""
    return data_schema.curate_schema(inferred, features, closed_vocabularies)


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


def load_schema(path: str | os.PathLike) -> schema_pb2.Schema:
    """Reads a text-proto schema (comments allowed)."""
    from google.protobuf import text_format

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no schema at {path}; fix: write one with python -m mvke_tf.pipelines.schema")
    return text_format.Parse(Path(path).read_text(), schema_pb2.Schema())


def with_domain(schema: schema_pb2.Schema, name: str, domains: int) -> schema_pb2.Schema:
    """``schema`` plus a required integer domain id in ``[0, domains)``: a row of another domain is an
    anomaly, so bad data stops before training instead of failing the model's range check."""
    out = schema_pb2.Schema()
    out.CopyFrom(schema)
    feature = out.feature.add(name=name, type=schema_pb2.INT)
    feature.int_domain.min, feature.int_domain.max = 0, domains - 1
    make_required(feature)
    return out


MULTIDOMAIN_HEADER = """\
# Curated schema of the multi-domain synthetic data (mvke-tf data synth --multidomain: the synthetic
# generator's columns plus an int64 'domain' id in 0..2, three domains by default), for ImportSchemaGen.
# It is pipelines/schemas/synthetic.pbtxt plus the domain feature (pipelines/schema.py, with_domain);
# tests/pipelines/test_schema.py checks that. A model with more domains needs a larger int_domain max.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvke_tf.pipelines.schema", description=__doc__.split("\n\n")[0])
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
