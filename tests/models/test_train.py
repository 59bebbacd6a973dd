import numpy as np
import pytest
import tensorflow as tf

from mvke_tf.config import ConfigError, FeatureConfig
from mvke_tf.data.dataset import make_dataset
from mvke_tf.models import UserTagConfig, build_model
from mvke_tf.train import TrainConfig, format_report, train_and_evaluate

SMALL_MODEL = UserTagConfig(embedding_dim=8, dnn_units=(64, 32), top_units=(32, 16), tag_units=(32, 16))


def test_csv_and_tfrecord_give_the_same_batches(small_data):
    out, _ = small_data
    fc = FeatureConfig.from_yaml(out / "features.yaml")
    files_csv = sorted(str(p) for p in (out / "eval").glob("part-*.csv"))
    files_tfr = sorted(str(p) for p in (out / "eval").glob("part-*.tfrecord.gz"))
    extra = ("user_id", "p_click")
    a_x, a_y = next(iter(make_dataset(files_csv, fc, batch_size=64, extra_columns=extra)))
    b_x, b_y = next(iter(make_dataset(files_tfr, fc, batch_size=64, extra_columns=extra)))
    assert set(a_x) == set(b_x) == set(fc.feature_names) | set(extra)
    for name in fc.feature_names:
        spec = fc.field(name)
        want_shape = (64, spec.max_values) if spec.kind == "multi_valued" else (64,)
        assert tuple(a_x[name].shape) == want_shape, name
        if spec.kind == "numeric":
            np.testing.assert_allclose(a_x[name].numpy(), b_x[name].numpy(), rtol=1e-6, equal_nan=True)
        else:
            assert (a_x[name].numpy() == b_x[name].numpy()).all(), name
    for t in fc.labels:
        assert a_y[t].dtype == tf.float32
        np.testing.assert_array_equal(a_y[t].numpy(), b_y[t].numpy())


def test_model_outputs_named_per_task(small_data):
    out, _ = small_data
    fc = FeatureConfig.from_yaml(out / "features.yaml")
    model = build_model(fc, SMALL_MODEL)
    x, _ = next(iter(make_dataset(out / "eval", fc, batch_size=16)))
    y = model(x)
    assert set(y) == {"click", "conversion"}
    for t in y:
        assert y[t].shape == (16,)
        assert np.all((y[t].numpy() > 0) & (y[t].numpy() < 1))
    users = model.user_vectors(x, x["tags"])
    tags = model.tag_tower_outputs(tf.constant(["t0_0_0", "t1_2_3"]))  # single tags at prediction time
    assert users["click"].shape == (16, 16) and tags["conversion"][0].shape == (2, 16)
    clone = type(model).from_config(model.get_config())
    assert clone.model_config == model.model_config and clone.feature_config == model.feature_config


def test_two_tower_beats_random(small_data, tmp_path):
    out, meta = small_data
    report = train_and_evaluate(
        out, SMALL_MODEL, TrainConfig(epochs=3, batch_size=512, learning_rate=3e-3), out_dir=tmp_path, verbose=0
    )
    ev = report["eval"]
    assert ev["click"]["auc"] > 0.6, ev
    assert ev["conversion"]["auc"] > 0.6, ev
    for t in ("click", "conversion"):
        assert ev[t]["auc"] < ev[t]["oracle_auc"] + 0.02  # nothing beats the true probabilities
        assert abs(ev[t]["oracle_auc"] - meta["oracle_auc_eval"][t]) < 1e-3
    assert (tmp_path / "report.json").exists()
    text = format_report(report)
    assert "oracle AUC" in text and "click" in text


def test_keras_fit_evaluate_and_summary(small_data):
    from mvke_tf.train import compile_model

    out, _ = small_data
    fc = FeatureConfig.from_yaml(out / "features.yaml")
    mc = UserTagConfig(model_type="mvke_mt", embedding_dim=8, dnn_units=(16,), top_units=(16, 8), tag_units=(16, 8))
    model = compile_model(build_model(fc, mc))
    ds = make_dataset(out / "train", fc, batch_size=1024).take(3)
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    metrics = model.evaluate(make_dataset(out / "eval", fc, batch_size=1024).take(3), verbose=0, return_dict=True)
    assert {"click_auc", "conversion_auc", "click_loss", "conversion_loss"} <= set(metrics)
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "user_tower_mvke_mt" in text and "tag_tower_click" in text and "Total params" in text


@pytest.mark.parametrize("model_name", ["mvke_mt", "ranking_mmoe", "multi_domain_mmoe"])
def test_a_models_config_for_the_data_takes_its_labels_as_tasks(model_name):
    from mvke_tf.config import CATEGORICAL, MULTI_VALUED, FieldSpec
    from mvke_tf.models.family import config_for_data

    fc = FeatureConfig(
        (FieldSpec("sex", CATEGORICAL, hash_buckets=8),),
        FieldSpec("genres", MULTI_VALUED, hash_buckets=64, separator="|"),
        labels=("watched", "liked"),
    )
    assert config_for_data(model_name, fc).tasks == ("watched", "liked")
    assert config_for_data(model_name, fc, {"tasks": ["liked"]}).tasks == ("liked",)  # named tasks are kept


def test_train_by_model_name_on_a_teams_table(tmp_path):
    """The library entry point given a model name trains on the data's own labels (not the papers' tasks)."""
    from own_data_helpers import write_own_data

    from mvke_tf.data.own_data import describe_data

    data = write_own_data(tmp_path / "d", 800, 200)
    describe_data(str(data), data, user_id="member", labels=("watched", "liked"))
    report = train_and_evaluate(data, "two_tower", TrainConfig(epochs=1, batch_size=128), verbose=0)
    assert list(report["eval"]) == ["watched", "liked"]
    assert all(0.0 <= report["eval"][t]["auc"] <= 1.0 for t in ("watched", "liked"))
    with pytest.raises(ConfigError, match=r"model tasks \['click', 'conversion'\] have no label column.*fix: set"):
        train_and_evaluate(data, SMALL_MODEL, TrainConfig(epochs=1, batch_size=128), verbose=0)


def test_mvke_mt_serves_any_number_of_tasks_by_default():
    """The paper's VKE assignment is for its two tasks; one or three labels get every VKE per task."""
    two = UserTagConfig(model_type="mvke_mt")
    assert two.assignment() == {"click": (0, 1, 2), "conversion": (1, 2, 3, 4)}
    for tasks in (("liked",), ("watched", "liked", "shared")):
        config = UserTagConfig(model_type="mvke_mt", tasks=tasks)
        assert config.assignment() == {t: (0, 1, 2, 3, 4) for t in tasks}
        assert UserTagConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="expert_assignment has 2 sets for 3 tasks"):
        UserTagConfig(model_type="mvke_mt", tasks=("a", "b", "c"), expert_assignment=((0, 1, 2), (1, 2, 3, 4)))
