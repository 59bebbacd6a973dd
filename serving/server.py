"""A small gRPC model server speaking TF Serving's protocol (``tensorflow_serving.apis``).

It implements the parts of ``tensorflow_model_server`` this project uses, with the same protos,
the same version layout and the same error codes, so :class:`mvke_tf.serving.client.ServingClient` (or any
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

This module builds, starts and stops the server (:class:`ModelServer`); the parts live beside it, one
job each, and their public names are re-exported here:

* :mod:`mvke_tf.serving.registry`: the served models, their versions and the poller (version policy).
* :mod:`mvke_tf.serving.servables`: a loaded SavedModel version and its signatures.
* :mod:`mvke_tf.serving.tensors`: request ``TensorProto`` -> tensor, validated, and the per-request limits.
* :mod:`mvke_tf.serving.predict`: running a ``PredictRequest``; the warm-up replay.
* :mod:`mvke_tf.serving.servicers`: the gRPC ``PredictionService`` and ``ModelService``.
* :mod:`mvke_tf.serving.tls`: ``SSLConfig`` and the server credentials.
* :mod:`mvke_tf.serving.status`: ``ServingStatusError`` and the one-line error text.

Every part logs to the ``mvke_tf.serving.server`` logger.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

# Re-exported: ``from mvke_tf.serving.server import X`` keeps working for every name this module used to define.
from mvke_tf.serving.predict import DEFAULT_SIGNATURE, MAX_WARMUP_RECORDS, WARMUP_PATH, predict, warm_up
from mvke_tf.serving.registry import ModelRegistry, ServedModel, list_versions
from mvke_tf.serving.servables import LoadedVersion, Signature, read_signature_defs
from mvke_tf.serving.servicers import ModelServicer, PredictionServicer
from mvke_tf.serving.status import ServingStatusError
from mvke_tf.serving.tensors import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
    RequestLimits,
    expanded_bytes,
    tensor_from_proto,
    tensors_from_request,
)
from mvke_tf.serving.tls import (
    SSLConfig,
    check_ssl_config,
    is_loopback,
    load_ssl_config,
    server_credentials,
    ssl_config_text,
)
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_PORT",
    "DEFAULT_SIGNATURE",
    "MAX_WARMUP_RECORDS",
    "WARMUP_PATH",
    "LoadedVersion",
    "ModelRegistry",
    "ModelServer",
    "ModelServicer",
    "PredictionServicer",
    "RequestLimits",
    "SSLConfig",
    "ServedModel",
    "ServingStatusError",
    "Signature",
    "check_ssl_config",
    "expanded_bytes",
    "is_loopback",
    "list_versions",
    "load_ssl_config",
    "predict",
    "read_signature_defs",
    "server_credentials",
    "ssl_config_text",
    "tensor_from_proto",
    "tensors_from_request",
    "warm_up",
]

log = logging.getLogger("mvke_tf.serving.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8500


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
