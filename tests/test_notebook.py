"""The notebook runs top to bottom in a real Jupyter kernel against the sandbox."""

from __future__ import annotations

import pathlib

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"


def test_quickstart_notebook_executes_against_the_sandbox():
    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    outputs = {
        i: "".join(
            o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs
        )
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
    }
    assert "datetime64[us, UTC]" in outputs[4]
    assert "completed" in outputs[5]
    assert "count    1" in outputs[6]  # describe() over the finished executions
