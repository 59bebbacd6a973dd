"""The SavedModel contract (docs/serving.md): signatures, tower combination, warm-up file, standard ops."""

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import gate_spread, randomize_weights
from reference_helpers import parse_user_examples

from mvke_tf.data import synthetic
from mvke_tf.export import (
    SIGNATURES,
    WARMUP_PATH,
    describe_signatures,
    examples_from_rows,
    export_saved_model,
    non_standard_ops,
    saved_model_ops,
)
from mvke_tf.export.describe import PY_FUNC_OPS
from mvke_tf.export.examples import dummy_rows
from mvke_tf.export.warmup import prediction_log, read_warmup_requests
from mvke_tf.models import UserTagConfig, build_model

TINY = dict(embedding_dim=8, dnn_units=(16,), top_units=(16, 8), tag_units=(16, 8))
FC = synthetic.feature_config()
TAGS = ["t0_0_0", "t1_2_3", "t5_0_7", "unknown_tag"]
BIAS = {"click": 0.25, "conversion": -1.5}


def user_rows(n=5):
    """Varied user rows; row 1 leaves most fields out (missing), row 2 gives a joined multi-valued string."""
    rows = dummy_rows(FC, n, user_only=True)
    for f in FC.user_fields:
        if f.kind == "numeric":
            rows[f.name] = [f.boundaries[0] - 1.0, None, f.boundaries[-1] + 1.0, float("nan"), 0.5][:n]
        elif f.kind == "multi_valued":
            rows[f.name] = [[f"{f.name}_a", f"{f.name}_b"], [], f"{f.name}_c|{f.name}_d", ["x"] * 12, ["y"]][:n]
        else:
            rows[f.name] = [f"{f.name}_v{i}" if i != 1 else None for i in range(n)]
    return rows


def export(tmp_path_factory, model_type):
    model = build_model(FC, UserTagConfig(model_type=model_type, **TINY))
    randomize_weights(model, seed=5, stddev=0.15)  # gates far from uniform: a wrong gate fails by orders of magnitude
    for t, b in BIAS.items():
        model.score_bias[t].assign(b)
    path = export_saved_model(model, tmp_path_factory.mktemp(model_type) / "1")
    return model, path, tf.saved_model.load(str(path))


@pytest.fixture(scope="module")
def mvke(tmp_path_factory):
    return export(tmp_path_factory, "mvke_mt")


@pytest.fixture(scope="module")
def mmoe(tmp_path_factory):
    return export(tmp_path_factory, "mmoe")


def num_vke(mc):
    if mc.model_type == "mvke_mt":
        return {t: len(s) for t, s in mc.assignment().items()}
    return {t: 1 for t in mc.tasks}


def spec_of(sig):
    args, kwargs = sig.structured_input_signature
    assert args == ()
    ins = {k: (v.dtype, v.shape.as_list()) for k, v in kwargs.items()}
    outs = {k: (v.dtype, v.shape.as_list()) for k, v in sig.structured_outputs.items()}
    return ins, outs


@pytest.mark.parametrize("which", ["mvke", "mmoe"])
def test_signature_contract(which, request):
    model, _, loaded = request.getfixturevalue(which)
    assert set(loaded.signatures) == set(SIGNATURES)
    s = num_vke(model.model_config)
    examples = {"examples": (tf.string, [None])}
    assert spec_of(loaded.signatures["serving_default"]) == (
        examples,
        {t: (tf.float32, [None]) for t in ("click", "conversion")},
    )
    assert spec_of(loaded.signatures["user_tower"]) == (
        examples,
        {f"{t}_experts": (tf.float32, [None, s[t], 8]) for t in model.tasks},
    )
    tag_out = {}
    for t in model.tasks:
        tag_out[f"{t}_embedding"] = (tf.float32, [None, 8])
        tag_out[f"{t}_gate"] = (tf.float32, [None, s[t]])
        tag_out[f"{t}_bias"] = (tf.float32, [None])
    assert spec_of(loaded.signatures["tag_tower"]) == ({"tags": (tf.string, [None])}, tag_out)


@pytest.mark.parametrize("which", ["mvke", "mmoe"])
def test_towers_reproduce_serving_default(which, request):
    """sigmoid(sum_s gate_s <experts_s, embedding> + bias) of the two towers == serving_default, per pair."""
    model, _, loaded = request.getfixturevalue(which)
    rows = user_rows()
    users = examples_from_rows(rows, FC)
    n_u, n_t = len(users), len(TAGS)
    # Every user x tag pair as one tf.Example (the tag as a one-element list).
    pairs = {k: [v for v in col for _ in TAGS] for k, col in rows.items()}
    pairs[FC.tag_field.name] = [[tag] for _ in range(n_u) for tag in TAGS]
    want = loaded.signatures["serving_default"](examples=tf.constant(examples_from_rows(pairs, FC)))
    experts = loaded.signatures["user_tower"](examples=tf.constant(users))
    tags = loaded.signatures["tag_tower"](tags=tf.constant(TAGS))
    # The towers equal the model's own halves.
    ref_users = model.user_tower_outputs(parse_user_examples(tf.constant(users), FC))
    ref_tags = model.tag_tower_outputs(tf.constant(TAGS))
    for t in model.tasks:
        np.testing.assert_allclose(experts[f"{t}_experts"].numpy(), ref_users[t].numpy(), atol=1e-6)
        np.testing.assert_allclose(tags[f"{t}_embedding"].numpy(), ref_tags[t][0].numpy(), atol=1e-6)
        np.testing.assert_allclose(tags[f"{t}_gate"].numpy(), ref_tags[t][1].numpy(), atol=1e-6)
        np.testing.assert_allclose(tags[f"{t}_bias"].numpy(), np.full(n_t, BIAS[t]), atol=1e-7)
        if which == "mvke":  # the gates matter: tags route to different mixtures of the VKEs
            assert gate_spread(tags[f"{t}_gate"].numpy()) > 0.01  # untrained: ~2e-4
    for t in model.tasks:
        big_e = experts[f"{t}_experts"].numpy()  # [U, S, d]
        e, w, b = (tags[f"{t}_{k}"].numpy() for k in ("embedding", "gate", "bias"))  # [T, d], [T, S], [T]
        logits = np.einsum("usd,td,ts->ut", big_e, e, w) + b[None, :]
        fast = 1.0 / (1.0 + np.exp(-logits))
        np.testing.assert_allclose(fast, want[t].numpy().reshape(n_u, n_t), atol=1e-5)
        assert want[t].numpy().std() > 0  # the pairs differ: the check is not vacuous
    if which == "mmoe":
        np.testing.assert_array_equal(tags["click_gate"].numpy(), np.ones((n_t, 1), np.float32))


def test_user_tower_ignores_other_features_and_defaults_missing(mvke):
    model, _, loaded = mvke
    rows = user_rows(2)
    plain = examples_from_rows(rows, FC)
    extra = examples_from_rows({**rows, "tags": [["t1_2_3"], []], "click": [1, 0], "user_id": ["u1", "u2"]}, FC)
    a = loaded.signatures["user_tower"](examples=tf.constant(plain))
    b = loaded.signatures["user_tower"](examples=tf.constant(extra))
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    empty = loaded.signatures["user_tower"](examples=tf.constant([b""]))  # every field missing
    missing = model.user_tower_outputs({k: v[:1] for k, v in parse_user_examples(tf.constant([b""]), FC).items()})
    np.testing.assert_allclose(empty["click_experts"].numpy(), missing["click"].numpy(), atol=1e-6)


@pytest.mark.parametrize("which", ["mvke", "mmoe"])
def test_warmup_requests(which, request):
    _, path, loaded = request.getfixturevalue(which)
    assert (path / WARMUP_PATH).is_file()
    logs = read_warmup_requests(path)
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == list(SIGNATURES)
    for log in logs:
        req = log.predict_log.request
        sig = loaded.signatures[req.model_spec.signature_name]
        _, kwargs = sig.structured_input_signature
        assert set(req.inputs) == set(kwargs)
        inputs = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
        assert all(v.ndim == 1 and 1 <= len(v) <= 8 for v in inputs.values())
        out = sig(**{k: tf.constant(v) for k, v in inputs.items()})  # the request runs
        assert all(np.isfinite(v.numpy()).all() for v in out.values())


def test_warmup_record_is_a_prediction_log_with_the_request():
    from tensorflow_serving.apis import prediction_log_pb2

    inputs = {"examples": np.array([b"a", b"bc"], dtype=object), "k": np.array(3, dtype=np.int32)}
    log = prediction_log_pb2.PredictionLog.FromString(prediction_log("mvke", "top_tags", inputs))
    request = log.predict_log.request
    assert (request.model_spec.name, request.model_spec.signature_name) == ("mvke", "top_tags")
    assert tf.make_ndarray(request.inputs["examples"]).tolist() == [b"a", b"bc"]
    assert tf.make_ndarray(request.inputs["k"]).shape == () and int(tf.make_ndarray(request.inputs["k"])) == 3


@pytest.mark.parametrize("which", ["mvke", "mmoe"])
def test_only_standard_ops(which, request):
    """Every op of every function graph is a core TF op, none calls back into Python (TF Serving loads it)."""
    from tensorflow.python.framework import op_def_registry

    _, path, _ = request.getfixturevalue(which)
    ops = saved_model_ops(path)
    assert {"ParseExampleV2", "StringToHashBucketFast", "MatMul"} <= ops, sorted(ops)
    assert not ops & PY_FUNC_OPS
    assert non_standard_ops(path) == set()
    functions = {f for f in ops if f.startswith("__inference_")}
    assert all(op_def_registry.get(op) is not None for op in ops - functions), sorted(ops - functions)


def test_describe_signatures(mvke):
    _, path, _ = mvke
    text = describe_signatures(path, SIGNATURES)
    for name in SIGNATURES:
        assert f"signature_def['{name}']:" in text
    assert "inputs['examples'] tensor_info:" in text and "inputs['tags'] tensor_info:" in text
    assert "outputs['click_experts'] tensor_info:" in text and "shape: (-1, 3, 8)" in text


def test_examples_from_rows():
    rows = {
        "gender": ["f", None],
        "avg_ctr_7d": [0.5, float("nan")],
        "tags": ["t1|t2", np.array([b"t3"])],
        "click": [1, 0],
        "user_id": ["u1", "u2"],
    }
    fc = FC
    out = [tf.train.Example.FromString(b).features.feature for b in examples_from_rows(rows, fc)]
    assert out[0]["gender"].bytes_list.value == [b"f"] and "gender" not in out[1]
    assert out[0]["avg_ctr_7d"].float_list.value == [0.5] and "avg_ctr_7d" not in out[1]
    assert list(out[0]["tags"].bytes_list.value) == [b"t1", b"t2"] and list(out[1]["tags"].bytes_list.value) == [b"t3"]
    assert out[0]["click"].int64_list.value == [1] and out[1]["user_id"].bytes_list.value == [b"u2"]
    typed = examples_from_rows({"tags": [[1, 2]]}, fc, dtypes={"tags": tf.int64})
    assert list(tf.train.Example.FromString(typed[0]).features.feature["tags"].int64_list.value) == [1, 2]
    with pytest.raises(ValueError, match="different lengths"):
        examples_from_rows({"tags": [["a"]], "click": [1, 0]}, fc)
