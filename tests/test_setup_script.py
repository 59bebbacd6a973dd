"""The setup script's interpreter search and its failure message."""

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def _run(env_extra, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VENV": str(tmp_path / "venv"), **env_extra}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)


def test_no_python310_fails_with_what_it_tried(tmp_path):
    if any(Path(d, "python3.10").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("this machine has a system python3.10")
    res = _run({"PYTHON": "/usr/bin/python3"}, tmp_path)  # a Python, but not 3.10
    assert res.returncode == 1
    assert "no Python 3.10 interpreter found" in res.stderr
    assert "$PYTHON=/usr/bin/python3" in res.stderr  # says what it tried
    assert "pyenv install 3.10" in res.stderr and "PYTHON=/path/to/python3.10" in res.stderr  # and how to fix it
    assert not (tmp_path / "venv").exists()
