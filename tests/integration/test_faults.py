"""The fault matrix: every fault the sandbox injects x where it strikes x DataFrame or lake.

Each cell ends in the exact result or in a specific EachlabsError subclass, within a time
bound; in lake mode a failed load leaves the dataset readable and holding the last good run.
Retry waits are recorded, not slept (the HTTP is real); what must take real time does.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pyarrow.dataset as pads
import pytest

from eachlabs_loader import (
    InvalidResponseError,
    PaginationError,
    RateLimitError,
    ServerError,
    TransportError,
    fetch_executions,
    read_executions,
)
from eachlabs_loader.lake import LakeWriter
from eachlabs_loader.loader import export_executions
from eachlabs_loader.storage import resolve_location

ROWS, PAGE = 1_250, 100
POSITIONS = {"first page": 0, "middle page": 600, "last page": 1_200, "concurrent phase": 270}
TIME_BOUND_S = 15


def retry_after_date() -> str:
    return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=1), usegmt=True)


RECOVERED = {  # fault -> the load still returns every execution exactly once
    **{f"{s} twice": {"kind": "status", "status": s, "times": 2} for s in (500, 502, 503, 504)},
    "429, Retry-After seconds": {"kind": "status", "status": 429, "retry_after": "1"},
    "429, Retry-After HTTP date": {
        "kind": "status",
        "status": 429,
        "retry_after": retry_after_date,
    },
    "429, no Retry-After": {"kind": "status", "status": 429},
    "connection reset": {"kind": "drop"},
    "read timeout": {"kind": "slow", "delay_s": 1.2},
    "truncated JSON": {"kind": "truncated"},
    "body shorter than Content-Length": {"kind": "short_read"},
    "HTML page with 200": {"kind": "html"},
    "HTML page with 502": {"kind": "html", "status": 502},
    "empty body": {"kind": "empty"},
    "executions not a list": {"kind": "wrong_shape", "body": {"executions": "x", "total_count": 1}},
    "a row that is not an object": {"kind": "wrong_shape", "body": {"executions": [1]}},
    "a row with no execution_id": {"kind": "missing_id"},
    "total_count negative": {"kind": "total", "body": -5, "times": None},
    "total_count a string": {"kind": "total", "body": "1250", "times": None},
    "more rows than limit": {"kind": "extra_rows", "extra": 7},
}
FAILED = {  # fault, forever -> the error the load must end in
    **{
        f"{s} forever": ({"kind": "status", "status": s}, ServerError) for s in (500, 502, 503, 504)
    },
    "429 forever": ({"kind": "status", "status": 429, "retry_after": "0"}, RateLimitError),
    "read timeout forever": ({"kind": "slow", "delay_s": 1.2}, TransportError),
    "connection reset forever": ({"kind": "drop"}, TransportError),
    "HTML forever": ({"kind": "html"}, InvalidResponseError),
    "rows without execution_id forever": ({"kind": "missing_id"}, InvalidResponseError),
}


def start(make_sandbox, position):
    concurrent = position == "concurrent phase"
    # Above 5 ms per request the pool stays on (parallel.MIN_ROUND_TRIP_S).
    return make_sandbox(rows=ROWS, workflows=1, latency_ms=8 if concurrent else 0), concurrent


def load(make_client, sandbox, concurrent, mode, root, max_retries=3):
    client = make_client(
        sandbox,
        max_retries=max_retries,
        concurrency=4 if concurrent else 1,
        page_size=PAGE,
        timeout=(2.0, 0.5),  # a loaded 2-core machine answered a plain page in 0.25 s
    )
    slug = sandbox.workflows[0].slug
    if mode == "frame":
        return fetch_executions(client, slug)["execution_id"].tolist()
    export_executions(client, slug, writer=LakeWriter(resolve_location(root)))
    return read_executions(root)["execution_id"].tolist()


def add(sandbox, spec, position, forever=False):
    spec = dict(spec)
    if callable(spec.get("retry_after")):
        spec["retry_after"] = spec["retry_after"]()
    spec.setdefault("times", None if forever else 1)
    sandbox.add_fault(spec.pop("kind"), offsets={POSITIONS[position]}, **spec)


IN_LAKE_MODE = ("503 twice", "connection reset", "truncated JSON", "more rows than limit")
"""Lake mode runs a representative subset of the recoverable faults (the same fetch path)."""


@pytest.mark.parametrize(
    ("fault", "position", "mode"),
    [(f, p, "frame") for f in RECOVERED for p in POSITIONS]
    + [(f, p, "lake") for f in IN_LAKE_MODE for p in POSITIONS],
)
def test_recoverable_faults_give_the_exact_result(
    make_sandbox, make_client, tmp_path, fault, position, mode
):
    sandbox, concurrent = start(make_sandbox, position)
    expected = sandbox.expected_ids(sandbox.workflows[0].slug)
    add(sandbox, RECOVERED[fault], position)
    started = time.monotonic()
    ids = load(make_client, sandbox, concurrent, mode, tmp_path)
    assert time.monotonic() - started < TIME_BOUND_S
    assert len(ids) == len(set(ids)), "duplicates"
    assert set(ids) == set(expected), f"{len(set(expected) - set(ids))} missing"
    assert any(r.fault for r in sandbox.requests), "the fault never struck"


@pytest.mark.parametrize("mode", ["frame", "lake"])
@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("fault", FAILED)
def test_persistent_faults_end_in_a_specific_error(
    make_sandbox, make_client, tmp_path, fault, position, mode
):
    sandbox, concurrent = start(make_sandbox, position)
    spec, error = FAILED[fault]
    good = None
    if mode == "lake":  # the last good run, which the failed one must leave intact
        good = set(load(make_client, sandbox, False, "lake", tmp_path))
        sandbox.finish(sandbox.workflows[0].slug)  # the failed run would have changes to write
    add(sandbox, spec, position, forever=True)
    started = time.monotonic()
    with pytest.raises(error) as info:
        load(make_client, sandbox, concurrent, mode, tmp_path, max_retries=1)
    assert time.monotonic() - started < TIME_BOUND_S
    assert f"offset {POSITIONS[position]}" in str(info.value)
    assert sandbox.workflows[0].slug in str(info.value)
    if good is not None:
        table = pads.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
        ids = table["execution_id"].to_pylist()
        assert len(ids) == len(set(ids)) and set(ids) == good


@pytest.mark.parametrize("mode", ["frame", "lake"])
@pytest.mark.parametrize("concurrent", [False, True])
def test_the_same_rows_on_every_page_end_in_a_pagination_error(
    make_sandbox, make_client, tmp_path, mode, concurrent
):
    sandbox = make_sandbox(rows=ROWS, workflows=1, latency_ms=8 if concurrent else 0)
    sandbox.add_fault("repeat", times=None)
    started = time.monotonic()
    with pytest.raises(PaginationError, match="already seen"):
        load(make_client, sandbox, concurrent, mode, tmp_path)
    assert time.monotonic() - started < TIME_BOUND_S
