"""The gRPC servicers: TF Serving's ``PredictionService`` and ``ModelService`` over the model registry.

``Predict`` and ``GetModelMetadata`` (``signature_def``) and ``GetModelStatus`` are served;
``Classify``, ``Regress`` and ``MultiInference`` answer ``UNIMPLEMENTED``. A rejected request is
aborted with its :class:`~mvke_tf.serving.status.ServingStatusError` code and logged on one line.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from mvke_tf.serving.predict import predict
from mvke_tf.serving.registry import ModelRegistry
from mvke_tf.serving.status import ServingStatusError, echo, invalid, not_found, one_line
from mvke_tf.serving.tensors import RequestLimits
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

# The server's one logger, whichever module logs: operators and log filters know its records by this name.
log = logging.getLogger("mvke_tf.serving.server")


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
            log.info("Predict %s: %s %s", echo(request.model_spec.name), e.code.name, e.message)
            context.abort(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - a bug here must answer INTERNAL, not grpc's bare UNKNOWN
            log.exception("Predict %s: unexpected failure", echo(request.model_spec.name))
            context.abort(grpc.StatusCode.INTERNAL, f"Predict failed: {one_line(str(e))}")
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
                raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
            unsupported = [f for f in fields if f != "signature_def"]
            if unsupported:
                raise invalid(f"Metadata field {unsupported[0]} is not supported (supported: signature_def)")
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = loaded.model
            response.model_spec.version.value = loaded.version
            sigmap = get_model_metadata_pb2.SignatureDefMap()
            for name, sd in loaded.signature_defs.items():
                sigmap.signature_def[name].CopyFrom(sd)
            response.metadata["signature_def"].Pack(sigmap)
        except ServingStatusError as e:
            log.info("GetModelMetadata %s: %s %s", echo(request.model_spec.name), e.code.name, e.message)
            context.abort(e.code, e.message)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            spec = request.model_spec
            if not spec.name:
                raise invalid("model_spec.name is required")
            model = self.registry.get(spec.name)
            statuses = model.statuses()
            if spec.HasField("version"):
                statuses = [s for s in statuses if s.version == spec.version.value]
                if not statuses:
                    raise not_found(
                        f"Could not find version {spec.version.value} of model {echo(spec.name)[1:-1]} "
                        f"(known: {[s.version for s in model.statuses()]})"
                    )
            elif spec.version_label:
                raise invalid(
                    f"Unrecognized servable version label: {echo(spec.version_label)[1:-1]} "
                    f"(model {echo(spec.name)[1:-1]})"
                )
            elif not statuses:
                raise not_found(f"Could not find any versions of model {echo(spec.name)[1:-1]}")
        except ServingStatusError as e:
            log.info("GetModelStatus %s: %s %s", echo(request.model_spec.name), e.code.name, e.message)
            context.abort(e.code, e.message)
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=statuses)
