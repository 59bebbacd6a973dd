"""Every model variant learns the synthetic structure: AUC > 0.6 on each task (its cost: benchmarks/models.py)."""

import pytest

from mvke_tf.data import synthetic
from mvke_tf.models import USER_TAG_MODEL_NAMES, UserTagConfig
from mvke_tf.train import TrainConfig, train_and_evaluate

SMALL_MODEL = dict(embedding_dim=16, dnn_units=(64, 32), top_units=(32, 16), tag_units=(32, 16))


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    cfg = synthetic.SyntheticConfig(num_rows=80_000, num_users=4_000, num_ads=1_000, taxonomy=(6, 3, 8), seed=11)
    out = tmp_path_factory.mktemp("train_data")
    synthetic.generate(cfg, out)
    return out


@pytest.mark.parametrize("model_type", USER_TAG_MODEL_NAMES)
def test_model_learns_the_synthetic_structure(model_type, train_data):
    mc = UserTagConfig(model_type=model_type, **SMALL_MODEL)
    report = train_and_evaluate(
        train_data, mc, TrainConfig(epochs=2, batch_size=256, learning_rate=2e-3, seed=1), verbose=0
    )
    ev = report["eval"]
    for task in ("click", "conversion"):
        assert ev[task]["auc"] > 0.6, (model_type, ev)
        assert ev[task]["auc"] < ev[task]["oracle_auc"] + 0.02
