"""A team's own table end to end with no code edited: describe -> pipeline run -> served over gRPC -> tagged.

Two tables, both from files in the README's own-data layout:

* the census-income data (real, public, integer-coded categoricals; read from the shared data sets, never
  copied into the repository) with a pair-ranking model on the MMoE paper's tasks, income and never-married;
  its AUC is compared with the library path (``mvke-tf train``) on the same split;
* made-up user-tagging files with integer ids (``member``, ``age``, ``occupation``, a numeric ``zip``) and labels
  that are not called click or conversion (``watched``, ``liked``), then ``mvke-tf tag-users`` on its users.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import chance_bar
from mvke_tf.pipelines.__main__ import main as pipeline
from sklearn.metrics import roc_auc_score

from mvke_tf.cli import main as cli
from mvke_tf.config import FeatureConfig
from mvke_tf.data.own_data import raw_examples
from mvke_tf.data.table import read_sample

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

CENSUS = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "census-income-kdd" / "census-income.test.gz"


def _run(root: Path, data: Path, *flags: str) -> str:
    argv = ["run", "--root", str(root), "--data-root", str(data), "--input-pattern", "train/*.csv"]
    argv += ["--eval-pattern", "eval/*.csv", *flags]
    assert pipeline(argv) == 0
    return str(root)


def _overall(root: Path) -> dict:
    from mvke_tf.pipelines.evaluation import slice_metrics
    from mvke_tf.pipelines.report import run_report

    report = run_report(root / "metadata.db", "mvke-tf")
    assert report.blessed is True and report.pushed, report
    return {r.slice: r.metrics for r in slice_metrics(report.evaluation_uri)}


def _served(serving_dir: Path, records: list[bytes]) -> dict[str, np.ndarray]:
    """The pushed model's ``serving_default`` over gRPC (the in-repo TF Serving server), checked against the
    SavedModel in process."""
    from mvke_tf.serving.client import ServingClient
    from mvke_tf.serving.server import ModelServer

    version = max((p for p in serving_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    server = ModelServer({"own": str(serving_dir)}, port=0, poll_seconds=0.5).start()
    try:
        with ServingClient(server.target, "own", timeout=30, retries=0) as client:
            got = client.score(records)
    finally:
        server.stop(0)
    local = tf.saved_model.load(str(version)).signatures["serving_default"](examples=tf.constant(records))
    for name, value in local.items():
        np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-6, err_msg=name)
    return got


@pytest.mark.skipif(not CENSUS.is_file(), reason="the shared census-income data set is not beside the repository")
def test_census_income_from_its_raw_file_to_a_served_ranking_model(tmp_path, capsys):
    from mvke_tf.data.census import write_own_data_layout

    data = tmp_path / "census"
    rows = write_own_data_layout(CENSUS, data, max_rows=30_000)
    assert rows == {"train": 24_000, "eval": 6_000}
    # describe: the labels and the tag column named, no user id (the census has none: no GAUC).
    argv = ["data", "describe", str(data), "--labels", "income,never_married", "--user-id", ""]
    assert cli([*argv, "--tag-field", "major_occ_code"]) == 0
    described = capsys.readouterr().out
    assert "det_ind_code      int      feature  categorical" in described  # an integer-coded category
    features = FeatureConfig.from_yaml(data / "features.yaml")
    assert features.labels == ("income", "never_married") and features.user_id == ""
    model = ["--model", "ranking_mmoe", "--batch-size", "256", "--epochs", "2", "--eval-steps", "10"]
    # num_buckets 0: Transform bucketizes the numeric columns at features.yaml's boundaries, as the library does,
    # so that the comparison below is of the two paths and not of two bucketings (Transform's default quantiles
    # collapse zero-inflated amounts such as capital gains into one or two buckets).
    settings = tmp_path / "settings.yaml"
    settings.write_text("num_buckets: 0\n")
    root = tmp_path / "run"
    _run(root, data, *model, "--config", str(settings))
    out = capsys.readouterr().out
    assert "GAUC" not in out and "income AUC" in out
    overall = _overall(root)["overall"]
    # Served over gRPC: the eval rows as the file types them (integer codes as int64), AUC as the Evaluator's.
    sample = read_sample(str(data / "eval" / "part-00000.csv"), 10_000)
    served = _served(root / "serving", raw_examples(sample, features))
    for task in ("income", "never_married"):
        y = np.asarray(sample.values[task])
        assert overall[task]["example_count"] == len(y) == rows["eval"]
        assert overall[task]["auc"] == pytest.approx(roc_auc_score(y, served[task]), abs=2e-3), task
    # The library path on the same files, features.yaml and model: AUC within 0.01 of the pipeline's.
    assert cli(["train", "--data", str(data), *model[:2], "--batch-size", "256", "--epochs", "2"]) == 0
    library = capsys.readouterr().out
    for task in ("income", "never_married"):
        line = next(line for line in library.splitlines() if line.startswith(task + " "))
        assert float(line.split()[3]) == pytest.approx(overall[task]["auc"], abs=0.01), (task, line, overall[task])
    print(f"census: pipeline AUC {json.dumps({t: overall[t]['auc'] for t in features.labels})}\n{library}")


def test_made_up_user_tagging_table_through_the_readmes_commands(tmp_path, capsys):
    """The README's "Your own data" commands: describe -> convert -> pipeline run -> served -> tag-users."""
    from own_data_helpers import write_own_data

    data = write_own_data(tmp_path / "own", 12_000, 3_000)
    assert cli(["data", "describe", str(data), "--user-id", "member"]) == 0
    assert cli(["data", "convert", str(data), "--out", str(tmp_path / "own-tfx")]) == 0
    capsys.readouterr()
    features = FeatureConfig.from_yaml(data / "features.yaml")
    assert features.labels == ("watched", "liked") and features.tag_field.name == "genres"
    tiny = json.dumps(dict(embedding_dim=8, dnn_units=[32, 16], top_units=[16, 8], tag_units=[16, 8]))
    root = tmp_path / "run"
    argv = ["run", "--data-root", str(tmp_path / "own-tfx"), "--input-format", "tfrecord", "--root", str(root)]
    argv += ["--input-pattern", "train/*.tfrecord.gz", "--eval-pattern", "eval/*.tfrecord.gz"]
    argv += ["--model", "mvke_mt", "--model-overrides", tiny, "--epochs", "3", "--batch-size", "128"]
    assert pipeline(argv) == 0
    printed = capsys.readouterr().out
    assert "ImportExampleGen" in printed and "no anomalies" in printed
    slices = _overall(root)
    assert {"sex=F", "sex=M", "age=18", "age=56"} <= set(slices)  # the default slices: its small user fields
    sample = read_sample(str(data / "eval" / "part-00000.csv"), 10_000)
    for task in ("watched", "liked"):
        # The labels follow age band x genre and occupation (own_data_helpers): above a random scorer's AUC by 4
        # sigma (a false failure once in ~30,000 runs of a model that learned nothing).
        assert slices["overall"][task]["auc"] > chance_bar(np.asarray(sample.values[task]), 4), (task, printed)
        assert 0 < slices["overall"][task]["gauc"] <= 1  # grouped by features.yaml's user id, member
    # Served over gRPC: requests typed as the CSV holds them (ids as integers); the model was trained on the
    # converted files (ids as strings): the client applies the export's input types.
    from mvke_tf.export.input_types import read_input_types, retype_examples

    served_dir = root / "serving"
    version = next(p for p in served_dir.iterdir() if p.name.isdigit())
    types = read_input_types(version)
    assert types["age"] == {"dtype": "string"} and types["watched"] == {"dtype": "int64"}
    served = _served(served_dir, retype_examples(raw_examples(sample, features)[:64], types))
    assert set(served) >= {"watched", "liked"}
    # tag-users on the CSV users (ids stored as integers): every user of the eval day, top 3 tags per task.
    out = tmp_path / "tags"
    argv = ["tag-users", "--model", str(served_dir), "--users", str(data / "eval"), "--out", str(out)]
    argv += ["--tags-from-data", str(data / "train"), "--top-k", "3"]  # the user id column: features.yaml's
    assert cli(argv) == 0
    from mvke_tf.tagging import read_output

    tagged = read_output(out)
    assert {r["user_id"] for r in tagged} == {str(u) for u in sample.values["member"]}
    assert {r["task"] for r in tagged} == {"watched", "liked"}
