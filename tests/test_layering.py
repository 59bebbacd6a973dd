"""The import graph has floors: the library, then the pipeline and the server, then the command line.

* the library (``mvke_tf`` but its command line) imports neither TFX nor the pipeline, the server or
  the command line, so notebooks and tests use the models without a pipeline;
* the server (``mvke_tf.serving``, folder ``serving/``) imports neither TFX nor the pipeline;
* the command line (the ``mvke_tf.cli`` package) is the top floor: nothing outside it but
  ``python -m mvke_tf`` imports it or its modules;
* ``benchmarks`` (not installed) is imported by nothing that is.

Read from the source (imports at module level and inside functions alike), so a lazy import upward
fails here as much as one at the top of a file.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"mvke_tf": "mvke_tf", "pipelines": "mvke_tf.pipelines", "serving": "mvke_tf.serving"}
PIPELINE_ONLY = ("tfx", "tensorflow_transform", "tensorflow_model_analysis", "tensorflow_data_validation", "kfp")


def _modules() -> dict[str, Path]:
    """Every installed module's import name -> its file."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(path: Path) -> set[str]:
    """The absolute module names a file imports (``from a import b`` gives ``a`` and ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


MODULES = _modules()
GRAPH = {module: _imports(path) for module, path in MODULES.items()}


def _floor(module: str) -> str:
    if _under(module, "mvke_tf.pipelines"):
        return "pipeline"
    if _under(module, "mvke_tf.serving"):
        return "server"
    if _under(module, "mvke_tf.cli") or module == "mvke_tf.__main__":
        return "command line"
    return "library"


FORBIDDEN = {
    "library": ("mvke_tf.pipelines", "mvke_tf.serving", "mvke_tf.cli", "benchmarks", *PIPELINE_ONLY),
    "server": ("mvke_tf.pipelines", "mvke_tf.cli", "benchmarks", *PIPELINE_ONLY),
    "pipeline": ("mvke_tf.cli", "benchmarks"),
    "command line": (),
}


def test_the_graph_is_read_from_every_floor():
    floors = {_floor(m) for m in MODULES}
    assert floors == set(FORBIDDEN), floors
    assert "mvke_tf.pipelines.pipeline" in MODULES and "mvke_tf.serving.server" in MODULES


@pytest.mark.parametrize("floor", list(FORBIDDEN))
def test_no_floor_imports_one_above_it(floor):
    upward = {
        module: sorted(n for n in names if _under(n, *FORBIDDEN[floor]))
        for module, names in GRAPH.items()
        if _floor(module) == floor
    }
    upward = {m: names for m, names in upward.items() if names}
    assert not upward, f"{floor} modules import from a floor above them: {upward}"


def _command_line_importers(graph: dict[str, set[str]]) -> list[str]:
    """The modules outside the command-line package that import it or any of its modules."""
    return sorted(
        m for m, names in graph.items() if not _under(m, "mvke_tf.cli") and any(_under(n, "mvke_tf.cli") for n in names)
    )


def test_only_the_entry_point_imports_the_command_line():
    assert "mvke_tf.cli.data" in MODULES and _floor("mvke_tf.cli.data") == "command line"
    importers = _command_line_importers(GRAPH)
    assert importers == ["mvke_tf.__main__"], importers


def test_the_entry_point_check_sees_an_import_of_a_command_module(tmp_path):
    """A module outside the package importing one of its modules (even lazily) is caught; the package's own
    modules importing each other are not."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from mvke_tf.cli.train import _train\n")
    graph = {
        "mvke_tf.train": _imports(path),
        "mvke_tf.__main__": {"mvke_tf.cli", "mvke_tf.cli.main"},
        "mvke_tf.cli.demo": {"mvke_tf.cli.train", "mvke_tf.cli.train._train"},
    }
    assert _command_line_importers(graph) == ["mvke_tf.__main__", "mvke_tf.train"]


def test_the_floor_check_sees_a_lazy_upward_import(tmp_path):
    """The check reads imports inside functions too (the kind that slipped in before)."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from mvke_tf.pipelines.config import PipelineConfig\n    import tfx\n")
    assert {"mvke_tf.pipelines.config", "tfx"} <= _imports(path)
    assert all(_under(n, *FORBIDDEN["library"]) for n in ("mvke_tf.pipelines.config", "tfx"))
