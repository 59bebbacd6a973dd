import itertools

import numpy as np
import pytest
import tensorflow as tf

from mvke_tf.config import ConfigError, FieldSpec
from mvke_tf.layers import MLP, DeepFMTower, FactorizationMachine, FieldEmbedding, FieldsEmbedding, field_ids


def test_field_ids_kinds():
    cat = FieldSpec("c", "categorical", hash_buckets=50)
    ids, mask = field_ids(cat, tf.constant(["a", "b", "a"]))
    assert mask is None and ids.shape == (3,) and ids[0] == ids[2] and int(tf.reduce_max(ids)) < 50
    # Integer ids (e.g. hashed by Transform) are taken modulo the bucket count.
    ids, _ = field_ids(cat, tf.constant([3, 53, 7], tf.int64))
    assert ids.numpy().tolist() == [3, 3, 7]
    num = FieldSpec("n", "numeric", boundaries=(0.0, 1.0))
    ids, _ = field_ids(num, tf.constant([-1.0, 0.5, 2.0, float("nan")]))
    assert ids.numpy().tolist() == [1, 2, 3, 0]  # NaN -> the missing bucket
    mv = FieldSpec("m", "multi_valued", hash_buckets=50, max_values=3)
    _, mask = field_ids(mv, tf.constant([["a", "", ""], ["", "", ""]]))
    assert mask.numpy().tolist() == [[1, 0, 0], [0, 0, 0]]


def test_multi_valued_mean_pooling():
    spec = FieldSpec("m", "multi_valued", hash_buckets=20, max_values=3)
    layer = FieldEmbedding(spec, dim=4)
    x = tf.constant([["a", "b", ""], ["", "", ""], ["a", "", ""]])
    out = layer(x).numpy()
    table = layer.table.embeddings.numpy()
    ids = tf.strings.to_hash_bucket_fast(["a", "b"], 20).numpy()
    np.testing.assert_allclose(out[0], (table[ids[0]] + table[ids[1]]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[1], 0.0)  # an empty list is the zero vector
    np.testing.assert_allclose(out[2], table[ids[0]], rtol=1e-6)


def test_fields_embedding_shape_and_config():
    specs = [FieldSpec("c", "categorical", hash_buckets=10), FieldSpec("n", "numeric", boundaries=(1.0,))]
    layer = FieldsEmbedding(specs, dim=5)
    out = layer({"c": tf.constant(["x", "y"]), "n": tf.constant([0.0, 3.0])})
    assert out.shape == (2, 2, 5)
    clone = FieldsEmbedding.from_config(layer.get_config())
    assert clone.specs == layer.specs and clone.dim == 5


def test_fm_equals_pairwise_sum():
    e = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    brute = np.zeros((3, 4), np.float32)
    for i, j in itertools.combinations(range(5), 2):
        brute += e[:, i] * e[:, j]
    np.testing.assert_allclose(FactorizationMachine()(e).numpy(), brute, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(FactorizationMachine(reduce=True)(e).numpy()[:, 0], brute.sum(-1), rtol=1e-4)


def test_mlp_and_deepfm_shapes_and_config():
    mlp = MLP([8, 3], dropout=0.1)
    assert mlp(tf.zeros([2, 5])).shape == (2, 3)
    assert MLP.from_config(mlp.get_config()).get_config() == mlp.get_config()
    tower = DeepFMTower((16, 8), (8, 6))
    assert tower(tf.random.normal([4, 7, 5])).shape == (4, 6)
    assert DeepFMTower.from_config(tower.get_config()).get_config() == tower.get_config()


def test_hierarchy_prefix_embedding():
    spec = FieldSpec("tags", "multi_valued", hash_buckets=97, max_values=2, hierarchy_separator="_")
    layer = FieldEmbedding(spec, dim=3)
    out = layer(tf.constant([["t1_2_3", ""], ["t1", "t1_2"]])).numpy()
    table = layer.table.embeddings.numpy()
    row = {
        s: table[i]
        for s, i in zip(["t1", "t1_2", "t1_2_3"], tf.strings.to_hash_bucket_fast(["t1", "t1_2", "t1_2_3"], 97).numpy())
    }
    np.testing.assert_allclose(out[0], (row["t1"] + row["t1_2"] + row["t1_2_3"]) / 3, rtol=1e-5)
    # Two values: prefixes t1 | t1, t1_2 pooled together.
    np.testing.assert_allclose(out[1], (2 * row["t1"] + row["t1_2"]) / 3, rtol=1e-5)
    # A single tag [batch] at prediction time works too.
    single = FieldEmbedding(FieldSpec("tag", "categorical", hash_buckets=97, hierarchy_separator="_"), dim=3)
    assert single(tf.constant(["t1_2_3", "t4"])).shape == (2, 3)
    with pytest.raises(ConfigError, match="hierarchy_separator"):
        FieldSpec("x", "numeric", boundaries=(1.0,), hierarchy_separator="_")
