"""A small gRPC model server speaking TF Serving's protocol (``tensorflow_serving.apis``).

It implements the parts of ``tensorflow_model_server`` this project uses, with the same protos,
the same version layout and the same error codes, so :class:`serving.client.ServingClient` (or any
TF Serving client) works against either:

* ``PredictionService.Predict`` for every signature of the SavedModel (``model_spec.signature_name``,
  empty means ``serving_default``), inputs and outputs as ``TensorProto``; ``output_filter`` honoured.
* ``PredictionService.GetModelMetadata`` with ``metadata_field: "signature_def"``: the response's
  ``metadata["signature_def"]`` packs a ``SignatureDefMap`` read from the SavedModel's MetaGraph.
* ``ModelService.GetModelStatus``: ``ModelVersionStatus`` per version (``AVAILABLE`` / ``END``).
* ``Classify``, ``Regress``, ``MultiInference`` and ``HandleReloadConfigRequest`` answer ``UNIMPLEMENTED``.
* TLS from TF Serving's ``--ssl_config_file`` (a text-proto ``SSLConfig``), mutual with ``client_verify``.

Models come from TF Serving's layout: ``<base_path>/<version>/saved_model.pb`` with numeric
versions (what the TFX Pusher writes). Version policy: latest only (TF Serving's default). A poller
checks the base paths every ``poll_seconds``; a new version is loaded once its files stop changing
between two polls, then swapped in atomically and the old one unloaded (requests in flight finish
on the version they started with). A version that fails to load is retried ``load_retries`` times,
then reported as ``END`` with the error while the previous version keeps serving. Before a version
is reported ``AVAILABLE`` its warm-up requests (``assets.extra/tf_serving_warmup_requests``, the
file TF Serving replays with ``--enable_model_warmup``) are run; a failing one fails the load.

Errors (as TF Serving): unknown model or version -> ``NOT_FOUND``; unknown signature or version label, missing
or extra input, wrong or unknown dtype, wrong or negative shape, more rows than ``max_batch_size``, fewer
values than the shape declares, malformed tensor or content (e.g. bytes that are not a ``tf.Example``),
unknown output filter -> ``INVALID_ARGUMENT``, with a one-line message; a failure while running the
signature -> ``INTERNAL``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow's first import (see mvke_tf._env)

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format  # noqa: E402
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

log = logging.getLogger("serving.server")

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8500
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Input bytes one request may expand to (RequestLimits.max_request_bytes): as much as the largest message.
DEFAULT_MAX_REQUEST_BYTES = DEFAULT_MAX_MESSAGE_BYTES
# Rows one request may declare. Large enough for any batch a client sends on purpose (the benchmarks use
# 256; TF Serving's batching rejects more than its max_batch_size), small enough that a malformed or
# hostile request cannot occupy the server for seconds.
DEFAULT_MAX_BATCH_SIZE = 8192
WARMUP_PATH = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
_VERSION_DIR = re.compile(r"^\d+$")
_State = get_model_status_pb2.ModelVersionStatus.State


class ServingStatusError(Exception):
    """An error with the gRPC status code the RPC answers with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        # One printable line of bounded length, whatever a client put in the names it echoes: a status
        # over gRPC's metadata limit never reaches the client, and a newline would forge a log record.
        message = _one_line(message, _MAX_STATUS_CHARS)
        super().__init__(message)
        self.code = code
        self.message = message


def _echo(value: Any, limit: int = 64) -> str:
    """A client-supplied name as an error message or a log line quotes it: escaped, at most ``limit`` chars."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return "'" + (text if len(text) <= limit else text[: limit - 3] + "...") + "'"


def _echo_names(names: Iterable[Any], most: int = 8) -> str:
    """Client-supplied names (e.g. input keys), each :func:`_echo`'d, the first ``most`` of them."""
    names = list(names)
    shown = ", ".join(_echo(n) for n in names[:most])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > most else ''}]"


def _not_found(message: str) -> ServingStatusError:
    return ServingStatusError(grpc.StatusCode.NOT_FOUND, message)


def _invalid(message: str) -> ServingStatusError:
    return ServingStatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _exhausted(message: str) -> ServingStatusError:
    return ServingStatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


# --------------------------------------------------------------------------------------------------
# Loaded models
# --------------------------------------------------------------------------------------------------


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


def list_versions(base_path: Path) -> list[int]:
    """Numeric version subdirectories holding a SavedModel, ascending."""
    if not base_path.is_dir():
        return []
    out = []
    for d in base_path.iterdir():
        has_model = (d / "saved_model.pb").exists() or (d / "saved_model.pbtxt").exists()
        if _VERSION_DIR.match(d.name) and d.is_dir() and has_model:
            out.append(int(d.name))
    return sorted(out)


def _snapshot(path: Path) -> tuple:
    """(relative path, size, mtime) of every file under ``path``: unchanged across polls = fully written."""
    items = []
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            items.append((str(p.relative_to(path)), st.st_size, st.st_mtime_ns))
    return tuple(sorted(items))


class ServedModel:
    """One model name: its base path, the loaded (latest) version and every version's status."""

    def __init__(self, name: str, base_path: str | Path, load_retries: int = 5, warmup: bool = True) -> None:
        self.name = name
        self.warmup = warmup
        self.base_path = Path(base_path)
        self.load_retries = load_retries
        self._lock = threading.Lock()
        self._current: LoadedVersion | None = None
        self._status: dict[int, get_model_status_pb2.ModelVersionStatus] = {}
        self._pending: dict[int, tuple] = {}  # version -> snapshot seen at the previous poll
        self._failures: dict[int, tuple[tuple, int]] = {}  # version -> (snapshot, attempts)

    # -- reading (request threads) -----------------------------------------------------------------

    @property
    def current(self) -> LoadedVersion | None:
        return self._current

    def resolve(self, spec: Any) -> LoadedVersion:
        """The loaded version a ``ModelSpec`` asks for, or ``NOT_FOUND``."""
        current = self._current
        which = spec.WhichOneof("version_choice")
        if which == "version":
            v = spec.version.value
            if current is None or current.version != v:
                loaded = f"loaded: {current.version}" if current else "none loaded"
                raise _not_found(f"Servable not found for request: Specific({self.name}, {v}) ({loaded})")
            return current
        if which == "version_label":  # no labels are configured (TF Serving: INVALID_ARGUMENT as well)
            label = _echo(spec.version_label)[1:-1]
            raise _invalid(f"Unrecognized servable version label: {label} (model {self.name})")
        if current is None:
            raise _not_found(f"Servable not found for request: Latest({self.name}): no version loaded yet")
        return current

    def statuses(self) -> list[get_model_status_pb2.ModelVersionStatus]:
        with self._lock:
            return [self._status[v] for v in sorted(self._status, reverse=True)]

    # -- loading (poller thread) -------------------------------------------------------------------

    def _set_status(self, version: int, state: int, error: str = "") -> None:
        st = get_model_status_pb2.ModelVersionStatus(version=version, state=state)
        if error:
            st.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
            st.status.error_message = error
        with self._lock:
            self._status[version] = st

    def poll(self, wait_for_stable: bool = True) -> None:
        """Loads the newest version if it differs from the loaded one (and its files are complete)."""
        versions = list_versions(self.base_path)
        current = self._current
        if not versions:
            if current is not None:
                msg = "model %s: no versions under %s; keeping version %d"
                log.warning(msg, self.name, self.base_path, current.version)
            return
        # Newest version that has not failed for good (with unchanged files).
        target = None
        for v in reversed(versions):
            snap = _snapshot(self.base_path / str(v))
            failed = self._failures.get(v)
            if failed and failed[0] == snap and failed[1] > self.load_retries:
                continue
            target = (v, snap)
            break
        if target is None or (current is not None and current.version == target[0]):
            self._pending.clear()
            return
        v, snap = target
        if wait_for_stable and self._pending.get(v) != snap:
            self._pending = {v: snap}  # load on the next poll if nothing changed in between
            return
        self._pending.clear()
        self._load(v, snap)

    def _load(self, version: int, snap: tuple) -> None:
        path = self.base_path / str(version)
        log.info("model %s: loading version %d from %s", self.name, version, path)
        self._set_status(version, _State.LOADING)
        t0 = time.monotonic()
        try:
            loaded = LoadedVersion.load(self.name, version, path)
            if self.warmup and (n := warm_up(loaded)):
                log.info("model %s: version %d warmed up with %d requests", self.name, version, n)
        except Exception as e:  # noqa: BLE001 - any load failure keeps the old version serving
            prev_snap, attempts = self._failures.get(version, (snap, 0))
            attempts = attempts + 1 if prev_snap == snap else 1
            self._failures[version] = (snap, attempts)
            final = attempts > self.load_retries
            log.error(
                "model %s: loading version %d failed (attempt %d of %d): %s",
                self.name,
                version,
                attempts,
                self.load_retries + 1,
                e,
            )
            self._set_status(version, _State.END if final else _State.START, f"Failed to load: {e}")
            return
        self._failures.pop(version, None)
        with self._lock:
            old, self._current = self._current, loaded
        self._set_status(version, _State.AVAILABLE)
        log.info(
            "model %s: version %d AVAILABLE in %.1fs, signatures %s",
            self.name,
            version,
            time.monotonic() - t0,
            sorted(loaded.signatures),
        )
        if old is not None:
            self._set_status(old.version, _State.END)
            log.info("model %s: version %d unloaded", self.name, old.version)

    def unload(self) -> None:
        with self._lock:
            old, self._current = self._current, None
        if old is not None:
            self._set_status(old.version, _State.END)


class ModelRegistry:
    """The served models by name, and the poller thread that keeps them on their newest version."""

    def __init__(
        self,
        models: Mapping[str, str | Path],
        poll_seconds: float = 1.0,
        load_retries: int = 5,
        warmup: bool = True,
    ) -> None:
        if not models:
            raise ValueError("no models to serve: pass at least one name=base_path")
        self.models = {name: ServedModel(name, path, load_retries, warmup) for name, path in models.items()}
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            raise _not_found(
                f"Servable not found for request: Latest({_echo(name)[1:-1]}): model {_echo(name)} is not served "
                f"(served: {sorted(self.models)})"
            ) from None

    def resolve(self, spec: Any) -> LoadedVersion:
        if not spec.name:
            raise _invalid("model_spec.name is required")
        return self.get(spec.name).resolve(spec)

    def load_initial(self) -> None:
        """Loads each model's newest version now (no stability wait); logs models with none."""
        for m in self.models.values():
            m.poll(wait_for_stable=False)
            if m.current is None:
                log.warning("model %s: no loadable version under %s yet; polling", m.name, m.base_path)

    def poll_once(self) -> None:
        for m in self.models.values():
            try:
                m.poll()
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("model %s: poll failed", m.name)

    def start_polling(self) -> None:
        if self.poll_seconds <= 0 or self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(self.poll_seconds):
                self.poll_once()

        self._thread = threading.Thread(target=run, name="model-version-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


# --------------------------------------------------------------------------------------------------
# Request handling
# --------------------------------------------------------------------------------------------------


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
        raise _invalid(f"{where}: expects dtype {spec.dtype.name}, got DT_INVALID (TensorProto.dtype is not set)")
    if proto.dtype not in types_pb2.DataType.values():
        raise _invalid(f"{where}: expects dtype {spec.dtype.name}, got unknown DataType enum value {proto.dtype}")
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:  # a DataType TensorFlow has no Python dtype for
        dtype_name = types_pb2.DataType.Name(proto.dtype)
        raise _invalid(f"{where}: expects dtype {spec.dtype.name}, got {dtype_name}") from None
    if dtype != spec.dtype:
        raise _invalid(f"{where}: expects dtype {spec.dtype.name}, got {dtype.name}")
    if proto.tensor_shape.unknown_rank:
        raise _invalid(f"{where}: tensor_shape.unknown_rank is set; a request tensor needs its full shape")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise _invalid(f"{where}: tensor_shape {dims} has a negative dimension; sizes must be >= 0")
    shape = tf.TensorShape(dims)
    if not spec.shape.is_compatible_with(shape):
        raise _invalid(f"{where}: expects shape {_shape_str(spec.shape)}, got {_shape_str(shape)}")
    if dims and limits.max_batch_size is not None and dims[0] > limits.max_batch_size:
        raise _invalid(
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
            raise _invalid(f"{where}: DT_STRING values go in string_val, not tensor_content")
        if len(proto.tensor_content) != elements * dtype.size:
            raise _invalid(
                f"{where}: tensor_content holds {len(proto.tensor_content)} bytes, shape {_shape_str(shape)} "
                f"of {dtype.name} needs {elements * dtype.size}"
            )
    else:
        field = _VALUE_FIELD.get(proto.dtype)
        misplaced = sorted(f.name for f, v in proto.ListFields() if f.name.endswith("_val") and f.name != field)
        if misplaced:
            raise _invalid(
                f"{where}: a {types_pb2.DataType.Name(proto.dtype)} tensor holds its values in {field}, not in "
                f"{', '.join(misplaced)}; fix: send the values in {field} (tf.make_tensor_proto does)"
            )
        # TF would pad missing values (zeros / empty strings, or the last value repeated): a request of
        # a few bytes declaring [100000] would cost a full batch. Only two layouts are accepted: every
        # value, or a single one repeated (TF's compact form), the latter bounded.
        n = _value_count(proto)
        if n == 1 and elements > limits.max_splat_elements:
            raise _invalid(
                f"{where}: one value repeated over shape {_shape_str(shape)} ({elements} elements) exceeds "
                f"the server's limit of {limits.max_splat_elements}; send every value"
            )
        if n not in (elements, 1) or (n == 1 and elements == 0):
            raise _invalid(
                f"{where}: shape {_shape_str(shape)} declares {elements} elements but the TensorProto holds "
                f"{n} values; send every value (tf.make_tensor_proto(array) does)"
            )
    try:
        array = tf.make_ndarray(proto)
    except Exception as e:  # noqa: BLE001 - malformed TensorProto content
        raise _invalid(f"{where}: malformed TensorProto: {_one_line(str(e))}") from None
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
            parts.append(f"unknown inputs {_echo_names(extra)}")
        raise _invalid(
            f"input names do not match signature {sig.name!r}: {'; '.join(parts)} (expected {sorted(expected)})"
        )
    total = sum(expanded_bytes(proto) for proto in inputs.values())
    if total > limits.max_request_bytes:
        raise _exhausted(
            f"the request's inputs to signature {sig.name!r} expand to {total} bytes, over the server's "
            f"max_request_bytes {limits.max_request_bytes}; fix: send fewer or smaller values per request "
            "(ServingClient(max_batch=...)), or start the server with a larger --max_request_bytes"
        )
    return {name: tensor_from_proto(sig, name, proto, limits) for name, proto in inputs.items()}


# TensorFlow's error text around the op's message: graph / function names and the (always unavailable,
# for a loaded SavedModel) node stack trace. None of it helps a client.
_TF_NOISE = re.compile(
    r"Graph execution error:"
    r"|Detected at node \S+ defined at \(most recent call last\):"
    r"|<stack traces unavailable>"
    r"|\{\{function_node [^}]*\}\}"
    r"|\[\[\{\{(?:function_)?node [^\]]*\]\]"
    r"|\[Op:[^\]]*\]"
)
_MAX_MESSAGE_CHARS = 300
# A whole status message: well under gRPC's 8 KB metadata limit, and one readable log line.
_MAX_STATUS_CHARS = 1000


def _one_line(message: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    """``message`` without TF's noise, control characters escaped, on one line, at most ``limit`` chars.

    Op errors quote the offending input (e.g. a whole serialized ``tf.Example``); unescaped, its bytes
    would split one log record into many lines and carry arbitrary bytes into the gRPC status.
    """
    text = _TF_NOISE.sub(" ", message).strip()
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    text = re.sub(r" {2,}", " ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unparsable_example(sig: Signature, tensors: Mapping[str, tf.Tensor]) -> str:
    """Which string input row is not a serialized ``tf.Example`` (``""`` if none is found)."""
    from google.protobuf.message import DecodeError

    for name, t in tensors.items():
        if t.dtype != tf.string or t.shape.rank != 1:
            continue
        rows = t.numpy()
        for i, row in enumerate(rows):
            try:
                tf.train.Example.FromString(row)
            except DecodeError:
                return f"input {name!r} row {i} (of {len(rows)}) is not a serialized tf.Example"
    return ""


def _bad_request_message(sig: Signature, tensors: Mapping[str, tf.Tensor], message: str) -> str:
    """The one-line ``INVALID_ARGUMENT`` text for an op error caused by the request's content."""
    if "Could not parse example input" in message:
        fix = "send tf.train.Example(...).SerializeToString() bytes"
        row = _unparsable_example(sig, tensors)
        if row:  # the client has the bytes; TF's quote of them (up to a NUL, unescaped) adds nothing
            return f"signature {sig.name!r}: {row} (Could not parse example input); {fix}"
        return f"signature {sig.name!r}: {_one_line(message, 160)}; {fix}"
    return f"signature {sig.name!r}: {_one_line(message)}"


def predict(
    loaded: LoadedVersion, request: predict_pb2.PredictRequest, limits: RequestLimits = RequestLimits()
) -> predict_pb2.PredictResponse:
    """Runs one ``PredictRequest`` on ``loaded`` (raises :class:`ServingStatusError`)."""
    sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    sig = loaded.signatures.get(sig_name)
    if sig is None:
        raise _invalid(
            f"Serving signature name: {_echo(sig_name)} not found in signature def "
            f"(model {loaded.model} version {loaded.version} has {sorted(loaded.signatures)})"
        )
    wanted = list(request.output_filter) or list(sig.outputs)
    repeated = sorted({name for name in wanted if wanted.count(name) > 1})
    if repeated:  # as TF Serving answers it
        raise _invalid(f"duplicate output tensor alias {_echo(repeated[0])} in output_filter")
    unknown = sorted(set(wanted) - set(sig.outputs))
    if unknown:
        raise _invalid(
            f"output_filter {_echo_names(unknown)} not in signature {sig_name!r} outputs {list(sig.outputs)}"
        )
    tensors = tensors_from_request(sig, request.inputs, limits)
    try:
        result = sig.fn(**tensors)
    except tf.errors.InvalidArgumentError as e:
        raise _invalid(_bad_request_message(sig, tensors, e.message)) from None
    except UnicodeDecodeError as e:
        # TensorFlow could not turn the op's error into a Python exception: its message quotes bytes of
        # the request that are not UTF-8 (e.g. an unparsable tf.Example). The request is at fault.
        raw = e.object if isinstance(e.object, bytes) else str(e).encode()
        raise _invalid(_bad_request_message(sig, tensors, raw.decode("utf-8", "backslashreplace"))) from None
    except Exception as e:  # noqa: BLE001
        log.exception("Predict %s/%d/%s failed", loaded.model, loaded.version, sig_name)
        raise ServingStatusError(
            grpc.StatusCode.INTERNAL, f"signature {sig_name!r} failed: {_one_line(str(e))}"
        ) from None
    if not isinstance(result, Mapping):
        result = {"output_0": result}
    response = predict_pb2.PredictResponse()
    response.model_spec.name = loaded.model
    response.model_spec.version.value = loaded.version
    response.model_spec.signature_name = sig_name
    for name in wanted:
        response.outputs[name].CopyFrom(tf.make_tensor_proto(result[name].numpy()))
    return response


def warm_up(loaded: LoadedVersion, limit: int = MAX_WARMUP_RECORDS) -> int:
    """Replays ``assets.extra/tf_serving_warmup_requests`` (``PredictionLog`` records), as TF Serving does.

    Only ``predict_log`` records are run (others are skipped); a failing request fails the load.
    Returns the number of requests run.
    """
    path = loaded.path / WARMUP_PATH
    if not path.exists():
        return 0
    n = 0
    for i, record in enumerate(tf.data.TFRecordDataset(str(path)).take(limit)):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if entry.WhichOneof("log_type") != "predict_log":
            continue
        try:
            predict(loaded, entry.predict_log.request)
        except ServingStatusError as e:
            raise RuntimeError(f"warm-up request {i} in {path} failed: {e.code.name}: {e.message}") from None
        n += 1
    return n


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: ModelRegistry, limits: RequestLimits = RequestLimits()) -> None:
        self.registry = registry
        self.limits = limits

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        t0 = time.monotonic()
        try:
            response = predict(self.registry.resolve(request.model_spec), request, self.limits)
        except ServingStatusError as e:
            # One line per rejected request: a client's bad input is not the server's error.
            log.info("Predict %s: %s %s", _echo(request.model_spec.name), e.code.name, e.message)
            context.abort(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - a bug here must answer INTERNAL, not grpc's bare UNKNOWN
            log.exception("Predict %s: unexpected failure", _echo(request.model_spec.name))
            context.abort(grpc.StatusCode.INTERNAL, f"Predict failed: {_one_line(str(e))}")
        spec = response.model_spec
        log.debug(
            "Predict %s/%d/%s in %.1f ms",
            spec.name,
            spec.version.value,
            spec.signature_name,
            1e3 * (time.monotonic() - t0),
        )
        return response

    # TF Serving's other inference methods: UNIMPLEMENTED with a one-line log record, not the stub's
    # NotImplementedError, which gRPC logs with a traceback for every such call.
    def _unimplemented(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        message = f"{method} is not implemented by this server; fix: call Predict (the signatures are Predict's)"
        log.info("%s: UNIMPLEMENTED", method)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._unimplemented("Classify", request, context)

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._unimplemented("Regress", request, context)

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._unimplemented("MultiInference", request, context)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            loaded = self.registry.resolve(request.model_spec)
            fields = list(request.metadata_field)
            if not fields:
                raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
            unsupported = [f for f in fields if f != "signature_def"]
            if unsupported:
                raise _invalid(f"Metadata field {unsupported[0]} is not supported (supported: signature_def)")
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = loaded.model
            response.model_spec.version.value = loaded.version
            sigmap = get_model_metadata_pb2.SignatureDefMap()
            for name, sd in loaded.signature_defs.items():
                sigmap.signature_def[name].CopyFrom(sd)
            response.metadata["signature_def"].Pack(sigmap)
        except ServingStatusError as e:
            log.info("GetModelMetadata %s: %s %s", _echo(request.model_spec.name), e.code.name, e.message)
            context.abort(e.code, e.message)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            spec = request.model_spec
            if not spec.name:
                raise _invalid("model_spec.name is required")
            model = self.registry.get(spec.name)
            statuses = model.statuses()
            if spec.HasField("version"):
                statuses = [s for s in statuses if s.version == spec.version.value]
                if not statuses:
                    raise _not_found(
                        f"Could not find version {spec.version.value} of model {_echo(spec.name)[1:-1]} "
                        f"(known: {[s.version for s in model.statuses()]})"
                    )
            elif spec.version_label:
                raise _invalid(
                    f"Unrecognized servable version label: {_echo(spec.version_label)[1:-1]} "
                    f"(model {_echo(spec.name)[1:-1]})"
                )
            elif not statuses:
                raise _not_found(f"Could not find any versions of model {_echo(spec.name)[1:-1]}")
        except ServingStatusError as e:
            log.info("GetModelStatus %s: %s %s", _echo(request.model_spec.name), e.code.name, e.message)
            context.abort(e.code, e.message)
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=statuses)


# --------------------------------------------------------------------------------------------------
# TLS: TF Serving's --ssl_config_file
# --------------------------------------------------------------------------------------------------


def _ssl_config_class() -> type:
    """``tensorflow.serving.SSLConfig`` (``tensorflow_serving/config/ssl_config.proto``).

    ``tensorflow-serving-api`` does not ship ``ssl_config_pb2``, so the message is defined here with the
    same package, name, fields and numbers (in a private descriptor pool, so a later ``ssl_config_pb2``
    in the default pool cannot clash), and the same text files parse as with ``tensorflow_model_server``.
    """
    try:
        from tensorflow_serving.config import ssl_config_pb2  # type: ignore[attr-defined]

        return ssl_config_pb2.SSLConfig
    except ImportError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/ssl_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    msg = fdp.message_type.add(name="SSLConfig")
    f = descriptor_pb2.FieldDescriptorProto
    for number, (name, ftype) in enumerate(
        [("server_key", f.TYPE_STRING), ("server_cert", f.TYPE_STRING), ("custom_ca", f.TYPE_STRING)]
        + [("client_verify", f.TYPE_BOOL)],
        start=1,
    ):
        msg.field.add(name=name, number=number, type=ftype, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    desc = pool.FindMessageTypeByName("tensorflow.serving.SSLConfig")
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.21
    return get_class(desc) if get_class else message_factory.MessageFactory(pool).GetPrototype(desc)


SSLConfig = _ssl_config_class()
"""``SSLConfig(server_key=PEM, server_cert=PEM, custom_ca=PEM, client_verify=bool)``: the fields hold the
PEM text itself, not file paths (as ``tensorflow_model_server`` reads them)."""


def _as_text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def ssl_config_text(
    server_key: str | bytes, server_cert: str | bytes, custom_ca: str | bytes = "", client_verify: bool = False
) -> str:
    """The text-proto ``SSLConfig`` for ``--ssl_config_file`` from PEM contents (what TF Serving reads too)."""
    config = SSLConfig(
        server_key=_as_text(server_key),
        server_cert=_as_text(server_cert),
        custom_ca=_as_text(custom_ca),
        client_verify=client_verify,
    )
    return text_format.MessageToString(config)


def check_ssl_config(config: Any, source: str = "ssl config") -> Any:
    """Raises ``ValueError`` naming the field and the fix if ``config`` cannot make server credentials."""
    for name, what in (("server_key", "private key"), ("server_cert", "certificate chain")):
        value = getattr(config, name)
        if not value:
            raise ValueError(f"{source}: {name} is empty; it must hold the server's PEM {what}")
        if "-----BEGIN" not in value:
            raise ValueError(
                f"{source}: {name} is not PEM text (starts {value[:40]!r}); put the file's contents in the field, "
                "not its path (TF Serving reads the fields as PEM)"
            )
    if config.custom_ca and "-----BEGIN" not in config.custom_ca:
        raise ValueError(
            f"{source}: custom_ca is not PEM text (starts {config.custom_ca[:40]!r}); put the CA's PEM in it"
        )
    if config.client_verify and not config.custom_ca:
        # TF Serving would fall back to the system roots; gRPC's Python server needs the CA explicitly.
        raise ValueError(
            f"{source}: client_verify: true needs custom_ca, the PEM of the CA that signs client certificates"
        )
    return config


def load_ssl_config(path: str | Path) -> Any:
    """Parses and checks TF Serving's ``--ssl_config_file`` (a text-proto ``SSLConfig``)."""
    text = Path(path).read_text()
    try:
        config = text_format.Parse(text, SSLConfig())
    except text_format.ParseError as e:
        raise ValueError(
            f"{path}: not a text-proto SSLConfig (fields server_key, server_cert, custom_ca, client_verify): {e}"
        ) from None
    return check_ssl_config(config, str(path))


def server_credentials(config: Any) -> grpc.ServerCredentials:
    """gRPC server credentials from an ``SSLConfig``: the key and certificate chain, and with
    ``client_verify`` a client certificate signed by ``custom_ca`` required (mutual TLS)."""
    check_ssl_config(config)
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=config.client_verify,
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


# --------------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------------


class ModelServer:
    """The gRPC server: models from ``{name: base_path}``, bound to ``host:port`` (port 0: a free one).

    ``start()`` loads each model's newest version, then starts serving and polling; ``stop(grace)``
    stops accepting requests, lets the in-flight ones finish for up to ``grace`` seconds, stops the
    poller. ``serve()`` does both around SIGTERM / SIGINT.

    ``ssl_config``: an :data:`SSLConfig` (see :func:`load_ssl_config`) serves over TLS (mutual TLS with
    ``client_verify``); without it the port is plaintext, and binding a non-loopback ``host`` logs a
    warning. ``max_batch_size``: rows a request may declare per input (``None``: no cap).
    """

    def __init__(
        self,
        models: Mapping[str, str | Path],
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        poll_seconds: float = 1.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_workers: int = 8,
        load_retries: int = 5,
        warmup: bool = True,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
        ssl_config: Any | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (or None for no cap), got {max_batch_size}")
        if max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {max_request_bytes}")
        self.registry = ModelRegistry(models, poll_seconds=poll_seconds, load_retries=load_retries, warmup=warmup)
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.max_message_bytes = max_message_bytes
        self.max_workers = max_workers
        self.limits = RequestLimits(
            max_batch_size=max_batch_size, max_splat_elements=max_message_bytes, max_request_bytes=max_request_bytes
        )
        self.ssl_config = check_ssl_config(ssl_config) if ssl_config is not None else None
        self._server: grpc.Server | None = None
        self._stopped = threading.Event()

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> ModelServer:
        self.registry.load_initial()
        options = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.max_workers), options=options)
        servicer = PredictionServicer(self.registry, self.limits)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.registry), server)
        host = f"[{self.host}]" if ":" in self.host else self.host
        address = f"{host}:{self.requested_port}"
        if self.ssl_config is not None:
            port = server.add_secure_port(address, server_credentials(self.ssl_config))
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"could not bind {address}")
        server.start()
        self._server, self.port = server, port
        self.registry.start_polling()
        if self.ssl_config is None and not is_loopback(self.host):
            log.warning(
                "serving on %s without TLS: any host that reaches it can call the models and read the traffic; "
                "pass --ssl_config_file (TF Serving's SSLConfig; client_verify: true for client certificates) "
                "or bind 127.0.0.1",
                self.target,
            )
        tls = "none" if self.ssl_config is None else "mutual" if self.ssl_config.client_verify else "server"
        models = {n: str(m.base_path) for n, m in self.registry.models.items()}
        log.info("serving %s on %s (TLS: %s)", models, self.target, tls)
        return self

    def stop(self, grace: float | None = 5.0) -> None:
        """Graceful shutdown: new RPCs are refused, in-flight ones get ``grace`` seconds."""
        if self._server is not None and not self._stopped.is_set():
            log.info("shutting down (grace %ss)", grace)
            self._server.stop(grace).wait()
            self.registry.stop()
            for m in self.registry.models.values():
                m.unload()
            self._stopped.set()
            log.info("server stopped")

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve(self, grace: float = 5.0, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Starts, blocks until SIGTERM / SIGINT, then stops gracefully (main thread only)."""
        self.start()

        def handler(signum: int, _frame: Any) -> None:
            log.info("received %s", signal.Signals(signum).name)
            threading.Thread(target=self.stop, args=(grace,), name="graceful-stop").start()

        for s in signals:
            signal.signal(s, handler)
        while not self.wait(1.0):
            pass
