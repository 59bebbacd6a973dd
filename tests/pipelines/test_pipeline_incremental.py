"""Incremental training: ExampleGen reads the latest span; the Trainer warm-starts from the last blessed model;
the Evaluator's blessing keeps a worse model from being pushed."""

import json
import shutil
import time
from pathlib import Path

import pytest
from pipeline_helpers import TINY, pipeline_config

from mvke_tf.data import synthetic

# More clicks than the default, and sharper click odds: a tiny model learns enough in a few dozen steps
# (eval click AUC ~0.65) for the blessing to tell it from an untrained one (~0.5).
SPAN_DATA = dict(num_rows=3000, num_users=300, num_ads=200, taxonomy=(4, 3, 5), target_ctr=0.15, click_sharpness=10.0)
NAME = "mvke-incremental"


def _config(tmp: Path, **kw):
    # The command line's layout (<root>/artifacts, <root>/metadata.db, <root>/serving), so the CLI can go on.
    root = tmp / "tfx"
    paths = dict(
        pipeline_root=str(root / "artifacts"),
        metadata_path=str(root / "metadata.db"),
        serving_dir=str(root / "serving"),
    )
    return pipeline_config(tmp, name=NAME, **{**paths, **kw})


def _tiny_model(**overrides):
    from mvke_tf.data import transform as T
    from mvke_tf.models import UserTagConfig, build_model

    fc = T.transformed_feature_config(synthetic.feature_config(), 10)
    return build_model(fc, UserTagConfig(model_type="mvke_mt", **{**TINY, **overrides}))


def test_span_pattern_config(tmp_path):
    from mvke_tf.config import ConfigError

    assert _config(tmp_path, input_pattern="span-{SPAN}/*.csv").uses_spans
    assert not _config(tmp_path).uses_spans
    with pytest.raises(ConfigError, match="input_pattern"):
        _config(tmp_path, input_pattern="span-{SPAN}/{SPAN}.csv")


def test_warm_start_restores_matching_weights_and_skips_others(tmp_path):
    import tensorflow as tf
    from mvke_tf.pipelines import trainer

    serving = str(tmp_path / "model" / "Format-Serving")
    first = _tiny_model()
    trainer.save_warm_start(first, serving)

    assert trainer.restore_warm_start(_tiny_model(), None)["warm_started"] is False
    assert "missing" in trainer.restore_warm_start(_tiny_model(), str(tmp_path / "nope" / "Format-Serving"))["reason"]

    tf.keras.utils.set_random_seed(123)
    second = _tiny_model()
    assert trainer.weights_digest(second) != trainer.weights_digest(first)
    result = trainer.restore_warm_start(second, serving)
    assert result["warm_started"] and result["source"] == trainer.warm_start_dir(serving)
    for a, b in zip(first.weights, second.weights):
        assert (a.numpy() == b.numpy()).all(), a.name

    other = _tiny_model(dnn_units=(32,))  # another architecture: logged and trained from scratch
    before = trainer.weights_digest(other)
    result = trainer.restore_warm_start(other, serving)
    assert not result["warm_started"] and "differs" in result["reason"]
    assert trainer.weights_digest(other) == before


def _make_span(data_root: Path, span: int, seed: int, scratch: Path) -> None:
    out = scratch / f"gen-{span}"
    synthetic.generate(synthetic.SyntheticConfig(**SPAN_DATA, seed=seed), out)
    dest = data_root / f"span-{span}"
    dest.mkdir(parents=True)
    for split in ("train", "eval"):
        for part in sorted((out / split).glob("part-*.csv")):
            shutil.copy(part, dest / f"{split}-{part.name}")
    if not (data_root / "features.yaml").exists():
        shutil.copy(out / "features.yaml", data_root / "features.yaml")


def _latest(root: Path, component: str, output: str) -> Path:
    dirs = sorted((root / component / output).iterdir(), key=lambda p: int(p.name))
    return dirs[-1]


@pytest.mark.pipeline
@pytest.mark.slow  # three pipeline runs, about 7 minutes: make test-slow
def test_incremental_runs_read_the_latest_span_and_warm_start(tmp_path):
    from ml_metadata import metadata_store
    from mvke_tf.pipelines import trainer
    from mvke_tf.pipelines.pipeline import run_local
    from tfx import v1 as tfx

    data = tmp_path / "data"
    _make_span(data, 1, seed=1, scratch=tmp_path)
    cfg = _config(
        tmp_path,
        features_yaml=str(data / "features.yaml"),
        input_pattern="span-{SPAN}/*.csv",
        train_steps=30,
        eval_steps=2,
        batch_size=128,
        learning_rate=0.01,
        eval_auc_floor=0.0,  # bless (and push) whatever trains; the gate is not what is tested here
        eval_auc_change=1.0,
    )
    root = Path(cfg.pipeline_root)

    start = time.perf_counter()
    run_local(cfg)
    print(f"\nrun 1 (span 1): {time.perf_counter() - start:.1f} s")
    first_run = json.loads((_latest(root, "Trainer", "model_run") / trainer.WARM_START_MARKER).read_text())
    assert first_run["warm_started"] is False
    first_model = _latest(root, "Trainer", "model")
    first_meta = json.loads((first_model / trainer.WARM_START_DIR / "meta.json").read_text())
    assert len(list(Path(cfg.serving_dir).iterdir())) == 1, "run 1 was not blessed and pushed"

    _make_span(data, 2, seed=2, scratch=tmp_path)
    start = time.perf_counter()
    run_local(cfg)
    print(f"run 2 (span 2): {time.perf_counter() - start:.1f} s")

    # ExampleGen read span 2 in the second run.
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(cfg.metadata_path)
    store = metadata_store.MetadataStore(connection)
    examples = sorted(store.get_artifacts_by_type("Examples"), key=lambda a: a.id)
    spans = [a.custom_properties["span"].int_value for a in examples if "span" in a.custom_properties]
    assert spans[-2:] == [1, 2], spans

    # The second Trainer restored the first run's (blessed) weights before training.
    second_run = json.loads((_latest(root, "Trainer", "model_run") / trainer.WARM_START_MARKER).read_text())
    assert second_run["warm_started"] is True, second_run
    assert Path(second_run["source"]).resolve() == (first_model / trainer.WARM_START_DIR).resolve()
    assert second_run["digest"] == pytest.approx(first_meta["digest"], rel=1e-9)
    assert len(list(Path(cfg.serving_dir).iterdir())) == 2

    # Run 3, through the command line: a broken config (a learning rate typo'd to 1e-9, no warm start)
    # trains a model that is no better than its random initialization. The Evaluator compares it with the
    # latest blessed model (run 2's) and does not bless it: nothing is pushed, the pushed versions stay.
    from mvke_tf.pipelines.__main__ import main
    from mvke_tf.pipelines.evaluation import slice_metrics
    from mvke_tf.pipelines.report import run_report

    pushed_before = _digest(Path(cfg.serving_dir))
    broken = tmp_path / "broken.yaml"
    broken.write_text("learning_rate: 1.0e-9\nno_warm_start: true\neval_auc_change: 0.02\n")
    start = time.perf_counter()
    status = main(
        ["run", "--config", str(broken), "--name", NAME, "--root", str(tmp_path / "tfx"), "--data-root", str(data),
         "--features-yaml", str(data / "features.yaml"), "--input-pattern", "span-{SPAN}/*.csv",
         "--model-overrides", json.dumps(TINY), "--train-steps", "20", "--eval-steps", "2", "--batch-size", "128",
         "--auc-floor", "0.0"]
    )  # fmt: skip
    print(f"run 3 (broken config): {time.perf_counter() - start:.1f} s")
    assert status == 3  # the documented exit status of a blocked run (docs/pipeline.md)
    report = run_report(cfg.metadata_path, NAME)
    assert report.blessed is False and report.pushed is None and report.model_uri
    third_run = json.loads((_latest(root, "Trainer", "model_run") / trainer.WARM_START_MARKER).read_text())
    assert third_run["warm_started"] is False
    evaluations = sorted((root / "Evaluator" / "evaluation").iterdir(), key=lambda p: int(p.name))
    auc = [next(r for r in slice_metrics(e) if r.slice == "overall").metrics["click"]["auc"] for e in evaluations[-2:]]
    print(f"click AUC: run 2 {auc[0]:.3f}, run 3 (broken) {auc[1]:.3f}")
    assert auc[1] < auc[0] - 0.02, auc
    assert _digest(Path(cfg.serving_dir)) == pushed_before


def _digest(directory: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
