"""The curated data schema of a feature config: what a team's data must satisfy, and nothing that holds
for one sample only.

A schema inferred by TFDV (or written by ``mvke-tf data describe``) says what one run's data looked like,
string domains of ids and tags, fixed shapes of numeric columns that happened to have no missing value.
:func:`curate_schema` keeps what the data must satisfy and drops the rest:

* labels are ``INT`` with a ``bool_domain`` (0/1) and present in every row;
* the tag field, the user id and every user field are required (present in every row); categorical
  and id columns hold exactly one value per row; multi-valued columns (behaviour lists, tags) hold
  at least one value and no fixed shape, so one schema fits a ``|``-joined string per CSV cell and a
  list per ``tf.train.Example``;
* numeric fields keep their type in the files and may be missing (an empty CSV cell);
* string domains only for closed vocabularies named by the caller, with their full value list.

ImportSchemaGen reads it (``mvke-tf pipeline run --schema``), so each run's data is validated against it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tensorflow_metadata.proto.v0 import schema_pb2

from mvke_tf.config import MULTI_VALUED, NUMERIC, FeatureConfig


def make_required(feature: schema_pb2.Feature, single: bool = True) -> None:
    feature.presence.min_fraction = 1.0
    feature.presence.min_count = 1
    if single:
        feature.ClearField("value_count")
        feature.shape.Clear()
        feature.shape.dim.add().size = 1


def curate_schema(
    inferred: schema_pb2.Schema,
    features: FeatureConfig,
    closed_vocabularies: Mapping[str, Sequence[str]] | Sequence[str] = (),
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
            make_required(feature)
        elif name in numeric:
            # Empty cells (missing values): any count of rows may lack a value, so no shape / value_count.
            # The inferred type is kept: TFDV flags INT data against a FLOAT schema ("Unexpected data type"),
            # so forcing FLOAT would reject an all-integer column (the generator writes floats: "3.0").
            feature.ClearField("value_count")
            feature.ClearField("shape")
            feature.presence.Clear()
            feature.presence.min_count = 1
        elif name in lists:
            make_required(feature, single=False)
            feature.ClearField("shape")
            feature.value_count.Clear()
            feature.value_count.min = 1
        elif name in required:
            make_required(feature, single=feature.type == schema_pb2.BYTES)
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


def write_schema(schema: schema_pb2.Schema, path: str | os.PathLike, header: str = "") -> None:
    """Writes ``schema`` as a text proto (with ``header``, ``#`` comment lines, on top)."""
    from google.protobuf import text_format

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(header + text_format.MessageToString(schema))
