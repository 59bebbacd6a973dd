"""Request ``TensorProto`` -> tensor conversion: the limits one request may ask for, validation against the
signature before anything is allocated, and the ``INVALID_ARGUMENT`` / ``RESOURCE_EXHAUSTED`` text naming
the input and the problem. (Responses go the other way with ``tf.make_tensor_proto``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tensorflow as tf
from mvke_tf.serving.servables import Signature
from mvke_tf.serving.status import echo_names, exhausted, invalid, one_line
from tensorflow.core.framework import tensor_pb2, types_pb2

# gRPC's message size limit both ways (ModelServer's max_message_bytes); request limits derive from it.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Input bytes one request may expand to (RequestLimits.max_request_bytes): as much as the largest message.
DEFAULT_MAX_REQUEST_BYTES = DEFAULT_MAX_MESSAGE_BYTES
# Rows one request may declare. Large enough for any batch a client sends on purpose (the benchmarks use
# 256; TF Serving's batching rejects more than its max_batch_size), small enough that a malformed or
# hostile request cannot occupy the server for seconds.
DEFAULT_MAX_BATCH_SIZE = 8192


def _shape_str(shape: tf.TensorShape) -> str:
    if shape.rank is None:
        return "?"
    return "[" + ",".join("?" if d is None else str(d) for d in shape.as_list()) + "]"


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the server (``INVALID_ARGUMENT`` beyond).

    ``max_batch_size``: rows an input may declare (its dimension 0); ``None``: no cap.
    ``max_splat_elements``: elements a tensor written as one value repeated over its shape (TF's compact
    form, what ``tf.make_tensor_proto(scalar, shape=...)`` writes) may declare; a few bytes of request
    must not make the server allocate gigabytes.
    ``max_request_bytes``: bytes the request's input tensors may take once expanded (every input together,
    a string counted by its length); more is ``RESOURCE_EXHAUSTED``, decided from the ``TensorProto``s
    before anything is expanded. A count of elements alone does not bound memory: one 64 KB string
    repeated over ``[8192]`` is 512 MB.
    """

    max_batch_size: int | None = None
    max_splat_elements: int = DEFAULT_MAX_MESSAGE_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES


_COMPLEX = (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128)
# The TensorProto field each dtype's values go in (TensorFlow's tensor.proto); values in any other typed
# field are a malformed request, which TensorFlow would read as an empty or padded tensor.
_VALUE_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_STRING: "string_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_BFLOAT16: "half_val",
    types_pb2.DT_COMPLEX64: "scomplex_val",
    types_pb2.DT_COMPLEX128: "dcomplex_val",
}


def _value_count(proto: tensor_pb2.TensorProto) -> int:
    """Number of elements the typed ``*_val`` fields of ``proto`` hold (complex: two numbers each)."""
    n = sum(len(v) for f, v in proto.ListFields() if f.name.endswith("_val"))
    return n // 2 if proto.dtype in _COMPLEX else n


def expanded_bytes(proto: tensor_pb2.TensorProto) -> int:
    """Bytes ``proto``'s values take once expanded to its declared shape, read from the proto alone: every
    element's size, a string's its length (a single value repeated over the shape counts once per element)."""
    elements = 1
    for d in proto.tensor_shape.dim:
        elements *= max(int(d.size), 0)
    if proto.dtype == types_pb2.DT_STRING:
        values = proto.string_val
        if len(values) == 1:
            return elements * len(values[0])
        return sum(len(v) for v in values)
    try:
        size = tf.dtypes.as_dtype(proto.dtype).size
    except TypeError:  # an unknown or invalid dtype: rejected by tensor_from_proto
        size = 1
    return elements * size


def tensor_from_proto(
    sig: Signature, name: str, proto: tensor_pb2.TensorProto, limits: RequestLimits = RequestLimits()
) -> tf.Tensor:
    """One request ``TensorProto`` as a tensor of ``sig.inputs[name]``'s dtype, validated before anything is
    allocated: a known dtype and shape that match the signature, no dimension below 0, at most
    ``limits.max_batch_size`` rows, and values that fill the declared shape. Raises ``INVALID_ARGUMENT``
    naming the input and the problem."""
    where = f"input {name!r} of signature {sig.name!r}"
    spec = sig.inputs[name]
    if proto.dtype == types_pb2.DT_INVALID:
        raise invalid(f"{where}: expects dtype {spec.dtype.name}, got DT_INVALID (TensorProto.dtype is not set)")
    if proto.dtype not in types_pb2.DataType.values():
        raise invalid(f"{where}: expects dtype {spec.dtype.name}, got unknown DataType enum value {proto.dtype}")
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:  # a DataType TensorFlow has no Python dtype for
        dtype_name = types_pb2.DataType.Name(proto.dtype)
        raise invalid(f"{where}: expects dtype {spec.dtype.name}, got {dtype_name}") from None
    if dtype != spec.dtype:
        raise invalid(f"{where}: expects dtype {spec.dtype.name}, got {dtype.name}")
    if proto.tensor_shape.unknown_rank:
        raise invalid(f"{where}: tensor_shape.unknown_rank is set; a request tensor needs its full shape")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise invalid(f"{where}: tensor_shape {dims} has a negative dimension; sizes must be >= 0")
    shape = tf.TensorShape(dims)
    if not spec.shape.is_compatible_with(shape):
        raise invalid(f"{where}: expects shape {_shape_str(spec.shape)}, got {_shape_str(shape)}")
    if dims and limits.max_batch_size is not None and dims[0] > limits.max_batch_size:
        raise invalid(
            f"{where}: batch size {dims[0]} exceeds the server's max_batch_size {limits.max_batch_size}; "
            f"send at most {limits.max_batch_size} rows per request (ServingClient(max_batch=...)) "
            "or start the server with a larger --max_batch_size"
        )
    # Python ints: a product of huge dimensions does not overflow, it just fails the checks below.
    elements = 1
    for d in dims:
        elements *= d
    if proto.tensor_content:
        if dtype == tf.string:
            raise invalid(f"{where}: DT_STRING values go in string_val, not tensor_content")
        if len(proto.tensor_content) != elements * dtype.size:
            raise invalid(
                f"{where}: tensor_content holds {len(proto.tensor_content)} bytes, shape {_shape_str(shape)} "
                f"of {dtype.name} needs {elements * dtype.size}"
            )
    else:
        field = _VALUE_FIELD.get(proto.dtype)
        misplaced = sorted(f.name for f, v in proto.ListFields() if f.name.endswith("_val") and f.name != field)
        if misplaced:
            raise invalid(
                f"{where}: a {types_pb2.DataType.Name(proto.dtype)} tensor holds its values in {field}, not in "
                f"{', '.join(misplaced)}; fix: send the values in {field} (tf.make_tensor_proto does)"
            )
        # TF would pad missing values (zeros / empty strings, or the last value repeated): a request of
        # a few bytes declaring [100000] would cost a full batch. Only two layouts are accepted: every
        # value, or a single one repeated (TF's compact form), the latter bounded.
        n = _value_count(proto)
        if n == 1 and elements > limits.max_splat_elements:
            raise invalid(
                f"{where}: one value repeated over shape {_shape_str(shape)} ({elements} elements) exceeds "
                f"the server's limit of {limits.max_splat_elements}; send every value"
            )
        if n not in (elements, 1) or (n == 1 and elements == 0):
            raise invalid(
                f"{where}: shape {_shape_str(shape)} declares {elements} elements but the TensorProto holds "
                f"{n} values; send every value (tf.make_tensor_proto(array) does)"
            )
    try:
        array = tf.make_ndarray(proto)
    except Exception as e:  # noqa: BLE001 - malformed TensorProto content
        raise invalid(f"{where}: malformed TensorProto: {one_line(str(e))}") from None
    return tf.constant(array, dtype=spec.dtype)


def tensors_from_request(
    sig: Signature, inputs: Mapping[str, Any], limits: RequestLimits = RequestLimits()
) -> dict[str, tf.Tensor]:
    """Validates the request's ``TensorProto`` inputs against ``sig`` and converts them (``INVALID_ARGUMENT``
    on any mismatch; see :func:`tensor_from_proto`)."""
    expected, given = set(sig.inputs), set(inputs)
    if given != expected:
        missing, extra = sorted(expected - given), sorted(given - expected)
        parts = []
        if missing:
            parts.append(f"missing inputs {missing}")
        if extra:
            parts.append(f"unknown inputs {echo_names(extra)}")
        raise invalid(
            f"input names do not match signature {sig.name!r}: {'; '.join(parts)} (expected {sorted(expected)})"
        )
    total = sum(expanded_bytes(proto) for proto in inputs.values())
    if total > limits.max_request_bytes:
        raise exhausted(
            f"the request's inputs to signature {sig.name!r} expand to {total} bytes, over the server's "
            f"max_request_bytes {limits.max_request_bytes}; fix: send fewer or smaller values per request "
            "(ServingClient(max_batch=...)), or start the server with a larger --max_request_bytes"
        )
    return {name: tensor_from_proto(sig, name, proto, limits) for name, proto in inputs.items()}
