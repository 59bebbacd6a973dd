"""Incremental training: ExampleGen reads the latest span; the Trainer warm-starts from the last blessed model."""

import json
import shutil
import time
from pathlib import Path

import pytest
from pipeline_helpers import TINY, pipeline_config

from mvke_tf.data import synthetic

SPAN_DATA = dict(num_rows=3000, num_users=300, num_ads=200, taxonomy=(4, 3, 5))


def _config(tmp: Path, **kw):
    return pipeline_config(tmp, name="mvke-incremental", **kw)


def _tiny_model(**overrides):
    from mvke_tf.data import transform as T
    from mvke_tf.models import ModelConfig, build_model

    fc = T.transformed_feature_config(synthetic.feature_config(), 10)
    return build_model(fc, ModelConfig(model_type="mvke_mt", **{**TINY, **overrides}))


def test_span_pattern_config(tmp_path):
    from mvke_tf.config import ConfigError

    assert _config(tmp_path, input_pattern="span-{SPAN}/*.csv").uses_spans
    assert not _config(tmp_path).uses_spans
    with pytest.raises(ConfigError, match="input_pattern"):
        _config(tmp_path, input_pattern="span-{SPAN}/{SPAN}.csv")


def test_warm_start_restores_matching_weights_and_skips_others(tmp_path):
    import tensorflow as tf

    from pipelines import trainer

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
def test_incremental_runs_read_the_latest_span_and_warm_start(tmp_path):
    from ml_metadata import metadata_store
    from tfx import v1 as tfx

    from pipelines import trainer
    from pipelines.pipeline import run_local

    data = tmp_path / "data"
    _make_span(data, 1, seed=1, scratch=tmp_path)
    cfg = _config(
        tmp_path,
        features_yaml=str(data / "features.yaml"),
        input_pattern="span-{SPAN}/*.csv",
        train_steps=20,
        eval_steps=2,
        batch_size=128,
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
