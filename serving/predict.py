"""Predict: one ``PredictRequest`` run on a loaded version, and the warm-up that replays recorded ones.

Shared by the gRPC ``PredictionService`` and by the registry, which warms a version up before it is
reported ``AVAILABLE``. Errors are :class:`~mvke_tf.serving.status.ServingStatusError` with TF Serving's codes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc
import tensorflow as tf
from mvke_tf.serving.servables import LoadedVersion, Signature
from mvke_tf.serving.status import ServingStatusError, echo, echo_names, invalid, one_line
from mvke_tf.serving.tensors import RequestLimits, tensors_from_request
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

# The server's one logger, whichever module logs: operators and log filters know its records by this name.
log = logging.getLogger("mvke_tf.serving.server")

DEFAULT_SIGNATURE = "serving_default"
WARMUP_PATH = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit


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
        return f"signature {sig.name!r}: {one_line(message, 160)}; {fix}"
    return f"signature {sig.name!r}: {one_line(message)}"


def predict(
    loaded: LoadedVersion, request: predict_pb2.PredictRequest, limits: RequestLimits = RequestLimits()
) -> predict_pb2.PredictResponse:
    """Runs one ``PredictRequest`` on ``loaded`` (raises :class:`ServingStatusError`)."""
    sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    sig = loaded.signatures.get(sig_name)
    if sig is None:
        raise invalid(
            f"Serving signature name: {echo(sig_name)} not found in signature def "
            f"(model {loaded.model} version {loaded.version} has {sorted(loaded.signatures)})"
        )
    wanted = list(request.output_filter) or list(sig.outputs)
    repeated = sorted({name for name in wanted if wanted.count(name) > 1})
    if repeated:  # as TF Serving answers it
        raise invalid(f"duplicate output tensor alias {echo(repeated[0])} in output_filter")
    unknown = sorted(set(wanted) - set(sig.outputs))
    if unknown:
        raise invalid(f"output_filter {echo_names(unknown)} not in signature {sig_name!r} outputs {list(sig.outputs)}")
    tensors = tensors_from_request(sig, request.inputs, limits)
    try:
        result = sig.fn(**tensors)
    except tf.errors.InvalidArgumentError as e:
        raise invalid(_bad_request_message(sig, tensors, e.message)) from None
    except UnicodeDecodeError as e:
        # TensorFlow could not turn the op's error into a Python exception: its message quotes bytes of
        # the request that are not UTF-8 (e.g. an unparsable tf.Example). The request is at fault.
        raw = e.object if isinstance(e.object, bytes) else str(e).encode()
        raise invalid(_bad_request_message(sig, tensors, raw.decode("utf-8", "backslashreplace"))) from None
    except Exception as e:  # noqa: BLE001
        log.exception("Predict %s/%d/%s failed", loaded.model, loaded.version, sig_name)
        raise ServingStatusError(
            grpc.StatusCode.INTERNAL, f"signature {sig_name!r} failed: {one_line(str(e))}"
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
