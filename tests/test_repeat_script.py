"""scripts/test_repeat.py (``make test-repeat``): which files it hunts, what it runs, how it counts."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def repeat():
    spec = importlib.util.spec_from_file_location("test_repeat_script_module", ROOT / "scripts" / "test_repeat.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_files_are_found_by_what_they_call(repeat, tmp_path):
    found = repeat.training_files()
    for path in (
        "tests/models/test_multidomain_fusion.py",  # trains with the bi-level schedule
        "tests/pipelines/test_pipeline_trainer.py",  # the Trainer's run_fn on worker processes
        "tests/models/test_model_training.py",  # the library's train and evaluate
        "tests/test_notebooks.py",  # executes the notebooks, which train
    ):
        assert path in found
    assert "tests/layers/test_layers.py" not in found and "tests/test_repeat_script.py" not in found
    # A new file is found without a list to update.
    (tmp_path / "tests").mkdir()
    call = "model." + "fit(ds)"  # split, so that this file itself calls no training entry point
    (tmp_path / "tests" / "test_new.py").write_text(f"def test_x(model, ds):\n    {call}\n")
    (tmp_path / "tests" / "test_other.py").write_text("def test_y():\n    assert 1\n")
    assert repeat.training_files(tmp_path) == ["tests/test_new.py"]


def test_runs_count_passes_and_name_each_failed_test(repeat, tmp_path, capsys, monkeypatch):
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_flaky.py").write_text(
        "import os\n"
        "def test_passes():\n    assert True\n"
        "def test_fails_in_odd_runs():\n"
        "    path = os.path.join(os.path.dirname(__file__), 'count')\n"
        "    n = int(open(path).read()) if os.path.exists(path) else 0\n"
        "    open(path, 'w').write(str(n + 1))\n"
        "    assert n % 2 == 0\n"
    )
    monkeypatch.setattr(repeat, "ROOT", tmp_path)  # the runs' working directory: no repository config there
    argv = ["tests/test_flaky.py", "--runs", "4", "--jobs", "1", "--marks", "", "--out", str(tmp_path / "o")]
    status = repeat.main(argv)
    out = capsys.readouterr().out
    assert status == 1
    assert "| tests/test_flaky.py | 2/4 |" in out
    assert "tests/test_flaky.py::test_fails_in_odd_runs (1, 3)" in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [r["rc"] == 0 for r in summary["runs"]] == [True, False, True, False]
    assert all((tmp_path / "o" / Path(r["log"]).name).is_file() for r in summary["runs"])


def test_bad_arguments_are_one_line_errors(repeat, capsys):
    for argv, message in (
        (["tests/no_such_file.py"], "no such test file"),
        (["--runs", "0"], "nothing to run"),
        (["--jobs", "0"], "--jobs must be >= 1"),
    ):
        with pytest.raises(SystemExit) as e:
            repeat.main(argv)
        assert e.value.code == 2
        assert message in capsys.readouterr().err
    assert sys.executable  # the runs use this interpreter
