"""gRPC serving: a small TF Serving compatible server and a typed client.

* :mod:`mvke_tf.serving.server`: ``PredictionService`` (``Predict``, ``GetModelMetadata``) and
  ``ModelService`` (``GetModelStatus``) over the real ``tensorflow_serving.apis`` protos, serving
  SavedModels from TF Serving's ``<base_path>/<version>/`` layout (the TFX Pusher's output), newest
  version wins, new versions picked up by a poller. Run with ``python -m mvke_tf.serving``. Its parts are
  modules beside it (``registry``, ``servables``, ``tensors``, ``predict``, ``servicers``, ``tls``,
  ``status``); ``mvke_tf.serving.server`` re-exports their public names.
* :mod:`mvke_tf.serving.client`: :class:`~mvke_tf.serving.client.ServingClient`, numpy in/out, timeouts, retries,
  request batching; works unchanged against ``tensorflow_model_server``.
* ``serving/deploy/``: configs to run the real ``tensorflow/serving`` image (docker compose, Kubernetes).

Installed as ``mvke_tf.serving`` from the repository's ``serving/`` folder; Keras 2, as in the models
the server loads, is set by ``mvke_tf``'s ``__init__`` before anything here runs. The submodules are
imported lazily so ``import mvke_tf.serving`` stays cheap (the server imports TensorFlow).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ModelServer", "ServingClient", "ServingError"]


def __getattr__(name: str) -> Any:
    if name == "ModelServer":
        from mvke_tf.serving.server import ModelServer

        return ModelServer
    if name in ("ServingClient", "ServingError"):
        from mvke_tf.serving import client

        return getattr(client, name)
    raise AttributeError(f"module 'mvke_tf.serving' has no attribute {name!r}")
