"""Inspecting an exported SavedModel: its signatures (as ``saved_model_cli show``) and its ops."""

from __future__ import annotations

import os
from collections.abc import Iterable

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

# Ops that call back into Python: a SavedModel holding one cannot be served by TF Serving.
PY_FUNC_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


def _read_saved_model(export_dir: str | os.PathLike) -> saved_model_pb2.SavedModel:
    with tf.io.gfile.GFile(os.path.join(os.fspath(export_dir), "saved_model.pb"), "rb") as f:
        return saved_model_pb2.SavedModel.FromString(f.read())


def _shape(shape) -> str:
    if shape.unknown_rank:
        return "unknown_rank"
    return "(" + ", ".join(str(d.size) for d in shape.dim) + ")"


def _tensors(kind: str, tensors) -> list[str]:
    lines = [f"  The given SavedModel SignatureDef contains the following {kind}(s):"]
    for key in sorted(tensors):
        info = tensors[key]
        lines += [
            f"    {kind}s['{key}'] tensor_info:",
            f"        dtype: {_dtype_name(info.dtype)}",
            f"        shape: {_shape(info.tensor_shape)}",
            f"        name: {info.name}",
        ]
    return lines


def _dtype_name(enum: int) -> str:
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(enum)


def describe_signatures(export_dir: str | os.PathLike, signatures: Iterable[str] | None = None) -> str:
    """The signatures' inputs and outputs, formatted like ``saved_model_cli show --all``.

    Args:
      export_dir: the SavedModel directory.
      signatures: which signatures (default: all except ``__saved_model_init_op``), in this order.
    """
    meta = _read_saved_model(export_dir).meta_graphs[0]
    defs = meta.signature_def
    names = list(signatures) if signatures is not None else sorted(n for n in defs if not n.startswith("__"))
    lines = [f"MetaGraphDef with tag-set: '{', '.join(meta.meta_info_def.tags)}' contains the following SignatureDefs:"]
    for name in names:
        sig = defs[name]
        lines += ["", f"signature_def['{name}']:"]
        lines += _tensors("input", sig.inputs)
        lines += _tensors("output", sig.outputs)
        lines.append(f"  Method name is: {sig.method_name}")
    return "\n".join(lines) + "\n"


def saved_model_ops(export_dir: str | os.PathLike) -> set[str]:
    """Every op type in the SavedModel: the main graph and every function in its library."""
    ops: set[str] = set()
    for meta in _read_saved_model(export_dir).meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    return ops


def non_standard_ops(export_dir: str | os.PathLike) -> set[str]:
    """Ops TF Serving could not run: not registered in core TensorFlow, or calling back into Python.

    Function calls to the SavedModel's own functions (``__inference_...``) are not ops and are skipped.
    """
    meta = _read_saved_model(export_dir).meta_graphs
    functions = {fn.signature.name for m in meta for fn in m.graph_def.library.function}
    bad = set()
    for op in saved_model_ops(export_dir) - functions:
        if op in PY_FUNC_OPS or op_def_registry.get(op) is None:
            bad.add(op)
    return bad
