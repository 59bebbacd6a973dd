"""Malformed ``PredictRequest``s on the raw wire: every one is ``INVALID_ARGUMENT`` with a one-line message
naming the input and the problem, logged as one line without a traceback, and cheap to reject.

The tiny model of ``tiny_servable`` parses ``tf.Example`` with ``tf.io.parse_example`` like the real
one (``tests/serving/test_serving.py`` checks the real model's answer too).
"""

from __future__ import annotations

import logging
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from mvke_tf.serving.client import ServingClient, ServingError
from mvke_tf.serving.server import ModelServer
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tiny_servable import example, examples, export_tiny

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def server(base):
    srv = ModelServer({"tiny": base}, port=0, poll_seconds=0, warmup=False).start()
    yield srv
    srv.stop(0)


@pytest.fixture()
def stub(server):
    with grpc.insecure_channel(server.target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict(stub, signature: str, name: str, proto: tensor_pb2.TensorProto) -> predict_pb2.PredictResponse:
    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = "tiny", signature
    req.inputs[name].CopyFrom(proto)
    return stub.Predict(req, timeout=30)


def rejected(stub, signature: str, name: str, proto: tensor_pb2.TensorProto) -> str:
    """The details of the ``INVALID_ARGUMENT`` the request gets; fails on any other answer."""
    with pytest.raises(grpc.RpcError) as err:
        predict(stub, signature, name, proto)
    assert err.value.code() == INVALID, (err.value.code(), err.value.details())
    details = err.value.details()
    assert "\n" not in details and details.isprintable() and len(details) < 400, repr(details)
    return details


def assert_quiet_log(caplog) -> None:
    """Rejections log one line each, no traceback; gRPC never saw an exception escape a handler."""
    for r in caplog.records:
        assert r.exc_info is None, r.getMessage()
        assert "\n" not in r.getMessage(), r.getMessage()
        assert "Exception calling application" not in r.getMessage()


def strings(values: np.ndarray) -> tensor_pb2.TensorProto:
    return tf.make_tensor_proto(values)


GOOD = example(1.5)
rng = np.random.default_rng(0)
UNPARSABLE = {
    "ascii": ([b"not a tf.Example"], 0),
    "binary": ([b"\xff\xfe\x00\x81garbage"], 0),
    "truncated": ([GOOD[: len(GOOD) // 2]], 0),
    "random_1mb": ([rng.bytes(1 << 20)], 0),
    "one_bad_among_16": ([GOOD] * 8 + [b"\xff\xfe\x00garbage"] + [GOOD] * 7, 8),
}


@pytest.mark.parametrize("case", list(UNPARSABLE))
def test_unparsable_examples_are_invalid_argument_on_one_line(stub, caplog, case):
    rows, bad = UNPARSABLE[case]
    caplog.set_level(logging.DEBUG)
    details = rejected(stub, "serving_default", "examples", strings(np.array(rows, dtype=object)))
    assert f"input 'examples' row {bad} (of {len(rows)}) is not a serialized tf.Example" in details, details
    assert "SerializeToString" in details, details  # the fix
    assert "function_node" not in details and "[Op:" not in details, details  # no TF internals
    assert_quiet_log(caplog)
    # The server is unharmed: the good rows alone answer.
    resp = predict(stub, "serving_default", "examples", strings(np.array([GOOD, GOOD], dtype=object)))
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["y"]), [3.0, 3.0])


def _proto(values: np.ndarray, **edit) -> tensor_pb2.TensorProto:
    p = tf.make_tensor_proto(values)
    for k, v in edit.items():
        if k == "dims":
            del p.tensor_shape.dim[:]
            for d in v:
                p.tensor_shape.dim.add(size=d)
        else:
            setattr(p, k, v)
    return p


X = np.arange(6, dtype=np.float32).reshape(2, 3)


@pytest.mark.parametrize(
    "proto, needles",
    [
        (_proto(X, dims=[-5, 3]), ["'x'", "negative dimension", "[-5, 3]"]),
        (_proto(X, dims=[2, -1]), ["'x'", "negative dimension"]),
        (_proto(X, dtype=999), ["'x'", "unknown DataType enum value 999", "float32"]),
        (_proto(X, dtype=types_pb2.DT_INVALID), ["'x'", "DT_INVALID"]),
        (_proto(X, dtype=types_pb2.DT_VARIANT), ["'x'", "expects dtype float32, got variant"]),
    ],
    ids=["negative_batch_dim", "negative_inner_dim", "dtype_999", "dtype_unset", "dtype_variant"],
)
def test_bad_dtype_or_shape_is_invalid_argument(stub, caplog, proto, needles):
    caplog.set_level(logging.DEBUG)
    details = rejected(stub, "scale", "x", proto)
    for needle in needles:
        assert needle in details, details
    assert_quiet_log(caplog)


def test_unknown_rank_is_invalid_argument(stub):
    p = _proto(X)
    p.tensor_shape.unknown_rank = True
    assert "unknown_rank" in rejected(stub, "scale", "x", p)


def test_declared_shape_must_be_filled(stub):
    # A few bytes declaring 50 rows and holding no value: TF would pad it to 50 empty examples.
    p = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    p.tensor_shape.dim.add(size=50)
    details = rejected(stub, "serving_default", "examples", p)
    assert "input 'examples'" in details and "declares 50 elements but the TensorProto holds 0 values" in details
    partial = strings(np.array([GOOD, GOOD, GOOD], dtype=object))
    partial.tensor_shape.dim[0].size = 5
    assert "declares 5 elements but the TensorProto holds 3 values" in rejected(
        stub, "serving_default", "examples", partial
    )
    floats = _proto(X, dims=[4, 3])  # tensor_content of 2 x 3 floats, shape says 4 x 3
    assert "tensor_content holds 24 bytes" in rejected(stub, "scale", "x", floats)
    floats = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0, 3.0, 4.0, 5.0])
    floats.tensor_shape.dim.add(size=4)
    floats.tensor_shape.dim.add(size=3)
    assert "declares 12 elements but the TensorProto holds 5 values" in rejected(stub, "scale", "x", floats)
    # Every value, or a single one repeated (TF's compact form, what make_tensor_proto writes), is fine.
    splat = tf.make_tensor_proto(1.0, dtype=tf.float32, shape=[4, 3])
    assert len(splat.float_val) == 1
    np.testing.assert_allclose(tf.make_ndarray(predict(stub, "scale", "x", splat).outputs["z"]), [6.0] * 4)
    np.testing.assert_allclose(tf.make_ndarray(predict(stub, "scale", "x", _proto(X)).outputs["z"]), [6.0, 24.0])


def test_batch_size_is_capped_by_default(stub):
    t0 = time.monotonic()
    p = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    p.tensor_shape.dim.add(size=100_000)
    details = rejected(stub, "serving_default", "examples", p)
    assert "batch size 100000 exceeds the server's max_batch_size 8192" in details, details
    assert "--max_batch_size" in details and "max_batch" in details  # the fixes: split, or raise the cap
    splat = tf.make_tensor_proto(GOOD, shape=[100_000])  # one value repeated: the same cap
    assert "max_batch_size 8192" in rejected(stub, "serving_default", "examples", splat)
    assert time.monotonic() - t0 < 5


def test_a_repeated_output_filter_name_is_invalid_argument(stub):
    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = "tiny", "serving_default"
    req.inputs["examples"].CopyFrom(strings(np.array([GOOD])))
    req.output_filter.extend(["y", "y"])
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(req, timeout=30)
    assert err.value.code() == INVALID and "duplicate output tensor alias 'y'" in err.value.details()
    del req.output_filter[1]
    assert list(stub.Predict(req, timeout=30).outputs) == ["y"]


def test_max_batch_size_option(base):
    srv = ModelServer({"tiny": base}, port=0, poll_seconds=0, warmup=False, max_batch_size=8).start()
    try:
        c = ServingClient(srv.target, "tiny", retries=0, timeout=30)
        np.testing.assert_allclose(c.score(examples(8))["y"], 2 * np.arange(8))
        with pytest.raises(ServingError) as err:
            c.score(examples(9))
        assert err.value.code == INVALID and "batch size 9 exceeds the server's max_batch_size 8" in err.value.details
        # The client's max_batch splits a large job under the server's cap.
        np.testing.assert_allclose(c.score(examples(20), max_batch=8)["y"], 2 * np.arange(20))
        c.close()
    finally:
        srv.stop(0)
    with pytest.raises(ValueError, match="max_batch_size"):
        ModelServer({"tiny": base}, max_batch_size=0)


def test_max_batch_size_flag(base):
    from mvke_tf.serving.__main__ import build_parser, build_server

    parser = build_parser()
    flags = ["--model", f"tiny={base}", "--port", "0"]
    assert build_server(parser.parse_args(flags)).limits.max_batch_size == 8192
    assert build_server(parser.parse_args([*flags, "--max_batch_size", "16"])).limits.max_batch_size == 16
    assert build_server(parser.parse_args([*flags, "--max_batch_size", "0"])).limits.max_batch_size is None
    with pytest.raises(SystemExit):
        build_server(parser.parse_args([*flags, "--max_batch_size", "-1"]), parser)


@pytest.mark.parametrize("port", ["99999", "70000", "65536", "-1"])
def test_a_port_outside_the_tcp_range_is_an_argument_error(base, port, capsys):
    from mvke_tf.serving.__main__ import build_parser, build_server

    parser = build_parser()
    with pytest.raises(SystemExit) as e:
        build_server(parser.parse_args(["--model", f"tiny={base}", "--port", port]), parser)
    assert e.value.code == 2
    assert f"--port must be a TCP port in 1..65535 (or 0 for a free one), got {port}" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["int_val only", "one string_val and 15 int_val"])
def test_values_in_another_typed_field_are_invalid_argument(stub, layout):
    p = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    p.tensor_shape.dim.add(size=16)
    if layout != "int_val only":
        p.string_val.append(GOOD)
    p.int_val.extend([7] * (16 - len(p.string_val)))
    details = rejected(stub, "serving_default", "examples", p)
    assert "a DT_STRING tensor holds its values in string_val, not in int_val" in details, details


def test_a_requests_expanded_bytes_are_bounded_before_anything_is_expanded(base, tmp_path):
    """One 64 KB string repeated over [8192] is 512 MB once expanded: RESOURCE_EXHAUSTED, and the server's
    peak memory (VmHWM of its process) grows by far less than one such expansion."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tiny_servable import free_port

    root = Path(__file__).resolve().parents[2]
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "mvke_tf.serving", "--model", f"tiny={base}"]
    cmd += ["--port", str(port), "--poll_seconds", "0"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stderr=subprocess.DEVNULL)

    def peak_mib() -> float:  # the process's high-water mark of resident memory
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024

    try:
        with ServingClient(f"127.0.0.1:{port}", "tiny", timeout=30) as client:
            assert client.status(timeout=120)[0].state == "AVAILABLE"
            np.testing.assert_allclose(client.score(examples(4))["y"], 2 * np.arange(4))
        before = peak_mib()
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1)]) as ch:
            s = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            for size, rows in ((64 * 1024, 8192), (192 * 1024, 8192), (8 * 1024 * 1024, 64)):
                splat = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
                splat.tensor_shape.dim.add(size=rows)
                splat.string_val.append(b"x" * size)
                req = predict_pb2.PredictRequest()
                req.model_spec.name = "tiny"
                req.inputs["examples"].CopyFrom(splat)
                with pytest.raises(grpc.RpcError) as err:
                    s.Predict(req, timeout=60)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
                assert f"expand to {size * rows} bytes" in err.value.details()
                assert "max_request_bytes 67108864" in err.value.details() and "\n" not in err.value.details()
        grown = peak_mib() - before
        # Expanding the first request alone would take 512 MiB; refused, the peak barely moves (the
        # requests themselves are 66 KB, 192 KB and 8 MB).
        assert grown < 64, grown
    finally:
        proc.terminate()
        proc.wait(30)


def _status(call, request):
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=30)
    return err.value.code(), err.value.details()


def test_echoed_client_input_is_bounded_and_escaped(server, stub, caplog):
    """Huge or forged names get their own status code with a short one-line message, and one short log line."""
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc

    caplog.set_level(logging.INFO, logger="mvke_tf.serving.server")
    huge = "m" * 20_000
    cases = []
    req = predict_pb2.PredictRequest()
    req.model_spec.name = huge
    req.inputs["examples"].CopyFrom(strings(np.array([GOOD])))
    cases.append((stub.Predict, req, grpc.StatusCode.NOT_FOUND, "is not served"))
    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = "tiny", "s" * 20_000
    cases.append((stub.Predict, req, INVALID, "not found in signature def"))
    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = "tiny", "serving_default"
    for i in range(10_000):
        req.inputs[f"input_{i}"].CopyFrom(strings(np.array([GOOD])))
    cases.append((stub.Predict, req, INVALID, "(10000 in all)"))
    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = "tiny", "serving_default"
    req.inputs["examples"].CopyFrom(strings(np.array([GOOD])))
    req.output_filter.extend(f"out_{i}" for i in range(10_000))
    cases.append((stub.Predict, req, INVALID, "(10000 in all)"))
    forged = "tiny\n2026-01-01 00:00:00 INFO mvke_tf.serving.server: forged record"
    req = predict_pb2.PredictRequest()
    req.model_spec.name = forged
    req.inputs["examples"].CopyFrom(strings(np.array([GOOD])))
    cases.append((stub.Predict, req, grpc.StatusCode.NOT_FOUND, "is not served"))
    meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    meta.model_spec.name = huge
    cases.append((stub.GetModelMetadata, meta, grpc.StatusCode.NOT_FOUND, "is not served"))
    with grpc.insecure_channel(server.target) as channel:
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = huge
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        cases.append((models.GetModelStatus, status, grpc.StatusCode.NOT_FOUND, "is not served"))
        answers = []
        for call, request, code, needle in cases:
            got_code, details = _status(call, request)
            assert got_code == code and needle in details, (got_code, details[:200])
            assert len(details) <= 1000 and "\n" not in details and details.isprintable(), len(details)
            answers.append(details)
    assert "tiny\\n2026-01-01" in answers[4]  # the forged newline, escaped
    for record in caplog.records:
        assert "\n" not in record.getMessage() and len(record.getMessage()) < 1500, record.getMessage()[:200]
    assert not any(r.getMessage().startswith("2026-01-01") for r in caplog.records)


@pytest.mark.parametrize("method", ["Classify", "Regress", "MultiInference"])
def test_other_inference_methods_are_unimplemented_without_a_traceback(stub, caplog, method):
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    caplog.set_level(logging.INFO)
    request = {
        "Classify": classification_pb2.ClassificationRequest,
        "Regress": regression_pb2.RegressionRequest,
        "MultiInference": inference_pb2.MultiInferenceRequest,
    }[method]()
    code, details = _status(getattr(stub, method), request)
    assert code == grpc.StatusCode.UNIMPLEMENTED and "call Predict" in details
    assert_quiet_log(caplog)
