"""A typed gRPC client for TF Serving's ``PredictionService`` / ``ModelService``.

Works against ``mvke_tf.serving.server`` and the real ``tensorflow_model_server`` alike (same protos)::

    with ServingClient("localhost:8500", "mvke", timeout=5.0, max_batch=256) as c:
        c.status()                        # [VersionStatus(version=3, state='AVAILABLE', ...)]
        c.metadata()["serving_default"]   # SignatureInfo(inputs={'examples': TensorInfo(string, (None,))}, ...)
        c.score(serialized_examples)      # {'click': array([...]), 'conversion': array([...])}
        c.user_tower(serialized_examples) # {'click_experts': array([B, S, d]), ...}
        c.tag_tower(["t0_1_3", ...])      # {'click_embedding': [B, d], 'click_gate': [B, S], ...}
        c.top_tags(serialized_examples, 5)  # {'click': (tags [B, 5] str, scores [B, 5]), ...}
        c.predict("tag_tower", {"tags": np.array([b"t0"])})

* numpy in and out (``tf.make_tensor_proto`` / ``tf.make_ndarray``); Python lists and ``str`` are
  accepted; numeric arrays are cast to the signature's dtype (read once from the model metadata).
* retries are gRPC's own: the channel's service config (:mod:`mvke_tf.serving.client_channel`, its names
  re-exported here) waits for a server that is down, restarting or not up yet (``waitForReady``) and
  resends a call that ended ``UNAVAILABLE`` (``retryPolicy``), all within the call's deadline
  ``timeout`` (default 30 s: a restart of this server or of ``tensorflow_model_server`` takes ~15 s);
  ``retries=0`` fails at once.
* TLS: ``root_certificates`` (the CA's PEM), a client ``certificate_chain`` / ``private_key`` for mutual
  TLS, or any ``credentials`` (``grpc.ChannelCredentials``).
* requests larger than ``max_batch`` rows are split along the batch axis (axis 0 of every input)
  and the outputs concatenated, so large jobs stay under message size and server batching limits.
* every failure is a :class:`ServingError` with the gRPC ``code`` and the server's ``details``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from mvke_tf.serving.client_channel import (
    GRPC_MAX_ATTEMPTS,
    MAX_RECONNECT_BACKOFF_MS,
    channel_credentials,
    retry_service_config,
)
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

log = logging.getLogger("mvke_tf.serving.client")

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# A call's deadline, waiting for the server included: it rides through a restart of the in-repo server
# (~12 s: TensorFlow import and model load) or of tensorflow_model_server (~15 s), with room to spare.
DEFAULT_TIMEOUT = 30.0
_STATE_NAMES = dict(get_model_status_pb2.ModelVersionStatus.State.items())
_STATE_BY_NUMBER = {v: k for k, v in _STATE_NAMES.items()}

ArrayLike = np.ndarray | Sequence[Any]


class ServingError(Exception):
    """A failed RPC: ``code`` (``grpc.StatusCode``), ``details`` (the server's message) and the call."""

    def __init__(self, code: grpc.StatusCode, details: str, method: str, model: str, signature: str | None = None):
        self.code = code
        self.details = details
        self.method = method
        self.model = model
        self.signature = signature
        where = f"{method} model={model!r}" + (f" signature={signature!r}" if signature else "")
        super().__init__(f"{code.name}: {details} ({where})")


@dataclass(frozen=True)
class TensorInfo:
    dtype: tf.DType
    shape: tuple[int | None, ...] | None  # None: unknown rank


@dataclass(frozen=True)
class SignatureInfo:
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END
    error_code: int = 0  # google.rpc code, 0 = OK
    error_message: str = ""


def _state_name(state: int) -> str:
    return _STATE_BY_NUMBER.get(state, str(state))


def _tensor_info(ti: Any) -> TensorInfo:
    dims = ti.tensor_shape.dim
    shape = None if ti.tensor_shape.unknown_rank else tuple(d.size if d.size >= 0 else None for d in dims)
    return TensorInfo(tf.dtypes.as_dtype(ti.dtype), shape)


def _as_array(value: ArrayLike, dtype: tf.DType | None) -> np.ndarray:
    """numpy array for ``make_tensor_proto``: text as bytes objects, numbers cast to ``dtype``."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object if _is_text(value) else None)
    if arr.dtype.kind in "USO" and (dtype is None or dtype == tf.string):
        flat = [v.encode() if isinstance(v, str) else v for v in arr.ravel().tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(arr.shape)
    if dtype is not None and dtype.is_numpy_compatible and dtype != tf.string and arr.dtype.kind in "biuf":
        return arr.astype(dtype.as_numpy_dtype, copy=False)
    return arr


def _is_text(value: Any) -> bool:
    while isinstance(value, list | tuple) and value:
        value = value[0]
    return isinstance(value, str | bytes)


class ServingClient:
    """Client for one model on a TF Serving compatible server.

    Args:
      target: ``host:port`` of the gRPC endpoint (with TLS: a host name the server's certificate is for).
      model_name: the served model's name (``mvke`` in ``serving/deploy/models.config``).
      timeout: each call's deadline in seconds, waiting for an unreachable server and gRPC's resends
        included (default 30: rides through a server restart).
      retries: most resends of a call that ended ``UNAVAILABLE`` (gRPC's limit is 4; ``None``: 4). ``0``:
        fail at once, no waiting for an unreachable server either (for tests and health checks).
      backoff, max_backoff: the first resend waits up to ``backoff`` s, doubling up to ``max_backoff``.
      retry_deadline_exceeded: also resend on ``DEADLINE_EXCEEDED`` returned by the server.
      max_batch: default row limit per request (``None``: never split).
      version: pin a model version (``None``: the latest the server has).
      max_message_bytes: gRPC send / receive limits of the channel.
      coerce_dtypes: cast numeric inputs to the signature's dtype (one metadata call, cached).
      input_types: the types the exported model parses each raw column as: the export's directory (its
        ``assets.extra/input_types.json``, see :mod:`mvke_tf.export.input_types`) or that file's mapping.
        With it, the examples sent to ``serving_default``, ``user_tower`` and ``top_tags`` are rewritten to
        those types first, so an id held as an integer or a string (``25`` or ``"25"``) and a number as an
        integer or a float score alike; an unreadable value is a ``ValueError`` naming the column.
      channel: use this channel as is (none of the channel options below apply).
      root_certificates: PEM of the CA that signed the server's certificate: connects over TLS.
      private_key, certificate_chain: PEM of the client's key and certificate, for servers that verify clients.
      credentials: any ``grpc.ChannelCredentials`` (instead of the three above).
      ssl_target_name_override: the name the server's certificate must carry, when ``target`` differs from it.
    """

    def __init__(
        self,
        target: str,
        model_name: str,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int | None = None,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        retry_deadline_exceeded: bool = False,
        max_batch: int | None = None,
        version: int | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        coerce_dtypes: bool = True,
        input_types: str | os.PathLike | Mapping[str, Mapping[str, str]] | None = None,
        channel: grpc.Channel | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        ssl_target_name_override: str | None = None,
    ) -> None:
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if retries is not None and not 0 <= retries < GRPC_MAX_ATTEMPTS:
            raise ValueError(
                f"retries must be 0..{GRPC_MAX_ATTEMPTS - 1} (gRPC's retry policy resends a call at most "
                f"{GRPC_MAX_ATTEMPTS - 1} times; None: that many), got {retries}; to ride through a longer "
                "outage raise timeout: a call waits for an unreachable server until its deadline"
            )
        if timeout is None or timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds (each call's deadline), got {timeout}")
        pem = (root_certificates, private_key, certificate_chain)
        if credentials is not None and any(v is not None for v in pem):
            raise ValueError("pass either credentials or root_certificates / private_key / certificate_chain")
        if channel is not None and (credentials is not None or any(v is not None for v in pem)):
            raise ValueError("a given channel carries its own credentials; do not pass TLS arguments with it")
        self.target = target
        self.model_name = model_name
        self.timeout = timeout
        self.retries = retries
        self.max_batch = max_batch
        self.version = version
        self.coerce_dtypes = coerce_dtypes
        self.input_types = _input_types(input_types)
        # Per call as well as in the service config: a channel passed in carries its own config.
        self.wait_for_ready = retries != 0
        self._own_channel = channel is None
        if channel is None:
            if credentials is None and any(v is not None for v in pem):
                credentials = channel_credentials(*pem)
            options = [
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
            ]
            if retries != 0:
                attempts = GRPC_MAX_ATTEMPTS if retries is None else retries + 1
                config = retry_service_config(attempts, backoff, max_backoff, retry_deadline_exceeded)
                options += [("grpc.enable_retries", 1), ("grpc.service_config", config)]
            else:  # fail fast means fail fast: no retries hidden inside the call either
                options += [("grpc.enable_retries", 0)]
            if ssl_target_name_override:
                options.append(("grpc.ssl_target_name_override", ssl_target_name_override))
            if credentials is not None:
                channel = grpc.secure_channel(target, credentials, options=options)
            else:
                channel = grpc.insecure_channel(target, options=options)
        self.channel = channel
        self.tls = credentials is not None
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self._signatures: dict[str, SignatureInfo] | None = None

    # -- plumbing ----------------------------------------------------------------------------------

    def close(self) -> None:
        if self._own_channel:
            self.channel.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _examples(self, examples: ArrayLike) -> ArrayLike:
        """Serialized examples, rewritten to the model's input types where the client knows them."""
        rows = _serialized(examples)
        if not self.input_types:
            return rows
        from mvke_tf.export.input_types import retype_examples

        return retype_examples(list(rows), self.input_types)

    def _spec(self, spec: Any, signature: str | None = None) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version
        if signature is not None:
            spec.signature_name = signature

    def _call(
        self,
        method: str,
        rpc: Callable[..., Any],
        request: Any,
        signature: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One RPC with the deadline ``timeout`` (default: the client's); gRPC waits and resends within it."""
        try:
            return rpc(request, timeout=timeout or self.timeout, wait_for_ready=self.wait_for_ready)
        except grpc.RpcError as e:
            code = e.code() if callable(getattr(e, "code", None)) else grpc.StatusCode.UNKNOWN
            details = e.details() if callable(getattr(e, "details", None)) else str(e)
            raise ServingError(code, details or "", method, self.model_name, signature) from None

    # -- ModelService / metadata -------------------------------------------------------------------

    def status(self, timeout: float | None = None) -> list[VersionStatus]:
        """Every version the server knows of, newest first (``state='AVAILABLE'`` when serving).

        ``timeout``: this call's deadline (default: the client's)."""
        req = get_model_status_pb2.GetModelStatusRequest()
        self._spec(req.model_spec)
        resp = self._call("GetModelStatus", self._models.GetModelStatus, req, timeout=timeout)
        out = [
            VersionStatus(s.version, _state_name(s.state), s.status.error_code, s.status.error_message)
            for s in resp.model_version_status
        ]
        return sorted(out, key=lambda s: -s.version)

    def wait_until_available(self, timeout: float = 60.0, poll: float = 0.5) -> VersionStatus:
        """Blocks until a version is ``AVAILABLE`` (server down or model loading: keeps polling)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                # Within the caller's timeout: this loop polls; one call waits for the server at most until then.
                for s in self.status(timeout=max(0.05, min(self.timeout, deadline - time.monotonic()))):
                    if s.state == "AVAILABLE":
                        return s
            except ServingError as e:
                waiting = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DEADLINE_EXCEEDED)
                if e.code not in waiting:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {self.model_name!r} not AVAILABLE on {self.target} after {timeout}s")
            time.sleep(poll)

    def metadata_response(self, timeout: float | None = None) -> get_model_metadata_pb2.GetModelMetadataResponse:
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(req.model_spec)
        return self._call("GetModelMetadata", self._predict.GetModelMetadata, req, timeout=timeout)

    def metadata(self, timeout: float | None = None) -> dict[str, SignatureInfo]:
        """The model's signatures (name -> inputs / outputs with dtype and shape), as the server reports them.
        ``timeout``: this call's deadline (default: the client's)."""
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        self.metadata_response(timeout).metadata["signature_def"].Unpack(sigmap)
        out = {
            name: SignatureInfo(
                {k: _tensor_info(v) for k, v in sd.inputs.items()},
                {k: _tensor_info(v) for k, v in sd.outputs.items()},
                sd.method_name,
            )
            for name, sd in sigmap.signature_def.items()
            if not name.startswith("__")  # __saved_model_init_op is not callable
        }
        self._signatures = out
        return out

    def _signature(self, name: str, deadline: float | None = None) -> SignatureInfo | None:
        """``name``'s inputs and outputs from the server's metadata, looked up once per client.

        ``deadline`` (``time.monotonic()``): the lookup is part of the call that needs it and waits no
        longer than that call may. A failed lookup is not remembered (the next call asks again), except
        where the server has no metadata method (``UNIMPLEMENTED``); an unreachable server fails the call.
        """
        if self._signatures is None:
            timeout = None if deadline is None else _remaining(deadline)
            try:
                self.metadata(timeout)
            except ServingError as e:
                if e.code == grpc.StatusCode.UNIMPLEMENTED:
                    log.debug("no metadata for dtype coercion: %s", e)
                    self._signatures = {}
                elif e.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    raise  # the call itself would wait again for the same server
                else:
                    log.debug("no metadata for dtype coercion this call: %s", e)
                    return None
        return self._signatures.get(name)

    # -- Predict -----------------------------------------------------------------------------------

    def predict(
        self,
        signature: str,
        inputs: Mapping[str, ArrayLike],
        output_filter: Iterable[str] | None = None,
        max_batch: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs ``signature`` on ``inputs`` (name -> array, batch on axis 0); outputs as numpy arrays.

        Requests with more than ``max_batch`` (default: the client's) rows are split into chunks of
        ``max_batch`` rows, sent one after the other, and the outputs concatenated along axis 0.
        """
        signature = signature or DEFAULT_SIGNATURE
        # One deadline for the call: the metadata lookup a first call makes counts against it.
        deadline = time.monotonic() + self.timeout
        info = self._signature(signature, deadline) if self.coerce_dtypes else None
        arrays = {
            k: _as_array(v, info.inputs[k].dtype if info and k in info.inputs else None) for k, v in inputs.items()
        }
        if not arrays:
            raise ValueError("predict needs at least one input")
        limit = max_batch or self.max_batch
        # Scalars (e.g. top_tags' k) are no batch: every chunk carries them as they are.
        sizes = {k: a.shape[0] for k, a in arrays.items() if a.ndim}
        n = next(iter(sizes.values()), None)
        if limit is None or n is None or n <= limit:
            return self._predict_once(signature, arrays, output_filter, _remaining(deadline))
        if len(set(sizes.values())) != 1:
            raise ValueError(f"cannot split a request whose inputs have different batch sizes: {sizes}")
        parts = [
            self._predict_once(
                signature, {k: a[i : i + limit] if a.ndim else a for k, a in arrays.items()}, output_filter
            )
            for i in range(0, n, limit)
        ]
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

    def _predict_once(
        self,
        signature: str,
        arrays: Mapping[str, np.ndarray],
        output_filter: Iterable[str] | None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        req = predict_pb2.PredictRequest()
        self._spec(req.model_spec, signature)
        for k, a in arrays.items():
            req.inputs[k].CopyFrom(tf.make_tensor_proto(a))
        if output_filter:
            req.output_filter.extend(output_filter)
        resp = self._call("Predict", self._predict.Predict, req, signature, timeout=timeout)
        return {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}

    def _single_input(self, signature: str, default: str) -> str:
        info = self._signature(signature)
        if info is not None and len(info.inputs) == 1:
            return next(iter(info.inputs))
        return default

    # -- the MVKE signatures -----------------------------------------------------------------------

    def score(self, examples: ArrayLike, max_batch: int | None = None) -> dict[str, np.ndarray]:
        """``serving_default``: serialized ``tf.Example`` (or ``tf.train.Example``) ``[B]`` -> ``{task: [B]}``.

        No examples is a request of none (``[0]`` strings), answered with empty scores."""
        rows = self._examples(examples)
        if len(rows) == 0:
            rows = np.array([], dtype=object)  # not numpy's float64 of an empty list
        return self.predict(DEFAULT_SIGNATURE, {"examples": rows}, max_batch=max_batch)

    def user_tower(
        self, examples: ArrayLike | Mapping[str, ArrayLike], max_batch: int | None = None
    ) -> dict[str, np.ndarray]:
        """``user_tower`` -> ``{<task>_experts: [B, S, d]}``.

        ``examples``: serialized ``tf.Example`` rows (sent as the signature's single input), or a dict
        of the signature's named inputs (e.g. raw features) sent as is.
        """
        if isinstance(examples, Mapping):
            return self.predict("user_tower", examples, max_batch=max_batch)
        name = self._single_input("user_tower", "examples")
        return self.predict("user_tower", {name: self._examples(examples)}, max_batch=max_batch)

    def tag_tower(self, tags: ArrayLike, max_batch: int | None = None) -> dict[str, np.ndarray]:
        """``tag_tower``: tags ``[B]`` -> ``{<task>_embedding: [B, d], <task>_gate: [B, S]}``."""
        name = self._single_input("tag_tower", "tags")
        return self.predict("tag_tower", {name: tags}, max_batch=max_batch)

    def top_tags(
        self, examples: ArrayLike, k: int, max_batch: int | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``top_tags``: serialized user ``tf.Example`` ``[B]`` and ``k`` -> per task ``(tags, scores)``, the
        best ``k`` tags of the vocabulary frozen at export (``str`` array ``[B, k]``) and their probabilities
        (``float32 [B, k]``), best first. ``k`` must be in ``[1, top_tags_max_k]`` of the export, else a
        :class:`ServingError` with ``INVALID_ARGUMENT``."""
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or not -(2**31) <= k < 2**31:
            # A float would be truncated (2.7 -> 2) and a large int wrapped (2**32 + 5 -> 5) on the way to the
            # signature's int32; whether k is within [1, top_tags_max_k] the export itself checks.
            raise ValueError(f"top_tags: k must be a whole number of tags (an int32), got {k!r}")
        inputs = {"examples": self._examples(examples), "k": np.array(k, dtype=np.int32)}
        out = self.predict("top_tags", inputs, max_batch=max_batch)
        result = {}
        for key in sorted(out):
            if key.endswith("_tags"):
                task = key[: -len("_tags")]
                tags = np.vectorize(lambda b: b.decode(), otypes=[object])(out[key]) if out[key].size else out[key]
                result[task] = (tags.astype(object), out[f"{task}_scores"])
        return result


def _remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (``time.monotonic()``); a tiny positive floor, so that a spent deadline
    fails the RPC with gRPC's own ``DEADLINE_EXCEEDED``."""
    return max(deadline - time.monotonic(), 1e-3)


def _input_types(
    given: str | os.PathLike | Mapping[str, Mapping[str, str]] | None,
) -> dict[str, dict[str, str]] | None:
    if given is None or isinstance(given, Mapping):
        return None if given is None else {k: dict(v) for k, v in given.items()}
    from mvke_tf.export.input_types import INPUT_TYPES_PATH, read_input_types

    types = read_input_types(given)
    if types is None:
        raise ValueError(
            f"input_types={os.fspath(given)!r}: no {INPUT_TYPES_PATH} there; fix: give the export's version "
            "directory (an export older than the file parses ids as strings: send them so and drop input_types)"
        )
    return types


def _serialized(examples: ArrayLike) -> ArrayLike:
    if isinstance(examples, np.ndarray):
        return examples
    return [e.SerializeToString() if hasattr(e, "SerializeToString") else e for e in examples]
