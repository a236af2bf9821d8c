"""Incremental runs against the sandbox: few requests, the same dataset as a full load."""

from __future__ import annotations

import json
import logging
import math
import shutil
from datetime import timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

from eachlabs_loader import InvalidRequestError, load_executions, read_executions
from eachlabs_loader.lake import LakeWriter
from eachlabs_loader.state import STATE_DIR, read_state
from eachlabs_loader.storage import resolve_location

ROWS, OPEN_WINDOW, PAGE = 3_000, 200, 100
STRIDE = PAGE - PAGE // 10


@pytest.fixture
def api(make_sandbox):
    # Realistic history: only the newest executions may still be running.
    return make_sandbox(workflows=2, rows=ROWS, open_window=OPEN_WINDOW)


def kwargs(api, **more):
    return {"base_url": api.base_url, "api_key": api.api_key, "progress": False, **more}


def list_requests(api):
    return [r for r in api.requests if r.path.split("?")[0].endswith("/executions")]


def state_file(root, api, number=0):
    return root / STATE_DIR / f"{api.workflows[number].id}.json"


def assert_same_as_full_load(api, root, tmp_path, workflows):
    """The dataset equals, row for row, what a fresh full load of the same API writes."""
    fresh = tmp_path / "fresh"
    load_executions(workflows, output=fresh, **kwargs(api))
    got, want = read_executions(root), read_executions(fresh)
    pd.testing.assert_frame_equal(got, want)
    ids = got["execution_id"]
    assert ids.is_unique
    expected = {i for w in workflows for i in api.expected_ids(w)}
    assert set(ids) == expected


def test_incremental_run_reads_the_head_and_equals_a_full_load(api, tmp_path):
    slug = api.workflows[0].slug
    root = tmp_path / "lake"
    first = load_executions(slug, output=root, **kwargs(api))
    assert not first.incremental and state_file(root, api).exists()
    full_requests = len(list_requests(api))

    finished = api.finish(slug, 10)  # ten that were running during the full load
    api.insert(slug, 50)
    api.clear_requests()
    result = load_executions(slug, output=root, incremental=True, **kwargs(api))

    assert result.incremental and result.fallbacks == {}
    # The open window plus the new rows, one page past the bound: a handful of requests.
    budget = math.ceil((OPEN_WINDOW + 50) / STRIDE) + 1
    assert result.requests == len(list_requests(api)) <= budget < full_requests
    # One page at a time, each overlapping its predecessor by 10 rows (checked for holes).
    assert [r.offset for r in list_requests(api)] == [STRIDE * k for k in range(result.requests)]
    assert result.rows_inserted == 50 and result.rows_updated == 10
    stored = read_executions(root).set_index("execution_id")
    assert (stored.loc[finished, "status"] == "completed").all()
    assert_same_as_full_load(api, root, tmp_path, [slug])


def test_state_records_the_high_water_mark_and_open_executions(api, tmp_path):
    slug = api.workflows[0].slug
    root = tmp_path / "lake"
    load_executions(slug, output=root, **kwargs(api))
    state = json.loads(state_file(root, api).read_text())
    rows = api.rows(slug)
    open_ids = {r["execution_id"] for r in rows if r["status"] not in TERMINAL}
    assert state["format"] == 1 and state["workflow_id"] == api.workflows[0].id
    assert set(state["open_executions"]) == open_ids and open_ids
    newest = pd.Timestamp(rows[0]["created_at"]).tz_convert("UTC")
    assert pd.Timestamp(state["high_water_mark"]) == newest
    assert state["last_run"]["mode"] == "full"
    assert state["dataset_id"] == LakeWriter(resolve_location(root)).dataset_id


TERMINAL = {"completed", "failed", "cancelled"}


def test_a_crash_between_data_and_state_rereads_more_never_less(api, tmp_path, monkeypatch):
    slug = api.workflows[0].slug
    root = tmp_path / "lake"
    load_executions(slug, output=root, **kwargs(api))
    old_state = state_file(root, api).read_text()
    api.finish(slug, 5)
    api.insert(slug, 30)

    def crash(*args, **kw):
        raise KeyboardInterrupt("killed after the data, before the state")

    monkeypatch.setattr("eachlabs_loader.state.StateFiles.commit", crash)
    with pytest.raises(KeyboardInterrupt):
        load_executions(slug, output=root, incremental=True, **kwargs(api))
    monkeypatch.undo()
    assert state_file(root, api).read_text() == old_state  # the data landed, the state did not
    assert len(read_executions(root)) == ROWS + 30

    api.finish(slug, 5)
    api.insert(slug, 20)
    result = load_executions(slug, output=root, incremental=True, **kwargs(api))
    assert result.incremental
    assert_same_as_full_load(api, root, tmp_path, [slug])


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (lambda path, other: path.unlink(), "no state file"),
        (lambda path, other: path.write_text("{not json"), "unusable"),
        (
            lambda path, other: path.write_text(
                json.dumps({**json.loads(path.read_text()), "format": 0})
            ),
            "state format 0",
        ),
        (
            lambda path, other: path.write_text(
                json.dumps({"workflow_id": "x", "high_water_mark": "2025-01-01T00:00:00Z"})
            ),
            "state format None",
        ),
        (lambda path, other: shutil.copy(other, path), "another dataset"),
    ],
    ids=["missing", "unreadable", "older-format", "pre-versioned", "other-dataset"],
)
def test_unusable_state_falls_back_to_a_full_load(api, tmp_path, caplog, spoil, reason):
    slug = api.workflows[0].slug
    root, elsewhere = tmp_path / "lake", tmp_path / "other-lake"
    load_executions(slug, output=root, **kwargs(api))
    load_executions(slug, output=elsewhere, **kwargs(api))
    spoil(state_file(root, api), state_file(elsewhere, api))
    api.finish(slug, 3)
    api.insert(slug, 40)
    api.clear_requests()
    with caplog.at_level(logging.WARNING, logger="eachlabs_loader"):
        result = load_executions(slug, output=root, incremental=True, **kwargs(api))
    assert not result.incremental
    assert reason in result.fallbacks[slug]
    assert any(
        "falls back to a full load" in r.message and reason in r.message for r in caplog.records
    )
    assert len(list_requests(api)) > ROWS / PAGE  # it really read everything
    assert_same_as_full_load(api, root, tmp_path, [slug])
    # The full load left a good state: the next run is incremental again.
    api.insert(slug, 5)
    again = load_executions(slug, output=root, incremental=True, **kwargs(api))
    assert again.incremental and again.requests <= math.ceil((OPEN_WINDOW + 45) / STRIDE) + 1


def test_a_list_that_is_not_newest_first_falls_back(api, tmp_path, caplog):
    slug = api.workflows[0].slug
    root = tmp_path / "lake"
    load_executions(slug, output=root, **kwargs(api))
    api.insert(slug, 250)
    api.add_fault("reversed", offsets={STRIDE}, workflow=slug)
    with caplog.at_level(logging.WARNING, logger="eachlabs_loader"):
        result = load_executions(slug, output=root, incremental=True, **kwargs(api))
    assert not result.incremental and "not newest first" in result.fallbacks[slug]
    assert result.pages >= (ROWS + 250) / PAGE  # read on to the end of the list
    assert_same_as_full_load(api, root, tmp_path, [slug])


def test_full_refresh_reads_everything_and_rewrites_the_state(api, tmp_path):
    slug = api.workflows[0].slug
    root = tmp_path / "lake"
    load_executions(slug, output=root, **kwargs(api))
    api.insert(slug, 10)
    api.clear_requests()
    result = load_executions(slug, output=root, incremental=True, full_refresh=True, **kwargs(api))
    assert not result.incremental and result.fallbacks == {}
    assert len(list_requests(api)) > ROWS / PAGE
    state = json.loads(state_file(root, api).read_text())
    assert state["last_run"]["mode"] == "full" and state["last_run"]["requests"] == result.requests


def test_two_workflows_share_one_dataset(api, tmp_path):
    one, two = (w.slug for w in api.workflows)
    root = tmp_path / "lake"
    load_executions([one, two], output=root, **kwargs(api))
    assert state_file(root, api, 0).exists() and state_file(root, api, 1).exists()
    api.insert(one, 60)
    api.finish(two, 7)
    api.clear_requests()
    result = load_executions([one, two], output=root, incremental=True, **kwargs(api))
    assert result.incremental and set(result.workflows) == {one, two}
    assert all(r.incremental for r in result.workflows.values())
    assert result.workflows[one].rows_inserted == 0  # counts are per dataset, in the total
    assert result.rows_inserted == 60 and result.rows_updated == 7
    assert result.requests <= 2 * (math.ceil((OPEN_WINDOW + 60) / STRIDE) + 1)
    assert_same_as_full_load(api, root, tmp_path, [one, two])
    # One workflow's run leaves the other's state alone.
    before = state_file(root, api, 1).read_text()
    load_executions(one, output=root, incremental=True, **kwargs(api))
    assert state_file(root, api, 1).read_text() == before


def test_an_empty_workflow_costs_one_request(make_sandbox, tmp_path):
    api = make_sandbox(workflows=1, rows=0)
    root = tmp_path / "lake"
    load_executions(api.workflows[0].slug, output=root, **kwargs(api))
    api.clear_requests()
    result = load_executions(api.workflows[0].slug, output=root, incremental=True, **kwargs(api))
    assert result.incremental and len(list_requests(api)) == 1 and result.rows_written == 0


def test_a_failed_run_writes_no_state(api, tmp_path):
    slug = api.workflows[0].slug
    root = tmp_path / "lake"
    load_executions(slug, output=root, **kwargs(api))
    before = state_file(root, api).read_text()
    api.insert(slug, 20)
    api.add_fault("status", status=500, times=None, offsets={STRIDE})
    with pytest.raises(Exception, match=f"offset {STRIDE}"):
        load_executions(slug, output=root, incremental=True, max_retries=1, **kwargs(api))
    assert state_file(root, api).read_text() == before


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"incremental": True}, "needs output"),
        (
            {"incremental": True, "output": "x", "bulk_id": "b0000000-0000-4000-8000-000000000001"},
            "bulk_id",
        ),
        ({"incremental": True, "output": "x", "lookback": -1}, "lookback"),
        ({"incremental": True, "output": "x", "lookback": "1h"}, "lookback"),
        ({"incremental": "yes", "output": "x"}, "True or False"),
    ],
)
def test_bad_incremental_arguments_fail_before_any_request(api, tmp_path, extra, message):
    if "output" in extra:
        extra = {**extra, "output": tmp_path / "lake"}
    with pytest.raises(InvalidRequestError, match=message):
        load_executions(api.workflows[0].slug, **kwargs(api), **extra)
    assert api.requests == []


def test_read_state_rejects_a_state_of_another_workflow(api, tmp_path):
    root = tmp_path / "lake"
    load_executions(api.workflows[0].slug, output=root, **kwargs(api))
    location = resolve_location(root)
    dataset_id = LakeWriter(location).dataset_id
    shutil.copy(state_file(root, api, 0), state_file(root, api, 1))
    state, why = read_state(location, api.workflows[1].id, dataset_id)
    assert state is None and "describes workflow" in why
    state, why = read_state(location, api.workflows[0].id, dataset_id)
    assert state is not None and why is None


def test_open_executions_deep_in_history_make_the_concurrent_full_scan_the_choice(
    make_sandbox, tmp_path, caplog
):
    # Long-running executions everywhere: reading down to the oldest is a near-full scan.
    # (With some latency: against an API answering in microseconds, nothing beats reading on.)
    api = make_sandbox(workflows=1, rows=ROWS, latency_ms=8)
    slug = api.workflows[0].slug
    root = tmp_path / "lake"
    load_executions(slug, output=root, **kwargs(api))
    assert json.loads(state_file(root, api).read_text())["last_run"]["open_depth"] > ROWS * 0.9
    api.insert(slug, 40)
    with caplog.at_level(logging.INFO, logger="eachlabs_loader"):
        result = load_executions(slug, output=root, incremental=True, **kwargs(api))
    assert not result.incremental and "pages deep" in result.fallbacks[slug]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a choice, not a fault
    assert_same_as_full_load(api, root, tmp_path, [slug])
    # Sequential loads have nothing faster to switch to: they read down to it, exactly.
    api.insert(slug, 15)
    api.finish(slug)
    single = load_executions(slug, output=root, incremental=True, concurrency=1, **kwargs(api))
    assert single.incremental and single.rows_inserted == 15
    shutil.rmtree(tmp_path / "fresh")
    assert_same_as_full_load(api, root, tmp_path, [slug])


def test_the_lookback_rereads_rows_below_the_high_water_mark(make_sandbox, tmp_path):
    # Nothing stays open here, so the look-back alone sets how deep a run reads.
    api = make_sandbox(workflows=1, rows=ROWS, open_window=0)
    slug = api.workflows[0].slug
    root = tmp_path / "lake"
    load_executions(slug, output=root, **kwargs(api))
    history = pd.to_datetime([r["created_at"] for r in api.rows(slug)], utc=True, format="ISO8601")
    # A look-back reaching 250 rows below the newest: how many hours that takes depends on
    # the hour and weekday the history ends on (the sandbox's nights and weekends are quiet).
    deep = math.ceil((history[0] - history[250]).total_seconds() / 3600)
    api.insert(slug, 10)
    depths = {}
    for hours in (0, deep):
        # The mark this run starts from (the run before moved it to the inserted rows).
        mark = pd.Timestamp(json.loads(state_file(root, api).read_text())["high_water_mark"])
        api.clear_requests()
        lookback = timedelta(hours=hours)
        result = load_executions(
            slug, output=root, incremental=True, lookback=lookback, **kwargs(api)
        )
        assert result.incremental
        created = pd.to_datetime(
            [r["created_at"] for r in api.rows(slug)], utc=True, format="ISO8601"
        )
        below = created[created >= mark - lookback]
        depths[hours] = max(r.offset + r.limit for r in list_requests(api))
        assert depths[hours] >= len(below)  # every row down to mark - lookback was read
    assert len(below) > 2 * PAGE  # the look-back reached deep
    assert depths[deep] > depths[0]
    assert_same_as_full_load(api, root, tmp_path, [slug])


def test_a_lake_written_before_dataset_ids_gets_one_and_then_runs_incrementally(api, tmp_path):
    slug = api.workflows[0].slug
    root = tmp_path / "lake"
    load_executions(slug, output=root, **kwargs(api))
    # What an older version left: a schema file without an id, and no state.
    metadata = root / "_common_metadata"
    pq.write_metadata(pq.read_schema(metadata).remove_metadata(), metadata)
    shutil.rmtree(root / STATE_DIR)
    api.insert(slug, 20)
    first = load_executions(slug, output=root, incremental=True, **kwargs(api))
    assert "no state file" in first.fallbacks[slug]
    assert pq.read_schema(metadata).metadata[b"eachlabs.dataset_id"]
    api.insert(slug, 20)
    second = load_executions(slug, output=root, incremental=True, **kwargs(api))
    assert second.incremental and second.rows_inserted == 20
    assert_same_as_full_load(api, root, tmp_path, [slug])


def test_an_open_execution_without_created_at_is_read_again_until_it_finishes(
    make_sandbox, tmp_path
):
    api = make_sandbox(workflows=1, rows=ROWS, open_window=OPEN_WINDOW)
    slug = api.workflows[0].slug
    target = next(r for r in api.rows(slug)[150:] if r["status"] in ("running", "queued"))
    # On every page, the target comes without created_at.
    api.add_fault("null_created_at", times=None, body=[target["execution_id"]])
    root = tmp_path / "lake"
    load_executions(slug, output=root, **kwargs(api))
    assert (
        json.loads(state_file(root, api).read_text())["open_executions"][target["execution_id"]]
        is None
    )
    api.insert(slug, 30)
    api.finish(slug)
    result = load_executions(slug, output=root, incremental=True, concurrency=1, **kwargs(api))
    assert result.incremental and result.pages >= ROWS / PAGE  # it could be anywhere: read all
    stored = read_executions(root).set_index("execution_id")
    assert stored.loc[target["execution_id"], "status"] == "completed"
