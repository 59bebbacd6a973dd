"""The paper's three comparison settings of an MDMT model (:func:`fit_predict_in_setting`): the harness of the
multi-domain benchmarks (``benchmarks.multidomain_lineup``), not part of the installed library.

One job: train ``config``'s model in one of ``SETTINGS`` and score the test rows. Besides the MDMT setting
(one model for every domain and task), the paper's table has two cheaper ones: ``mtl_per_domain`` (a separate
multi-task model per domain, trained on that domain's samples only) and ``mdl_per_task`` (a separate
multi-domain model per task, trained on that task's loss only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from mvke_tf.config import ConfigError, FieldSpec
from mvke_tf.models.multidomain import MultiDomainConfig, MultiDomainModel, TrainingSchedule
from mvke_tf.models.multidomain_metrics import predict_multidomain
from mvke_tf.models.multidomain_training import train_multidomain

SETTINGS = ("mdmt", "mtl_per_domain", "mdl_per_task")


def _rows(
    features: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], mask: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return {k: np.asarray(v)[mask] for k, v in features.items()}, {k: np.asarray(v)[mask] for k, v in labels.items()}


def fit_predict_in_setting(
    setting: str,
    config: MultiDomainConfig,
    fields: Sequence[FieldSpec | Mapping[str, Any]],
    train: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    val: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    test_features: Mapping[str, np.ndarray],
    *,
    epochs: int = 1,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    fusion_learning_rate: float = 1e-3,
    seed: int = 0,
    schedule: TrainingSchedule | None = None,
) -> tuple[dict[str, np.ndarray], list[MultiDomainModel]]:
    """Trains ``config``'s model in one of ``SETTINGS`` and scores the test rows.

    * ``mdmt``: one model on every domain and task.
    * ``mtl_per_domain``: one model per domain (``domains=1``), trained and scored on that
      domain's rows only; each domain's predictions come from its own model.
    * ``mdl_per_task``: one model per task (``tasks=(task,)``) over every domain; each
      task's predictions come from its own model.

    Args:
      setting: one of ``SETTINGS``.
      config: the model's config (its ``domains`` and ``tasks`` describe the data).
      fields: the embedded fields.
      train, val: ``(features, labels)`` numpy dicts (:func:`mvke_tf.data.multidomain.to_features`).
      test_features: the test rows' features.
      epochs, batch_size, learning_rate, fusion_learning_rate, seed: as in
        :func:`mvke_tf.models.multidomain_training.train_multidomain`.
      schedule: if given, replaces ``epochs``, ``batch_size`` and the learning rates, and adds its
        weight decay, StepLR and early stopping (scored on ``val``).

    Returns:
      ``({task: [N_test] probabilities}, the trained models)``.
    """
    from mvke_tf.data.multidomain import make_dataset

    if setting not in SETTINGS:
        raise ConfigError(f"setting={setting!r} is not one of {', '.join(SETTINGS)}; fix: pick one of them")
    if setting != "mdmt" and config.architecture == "m3oe":
        raise ConfigError(
            f"setting={setting!r} leaves one domain or one task per model, which {config.model_type} cannot fuse; "
            f"fix: run {config.model_type} in the mdmt setting"
        )
    dom = config.domain_feature
    n_test = len(np.asarray(test_features[dom]))

    if schedule is not None:
        batch_size = schedule.batch_size
        train_kwargs = schedule.train_kwargs()
    else:
        train_kwargs = dict(epochs=epochs, learning_rate=learning_rate, fusion_learning_rate=fusion_learning_rate)

    def fit_predict(cfg: MultiDomainConfig, tr: Any, va: Any, te: Mapping[str, np.ndarray]) -> Any:
        model = MultiDomainModel(cfg, fields)
        va_ds = make_dataset(*va, batch_size=batch_size, seed=seed)
        scored = {}
        if train_kwargs.get("patience"):  # early stopping scores the validation rows in order
            scored["validation"] = make_dataset(*va, batch_size=4096, shuffle=False)
        model.history_ = train_multidomain(
            model, make_dataset(*tr, batch_size=batch_size, seed=seed), va_ds, seed=seed, **train_kwargs, **scored
        )
        dummy = {t: np.zeros(len(np.asarray(te[dom])), np.float32) for t in cfg.tasks}
        return model, predict_multidomain(model, make_dataset(dict(te), dummy, batch_size=4096, shuffle=False))

    if setting == "mdmt":
        model, probs = fit_predict(config, train, val, test_features)
        return probs, [model]

    out = {t: np.full(n_test, np.nan, np.float32) for t in config.tasks}
    models: list[MultiDomainModel] = []
    if setting == "mtl_per_domain":
        single = dataclasses.replace(config, domains=1)
        test_domain = np.asarray(test_features[dom])
        for d in range(config.domains):
            parts = []
            for feats, labs in (train, val):
                f, lab = _rows(feats, labs, np.asarray(feats[dom]) == d)
                f[dom] = np.zeros_like(f[dom])  # the only domain of this model
                parts.append((f, lab))
            mask = test_domain == d
            if not mask.any():
                continue
            if not len(parts[0][1][config.tasks[0]]):
                raise ValueError(f"domain {d} has test rows but no training rows; fix: give every domain training data")
            te = {k: np.asarray(v)[mask] for k, v in test_features.items()}
            te[dom] = np.zeros_like(te[dom])
            model, probs = fit_predict(single, parts[0], parts[1], te)
            models.append(model)
            for t in config.tasks:
                out[t][mask] = probs[t]
        return out, models

    for t in config.tasks:  # mdl_per_task
        one = dataclasses.replace(config, tasks=(t,))
        tr = (train[0], {t: train[1][t]})
        va = (val[0], {t: val[1][t]})
        model, probs = fit_predict(one, tr, va, test_features)
        models.append(model)
        out[t] = probs[t]
    return out, models


__all__ = ["SETTINGS", "fit_predict_in_setting"]
