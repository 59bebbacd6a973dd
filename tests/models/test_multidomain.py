"""M3oE and the multi-domain multi-task baselines: shapes, config, fusion, bi-level steps, data."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import MD_BATCH as B
from model_helpers import MD_SPECS as SPECS
from model_helpers import MD_TINY as TINY
from model_helpers import md_batch as _batch

from mvke_tf.config import ConfigError
from mvke_tf.data import multidomain as md
from mvke_tf.data import synthetic
from mvke_tf.layers.multidomain import FusedExperts, fuse_own_and_others
from mvke_tf.models.multidomain import MULTIDOMAIN_MODEL_NAMES, MultiDomainConfig, MultiDomainModel
from mvke_tf.models.multidomain_metrics import mdmt_metrics, predict_multidomain
from mvke_tf.models.multidomain_training import train_multidomain


def _model(model_type: str = "multi_domain_m3oe", **kw) -> MultiDomainModel:
    tf.keras.utils.set_random_seed(0)
    return MultiDomainModel(MultiDomainConfig(model_type=model_type, **{**TINY, **kw}), SPECS)


def _values(variables):
    return [v.numpy().copy() for v in variables]


# ------------------------------------------------------------------ config
def test_config_round_trip_and_errors():
    cfg = MultiDomainConfig(model_type="multi_domain_ple", tasks=["a", "b", "c"], fusion="code", **TINY)
    assert MultiDomainConfig.from_dict(cfg.to_dict()) == cfg
    bad = [
        dict(model_type="nope"),
        dict(tasks=("click", "click")),
        dict(tasks=()),
        dict(domains=0),
        dict(model_type="multi_domain_m3oe", domains=1),
        dict(model_type="multi_domain_m3oe", tasks=("click",)),
        dict(skip_units=(7,)),
        dict(expert_units=()),
        dict(num_shared_experts=0),
        dict(fusion="darts"),
        dict(fusion_every=0),
    ]
    for kw in bad:
        with pytest.raises(ConfigError):
            MultiDomainConfig(**{**TINY, **kw})
    with pytest.raises(ConfigError, match="unknown key"):
        MultiDomainConfig.from_dict({"model_typo": "multi_domain_m3oe"})
    # Baselines work with one domain / one task; only m3oe needs >= 2 of each.
    MultiDomainConfig(model_type="multi_domain_star", domains=1, tasks=("click",), **TINY)


# ------------------------------------------------------------ shapes, config
@pytest.mark.parametrize("model_type", MULTIDOMAIN_MODEL_NAMES)
def test_outputs_and_get_config_round_trip(model_type):
    model = _model(model_type)
    feats, _ = _batch()
    out = model(feats)
    assert set(out) == {"click", "conversion"}
    for p in out.values():
        assert p.shape == (B,)
        assert np.all((p.numpy() > 0) & (p.numpy() < 1))
    clone = MultiDomainModel.from_config(model.get_config())
    clone(feats)
    clone.set_weights(model.get_weights())
    again = clone(feats)
    for t in out:
        np.testing.assert_allclose(again[t].numpy(), out[t].numpy(), rtol=1e-6)
    assert clone.config == model.config


# ----------------------------------------------------------------- fusion maths
def test_fuse_own_and_others_matches_numpy():
    rng = np.random.default_rng(1)
    experts = rng.normal(size=(5, 3, 4)).astype(np.float32)  # [B, K, h]
    beta = 0.8
    own = np.array([0, 1, 2, 1, 0])
    ref = np.stack(
        [beta * experts[b, own[b]] + (1 - beta) / 2 * (experts[b].sum(0) - experts[b, own[b]]) for b in range(5)]
    )
    got = fuse_own_and_others(tf.constant(experts), tf.constant(own), tf.constant(beta))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    got1 = fuse_own_and_others(tf.constant(experts), 1, tf.constant(beta))
    np.testing.assert_allclose(got1.numpy(), beta * experts[:, 1] + (1 - beta) / 2 * experts[:, [0, 2]].sum(1), 1e-5)


def test_two_level_fusion_matches_numpy():
    d, t, k, h, n = 3, 2, 2, 4, 5
    layer = FusedExperts(d, t, k, (h,))
    layer(tf.zeros((n, 6)))
    raw = [0.3, -0.2, 1.1, 0.4]
    for w, r in zip(layer.fusion_weights, raw):
        w.assign(r)
    a_d, a_t, b_d, b_t = 1 / (1 + np.exp(-np.array(raw)))
    rng = np.random.default_rng(2)
    gates = rng.dirichlet(np.ones(k), size=(n, d, t)).astype(np.float32)
    shared = rng.normal(size=(n, k, h)).astype(np.float32)
    dom = rng.normal(size=(n, d, h)).astype(np.float32)
    task = rng.normal(size=(n, t, h)).astype(np.float32)
    got = layer.fuse(*(tf.constant(x) for x in (gates, shared, dom, task))).numpy()
    for i in range(d):
        dpart = b_d * dom[:, i] + (1 - b_d) / (d - 1) * (dom.sum(1) - dom[:, i])
        for j in range(t):
            tpart = b_t * task[:, j] + (1 - b_t) / (t - 1) * (task.sum(1) - task[:, j])
            ref = np.einsum("bk,bkh->bh", gates[:, i, j], shared) + a_d * dpart + a_t * tpart
            np.testing.assert_allclose(got[:, i, j], ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ own-domain towers
@pytest.mark.parametrize("model_type", ["multi_domain_m3oe", "multi_domain_mmoe"])
def test_each_sample_uses_its_own_domain_tower(model_type):
    model = _model(model_type)
    feats, _ = _batch()
    before = {k: v.numpy() for k, v in model(feats).items()}
    in_d0 = feats["domain"] == 0
    t = 2
    # Perturb every tower variable of domains 1 and 2 (tower groups are ordered d * T + task).
    for v in model.towers.weights:
        val = v.numpy()
        val[t:] += 1.0
        v.assign(val)
    if model.star is not None:  # the STAR layer's other-domain kernels must not matter either
        k = model.star.domain_kernel.numpy()
        k[1:] *= 3.0
        model.star.domain_kernel.assign(k)
    after = {k: v.numpy() for k, v in model(feats).items()}
    for task in before:
        np.testing.assert_allclose(after[task][in_d0], before[task][in_d0], rtol=1e-6)
        assert not np.allclose(after[task][~in_d0], before[task][~in_d0])


# ------------------------------------------------------------------ bi-level
def _compiled(fusion: str) -> MultiDomainModel:
    model = _model("multi_domain_m3oe", fusion=fusion)
    feats, labels = _batch()
    model(feats)
    model.compile(tf.keras.optimizers.Adam(0.05), fusion_optimizer=tf.keras.optimizers.Adam(0.05))
    return model


def test_bilevel_steps_touch_disjoint_variables():
    model = _compiled("bilevel")
    fusion = model.fusion_variables
    assert [v.name.split("/")[-1].split(":")[0] for v in fusion] == list(FusedExperts.FUSION_NAMES)
    others = model.main_variables
    assert {id(v) for v in fusion}.isdisjoint({id(v) for v in others})
    data = _batch(seed=3)
    f0, o0 = _values(fusion), _values(others)
    model.fusion_step(data)
    f1, o1 = _values(fusion), _values(others)
    assert all(not np.allclose(a, b) for a, b in zip(f0, f1))  # every alpha / beta moved
    assert all(np.array_equal(a, b) for a, b in zip(o0, o1))  # nothing else did
    model.train_step(data)
    f2, o2 = _values(fusion), _values(others)
    assert all(np.array_equal(a, b) for a, b in zip(f1, f2))  # main step leaves alpha / beta alone
    assert any(not np.allclose(a, b) for a, b in zip(o1, o2))


def test_code_mode_main_step_also_trains_fusion_weights():
    model = _compiled("code")
    f0 = _values(model.fusion_variables)
    model.train_step(_batch(seed=4))
    assert all(not np.allclose(a, b) for a, b in zip(f0, _values(model.fusion_variables)))


def test_fixed_fusion_stays_at_one_half():
    model = _compiled("fixed")
    for seed in range(3):
        model.train_step(_batch(seed=seed))
        model.fusion_step(_batch(seed=seed))  # a no-op: nothing to train
    assert model.fusion_variables == []
    assert model.fusion_values() == pytest.approx(dict.fromkeys(FusedExperts.FUSION_NAMES, 0.5))


def test_bilevel_needs_validation_batches():
    model = _model("multi_domain_m3oe")
    feats, labels = _batch()
    ds = tf.data.Dataset.from_tensor_slices((feats, labels)).batch(4)
    with pytest.raises(ValueError, match="validation"):
        train_multidomain(model, ds, None)


def test_loss_is_the_sum_over_domain_and_task_of_the_mean_bce_within_the_domain():
    """Domains of very different sizes weigh the same: a batch mean would weigh domain 0 by its rows."""
    model = _model("mmoe")
    feats, labels = _batch(seed=6, n=20)
    feats["domain"] = np.array([0] * 15 + [1] * 5, np.int32)  # domain 2 absent: contributes 0
    logits = model.logits(feats).numpy()  # [B, T]
    y = np.stack([labels[t] for t in model.config.tasks], axis=1)
    bce = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
    want = sum(bce[feats["domain"] == d].mean(axis=0).sum() for d in (0, 1))
    assert float(model.mdmt_loss(feats, labels, training=False)) == pytest.approx(want, rel=1e-5)
    assert abs(want - bce.mean(axis=0).sum() * 2) > 1e-3  # the per-domain mean is not the batch mean


@pytest.mark.parametrize("fusion, every, want", [("bilevel", 1, 2 * 5), ("bilevel", 2, 2 * 2), ("code", 1, 2)])
def test_fusion_schedules_take_their_number_of_fusion_steps(fusion, every, want):
    """bilevel: one fusion step per ``fusion_every`` training steps; code: one per epoch (2 epochs of 5)."""
    model = _model("multi_domain_m3oe", fusion=fusion, fusion_every=every)
    feats, labels = _batch(seed=7, n=20)
    train = tf.data.Dataset.from_tensor_slices((feats, labels)).batch(4)
    val = tf.data.Dataset.from_tensor_slices(_batch(seed=8, n=8)).batch(4)
    model.compile(tf.keras.optimizers.Adam(0.01), fusion_optimizer=tf.keras.optimizers.Adam(0.01))
    history = train_multidomain(model, train, val, epochs=2)
    assert int(model.fusion_optimizer.iterations) == want
    assert int(model.optimizer.iterations) == 2 * 5 and len(history["fusion_loss"]) == 2


def test_mdmt_metrics_aggregates_per_domain_mean_and_pooled_auc():
    from sklearn.metrics import roc_auc_score

    domain = np.array([0] * 6 + [1] * 6 + [2] * 4)
    y = {
        "click": np.array([0, 1, 0, 1, 1, 0] + [1, 0, 0, 1, 0, 1] + [1, 1, 1, 1], float),  # domain 2: one class
        "conversion": np.array([0, 0, 1, 0, 1, 0] + [0, 1, 0, 0, 0, 1] + [0, 1, 0, 0], float),
    }
    rng = np.random.default_rng(0)
    p = {t: rng.uniform(size=len(domain)) for t in y}
    got = mdmt_metrics(y, p, domain, 3)
    cells = [(d, t) for d in range(3) for t in y if (d, t) != (2, "click")]
    per = {(d, t): roc_auc_score(y[t][domain == d], p[t][domain == d]) for d, t in cells}
    for (d, t), v in per.items():
        assert got["auc"][d][t] == pytest.approx(v)
    assert np.isnan(got["auc"][2]["click"])
    assert got["mean_auc"] == pytest.approx(np.mean(list(per.values())))  # the one-class cell left out
    assert got["total_auc"] == pytest.approx(np.mean([roc_auc_score(y[t], p[t]) for t in y]))


# --------------------------------------------------------------------- data
SMALL_MD = dict(num_rows=24_000, num_users=2_000, num_ads=500, taxonomy=(6, 3, 8))


@pytest.fixture(scope="module")
def md_data():
    # A strong domain-specific preference, so a short run on a few fields learns it.
    return md.generate(md.MultiDomainDataConfig(**SMALL_MD, preference_scale=3.0, seed=3))


def test_domain_shares_and_determinism(md_data):
    dom = np.concatenate([md_data[s]["domain"] for s in md.SPLITS])
    shares = np.bincount(dom, minlength=3) / len(dom)
    np.testing.assert_allclose(shares, [0.07, 0.89, 0.04], atol=0.01)
    again = md.generate(md.MultiDomainDataConfig(**SMALL_MD, preference_scale=3.0, seed=3))
    other = md.generate(md.MultiDomainDataConfig(**SMALL_MD, preference_scale=3.0, seed=4))
    for col in ("domain", "click", "conversion", "user_id", synthetic.TAG_FIELD):
        assert np.array_equal(again["train"][col], md_data["train"][col])
    assert not np.array_equal(other["train"]["domain"], md_data["train"]["domain"])
    with pytest.raises(ConfigError):
        md.MultiDomainDataConfig(domain_shares=(0.5, 0.4))
    with pytest.raises(ConfigError):
        md.MultiDomainDataConfig(click_offsets=(0.0,))


def _chunk_digest(cfg: synthetic.SyntheticConfig) -> str:
    h = hashlib.sha256()
    for chunk in synthetic.iter_chunks(cfg):
        for name in synthetic.columns():
            h.update(np.asarray(chunk[name]).astype(str).tobytes())
    return h.hexdigest()


def test_default_generator_output_unchanged():
    cfg = synthetic.SyntheticConfig(num_rows=2_000, num_users=300, num_ads=100, taxonomy=(4, 2, 5), seed=5)
    before = _chunk_digest(cfg)
    md.generate(md.MultiDomainDataConfig(num_rows=2_000, num_users=300, num_ads=100, taxonomy=(4, 2, 5), seed=5))
    assert _chunk_digest(cfg) == before
    assert md.DOMAIN_FIELD not in synthetic.columns()


def test_trains_above_chance(md_data):
    # The fields carrying the domain preference (age x tag category, income x tag category).
    specs = tuple(s for s in md.fields() if s.name in ("age_bucket", "income_level", "tags"))
    train, val, test = (md.to_features(md_data[s], specs) for s in md.SPLITS)
    model = MultiDomainModel(MultiDomainConfig(model_type="multi_domain_m3oe"), specs)
    train_multidomain(
        model,
        md.make_dataset(*train, batch_size=256, seed=0),
        md.make_dataset(*val, batch_size=256, seed=0),
        epochs=2,
        learning_rate=3e-3,
        seed=0,
    )
    probs = predict_multidomain(model, md.make_dataset(*test, batch_size=4096, shuffle=False))
    m = mdmt_metrics(test[1], probs, test[0][md.DOMAIN_FIELD], 3)
    assert m["total_auc"] > 0.55
    assert m["mean_auc"] > 0.55
    assert m["auc"][1]["click"] > 0.55  # the big domain, on its own


def test_moved_names_still_import_from_the_model_module():
    """The training loop and the scoring live in their own modules (issue 29); the old ``from
    mvke_tf.models.multidomain import X`` still gives the same objects. The settings harness moved to the
    benchmarks: asking for it names where."""
    from mvke_tf.models import multidomain, multidomain_metrics, multidomain_training

    assert multidomain.train_multidomain is train_multidomain is multidomain_training.train_multidomain
    assert multidomain.mdmt_metrics is multidomain_metrics.mdmt_metrics
    assert multidomain.predict_multidomain is multidomain_metrics.predict_multidomain
    for name in ("fit_predict_in_setting", "SETTINGS"):
        with pytest.raises(AttributeError, match=f"from benchmarks.multidomain_settings import {name}"):
            getattr(multidomain, name)
    with pytest.raises(AttributeError, match="no_such_name"):
        multidomain.no_such_name  # noqa: B018
