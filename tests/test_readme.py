"""The README's Keras snippet runs as written (on fewer rows)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_keras_api_snippet_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    section = text[text.index("### Keras API in 10 lines") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 13
    assert "num_rows=100_000" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("num_rows=100_000", "num_rows=20_000"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'click': {'auc':" in out and "'oracle_auc':" in out
