"""The notebooks run top to bottom in a real Jupyter kernel against the sandbox."""

from __future__ import annotations

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from eachlabs_loader.sandbox.data import incident_dates, make_workflow

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
    lake_load = cells["import tempfile"]
    assert lake_load.source.splitlines()[-1] == "result"  # Jupyter displays the LoadResult
    assert "1,500 rows fetched, 1,500 written" in text_of(lake_load)
    assert any("text/html" in o.get("data", {}) for o in lake_load.outputs)
    assert "mean_seconds" in text_of(cells['duckdb.sql(f"""'])


@pytest.mark.timeout(240)
def test_executions_overview_notebook_charts_the_rhythm_and_finds_the_incident(monkeypatch):
    monkeypatch.delenv("EACHLABS_API_KEY", raising=False)
    cells = execute("executions_overview.ipynb")
    volume = 'per_hour = executions.set_index("created_at").resample("h").size()'
    failures = (
        'finished = executions[executions["status"].isin(["completed", "failed", "cancelled"])]'
    )
    charts = [
        volume,
        'in_whole_days = executions[executions["created_at"].dt.floor("D").isin(whole_days.index)]',
        failures,
        'duration_s = (finished["ended_at"] - finished["started_at"]).dt.total_seconds()',
    ]
    for first_line in charts:
        assert images_in(cells[first_line]) == 1, first_line
    assert "5,000 returned" in text_of(
        cells["executions = load_executions(workflow, **connection)"]
    )
    # The partial first and last days (Wed 1 and Tue 7 January) are left out of the bars.
    daily = text_of(cells[volume])
    assert "Thu 02 Jan" in daily and "Mon 06 Jan" in daily
    assert "Wed 01 Jan" not in daily and "Tue 07 Jan" not in daily
    # The worst day the notebook points to is the sandbox's incident day.
    incident = incident_dates(0, make_workflow(0, 0))[0]
    assert f"Worst day: {incident:%a %d %b}" in text_of(cells[failures])
    percentiles = text_of(cells[charts[-1]])
    assert all(p in percentiles for p in ("p50", "p90", "p99", "completed", "failed"))
    lake_query = text_of(cells['duckdb.sql(f"""'])
    assert "failed_share" in lake_query and "executions" in lake_query
    assert not any(o.get("output_type") == "error" for c in cells.values() for o in c.outputs)
