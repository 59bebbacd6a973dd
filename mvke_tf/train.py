"""Library-only training and evaluation (no TFX): fit, evaluate per task, report."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
import tensorflow as tf

from mvke_tf import distribute
from mvke_tf.config import ConfigError, FeatureConfig
from mvke_tf.data.dataset import has_column, make_dataset, resolve_files
from mvke_tf.metrics import auc_or_nan
from mvke_tf.models.family import config_for_data, family_of


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (paper Table 5: Adam, batch 2048).

    Attributes:
      epochs: passes over the training files.
      batch_size: examples per step: the *global* batch, split across all replicas (each of
        ``num_replicas_in_sync`` replicas gets ``batch_size / replicas``), so one step sees the
        same number of examples whatever the strategy.
      learning_rate: Adam learning rate.
      seed: seeds weight initialisation and shuffling.
      shuffle_buffer: examples held for shuffling.
      strategy: the ``tf.distribute`` strategy, one of :data:`mvke_tf.distribute.STRATEGIES`:
        ``default`` (one device), ``mirrored`` (the local GPUs) or ``multi_worker`` (several
        processes or machines, from ``TF_CONFIG``; see :mod:`mvke_tf.distribute`).
    """

    epochs: int = 1
    batch_size: int = 2048
    learning_rate: float = 1e-3
    seed: int = 0
    shuffle_buffer: int = 20_000
    strategy: str = "default"

    def __post_init__(self) -> None:
        distribute.validate_strategy(self.strategy)
        if self.epochs < 1:
            raise ConfigError(f"epochs={self.epochs} must be >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate={self.learning_rate} must be > 0")


def data_columns(data_dir: Path) -> list[str] | None:
    """The train split's columns (from ``metadata.json``, else the CSV header or the Parquet schema); None where
    unknown (TFRecord files: an optional column that is absent then parses as missing)."""
    meta = data_dir / "metadata.json"
    columns = json.loads(meta.read_text()).get("columns") if meta.exists() else None
    if columns is not None:
        return list(columns)
    first = resolve_files(data_dir / "train")[0]
    if first.endswith(".csv"):
        with open(first) as f:
            return f.readline().rstrip("\r\n").split(",")
    if first.endswith(".parquet"):
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(first).schema_arrow.names)
    return None


def compile_model(model: tf.keras.Model, learning_rate: float = 1e-3) -> tf.keras.Model:
    """Compiles a model of any family: Adam, per-task BCE (weighted by the config), per-task AUC."""
    return family_of(model).compile(model, learning_rate)


_INFERENCE_FNS: WeakKeyDictionary = WeakKeyDictionary()


def _inference_fn(model: tf.keras.Model) -> Callable[[Any], Any]:
    """One traced inference function per model, reused across calls.

    A fresh ``tf.function`` per call would retrace the whole graph every time a notebook or
    benchmark evaluates the same model again.
    """
    # A side table, not an attribute: SavedModel export collects tf.function attributes.
    fn = _INFERENCE_FNS.get(model)
    if fn is None:
        # A weak reference, so the cached function does not keep the model alive.
        model_ref = weakref.ref(model)
        fn = tf.function(lambda f: model_ref()(f, training=False))
        _INFERENCE_FNS[model] = fn
    return fn


def predict_with_labels(
    model: tf.keras.Model,
    files: Any,
    feature_config: FeatureConfig,
    batch_size: int = 4096,
    extra_columns: Sequence[str] = (),
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Runs the model over ``files``; returns (predictions, labels, extra columns) as arrays.

    The columns the model itself reads besides its fields (e.g. a domain id) are model inputs, and
    are returned among the extra columns too when asked for.
    """
    model_columns = family_of(model).dataset_columns(model.config)
    columns = list(dict.fromkeys([*model_columns, *extra_columns]))
    ds = make_dataset(files, feature_config, batch_size=batch_size, extra_columns=columns)
    preds: dict[str, list[np.ndarray]] = {t: [] for t in model.tasks}
    labels: dict[str, list[np.ndarray]] = {t: [] for t in feature_config.labels}
    extras: dict[str, list[np.ndarray]] = {c: [] for c in extra_columns}
    predict = _inference_fn(model)
    for features, y in ds:
        for c in extra_columns:
            extras[c].append(features[c].numpy())
        out = predict({k: v for k, v in features.items() if k not in extra_columns or k in model_columns})
        for t in model.tasks:
            preds[t].append(out[t].numpy())
        for t in labels:
            labels[t].append(y[t].numpy())

    def cat(d: Mapping[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in d.items()}

    return cat(preds), cat(labels), cat(extras)


def evaluate(
    model: tf.keras.Model, files: Any, feature_config: FeatureConfig, batch_size: int = 4096
) -> dict[str, dict[str, float]]:
    """Exact per-task AUC on ``files``, with the oracle AUC where true probabilities exist, and the AUC
    per domain for a multi-domain model.

    Returns:
      ``{task: {"auc": ..., "oracle_auc": ..., "positives": ..., "examples": ...}}`` (plus
      ``"per_domain_auc": {domain id: auc}`` for a model with a domain feature).
    """
    prob_cols = [f"p_{t}" for t in model.tasks if has_column(files, f"p_{t}")]
    domain = family_of(model).domain_feature(model.config)
    extra = prob_cols + ([domain] if domain else [])
    preds, labels, extras = predict_with_labels(model, files, feature_config, batch_size, extra)
    report = {}
    for t in model.tasks:
        y = labels[t]
        entry = {"auc": auc_or_nan(y, preds[t]), "positives": int(y.sum()), "examples": int(len(y))}
        truth = extras.get(f"p_{t}")
        if truth is not None and not np.isnan(truth).any():  # absent in TFRecords without true probabilities
            entry["oracle_auc"] = auc_or_nan(y, truth)
        if domain:  # a model scoring each domain apart is judged per domain too
            ids = extras[domain]
            entry["per_domain_auc"] = {
                str(d): auc_or_nan(y[ids == d], preds[t][ids == d]) for d in np.unique(ids).tolist()
            }
        report[t] = entry
    return report


def train_and_evaluate(
    data_dir: str | Path,
    model_config: Any = "two_tower",
    train_config: TrainConfig = TrainConfig(),
    out_dir: str | Path | None = None,
    verbose: int = 1,
) -> dict[str, Any]:
    """Trains on ``data_dir/train`` and evaluates on ``data_dir/eval``.

    ``data_dir`` is a directory written by :func:`mvke_tf.data.synthetic.generate`
    (or any directory with ``features.yaml`` and ``train/`` and ``eval/`` part files).
    With ``out_dir``, the report is written to ``out_dir/report.json``.

    ``model_config``: a model name (one of :data:`~mvke_tf.models.family.MODEL_NAMES`), whose config then has
    the data's labels as tasks (:func:`~mvke_tf.models.family.config_for_data`), or a config built by hand.

    Returns:
      A report with per-task eval AUC (and oracle AUC), training time and throughput.
    """
    # The strategy first: multi-worker collective ops must be set up before other TensorFlow ops run.
    strategy = distribute.make_strategy(train_config.strategy)
    workers = distribute.num_workers(strategy)
    chief = distribute.is_chief(strategy)
    data_dir = Path(data_dir)
    feature_config = FeatureConfig.from_yaml(data_dir / "features.yaml")
    if isinstance(model_config, str):
        model_config = config_for_data(model_config, feature_config)
    missing = [t for t in model_config.tasks if t not in feature_config.labels]
    if missing:
        raise ConfigError(
            f"model tasks {missing} have no label column; the data has labels {list(feature_config.labels)}; "
            f"fix: set tasks={list(feature_config.labels)} (or some of them), or pass the model's name, whose "
            "config then takes the data's labels as tasks"
        )
    family = family_of(model_config)
    if train_config.strategy not in family.strategies:
        raise ConfigError(
            f"strategy={train_config.strategy!r}: {family.name} models train under {', '.join(family.strategies)}; "
            "fix: drop --strategy"
        )
    columns = data_columns(data_dir)
    fields = family.input_fields(feature_config, model_config, columns)
    tf.keras.utils.set_random_seed(train_config.seed)
    with strategy.scope():
        model = family.compile(family.build(feature_config, model_config, fields), train_config.learning_rate)
    feature_config = family.dataset_config(feature_config, model)  # the datasets yield every model input
    model_columns = family.dataset_columns(model_config)
    absent = [c for c in model_columns if columns is not None and c not in columns]
    if absent:
        raise ConfigError(
            f"model {model_config.model_type!r} reads column(s) {absent}, which {data_dir / 'train'} lacks; "
            "fix: train it on data that has them (multi-domain data: mvke-tf data synth --multidomain)"
        )

    def shuffled(split: str, num_epochs: int | None) -> tf.data.Dataset:
        return make_dataset(
            data_dir / split,
            feature_config,
            batch_size=train_config.batch_size,
            shuffle=True,
            seed=train_config.seed,
            shuffle_buffer=train_config.shuffle_buffer,
            num_epochs=num_epochs,
            extra_columns=model_columns,
        )

    held_out = None
    if family.needs_held_out(model_config):
        try:
            resolve_files(data_dir / "val")
        except FileNotFoundError:
            raise ConfigError(
                f"model {model_config.model_type!r} trains its fusion weights on a held-out split and "
                f"{data_dir / 'val'} has no files; fix: write one (mvke-tf data synth --multidomain) "
                "or set fusion: code in --config"
            ) from None
        held_out = shuffled("val", None)
    train_rows = _count_rows(data_dir, "train")
    steps_per_epoch = None
    if workers > 1:
        # Every worker must run the same number of steps, or the last collective op never completes:
        # repeat the data and cut epochs by steps (of the global batch).
        train_rows = train_rows if train_rows is not None else _count_file_rows(data_dir / "train", feature_config)
        steps_per_epoch = max(1, math.ceil(train_rows / train_config.batch_size))
    train_ds = shuffled("train", None if steps_per_epoch else 1)
    if workers > 1:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = distribute.shard_policy(
            resolve_files(data_dir / "train"), workers
        )
        train_ds = train_ds.with_options(options)
    start = time.perf_counter()
    history = family.fit(
        model,
        train_ds,
        epochs=train_config.epochs,
        steps_per_epoch=steps_per_epoch,
        held_out=held_out,
        verbose=verbose,
    )
    train_seconds = time.perf_counter() - start
    report = {
        "model_type": model_config.model_type,
        "model_family": family.name,
        "model_config": model_config.to_dict(),
        "train_config": dataclasses.asdict(train_config),
        "eval": {},
        "train_seconds": train_seconds,
        "eval_seconds": 0.0,
        "train_examples_per_second": (train_rows * train_config.epochs / train_seconds) if train_rows else None,
        "final_loss": float(history["loss"][-1]),
        "num_parameters": int(model.count_params()),
        **family.training_summary(model),
    }
    if train_config.strategy != "default":
        report["distribution"] = {
            "strategy": train_config.strategy,
            "num_workers": workers,
            "num_replicas_in_sync": int(strategy.num_replicas_in_sync),
            "chief": chief,
            "steps_per_epoch": steps_per_epoch,
            "weights_sha256": distribute.weights_sha256(model),
        }
    if chief:  # the other workers' models are the same (synchronous training): only the chief evaluates
        start = time.perf_counter()
        report["eval"] = evaluate(model, data_dir / "eval", feature_config)
        report["eval_seconds"] = time.perf_counter() - start
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.json").write_text(json.dumps(report, indent=2))
    distribute.barrier(strategy)
    report["model"] = model
    return report


def _count_file_rows(files: Any, feature_config: FeatureConfig) -> int:
    """Rows in ``files`` by reading them (when there is no ``metadata.json``)."""
    ds = make_dataset(files, feature_config, batch_size=8192)
    return int(ds.reduce(np.int64(0), lambda n, b: n + tf.cast(tf.shape(b[1][feature_config.labels[0]])[0], tf.int64)))


def _count_rows(data_dir: Path, split: str) -> int | None:
    meta = data_dir / "metadata.json"
    if meta.exists():
        return int(json.loads(meta.read_text())["splits"][split]["rows"])
    return None


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text per-task AUC table, with the oracle AUC beside the model's where the data has one
    (the synthetic generators' true probabilities); a team's own data has none, and shows no column for it."""
    with_oracle = any(np.isfinite(m.get("oracle_auc", np.nan)) for m in report["eval"].values())
    oracle_head = f" {'oracle AUC':>11}" if with_oracle else ""
    lines = [f"{'task':<12} {'examples':>9} {'positives':>9} {'model AUC':>10}{oracle_head}"]
    for task, m in report["eval"].items():
        oracle = f" {m.get('oracle_auc', float('nan')):>11.4f}" if with_oracle else ""
        lines.append(f"{task:<12} {m['examples']:>9d} {m['positives']:>9d} {m['auc']:>10.4f}{oracle}")
    per_domain = {t: m["per_domain_auc"] for t, m in report["eval"].items() if "per_domain_auc" in m}
    if per_domain:
        domains = sorted({d for v in per_domain.values() for d in v}, key=int)
        lines.append(f"{'AUC by domain':<14}" + "".join(f"{'domain ' + d:>10}" for d in domains))
        for task, v in per_domain.items():
            lines.append(f"{task:<14}" + "".join(f"{v.get(d, float('nan')):>10.4f}" for d in domains))
    fusion = report.get("fusion_weights")
    if fusion:
        lines.append("learned fusion weights: " + ", ".join(f"{k} {v:.3f}" for k, v in fusion.items()))
    dist = report.get("distribution")
    if dist and not dist["chief"]:
        lines.append("(not the chief: the chief evaluates and writes the report)")
    eps = report.get("train_examples_per_second")
    lines.append(
        f"model {report['model_type']}: {report['num_parameters']:,} parameters, "
        f"trained in {report['train_seconds']:.1f} s" + (f" ({eps:,.0f} examples/s)" if eps else "")
    )
    if dist:
        lines.append(
            f"strategy {dist['strategy']}: {dist['num_workers']} worker(s), "
            f"{dist['num_replicas_in_sync']} replica(s) in sync; weights sha256 {dist['weights_sha256']}"
        )
    return "\n".join(lines)
