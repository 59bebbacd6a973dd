"""The task-correlation generator against its definition (Ma et al., KDD 2018, Section 3.2)."""

import numpy as np
import pytest

from mvke_tf.data import task_correlation as tc


@pytest.mark.parametrize("p", [1.0, 0.9, 0.5, 0.0, -0.3])
def test_weight_vectors_have_cosine_p_and_norm_c(p):
    d = tc.generate(10, p, dim=20, c=2.5, seed=3)
    w1, w2 = d.weights
    np.testing.assert_allclose(np.linalg.norm(d.weights, axis=1), [2.5, 2.5], rtol=1e-12)
    np.testing.assert_allclose(w1 @ w2 / (np.linalg.norm(w1) * np.linalg.norm(w2)), p, atol=1e-12)


def test_labels_follow_the_definition():
    d = tc.generate(50, 0.7, dim=8, m=4, noise_std=0.0, seed=1)
    x = d.x.astype(np.float64)
    expected = np.stack(
        [x @ w + sum(np.sin(a * (x @ w) + b) for a, b in zip(d.alpha, d.beta)) for w in d.weights],
        axis=1,
    )
    np.testing.assert_allclose(d.y, expected, rtol=1e-5, atol=1e-5)
    assert d.x.shape == (50, 8) and d.y.shape == (50, 2)


def test_p_one_gives_identical_noiseless_labels():
    d = tc.generate(200, 1.0, noise_std=0.0, seed=5)
    np.testing.assert_array_equal(d.y[:, 0], d.y[:, 1])
    assert d.label_correlation == pytest.approx(1.0)


def test_noise_has_the_given_std():
    clean = tc.generate(20_000, 0.5, noise_std=0.0, seed=2)
    noisy = tc.generate(20_000, 0.5, noise_std=0.1, seed=2)
    assert np.std(noisy.y - clean.y) == pytest.approx(0.1, rel=0.03)


def test_one_seed_shares_inputs_across_p_and_only_w2_moves():
    a, b = tc.generate(30, 0.9, seed=7), tc.generate(30, 0.2, seed=7)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.weights[0], b.weights[0])
    np.testing.assert_array_equal(a.y[:, 0], b.y[:, 0])
    assert not np.allclose(a.weights[1], b.weights[1])


def test_label_correlation_falls_with_p_and_matches_pearson():
    ps = [1.0, 0.9, 0.7, 0.5, 0.0]
    data = [tc.generate(20_000, p, seed=0) for p in ps]
    corrs = [d.label_correlation for d in data]
    assert all(a > b for a, b in zip(corrs, corrs[1:])), corrs
    assert corrs[-1] == pytest.approx(0.0, abs=0.03)
    assert corrs[0] == pytest.approx(np.corrcoef(data[0].y.T)[0, 1])


@pytest.mark.parametrize("p", [1.5, -1.01, float("nan")])
def test_bad_p_names_the_field(p):
    with pytest.raises(ValueError, match=r"p=.*\[-1, 1\].*fix"):
        tc.generate(10, p)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n": 1}, "n=1"),
        ({"dim": 1}, "dim=1"),
        ({"m": -1}, "m=-1"),
        ({"c": 0.0}, "c=0.0"),
        ({"noise_std": -0.1}, "noise_std=-0.1"),
    ],
)
def test_bad_sizes_name_the_field(kwargs, field):
    args = {"n": 10, "p": 0.5, **kwargs}
    with pytest.raises(ValueError, match=field):
        tc.generate(**args)
