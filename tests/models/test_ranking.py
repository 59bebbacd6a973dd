"""Multi-task ranking models: every variant's shapes and config, ESMM's heads and losses, the FM term,
training on the synthetic data, export and the ranking function."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import chance_bar

from mvke_tf.config import ConfigError, FeatureConfig, FieldSpec
from mvke_tf.data import synthetic
from mvke_tf.data.dataset import make_dataset
from mvke_tf.export import export_saved_model
from mvke_tf.export.describe import non_standard_ops
from mvke_tf.layers.interaction import FactorizationMachine
from mvke_tf.metrics import auc
from mvke_tf.models.ranking import (
    APP_STORE,
    RANKING_MODEL_NAMES,
    RankingConfig,
    RankingModel,
    build_ranking_model,
    rank,
    ranking_feature_config,
    ranking_fields,
)
from mvke_tf.train import compile_model

FIELDS = (
    FieldSpec("user", "categorical", hash_buckets=50),
    FieldSpec("history", "multi_valued", hash_buckets=40, max_values=3),
    FieldSpec("age", "numeric", boundaries=(20.0, 40.0)),
    FieldSpec("item", "categorical", hash_buckets=30),
)
DENSE = ("income",)
TINY = dict(embedding_dim=4, expert_units=(8,), bottom_units=(8,), tower_units=(4,))


def batch(n: int = 6, seed: int = 0) -> dict[str, tf.Tensor]:
    rng = np.random.default_rng(seed)
    return {
        "user": tf.constant([f"u{i}" for i in rng.integers(0, 20, n)]),
        "history": tf.constant([[f"h{rng.integers(0, 9)}", f"h{rng.integers(0, 9)}", ""] for _ in range(n)]),
        "age": tf.constant(rng.uniform(10, 60, n).astype(np.float32)),
        "item": tf.constant([f"i{i}" for i in rng.integers(0, 10, n)]),
        "income": tf.constant(rng.normal(size=n).astype(np.float32)),
    }


@pytest.mark.parametrize("model_type", RANKING_MODEL_NAMES)
@pytest.mark.parametrize("fm_cross", [False, True])
def test_shapes_names_and_config_round_trip(model_type, fm_cross):
    levels = 2 if model_type == "ranking_ple" else 1
    rc = RankingConfig(model_type=model_type, fm_cross=fm_cross, ple_levels=levels, **TINY)
    assert rc.model_type == model_type and rc.architecture == model_type.removeprefix("ranking_")
    model = build_ranking_model(FIELDS, rc, DENSE)
    assert model.name == model_type
    out = model(batch())
    assert set(out) == {"click", "conversion"}
    for p in out.values():
        assert p.shape == (6,) and np.all((p.numpy() > 0) & (p.numpy() < 1))
    clone = RankingModel.from_config(model.get_config())
    clone(batch())
    clone.set_weights(model.get_weights())
    again = clone(batch())
    for t in out:
        np.testing.assert_allclose(again[t].numpy(), out[t].numpy(), rtol=1e-6)
    assert RankingConfig.from_dict(rc.to_dict()) == rc


def test_single_task_shares_nothing():
    model = build_ranking_model(FIELDS, RankingConfig(model_type="ranking_single_task", **TINY), DENSE)
    names = {t: {w.name for w in model.trainable_weights if f"_{t}" in w.name} for t in model.tasks}
    assert names["click"] and names["conversion"]
    # Changing the click branch's weights leaves the conversion output untouched.
    before = model(batch())["conversion"].numpy()
    for w in model.trainable_weights:
        if "click" in w.name:
            w.assign(w + 1.0)
    np.testing.assert_array_equal(model(batch())["conversion"].numpy(), before)


def test_mmoe_has_a_gate_per_task_and_omoe_one():
    x = tf.random.normal([5, 4 * 4 + 1])  # 4 fields x dim 4, plus the dense input
    for model_type, gates in (("ranking_mmoe", 2), ("ranking_omoe", 1), ("ranking_app_store", 2)):
        model = build_ranking_model(FIELDS, RankingConfig(model_type=model_type, num_experts=3, **TINY), DENSE)
        assert len(model.moe.gate_weights(x)) == gates and len(model.moe.experts) == 3
        np.testing.assert_allclose(tf.reduce_sum(model.moe.gate_weights(x)[0], -1).numpy(), 1.0, rtol=1e-6)


def test_esmm_heads_are_exact():
    rc = dataclasses.replace(APP_STORE, rank_weights=(0.7, 0.3), **TINY)
    model = build_ranking_model(FIELDS, rc, DENSE)
    out = {k: v.numpy() for k, v in model(batch(32)).items()}
    assert set(out) == {"click", "conversion", "cvr", "rank_score"}
    logits = {k: v.numpy() for k, v in model.logits(batch(32)).items()}
    np.testing.assert_allclose(out["click"], tf.sigmoid(logits["click"]).numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["cvr"], tf.sigmoid(logits["conversion"]).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(out["conversion"], (tf.constant(out["click"]) * tf.constant(out["cvr"])).numpy())
    np.testing.assert_allclose(out["rank_score"], 0.7 * out["click"] + 0.3 * out["cvr"], rtol=1e-6)
    assert rc.loss_weights == {"click": 0.95, "conversion": 0.05}


def test_esmm_loss_is_the_weighted_bce_of_pctr_and_pctcvr_only():
    model = compile_model(build_ranking_model(FIELDS, dataclasses.replace(APP_STORE, **TINY), DENSE))
    x = batch(16, seed=3)
    y = {"click": tf.constant([1.0, 0.0] * 8), "conversion": tf.constant([1.0, 0.0, 0.0, 0.0] * 4)}
    out = model(x)
    bce = tf.keras.losses.BinaryCrossentropy()
    want = 0.95 * bce(y["click"], out["click"]) + 0.05 * bce(y["conversion"], out["conversion"])
    # The compiled loss (eager: no training-step trace needed) sees only the two labelled outputs.
    got = model.compute_loss(x, y, out)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5)
    assert set(model.compiled_loss._user_losses) == {"click", "conversion"}


def test_fm_cross_term_matches_brute_force():
    e = np.random.default_rng(1).normal(size=(3, 5, 4)).astype(np.float32)
    want = np.array([sum(e[b, i] @ e[b, j] for i in range(5) for j in range(i + 1, 5)) for b in range(3)])
    got = FactorizationMachine(reduce=True)(tf.constant(e)).numpy()[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_fm_cross_adds_linear_plus_fm_to_every_logit():
    rc = RankingConfig(model_type="ranking_mmoe", fm_cross=True, **TINY)
    model = build_ranking_model(FIELDS, rc, DENSE)
    x = batch(8)
    emb = model.embeddings["shared"](x).numpy()
    fm = np.array([sum(emb[b, i] @ emb[b, j] for i in range(4) for j in range(i + 1, 4)) for b in range(8)])
    linear = (
        model.linear["shared"](x).numpy().sum(axis=(1, 2))
        + model.linear_dense["shared"](tf.stack([x["income"]], -1)).numpy()[:, 0]
    )
    flat = tf.concat([tf.reshape(emb, [8, -1]), tf.stack([x["income"]], -1)], -1)
    mixed = model.moe(flat)
    for i, t in enumerate(rc.tasks):
        deep = model.towers[t](mixed[i]).numpy()[:, 0]
        np.testing.assert_allclose(model.logits(x)[t].numpy(), deep + linear + fm, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model_type="dcn"), "model_type='dcn' is not one of"),
        (dict(esmm=True, tasks=("click",)), "esmm needs exactly two tasks"),
        (dict(esmm=True, tasks=("click", "cvr")), "reserved for ESMM"),
        (dict(task_loss_weights=(1.0,)), "task_loss_weights has 1 entries for 2 tasks"),
        (dict(expert_units=()), "expert_units=[] must be"),
        (dict(num_experts=0), "num_experts=0 must be >= 1"),
        (dict(rank_weights=(1.0,)), "rank_weights"),
    ],
)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ConfigError, match=None) as e:
        RankingConfig(**kwargs)
    assert message in str(e.value)


def test_rank_orders_within_groups():
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.8, 0.3])
    groups = np.array(["b", "b", "a", "a", "b", "a"])
    assert rank(scores).tolist() == [1, 4, 2, 3, 5, 0]
    assert rank(scores, groups).tolist() == [1, 4, 0, 2, 3, 5]  # group b first (first seen), ties keep order
    assert rank(scores, groups, top_k=1).tolist() == [1, 2]
    with pytest.raises(ValueError, match="one group id per score"):
        rank(scores, groups[:3])
    with pytest.raises(ValueError, match="top_k=0"):
        rank(scores, top_k=0)
    assert rank(np.zeros(0)).tolist() == []


def test_rank_takes_a_model_output_dict():
    out = {"click": np.array([0.2, 0.6, 0.4]), "cvr": np.array([0.9, 0.1, 0.5])}
    out["rank_score"] = 0.5 * out["click"] + 0.5 * out["cvr"]  # [0.55, 0.35, 0.45]
    assert rank(out).tolist() == [0, 2, 1]  # by rank_score by default
    assert rank(out, key="click").tolist() == [1, 2, 0]
    assert rank({"click": tf.constant([0.1, 0.3])}).tolist() == [1, 0]  # a single output needs no key
    with pytest.raises(ValueError, match="pass key="):
        rank({"click": out["click"], "conversion": out["cvr"]})
    with pytest.raises(ValueError, match="'ctr' is not among"):
        rank(out, key="ctr")


def test_ranking_fields_add_the_ad_id_and_context():
    fc = synthetic.feature_config()
    fields = ranking_fields(fc)
    assert [f.name for f in fields] == [*(f.name for f in fc.user_fields), fc.tag_field.name, "ad_id"]
    assert fields[-1].kind == "categorical" and fields[-1].hash_buckets == 10_000
    hour = FieldSpec("hour", "categorical", hash_buckets=24)
    assert [f.name for f in ranking_fields(fc, (hour,), item_id=None)][-2:] == [fc.tag_field.name, "hour"]
    data_fc = ranking_feature_config(fc, ranking_fields(fc, (hour,)))
    assert data_fc.feature_names[-3:] == ("ad_id", "hour", fc.tag_field.name) and data_fc.labels == fc.labels
    # An id column the feature config already has is not repeated.
    assert [f.name for f in ranking_fields(data_fc)].count("ad_id") == 1


@pytest.fixture(scope="module")
def trained_app_store(tmp_path_factory):
    # A few hundred ads seen often enough for their id embeddings to learn each ad's own propensity;
    # the user-tag match comes from the fields' crosses. About 10k training impressions, two epochs.
    # Clicks and conversions are made common (CTR 0.1, CVR 0.4) so that the 10k eval impressions hold
    # ~1,000 clicks and ~400 conversions: enough for an AUC bar that a random model misses.
    data = tmp_path_factory.mktemp("ranking_data")
    cfg = synthetic.SyntheticConfig(
        num_rows=20_000, num_users=2_000, num_ads=300, taxonomy=(6, 3, 8), target_ctr=0.1, target_cvr=0.4, seed=11
    )
    synthetic.generate(cfg, data, formats=("tfrecord",))
    fields = ranking_fields(synthetic_fc := FeatureConfig.from_yaml(data / "features.yaml"))
    fc = ranking_feature_config(synthetic_fc, fields)  # make_dataset then yields ad_id too
    tf.keras.utils.set_random_seed(0)
    rc = dataclasses.replace(APP_STORE, embedding_dim=8, expert_units=(32,), tower_units=(16,))
    model = compile_model(build_ranking_model(fields, rc), learning_rate=3e-3)
    train = make_dataset(data / "train", fc, batch_size=256, shuffle=True, seed=0)
    model.fit(train, epochs=2, verbose=0)
    return model, fc, data


def test_app_store_model_learns_the_synthetic_data(trained_app_store):
    model, fc, data = trained_app_store
    preds = {k: [] for k in ("click", "conversion", "cvr", "rank_score")}
    labels = {"click": [], "conversion": []}
    for x, y in make_dataset(data / "eval", fc, batch_size=4096):
        out = model(x)
        for k in preds:
            preds[k].append(out[k].numpy())
        for k in labels:
            labels[k].append(y[k].numpy())
    p = {k: np.concatenate(v) for k, v in preds.items()}
    y = {k: np.concatenate(v) for k, v in labels.items()}
    for task in ("click", "conversion"):  # pCTR against clicks, pCTCVR against conversions
        assert y[task].sum() >= 300, (task, y[task].sum())
        assert auc(y[task], p[task]) > chance_bar(y[task]), (task, auc(y[task], p[task]), chance_bar(y[task]))
    # The ranking score orders impressions by its weighted pCTR and pCVR.
    np.testing.assert_allclose(p["rank_score"], 0.5 * p["click"] + 0.5 * p["cvr"], rtol=1e-6)


def test_export_round_trip_and_standard_ops(trained_app_store, tmp_path):
    model, fc, data = trained_app_store
    path = export_saved_model(model, tmp_path / "ranker" / "1")
    assert not non_standard_ops(path)
    loaded = tf.saved_model.load(str(path))
    assert set(loaded.signatures) == {"serving_default"}
    records = tf.data.TFRecordDataset(sorted((data / "eval").glob("*.tfrecord.gz"))[:1], compression_type="GZIP")
    examples = tf.stack(list(records.take(64)))
    got = loaded.signatures["serving_default"](examples=examples)
    x, _ = next(iter(make_dataset(sorted((data / "eval").glob("*.tfrecord.gz"))[:1], fc, batch_size=64)))
    want = model(x)
    assert set(got) == {"click", "conversion", "cvr", "rank_score"}
    for k in got:
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), atol=1e-5)
    assert (path / "assets.extra" / "tf_serving_warmup_requests").exists()
