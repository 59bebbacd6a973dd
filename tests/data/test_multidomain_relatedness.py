"""The relatedness knobs of the multi-domain generator: set cosines, coinciding logits, errors."""

import hashlib

import numpy as np
import pytest

from mvke_tf.config import ConfigError
from mvke_tf.data import multidomain as md

SMALL = dict(num_rows=3_000, num_users=300, num_ads=200, taxonomy=(4, 3, 5))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("rd, rt", [(0.2, 0.9), (0.9, 0.2), (0.0, 1.0), (0.5, 0.5)])
def test_weight_cosines_equal_the_knobs(rd, rt):
    w = md.relatedness_weights(3, 2, rd, rt, scale=2.0, rng=np.random.default_rng(0))
    assert w.shape == (3, 2, md.relatedness_dim(3, 2))
    np.testing.assert_allclose(np.linalg.norm(w, axis=-1), 2.0, atol=1e-12)
    for d in range(3):
        for t in range(2):
            for d2 in range(3):
                for t2 in range(2):
                    if (d, t) == (d2, t2):
                        continue
                    want = (rd if d != d2 else 1.0) * (rt if t != t2 else 1.0)
                    assert _cos(w[d, t], w[d2, t2]) == pytest.approx(want, abs=1e-12)


def test_realised_logit_correlation_follows_the_knob():
    # Over many impressions, the knob term of two domains (same task) correlates about as set.
    truth = md.DomainLogits(md.MultiDomainDataConfig(**SMALL, domain_correlation=0.3, task_correlation=0.8))
    users, ads = truth.world.sample_pairs(20_000, np.random.default_rng(1))
    per_domain = [truth.relatedness(users, ads, np.full(len(users), d)) for d in range(3)]  # [N, T] each
    assert np.corrcoef(per_domain[0][:, 0], per_domain[1][:, 0])[0, 1] == pytest.approx(0.3, abs=0.15)
    assert np.corrcoef(per_domain[0][:, 0], per_domain[0][:, 1])[0, 1] == pytest.approx(0.8, abs=0.15)


def test_at_correlation_one_the_true_logits_coincide():
    # Domain correlation 1 and no other domain difference: every domain has the same true logits.
    same = md.MultiDomainDataConfig(
        **SMALL,
        domain_correlation=1.0,
        task_correlation=0.3,
        preference_scale=0.0,
        click_offsets=(0.0, 0.0, 0.0),
        conversion_offsets=(0.0, 0.0, 0.0),
    )
    truth = md.DomainLogits(same)
    users, ads = truth.world.sample_pairs(500, np.random.default_rng(2))
    logits = [truth(users, ads, np.full(500, d)) for d in range(3)]
    for d in (1, 2):
        np.testing.assert_allclose(logits[d][0], logits[0][0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(logits[d][1], logits[0][1], rtol=0, atol=1e-12)
    assert np.std(logits[0][0]) > 0.5  # the term is there, not zero
    # Task correlation 1: the click and conversion knob terms coincide (the rest of each task's logit differs).
    truth = md.DomainLogits(md.MultiDomainDataConfig(**SMALL, domain_correlation=0.2, task_correlation=1.0))
    term = truth.relatedness(users, ads, np.arange(500) % 3)
    np.testing.assert_allclose(term[:, 0], term[:, 1], rtol=0, atol=1e-12)
    assert np.std(term[:, 0]) > 0.5


def test_knobs_change_the_labels_and_keep_the_target_rates():
    cfg = md.MultiDomainDataConfig(
        num_rows=20_000,
        world_scale=0.0,
        preference_scale=0.0,
        target_ctr=0.3,
        target_cvr=0.5,
        domain_correlation=0.2,
        task_correlation=0.9,
        relatedness_scale=1.5,
    )
    data = md.generate(cfg)
    click = np.concatenate([data[s]["click"] for s in md.SPLITS])
    assert click.mean() == pytest.approx(0.3, abs=0.03)  # the refitted intercept (offsets shift it a little)
    # With the knob term as the only signal, the true probabilities still rank the labels well.
    assert all(v["click"] > 0.7 for v in data["oracle_auc"]["test"].values())


def test_defaults_keep_the_data_of_before():
    # The digest of a small default data set, computed before the knobs existed.
    data = md.generate(md.MultiDomainDataConfig(**SMALL, seed=3))
    h = hashlib.sha256()
    for s in md.SPLITS:
        for k in sorted(data[s]):
            h.update(k.encode())
            h.update(np.asarray(data[s][k]).astype(str).tobytes())
    assert h.hexdigest() == "345fd5296a3096002493623345af7db5177820edd75a6c8d8065b729ba6341f3"


@pytest.mark.parametrize(
    "field, value",
    [
        ("domain_correlation", 1.5),
        ("domain_correlation", -0.1),
        ("task_correlation", 2.0),
        ("task_correlation", "high"),
        ("relatedness_scale", -1.0),
        ("world_scale", -0.5),
    ],
)
def test_bad_knob_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"{field}=.*fix:"):
        md.MultiDomainDataConfig(**{field: value})


def test_relatedness_fields_read_the_knob_inputs():
    names = [s.name for s in md.relatedness_fields()]
    assert set(md.RELATEDNESS_USER_FIELDS) <= set(names) and "tag_l1" in names
    data = md.generate(md.MultiDomainDataConfig(**SMALL, domain_correlation=0.5))
    feats, _ = md.to_features(data["train"], md.relatedness_fields())
    assert set(feats) == {*names, "domain"}
