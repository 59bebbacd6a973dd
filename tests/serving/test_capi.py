"""TensorFlow's C++ runtime (the C API's SavedModel loader, as TF Serving uses it) serves every export like Python."""

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import randomize_weights
from mvke_tf.serving.capi import CAPIError, build_program, check_export, run_signature

from mvke_tf.data import synthetic
from mvke_tf.export import export_saved_model, non_standard_ops
from mvke_tf.models.family import FAMILIES, family_of

FC = synthetic.feature_config()
TAGS = ["t0", "t0_1", "t1_0_2", "t2_1_1", "unseen tag"]
# One model per family, small; weights randomised so a wrong output differs by far more than 1e-6.
MODELS = {
    "mvke_mt": dict(embedding_dim=4, dnn_units=(8,), top_units=(8, 4), tag_units=(8, 4)),
    "ranking_app_store": dict(embedding_dim=4, expert_units=(8,), tower_units=(6,)),
    "multi_domain_m3oe": dict(embedding_dim=4, bottom_units=(8, 6), skip_units=(6,), expert_units=(5,), tower_units=4),
}


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return build_program(tmp_path_factory.mktemp("native"))


@pytest.mark.slow  # three exports and three C++ loads, ~1 min: make test-slow (CI runs it)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_signature_of_every_family_runs_in_the_cpp_runtime_like_python(name, program, tmp_path, monkeypatch):
    monkeypatch.setenv("MVKE_TF_NATIVE_CACHE", str(program.parent))
    family = family_of(name)
    tf.keras.utils.set_random_seed(0)
    model = family.build(FC, family.config_for(name, MODELS[name]))
    randomize_weights(model, seed=1)
    # Two-tower models also get top_tags (a tag vocabulary given): TFRS BruteForce, the k check, string outputs.
    tags = TAGS if family.has_tag_tower else None
    export_saved_model(model, tmp_path / "1", feature_config=FC, tags=tags, top_tags_max_k=3)
    report = check_export(tmp_path / "1")
    want = set(family.signatures) | ({"top_tags"} if tags else set())
    assert set(report.requests) == want and all(n >= 1 for n in report.requests.values())
    assert non_standard_ops(tmp_path / "1") == set()
    assert max(report.max_abs_diff.values()) <= 1e-6, report


def test_every_family_is_covered():
    assert {family_of(n).name for n in MODELS} == set(FAMILIES)


def test_outputs_are_the_cpp_runtimes_not_pythons(program, tmp_path):
    # A doubled input doubles the output: the program runs the graph, it does not echo anything.
    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 2.0 * x, "n": tf.strings.as_string(tf.shape(x)[0])}

    module = Doubler()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.serve})
    out = run_signature(tmp_path / "m", "serving_default", {"x": np.array([1.5, -2.0], np.float32)}, program)
    np.testing.assert_array_equal(out["y"], [3.0, -4.0])
    assert out["n"].tolist() == b"2"


def test_a_model_the_cpp_runtime_cannot_run_is_refused_with_the_reason(program, tmp_path):
    class PythonOnly(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.py_function(lambda v: v * 2.0, [x], tf.float32)}

    module = PythonOnly()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.serve})
    assert module.serve(tf.constant([1.0]))["y"].numpy().tolist() == [2.0]  # Python runs it
    with pytest.raises(CAPIError, match="the C\\+\\+ runtime cannot serve.*running the signature"):
        run_signature(tmp_path / "m", "serving_default", {"x": np.array([1.0], np.float32)}, program)
