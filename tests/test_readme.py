"""The README's Keras snippet runs as written (on fewer rows)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_keras_api_snippet_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    section = text[text.index("## Keras API in 10 lines") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 13
    assert "num_rows=100_000" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("num_rows=100_000", "num_rows=20_000"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'click': {'auc':" in out and "'oracle_auc':" in out


def _readme_commands() -> list[list[str]]:
    """Every shell command in the README's ```bash blocks, continuation lines joined, as argv."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):  # leading VAR=value assignments
                argv = argv[1:]
            if argv:
                commands.append(argv)
    return commands


def test_every_readme_command_is_known(monkeypatch):
    """Each README command names a real make target, CLI command and flags, or a file in the repo.

    The commands run for real elsewhere: `make test` is CI itself; `make run`'s two commands run in the
    pipeline benchmark and (smaller) in tests/pipelines/test_pipeline.py; data synth, train, export and the bad-
    argument paths in tests/test_cli.py; tag-users in tests/tagging/test_scoring.py; the server in
    tests/serving/test_serving.py; the Kubeflow compile in tests/pipelines/test_pipeline.py; notebooks in
    tests/test_notebooks.py. This test catches a README that drifts from the code.
    """
    from mvke_tf.pipelines.__main__ import _parser as pipeline_parser
    from mvke_tf.serving.__main__ import build_parser as serving_parser

    from mvke_tf.cli import BENCHMARKS, build_parser

    root = README.parent
    targets = set(re.findall(r"^([a-z]+):", (root / "Makefile").read_text(), re.M))
    commands = _readme_commands()
    assert len(commands) >= 10
    seen = set()
    for argv in commands:
        exe = argv[0]
        if exe == "make":
            assert argv[1] in targets, argv
        elif exe.endswith("mvke-tf"):
            rest = [a for a in argv[1:] if a not in ("-h", "--help")] or ["--help"]
            seen.add(rest[0])
            if rest[0] == "pipeline":
                pipeline_parser().parse_args(rest[1:])
            elif rest[0] == "serve":
                serving_parser().parse_args(rest[1:])
            elif rest[0] == "bench":
                assert rest[1] in BENCHMARKS, argv
            elif rest != ["--help"]:
                build_parser().parse_args(rest)
        elif exe == "docker":
            compose = argv[argv.index("-f") + 1]
            assert (root / compose).is_file(), argv
            assert "MVKE_SERVING_DIR" in (root / compose).read_text()
        else:
            raise AssertionError(f"README command not covered by this test: {argv}")
    assert {"data", "train", "export", "pipeline", "serve", "tag-users"} <= seen


def test_readme_links_point_at_files():
    text = README.read_text()
    links = [m for m in re.findall(r"\]\(([^)#]+)\)", text) if not m.startswith("http")]
    assert len(links) >= 8
    missing = [link for link in links if not (README.parent / link).exists()]
    assert not missing, missing


def test_own_data_section_runs_its_describe_and_convert_commands(tmp_path, monkeypatch, capsys):
    """The "Your own data" commands on a made-up table: describe and convert run as written (with DIR a made-up
    table); the pipeline, serve and tag-users commands run on the same layout in the slow
    tests/pipelines/test_pipeline_own_data.py, which the closing checks of CI include."""
    import shlex

    from own_data_helpers import write_own_data

    from mvke_tf.cli import main

    text = README.read_text()
    section = text[text.index("## Your own data") : text.index("## Serve with TF Serving")]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]
    commands = [c for c in commands if c]
    assert [c[1:3] for c in commands] == [
        ["data", "describe"], ["data", "convert"], ["pipeline", "run"], ["serve", "--model"], ["tag-users", "--model"]
    ]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    write_own_data(tmp_path / "DIR", 300, 100)
    for argv in commands[:2]:
        assert main(argv[1:]) == 0, argv
    out = capsys.readouterr().out
    assert "user_id: member" in (tmp_path / "DIR" / "features.yaml").read_text()
    assert "wrote 2 file(s) of typed, gzipped tf.Examples to DIR-tfx" in out
    assert sorted(p.name for p in (tmp_path / "DIR-tfx").iterdir()) == [
        "eval",
        "features.yaml",
        "schema.pbtxt",
        "train",
    ]
