"""Library-only training and evaluation (no TFX): fit, evaluate per task, report."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from mvke_tf.config import ConfigError, FeatureConfig
from mvke_tf.data.dataset import make_dataset
from mvke_tf.metrics import auc
from mvke_tf.models.config import ModelConfig
from mvke_tf.models.user_tag import UserTagModel, build_model


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (paper Table 5: Adam, batch 2048).

    Attributes:
      epochs: passes over the training files.
      batch_size: examples per step.
      learning_rate: Adam learning rate.
      seed: seeds weight initialisation and shuffling.
      shuffle_buffer: examples held for shuffling.
    """

    epochs: int = 1
    batch_size: int = 2048
    learning_rate: float = 1e-3
    seed: int = 0
    shuffle_buffer: int = 20_000

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs={self.epochs} must be >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate={self.learning_rate} must be > 0")


def compile_model(model: UserTagModel, learning_rate: float = 1e-3) -> UserTagModel:
    """Compiles with per-task BCE (weighted by the config) and per-task AUC metrics."""
    tasks = model.tasks
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss={t: tf.keras.losses.BinaryCrossentropy() for t in tasks},
        loss_weights=model.model_config.loss_weights,
        metrics={t: [tf.keras.metrics.AUC(name="auc", num_thresholds=2000)] for t in tasks},
    )
    return model


def predict_with_labels(
    model: tf.keras.Model,
    files: Any,
    feature_config: FeatureConfig,
    batch_size: int = 4096,
    extra_columns: Sequence[str] = (),
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Runs the model over ``files``; returns (predictions, labels, extra columns) as arrays."""
    ds = make_dataset(files, feature_config, batch_size=batch_size, extra_columns=extra_columns)
    preds: dict[str, list[np.ndarray]] = {t: [] for t in model.tasks}
    labels: dict[str, list[np.ndarray]] = {t: [] for t in feature_config.labels}
    extras: dict[str, list[np.ndarray]] = {c: [] for c in extra_columns}
    predict = tf.function(lambda f: model(f, training=False))
    for features, y in ds:
        for c in extra_columns:
            extras[c].append(features.pop(c).numpy())
        out = predict(features)
        for t in model.tasks:
            preds[t].append(out[t].numpy())
        for t in labels:
            labels[t].append(y[t].numpy())

    def cat(d: Mapping[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in d.items()}

    return cat(preds), cat(labels), cat(extras)


def _safe_auc(y: np.ndarray, s: np.ndarray) -> float:
    return auc(y, s) if 0 < y.sum() < len(y) else float("nan")


def evaluate(
    model: UserTagModel, files: Any, feature_config: FeatureConfig, batch_size: int = 4096
) -> dict[str, dict[str, float]]:
    """Exact per-task AUC on ``files``, with the oracle AUC where true probabilities exist.

    Returns:
      ``{task: {"auc": ..., "oracle_auc": ..., "positives": ..., "examples": ...}}``.
    """
    prob_cols = [c for c in (f"p_{t}" for t in model.tasks)]
    try:
        preds, labels, extras = predict_with_labels(model, files, feature_config, batch_size, prob_cols)
    except ValueError as e:
        if "lacks column" not in str(e):
            raise
        preds, labels, extras = predict_with_labels(model, files, feature_config, batch_size)
    report = {}
    for t in model.tasks:
        y = labels[t]
        entry = {"auc": _safe_auc(y, preds[t]), "positives": int(y.sum()), "examples": int(len(y))}
        truth = extras.get(f"p_{t}")
        if truth is not None and not np.isnan(truth).any():  # absent in TFRecords without true probabilities
            entry["oracle_auc"] = _safe_auc(y, truth)
        report[t] = entry
    return report


def train_and_evaluate(
    data_dir: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig = TrainConfig(),
    out_dir: str | Path | None = None,
    verbose: int = 1,
) -> dict[str, Any]:
    """Trains on ``data_dir/train`` and evaluates on ``data_dir/eval``.

    ``data_dir`` is a directory written by :func:`mvke_tf.data.synthetic.generate`
    (or any directory with ``features.yaml`` and ``train/`` and ``eval/`` part files).
    With ``out_dir``, the report is written to ``out_dir/report.json``.

    Returns:
      A report with per-task eval AUC (and oracle AUC), training time and throughput.
    """
    data_dir = Path(data_dir)
    feature_config = FeatureConfig.from_yaml(data_dir / "features.yaml")
    missing = [t for t in model_config.tasks if t not in feature_config.labels]
    if missing:
        raise ConfigError(
            f"model tasks {missing} have no label column; the data has labels {list(feature_config.labels)}"
        )
    tf.keras.utils.set_random_seed(train_config.seed)
    model = compile_model(build_model(feature_config, model_config), train_config.learning_rate)
    train_ds = make_dataset(
        data_dir / "train",
        feature_config,
        batch_size=train_config.batch_size,
        shuffle=True,
        seed=train_config.seed,
        shuffle_buffer=train_config.shuffle_buffer,
    )
    start = time.perf_counter()
    history = model.fit(train_ds, epochs=train_config.epochs, verbose=verbose)
    train_seconds = time.perf_counter() - start
    train_rows = _count_rows(data_dir, "train")
    start = time.perf_counter()
    metrics = evaluate(model, data_dir / "eval", feature_config)
    eval_seconds = time.perf_counter() - start
    report = {
        "model_type": model_config.model_type,
        "model_config": model_config.to_dict(),
        "train_config": dataclasses.asdict(train_config),
        "eval": metrics,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "train_examples_per_second": (train_rows * train_config.epochs / train_seconds) if train_rows else None,
        "final_loss": float(history.history["loss"][-1]),
        "num_parameters": int(model.count_params()),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
    report["model"] = model
    return report


def _count_rows(data_dir: Path, split: str) -> int | None:
    meta = data_dir / "metadata.json"
    if meta.exists():
        return int(json.loads(meta.read_text())["splits"][split]["rows"])
    return None


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text per-task AUC table with the oracle AUC beside the model's."""
    lines = [f"{'task':<12} {'examples':>9} {'positives':>9} {'model AUC':>10} {'oracle AUC':>11}"]
    for task, m in report["eval"].items():
        oracle = m.get("oracle_auc", float("nan"))
        lines.append(f"{task:<12} {m['examples']:>9d} {m['positives']:>9d} {m['auc']:>10.4f} {oracle:>11.4f}")
    eps = report.get("train_examples_per_second")
    lines.append(
        f"model {report['model_type']}: {report['num_parameters']:,} parameters, "
        f"trained in {report['train_seconds']:.1f} s" + (f" ({eps:,.0f} examples/s)" if eps else "")
    )
    return "\n".join(lines)
