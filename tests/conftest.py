"""Shared fixtures. The environment is set before anything imports TensorFlow."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from mvke_tf.data import synthetic  # noqa: E402

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
