"""The notebook runs top to bottom in a real Jupyter kernel against the sandbox."""

from __future__ import annotations

import pathlib

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"


def text_of(cell) -> str:
    return "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs
    )


def test_quickstart_notebook_executes_against_the_sandbox():
    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    cells = {
        cell.source.splitlines()[0]: cell for cell in notebook.cells if cell.cell_type == "code"
    }
    assert text_of(cells["len(executions)"]).strip() == "1500"
    assert "datetime64[us, UTC]" in text_of(cells["executions.dtypes"])
    assert "completed" in text_of(cells['executions["status"].value_counts()'])
    assert "1,500 rows fetched, 1,500 written" in text_of(cells["import tempfile"])
    assert "mean_seconds" in text_of(cells['duckdb.sql(f"""'])
