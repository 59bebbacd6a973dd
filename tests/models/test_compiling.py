"""The library's compile and pre-fit state: one trace of the train step, the same training as stock Keras."""

import numpy as np
import pytest
import tensorflow as tf

from mvke_tf.data import synthetic
from mvke_tf.data.dataset import make_dataset
from mvke_tf.models.compiling import build_training_state
from mvke_tf.models.family import family_of

TINY = {
    "two_tower": dict(embedding_dim=4, dnn_units=(8,), top_units=(8, 4), tag_units=(8, 4)),
    # A ranker: two of its four outputs (cvr, rank_score) have no label, loss or metric.
    "ranking_app_store": dict(embedding_dim=4, expert_units=(8,), tower_units=(4,)),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cfg = synthetic.SyntheticConfig(num_rows=3_000, num_users=300, num_ads=100, taxonomy=(3, 2, 3), seed=5)
    out = tmp_path_factory.mktemp("compiling")
    synthetic.generate(cfg, out)
    return out / "train", synthetic.feature_config()


def _compiled(model_name, weights=None):
    family = family_of(model_name)
    tf.keras.utils.set_random_seed(0)
    model = family.build(synthetic.feature_config(), family.config_for(model_name, TINY[model_name]))
    if weights is not None:
        model.set_weights(weights)
    return family, family.compile(model, learning_rate=1e-2)


@pytest.mark.parametrize("model_name", list(TINY))
def test_the_train_step_is_traced_once_and_trains_as_stock_keras(data, model_name):
    files, fc = data
    family, ours = _compiled(model_name)
    _, stock = _compiled(model_name, weights=ours.get_weights())
    fc = family.dataset_config(fc, ours)

    def batches():  # the same shuffle order for both models (a fresh dataset, the same seed)
        return make_dataset(files, fc, batch_size=256, shuffle=True, seed=3)

    family.fit(ours, batches(), epochs=1, verbose=0)
    stock.fit(batches(), epochs=1, verbose=0)  # Keras alone: creates slots and trackers in the first step
    assert ours.train_function.experimental_get_tracing_count() == 1
    assert stock.train_function.experimental_get_tracing_count() == 2
    for a, b in zip(ours.get_weights(), stock.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Optimizer slots and loss trackers exist once: nothing left to build for a second fit.
    assert build_training_state(ours, batches()) is False


def test_what_it_leaves_to_keras(data):
    files, fc = data
    family = family_of("two_tower")
    uncompiled = family.build(fc, family.config_for("two_tower", TINY["two_tower"]))
    assert build_training_state(uncompiled, make_dataset(files, fc, batch_size=8)) is False
    _, compiled = _compiled("two_tower")
    features_only = make_dataset(files, fc, batch_size=8).map(lambda x, y: x)  # no labels: not a training stream
    assert build_training_state(compiled, features_only) is False
    assert not compiled.compiled_loss.built
