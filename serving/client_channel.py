"""The client's gRPC channel settings: wait for the server and resend on ``UNAVAILABLE`` (a service config), and TLS.

Used by :class:`~mvke_tf.serving.client.ServingClient` to build its channel; :mod:`mvke_tf.serving.client`
re-exports these names. A call waits for an unreachable server and is resent within its own deadline
(:func:`retry_service_config`); :func:`channel_credentials` makes the TLS credentials.
"""

from __future__ import annotations

import json

import grpc

# gRPC clamps a retry policy's maxAttempts to 5 (the original call and 4 retries).
GRPC_MAX_ATTEMPTS = 5
# How long a channel waits, at most, between reconnect attempts to a server that went away. gRPC's
# default grows to 120 s, so after a 15 s restart the channel could stay disconnected long after the
# server is back; every RPC meanwhile fails fast with UNAVAILABLE.
MAX_RECONNECT_BACKOFF_MS = 1000
_SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def retry_service_config(
    max_attempts: int = GRPC_MAX_ATTEMPTS,
    backoff: float = 0.1,
    max_backoff: float = 2.0,
    retry_deadline_exceeded: bool = False,
) -> str:
    """gRPC service config (JSON) of the client's channel: wait for the server, resend on ``UNAVAILABLE``.

    ``waitForReady``: a call made while the server is unreachable (down, restarting, not up yet) waits
    for the channel to connect instead of failing at once; the channel retries the connection every
    <= ``MAX_RECONNECT_BACKOFF_MS``. ``retryPolicy``: a call that ended ``UNAVAILABLE`` after it was
    sent (a server shutting down, a connection reset), or that the server ``CANCELLED`` (still running
    when a shutting-down server's grace period ended), is resent, ``max_attempts`` in all (gRPC's
    limit is 5), the first retry after up to ``backoff`` s, doubling to ``max_backoff`` (gRPC jitters
    each wait). Both stay within the call's deadline. ``retry_deadline_exceeded`` also resends on a
    ``DEADLINE_EXCEEDED`` *returned by the server* (e.g. a batching queue's timeout); the call's own
    deadline ends it. Predict, GetModelMetadata and GetModelStatus only read, so resending them is safe.
    """
    if not 2 <= max_attempts <= GRPC_MAX_ATTEMPTS:
        raise ValueError(
            f"max_attempts must be 2..{GRPC_MAX_ATTEMPTS} (gRPC's limit), got {max_attempts}; "
            "pass retries=0 to the client for no retries"
        )
    if not 0 < backoff <= max_backoff:
        raise ValueError(f"need 0 < backoff <= max_backoff, got backoff={backoff}, max_backoff={max_backoff}")
    # CANCELLED: what a server shutting down answers calls still running when its grace period ends (gRPC
    # retries only statuses the server sent; a call the application cancels itself is never resent).
    codes = ["UNAVAILABLE", "CANCELLED"] + (["DEADLINE_EXCEEDED"] if retry_deadline_exceeded else [])
    policy = {
        "maxAttempts": max_attempts,
        "initialBackoff": f"{backoff:g}s",
        "maxBackoff": f"{max_backoff:g}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": codes,
    }
    config = {"name": [{"service": s} for s in _SERVICES], "waitForReady": True, "retryPolicy": policy}
    return json.dumps({"methodConfig": [config]})


def channel_credentials(
    root_certificates: bytes | None = None,
    private_key: bytes | None = None,
    certificate_chain: bytes | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials: the server is verified against ``root_certificates`` (PEM; ``None``: the system's
    roots), and ``private_key`` + ``certificate_chain`` (PEM) are presented for mutual TLS."""
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("mutual TLS needs both private_key and certificate_chain (PEM bytes), or neither")
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
