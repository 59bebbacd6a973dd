"""How much a model's output depends on which other rows share its batch.

On CPU the matmul blocks by batch size, so a row's prediction can differ in its last float32 bits
between batchings. Tests that compare runs which batch differently (Beam's portable runner against the
DirectRunner, tests/pipelines/test_portable_runner.py) take their tolerances from this bound; this
test keeps the bound true. Seeded and deterministic: the same batchings give the same bits every run.
"""

import numpy as np
import pytest
from model_helpers import randomize_weights

from mvke_tf.config import FeatureConfig
from mvke_tf.data.dataset import make_dataset
from mvke_tf.models import UserTagConfig, build_model

ROWS = 600
TINY = dict(embedding_dim=8, dnn_units=(16,), top_units=(16, 8), tag_units=(16, 8))
# Two float32 ulps of a value in [0.5, 1): the most measured (1.3e-7 relative), with room to spare.
BOUND = 4 * np.finfo(np.float32).eps


@pytest.fixture(scope="module")
def rows(small_data):
    out, _ = small_data
    fc = FeatureConfig.from_yaml(out / "features.yaml")
    x, _ = next(iter(make_dataset(out / "eval", fc, batch_size=ROWS)))
    return fc, x


def test_a_prediction_moves_by_at_most_a_few_ulps_with_its_batch(rows):
    fc, x = rows
    model = build_model(fc, UserTagConfig(model_type="mvke_mt", **TINY))
    model(x)
    randomize_weights(model, seed=3, stddev=0.1)
    whole = {k: v.numpy() for k, v in model(x).items()}
    rng = np.random.default_rng(0)
    for _ in range(3):
        cuts = np.r_[0, np.sort(rng.choice(np.arange(1, ROWS), size=15, replace=False)), ROWS]
        parts = [model({k: v[a:b] for k, v in x.items()}) for a, b in zip(cuts[:-1], cuts[1:])]
        for task, want in whole.items():
            got = np.concatenate([p[task].numpy() for p in parts])
            assert got.shape == want.shape
            rel = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float32).tiny)
            assert rel.max() <= BOUND, (task, float(rel.max()))
