"""CppInfraValidator: the Pusher pushes only a model TensorFlow's C++ runtime loads and answers."""

import os

import tensorflow as tf
from mvke_tf.pipelines.infra_validation import BLESSED_FILE, NOT_BLESSED_FILE, CppInfraValidator
from tfx import v1 as tfx
from tfx.components.pusher import executor as pusher_executor
from tfx.types import standard_artifacts

from mvke_tf.export.warmup import write_warmup_requests


def _model_artifact(tmp, name):
    model = standard_artifacts.Model()
    model.uri = str(tmp / name)
    return model, tmp / name / "Format-Serving"  # where the Trainer writes the SavedModel


class _Scorer(tf.Module):
    """``serving_default``: serialized examples -> ``click``; with ``python_only`` through a ``tf.py_function``
    (Python runs it, the C++ runtime cannot)."""

    def __init__(self, python_only):
        super().__init__()
        self.python_only = python_only

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        x = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)})["x"]
        if self.python_only:
            return {"click": tf.py_function(lambda v: tf.sigmoid(v), [x], tf.float32)}
        return {"click": tf.sigmoid(x)}


def _export(export_dir, python_only):
    module = _Scorer(python_only)
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})
    # Warm-up requests as every export has them (the validator runs every signature on its own).
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.append(0.7)
    requests = [example.SerializeToString(), b""]
    write_warmup_requests(export_dir, {"serving_default": {"examples": requests}})
    assert module.serve(tf.constant(requests))["click"].numpy()[0] > 0.5  # Python serves it


def _validate(model, tmp, name):
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp / name)
    os.makedirs(blessing.uri, exist_ok=True)
    executor = CppInfraValidator.EXECUTOR_SPEC.executor_class()
    executor.Do({"model": [model]}, {"blessing": [blessing]}, {})
    return blessing


def _push(model, infra_blessing, tmp, serving_dir):
    model_blessing = standard_artifacts.ModelBlessing()
    model_blessing.uri = str(tmp / "model_blessing")
    model_blessing.set_int_custom_property("blessed", 1)  # the Evaluator blessed it: only the C++ check decides
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp / "pushed")
    push_destination = tfx.proto.PushDestination(
        filesystem=tfx.proto.PushDestination.Filesystem(base_directory=str(serving_dir))
    )
    from tfx.utils import proto_utils

    pusher_executor.Executor().Do(
        {"model": [model], "model_blessing": [model_blessing], "infra_blessing": [infra_blessing]},
        {"pushed_model": [pushed]},
        {"push_destination": proto_utils.proto_to_json(push_destination)},
    )
    return pushed


def test_a_model_the_cpp_runtime_cannot_serve_is_not_pushed_and_earlier_versions_stay(tmp_path):
    serving_dir = tmp_path / "serving"
    earlier = serving_dir / "1"
    earlier.mkdir(parents=True)
    (earlier / "saved_model.pb").write_bytes(b"an earlier version")

    bad, bad_dir = _model_artifact(tmp_path, "bad")
    _export(bad_dir, python_only=True)
    blessing = _validate(bad, tmp_path, "bad_blessing")
    assert blessing.get_int_custom_property("blessed") == 0
    reason = blessing.get_string_custom_property("reason")
    assert "the C++ runtime cannot serve" in reason and "\n" not in reason, reason
    assert os.path.isfile(os.path.join(blessing.uri, NOT_BLESSED_FILE))
    pushed = _push(bad, blessing, tmp_path, serving_dir)
    assert pushed.get_int_custom_property("pushed") == 0
    assert sorted(p.name for p in serving_dir.iterdir()) == ["1"]  # nothing new; the earlier version stays
    assert (earlier / "saved_model.pb").read_bytes() == b"an earlier version"

    # The same model in plain TF ops passes and is pushed (every family's export: tests/serving/test_capi.py).
    good, good_dir = _model_artifact(tmp_path, "good")
    _export(good_dir, python_only=False)
    blessing = _validate(good, tmp_path, "good_blessing")
    assert blessing.get_int_custom_property("blessed") == 1, blessing.get_string_custom_property("reason")
    assert os.path.isfile(os.path.join(blessing.uri, BLESSED_FILE))
    pushed = _push(good, blessing, tmp_path, serving_dir)
    assert pushed.get_int_custom_property("pushed") == 1
    assert len([p for p in serving_dir.iterdir() if p.is_dir()]) == 2
