"""The import graph has floors: the library, then the pipeline and the server, then the command line.

* the library (``mvke_tf`` but its command line) imports neither TFX nor the pipeline, the server or
  the command line, so notebooks and tests use the models without a pipeline;
* the server (``mvke_tf.serving``, folder ``serving/``) imports neither TFX nor the pipeline;
* the command line (the ``mvke_tf.cli`` package) is the top floor: nothing outside it but
  ``python -m mvke_tf`` imports it or its modules;
* ``benchmarks`` (not installed) is imported by nothing that is;
* inside the library, its packages stand in the order of :data:`LIBRARY_ORDER` (the models below their
  export, the export below the batch tagging job that reads exports): each imports only those before it.

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


# The library's packages and top-level modules, lowest first: each may import only those before it.
LIBRARY_ORDER = (
    "mvke_tf._env",
    "mvke_tf.config",
    "mvke_tf.metrics",
    "mvke_tf.distribute",
    "mvke_tf.layers",
    "mvke_tf.data",
    "mvke_tf.models",
    "mvke_tf.train",
    "mvke_tf.export",
    "mvke_tf.tagging",
)


def _library_unit(name: str) -> str | None:
    """The entry of :data:`LIBRARY_ORDER` a module name belongs to (``None``: outside the library's units)."""
    parts = name.split(".")
    unit = ".".join(parts[:2])
    return unit if parts[0] == "mvke_tf" and unit in LIBRARY_ORDER else None


def _library_upward(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Per library module, the library modules it imports from its own level or above, its own unit aside."""
    found = {}
    for module, names in graph.items():
        unit = _library_unit(module)
        if unit is None:
            continue
        rank = LIBRARY_ORDER.index(unit)
        up = sorted(n for n in names if (u := _library_unit(n)) not in (None, unit) and LIBRARY_ORDER.index(u) > rank)
        if up:
            found[module] = up
    return found


def test_the_library_packages_import_only_those_below_them():
    units = {_library_unit(m) for m in MODULES if _floor(m) == "library"} - {None}
    assert units == set(LIBRARY_ORDER), f"a library package is missing from LIBRARY_ORDER: {units ^ set(LIBRARY_ORDER)}"
    upward = _library_upward(GRAPH)
    assert not upward, f"library modules import a package above them (a cycle in the making): {upward}"


def test_the_library_order_check_sees_a_lazy_import_of_the_export_from_a_model(tmp_path):
    """The cycle there was until now: a model family importing the export inside a method."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from mvke_tf.export.examples import dummy_rows\n")
    graph = {"mvke_tf.models.families": _imports(path), "mvke_tf.tagging.scoring": {"mvke_tf.export.input_types"}}
    assert _library_upward(graph) == {
        "mvke_tf.models.families": ["mvke_tf.export.examples", "mvke_tf.export.examples.dummy_rows"]
    }
