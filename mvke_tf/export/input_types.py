"""The types a SavedModel's ``examples`` inputs parse each raw column as, and the typing rule for clients.

A model exported by the pipeline parses raw ``tf.Example`` with the raw schema, so a column the training
files held as integers (an age, an occupation code) must arrive as ``int64``, one held as a ``|``-joined
CSV cell as one string; a library export parses every id as a string and every number as a float. The
export records what it parses in ``assets.extra/input_types.json`` (TF Serving ignores the file), e.g.::

    {"age": {"dtype": "int64"}, "genres": {"dtype": "string", "joined": "|"}}

and :func:`retype_examples` rewrites a client's examples to those types by the typing rule of
:mod:`mvke_tf.data.table`: an id may come as an integer or a string (``25`` and ``"25"`` are the same
id), a number as an integer or a float, a list joined or not. ``mvke-tf tag-users`` applies it to every
user, so CSV or TFRecord users of either typing score against a model of either typing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mvke_tf.config import MULTI_VALUED, NUMERIC, FeatureConfig
from mvke_tf.data.table import id_text

INPUT_TYPES_PATH = "assets.extra/input_types.json"
_KINDS = {"string": "bytes_list", "int64": "int64_list", "float32": "float_list"}


def library_input_types(feature_config: FeatureConfig) -> dict[str, dict[str, str]]:
    """What :class:`~mvke_tf.export.saved_model.RawInputs` parses: ids as strings, numbers as floats."""
    return {
        f.name: {"dtype": "float32" if f.kind == NUMERIC else "string"}
        for f in (*feature_config.user_fields, feature_config.tag_field)
    }


def spec_input_types(raw_spec: Mapping[str, Any], feature_config: FeatureConfig) -> dict[str, dict[str, str]]:
    """The types of a raw feature spec (a pipeline's raw schema); a multi-valued field the spec holds as one
    string per row (a CSV cell) is marked ``joined`` with the field's separator."""
    types = {}
    for name, spec in raw_spec.items():
        entry = {"dtype": spec.dtype.name}
        single = isinstance(spec, tf.io.FixedLenFeature) and list(spec.shape) in ([], [1])
        if name in feature_config.feature_names:
            field = feature_config.field(name)
            if field.kind == MULTI_VALUED and single and spec.dtype == tf.string:
                entry["joined"] = field.separator
        types[name] = entry
    return types


def write_input_types(export_dir: str | os.PathLike, types: Mapping[str, Mapping[str, str]]) -> str:
    path = os.path.join(str(export_dir), INPUT_TYPES_PATH)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(dict(types), indent=1, sort_keys=True) + "\n")
    return path


def read_input_types(model_dir: str | os.PathLike) -> dict[str, dict[str, str]] | None:
    """The export's input types, or None for an export that predates the file."""
    path = os.path.join(str(model_dir), INPUT_TYPES_PATH)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def _convert(values: Sequence[Any], dtype: str, name: str) -> list[Any]:
    if dtype == "string":
        return [id_text(v).encode("utf-8") for v in values]
    out = []
    for v in values:
        text = id_text(v)
        try:
            out.append(float(text) if dtype == "float32" else int(text))
        except ValueError:
            want = "a number" if dtype == "float32" else "an integer id"
            raise ValueError(
                f"column {name}: {text!r} is not {want}, as the model's training data held it; fix: send {want}"
            ) from None
    return out


def retype_example(example: tf.train.Example, types: Mapping[str, Mapping[str, str]]) -> bool:
    """Rewrites ``example``'s columns in place to ``types``; returns whether anything changed."""
    changed = False
    features = example.features.feature
    for name, want in types.items():
        if name not in features:
            continue
        feature = features[name]
        have = feature.WhichOneof("kind")
        if have is None:
            continue
        values = list(getattr(feature, have).value)
        joined = want.get("joined")
        if have == _KINDS[want["dtype"]] and not (joined and len(values) > 1):
            continue
        if joined:
            values = [joined.join(id_text(v) for v in values)]
        values = _convert(values, want["dtype"], name)
        feature.Clear()
        getattr(feature, _KINDS[want["dtype"]]).value.extend(values)
        changed = True
    return changed


def retype_examples(serialized: Sequence[bytes], types: Mapping[str, Mapping[str, str]] | None) -> list[bytes]:
    """Serialized examples with every column the model reads in the model's type (see the module docstring)."""
    if not types:
        return list(serialized)
    out = []
    for record in serialized:
        example = tf.train.Example.FromString(record)
        out.append(example.SerializeToString() if retype_example(example, types) else record)
    return out


__all__ = [
    "INPUT_TYPES_PATH",
    "library_input_types",
    "read_input_types",
    "retype_example",
    "retype_examples",
    "spec_input_types",
    "write_input_types",
]
