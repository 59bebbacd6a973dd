"""Learning curves on the synthetic user-tagging data: AUC vs training rows, next to the oracle.

    python -m benchmarks.learning_curves            # 200k rows x 3 seeds, 1M rows x 1 seed
    python -m benchmarks.learning_curves --full     # 200k / 1M x 3 seeds, 4M x 1 seed, 200k x 5 epochs x 3 seeds

Is conversion data-starved? Every model of the MVKE line-up trains through the library path
(:func:`mvke_tf.train.train_and_evaluate`, the settings of ``benchmarks.models``) on the first N
training rows of one generated world and is evaluated on one fixed eval day, so the only thing
that changes along a curve is the number of training rows. Two references bracket what is
reachable: the oracle (true probabilities) and an *observable reference*, a logistic model that
sees only what the features carry (see :func:`reference_features`), fitted on the true
probabilities instead of the 0/1 labels. Each (model, rows, seed) result is cached as JSON under
the work directory, so an interrupted or extended run (``--full`` after the default) reuses them.

One epoch at every size means a larger size is both more distinct rows and more optimisation
steps. The *same-steps* cells (``--same-steps SEEDS``, part of ``--full``) separate the two: the
smallest size trained for as many epochs as it takes to match the next size's steps (200k rows x 5
epochs against 1M rows x 1 epoch), so what is left between them is the effect of distinct rows.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import mvke_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from mvke_tf.data import synthetic
from mvke_tf.metrics import auc_or_nan

# In run priority: MVKE-mt and the no-MTL baseline first (see _plan_cells); MVKE-st trains slowest.
MODELS = ("mvke_mt", "two_tower", "mmoe", "cgc", "mvke_st")
TASKS = ("click", "conversion")
# The world's layout is fixed whatever sizes a run trains at: 4M training rows (the largest
# size) followed by a 200k-row eval day. Smaller sizes take the first N training rows, so the
# default run and a later --full run share every training prefix and the very same eval rows.
MAX_TRAIN_ROWS = 4_000_000
EVAL_ROWS = 200_000
# Training rows per part file: every size is a whole number of shards (a prefix of the files).
SHARD_ROWS = 200_000
NUM_USERS = 40_000  # as benchmarks.models
DEFAULT_PLAN = {200_000: 3, 1_000_000: 1}
FULL_PLAN = {200_000: 3, 1_000_000: 3, 4_000_000: 1}
# Seeds of the same-steps cells (smallest size, as many epochs as the next size's steps) in --full.
FULL_SAME_STEPS_SEEDS = 3
# Gap share floor: the AUC of a random score. gap share = (AUC - floor) / (oracle - floor).
FLOOR_AUC = 0.5
FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"


def world_config(
    max_train_rows: int = MAX_TRAIN_ROWS, eval_rows: int = EVAL_ROWS, num_users: int = NUM_USERS, **overrides: Any
) -> synthetic.SyntheticConfig:
    """The generator config whose last day is exactly the ``eval_rows`` rows after ``max_train_rows``.

    ``day = 1 + row * days // num_rows``, so with ``num_rows = max_train_rows + eval_rows`` and
    ``days = num_rows / eval_rows`` the last day starts at row ``max_train_rows``.
    """
    total = max_train_rows + eval_rows
    if total % eval_rows or max_train_rows % synthetic._CHUNK_ROWS or eval_rows % synthetic._CHUNK_ROWS:
        raise ValueError(
            f"max_train_rows={max_train_rows}, eval_rows={eval_rows}: use multiples of "
            f"{synthetic._CHUNK_ROWS:,} (the generator's chunk) with eval_rows dividing their sum"
        )
    return synthetic.SyntheticConfig(num_rows=total, num_users=num_users, days=total // eval_rows, seed=0, **overrides)


def _chunks(first_row: int, rows: int) -> range:
    return range(first_row // synthetic._CHUNK_ROWS, (first_row + rows) // synthetic._CHUNK_ROWS)


def _write_csv(path: Path, chunk_list: Iterable[dict[str, Any]]) -> None:
    """Rows of ``chunk_list`` in one CSV file, formatted exactly as :func:`synthetic.generate` writes them.

    Written to a temporary name and renamed, so an interrupted run never leaves a partial shard.
    """
    names = synthetic.columns()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for cols in chunk_list:
            for i in range(len(cols["day"])):
                writer.writerow([synthetic._fmt(cols[n][i]) for n in names])
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prepare_data(
    config: synthetic.SyntheticConfig,
    root: Path,
    train_rows: int,
    shard_rows: int = SHARD_ROWS,
    eval_rows: int = EVAL_ROWS,
    log: Any = None,
) -> dict[str, Any]:
    """Writes (or extends) ``root/{train,eval}`` with the first ``train_rows`` training rows and the eval day.

    The rows are those :func:`synthetic.generate` would write for ``config`` (same chunks, same
    formatting), but only the chunks needed: training shards already on disk are kept, so a
    larger run extends a smaller one. Returns ``root/data.json``: the eval rows, their oracle AUC
    and the eval file's sha256.
    """
    if train_rows % shard_rows or shard_rows % synthetic._CHUNK_ROWS:
        raise ValueError(f"train_rows={train_rows}: use a multiple of shard_rows={shard_rows}")
    world = None
    info_path = root / "data.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if info.get("generator") not in (None, config.to_dict()):
        raise ValueError(f"{root} holds data of another generator config; fix: use another --work-dir")
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "eval").mkdir(parents=True, exist_ok=True)
    eval_first = config.num_rows - eval_rows
    eval_file = root / "eval" / "part-00000.csv"
    if not eval_file.exists() or "eval" not in info:
        world = world or synthetic.SyntheticWorld(config)
        cols = [world.chunk(i, synthetic._CHUNK_ROWS) for i in _chunks(eval_first, eval_rows)]
        if any((c["day"] != config.days).any() for c in cols):
            raise AssertionError("eval chunks are not all on the last day")
        _write_csv(eval_file, cols)
        oracle = {
            t: auc_or_nan(np.concatenate([c[t] for c in cols]), np.concatenate([c[f"p_{t}"] for c in cols]))
            for t in TASKS
        }
        info["eval"] = {
            "rows": eval_rows,
            "first_row": eval_first,
            "positives": {t: int(sum(c[t].sum() for c in cols)) for t in TASKS},
            "oracle_auc": oracle,
            "sha256": file_sha256(eval_file),
        }
    for shard in range(train_rows // shard_rows):
        path = root / "train" / f"part-{shard:05d}.csv"
        if path.exists():
            continue
        world = world or synthetic.SyntheticWorld(config)
        if log:
            log(f"writing training rows {shard * shard_rows:,}-{(shard + 1) * shard_rows:,}")
        cols = [world.chunk(i, synthetic._CHUNK_ROWS) for i in _chunks(shard * shard_rows, shard_rows)]
        _write_csv(path, cols)
    info["generator"] = config.to_dict()
    info["shard_rows"] = shard_rows
    info_path.write_text(json.dumps(info, indent=2))
    return info


def size_dir(root: Path, train_rows: int, shard_rows: int = SHARD_ROWS) -> Path:
    """A data directory for :func:`train_and_evaluate` with the first ``train_rows`` training rows.

    ``train/`` links the first shards of ``root/train``, ``eval`` links ``root/eval`` (the one
    eval day every size shares); ``metadata.json`` carries the columns and the row counts.
    """
    out = root / "sizes" / str(train_rows)
    (out / "train").mkdir(parents=True, exist_ok=True)
    for shard in range(train_rows // shard_rows):
        link = out / "train" / f"part-{shard:05d}.csv"
        if not link.exists():
            link.symlink_to(Path("..", "..", "..", "train", link.name))
    if not (out / "eval").exists():
        (out / "eval").symlink_to(Path("..", "..", "eval"))
    synthetic.feature_config().to_yaml(out / "features.yaml")
    info = json.loads((root / "data.json").read_text())
    meta = {
        "columns": synthetic.columns(),
        "splits": {"train": {"rows": train_rows}, "eval": {"rows": info["eval"]["rows"]}},
        "generator": info["generator"],
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=2))
    return out


# --------------------------------------------------------------------------- training cells
def cell_path(root: Path, model_type: str, train_rows: int, seed: int, epochs: int = 1) -> Path:
    """Where a cell's result is cached; one-epoch cells keep the name they always had."""
    rows = str(train_rows) if epochs == 1 else f"{train_rows}x{epochs}"
    return root / "cells" / f"{model_type}-{rows}-{seed}.json"


def run_cell(
    root: Path, model_type: str, train_rows: int, seed: int, args: argparse.Namespace, epochs: int = 1
) -> dict[str, Any]:
    """Trains one (model, rows, seed, epochs) cell through the library path, or loads its cached result."""
    path = cell_path(root, model_type, train_rows, seed, epochs)
    settings = {
        "scale": args.scale,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "epochs": epochs,
    }
    if path.exists():
        cell = json.loads(path.read_text())
        if cell["settings"] == settings:
            return cell
    from mvke_tf.models import ModelConfig
    from mvke_tf.train import TrainConfig, train_and_evaluate

    data_dir = size_dir(root, train_rows)
    mc = ModelConfig(model_type=model_type).scaled(args.scale)
    tc = TrainConfig(epochs=epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=seed)
    start = time.perf_counter()
    report = train_and_evaluate(data_dir, mc, tc, verbose=0)
    cell = {
        "model": model_type,
        "train_rows": train_rows,
        "seed": seed,
        "settings": settings,
        "auc": {t: report["eval"][t]["auc"] for t in TASKS},
        "oracle_auc": {t: report["eval"][t].get("oracle_auc") for t in TASKS},
        "eval_examples": report["eval"]["click"]["examples"],
        "eval_positives": {t: report["eval"][t]["positives"] for t in TASKS},
        "train_seconds": report["train_seconds"],
        "train_examples_per_second": report["train_examples_per_second"],
        "wall_seconds": time.perf_counter() - start,
        "num_parameters": report["num_parameters"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cell, indent=2))
    return cell


# --------------------------------------------------------------------------- references
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


# --------------------------------------------------------------------------- summary, table, plot
def gap_share(auc: float, oracle: float, floor: float = FLOOR_AUC) -> float:
    """Share of the oracle's headroom over ``floor`` an AUC reaches: ``(auc - floor) / (oracle - floor)``."""
    if not oracle > floor:
        raise ValueError(f"oracle={oracle} must exceed floor={floor}")
    return (auc - floor) / (oracle - floor)


def summarize(cells: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """``{model: {train_rows: {task: {"mean", "std", "n", "values"}}}}`` over seeds (population std)."""
    grouped: dict[str, dict[int, dict[str, list[float]]]] = {}
    for c in cells:
        per = grouped.setdefault(c["model"], {}).setdefault(int(c["train_rows"]), {t: [] for t in TASKS})
        for t in TASKS:
            per[t].append(float(c["auc"][t]))
    return {
        m: {
            n: {
                t: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v), "values": v}
                for t, v in per.items()
            }
            for n, per in sorted(sizes.items())
        }
        for m, sizes in grouped.items()
    }


def _rows_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def _rows_by_size(cells: Sequence[Mapping[str, Any]]) -> str:
    """Minutes of training and evaluation per training size, e.g. ``200k 25 min, 1M 75 min``."""
    minutes: dict[int, float] = {}
    for c in cells:
        minutes[c["train_rows"]] = minutes.get(c["train_rows"], 0.0) + c["wall_seconds"] / 60
    return ", ".join(f"{_rows_label(n)} {m:.0f} min" for n, m in sorted(minutes.items()))


def plot(results: Mapping[str, Any], path: str | Path) -> Path:
    """AUC vs training rows per model (mean ± seed std), one panel per task, with the oracle and
    the references as horizontal lines. ``results`` is the dict saved as ``learning_curves.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(results["cells"])
    refs = results["references"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, task in zip(axes, TASKS):
        for model, sizes in summary.items():
            xs = sorted(sizes)
            ax.errorbar(
                xs,
                [sizes[n][task]["mean"] for n in xs],
                yerr=[sizes[n][task]["std"] for n in xs],
                marker="o",
                capsize=3,
                label=model,
            )
        for value, style, label in (
            (refs["oracle"][task], "k-", "oracle (true probabilities)"),
            (refs["latent_facets"][task], "k--", "reference: true facets + statistics"),
            (refs["observable"][task], "k:", "reference: observable features only"),
        ):
            ax.axhline(value, color=style[0], linestyle=style[1:], linewidth=1, label=label)
        labels = refs.get("observable_on_labels", {})
        if labels:
            xs = sorted(int(n) for n in labels)
            ax.plot(
                xs, [labels[str(n)][task] for n in xs], "kx-", linewidth=0.8, label="observable reference on N labels"
            )
        ax.set_xscale("log")
        ax.set_xticks(sorted({int(c["train_rows"]) for c in results["cells"]} | {int(n) for n in labels}))
        ax.set_xticklabels([_rows_label(n) for n in ax.get_xticks()])
        ax.minorticks_off()
        ax.set_xlabel("training rows (first N of one generated world; same eval day)")
        ax.set_ylabel("eval AUC")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    handles, names = axes[1].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))  # room for the legend below the panels
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _ms(stats: Mapping[str, Any]) -> str:
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}" if stats["n"] > 1 else f"{stats['mean']:.4f}"


def tables(results: Mapping[str, Any]) -> str:
    """The AUC / gap-share table and the per-model gain table, as markdown."""
    summary = summarize(results["cells"])
    refs = results["references"]
    oracle = refs["oracle"]
    lines = [
        "| model | training rows | seeds | click AUC | click gap share | conversion AUC | conversion gap share |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for model, sizes in summary.items():
        for n, s in sizes.items():
            shares = {t: gap_share(s[t]["mean"], oracle[t]) for t in TASKS}
            lines.append(
                f"| {model} | {n:,} | {s['click']['n']} | {_ms(s['click'])} | {shares['click']:.1%} | "
                f"{_ms(s['conversion'])} | {shares['conversion']:.1%} |"
            )
    labels = refs["observable_on_labels"]
    ref_rows = [
        ("*oracle (true probabilities)*", oracle),
        ("*check: all latents (the oracle's inputs), fitted*", refs["all_latents"]),
        ("*reference: true facets + statistics*", refs["latent_facets"]),
        ("*reference: observable features only*", refs["observable"]),
        *[
            (f"*observable reference fitted on 0/1 labels of the first {int(n):,} rows*", labels[n])
            for n in sorted(labels, key=int)
        ],
    ]
    for name, aucs in ref_rows:
        lines.append(
            f"| {name} | | | {aucs['click']:.4f} | {gap_share(aucs['click'], oracle['click']):.1%} | "
            f"{aucs['conversion']:.4f} | {gap_share(aucs['conversion'], oracle['conversion']):.1%} |"
        )
    sizes_all = sorted({n for s in summary.values() for n in s})
    gains = [
        "",
        "| model | step | click ΔAUC | conversion ΔAUC | click Δgap share | conversion Δgap share |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for model, sizes in summary.items():
        for a, b in zip(sizes_all, sizes_all[1:]):
            if a in sizes and b in sizes:
                d = {t: sizes[b][t]["mean"] - sizes[a][t]["mean"] for t in TASKS}
                ds = {t: d[t] / (oracle[t] - FLOOR_AUC) for t in TASKS}
                gains.append(
                    f"| {model} | {_rows_label(a)} → {_rows_label(b)} | {d['click']:+.4f} | {d['conversion']:+.4f} | "
                    f"{ds['click']:+.1%} | {ds['conversion']:+.1%} |"
                )
    return "\n".join(lines + gains)


def seed_noise(summary: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, float] | None:
    """Per task, the largest seed std over the (model, rows) cells run with more than one seed; None if none was."""
    multi = [v for sizes in summary.values() for v in sizes.values() if v["click"]["n"] > 1]
    return {t: max(v[t]["std"] for v in multi) for t in TASKS} if multi else None


def _compare(diff: float, noise: float | None, more: str, less: str) -> str:
    if noise is None:
        return f"{more if diff > 0 else less} ({diff:+.4f}; one seed per cell, so not tested against seed noise)"
    if abs(diff) > 2 * noise:
        return f"{more if diff > 0 else less} ({diff:+.4f}, beyond twice the seed std {noise:.4f})"
    return f"no measured difference ({diff:+.4f}, within twice the seed std {noise:.4f})"


def reading(results: Mapping[str, Any]) -> str:
    """The section's conclusions, computed from the numbers."""
    summary = summarize(results["cells"])
    refs = results["references"]
    oracle = refs["oracle"]
    head = {t: oracle[t] - FLOOR_AUC for t in TASKS}
    sizes_all = sorted({n for s in summary.values() for n in s})
    small, top = sizes_all[0], sizes_all[-1]
    noise = seed_noise(summary)
    both_noise = None if noise is None else max(noise.values())
    out: list[str] = []
    if noise is None:
        out.append("- Every cell ran with one seed: no seed std was measured, so no difference below is tested.")
    else:
        out.append(
            f"- Seed noise: the largest seed std of a multi-seed cell is {noise['click']:.4f} (click) and "
            f"{noise['conversion']:.4f} (conversion); a change counts as measured beyond twice that."
        )
    for a, b in zip(sizes_all, sizes_all[1:]):
        both = [m for m, s in summary.items() if a in s and b in s]
        if not both:
            continue
        d = {t: np.array([summary[m][b][t]["mean"] - summary[m][a][t]["mean"] for m in both]) for t in TASKS}
        diff = float(d["conversion"].mean() - d["click"].mean())
        out.append(
            f"- **{_rows_label(a)} → {_rows_label(b)} rows** ({', '.join(both)}): click AUC "
            f"{d['click'].mean():+.4f} on average ({d['click'].mean() / head['click']:+.1%} of its oracle gap), "
            f"conversion {d['conversion'].mean():+.4f} ({d['conversion'].mean() / head['conversion']:+.1%}). "
            "Conversion vs click gain: " + _compare(diff, both_noise, "conversion gains more", "click gains more") + "."
        )
    common = [m for m, s in summary.items() if all(n in s for n in sizes_all)]
    if common and top != small:
        out.append(
            f"- **Gap share, mean over {', '.join(common)}, "
            + " → ".join(_rows_label(n) for n in sizes_all)
            + ":** click "
            + " → ".join(
                f"{np.mean([gap_share(summary[m][n]['click']['mean'], oracle['click']) for m in common]):.1%}"
                for n in sizes_all
            )
            + "; conversion "
            + " → ".join(
                f"{np.mean([gap_share(summary[m][n]['conversion']['mean'], oracle['conversion']) for m in common]):.1%}"
                for n in sizes_all
            )
            + "."
        )
    lab = refs["observable_on_labels"]
    first_labels = min(lab, key=int)
    for t in TASKS:
        best_auc, best_model = max((s[top][t]["mean"], m) for m, s in summary.items() if top in s)
        unobs = oracle[t] - refs["observable"][t]
        unlearned = refs["observable"][t] - best_auc
        learned_part = (
            f"at least {unlearned / head[t]:.0%} is unlearned (observable reference − best model, "
            f"{best_model} {best_auc:.4f})"
            if unlearned > 0
            else f"the best model ({best_model} {best_auc:.4f}) is above the observable reference, so none of it "
            "is shown to be unlearned"
        )
        out.append(
            f"- **{t} at {_rows_label(top)} rows:** of the oracle's headroom over {FLOOR_AUC} ({head[t]:.4f}), at "
            f"most {unobs / head[t]:.0%} is out of reach of the features (oracle {oracle[t]:.4f} − observable "
            f"reference {refs['observable'][t]:.4f}; of that, {(oracle[t] - refs['latent_facets'][t]) / head[t]:.0%} "
            f"of the headroom is the biases, the rest the facets being seen only through the behaviour lists), and "
            f"{learned_part}. Fitted on the 0/1 labels of only the first {int(first_labels):,} rows "
            f"({lab[first_labels]['conversions']} conversions), the observable reference reaches "
            f"{lab[first_labels][t]:.4f}."
        )
    if common and top != small:
        d_conv = float(
            np.mean([summary[m][top]["conversion"]["mean"] - summary[m][small]["conversion"]["mean"] for m in common])
        )
        d_click = float(
            np.mean([summary[m][top]["click"]["mean"] - summary[m][small]["click"]["mean"] for m in common])
        )
        verdict = _compare(
            d_conv - d_click,
            both_noise,
            "conversion rises with rows more than click does",
            "click rises with rows more than conversion does",
        )
        best_conv = max(summary[m][top]["conversion"]["mean"] for m in common)
        ref_conv = lab[first_labels]["conversion"]
        closed = np.mean(
            [
                (summary[m][top]["conversion"]["mean"] - summary[m][small]["conversion"]["mean"])
                / (refs["observable"]["conversion"] - summary[m][small]["conversion"]["mean"])
                for m in common
            ]
        )
        if ref_conv > best_conv + 2 * (both_noise or 0.0):
            signal = (
                f"The signal is in the rows already: the observable reference fitted on the labels of the first "
                f"{int(first_labels):,} rows ({lab[first_labels]['conversions']} conversions) reaches {ref_conv:.4f}, "
                f"above every model at {_rows_label(top)} rows (best {best_conv:.4f}). The reference is *given* the "
                "tag geometry and the generator's max-over-facets form; the models have to learn the tag and "
                f"behaviour-list embeddings from the labels. From {_rows_label(small)} to {_rows_label(top)} rows "
                f"they close {closed:.0%} of their conversion gap to the observable reference. "
                + (
                    "So conversion is data-starved for these models (their sample efficiency), not for lack of "
                    "information in the features: more rows keep helping"
                    + (" (one seed per cell, so untested against seed noise)." if both_noise is None else ".")
                    if d_conv > 2 * (both_noise or 0.0)
                    else "More rows do not measurably help here, so the limit is how the models learn (one epoch, "
                    "architecture, optimisation), not the number of rows nor the information in the features."
                )
            )
        else:
            signal = (
                f"The observable reference fitted on the labels of the first {int(first_labels):,} rows reaches "
                f"{ref_conv:.4f}, not above the best model at {_rows_label(top)} rows ({best_conv:.4f})."
            )
        out.append(
            f"- **Is conversion data-starved?** From {_rows_label(small)} to {_rows_label(top)} rows, averaged over "
            f"{', '.join(common)}, conversion AUC moves {d_conv:+.4f} and click {d_click:+.4f}: {verdict}. " + signal
        )
    rows_or_steps = same_steps_reading(results, both_noise)
    if rows_or_steps:
        out.append(rows_or_steps)
    return "\n".join(out)


# --------------------------------------------------------------------------- rows or steps
def _steps(rows: int, batch_size: int, epochs: int = 1) -> int:
    return -(-rows // batch_size) * epochs


def _same_steps_parts(results: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict, dict, list[str]] | None:
    """The same-steps block, the one-epoch and the repeated-epoch summaries, and the models that have
    all three cells (small × 1 epoch, small × k epochs, next size × 1 epoch); None if none has."""
    block = results.get("same_steps")
    if not block or not block["cells"]:
        return None
    one, rep = summarize(results["cells"]), summarize(block["cells"])
    small, big = block["rows"], block["compare_rows"]
    models = [m for m in rep if small in rep[m] and small in one.get(m, {}) and big in one.get(m, {})]
    return (block, one, rep, models) if models else None


def same_steps_table(results: Mapping[str, Any]) -> str:
    """Per model and task: the smallest size at one epoch and at k epochs against the next size at one
    epoch (the same steps as k epochs), and the share of the one-epoch gain the extra steps alone give."""
    parts = _same_steps_parts(results)
    if parts is None:
        return ""
    block, one, rep, models = parts
    small, big, k = block["rows"], block["compare_rows"], block["epochs"]
    batch = results["settings"]["batch_size"]
    lines = [
        f"| model | task | {_rows_label(small)} × 1 epoch ({_steps(small, batch):,} steps) | "
        f"{_rows_label(small)} × {k} epochs ({_steps(small, batch, k):,} steps), seeds | "
        f"{_rows_label(big)} × 1 epoch ({_steps(big, batch):,} steps) | share of the {_rows_label(small)} → "
        f"{_rows_label(big)} gain from steps alone |",
        "| --- | --- | --- | --- | --- | ---: |",
    ]
    for m in models:
        for t in TASKS:
            a, r, b = one[m][small][t], rep[m][small][t], one[m][big][t]
            gain = b["mean"] - a["mean"]
            share = f"{(r['mean'] - a['mean']) / gain:.0%}" if gain > 0 else "n/a (no gain)"
            lines.append(f"| {m} | {t} | {_ms(a)} | {_ms(r)}, {r['n']} | {_ms(b)} | {share} |")
    return "\n".join(lines)


def same_steps_reading(results: Mapping[str, Any], noise: float | None) -> str | None:
    """One bullet: at equal steps, how much of the gain distinct rows give beyond repeated ones."""
    parts = _same_steps_parts(results)
    if parts is None:
        return None
    block, one, rep, models = parts
    small, big, k = block["rows"], block["compare_rows"], block["epochs"]
    multi = [v[t]["std"] for sizes in rep.values() for v in sizes.values() if v["click"]["n"] > 1 for t in TASKS]
    noise = max([noise or 0.0, *multi]) if (noise is not None or multi) else None
    mean = {
        t: {
            key: float(np.mean([src[m][n][t]["mean"] for m in models]))
            for key, src, n in (("one", one, small), ("rep", rep, small), ("big", one, big))
        }
        for t in TASKS
    }
    share = {
        t: (mean[t]["rep"] - mean[t]["one"]) / (mean[t]["big"] - mean[t]["one"])
        if mean[t]["big"] > mean[t]["one"]
        else float("nan")
        for t in TASKS
    }
    rows_effect = {t: mean[t]["big"] - mean[t]["rep"] for t in TASKS}
    conv = rows_effect["conversion"]
    if noise is not None and abs(conv) <= 2 * noise:
        verdict = (
            f"at equal steps, {k} passes over {_rows_label(small)} rows do as well as one over {_rows_label(big)}: "
            "the one-epoch curve's conversion gain is optimisation steps, so at one epoch these models are "
            "under-trained rather than short of rows"
        )
    elif conv > 0:
        verdict = (
            "distinct rows help beyond the steps they bring: conversion is data-starved in the strict sense "
            "(repeating rows does not replace new ones)"
        )
    else:
        verdict = f"{k} passes over the same rows do better than one pass over new ones at equal steps"
    below = [t for t in TASKS if mean[t]["rep"] < mean[t]["one"]]
    if below:
        verdict += (
            f"; {k} passes over the same rows even score below one pass ({' and '.join(below)}), a sign of "
            "overfitting: the extra passes fit the training rows, not the eval day"
        )
    return (
        f"- **Rows or steps?** At equal steps ({_steps(small, results['settings']['batch_size'], k):,} vs "
        f"{_steps(big, results['settings']['batch_size']):,}), {_rows_label(small)} rows × {k} epochs against "
        f"{_rows_label(big)} rows × 1 epoch, mean over {', '.join(models)}: click "
        f"{mean['click']['rep']:.4f} vs {mean['click']['big']:.4f}, conversion {mean['conversion']['rep']:.4f} vs "
        f"{mean['conversion']['big']:.4f}. The extra steps alone give {share['click']:.0%} (click) and "
        f"{share['conversion']:.0%} (conversion) of the {_rows_label(small)} → {_rows_label(big)} gain; distinct "
        f"rows at equal steps add {rows_effect['click']:+.4f} click AUC ({_vs_noise(rows_effect['click'], noise)}) "
        f"and {conv:+.4f} conversion ({_vs_noise(conv, noise)}). So {verdict}."
    )


def _vs_noise(diff: float, noise: float | None) -> str:
    if noise is None:
        return "one seed per cell, not tested against seed noise"
    return f"{'beyond' if abs(diff) > 2 * noise else 'within'} twice the seed std {noise:.4f}"


# --------------------------------------------------------------------------- main
def _plan_cells(plan: Mapping[int, int], models: Sequence[str]) -> list[tuple[str, int, int]]:
    """Cells in run order, so that a run cut short by ``--max-minutes`` still has whole curves: seed 0 at
    every size for two models at a time (smallest size first), then the further seeds."""
    order = []
    for first in range(0, len(models), 2):
        for n in sorted(plan):
            order += [(m, n, 0) for m in models[first : first + 2]]
    for seed in range(1, max(plan.values())):
        for n in sorted(plan):
            if seed < plan[n]:
                order += [(m, n, seed) for m in models]
    return order


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--full",
        action="store_true",
        help="200k / 1M rows x 3 seeds, 4M rows x 1 seed, and the same-steps cells (200k rows x 5 epochs) x 3 seeds",
    )
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument(
        "--sizes", nargs="+", type=int, default=None, help="train only these sizes of the plan (the report keeps all)"
    )
    p.add_argument(
        "--same-steps",
        type=int,
        default=None,
        metavar="SEEDS",
        help="seeds of the same-steps cells: the smallest size for as many epochs as the next size's steps "
        f"(default: {FULL_SAME_STEPS_SEEDS} with --full, else 0)",
    )
    p.add_argument("--scale", type=float, default=0.25, help="hidden layer scale vs the paper's Table 5")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--max-minutes", type=float, default=None, help="start no new cell after this much training time")
    p.add_argument("--report-only", action="store_true", help="train nothing: tabulate the cached cells")
    p.add_argument("--work-dir", default="runs/learning_curves")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args(argv)
    from mvke_tf.models import MODEL_TYPES

    bad = [m for m in args.models if m not in MODEL_TYPES]
    if bad:
        p.error(f"--models: {bad} unknown; use some of {list(MODEL_TYPES)}")
    plan = FULL_PLAN if args.full else DEFAULT_PLAN
    if args.sizes is not None and not set(args.sizes) <= set(plan):
        p.error(f"--sizes: {sorted(set(args.sizes) - set(plan))} not in the plan; use some of {sorted(plan)}")
    same_seeds = args.same_steps if args.same_steps is not None else FULL_SAME_STEPS_SEEDS * args.full
    if same_seeds < 0:
        p.error(f"--same-steps {same_seeds}: a number of seeds is 0 or more; fix: --same-steps 3")
    root = Path(args.work_dir)
    config = world_config()
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {msg}", file=sys.stderr, flush=True)

    info = prepare_data(config, root, max(args.sizes or plan), log=log)
    log(f"data ready: eval {info['eval']['rows']:,} rows, sha256 {info['eval']['sha256'][:16]}")
    cells, not_run = [], []
    train_start = time.perf_counter()
    small, following = sorted(plan)[:2]
    repeat = following // small  # epochs over the smallest size that take the next size's steps
    same_cells, same_not_run = [], []
    runs = [(model, n, seed, 1) for model, n, seed in _plan_cells(plan, args.models)]
    runs += [(model, small, seed, repeat) for seed in range(same_seeds) for model in args.models]
    for model, n, seed, epochs in runs:
        cached = cell_path(root, model, n, seed, epochs).exists()
        over = args.max_minutes is not None and time.perf_counter() - train_start > 60 * args.max_minutes
        skipped = args.sizes is not None and n not in args.sizes
        if (over or skipped or args.report_only) and not cached:
            (not_run if epochs == 1 else same_not_run).append({"model": model, "train_rows": n, "seed": seed})
            continue
        cell = run_cell(root, model, n, seed, args, epochs=epochs)
        (cells if epochs == 1 else same_cells).append(cell)
        log(
            f"{model:<10} {n:>9,} rows{f' x {epochs} epochs' if epochs > 1 else ''} seed {seed}: click "
            f"{cell['auc']['click']:.4f} conversion {cell['auc']['conversion']:.4f} "
            f"({cell['train_examples_per_second']:,.0f} ex/s)"
        )
    ref_path = root / "references.json"
    refs = json.loads(ref_path.read_text()) if ref_path.exists() else None
    if refs is None or refs.get("generator") != config.to_dict():
        log("fitting the references")
        refs = {**compute_references(config, root), "generator": config.to_dict()}
        ref_path.write_text(json.dumps(refs, indent=2))
    # The eval day is one file shared by every size: each cell must have scored the same rows.
    same_eval = all(
        c["eval_examples"] == info["eval"]["rows"] and c["eval_positives"] == info["eval"]["positives"]
        for c in cells + same_cells
    )
    # (to 1e-5: the files round probabilities to 6 decimals, the data's own figure is from unrounded ones)
    oracle_agrees = all(
        abs(refs["oracle"][t] - info["eval"]["oracle_auc"][t]) < 1e-5
        and all(abs(c["oracle_auc"][t] - refs["oracle"][t]) < 1e-9 for c in cells + same_cells)
        for t in TASKS
    )
    results = {
        "plan": {str(n): s for n, s in plan.items()},
        "settings": {"scale": args.scale, "batch_size": args.batch_size, "learning_rate": args.learning_rate},
        "epochs": 1,
        "eval": info["eval"],
        "eval_identical_across_cells": same_eval,
        "floor_auc": FLOOR_AUC,
        "cells": cells,
        "not_run": not_run,
        "same_steps": {
            "rows": small,
            "epochs": repeat,
            "compare_rows": following,
            "seeds": same_seeds,
            "cells": same_cells,
            "not_run": same_not_run,
        },
        "references": refs,
    }
    table = tables(results)
    rows_or_steps = same_steps_table(results)
    if rows_or_steps:
        table += (
            f"\n\nRows or steps: the {_rows_label(small)}-row prefix trained for {repeat} epochs takes the steps of "
            f"{_rows_label(following)} rows in one (mean ± seed std):\n\n{rows_or_steps}"
        )
    print(table)
    text = reading(results)
    print(text)
    if args.no_write:
        return 0
    from benchmarks.report import machine, section, write_section

    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "learning_curves.json").write_text(json.dumps(results, indent=2))
    plot(results, FIGURES / "learning_curves.png")
    cmd = "python -m benchmarks.learning_curves " + " ".join(sys.argv[1:] if argv is None else argv)
    ran = ", ".join(f"{_rows_label(n)} rows × {s} seed{'s' * (s > 1)}" for n, s in sorted(plan.items()))
    missing = "; ".join(
        [f"{c['model']} {_rows_label(c['train_rows'])} seed {c['seed']}" for c in not_run]
        + [f"{c['model']} {_rows_label(c['train_rows'])} × {repeat} epochs seed {c['seed']}" for c in same_not_run]
    )
    train_minutes = sum(c["wall_seconds"] for c in cells + same_cells) / 60
    facts = {
        "Data": (
            f"one world (`SyntheticConfig(num_rows={config.num_rows:,}, num_users={config.num_users:,}, "
            f"days={config.days}, seed=0)`): the first {MAX_TRAIN_ROWS:,} rows are training rows, the last day "
            f"({EVAL_ROWS:,} rows, {info['eval']['positives']['click']:,} clicks, "
            f"{info['eval']['positives']['conversion']:,} conversions) the eval split. A size of N rows trains on "
            f"the first N training rows (whole 200k-row files); only the rows a run needs are generated, "
            "byte-identical to `synthetic.generate` for that config"
        ),
        "Eval set": (
            f"one file shared by every size, sha256 `{info['eval']['sha256'][:16]}…`; "
            + (
                "every cell's evaluation counted the same rows and positives"
                if same_eval
                else "WARNING: a cell's evaluation counted other rows"
            )
            + ("; the references' oracle AUC equals the data's" if oracle_agrees else "; WARNING: oracle AUCs disagree")
        ),
        "Models": (
            f"through `train_and_evaluate`, as `benchmarks.models`: Table 5 layers × {args.scale}, Adam lr "
            f"{args.learning_rate}, batch {args.batch_size}, 1 epoch (so more rows also means more steps)"
        ),
        "Plan": f"{ran}"
        + ("" if args.full else "; 4M rows: not run here (`python -m benchmarks.learning_curves --full`)")
        + (
            f"; same steps: {_rows_label(small)} rows × {repeat} epochs × {same_seeds} seed{'s' * (same_seeds > 1)}"
            if same_seeds
            else ""
        ),
        "Run here": (
            (
                "tabulated from the cache (`--report-only`), trained by earlier runs of this plan in parts "
                "(`--max-minutes`, `--sizes`): "
                if args.report_only
                else ""
            )
            + f"{len(cells)} cells ("
            + ", ".join(f"{c['model']} {_rows_label(c['train_rows'])} seed {c['seed']}" for c in cells)
            + (f") and {len(same_cells)} same-steps cells (" if same_cells else "")
            + ", ".join(f"{c['model']} seed {c['seed']}" for c in same_cells)
            + f"), {train_minutes:.0f} min of training and evaluation"
            + (f" ({_rows_by_size(cells)})" if len({c["train_rows"] for c in cells}) > 1 else "")
            + " at "
            f"{np.mean([c['train_examples_per_second'] for c in cells]):,.0f} training examples/s on average"
            + (f"; **not run** (out of the compute budget): {missing}" if missing else "")
            + "; every cell is cached under the work directory, so a re-run (or `--full`) trains only the missing "
            "ones"
        ),
        "Gap share": (
            f"(AUC − {FLOOR_AUC}) / (oracle − {FLOOR_AUC}): the floor is a random score's AUC; Δgap share "
            "is an AUC change in units of the oracle's headroom"
        ),
        "Machine": f"{machine()} (shared with other jobs: throughput figures are indicative only)",
    }
    steps = ", ".join(f"{-(-n // args.batch_size):,} steps at {_rows_label(n)} rows" for n in sorted(plan))
    separation = (
        f"The same-steps cells below separate them: {_rows_label(small)} rows × {repeat} epochs take the steps of "
        f"{_rows_label(following)} rows × 1 epoch."
        if same_cells
        else f"This run does not separate the two; {repeat} epochs over {_rows_label(small)} rows against one over "
        f"{_rows_label(following)} would (`--same-steps 3`)."
    )
    note = REFERENCE_NOTE.format(fit_rows=refs["fit_rows"], steps=steps, separation=separation)
    body = section("Learning curves: is conversion data-starved?", cmd, facts, table, note)
    body += f"\n![learning curves](figures/learning_curves.png)\n\nReading (computed from the table):\n\n{text}\n"
    write_section("learning_curves", body)
    return 0


REFERENCE_NOTE = """\
References (numpy logistic regressions, fitted on the true probabilities of the first {fit_rows:,}
training rows, so without label noise; conversion is scored as P(click) × P(conversion | click), the
generator's form). The oracle's click logit is `user_bias + ad_bias + 5·max_f <facet_f, ad_vec>`
(conversion alike, with its own facets and biases). *All latents* feeds those three inputs and must
recover the oracle (a check of the fitting). *True facets + statistics* gets the true facet affinity
but sees the biases only through what the features carry: the user's historical CTR / CVR
statistics; the ad bias has no feature (no ad id). *Observable features only* sees nothing a model
cannot see: a behaviour-list entry names a facet's taxonomy node, so each facet's affinity to the ad
is estimated as the best affinity of a listed level-2 (or level-1) node's mean tag vector to the
ad's vector (the ad's vector is a function of its tags), plus the statistics. It uses the
generator's tag geometry, which a model has to learn, so it is a *lower* bound on what the features
allow: oracle − observable reference bounds the unobservable part from above, observable reference −
model bounds the unlearned part from below.

One epoch at every size (as `benchmarks.models`): a larger size is both more distinct rows and more
optimisation steps ({steps}). {separation}"""


if __name__ == "__main__":
    sys.exit(main())
