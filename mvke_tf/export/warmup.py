"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests`` in the SavedModel.

TF Serving replays the file's records when it loads a model version, before it reports the version
available, so the first real requests do not pay for graph initialisation. Each record is a
``tensorflow_serving.apis.prediction_log_pb2.PredictionLog`` whose ``predict_log.request`` is a
``PredictRequest`` naming one signature; this module writes one per signature (a small batch).

The records are built with ``tensorflow_serving.apis.prediction_log_pb2`` (``tensorflow-serving-api``,
a core requirement of the package).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = f"{WARMUP_DIR}/{WARMUP_FILE}"  # relative to the SavedModel directory
DEFAULT_MODEL_NAME = "mvke"  # TF Serving ignores the model name of warm-up requests


def prediction_log(model_name: str, signature: str, inputs: Mapping[str, tf.Tensor | np.ndarray | list]) -> bytes:
    """One serialized ``PredictionLog`` with a ``PredictRequest`` for ``signature``."""
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
    """The warm-up file's ``PredictionLog`` records."""
    path = os.path.join(os.fspath(export_dir), WARMUP_PATH)
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
