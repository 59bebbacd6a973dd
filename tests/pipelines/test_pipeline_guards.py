"""Nothing bad gets pushed, nothing pushed is lost: the anomalies gate, the run report and the CLI's exit status."""

import hashlib
import json
import time
from pathlib import Path

import pytest
from pipeline_helpers import TINY
from test_schema import BAD_ROWS, corrupt_copy

from mvke_tf.data import synthetic

DATA = synthetic.SyntheticConfig(num_rows=2000, num_users=200, num_ads=150, taxonomy=(4, 3, 5), seed=3)
SCHEMA = Path(__file__).resolve().parents[2] / "pipelines" / "schemas" / "synthetic.pbtxt"


def _write_anomalies(split_dir: Path, **fields: str) -> None:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    proto = anomalies_pb2.Anomalies()
    for name, short in fields.items():
        info = proto.anomaly_info[name]
        info.short_description = short
        info.description = f"{short} (details)"
    split_dir.mkdir(parents=True)
    (split_dir / "SchemaDiff.pb").write_bytes(proto.SerializeToString())


def test_read_anomalies_and_report_lines(tmp_path):
    from mvke_tf.pipelines.report import FieldAnomaly, RunReport, read_anomalies

    _write_anomalies(tmp_path / "Split-train", avg_ctr_7d="Unexpected data type")
    _write_anomalies(tmp_path / "Split-eval")
    found = read_anomalies(tmp_path)
    assert found == (FieldAnomaly("train", "avg_ctr_7d", "Unexpected data type: Unexpected data type (details)"),)

    bad = RunReport(run_id="r", anomalies=found, anomalies_uri=str(tmp_path), failed=("AnomaliesGate",))
    text = "\n".join(bad.lines())
    assert "field 'avg_ctr_7d' (train): Unexpected data type" in text and "pushed: nothing" in text
    assert not bad.ok
    both = RunReport(
        run_id="r", anomalies=(*found, FieldAnomaly("eval", found[0].field, found[0].description)), anomalies_uri="a"
    )
    assert [line for line in both.lines() if "field '" in line] == [
        "  field 'avg_ctr_7d' (train, eval): Unexpected data type: Unexpected data type (details)"
    ]
    counted = RunReport(
        run_id="r",
        anomalies=tuple(
            FieldAnomaly(s, "click", "Out-of-range values", rows=37, total=1612) for s in ("train", "eval")
        ),
        anomalies_uri="a",
    )
    assert [line for line in counted.lines() if "field '" in line] == [
        "  field 'click' (train): 37 of 1,612 rows: Out-of-range values",
        "  field 'click' (eval): 37 of 1,612 rows: Out-of-range values",
    ]
    good = RunReport(run_id="r", anomalies_uri=str(tmp_path), blessed=True, pushed="/s/1")
    assert good.ok and "no anomalies" in "\n".join(good.lines()) and "pushed: /s/1" in good.lines()
    assert not RunReport(run_id="r", blessed=False).ok


def test_schema_path_switches_to_import_schema_gen(tmp_path):
    from mvke_tf.pipelines.pipeline import create_pipeline
    from pipeline_helpers import pipeline_config

    ids = {c.id for c in create_pipeline(pipeline_config(tmp_path, schema_path=str(tmp_path / "s.pbtxt"))).components}
    assert {"ImportSchemaGen", "AnomaliesGate"} <= ids and "SchemaGen" not in ids
    ids = {c.id for c in create_pipeline(pipeline_config(tmp_path, block_on_anomalies=False)).components}
    assert "SchemaGen" in ids and "AnomaliesGate" not in ids


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.pipeline
@pytest.mark.slow  # two pipeline runs: make test-slow
def test_anomalies_block_the_push_and_keep_the_pushed_model(tmp_path, capsys):
    from mvke_tf.pipelines.__main__ import main
    from mvke_tf.pipelines.report import run_report

    data = tmp_path / "data"
    synthetic.generate(DATA, data)
    root = tmp_path / "tfx"
    common = [
        "--name", "mvke-guards", "--root", str(root), "--input-pattern", "*/part-*.csv",
        "--features-yaml", str(data / "features.yaml"), "--model-overrides", json.dumps(TINY),
        "--train-steps", "20", "--eval-steps", "2", "--batch-size", "128", "--auc-floor", "0.0",
    ]  # fmt: skip

    # Run 1: clean data, validated against the curated schema kept in the repo, blessed (AUC floor 0) and pushed.
    start = time.perf_counter()
    assert main(["run", "--data-root", str(data), "--schema", str(SCHEMA), *common]) == 0
    print(f"\nrun 1 (clean): {time.perf_counter() - start:.1f} s")
    out = capsys.readouterr().out
    report = run_report(root / "metadata.db", "mvke-guards")
    assert report.anomalies == () and report.anomalies_uri and report.blessed is True and report.ok
    pushed = Path(report.pushed)
    assert pushed.parent == root / "serving" and pushed.name.isdigit() and (pushed / "saved_model.pb").is_file()
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert "no anomalies" in lines["ExampleValidator"] and "BLESSED" in lines["Evaluator"], out
    assert f"pushed {pushed}" in lines["Pusher"] and f"the blessed model is pushed to {pushed}" in out, out
    before = _digest(root / "serving")

    # Run 2: every kind of bad input at once (test_schema.BAD_ROWS): "n/a" in a numeric column, click = 2 and an
    # empty tags value in some rows, an unknown column in every row.
    bad = tmp_path / "bad"
    expected = corrupt_copy(data, bad)
    # The start-of-run check reads a sample of each split against features.yaml and stops at once, one line per
    # bad value (file, line, column, fix), before any component runs.
    assert main(["run", "--data-root", str(bad), "--schema", str(SCHEMA), *common]) == 2
    err = capsys.readouterr().err
    assert "is not 0 or 1; fix:" in err and "nothing was run" in err, err
    # Past it (--no-data-check), the ExampleValidator counts every bad row of every field against the schema.
    start = time.perf_counter()
    status = main(["run", "--data-root", str(bad), "--schema", str(SCHEMA), "--no-data-check", *common])
    print(f"run 2 (bad rows): {time.perf_counter() - start:.1f} s")
    captured = capsys.readouterr()
    with capsys.disabled():
        print(captured.out + captured.err)
    assert status == 3  # the documented exit status of a blocked run (docs/pipeline.md)
    assert "pushed: nothing" in captured.out
    assert "data validation found" in captured.err and "nothing was pushed" in captured.err

    report = run_report(root / "metadata.db", "mvke-guards")
    assert {a.field for a in report.anomalies} == set(BAD_ROWS), report.anomalies
    # ExampleGen re-splits the rows (hash buckets), so the counts per split add up to the bad rows written.
    splits = {a.split for a in report.anomalies}
    assert splits == {"train", "eval"}, report.anomalies
    for field in BAD_ROWS:
        found = {a.split: a for a in report.anomalies if a.field == field}
        assert sum(a.rows for a in found.values()) == sum(e[field] for e in expected.values()), (field, found)
        assert sum(a.total for a in found.values()) == sum(e["rows"] for e in expected.values())
        for a in found.values():
            assert f"  field '{field}' ({a.split}): {a.rows:,} of {a.total:,} rows: " in captured.out, (a, captured.out)
    assert report.pushed is None and report.blessed is None and report.model_uri is None
    assert "AnomaliesGate" in report.failed
    assert (
        not (root / "artifacts" / "Trainer" / "model").exists()
        or len(list((root / "artifacts" / "Trainer" / "model").iterdir())) == 1
    )  # run 2 never trained
    assert _digest(root / "serving") == before  # the pushed model is untouched, no new version

    # Run 3: clean data again, but an AUC floor no model of this size reaches: not blessed, exit 3, no push.
    floor = [a if a != "0.0" else "0.99" for a in common]
    status = main(["run", "--data-root", str(data), "--schema", str(SCHEMA), *floor])
    captured = capsys.readouterr()
    assert status == 3, captured.out + captured.err
    report = run_report(root / "metadata.db", "mvke-guards")
    assert report.blessed is False and report.pushed is None, report
    lines = {line.split()[0]: line for line in captured.out.splitlines() if line.startswith("  ") and line.split()}
    assert "NOT BLESSED" in lines["Evaluator"], captured.out
    assert _digest(root / "serving") == before  # still the model of run 1
