"""The reference models: numpy logistic regressions on what the features carry (or the true latents),
fitted on the true probabilities or on 0/1 labels, and their AUC on the eval day."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.learning_curves.data_prefixes import TASKS
from mvke_tf.data import synthetic
from mvke_tf.metrics import auc_or_nan


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def fit_logistic(
    x: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None, l2: float = 1e-6, iters: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logistic regression on soft or hard targets by Newton's method.

    Args:
      x: ``[n, d]`` features.
      target: ``[n]`` targets in [0, 1] (a true probability or a 0/1 label).
      weight: ``[n]`` example weights (default 1).
      l2: ridge penalty per example on the standardized coefficients (keeps hard-label fits finite).

    Returns:
      ``(mean [d], scale [d], coef [d + 1])``: score with :func:`logistic_score`.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("fit_logistic: x holds NaN or inf; fix: fill missing values (and flag them) first")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    design = np.c_[np.ones(len(x)), (x - mean) / scale]
    wt = np.ones(len(x)) if weight is None else np.asarray(weight, dtype=np.float64)
    penalty = l2 * wt.sum() * np.eye(design.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    coef = np.zeros(design.shape[1])
    for _ in range(iters):
        p = _sigmoid(design @ coef)
        grad = design.T @ (wt * (p - target)) + penalty @ coef
        hess = (design * (wt * p * (1 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hess, grad)
        coef -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return mean, scale, coef


def logistic_score(model: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    """P(y=1) ``[n]`` of :func:`fit_logistic`'s model for features ``x`` ``[n, d]``."""
    mean, scale, coef = model
    return _sigmoid(coef[0] + ((np.asarray(x, dtype=np.float64) - mean) / scale) @ coef[1:])


def _group_ids(values: Sequence[str], level: int, n2: int) -> np.ndarray:
    """Taxonomy group per list entry as a padded ``[n, k]`` int array (-1 pads).

    Level 1 names ("c<a>") give the level-1 id, level 2 ("s<b>") the level-2 id, and a leaf
    ("t<a>_<b>_<c>", ``b`` within its parent) its level-2 id ``a * n2 + b``: the leaves in the
    behaviour lists are random siblings of a facet's leaf, so their level-2 node is what they tell.
    """
    rows: list[list[int]] = []
    for v in values:
        ids = []
        for s in v.split("|") if v else ():
            if level == 3:
                a, b, _ = s[1:].split("_")
                ids.append(int(a) * n2 + int(b))
            else:
                ids.append(int(s[1:]))
        rows.append(ids)
    width = max(1, max(len(r) for r in rows))
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _max_affinity(table: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max_j table[i, ids[i, j]]`` over each row's valid ids ``[n]``, and whether a row had none ``[n]``.

    ``table`` is ``[n, groups]`` (row i's affinity to every group), ``ids`` ``[n, k]`` (-1 pads).
    """
    aff = np.take_along_axis(table, np.maximum(ids, 0), axis=1)
    aff = np.where(ids >= 0, aff, -np.inf).max(axis=1)
    empty = ~np.isfinite(aff)
    return np.where(empty, 0.0, aff), empty.astype(np.float64)


def _repeated(*lists: np.ndarray) -> np.ndarray:
    """Ids found in at least two of ``lists`` (each ``[n, k]``, -1 padded), padded ``[n, k']`` (-1 pads;
    an id may repeat, which does not change a maximum)."""
    ordered = np.sort(np.concatenate(lists, axis=1), axis=1)
    twice = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)  # each list holds an id at most once
    return np.where(twice, ordered[:, 1:], -1)


def _rate_logit(cols: Mapping[str, Any], base: float, click: bool) -> tuple[np.ndarray, np.ndarray]:
    """The user's historical rate as a logit, from the statistics columns (shrunk to ``base``), and a
    missing-value indicator ``[n]``. CTR: ``avg_ctr_7d`` and ``clicks_7d`` are two binomial draws over
    ``impressions_7d``; CVR: ``avg_cvr_30d`` is the rate plus noise."""
    if click:
        imps_raw = np.asarray(cols["impressions_7d"], dtype=np.float64)
        imps = np.nan_to_num(imps_raw, nan=30.0)  # about the mean count where it is missing
        prior = 20.0
        num, den = np.full(len(imps), prior * base), np.full(len(imps), prior)
        avg = np.asarray(cols["avg_ctr_7d"], dtype=np.float64)
        # A click count says nothing without its impression count.
        clicks = np.where(np.isnan(imps_raw), np.nan, np.asarray(cols["clicks_7d"], dtype=np.float64))
        for estimate in (avg * imps, clicks):
            ok = ~np.isnan(estimate)
            num[ok] += estimate[ok]
            den[ok] += imps[ok]
        missing = np.isnan(avg) & np.isnan(clicks)
        return _logit(np.clip(num / den, 1e-4, 1 - 1e-4)), missing.astype(np.float64)
    cvr = np.asarray(cols["avg_cvr_30d"], dtype=np.float64)
    missing = np.isnan(cvr)
    return _logit(np.clip(np.where(missing, base, cvr), 0.01, 0.99)), missing.astype(np.float64)


REFERENCE_KINDS = ("observable", "latent_facets", "all_latents")


def reference_features(world: synthetic.SyntheticWorld, cols: Mapping[str, Any], kind: str) -> dict[str, np.ndarray]:
    """Features of a generated chunk for the reference models: ``{"click": [n, d], "conversion": [n, d']}``.

    ``conversion`` features are for P(conversion | click); the reference's conversion score is
    P(click) * P(conversion | click), the generator's form.

    * ``observable``: only what the data's columns carry, read with the generator's geometry
      (which models have to learn): the ad's latent vector is a function of its tags, a behaviour
      list entry tells a facet's taxonomy node, so a facet's affinity to the ad is estimated as the
      best mean tag vector of a listed level-2 (or level-1) node against the ad's vector; the user
      bias as the rate in the historical statistics. The ad bias is not observable (no ad id).
    * ``latent_facets``: the true facets' affinity ``max_f <facet_f, ad_vec>`` plus the observable
      statistics: what a model could reach if it recovered the facets exactly.
    * ``all_latents``: the oracle's own inputs (affinity, user bias, ad bias): a check that the
      fitting recovers the oracle.
    """
    if kind not in REFERENCE_KINDS:
        raise ValueError(f"kind={kind!r}: use one of {REFERENCE_KINDS}")
    c = world.config
    n2, n3 = c.taxonomy[1], c.taxonomy[2]
    if kind != "observable":
        users = np.array([int(u[1:]) for u in cols["user_id"]])
        ads = np.array([int(a[1:]) for a in cols["ad_id"]])
        ad_vec = world.ad_vec[ads][:, None, :]
        click_aff = np.max(np.sum(world.click_vec[users] * ad_vec, axis=-1), axis=1)
        conv_aff = np.max(np.sum(world.conv_vec[users] * ad_vec, axis=-1), axis=1)
        if kind == "all_latents":
            return {
                "click": np.c_[click_aff, world.user_click_bias[users], world.ad_click_bias[ads]],
                "conversion": np.c_[conv_aff, world.user_conv_bias[users], world.ad_conv_bias[ads]],
            }
        ctr, ctr_missing = _rate_logit(cols, c.target_ctr, click=True)
        cvr, cvr_missing = _rate_logit(cols, c.target_cvr, click=False)
        return {"click": np.c_[click_aff, ctr, ctr_missing], "conversion": np.c_[conv_aff, cvr, cvr_missing]}
    # The ad's latent vector from the row's own tags ("t<a>_<b>_<c>" is leaf (a * n2 + b) * n3 + c),
    # as the generator makes it: the normalized mean of its tags' vectors. No ad id is used.
    ad_vec = np.zeros((len(cols[synthetic.TAG_FIELD]), c.latent_dim))
    for i, tags in enumerate(cols[synthetic.TAG_FIELD]):
        leaves = [(int(a) * n2 + int(b)) * n3 + int(k) for a, b, k in (t[1:].split("_") for t in tags.split("|"))]
        ad_vec[i] = world.tag_vec[leaves].mean(axis=0)
    ad_vec /= np.linalg.norm(ad_vec, axis=1, keepdims=True)
    # Expected <tag_vec[leaf], ad_vec> of a random leaf under a node: the node's mean tag vector.
    l2_mean = np.stack([world.tag_vec[world.leaf_l2 == k].mean(axis=0) for k in range(world.num_l2)])
    l1_mean = np.stack([world.tag_vec[world.leaf_l1 == k].mean(axis=0) for k in range(world.num_l1)])
    aff_l2 = ad_vec @ l2_mean.T  # [n, num_l2]
    aff_l1 = ad_vec @ l1_mean.T  # [n, num_l1]
    level = {name: spec[1] for name, spec in synthetic.BEHAVIOUR_FIELDS.items()}
    ids = {name: _group_ids(cols[name], level[name], n2) for name in synthetic.BEHAVIOUR_FIELDS}
    feats: dict[str, list[np.ndarray]] = {}
    for task, l1_list, l2_lists in (
        ("click", "read_l1_categories", ("read_l2_categories", "clicked_tags_30d")),
        ("conversion", "shop_l1_categories", ("shop_l2_categories", "purchased_tags_90d")),
    ):
        any_l2, empty = _max_affinity(aff_l2, np.concatenate([ids[n] for n in l2_lists], axis=1))
        rep_l2, no_rep = _max_affinity(aff_l2, _repeated(*(ids[n] for n in l2_lists), ids["search_l2_topics"]))
        best_l1, no_l1 = _max_affinity(aff_l1, ids[l1_list])
        feats[task] = [any_l2, empty, np.where(no_rep > 0, any_l2, rep_l2), no_rep, best_l1, no_l1]
    shared_l2, _ = _max_affinity(aff_l2, ids["search_l2_topics"])
    shared_l1, _ = _max_affinity(aff_l1, ids["app_install_categories"])
    ctr, ctr_missing = _rate_logit(cols, c.target_ctr, click=True)
    cvr, cvr_missing = _rate_logit(cols, c.target_cvr, click=False)
    click = np.stack([*feats["click"], shared_l2, shared_l1, ctr, ctr_missing], axis=1)
    # Conversion facets share `shared_facets` with click: the click evidence helps conversion too.
    conversion = np.stack([*feats["conversion"], *feats["click"][:1], shared_l2, shared_l1, cvr, cvr_missing], axis=1)
    return {"click": click, "conversion": conversion}


def fit_reference(
    features: Mapping[str, np.ndarray], p_click: np.ndarray, p_conversion: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fits the reference on the true probabilities (soft targets, no label noise).

    Click: P(click) on the click features. Conversion given click: target
    ``p_conversion / p_click``, each row weighted by ``p_click`` (the share of it that is a click).
    """
    return {
        "click": fit_logistic(features["click"], p_click),
        "conversion": fit_logistic(features["conversion"], p_conversion / p_click, weight=p_click),
    }


def fit_reference_on_labels(
    features: Mapping[str, np.ndarray], click: np.ndarray, conversion: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The same reference fitted on 0/1 labels, as a model trained on N rows would be
    (conversion given click on the clicked rows)."""
    clicked = click.astype(bool)
    return {
        "click": fit_logistic(features["click"], click.astype(np.float64), l2=1e-4),
        "conversion": fit_logistic(features["conversion"][clicked], conversion[clicked].astype(np.float64), l2=1e-4),
    }


def reference_scores(
    model: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], features: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``{"click": P(click) [n], "conversion": P(click) * P(conversion | click) [n]}``."""
    p_click = logistic_score(model["click"], features["click"])
    return {"click": p_click, "conversion": p_click * logistic_score(model["conversion"], features["conversion"])}


def read_rows(path: Path) -> dict[str, Any]:
    """A generated CSV file as columns: numbers as float arrays (NaN where empty), labels as int arrays."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        names = next(reader)
        columns = list(zip(*reader))
    out: dict[str, Any] = {}
    numeric = set(synthetic.STAT_BOUNDARIES) | set(synthetic.PROB_COLUMNS)
    for name, values in zip(names, columns):
        if name in numeric:
            out[name] = np.array([float(v) if v else np.nan for v in values])
        elif name in (*synthetic.LABELS, "day"):
            out[name] = np.array(values, dtype=np.int64)
        else:
            out[name] = list(values)
    return out


def compute_references(
    config: synthetic.SyntheticConfig, root: Path, label_rows: Sequence[int] = (20_000, 200_000)
) -> dict[str, Any]:
    """AUC of each reference kind on the eval day, fitted on the true probabilities of the first
    training file's rows; and the observable reference fitted on the 0/1 labels of the first
    ``label_rows`` rows (how many rows its structure needs)."""
    world = synthetic.SyntheticWorld(config)
    train = read_rows(root / "train" / "part-00000.csv")
    evald = read_rows(root / "eval" / "part-00000.csv")
    out: dict[str, Any] = {
        "fit_rows": len(train["click"]),
        "oracle": {t: auc_or_nan(evald[t], evald[f"p_{t}"]) for t in TASKS},
        "eval_positives": {t: int(evald[t].sum()) for t in TASKS},
    }
    for kind in REFERENCE_KINDS:
        feats_train = reference_features(world, train, kind)
        feats_eval = reference_features(world, evald, kind)
        scores = reference_scores(fit_reference(feats_train, train["p_click"], train["p_conversion"]), feats_eval)
        out[kind] = {t: auc_or_nan(evald[t], scores[t]) for t in TASKS}
        if kind == "observable":
            out["observable_on_labels"] = {}
            for n in label_rows:
                first = {k: v[:n] for k, v in feats_train.items()}
                fitted = fit_reference_on_labels(first, train["click"][:n], train["conversion"][:n])
                scores = reference_scores(fitted, feats_eval)
                out["observable_on_labels"][str(n)] = {
                    **{t: auc_or_nan(evald[t], scores[t]) for t in TASKS},
                    "conversions": int(train["conversion"][:n].sum()),
                }
    return out
