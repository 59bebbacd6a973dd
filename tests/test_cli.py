import json
import subprocess
import sys
from pathlib import Path

import pytest

from mvke_tf.cli import main

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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "/nonexistent/dir"], "no features.yaml there"),
        (["data", "synth", "--out", "{tmp}/x", "--rows", "0"], "num_rows=0 is invalid"),
        (["data", "synth", "--out", "{tmp}/x", "--taxonomy", "18,5"], "taxonomy"),
        (["train", "--data", "{tmp}", "--config", "{tmp}/missing.yaml"], "does not exist"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "features.yaml").write_text("")  # for the --config case: a data dir that passes the first check
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mvke-tf: error:") and message in err and "\n" not in err


def test_entry_point_has_help_and_no_traceback(tmp_path):
    exe = VENV_BIN / "mvke-tf"
    if not exe.exists():
        pytest.skip("mvke-tf entry point not installed in this environment")
    help_text = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("data", "train", "demo"):
        assert cmd in help_text
    bad = subprocess.run([str(exe), "train", "--data", str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "no features.yaml" in bad.stderr
