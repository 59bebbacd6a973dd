"""gRPC serving: a small TF Serving compatible server and a typed client.

* :mod:`serving.server`: ``PredictionService`` (``Predict``, ``GetModelMetadata``) and
  ``ModelService`` (``GetModelStatus``) over the real ``tensorflow_serving.apis`` protos, serving
  SavedModels from TF Serving's ``<base_path>/<version>/`` layout (the TFX Pusher's output), newest
  version wins, new versions picked up by a poller. Run with ``python -m serving``. Its parts are
  modules beside it (``registry``, ``servables``, ``tensors``, ``predict``, ``servicers``, ``tls``,
  ``status``); ``serving.server`` re-exports their public names.
* :mod:`serving.client`: :class:`~serving.client.ServingClient`, numpy in/out, timeouts, retries,
  request batching; works unchanged against ``tensorflow_model_server``.
* ``serving/deploy/``: configs to run the real ``tensorflow/serving`` image (docker compose, Kubernetes).

The submodules are imported lazily so ``import serving`` stays cheap (the server imports TensorFlow).
"""

from __future__ import annotations

import os
from typing import Any

# Keras 2 (tf_keras), as in the models the server loads: set before TensorFlow's first import, here
# because every serving.* module is imported after this package's __init__ (as pipelines/ does it).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__all__ = ["ModelServer", "ServingClient", "ServingError"]


def __getattr__(name: str) -> Any:
    if name == "ModelServer":
        from serving.server import ModelServer

        return ModelServer
    if name in ("ServingClient", "ServingError"):
        from serving import client

        return getattr(client, name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
