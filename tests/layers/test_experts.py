"""The expert and gating layers shared by the model families, against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

from mvke_tf.layers import experts as experts_module
from mvke_tf.layers import ranking as ranking_layers
from mvke_tf.layers.experts import ExtractionLayer, MixtureOfExperts, SoftmaxGate, mix

B, IN = 5, 7


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


def _randomized(gate: SoftmaxGate, x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Builds ``gate``, gives it random (far from uniform) weights and returns them."""
    gate(tf.constant(x))
    rng = np.random.default_rng(seed)
    kernel = rng.normal(scale=1.5, size=gate.dense.kernel.shape).astype(np.float32)
    bias = rng.normal(size=gate.dense.bias.shape).astype(np.float32)
    gate.dense.set_weights([kernel, bias])
    return kernel, bias


def test_single_gate_matches_numpy():
    x = np.random.default_rng(1).normal(size=(B, IN)).astype(np.float32)
    gate = SoftmaxGate(4)
    kernel, bias = _randomized(gate, x)
    got = gate(tf.constant(x)).numpy()
    assert got.shape == (B, 4)
    np.testing.assert_allclose(got, _softmax(x @ kernel + bias), atol=1e-6)


def test_many_gates_in_one_dense_match_numpy():
    g, e = 6, 3
    x = np.random.default_rng(2).normal(size=(B, IN)).astype(np.float32)
    gate = SoftmaxGate(e, num_gates=g)
    kernel, bias = _randomized(gate, x)
    assert kernel.shape == (IN, g * e)
    got = gate(tf.constant(x)).numpy()
    assert got.shape == (B, g, e)
    # Gate i owns logits [i * E, (i + 1) * E) of the Dense; softmax over the experts only.
    want = _softmax((x @ kernel + bias).reshape(B, g, e))
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=1e-6)
    assert np.abs(got - 1.0 / e).max() > 0.05  # the check above is not met by uniform gates


@pytest.mark.parametrize("num_gates", [None, 1, 4])
def test_gate_config_round_trips(num_gates):
    gate = SoftmaxGate(3, num_gates=num_gates, name="g")
    config = gate.get_config()
    assert config["num_gates"] == num_gates and config["num_experts"] == 3
    clone = SoftmaxGate.from_config(config)
    assert clone.get_config() == config
    # Through Keras's registry as well, as a saved model reads it.
    revived = tf.keras.layers.deserialize(tf.keras.layers.serialize(gate))
    assert isinstance(revived, SoftmaxGate) and revived.get_config() == config
    x = np.random.default_rng(3).normal(size=(B, IN)).astype(np.float32)
    _randomized(gate, x)
    revived(tf.constant(x))
    revived.set_weights(gate.get_weights())
    np.testing.assert_array_equal(revived(tf.constant(x)).numpy(), gate(tf.constant(x)).numpy())


@pytest.mark.parametrize("num_experts, num_gates", [(0, None), (3, 0)])
def test_gate_rejects_empty_sizes(num_experts, num_gates):
    with pytest.raises(ValueError, match="must be >= 1"):
        SoftmaxGate(num_experts, num_gates=num_gates)


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return _softmax(rng.normal(scale=2.0, size=shape)).astype(np.float32)


def test_mix_one_gate_matches_numpy():
    rng = np.random.default_rng(4)
    w, ex = _weights(rng, B, 3), rng.normal(size=(B, 3, 8)).astype(np.float32)
    got = mix(tf.constant(w), tf.constant(ex)).numpy()
    assert got.shape == (B, 8)
    np.testing.assert_allclose(got, np.einsum("bs,bsd->bd", w, ex), atol=1e-6)


def test_mix_many_gates_over_shared_experts_matches_numpy():
    rng = np.random.default_rng(5)
    w, ex = _weights(rng, B, 6, 3), rng.normal(size=(B, 3, 8)).astype(np.float32)
    got = mix(tf.constant(w), tf.constant(ex)).numpy()
    assert got.shape == (B, 6, 8)
    np.testing.assert_allclose(got, np.einsum("bge,bed->bgd", w, ex), atol=1e-6)


def test_mix_many_gates_over_own_experts_matches_numpy():
    rng = np.random.default_rng(6)
    w, ex = _weights(rng, B, 6, 3), rng.normal(size=(B, 6, 3, 8)).astype(np.float32)
    got = mix(tf.constant(w), tf.constant(ex)).numpy()
    assert got.shape == (B, 6, 8)
    np.testing.assert_allclose(got, np.einsum("bge,bged->bgd", w, ex), atol=1e-6)
    # Gate g reads its own expert set only.
    changed = ex.copy()
    changed[:, 1] += 10.0
    moved = mix(tf.constant(w), tf.constant(changed)).numpy()
    np.testing.assert_allclose(np.delete(moved, 1, axis=1), np.delete(got, 1, axis=1), atol=1e-6)


def test_gate_then_mix_matches_numpy():
    """The multi-domain PLE body: G gates over K shared experts plus one expert of each gate's own."""
    rng = np.random.default_rng(7)
    g, k, d = 4, 2, 5
    x = rng.normal(size=(B, IN)).astype(np.float32)
    gate = SoftmaxGate(k + 1, num_gates=g)
    kernel, bias = _randomized(gate, x, seed=8)
    shared = rng.normal(size=(B, k, d)).astype(np.float32)
    own = rng.normal(size=(B, g, d)).astype(np.float32)
    stacked = tf.concat([tf.tile(tf.constant(shared)[:, None], [1, g, 1, 1]), tf.constant(own)[:, :, None]], axis=2)
    got = mix(gate(tf.constant(x)), stacked).numpy()
    w = _softmax((x @ kernel + bias).reshape(B, g, k + 1))
    want = np.einsum("bgk,bkd->bgd", w[..., :k], shared) + w[..., k:] * own
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("w_shape, e_shape", [((B, 3), (B, 3)), ((B, 2, 3), (B, 3)), ((B, 3), (B, 2, 3, 4, 5))])
def test_mix_rejects_shapes_that_do_not_fit(w_shape, e_shape):
    with pytest.raises(ValueError, match="do not fit"):
        mix(tf.zeros(w_shape), tf.zeros(e_shape))


def test_expert_mixtures_live_in_the_experts_module():
    for cls in (MixtureOfExperts, ExtractionLayer):
        assert cls.__module__ == experts_module.__name__
        assert not hasattr(ranking_layers, cls.__name__)
    moe = MixtureOfExperts(3, (6, 4), num_gates=2, dropout=0.1)
    ple = ExtractionLayer(2, 1, 2, (6, 4), last=False)
    for layer in (moe, ple):
        revived = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
        assert type(revived) is type(layer) and revived.get_config() == layer.get_config()
    x = tf.random.normal([B, IN])
    assert [o.shape for o in moe(x)] == [(B, 4)] * 2
    assert [o.shape for o in ple([x, x, x])] == [(B, 4)] * 3
