import json
import subprocess
import sys
from pathlib import Path

import pytest

from mvke_tf.cli import main
from mvke_tf.config import FeatureConfig

VENV_BIN = Path(sys.executable).parent


def test_data_synth_and_train(tmp_path, capsys):
    data = tmp_path / "data"
    rc = main(
        [
            "data",
            "synth",
            "--out",
            str(data),
            "--rows",
            "6000",
            "--users",
            "500",
            "--ads",
            "300",
            "--taxonomy",
            "4,3,5",
            "--format",
            "csv",
            "tfrecord",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "wrote 6,000 rows" in out and "oracle AUC on eval" in out
    assert sorted(p.name for p in (data / "train").iterdir()) == ["part-00000.csv", "part-00000.tfrecord.gz"]
    rc = main(
        [
            "train",
            "--data",
            str(data),
            "--model",
            "mvke_mt",
            "--scale",
            "0.05",
            "--epochs",
            "1",
            "--batch-size",
            "512",
            "--model-dir",
            str(tmp_path / "model"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "model AUC" in out and "oracle AUC" in out and "mvke_mt" in out
    report = json.loads((tmp_path / "model" / "report.json").read_text())
    assert report["model_type"] == "mvke_mt" and set(report["eval"]) == {"click", "conversion"}

    # export: the trained weights become a versioned SavedModel that scores like the trained model
    serving = tmp_path / "serving"
    assert main(["export", "--model-dir", str(tmp_path / "model"), "--out", str(serving)]) == 0
    assert main(["export", "--model-dir", str(tmp_path / "model"), "--out", str(serving)]) == 0
    assert sorted(p.name for p in serving.iterdir()) == ["1", "2"]
    out = capsys.readouterr().out
    assert "mvke-tf serve --model mvke=" in out
    import tensorflow as tf
    from reference_helpers import parse_examples

    from mvke_tf.models.model_dir import load_model_dir

    loaded = tf.saved_model.load(str(serving / "1"))
    assert {"serving_default", "user_tower", "tag_tower"} <= set(loaded.signatures)
    saved = json.loads((tmp_path / "model" / "model_config.json").read_text())
    assert saved["family"] == "user_tag" and saved["config"]["model_type"] == "mvke_mt"
    model, fc = load_model_dir(tmp_path / "model")
    records = tf.data.TFRecordDataset(str(data / "eval" / "part-00000.tfrecord.gz"), compression_type="GZIP")
    examples = tf.stack(list(records.take(16)))
    got = loaded.signatures["serving_default"](examples=examples)
    want = model(parse_examples(examples, fc))
    for task in ("click", "conversion"):
        assert abs(got[task].numpy() - want[task].numpy()).max() < 1e-5
    assert main(["export", "--model-dir", str(tmp_path / "model"), "--out", str(serving), "--version", "2"]) == 2
    assert "already exists" in capsys.readouterr().err

    # A pair-ranking model through the same commands: the app-store MMoE + FM cross + ESMM.
    sizes = tmp_path / "ranker.yaml"
    sizes.write_text("embedding_dim: 4\nexpert_units: [8]\ntower_units: [4]\n")
    ranker = str(tmp_path / "ranker")
    argv = ["train", "--data", str(data), "--model", "ranking_app_store", "--config", str(sizes), "--model-dir", ranker]
    assert main([*argv, "--batch-size", "512"]) == 0
    assert "ranking_app_store" not in capsys.readouterr().err
    assert main(["export", "--model-dir", ranker, "--out", str(tmp_path / "ranker_serving")]) == 0
    ranked = tf.saved_model.load(str(tmp_path / "ranker_serving" / "1"))
    out = ranked.signatures["serving_default"](examples=examples)
    assert set(out) == {"click", "conversion", "cvr", "rank_score"}
    assert main([*argv, "--scale", "0.5"]) == 2
    assert "--scale applies to the two-tower models" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "/nonexistent/dir"], "no features.yaml there"),
        (["data", "synth", "--out", "{tmp}/x", "--rows", "0"], "num_rows=0 is invalid"),
        (["data", "synth", "--out", "{tmp}/x", "--taxonomy", "18,5"], "taxonomy"),
        (["train", "--data", "{tmp}", "--config", "{tmp}/missing.yaml"], "does not exist"),
        (["train"], "the following arguments are required: --data"),
        (["train", "--data", "{tmp}", "--model", "nope"], "invalid choice"),
        (["export", "--model-dir", "{tmp}", "--out", "{tmp}/s"], "missing model_config.json, weights.index"),
        (["bench", "nope"], "unknown benchmark 'nope'"),
        (["data", "describe", "{tmp}/none.csv"], "no data files there"),
        (["data", "describe", "{tmp}/a.csv", "{tmp}/b.csv"], "give --out DIR"),
        (["data", "convert", "{tmp}/nodata", "--out", "{tmp}/o"], "no {tmp}/nodata/features.yaml"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "features.yaml").write_text("")  # for the --config case: a data dir that passes the first check
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mvke-tf: error:") and message.replace("{tmp}", str(tmp_path)) in err and "\n" not in err


def test_entry_point_has_help_and_no_traceback(tmp_path):
    exe = VENV_BIN / "mvke-tf"
    if not exe.exists():
        pytest.skip("mvke-tf entry point not installed in this environment")
    help_text = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("data", "train", "pipeline", "export", "serve", "tag-users", "bench"):
        assert cmd in help_text
    for argv in (["serve", "--help"], ["bench", "--help"], ["export", "--help"], ["tag-users", "--help"]):
        shown = subprocess.run([str(exe), *argv], capture_output=True, text=True)
        assert shown.returncode == 0 and shown.stdout.strip(), argv
    bad = subprocess.run([str(exe), "train", "--data", str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "no features.yaml" in bad.stderr


@pytest.mark.parametrize("command", ["pipeline", "train", "features"])
def test_malformed_yaml_is_one_line_naming_file_line_and_column(command, tmp_path, capsys):
    bad = tmp_path / ("features.yaml" if command == "features" else "bad.yaml")
    bad.write_text("x: [")
    if command != "features":
        (tmp_path / "features.yaml").write_text("")  # a data dir that passes train's first check
    argv = {
        "pipeline": ["pipeline", "run", "--config", str(bad), "--root", str(tmp_path)],
        "train": ["train", "--data", str(tmp_path), "--config", str(bad)],
        "features": ["train", "--data", str(tmp_path)],  # the data's features.yaml (FeatureConfig.from_yaml)
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mvke-tf: error:") and "\n" not in err, err
    assert str(bad) in err and "line 1, column 5" in err and "not valid YAML" in err and "fix:" in err


def test_train_takes_the_tasks_from_the_datas_labels(tmp_path):
    import argparse

    from mvke_tf.cli import _model_config
    from mvke_tf.config import CATEGORICAL, MULTI_VALUED, FeatureConfig, FieldSpec
    from mvke_tf.train import format_report

    features = tmp_path / "features.yaml"
    tags = FieldSpec("genres", MULTI_VALUED, max_values=3)
    FeatureConfig((FieldSpec("sex", CATEGORICAL),), tags, labels=("watched", "liked")).to_yaml(features)
    args = argparse.Namespace(model="mvke_mt", config=None, scale=1.0)
    assert _model_config(args, features).tasks == ("watched", "liked")
    named = tmp_path / "model.yaml"
    named.write_text("tasks: [liked, watched]\n")
    named_args = argparse.Namespace(model="mmoe", config=str(named), scale=1.0)
    assert _model_config(named_args, features).tasks == ("liked", "watched")
    # A team's own data has no oracle: the report shows no oracle column (the synthetic data's does).
    common = dict(model_type="mmoe", num_parameters=10, train_seconds=1.0)
    own = format_report({"eval": {"liked": dict(examples=10, positives=3, auc=0.7)}, **common})
    assert "oracle" not in own and "nan" not in own and "0.7000" in own
    synthetic = {"eval": {"click": dict(examples=10, positives=3, auc=0.7, oracle_auc=0.8)}, **common}
    assert "oracle AUC" in format_report(synthetic) and "0.8000" in format_report(synthetic)


def test_data_describe_then_convert_a_parquet_table(tmp_path, capsys):
    """Own data in Parquet: describe prints the table and writes features.yaml; convert writes typed tf.Examples."""
    from own_data_helpers import write_own_data

    data = write_own_data(tmp_path / "d", 400, 100, fmt="parquet")
    assert main(["data", "describe", str(data), "--user-id", "member", "--labels", "liked,watched"]) == 0
    out = capsys.readouterr().out
    assert "column      in file   role" in out and "zip         int       feature  categorical" in out
    assert "labels" not in out.split("guessed")[0].splitlines()[-1]  # labels were given, not guessed
    features = FeatureConfig.from_yaml(data / "features.yaml")
    assert features.labels == ("liked", "watched") and features.user_id == "member"
    assert main(["data", "convert", str(data), "--out", str(tmp_path / "typed")]) == 0
    assert sorted(str(p.relative_to(tmp_path / "typed")) for p in (tmp_path / "typed").rglob("*.gz")) == [
        "eval/part-00000.tfrecord.gz",
        "train/part-00000.tfrecord.gz",
    ]
    assert (tmp_path / "typed" / "features.yaml").is_file() and (tmp_path / "typed" / "schema.pbtxt").is_file()


def test_beam_args_value_may_start_with_a_flag_of_the_command(tmp_path, capsys):
    """`--beam-args '--runner=DirectRunner'` is the Beam options, not tag-users' own --runner flag."""
    from mvke_tf.cli import _attach_option_values, build_parser

    argv = ["tag-users", "--model", "m", "--users", "u", "--out", "o", "--runner", "beam"]
    args = build_parser().parse_args(
        _attach_option_values([*argv, "--beam-args", "--runner=DirectRunner"], ["--beam-args"])
    )
    assert args.runner == "beam" and args.beam_args == "--runner=DirectRunner"
    tags = tmp_path / "tags.txt"
    tags.write_text("a\n")
    argv = ["tag-users", "--model", str(tmp_path / "nope"), "--users", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*argv, "--tags", str(tags), "--runner", "beam", "--beam-args", "--runner=DirectRunner"]) == 2
    err = capsys.readouterr().err
    assert "expected one argument" not in err and "no data files match" in err, err  # it got past the flags


def test_export_top_tags_max_k_default_is_the_library_default():
    """The parser writes the default as a literal (building it imports no TensorFlow); it must stay the library's."""
    from mvke_tf.cli import build_parser
    from mvke_tf.models.top_tags import DEFAULT_TOP_TAGS_MAX_K

    args = build_parser().parse_args(["export", "--model-dir", "m", "--out", "o"])
    assert args.top_tags_max_k == DEFAULT_TOP_TAGS_MAX_K
