"""The notebooks in notebooks/ run top to bottom without errors, and are committed without outputs.

Each notebook runs in a fresh ``python3`` kernel of this interpreter (ipykernel's kernel spec runs
``python``, which jupyter_client replaces with ``sys.executable``), with the notebooks directory as
its working directory, as Jupyter would start it. The notebooks write under ``runs/notebooks/``.
"""

import sys
import time
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PIPELINE = {"03_pipeline_and_serving.ipynb"}  # runs the TFX pipeline: marked like the other pipeline tests
CELL_TIMEOUT = 600
# Smaller runs for the tests, injected after a notebook's cell tagged "parameters" (papermill's convention):
# every cell still runs, on less data.
TEST_PARAMETERS = {
    "01_quickstart_keras.ipynb": "NUM_ROWS = 12_000\nEPOCHS = 1",
    "02_paper_reproduction.ipynb": "NUM_ROWS = 12_000\nEPOCHS = 1",
}


def with_test_parameters(nb, name):
    """``nb`` with :data:`TEST_PARAMETERS` of ``name`` in a cell right after its ``parameters`` cell."""
    if name not in TEST_PARAMETERS:
        return nb
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters', found {len(tagged)}"
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(TEST_PARAMETERS[name]))
    return nb


def _params(mark_pipeline: bool = False):
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        marks = [pytest.mark.pipeline] if mark_pipeline and path.name in PIPELINE else []
        yield pytest.param(path, id=path.stem, marks=marks)


def test_there_are_notebooks():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01_quickstart_keras.ipynb", "02_paper_reproduction.ipynb", "03_pipeline_and_serving.ipynb"]


@pytest.mark.parametrize("path", list(_params()))
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: cell {i} has outputs"
        assert str(NOTEBOOKS.parent) not in cell.source, f"{path.name}: cell {i} holds this checkout's absolute path"


def test_kernel_runs_this_interpreter():
    from jupyter_client.manager import KernelManager

    argv = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert argv[0] == sys.executable, argv


@pytest.mark.parametrize("path", list(_params(mark_pipeline=True)))
def test_notebook_runs(path):
    nb = with_test_parameters(nbformat.read(path, as_version=4), path.name)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on the first error
    print(f"\n{path.name}: {time.perf_counter() - start:.0f} s")
