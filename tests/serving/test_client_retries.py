"""The client's default retries ride through a server restart; ``retries`` / ``retry_budget`` bound them."""

from __future__ import annotations

import json
import threading
import time

import grpc
import numpy as np
import pytest
from tiny_servable import examples, export_tiny, free_port

from serving.client import ServingClient, ServingError
from serving.server import ModelServer

# Downtime of the restart below: ten times what the old defaults (3 retries, < 1 s) survived, within the
# ~12 s a restart of this server takes; the test stays under ~20 s.
DOWNTIME_S = 10.0


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("tiny"))


def test_default_client_rides_through_a_restart_on_the_same_port(base):
    port = free_port()

    def start() -> ModelServer:
        return ModelServer({"tiny": base}, port=port, poll_seconds=0, warmup=False).start()

    srv = start()
    client = ServingClient(f"127.0.0.1:{port}", "tiny")  # default settings
    rows = examples(4)
    want = client.score(rows)["y"]
    answered: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def send() -> None:  # requests back to back, as a serving job would send them
        while not stop.is_set():
            try:
                np.testing.assert_array_equal(client.score(rows)["y"], want)
                answered.append(time.monotonic())
            except BaseException as e:  # noqa: BLE001 - any failure fails the test
                errors.append(e)
            time.sleep(0.02)

    sender = threading.Thread(target=send)
    sender.start()
    restarted = None
    try:
        time.sleep(0.5)
        srv.stop(grace=1.0)
        down_at = time.monotonic()
        time.sleep(DOWNTIME_S)
        restarted = start()
        up_at = time.monotonic()
        deadline = up_at + 15
        while not [t for t in answered if t > up_at] and time.monotonic() < deadline and not errors:
            time.sleep(0.1)
    finally:
        stop.set()
        sender.join(60)
        client.close()
        srv.stop(0)
        if restarted is not None:
            restarted.stop(0)
    assert not errors, errors[:3]
    assert [t for t in answered if t < down_at], "no answer before the restart"
    assert [t for t in answered if t > up_at], "no answer after the restart"
    # Reconnection is prompt (the channel's reconnect backoff is capped at 1 s, the client's at 2 s), not
    # gRPC's default of up to 120 s.
    assert min(t for t in answered if t > up_at) - up_at < 8


def test_retry_budget_and_retries_bound_the_wait():
    target = f"127.0.0.1:{free_port()}"  # nothing listens
    t0 = time.monotonic()
    with pytest.raises(ServingError) as err:
        ServingClient(target, "tiny", retry_budget=1.5).status()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert 1.0 < time.monotonic() - t0 < 8
    t0 = time.monotonic()
    with pytest.raises(ServingError) as err:
        ServingClient(target, "tiny", retries=0).status()  # fail fast: no retries, gRPC's own off too
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and time.monotonic() - t0 < 1
    with pytest.raises(ValueError, match="retries must be >= 0"):
        ServingClient(target, "tiny", retries=-1)


def test_grpc_retry_policy():
    from serving.client import retry_service_config

    [config] = json.loads(retry_service_config())["methodConfig"]
    assert {n["service"] for n in config["name"]} == {
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
    }
    policy = config["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"] and 2 <= policy["maxAttempts"] <= 5
