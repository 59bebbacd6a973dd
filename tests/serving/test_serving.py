"""gRPC serving over the real wire protocol: ``mvke_tf.serving.server`` in-process on a free localhost port
(and once as ``python -m mvke_tf.serving`` in a subprocess), ``mvke_tf.serving.client`` and raw TF Serving stubs.

One SavedModel is exported (slow: ~20 s on a busy 2-core machine); the "new version" is the same
SavedModel re-saved with perturbed variables, so its outputs differ.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
import yaml
from google.protobuf import text_format
from mvke_tf.serving.__main__ import parse_models
from mvke_tf.serving.client import ServingClient, ServingError
from mvke_tf.serving.server import WARMUP_PATH, ModelServer, Signature
from reference_helpers import parse_examples
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from mvke_tf.data import synthetic
from mvke_tf.export import export_saved_model
from mvke_tf.models import UserTagConfig, build_model

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "serving" / "deploy"
FC = synthetic.feature_config()
TAGS = np.array([b"t0_0_0", b"t0_1_3", b"t3_2_1", b"t17_4_19", b"t5_0_7", b"unknown_tag"], dtype=object)
SIGNATURES = ("serving_default", "user_tower", "tag_tower")


def make_examples(n: int, seed: int = 0) -> np.ndarray:
    """``n`` serialized ``tf.Example`` rows with every feature of the synthetic feature config."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        feats = {}
        for f in (*FC.user_fields, FC.tag_field):
            if f.kind == "numeric":
                feats[f.name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(rng.uniform(0, 50))]))
            elif f.kind == "multi_valued":
                k = int(rng.integers(0, f.max_values + 1))
                vals = [f"t{rng.integers(20)}_{rng.integers(5)}_{rng.integers(20)}".encode() for _ in range(k)]
                feats[f.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=vals))
            else:
                feats[f.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"v{rng.integers(9)}".encode()]))
        rows.append(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    out = np.empty(n, dtype=object)
    out[:] = rows
    return out


EXAMPLES = make_examples(13)


def signature_inputs(fn, examples: np.ndarray = EXAMPLES, tags: np.ndarray = TAGS) -> dict[str, np.ndarray]:
    """Inputs for any signature, built from its input names (``examples``, ``tags`` or raw features)."""
    raw = None
    out = {}
    for name in fn.structured_input_signature[1]:
        if name == "examples":
            out[name] = examples
        elif name == "tags":
            out[name] = tags
        else:
            if raw is None:
                raw = {k: v.numpy() for k, v in parse_examples(tf.constant(examples), FC).items()}
            out[name] = raw[name]
    return out


def local(fn, inputs) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def assert_outputs_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6, err_msg=k)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """(version 1, version 2) SavedModel directories; version 2 has perturbed weights."""
    root = tmp_path_factory.mktemp("serving_exports")
    mc = UserTagConfig(model_type="mvke_mt", embedding_dim=8, dnn_units=(16,), top_units=(16, 8), tag_units=(16, 8))
    v1 = export_saved_model(build_model(FC, mc), root / "v1")
    obj = tf.saved_model.load(str(v1))
    variables = {id(v): v for f in obj.signatures.values() for v in f.variables}
    for v in variables.values():
        if v.dtype.is_floating:
            v.assign(v * 1.5 + 0.01)
    v2 = root / "v2"
    tf.saved_model.save(obj, str(v2), signatures=dict(obj.signatures))
    return v1, v2


@pytest.fixture(scope="module")
def reference(exports):
    return tf.saved_model.load(str(exports[0]))


@pytest.fixture(scope="module")
def base(exports, tmp_path_factory):
    """A Pusher-style serving directory: ``<base>/1/``."""
    base = tmp_path_factory.mktemp("serving_base")
    shutil.copytree(exports[0], base / "1")
    return base


@pytest.fixture(scope="module")
def server(base):
    srv = ModelServer({"mvke": base}, port=0, poll_seconds=0.2).start()
    yield srv
    srv.stop(0)


@pytest.fixture()
def client(server):
    with ServingClient(server.target, "mvke", timeout=10, retries=0) as c:
        yield c


def test_round_trip_equals_in_process(server, client, reference):
    assert set(SIGNATURES) <= set(reference.signatures)
    for name in SIGNATURES:
        fn = reference.signatures[name]
        inputs = signature_inputs(fn)
        assert_outputs_equal(client.predict(name, inputs), local(fn, inputs))
    # The convenience methods and a raw stub with hand-made TensorProtos give the same.
    want = local(reference.signatures["serving_default"], {"examples": EXAMPLES})
    assert_outputs_equal(client.score(list(EXAMPLES)), want)
    ut = signature_inputs(reference.signatures["user_tower"])
    got = client.user_tower(list(EXAMPLES) if list(ut) == ["examples"] else ut)
    assert_outputs_equal(got, local(reference.signatures["user_tower"], ut))
    tags = [t.decode() for t in TAGS]  # str is accepted
    assert_outputs_equal(client.tag_tower(tags), local(reference.signatures["tag_tower"], {"tags": TAGS}))

    stub = prediction_service_pb2_grpc.PredictionServiceStub(client.channel)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "mvke"  # no signature name: serving_default
    req.inputs["examples"].CopyFrom(tf.make_tensor_proto(EXAMPLES[:3]))
    req.output_filter.append("click")
    resp = stub.Predict(req, timeout=10)
    assert resp.model_spec.version.value == 1 and resp.model_spec.signature_name == "serving_default"
    assert list(resp.outputs) == ["click"] and tf.make_ndarray(resp.outputs["click"]).shape == (3,)


def test_error_codes(server, client, reference):
    inv, nf = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    good = {"examples": EXAMPLES[:2]}
    cases = [
        (nf, ServingClient(server.target, "nope", retries=0), "serving_default", good, "nope"),
        (nf, ServingClient(server.target, "mvke", retries=0, version=7), "serving_default", good, "7"),
        (inv, client, "no_such_signature", good, "no_such_signature"),
        (inv, client, "serving_default", {"example": EXAMPLES[:2]}, "example"),  # bad input name
        (inv, client, "serving_default", {**good, "extra": EXAMPLES[:2]}, "extra"),  # extra input
        (inv, client, "serving_default", {"examples": np.zeros(2, np.float32)}, "dtype"),
        (inv, client, "serving_default", {"examples": EXAMPLES[:2].reshape(2, 1)}, "shape"),
        (inv, client, "tag_tower", {"tags": np.array(b"t0_0_0", dtype=object)}, "shape"),  # scalar, needs [B]
    ]
    for code, c, sig, inputs, needle in cases:
        with pytest.raises(ServingError) as err:
            c.predict(sig, inputs)
        assert err.value.code == code, (sig, inputs.keys(), err.value)
        assert needle in err.value.details, err.value.details
    for c, code in ((ServingClient(server.target, "nope", retries=0), nf), (cases[1][1], nf)):
        with pytest.raises(ServingError) as err:
            c.status()
        assert err.value.code == code
        with pytest.raises(ServingError) as err:
            c.metadata()
        assert err.value.code == code
    # On the raw wire, too (no client-side help).
    stub = prediction_service_pb2_grpc.PredictionServiceStub(client.channel)
    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = "mvke", "tag_tower"
    req.inputs["tags"].CopyFrom(tf.make_tensor_proto(np.array([1, 2], np.int64)))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(req, timeout=10)
    assert err.value.code() == inv and "int64" in err.value.details()
    req.model_spec.version_label = "stable"  # no labels configured
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(req, timeout=10)
    assert err.value.code() == inv and "version label: stable" in err.value.details()
    meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["not_a_field"])
    meta.model_spec.name = "mvke"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelMetadata(meta, timeout=10)
    assert err.value.code() == inv


def test_metadata_and_status(client, reference):
    resp = client.metadata_response()
    assert resp.model_spec.name == "mvke" and resp.model_spec.version.value == 1
    assert resp.metadata["signature_def"].TypeName() == "tensorflow.serving.SignatureDefMap"
    sigs = client.metadata()
    assert set(SIGNATURES) <= set(sigs)
    assert sigs["serving_default"].inputs["examples"].dtype == tf.string
    assert sigs["serving_default"].inputs["examples"].shape == (None,)
    assert sigs["tag_tower"].outputs["click_gate"].shape == (None, 3)
    for name in SIGNATURES:
        assert set(sigs[name].inputs) == set(reference.signatures[name].structured_input_signature[1])
        assert set(sigs[name].outputs) == set(reference.signatures[name].structured_outputs)
    [st] = client.status()
    assert (st.version, st.state, st.error_code) == (1, "AVAILABLE", 0)
    # Raw ModelService answer, as TF Serving gives it.
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "mvke"
    req.model_spec.version.value = 1
    resp = model_service_pb2_grpc.ModelServiceStub(client.channel).GetModelStatus(req, timeout=10)
    assert [(s.version, s.state) for s in resp.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]


def test_client_batching(server, client, monkeypatch):
    examples = make_examples(23, seed=3)
    whole = client.score(examples)
    calls = []
    once = client._predict_once
    monkeypatch.setattr(client, "_predict_once", lambda *a: calls.append(len(next(iter(a[1].values())))) or once(*a))
    for sig, inputs in (("serving_default", {"examples": examples}), ("tag_tower", {"tags": np.repeat(TAGS, 4)})):
        n = len(next(iter(inputs.values())))
        calls.clear()
        chunked = client.predict(sig, inputs, max_batch=5)
        assert calls == [min(5, n - i) for i in range(0, n, 5)]
        calls.clear()
        assert_outputs_equal(chunked, client.predict(sig, inputs))
        assert calls == [n]
    assert_outputs_equal(client.score(examples, max_batch=4), whole)


def test_new_version_is_picked_up_and_graceful_stop(exports, tmp_path):
    v1, v2 = exports
    base = tmp_path / "mvke"
    shutil.copytree(v1, base / "1")
    srv = ModelServer({"mvke": base}, port=0, poll_seconds=0.2).start()
    c = ServingClient(srv.target, "mvke", retries=0, timeout=10)
    try:
        before = c.score(EXAMPLES)
        shutil.copytree(v2, base / "2")  # not atomic: the poller waits until the files stop changing
        wait_for(lambda: (c.status()[0].version, c.status()[0].state) == (2, "AVAILABLE"), 30, "version 2")
        assert [(s.version, s.state) for s in c.status()] == [(2, "AVAILABLE"), (1, "END")]
        ref2 = tf.saved_model.load(str(v2))
        for name in SIGNATURES:
            inputs = signature_inputs(ref2.signatures[name])
            assert_outputs_equal(c.predict(name, inputs), local(ref2.signatures[name], inputs))
        after = c.score(EXAMPLES)
        assert not np.allclose(after["click"], before["click"])
        assert ServingClient(srv.target, "mvke", version=2).score(EXAMPLES[:2])["click"].shape == (2,)
        with pytest.raises(ServingError) as err:
            ServingClient(srv.target, "mvke", version=1, retries=0).score(EXAMPLES[:2])
        assert err.value.code == grpc.StatusCode.NOT_FOUND

        # Graceful stop: a request in flight finishes, new ones are refused.
        loaded = srv.registry.get("mvke").current
        entered, release = threading.Event(), threading.Event()
        real = loaded.signatures["tag_tower"]

        def slow(**kw):
            entered.set()
            release.wait(20)
            return real.fn(**kw)

        loaded.signatures["tag_tower"] = Signature(real.name, slow, real.inputs, real.outputs)
        result = {}
        inflight = threading.Thread(target=lambda: result.update(c.tag_tower(TAGS)))
        inflight.start()
        assert entered.wait(10)
        stopper = threading.Thread(target=srv.stop, args=(20,))
        stopper.start()
        time.sleep(0.5)
        with pytest.raises(ServingError) as err:
            ServingClient(srv.target, "mvke", retries=0, timeout=3).status()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        release.set()
        inflight.join(10)
        stopper.join(20)
        assert not stopper.is_alive() and srv.wait(0)
        assert_outputs_equal(result, local(ref2.signatures["tag_tower"], {"tags": TAGS}))
    finally:
        srv.stop(0)
        c.close()


def write_warmup(saved_model: Path, signature: str, inputs: dict) -> None:
    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = "mvke", signature
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    (saved_model / "assets.extra").mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(saved_model / WARMUP_PATH)) as w:
        w.write(prediction_log_pb2.PredictionLog(predict_log={"request": req}).SerializeToString())


def test_warmup_and_failed_version_keeps_previous(exports, tmp_path, caplog):
    v1, v2 = exports
    base = tmp_path / "mvke"
    shutil.copytree(v1, base / "1")
    write_warmup(base / "1", "tag_tower", {"tags": TAGS[:2]})
    caplog.set_level("INFO", logger="mvke_tf.serving.server")
    srv = ModelServer({"mvke": base}, port=0, poll_seconds=0.2, load_retries=1).start()
    c = ServingClient(srv.target, "mvke", retries=0)
    try:
        assert "version 1 warmed up with 1 requests" in caplog.text
        shutil.copytree(v2, base / "2")
        write_warmup(base / "2", "no_such_signature", {"tags": TAGS[:2]})  # TF Serving fails such a load
        wait_for(lambda: c.status()[0].state == "END", 30, "version 2 to fail")
        failed, serving = c.status()
        assert (failed.version, serving.version, serving.state) == (2, 1, "AVAILABLE")
        assert "warm-up request 0" in failed.error_message and "no_such_signature" in failed.error_message
        assert c.score(EXAMPLES[:2])["click"].shape == (2,)
    finally:
        srv.stop(0)
        c.close()


def test_retry_on_unavailable_across_restart(base):
    port = free_port()
    srv = ModelServer({"mvke": base}, port=port, poll_seconds=0, warmup=False).start()
    c = ServingClient(f"127.0.0.1:{port}", "mvke", timeout=20)
    assert c.score(EXAMPLES[:2])["click"].shape == (2,)
    srv.stop(0)
    with pytest.raises(ServingError) as err:
        ServingClient(f"127.0.0.1:{port}", "mvke", retries=0).status()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    restarted = []

    def restart():
        time.sleep(1.0)
        restarted.append(ModelServer({"mvke": base}, port=port, poll_seconds=0, warmup=False).start())

    t = threading.Thread(target=restart)
    t.start()
    try:
        t0 = time.monotonic()
        assert c.score(EXAMPLES[:2])["click"].shape == (2,)  # waited until the restarted server answered
        assert time.monotonic() - t0 >= 0.9
    finally:
        t.join(30)
        for s in restarted:
            s.stop(0)
        c.close()


def test_subprocess_client_first_then_sigterm(base):
    """``python -m mvke_tf.serving``: a client started first retries until the server is up; SIGTERM stops it
    cleanly."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "mvke_tf.serving", "--model", f"mvke={base}"]
    cmd += ["--port", str(port), "--poll_seconds", "0.5"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        # Importing TensorFlow and loading the model may take longer than the default 30 s deadline on a
        # busy machine: the first call may wait longer.
        c = ServingClient(f"127.0.0.1:{port}", "mvke", timeout=30)
        assert c.status(timeout=120)[0].state == "AVAILABLE"
        assert c.score(EXAMPLES[:3])["click"].shape == (3,)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err and "server stopped" in err and "AVAILABLE" in err


def test_cli_model_pairs():
    assert parse_models(["a=/x", "b=/y=z"]) == {"a": "/x", "b": "/y=z"}
    for bad in (["a"], ["=/x"], ["a=/x", "a=/y"]):
        with pytest.raises(Exception, match="model"):
            parse_models(bad)


def test_deploy_configs_are_consistent():
    cfg = text_format.Parse((DEPLOY / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    [m] = cfg.model_config_list.config
    assert (m.name, m.base_path, m.model_platform) == ("mvke", "/models/mvke", "tensorflow")
    batching = (DEPLOY / "batching.config").read_text()
    assert "max_batch_size { value:" in batching and "batch_timeout_micros { value:" in batching

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    [svc] = compose["services"].values()
    assert svc["image"] == "tensorflow/serving:2.16.1"
    assert any(v.endswith(":/models/mvke:ro") or ":/models/mvke" in v for v in svc["volumes"])
    k8s = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    kinds = {d["kind"]: d for d in k8s}
    assert {"Deployment", "Service"} <= set(kinds)
    [container] = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == svc["image"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/mvke"
    flags = {a.split("=")[0] for a in container["args"]}
    assert flags == {a.split("=")[0] for a in svc["command"]}
    for flag in (
        "--port",
        "--rest_api_port",
        "--model_config_file",
        "--model_config_file_poll_wait_seconds",
        "--enable_batching",
        "--batching_parameters_file",
    ):
        assert flag in flags
    assert {p["port"] for p in kinds["Service"]["spec"]["ports"]} == {8500, 8501}


def test_unparsable_example_and_no_version_loaded_status_codes(server, client, tmp_path):
    """Two rows of the status table in docs/serving.md that need their own setup."""
    with pytest.raises(ServingError) as err:
        client.predict("serving_default", {"examples": np.array([b"\xff\xfe not a tf.Example"], dtype=object)})
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Could not parse example input" in err.value.details, err.value.details
    # One line naming the row and the fix (tests/serving/test_malformed_requests.py has the other variants).
    assert "\n" not in err.value.details and err.value.details.isprintable(), repr(err.value.details)
    assert "input 'examples' row 0 (of 1) is not a serialized tf.Example" in err.value.details, err.value.details
    empty = tmp_path / "empty_base"
    empty.mkdir()
    srv = ModelServer({"mvke": empty}, port=0, poll_seconds=0.2).start()
    try:
        with pytest.raises(ServingError) as err:
            ServingClient(srv.target, "mvke", retries=0, timeout=10).score(EXAMPLES[:1])
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        assert "no version loaded yet" in err.value.details, err.value.details
    finally:
        srv.stop(0)


def test_multi_domain_model_over_grpc_and_its_domain_check(tmp_path):
    """An M3oE export answers as the in-process model does (1e-6); an out-of-range or missing domain id is
    INVALID_ARGUMENT, never another domain's tower."""
    from mvke_tf.data.dataset import parse_fields
    from mvke_tf.export.examples import dummy_rows, examples_from_rows
    from mvke_tf.models.family import family_of

    family = family_of("multi_domain_m3oe")
    config = family.config_for(
        "multi_domain_m3oe", dict(embedding_dim=4, bottom_units=(8, 6), skip_units=(6,), expert_units=(5,))
    )
    tf.keras.utils.set_random_seed(0)
    model = family.build(FC, config)
    export_saved_model(model, tmp_path / "m3oe" / "1", feature_config=FC)
    rows = dummy_rows(FC, 6)
    rows["domain"] = [0, 1, 2, 2, 1, 0]
    examples = np.array(examples_from_rows(rows, FC), dtype=object)
    srv = ModelServer({"m3oe": tmp_path / "m3oe"}, port=0, poll_seconds=0.2).start()
    try:
        c = ServingClient(srv.target, "m3oe", retries=0, timeout=30)
        got = c.predict("serving_default", {"examples": examples})
        want = model(parse_fields(tf.constant(examples), model.fields, family.extra_inputs(model)))
        for task in ("click", "conversion"):
            np.testing.assert_allclose(got[task], want[task].numpy(), rtol=1e-6, atol=1e-7)
        for bad in ([0, 3], [-2, 1], None):
            bad_rows = dummy_rows(FC, 2)
            if bad is not None:
                bad_rows["domain"] = bad
            with pytest.raises(ServingError) as err:
                c.predict("serving_default", {"examples": np.array(examples_from_rows(bad_rows, FC), dtype=object)})
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert "domain id outside [0, 3)" in err.value.details, err.value.details
    finally:
        srv.stop(0)
