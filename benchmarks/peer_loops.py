"""The loads ``peers.py`` times, one per child process: this project, the naive loop, dlt.

Every function takes a ``Job`` and returns the execution ids it loaded, or, for the peers
that write files, a function that reads them back (called after the clock stops), so the
parent can count what went missing or came twice.

- ``naive``: the loop the vendor's docs suggest, as a user would write it: sequential
  ``requests.get`` (no session), ``response.json()``, ``pd.DataFrame``,
  ``pd.to_datetime(utc=True, format="ISO8601")``. For the organisation: list the workflows,
  then page each one's executions, one after another. Into files: pyarrow's
  ``write_to_dataset`` (hive partitions, as the project's lake) or one Parquet file.
- ``dlt``: its ``rest_api`` source with the offset paginator, into DuckDB; for the
  organisation, a ``workflows`` parent resource whose ``workflow_id`` resolves the
  ``executions`` child's path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Ids = list[str]
Outcome = Ids | Callable[[], Ids]

PAGE_SIZE = 100
TIMESTAMPS = ("started_at", "ended_at", "created_at", "updated_at", "deleted_at")
NESTED = ("inputs", "step_results", "output_json", "cost")
"""Fields whose JSON type varies (an object or a number): Parquet needs one type, so the
naive loop writes them as JSON text (the least fix that makes pyarrow accept the frame)."""


@dataclass(frozen=True)
class Job:
    base_url: str
    key: str
    slug: str  # the workflow (unused by the organisation's loads)
    workdir: str  # where a peer writes its files
    concurrency: int | None = None


_MODE: dict[str, Any] = {}
"""What the project's scan chose (concurrency, overlap), reported beside its time."""


def _note(result: Any) -> None:
    _MODE.update(concurrency=result.concurrency, overlap=result.overlap)


# -- this project ---------------------------------------------------------------------------


def project(job: Job) -> list[str]:
    from eachlabs_loader import load_executions

    frame = load_executions(job.slug, **_options(job))
    _note(frame.attrs["eachlabs"])
    return list(frame["execution_id"])


def project_org(job: Job) -> list[str]:
    from eachlabs_loader import ALL_WORKFLOWS, load_executions

    frame = load_executions(ALL_WORKFLOWS, **_options(job))
    _note(frame.attrs["eachlabs"])
    return list(frame["execution_id"])


def project_lake(job: Job, *, org: bool = False, table_format: str = "parquet") -> Outcome:
    from eachlabs_loader import ALL_WORKFLOWS, load_executions

    out = os.path.join(job.workdir, "lake")
    workflow = ALL_WORKFLOWS if org else job.slug
    _note(load_executions(workflow, output=out, table_format=table_format, **_options(job)))
    return lambda: _read_ids(out, table_format)


def _options(job: Job) -> dict[str, Any]:
    options: dict[str, Any] = {"base_url": job.base_url, "api_key": job.key, "progress": False}
    if job.concurrency is not None:
        options["concurrency"] = job.concurrency
    return options


def _read_ids(out: str, table_format: str) -> Ids:
    if table_format == "delta":
        from eachlabs_loader import read_executions

        return list(read_executions(out)["execution_id"])
    import pyarrow.dataset as ds

    table = ds.dataset(out, format="parquet").to_table(columns=["execution_id"])
    return table["execution_id"].to_pylist()  # type: ignore[no-any-return]


# -- the naive loop ---------------------------------------------------------------------------


def _get(job: Job, path: str, offset: int) -> dict[str, Any]:
    import requests

    response = requests.get(
        f"{job.base_url}/{path}",
        params={"offset": offset, "limit": PAGE_SIZE},
        headers={"X-API-Key": job.key},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def _page_all(job: Job, path: str, field: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = _get(job, path, offset)[field]
        rows.extend(page)
        if len(page) < PAGE_SIZE:
            return rows
        offset += PAGE_SIZE


def _naive_frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    frame = pd.DataFrame(rows)
    for column in TIMESTAMPS:
        if column in frame:
            # Plain utc=True raises on the mixed forms the API sends; ISO8601 is the least fix.
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def naive(job: Job) -> list[str]:
    frame = _naive_frame(_page_all(job, f"workflows/{job.slug}/executions", "executions"))
    return list(frame["execution_id"])


def _naive_org_rows(job: Job) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for workflow in _page_all(job, "workflows", "workflows"):
        path = f"workflows/{workflow['workflow_id']}/executions"
        rows.extend(_page_all(job, path, "executions"))
    return rows


def naive_org(job: Job) -> list[str]:
    return list(_naive_frame(_naive_org_rows(job))["execution_id"])


def _as_json_text(frame: Any) -> Any:
    for column in NESTED:
        if column in frame:
            frame[column] = [None if v is None else json.dumps(v) for v in frame[column]]
    return frame


def naive_org_lake(job: Job) -> Outcome:
    """The organisation into hive partitions by workflow and day, as the project's lake."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = _as_json_text(_naive_frame(_naive_org_rows(job)))
    frame["workflow_id"] = frame["flow_id"]
    frame["date"] = frame["created_at"].dt.strftime("%Y-%m-%d")
    out = os.path.join(job.workdir, "lake")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_to_dataset(table, out, partition_cols=["workflow_id", "date"])
    return lambda: _read_ids(out, "parquet")


def naive_file(job: Job) -> Outcome:
    """One workflow into one Parquet file (the naive loop's whole frame, written once)."""
    rows = _page_all(job, f"workflows/{job.slug}/executions", "executions")
    frame = _as_json_text(_naive_frame(rows))
    del rows
    out = os.path.join(job.workdir, "file")
    os.makedirs(out)
    frame.to_parquet(os.path.join(out, "executions.parquet"), index=False)
    return lambda: _read_ids(out, "parquet")


# -- dlt --------------------------------------------------------------------------------------


def _offset_paginator() -> dict[str, Any]:
    return {
        "type": "offset",
        "limit": PAGE_SIZE,
        "offset_param": "offset",
        "limit_param": "limit",
        "total_path": "total_count",
    }


def _run_dlt(job: Job, resources: list[dict[str, Any]]) -> list[str]:
    import dlt
    import duckdb
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {"base_url": job.base_url + "/", "headers": {"X-API-Key": job.key}},
            "resources": resources,  # type: ignore[typeddict-item]
        }
    )
    database = os.path.join(job.workdir, "dlt.duckdb")
    pipeline = dlt.pipeline(
        pipeline_name="eachlabs_bench",
        destination=dlt.destinations.duckdb(database),
        dataset_name="bench",
        pipelines_dir=os.path.join(job.workdir, "pipelines"),
    )
    pipeline.run(source)
    with duckdb.connect(database) as con:
        return [r[0] for r in con.execute("select execution_id from bench.executions").fetchall()]


def dlt_one(job: Job) -> list[str]:
    endpoint = {
        "path": f"workflows/{job.slug}/executions",
        "data_selector": "executions",
        "paginator": _offset_paginator(),
    }
    return _run_dlt(job, [{"name": "executions", "endpoint": endpoint}])


def dlt_org(job: Job) -> list[str]:
    """dlt's parent/child resources: each listed workflow's id fills the child's path."""
    workflows = {
        "name": "workflows",
        "endpoint": {
            "path": "workflows",
            "data_selector": "workflows",
            "paginator": _offset_paginator(),
        },
    }
    executions = {
        "name": "executions",
        "endpoint": {
            "path": "workflows/{workflow_id}/executions",
            "data_selector": "executions",
            "paginator": _offset_paginator(),
            "params": {
                "workflow_id": {"type": "resolve", "resource": "workflows", "field": "workflow_id"}
            },
        },
    }
    return _run_dlt(job, [workflows, executions])


LOADS: dict[str, Callable[[Job], Outcome]] = {
    "project": project,
    "project-org": project_org,
    "project-lake": project_lake,
    "project-org-lake": lambda job: project_lake(job, org=True),
    "project-org-delta": lambda job: project_lake(job, org=True, table_format="delta"),
    "naive": naive,
    "naive-org": naive_org,
    "naive-org-lake": naive_org_lake,
    "naive-file": naive_file,
    "dlt": dlt_one,
    "dlt-org": dlt_org,
}
