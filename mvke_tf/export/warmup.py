"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests`` in the SavedModel.

TF Serving replays the file's records when it loads a model version, before it reports the version
available, so the first real requests do not pay for graph initialisation. Each record is a
``tensorflow_serving.apis.prediction_log_pb2.PredictionLog`` whose ``predict_log.request`` is a
``PredictRequest`` naming one signature; this module writes one per signature (a small batch).

``tensorflow-serving-api`` (the ``serving`` extra; TFX installs it too) is used when present; without
it the same bytes are encoded here (the few protobuf fields involved), so the library export always
writes the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = f"{WARMUP_DIR}/{WARMUP_FILE}"  # relative to the SavedModel directory
DEFAULT_MODEL_NAME = "mvke"  # TF Serving ignores the model name of warm-up requests


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _encode_prediction_log(model_name: str, signature: str, inputs: Mapping[str, tf.Tensor]) -> bytes:
    """``PredictionLog{predict_log{request{model_spec, inputs}}}`` encoded without the serving protos."""
    spec = _field(1, model_name.encode()) + _field(3, signature.encode())  # ModelSpec.name, .signature_name
    request = _field(1, spec)  # PredictRequest.model_spec
    for name in sorted(inputs):  # PredictRequest.inputs: map<string, TensorProto> entries
        tensor = tf.make_tensor_proto(inputs[name]).SerializeToString()
        request += _field(2, _field(1, name.encode()) + _field(2, tensor))
    return _field(6, _field(1, request))  # PredictionLog.predict_log, PredictLog.request


def prediction_log(model_name: str, signature: str, inputs: Mapping[str, tf.Tensor | np.ndarray | list]) -> bytes:
    """One serialized ``PredictionLog`` with a ``PredictRequest`` for ``signature``."""
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:
        return _encode_prediction_log(model_name, signature, inputs)
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    return log.SerializeToString()


def write_warmup_requests(
    export_dir: str | os.PathLike,
    requests: Mapping[str, Mapping[str, tf.Tensor | np.ndarray | list]],
    model_name: str = DEFAULT_MODEL_NAME,
) -> str:
    """Writes ``{signature: {input name: batch}}`` as the SavedModel's warm-up file; returns its path.

    Uses ``tf.io`` file APIs, so ``export_dir`` may be a GCS path.
    """
    directory = os.path.join(os.fspath(export_dir), WARMUP_DIR)
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests.items():
            writer.write(prediction_log(model_name, signature, inputs))
    return path


def read_warmup_requests(export_dir: str | os.PathLike) -> list:
    """The warm-up file's ``PredictionLog`` records (needs ``tensorflow-serving-api``)."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(os.fspath(export_dir), WARMUP_PATH)
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
