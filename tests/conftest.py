"""Shared fixtures. The environment is set before anything imports TensorFlow."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from mvke_tf.data import synthetic  # noqa: E402

TEST_SEED = 0


@pytest.fixture(autouse=True, scope="module")
def _seeded_module():
    """Each test file starts from the same random state, whatever ran before it in its worker.

    Python's, NumPy's and TensorFlow's seeds, and the generator Keras draws its unseeded
    initialisers' seeds from (``tf.random.set_seed`` alone leaves that one unseeded). Autouse
    fixtures come first in their scope, so a file's module fixtures are built after this.
    """
    tf.keras.utils.set_random_seed(TEST_SEED)


@pytest.fixture(autouse=True)
def _seeded_test():
    """Each test starts from the same random state, whichever tests of its file ran before it."""
    tf.keras.utils.set_random_seed(TEST_SEED)


SMALL = dict(num_rows=30_000, num_users=3_000, num_ads=800, taxonomy=(6, 3, 8), seed=7)


@pytest.fixture(scope="session")
def small_config() -> synthetic.SyntheticConfig:
    return synthetic.SyntheticConfig(**SMALL)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory, small_config):
    """A small synthetic data set in both CSV and TFRecord formats."""
    out = tmp_path_factory.mktemp("synthetic")
    meta = synthetic.generate(small_config, out, formats=("csv", "tfrecord"), shard_rows=10_000)
    return out, meta
