"""M3oE through the whole stack: `mvke-tf pipeline run --config pipelines/configs/multidomain.yaml`, then gRPC."""

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf

from mvke_tf.cli import main
from mvke_tf.data import multidomain as md

CONFIG = Path(__file__).resolve().parents[2] / "pipelines" / "configs" / "multidomain.yaml"
DATA = md.MultiDomainDataConfig(num_rows=6_000, num_users=300, num_ads=200, taxonomy=(4, 3, 5), seed=2)
TINY = dict(
    embedding_dim=4, bottom_units=[16, 8], skip_units=[8], expert_units=[8], num_shared_experts=2, tower_units=4
)


def _eval_split(data: Path) -> tuple[list[bytes], dict[str, np.ndarray]]:
    records = [r.numpy() for r in tf.data.TFRecordDataset(sorted(map(str, data.glob("eval/*.tfrecord.gz"))), "GZIP")]
    spec = {k: tf.io.FixedLenFeature([], tf.int64) for k in ("domain", *md.TASKS)}
    return records, {k: v.numpy() for k, v in tf.io.parse_example(tf.constant(records), spec).items()}


@pytest.mark.pipeline
@pytest.mark.slow  # a pipeline run (about 90 s) on top of make test's: make test-slow, which CI runs too
def test_m3oe_pipeline_pushes_evaluates_per_domain_and_serves(tmp_path, capsys):
    from mvke_tf.pipelines.evaluation import slice_metrics
    from mvke_tf.pipelines.report import run_report
    from mvke_tf.serving.client import ServingClient, ServingError
    from mvke_tf.serving.server import ModelServer
    from sklearn.metrics import roc_auc_score

    data = tmp_path / "data"
    md.write_files(DATA, data, formats=("tfrecord",))
    argv = ["pipeline", "run", "--config", str(CONFIG), "--root", str(tmp_path), "--data-root", str(data)]
    argv += ["--model-overrides", json.dumps(TINY), "--batch-size", "128", "--epochs", "2", "--auc-floor", "0.3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "eval 1 file(s), train 1 file(s), val 1 file(s)" in lines["ImportExampleGen"]
    assert "learned fusion weights alpha_domain" in lines["Trainer"], lines["Trainer"]
    assert "mean domain task auc" in lines["Evaluator"] and "BLESSED" in lines["Evaluator"], lines["Evaluator"]
    assert "BLESSED: 2 signature(s) answer as in Python" in lines["CppInfraValidator"], lines["CppInfraValidator"]
    for d in range(3):  # the per-slice table has a row per domain
        assert any(line.startswith(f"domain={d} ") for line in out.splitlines()), out

    report = run_report(tmp_path / "metadata.db", "mvke-tf-multidomain")
    assert report.blessed is True and report.pushed, report
    training = json.loads(next(Path(tmp_path, "artifacts", "Trainer", "model_run").glob("*/training.json")).read_text())
    assert training["validation_split"] == "val" and set(training["fusion_weights"]) == {
        "alpha_domain",
        "alpha_task",
        "beta_domain",
        "beta_task",
    }
    # The Trainer's TensorBoard callback runs in M3oE's own training loop: one point per epoch, the fusion weights too.
    events = list(Path(tmp_path, "artifacts", "Trainer", "model_run").glob("*/train/events.out.tfevents.*"))
    tags = [v.tag for e in events for r in tf.compat.v1.train.summary_iterator(str(e)) for v in r.summary.value]
    assert tags.count("epoch_loss") == 2 and "epoch_alpha_domain" in tags, sorted(set(tags))
    version = next(p for p in (tmp_path / "serving").iterdir() if p.is_dir())
    loaded = tf.saved_model.load(str(version))
    records, columns = _eval_split(data)
    predictions = loaded.signatures["serving_default"](examples=tf.constant(records))
    # The blessing metric against an independent computation on the pushed model's eval predictions.
    aucs = []
    for d in range(3):
        for task in md.TASKS:
            rows = columns["domain"] == d
            y = columns[task][rows]
            if 0 < y.sum() < len(y):
                aucs.append(roc_auc_score(y, predictions[task].numpy()[rows]))
    overall = next(r for r in slice_metrics(report.evaluation_uri) if r.slice == "overall")
    # Unlike AUC (from 10,000-bucket histograms), the (domain, task) mean is computed exactly.
    assert overall.metrics[""]["mean_domain_task_auc"] == pytest.approx(np.mean(aucs), abs=1e-9)

    # `mvke-tf serve` of the pushed model: gRPC answers as the SavedModel does in process; a bad domain id is
    # INVALID_ARGUMENT.
    srv = ModelServer({"m3oe": tmp_path / "serving"}, port=0, poll_seconds=0.2).start()
    try:
        client = ServingClient(srv.target, "m3oe", retries=0, timeout=30)
        got = client.predict("serving_default", {"examples": np.array(records[:64], dtype=object)})
        for task in md.TASKS:
            np.testing.assert_allclose(got[task], predictions[task].numpy()[:64], rtol=1e-6, atol=1e-7)
        for bad in (7, -1, None):
            example = tf.train.Example.FromString(records[0])
            if bad is None:
                del example.features.feature["domain"]
            else:
                example.features.feature["domain"].int64_list.value[:] = [bad]
            with pytest.raises(ServingError) as err:
                client.predict("serving_default", {"examples": np.array([example.SerializeToString()], dtype=object)})
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert "domain id outside [0, 3)" in err.value.details, err.value.details
    finally:
        srv.stop(0)


def test_config_requires_a_held_out_split_for_bilevel_m3oe(tmp_path):
    from pipeline_helpers import pipeline_config

    from mvke_tf.config import ConfigError

    def config(**kw):
        base = dict(
            model_type="multi_domain_m3oe", model_overrides=TINY, input_pattern="train/*", eval_pattern="eval/*"
        )
        return pipeline_config(tmp_path, **{**base, **kw})

    with pytest.raises(ConfigError, match="val_pattern=''.*held-out data.*fusion: code"):
        config()
    assert config(model_overrides={**TINY, "fusion": "code"}).validation_split == "eval"
    assert config(val_pattern="val/*").validation_split == "val"
    with pytest.raises(ConfigError, match="val_pattern='val/\\*'.*give eval_pattern too"):
        config(val_pattern="val/*", eval_pattern="")
    with pytest.raises(ConfigError, match="val_pattern='eval/\\*'.*a pattern of their own"):
        config(val_pattern="eval/*")
    with pytest.raises(ConfigError, match="distribution='mirrored'.*multi_domain_m3oe trains under default"):
        config(val_pattern="val/*", distribution="mirrored")


def test_eval_config_slices_by_domain_and_gates_on_the_mean_domain_task_auc(tmp_path):
    from mvke_tf.pipelines.pipeline import MEAN_DOMAIN_TASK_AUC, blessing_metric, eval_config
    from pipeline_helpers import pipeline_config

    cfg = pipeline_config(
        tmp_path, model_type="multi_domain_star", model_overrides=TINY, input_pattern="train/*", eval_pattern="eval/*"
    )
    ec = eval_config(cfg)
    assert ["domain"] in [list(s.feature_keys) for s in ec.slicing_specs]
    gated = [
        (list(spec.output_names), m.class_name)
        for spec in ec.metrics_specs
        for m in spec.metrics
        if m.per_slice_thresholds
    ]
    assert gated == [([], "MeanGroupAUC")]  # the only gate: no per-task AUC gate besides it
    assert json.loads(ec.metrics_specs[-1].metrics[0].config)["outputs"] == ["click", "conversion"]
    assert blessing_metric(cfg) == MEAN_DOMAIN_TASK_AUC
    assert blessing_metric(pipeline_config(tmp_path)) == "click AUC"


def test_checked_in_multidomain_schema_is_the_synthetic_one_plus_the_domain():
    from mvke_tf.pipelines.schema import CHECKED_IN, MULTIDOMAIN_CHECKED_IN, load_schema, with_domain
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = load_schema(MULTIDOMAIN_CHECKED_IN)
    assert schema == with_domain(load_schema(CHECKED_IN), "domain", 3)
    domain = next(f for f in schema.feature if f.name == "domain")
    assert domain.type == schema_pb2.INT and (domain.int_domain.min, domain.int_domain.max) == (0, 2)
