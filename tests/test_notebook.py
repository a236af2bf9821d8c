"""The notebooks run top to bottom in a real Jupyter kernel against the sandbox."""

from __future__ import annotations

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"


def execute(name: str) -> dict[str, nbformat.NotebookNode]:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    return {
        cell.source.splitlines()[0]: cell for cell in notebook.cells if cell.cell_type == "code"
    }


def text_of(cell) -> str:
    return "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs
    )


def images_in(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)


def test_quickstart_notebook(monkeypatch):
    monkeypatch.delenv("EACHLABS_API_KEY", raising=False)
    cells = execute("quickstart.ipynb")
    assert text_of(cells["len(executions)"]).strip() == "1500"
    assert "datetime64[us, UTC]" in text_of(cells["executions.dtypes"])
    assert "completed" in text_of(cells['executions["status"].value_counts()'])
    assert "1,500 rows fetched, 1,500 written" in text_of(cells["import tempfile"])
    assert "mean_seconds" in text_of(cells['duckdb.sql(f"""'])


@pytest.mark.timeout(240)
def test_executions_overview_notebook_draws_four_charts_and_reads_the_lake(monkeypatch):
    monkeypatch.delenv("EACHLABS_API_KEY", raising=False)
    cells = execute("executions_overview.ipynb")
    charts = [
        'status_counts = executions["status"].value_counts()',
        'per_day = executions.set_index("created_at").resample("D").size()',
        'duration_s = (executions["ended_at"] - executions["started_at"])'
        ".dt.total_seconds().dropna()",
        'finished = executions[executions["status"].isin(["completed", "failed", "cancelled"])]',
    ]
    for first_line in charts:
        assert images_in(cells[first_line]) == 1, first_line
    assert "3,000 returned" in text_of(
        cells["executions = load_executions(workflow, **connection)"]
    )
    lake_query = text_of(cells['duckdb.sql(f"""'])
    assert "failed_share" in lake_query and "executions" in lake_query
    assert not any(o.get("output_type") == "error" for c in cells.values() for o in c.outputs)
