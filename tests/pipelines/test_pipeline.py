"""The TFX pipeline: preprocessing, config, Kubeflow compilation and a local end-to-end run."""

import csv
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from pipeline_helpers import TINY, pipeline_config

from mvke_tf.config import ConfigError
from mvke_tf.data import synthetic
from mvke_tf.data import transform as T
from mvke_tf.models import UserTagConfig, build_model

E2E_DATA = synthetic.SyntheticConfig(num_rows=3000, num_users=300, num_ads=200, taxonomy=(4, 3, 5), seed=1)


def _config(tmp: Path, **kw):
    return pipeline_config(tmp, name="mvke-test", **kw)


# ------------------------------------------------------------------ pure TF parts


def test_transform_functions_ids_and_padding():
    fc = synthetic.feature_config()
    tags = fc.tag_field
    ids = T.multi_valued_ids(tf.constant(["t1_2_3|t0_1_4", "", "t2"]), tags).numpy()
    assert ids.shape == (3, tags.max_values * T.HIERARCHY_DEPTH)
    expected = tf.strings.to_hash_bucket_fast(["t1", "t1_2", "t1_2_3"], tags.hash_buckets).numpy()
    np.testing.assert_array_equal(ids[0, :3], expected)
    assert ids[0, 3] == -1 and (ids[1] == -1).all()
    assert ids[2, 0] >= 0 and (ids[2, 1:] == -1).all()

    flat = fc.field("read_l1_categories")
    ids = T.multi_valued_ids(tf.constant(["c1|c2", "c3"]), flat).numpy()
    assert ids.shape == (2, flat.max_values) and (ids[1, 1:] == -1).all()

    # A list column (tf.train.Example input) joins to the CSV's '|'-joined form; empty rows give "".
    listed = tf.SparseTensor([[0, 0], [0, 1], [2, 0]], tf.constant(["c1", "c2", "c3"]), [3, 2])
    np.testing.assert_array_equal(T.joined_column(listed, "|").numpy(), [b"c1|c2", b"", b"c3"])
    np.testing.assert_array_equal(T.joined_column(tf.constant(["c1|c2"]), "|").numpy(), [b"c1|c2"])

    gender = fc.field("gender")
    np.testing.assert_array_equal(T.categorical_ids(tf.constant(["", "gen1"]), gender).numpy()[:1], [-1])

    # The kind decides, not the physical type: integer ids (an INT column of the inferred schema, dense or
    # sparse with missing cells) hash as the strings a CSV cell would hold.
    want = T.categorical_ids(tf.constant(["25", "", "3"]), gender).numpy()
    dense = T.categorical_ids(T.to_dense_column(T.id_strings(tf.constant([[25], [-7], [3]], tf.int64)), ""), gender)
    np.testing.assert_array_equal(dense.numpy()[[0, 2]], want[[0, 2]])
    sparse_ints = tf.SparseTensor([[0, 0], [2, 0]], tf.constant([25, 3], tf.int64), [3, 1])
    got = T.categorical_ids(T.to_dense_column(T.id_strings(sparse_ints), ""), gender).numpy()
    np.testing.assert_array_equal(got, want)
    int_lists = tf.SparseTensor([[0, 0], [0, 1], [2, 0]], tf.constant([7, 12, 3], tf.int64), [3, 2])
    np.testing.assert_array_equal(T.joined_column(int_lists, "|").numpy(), [b"7|12", b"", b"3"])

    sparse = tf.SparseTensor([[0, 0], [2, 0]], tf.constant([1.5, 2.5]), [3, 1])
    np.testing.assert_array_equal(T.to_dense_column(sparse, math.nan).numpy()[[0, 2]], [1.5, 2.5])
    assert math.isnan(T.to_dense_column(sparse, math.nan).numpy()[1])
    buckets = T.numeric_bucket_ids(tf.constant([math.nan, 0.3]), tf.constant([4, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(buckets, [0, 3])


@pytest.mark.parametrize("name", ["gender", "read_l1_categories", "clicked_tags_30d", "tags"])
def test_transformed_ids_embed_like_the_library_string_path(name):
    """Transform's ids + the transformed spec give the embedding the library computes from strings."""
    from mvke_tf.layers.embedding import FieldEmbedding

    raw = synthetic.feature_config().field(name)
    new = T.transformed_feature_config(synthetic.feature_config(), 10).field(name)
    joined = ["t1_2_3|t0_1_4|t3", "", "t2_0_1"] if raw.hierarchy_separator else ["c1|c2", "", "c3"]
    if raw.kind == "categorical":
        joined = ["gen1", "", "gen2"]
        strings = tf.constant(joined)
        ids = T.categorical_ids(strings, raw)
    else:
        strings = tf.strings.split(tf.constant(joined), "|").to_tensor("", shape=[None, raw.max_values])
        ids = T.multi_valued_ids(tf.constant(joined), raw)
    a, b = FieldEmbedding(raw, 4), FieldEmbedding(new, 4)
    a(strings), b(ids)
    b.set_weights(a.get_weights())
    expected, got = a(strings).numpy(), b(ids).numpy()
    if raw.kind == "categorical":  # a missing categorical is id -1 -> row 0 vs the hash of "": compare present rows
        expected, got = expected[[0, 2]], got[[0, 2]]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_transformed_config_round_trips_through_build_model():
    fc = synthetic.feature_config()
    tfc = T.transformed_feature_config(fc, num_buckets=10)
    assert all(f.kind in ("categorical", "multi_valued") and not f.hierarchy_separator for f in tfc.user_fields)
    assert tfc.field("avg_ctr_7d").hash_buckets == 11
    assert tfc.tag_field.max_values == fc.tag_field.max_values * T.HIERARCHY_DEPTH
    model = build_model(tfc, UserTagConfig(model_type="mvke_mt", **TINY))
    batch = {}
    for f in (*tfc.user_fields, tfc.tag_field):
        shape = [4, f.max_values] if f.kind == "multi_valued" else [4]
        batch[f.name] = tf.random.uniform(shape, -1, f.hash_buckets, dtype=tf.int64)
    out = model(batch)
    assert set(out) == {"click", "conversion"}
    assert all(o.shape == (4,) for o in out.values())


def test_preprocessing_fn_with_tft_beam():
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from mvke_tf.pipelines import preprocessing
    from tensorflow_transform.tf_metadata import schema_utils

    fc = preprocessing.load_feature_config()
    spec = {f.name: tf.io.VarLenFeature(tf.float32 if f.kind == "numeric" else tf.string) for f in fc.user_fields}
    # One categorical field and the user id hold integers, as an INT column of an inferred schema does.
    int_field = next(f for f in fc.user_fields if f.kind == "categorical")
    spec[int_field.name] = tf.io.VarLenFeature(tf.int64)
    spec["tags"] = tf.io.VarLenFeature(tf.string)
    spec.update(click=tf.io.FixedLenFeature([], tf.int64), conversion=tf.io.FixedLenFeature([], tf.int64))
    spec["user_id"] = tf.io.FixedLenFeature([], tf.int64)
    rows = []
    for i in range(40):
        row = {}
        for f in fc.user_fields:
            if i % 10 == 0:
                row[f.name] = []  # missing everywhere in this row
            elif f.kind == "numeric":
                row[f.name] = [float(i)]
            elif f.kind == "multi_valued":
                row[f.name] = ["t1_2_3|t0_1_1" if f.hierarchy_separator else "c1|c2"]
            elif f is int_field:
                row[f.name] = [i % 3]
            else:
                row[f.name] = [f"v{i % 3}"]
        row.update(tags=["t1_2_3"], click=i % 2, conversion=int(i % 4 == 0), user_id=1000 + i)
        rows.append(row)
    metadata = tft.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        (out, out_meta), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(preprocessing.preprocessing_fn)
    tfc = preprocessing.transformed_feature_config()
    assert set(tfc.feature_names) | {"click", "conversion", "user_id"} == set(out[0])
    assert out[0]["avg_ctr_7d"] == 0 and out[0]["gender"] == -1  # missing
    assert all(r["avg_ctr_7d"] == 0 for r in out[::10])  # rows 0, 10, ... have no values
    buckets = [r["avg_ctr_7d"] for i, r in enumerate(out) if i % 10]
    assert min(buckets) >= 1 and max(buckets) <= preprocessing.DEFAULT_NUM_BUCKETS
    assert len(set(buckets)) > 5  # quantile buckets spread the values
    assert out[1]["tags"].shape == (tfc.tag_field.max_values,)
    assert out[3]["click"] == 1 and out[4]["conversion"] == 1
    # Integer ids hash as their decimal strings; the user id passes through as a string.
    want = T.categorical_ids(tf.constant(["1", "2"]), int_field).numpy()
    assert [out[1][int_field.name], out[2][int_field.name]] == list(want)
    assert out[1]["user_id"] == b"1001"
    feature_spec = out_meta.schema and schema_utils.schema_as_feature_spec(out_meta.schema).feature_spec
    assert feature_spec["tags"].shape == [tfc.tag_field.max_values]


def test_library_never_imports_tfx():
    code = (
        "import pkgutil, importlib, sys, mvke_tf\n"
        "for m in pkgutil.walk_packages(mvke_tf.__path__, 'mvke_tf.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('tfx', 'tensorflow_transform', 'tfx_bsl'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


# ------------------------------------------------------------------------- config


def test_pipeline_config_validation_names_the_field(tmp_path):
    cfg = _config(tmp_path)
    assert cfg.model_config().embedding_dim == 8
    assert json.dumps(cfg.custom_config())  # JSON-serializable for TFX
    for kw, field in (
        (dict(pipeline_name="bad name"), "pipeline_name"),
        (dict(train_steps=-1), "train_steps"),
        (dict(epochs=0), "epochs"),
        (dict(train_steps=1, epochs=2), "train_steps"),
        (dict(model_type="nope"), "model_type"),
        (dict(eval_auc_floor=1.5), "eval_auc_floor"),
        (dict(data_root=""), "data_root"),
        (dict(model_overrides={"top_units": (16, 4)}), "model_overrides"),
        (dict(top_tags_max_k=0), "top_tags_max_k"),
        (dict(model_type="ranking_mmoe", model_overrides={}, top_tags_vocabulary="train"), "top_tags_vocabulary"),
    ):
        with pytest.raises(ConfigError, match=field):
            _config(tmp_path, **kw)
    # top_tags' vocabulary: relative to data_root (as input_pattern), absolute paths and URIs as given.
    assert cfg.custom_config()["top_tags_vocabulary"] == ""
    data_root = str(tmp_path / "data")
    assert _config(tmp_path, top_tags_vocabulary="train").custom_config()["top_tags_vocabulary"] == f"{data_root}/train"
    for path in ("/abs/tags.txt", "gs://bucket/tags.txt"):
        assert _config(tmp_path, top_tags_vocabulary=path).top_tags_path == path


# ------------------------------------------------------------------------ kubeflow


def test_compile_kubeflow_names_every_component(tmp_path):
    from mvke_tf.pipelines.pipeline import compile_kubeflow

    path = compile_kubeflow(_config(tmp_path, metadata_path=""), tmp_path / "kfp" / "pipeline.json")
    spec = json.loads(path.read_text())
    text = json.dumps(spec)
    for component in (
        "CsvExampleGen",
        "StatisticsGen",
        "SchemaGen",
        "ExampleValidator",
        "Transform",
        "Trainer",
        "latest_blessed_model_resolver",
        "Evaluator",
        "Pusher",
    ):
        assert component in text, component
    assert "pipelineSpec" in spec or "pipelineInfo" in spec


def test_cli_compiles_kubeflow(tmp_path, capsys):
    from mvke_tf.cli import main

    out = tmp_path / "cli.json"
    argv = ["pipeline", "compile", "--target", "kubeflow", "--root", str(tmp_path), "--output", str(out)]
    assert main([*argv, "--train-steps", "5"]) == 0
    assert "Trainer" in out.read_text() and str(out) in capsys.readouterr().out
    assert main(["pipeline", "compile-kubeflow", "--root", str(tmp_path)]) == 2  # the old alias is gone
    err = capsys.readouterr().err.strip()
    assert "invalid choice: 'compile-kubeflow'" in err and "\n" not in err


def test_compile_tfrecord_input_with_a_day_split(tmp_path):
    from mvke_tf.pipelines.pipeline import compile_kubeflow

    cfg = _config(
        tmp_path,
        metadata_path="",
        input_format="tfrecord",
        input_pattern="train/part-*.tfrecord.gz",
        eval_pattern="eval/part-*.tfrecord.gz",
    )
    text = compile_kubeflow(cfg, tmp_path / "kfp.json").read_text()
    assert "ImportExampleGen" in text and "CsvExampleGen" not in text
    # The splits come from the two patterns (train day / eval day), not from a hash split.
    assert "train/part-*.tfrecord.gz" in text and "eval/part-*.tfrecord.gz" in text and "hash_buckets" not in text
    for kw, field in (
        (dict(input_format="avro"), "input_format"),
        (dict(input_pattern="span-{SPAN}/*.csv", eval_pattern="eval/*.csv"), "eval_pattern"),
        (dict(input_pattern="a/*.csv", eval_pattern="a/*.csv"), "eval_pattern"),
        (dict(distribution="tpu"), "distribution"),
    ):
        with pytest.raises(ConfigError, match=field):
            _config(tmp_path, **kw)


def test_cli_settings_file_flags_win(tmp_path):
    from mvke_tf.pipelines.__main__ import _parser, config_from_settings, settings_from_args

    settings_file = tmp_path / "pipeline.yaml"
    settings_file.write_text(
        "model: mmoe\ntrain_steps: 7\nlearning_rate: 0.01\nmodel_overrides: {embedding_dim: 8}\n"
        "input_format: tfrecord\neval_pattern: eval/*.tfrecord.gz\n"
    )
    args = _parser().parse_args(["run", "--config", str(settings_file), "--train-steps", "9", "--root", str(tmp_path)])
    cfg = config_from_settings(settings_from_args(args))
    assert (cfg.model_type, cfg.train_steps, cfg.learning_rate) == ("mmoe", 9, 0.01)
    assert cfg.model_config().embedding_dim == 8 and cfg.input_format == "tfrecord"
    assert cfg.input_pattern == "*/part-*.tfrecord.gz" and cfg.eval_pattern == "eval/*.tfrecord.gz"
    assert cfg.metadata_path == str(tmp_path / "metadata.db") and cfg.serving_dir == str(tmp_path / "serving")

    settings_file.write_text("train_step: 7\n")
    with pytest.raises(ConfigError, match="train_step"):
        settings_from_args(_parser().parse_args(["run", "--config", str(settings_file)]))


def test_cli_pipeline_errors_name_the_flag(tmp_path, capsys):
    from mvke_tf.cli import main

    assert main(["pipeline", "run", "--data-root", str(tmp_path / "missing"), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--data-root" in err and "mvke-tf data synth" in err
    assert main(["pipeline", "run", "--model-overrides", "{bad", "--root", str(tmp_path)]) == 2
    assert "--model-overrides" in capsys.readouterr().err


def test_auc_table_lists_every_slice_and_task():
    from mvke_tf.pipelines.evaluation import SliceMetrics, format_auc_table

    rows = [
        SliceMetrics("overall", {"click": {"auc": 0.61234, "gauc": 0.55, "example_count": 1200.0}, "conversion": {}}),
        SliceMetrics("gender=gen1", {"click": {"auc": float("nan"), "example_count": 3.0}}),
    ]
    lines = format_auc_table(rows, ("click", "conversion"))
    assert lines[0].split() == [
        "slice",
        "examples",
        "click",
        "AUC",
        "click",
        "GAUC",
        "conversion",
        "AUC",
        "conversion",
        "GAUC",
    ]
    assert lines[1].split() == ["overall", "1,200", "0.6123", "0.5500", "-", "-"]
    assert lines[2].split() == ["gender=gen1", "3", "-", "-", "-", "-"]


# ---------------------------------------------------------------------- end to end


def _raw_examples(csv_path: Path, n: int) -> list[bytes]:
    """The first ``n`` CSV rows as raw tf.Examples, the way CsvExampleGen writes them."""
    floats = set(synthetic.STAT_BOUNDARIES) | set(synthetic.PROB_COLUMNS)
    ints = {"day", *synthetic.LABELS}
    out = []
    with open(csv_path) as f:
        for row in list(csv.DictReader(f))[:n]:
            feats = {}
            for k, v in row.items():
                if v == "":
                    continue  # CsvExampleGen leaves empty cells out
                if k in floats:
                    feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))
                elif k in ints:
                    feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
                else:
                    feats[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
            out.append(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    return out


def _eval_split(data: Path) -> tuple[list[bytes], dict[str, np.ndarray], np.ndarray]:
    """The eval day's serialized examples, labels and users."""
    records = [r.numpy() for r in tf.data.TFRecordDataset(sorted(map(str, data.glob("eval/*.tfrecord.gz"))), "GZIP")]
    spec = {t: tf.io.FixedLenFeature([], tf.int64) for t in synthetic.LABELS}
    spec["user_id"] = tf.io.FixedLenFeature([], tf.string)
    parsed = tf.io.parse_example(tf.constant(records), spec)
    return records, {t: parsed[t].numpy() for t in synthetic.LABELS}, parsed["user_id"].numpy()


@pytest.mark.pipeline
def test_local_pipeline_end_to_end(tmp_path, capsys):
    from mvke_tf.pipelines.__main__ import main
    from mvke_tf.pipelines.schema import CHECKED_IN
    from sklearn.metrics import roc_auc_score

    data = tmp_path / "data"
    synthetic.generate(E2E_DATA, data, formats=("csv", "tfrecord"))
    # The main job's path: TFRecord input (copied by ImportExampleGen) with the paper's day split -- train on the
    # first day, evaluate on the last -- epochs over the train split, the batched Evaluator. CSV input with a
    # hash split runs in test_pipeline_guards and test_pipeline_incremental.
    cfg = _config(
        tmp_path,
        features_yaml=str(data / "features.yaml"),
        input_format="tfrecord",
        input_pattern="train/part-*.tfrecord.gz",
        eval_pattern="eval/part-*.tfrecord.gz",
        # The curated schema: an inferred one would hold the train day's `day` range, and the eval day is out of it.
        schema_path=str(CHECKED_IN),
        epochs=3,
        eval_steps=5,
        batch_size=128,
        eval_auc_floor=0.2,  # the gate is exercised; tiny data and a few dozen steps give AUCs of ~0.5-0.7
    )
    argv = ["run", "--name", cfg.pipeline_name, "--root", str(tmp_path), "--data-root", str(data)]
    argv += ["--input-format", "tfrecord", "--input-pattern", cfg.input_pattern, "--eval-pattern", cfg.eval_pattern]
    argv += ["--schema", cfg.schema_path, "--batch-size", "128", "--eval-steps", "5", "--auc-floor", "0.2"]
    argv += ["--model-overrides", json.dumps(TINY)]
    settings = tmp_path / "settings.yaml"
    # top_tags over the training day's tags (a path under data_root), k up to 5; the synthetic data's slices (as
    # pipelines/configs/synthetic.yaml names them; left out, they would be its first small user fields).
    settings.write_text(
        "epochs: 3\ntop_tags_vocabulary: train\ntop_tags_max_k: 5\nslice_keys: [gender, age_bucket, tag_l1]\n"
    )
    start = time.perf_counter()
    assert main([*argv, "--config", str(settings)]) == 0
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    print(out + f"\nend-to-end run through the CLI: {seconds:.1f} s")

    # A person reads one line per component as it finishes, then the per-slice table; the rest is in the log.
    lines = out.splitlines()
    assert lines[0].startswith(f"pipeline {cfg.pipeline_name}: ") and "(log: " in lines[0]
    log = Path(lines[0].split("(log: ")[1].rstrip(")"))
    assert log.is_file() and log.parent == tmp_path / "logs" and "Trainer" in log.read_text()
    component_lines = [line for line in lines[1:] if line.startswith("  ")]
    names = [line.split()[0] for line in component_lines]
    for name in ("ImportExampleGen", "StatisticsGen", "ExampleValidator", "Transform", "Trainer", "Evaluator"):
        assert name in names, (name, names)
    meta = json.loads((data / "metadata.json").read_text())
    rows = meta["splits"]
    by_name = dict(zip(names, component_lines))
    assert f"train {rows['train']['rows']:,} rows" in by_name["StatisticsGen"], by_name["StatisticsGen"]
    assert "no anomalies" in by_name["ExampleValidator"] and "BLESSED" in by_name["Evaluator"]
    # Every signature (serving_default, transform_features, user_tower, tag_tower, top_tags) ran in the C++ runtime.
    assert "BLESSED: 5 signature(s) answer as in Python" in by_name["CppInfraValidator"], by_name["CppInfraValidator"]
    assert f"{-(-rows['train']['rows'] // 128) * 3:,} steps" in by_name["Trainer"]  # 3 epochs, every row
    assert "pushed " in by_name["Pusher"] and "evaluation (eval split, per slice):" in out
    assert not any("WARNING" in line or "Traceback" in line for line in lines), out

    from mvke_tf.pipelines.report import run_report

    report = run_report(tmp_path / "metadata.db", cfg.pipeline_name)
    # The data check is the ExampleValidator's.
    assert report.ok and "ExampleValidator" in report.anomalies_uri, report
    assert not list(Path(cfg.pipeline_root).glob("Transform/transformed_examples"))  # Transform writes no copy
    versions = [p for p in (tmp_path / "serving").iterdir() if p.is_dir()]
    assert len(versions) == 1 and versions[0].name.isdigit()
    loaded = tf.saved_model.load(str(versions[0]))
    assert {"serving_default", "transform_features", "user_tower", "tag_tower", "top_tags"} <= set(loaded.signatures)
    from mvke_tf.export.warmup import read_warmup_requests

    warmup = read_warmup_requests(versions[0])  # TF Serving replays these on load
    signatures = {r.predict_log.request.model_spec.signature_name for r in warmup}
    assert signatures >= {"serving_default", "user_tower", "tag_tower", "top_tags"}, signatures
    examples = _raw_examples(data / "eval" / "part-00000.csv", 16)
    out = loaded.signatures["serving_default"](examples=tf.constant(examples))
    assert set(out) >= {"click", "conversion"}
    for name in ("click", "conversion"):
        p = out[name].numpy()
        assert p.shape == (16,) and ((p > 0) & (p < 1)).all(), (name, p)
    # Features a client leaves out count as missing (only the tag is sent here).
    tag_only = tf.train.Example(
        features=tf.train.Features(feature={"tags": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"t1_2_3"]))})
    )
    out = loaded.signatures["serving_default"](examples=tf.constant([tag_only.SerializeToString()]))
    assert 0 < float(out["click"][0]) < 1
    tags = loaded.signatures["tag_tower"](tags=tf.constant(["t1_2_3", "t0_0_0"]))
    assert tags["click_embedding"].shape == (2, 8)
    users = loaded.signatures["user_tower"](examples=tf.constant(examples[:3]))
    assert users["click_experts"].shape[0] == 3
    # top_tags against brute force: every training-day tag paired with the user, scored by serving_default.
    from mvke_tf.export.top_tags import resolve_tag_vocabulary

    vocabulary = resolve_tag_vocabulary(data / "train")
    top = loaded.signatures["top_tags"](examples=tf.constant(examples[:2]), k=tf.constant(5))
    for row, record in enumerate(examples[:2]):
        pairs = []
        for tag in vocabulary:
            ex = tf.train.Example.FromString(record)
            ex.features.feature["tags"].bytes_list.value[:] = [tag.encode()]
            pairs.append(ex.SerializeToString())
        brute = loaded.signatures["serving_default"](examples=tf.constant(pairs))
        for task in ("click", "conversion"):
            p = brute[task].numpy()
            best = np.sort(p)[::-1][:5]
            np.testing.assert_allclose(top[f"{task}_scores"].numpy()[row], best, rtol=1e-4, err_msg=task)
            got = [t.decode() for t in top[f"{task}_tags"].numpy()[row]]
            assert [p[vocabulary.index(t)] for t in got] == pytest.approx(best, rel=1e-4), task

    from mvke_tf.pipelines.evaluation import slice_metrics
    from mvke_tf.pipelines.report import run_report

    report = run_report(tmp_path / "metadata.db", cfg.pipeline_name)
    assert report.evaluation_uri and report.blessed is True, report
    rows_by_slice = {r.slice: r.metrics for r in slice_metrics(report.evaluation_uri)}
    overall = rows_by_slice["overall"]
    # The Evaluator's figures against an independent computation on the pushed model's eval predictions.
    records, labels, users = _eval_split(data)
    predictions = loaded.signatures["serving_default"](examples=tf.constant(records))
    for task in ("click", "conversion"):
        y, p = labels[task], predictions[task].numpy().astype(np.float64)
        assert overall[task]["example_count"] == len(y) == rows["eval"]["rows"]  # exactly the last day's rows
        # AUC from TFMA's 10,000-bucket histogram: pairs within a bucket count half. Clicks (66 in the eval day,
        # predictions spread over hundreds of buckets) come within 1e-3 of the exact AUC; conversions (15, most
        # predictions under 1e-3, i.e. in the first ten buckets) within 0.02 (measured: 0.0125).
        assert overall[task]["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-3 if task == "click" else 0.02), task
        assert overall[task]["calibration"] == pytest.approx(p.sum() / y.sum(), rel=1e-4), task
        total = weight = 0.0
        for u in np.unique(users):  # GAUC: per-user sklearn AUC, weighted by the user's rows
            m = users == u
            if 0 < y[m].sum() < m.sum():
                total, weight = total + roc_auc_score(y[m], p[m]) * m.sum(), weight + m.sum()
        assert overall[task]["gauc"] == pytest.approx(total / weight, abs=1e-6), task
    for feature in ("gender", "age_bucket", "tag_l1"):  # two user fields and the tag's level-1 category
        assert any(name.startswith(f"{feature}=") for name in rows_by_slice), (feature, sorted(rows_by_slice))


@pytest.mark.pipeline
@pytest.mark.slow  # a second pipeline run in this file: make test-slow (CI runs it), so make test stays under 15 min
def test_pipeline_trains_and_pushes_the_app_store_ranking_model(tmp_path):
    """model_type ranking_app_store (MMoE + FM cross + ESMM heads) runs through Transform, Trainer, Evaluator and
    Pusher."""
    from mvke_tf.pipelines.pipeline import run_local
    from mvke_tf.pipelines.report import run_report

    from mvke_tf.export.warmup import read_warmup_requests

    data = tmp_path / "data"
    synthetic.generate(E2E_DATA, data)
    cfg = _config(
        tmp_path,
        features_yaml=str(data / "features.yaml"),
        input_pattern="*/part-*.csv",  # both days, split by hash
        model_type="ranking_app_store",
        model_overrides=dict(embedding_dim=8, expert_units=(16,), tower_units=(8,)),
        train_steps=40,
        eval_steps=5,
        batch_size=128,
        eval_auc_floor=0.2,
    )
    assert cfg.custom_config()["model_family"] == "ranking"
    run_local(cfg)
    report = run_report(cfg.metadata_path, cfg.pipeline_name)
    assert report.ok and report.pushed, report
    versions = [p for p in Path(cfg.serving_dir).iterdir() if p.is_dir()]
    assert len(versions) == 1
    loaded = tf.saved_model.load(str(versions[0]))
    assert set(loaded.signatures) == {"serving_default", "transform_features"}
    warmup = read_warmup_requests(versions[0])
    # A warm-up request per signature, and each parses (TF Serving refuses a model whose warm-up fails):
    # the CSV schema holds the multi-valued fields as one joined string, and the requests send them so.
    assert {r.predict_log.request.model_spec.signature_name for r in warmup} == set(loaded.signatures)
    for r in warmup:
        request = r.predict_log.request
        loaded.signatures[request.model_spec.signature_name](
            **{k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        )
    assert report.infra_blessed is True, report.infra_reason  # and the C++ runtime answers them as Python does
    out = loaded.signatures["serving_default"](examples=tf.constant(_raw_examples(data / "eval" / "part-00000.csv", 8)))
    assert set(out) == {"click", "conversion", "cvr", "rank_score"}
    np.testing.assert_allclose(out["conversion"].numpy(), out["click"].numpy() * out["cvr"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["rank_score"].numpy(), 0.5 * (out["click"].numpy() + out["cvr"].numpy()), rtol=1e-6)
    # Transform hashed the ad id and the model reads it: the same rows with other ad ids score differently.
    assert "ad_id" in loaded.signatures["transform_features"].structured_outputs
    rows = _raw_examples(data / "eval" / "part-00000.csv", 8)
    other = []
    for raw in rows:
        example = tf.train.Example.FromString(raw)
        example.features.feature["ad_id"].bytes_list.value[:] = [b"an-ad-never-seen"]
        other.append(example.SerializeToString())
    moved = loaded.signatures["serving_default"](examples=tf.constant(other))
    assert not np.allclose(moved["click"].numpy(), out["click"].numpy(), atol=1e-7)
