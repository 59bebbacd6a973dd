"""The paper's comparison settings harness of the multi-domain benchmarks (``benchmarks.multidomain_settings``)."""

import numpy as np
import pytest
from model_helpers import MD_SPECS as SPECS
from model_helpers import MD_TINY as TINY
from model_helpers import md_batch as _batch

from benchmarks.multidomain_settings import fit_predict_in_setting
from mvke_tf.config import ConfigError
from mvke_tf.data import multidomain as md
from mvke_tf.models.multidomain import MultiDomainConfig, MultiDomainModel
from mvke_tf.models.multidomain_metrics import predict_multidomain


def _setting_data(n: int = 90):
    train, val, test = _batch(1, n), _batch(2, n // 3), _batch(3, n // 3)
    return train, val, test


def _predict_rows(model: MultiDomainModel, feats) -> dict:
    dummy = {t: np.zeros(len(feats["domain"]), np.float32) for t in model.config.tasks}
    return predict_multidomain(model, md.make_dataset(feats, dummy, batch_size=64, shuffle=False))


def test_mtl_per_domain_scores_each_domain_with_its_own_model():
    train, val, test = _setting_data()
    cfg = MultiDomainConfig(model_type="multi_domain_mmoe", **TINY)
    probs, models = fit_predict_in_setting("mtl_per_domain", cfg, SPECS, train, val, test[0], batch_size=16)
    assert len(models) == 3 and all(m.config.domains == 1 for m in models)
    for t in cfg.tasks:
        assert probs[t].shape == (len(test[0]["domain"]),) and not np.isnan(probs[t]).any()
    for d, model in enumerate(models):
        mask = test[0]["domain"] == d
        rows = {k: v[mask] for k, v in test[0].items()}
        rows["domain"] = np.zeros_like(rows["domain"])
        own = _predict_rows(model, rows)
        for t in cfg.tasks:
            np.testing.assert_allclose(probs[t][mask], own[t], rtol=1e-6)
    # Each domain's model saw only its domain's rows: the models differ.
    assert not np.allclose(models[0].get_weights()[0], models[1].get_weights()[0])


def test_mdl_per_task_trains_one_model_per_task():
    train, val, test = _setting_data()
    cfg = MultiDomainConfig(model_type="multi_domain_star", **TINY)
    probs, models = fit_predict_in_setting("mdl_per_task", cfg, SPECS, train, val, test[0], batch_size=16)
    assert [m.config.tasks for m in models] == [("click",), ("conversion",)]
    for model, t in zip(models, cfg.tasks):
        np.testing.assert_allclose(probs[t], _predict_rows(model, test[0])[t], rtol=1e-6)


def test_setting_errors_name_the_fix():
    train, val, test = _setting_data(30)
    with pytest.raises(ConfigError, match="mdmt"):
        fit_predict_in_setting("mtl_per_domain", MultiDomainConfig(**TINY), SPECS, train, val, test[0])
    with pytest.raises(ConfigError, match="setting="):
        fit_predict_in_setting(
            "per_user", MultiDomainConfig(model_type="multi_domain_mlp", **TINY), SPECS, train, val, test[0]
        )
