"""A loaded SavedModel version: its callable signatures and the SignatureDefs its metadata reports.

A :class:`LoadedVersion` is what a request runs on; :class:`~mvke_tf.serving.registry.ServedModel` decides which
one is current.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2


@dataclass(frozen=True)
class Signature:
    """One callable signature: its function and input / output specs (from the function itself)."""

    name: str
    fn: Any  # a ConcreteFunction of the loaded SavedModel
    inputs: Mapping[str, tf.TensorSpec]
    outputs: tuple[str, ...]

    @classmethod
    def from_function(cls, name: str, fn: Any) -> Signature:
        args, kwargs = fn.structured_input_signature
        specs = dict(kwargs)
        for spec in args:  # signatures take keyword arguments; positional ones are keyed by their name
            specs[spec.name] = spec
        out = fn.structured_outputs
        outputs = tuple(out) if isinstance(out, Mapping) else ("output_0",)
        return cls(name, fn, specs, outputs)


@dataclass
class LoadedVersion:
    """A loaded SavedModel version. Kept alive by in-flight requests after it is unloaded."""

    model: str
    version: int
    path: Path
    obj: Any = field(repr=False)
    signatures: dict[str, Signature] = field(repr=False)
    signature_defs: dict[str, meta_graph_pb2.SignatureDef] = field(repr=False)

    @classmethod
    def load(cls, model: str, version: int, path: Path) -> LoadedVersion:
        obj = tf.saved_model.load(str(path))
        signatures = {n: Signature.from_function(n, f) for n, f in obj.signatures.items()}
        return cls(model, version, path, obj, signatures, read_signature_defs(path))


def read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The ``serve`` MetaGraph's SignatureDefs, as TF Serving reports them in model metadata."""
    sm = saved_model_pb2.SavedModel()
    pb, pbtxt = path / "saved_model.pb", path / "saved_model.pbtxt"
    if pb.exists():
        sm.ParseFromString(pb.read_bytes())
    else:
        text_format.Parse(pbtxt.read_text(), sm)
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags:
            return dict(mg.signature_def)
    return dict(sm.meta_graphs[0].signature_def) if sm.meta_graphs else {}
