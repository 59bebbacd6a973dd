"""Regression heads and dense-vector inputs of the rankers (as the task-correlation benchmark uses them)."""

import numpy as np
import pytest
import tensorflow as tf

from mvke_tf.config import ConfigError, FieldSpec
from mvke_tf.models.family import family_of
from mvke_tf.models.ranking import RankingConfig, RankingModel, build_ranking_model
from mvke_tf.train import compile_model

TINY = dict(embedding_dim=4, expert_units=(8,), bottom_units=(8,), tower_units=(4,), tasks=("y1", "y2"))
DIM = 5


def vector_model(model_type: str = "ranking_mmoe", heads=("regression", "regression")) -> RankingModel:
    config = RankingConfig(model_type=model_type, task_heads=heads, **TINY)
    return build_ranking_model((), config, dense_fields=("x",), dense_sizes=(DIM,))


def features(n: int = 16, seed: int = 0) -> dict[str, tf.Tensor]:
    return {"x": tf.constant(np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32) * 3)}


@pytest.mark.parametrize(
    "model_type", ["ranking_shared_bottom", "ranking_omoe", "ranking_mmoe", "ranking_single_task", "ranking_ple"]
)
def test_regression_heads_output_the_linear_logit(model_type):
    model = vector_model(model_type)
    x = features()
    out, logits = model(x), model.logits(x)
    for t in ("y1", "y2"):
        assert out[t].shape == (16,)
        np.testing.assert_allclose(out[t].numpy(), logits[t].numpy(), rtol=1e-6)
    both = np.concatenate([out["y1"].numpy(), out["y2"].numpy()])
    assert both.min() < 0 or both.max() > 1, "a regression output is not squashed into (0, 1)"


def test_mixed_heads_keep_the_sigmoid_on_the_binary_task():
    model = vector_model(heads=("binary", "regression"))
    x = features()
    out, logits = model(x), model.logits(x)
    np.testing.assert_allclose(out["y1"].numpy(), tf.sigmoid(logits["y1"]).numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["y2"].numpy(), logits["y2"].numpy(), rtol=1e-6)


def test_a_dense_vector_feeds_the_bottom_directly():
    model = vector_model("shared_bottom")
    x = features(4)
    layer = model.bottom.dense[0]
    assert layer.kernel.shape == (DIM, 8)
    hidden = tf.nn.relu(x["x"] @ layer.kernel + layer.bias)
    np.testing.assert_allclose(model.bottom(x["x"]).numpy(), hidden.numpy(), rtol=1e-5, atol=1e-6)


def test_scalar_and_vector_dense_inputs_concatenate_in_order_and_nan_is_zero():
    config = RankingConfig(model_type="ranking_shared_bottom", task_heads=("regression", "regression"), **TINY)
    model = build_ranking_model((), config, dense_fields=("a", "v"), dense_sizes=(1, 3))
    f = {"a": tf.constant([1.0, 2.0]), "v": tf.constant([[3.0, np.nan, 5.0], [6.0, 7.0, 8.0]])}
    np.testing.assert_array_equal(model._dense(f).numpy(), [[1, 3, 0, 5], [2, 6, 7, 8]])


def test_config_round_trip_keeps_heads_and_dense_sizes():
    model = vector_model()
    clone = RankingModel.from_config(model.get_config())
    assert clone.dense_sizes == (DIM,) and clone.config.heads == {"y1": "regression", "y2": "regression"}
    clone(features(2))
    clone.set_weights(model.get_weights())
    x = features(3, seed=1)
    np.testing.assert_allclose(clone(x)["y2"].numpy(), model(x)["y2"].numpy(), rtol=1e-6)
    spec = family_of(model).extra_inputs(model)["x"]
    assert spec.shape == [DIM] and spec.dtype == tf.float32


def test_family_compile_gives_regression_tasks_mse():
    model = compile_model(vector_model(heads=("binary", "regression")))
    x = features(32)
    rng = np.random.default_rng(2)
    y = {"y1": rng.integers(0, 2, 32).astype(np.float32), "y2": rng.normal(size=32).astype(np.float32) * 4}
    out = model(x)
    # The compiled loss itself (Keras' evaluate would trace a whole test step for the same number).
    total = float(model.compiled_loss({t: tf.constant(v) for t, v in y.items()}, out))
    mse = np.mean((out["y2"].numpy() - y["y2"]) ** 2)
    bce = tf.keras.losses.BinaryCrossentropy()(y["y1"], out["y1"]).numpy()
    assert total == pytest.approx(mse + bce, rel=1e-4)
    assert isinstance(model.loss["y2"], tf.keras.losses.MeanSquaredError)
    assert isinstance(model.loss["y1"], tf.keras.losses.BinaryCrossentropy)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task_heads=("regression",)), "task_heads has 1 entries for 2 tasks"),
        (dict(task_heads=("binary", "poisson")), "task_heads ['poisson'] unknown"),
        (dict(task_heads=("binary", "regression"), esmm=True, tasks=("click", "conversion")), "ESMM heads"),
    ],
)
def test_head_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ConfigError) as e:
        RankingConfig(**{**TINY, **kwargs})
    assert message in str(e.value)


def test_input_errors_name_the_field():
    config = RankingConfig(**TINY)
    with pytest.raises(ConfigError, match="no dense_fields"):
        RankingModel((), config)
    with pytest.raises(ConfigError, match="dense_sizes"):
        RankingModel((), config, dense_fields=("x",), dense_sizes=(2, 3))
    with pytest.raises(ConfigError, match="fm_cross needs embedded fields"):
        RankingModel((), RankingConfig(fm_cross=True, **TINY), dense_fields=("x",))
    # Embedded fields and a dense vector together still work.
    field = FieldSpec("user", "categorical", hash_buckets=10)
    model = build_ranking_model((field,), config, dense_fields=("x",), dense_sizes=(DIM,))
    out = model({"user": tf.constant(["a", "b"]), "x": tf.zeros([2, DIM])})
    assert out["y1"].shape == (2,)
