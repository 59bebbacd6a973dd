"""The pipeline's own components and run output, without a pipeline run: ExampleGen's copy, SplitRows, progress."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

from mvke_tf.data import synthetic


def _exec_properties(base: Path, splits: dict[str, str], hash_split: bool = False) -> dict:
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    input_config = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=n, pattern=p) for n, p in splits.items()]
    )
    output_config = example_gen_pb2.Output()
    if hash_split:
        output_config.split_config.splits.add(name="train", hash_buckets=4)
        output_config.split_config.splits.add(name="eval", hash_buckets=1)
    return {
        "input_base": str(base),
        "input_config": proto_utils.proto_to_json(input_config),
        "output_config": proto_utils.proto_to_json(output_config),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
    }


def test_example_gen_copies_split_files_and_declines_what_it_cannot_copy(tmp_path):
    from mvke_tf.pipelines.example_gen import Executor, copyable_splits
    from tfx.types import artifact_utils, standard_artifacts

    data = tmp_path / "data"
    synthetic.generate(synthetic.SyntheticConfig(num_rows=600, num_users=50, num_ads=40), data, ("csv", "tfrecord"))
    splits = {"train": "train/*.tfrecord.gz", "eval": "eval/*.tfrecord.gz"}
    found = copyable_splits(_exec_properties(data, splits))
    assert found == {s: [str(next((data / s).glob("*.tfrecord.gz")))] for s in splits}
    # A hash split of one pattern, uncompressed or CSV files, a pattern matching nothing: the stock executor.
    assert copyable_splits(_exec_properties(data, {"single_split": "*/*.tfrecord.gz"}, hash_split=True)) is None
    assert copyable_splits(_exec_properties(data, {"train": "train/*.csv", "eval": "eval/*.csv"})) is None
    assert copyable_splits(_exec_properties(data, {"train": "train/*.gz", "eval": "none/*.gz"})) is None

    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "out")
    Executor().Do({}, {"examples": [examples]}, _exec_properties(data, splits))
    assert artifact_utils.decode_split_names(examples.split_names) == ["train", "eval"]
    for split in splits:
        (copied,) = (tmp_path / "out" / f"Split-{split}").iterdir()
        source = next((data / split).glob("*.tfrecord.gz"))
        assert copied.name.endswith(".gz") and copied.read_bytes() == source.read_bytes()
    assert examples.get_string_custom_property("file_format") == "tfrecords_gzip"


def test_split_rows_reads_the_statistics(tmp_path):
    from mvke_tf.pipelines.split_rows import rows_per_split
    from tensorflow_metadata.proto.v0 import statistics_pb2

    for split, n in (("train", 1200), ("eval", 300)):
        (tmp_path / f"Split-{split}").mkdir()
        stats = statistics_pb2.DatasetFeatureStatisticsList(
            datasets=[statistics_pb2.DatasetFeatureStatistics(num_examples=n)]
        )
        (tmp_path / f"Split-{split}" / "FeatureStats.pb").write_bytes(stats.SerializeToString())
    assert rows_per_split(str(tmp_path)) == {"eval": 300, "train": 1200}
    assert rows_per_split(str(tmp_path / "nothing")) == {}


def test_console_output_sends_everything_but_the_console_to_the_log(tmp_path):
    """fd-level: Python prints, raw fd writes and a subprocess's output all land in the log."""
    code = f"""
import os, subprocess, sys
from mvke_tf.pipelines.progress import console_output
with console_output({str(tmp_path / "run.log")!r}, verbose={{verbose}}) as console:
    print("from python")
    os.write(2, b"from fd 2\\n")
    subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
    print("for people", file=console)
print("after")
"""
    for verbose in (False, True):
        (tmp_path / "run.log").unlink(missing_ok=True)
        done = subprocess.run([sys.executable, "-c", code.format(verbose=verbose)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        log = (tmp_path / "run.log").read_text()
        assert all(s in log for s in ("from python", "from fd 2", "from a child")) and "for people" not in log
        if verbose:  # the log is copied to the terminal as well
            assert "for people" in done.stdout and "from a child" in done.stdout + done.stderr
        else:
            assert done.stdout.split() == ["for", "people", "after"] and done.stderr == ""


def test_console_output_takes_python_writes_where_sys_stdout_is_not_fd_1(tmp_path, monkeypatch):
    """A notebook kernel or a test's capture replaces sys.stdout: prints still go to the log, not the console."""
    import io
    import logging

    from mvke_tf.pipelines.progress import console_output

    terminal, errors = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", errors)
    handler = logging.StreamHandler(errors)  # as absl's: bound to the sys.stderr of its creation
    logger = logging.getLogger("console_output_test")
    logger.addHandler(handler)
    try:
        with console_output(tmp_path / "run.log") as console:
            print("from python")
            print("to stderr", file=sys.stderr)
            logger.warning("from a logger")
            print("for people", file=console)
    finally:
        logger.removeHandler(handler)
    assert sys.stdout is terminal and handler.stream is errors
    log = (tmp_path / "run.log").read_text()
    assert all(s in log for s in ("from python", "to stderr", "from a logger")) and "for people" not in log
    assert terminal.getvalue() == "for people\n" and errors.getvalue() == ""


def test_component_lines_and_summaries(tmp_path):
    from types import SimpleNamespace

    from mvke_tf.pipelines.progress import ComponentRecord, _summary

    line = ComponentRecord("Trainer", 12.345, "COMPLETE", "1 epoch(s)").line()
    assert line.split() == ["Trainer", "12.3", "s", "1", "epoch(s)"]
    assert "[failed]" in ComponentRecord("Transform", 1.0, "FAILED").line()

    run = tmp_path / "model_run"
    run.mkdir()
    summary = {"epochs": 2, "steps": 10, "batch_size": 64, "metrics": {"loss": 0.25, "val_click_auc": 0.6125}}
    (run / "training.json").write_text(json.dumps(summary))
    text = _summary("Trainer", {"ModelRun": [SimpleNamespace(uri=str(run))]}, {})
    assert text == "2 epoch(s), 10 steps of 64; loss 0.2500; validation click_auc 0.6125"
    anomalies = tmp_path / "anomalies" / "Split-train"
    anomalies.mkdir(parents=True)
    assert _summary("ExampleValidator", {"ExampleAnomalies": [SimpleNamespace(uri=str(anomalies.parent))]}, {}) == (
        "no anomalies"
    )


def test_cli_failures_are_one_line(tmp_path, monkeypatch, capsys):
    """Any unexpected failure of a command is one line (exit 1); --debug shows the traceback."""
    import mvke_tf.pipelines.pipeline

    from mvke_tf.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("could not reach storage\nsecond line of detail")

    monkeypatch.setattr(mvke_tf.pipelines.pipeline, "compile_kubeflow", broken)
    argv = ["pipeline", "compile", "--target", "kubeflow", "--root", "gs://bucket/mvke"]
    argv += ["--output", str(tmp_path / "p")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mvke-tf: error: RuntimeError: could not reach storage (--debug shows the traceback)"]
    with pytest.raises(RuntimeError, match="could not reach storage"):
        main(["--debug", *argv])


def test_compile_with_a_cloud_root_reads_and_writes_nothing_there(tmp_path, capsys):
    """The README's Kubeflow command, as a new user runs it: no storage is touched, the run_fn is named."""
    from mvke_tf.cli import main

    out = tmp_path / "pipeline.json"
    argv = ["pipeline", "compile", "--target", "kubeflow", "--config", "pipelines/configs/synthetic.yaml"]
    argv += ["--root", "gs://BUCKET/mvke", "--image", "REGISTRY/mvke-tf-pipeline:1", "--output", str(out)]
    env_before = dict(os.environ)
    assert main(argv) == 0, capsys.readouterr().err
    text = out.read_text()
    assert "gs://BUCKET/mvke/artifacts" in text and "mvke_tf.pipelines.trainer.run_fn" in text
    assert "mvke_tf.pipelines.preprocessing.preprocessing_fn" in text and "_wheels" not in text
    assert "REGISTRY/mvke-tf-pipeline:1" in text
    assert capsys.readouterr().out.count("\n") == 1  # one line: what was written
    assert dict(os.environ) == env_before
    assert tf.io.gfile.exists(str(out))
