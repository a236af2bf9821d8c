"""load_executions end to end over real HTTP: paging, variants, filters, types, live inserts."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from eachlabs_loader import (
    COLUMNS,
    AuthenticationError,
    InvalidRequestError,
    PaginationError,
    load_executions,
)
from eachlabs_loader.pagination import MAX_STALE_PAGES
from eachlabs_loader.sandbox.data import BULK_SIZE, bulk_id_for


def load(sandbox, workflow_id, **kwargs):
    return load_executions(
        workflow_id, base_url=sandbox.base_url, api_key=sandbox.api_key, **kwargs
    )


def load_sequentially(sandbox, workflow_id, **kwargs):
    """The plain sequential scan, whose requests these tests count offset by offset."""
    return load(sandbox, workflow_id, concurrency=1, **kwargs)


@pytest.mark.parametrize(
    ("rows", "page_size"),
    [(rows, size) for rows in (0, 1, 99, 100, 101, 250) for size in (7, 50, 100)]
    + [(0, 1), (1, 1), (3, 1), (100, 1)],
)
def test_every_execution_exactly_once_in_api_order(make_sandbox, rows, page_size):
    sandbox = make_sandbox(rows=rows, workflows=1)
    slug = sandbox.workflows[0].slug
    frame = load_sequentially(sandbox, slug, page_size=page_size)
    assert frame["execution_id"].tolist() == sandbox.expected_ids(slug)
    assert frame["execution_id"].is_unique
    assert [r.offset for r in sandbox.requests] == list(
        range(0, rows // page_size * page_size + 1, page_size)
    )
    assert {r.limit for r in sandbox.requests} == {page_size}


def test_ten_thousand_executions(make_sandbox):
    sandbox = make_sandbox(rows=10_000, workflows=1)
    frame = load_sequentially(sandbox, sandbox.workflows[0].id)
    assert frame["execution_id"].tolist() == sandbox.expected_ids(sandbox.workflows[0].id)
    assert len(sandbox.requests) == 101


@pytest.mark.parametrize("variant", ["offset", "limit", "next_offset"])
@pytest.mark.parametrize("cap", [None, 30])
def test_response_variants_and_capped_totals_give_the_same_rows(make_sandbox, variant, cap):
    sandbox = make_sandbox(rows=123, workflows=1, variant=variant, total_count_cap=cap)
    slug = sandbox.workflows[0].slug
    frame = load(sandbox, slug, page_size=20)
    assert frame["execution_id"].tolist() == sandbox.expected_ids(slug)


def test_lying_hints_change_nothing(make_sandbox):
    sandbox = make_sandbox(rows=123, workflows=1, lying_hints=True)
    slug = sandbox.workflows[0].slug
    frame = load_sequentially(sandbox, slug, page_size=20)
    assert frame["execution_id"].tolist() == sandbox.expected_ids(slug)
    offsets = [r.offset for r in sandbox.requests]
    # Next offset = offset sent + rows received, whatever the hints say. (The request for the
    # page after next goes out while a page decodes, guessing it is full: 140 here, dropped
    # unread when the page at 120 came short.)
    assert [o for o in offsets if o != 140] == [0, 20, 40, 60, 80, 100, 120, 123]
    assert offsets.count(140) <= 1


@pytest.mark.parametrize("variant", ["limit", "offset"])
def test_a_host_with_smaller_pages_loses_nothing(make_sandbox, variant):
    sandbox = make_sandbox(rows=250, workflows=1, max_page_size=40, variant=variant)
    slug = sandbox.workflows[0].slug
    frame = load_sequentially(sandbox, slug, page_size=100)
    assert frame["execution_id"].tolist() == sandbox.expected_ids(slug)
    assert [r.offset for r in sandbox.requests] == [0, 40, 80, 120, 160, 200, 240]


def test_slug_and_uuid_load_the_same_workflow_keyed_by_uuid(sandbox):
    workflow = sandbox.workflows[1]
    by_slug, by_id = load(sandbox, workflow.slug), load(sandbox, workflow.id)
    pd.testing.assert_frame_equal(by_slug, by_id)
    assert set(by_slug["flow_id"]) == {workflow.id}


def test_bulk_id_filter(sandbox):
    workflow = sandbox.workflows[0]
    bulk = bulk_id_for(workflow, 60)
    frame = load_sequentially(sandbox, workflow.slug, bulk_id=bulk.upper(), page_size=7)
    assert frame["execution_id"].tolist() == sandbox.expected_ids(workflow.slug, bulk)
    assert len(frame) == BULK_SIZE
    assert set(frame["bulk_id"]) == {bulk}
    assert {r.query["bulk_id"] for r in sandbox.requests} == {bulk}
    assert len(sandbox.requests) == 3


def test_bulk_id_column_carries_the_api_value_without_a_filter(sandbox):
    workflow = sandbox.workflows[0]
    frame = load(sandbox, workflow.slug).set_index("execution_id")
    rows = {r["execution_id"]: r for r in sandbox.rows(workflow.slug)}
    with_bulk = [i for i, r in rows.items() if "bulk_id" in r]
    assert with_bulk and frame.loc[with_bulk, "bulk_id"].tolist() == [
        rows[i]["bulk_id"] for i in with_bulk
    ]
    assert frame["bulk_id"].isna().sum() == len(rows) - len(with_bulk)


def test_bulk_id_that_matches_nothing_is_an_empty_typed_frame(sandbox):
    frame = load(sandbox, sandbox.workflows[0].slug, bulk_id="123e4567-e89b-12d3-a456-426614174000")
    assert frame.empty
    assert list(frame.columns) == list(COLUMNS)
    assert str(frame["created_at"].dtype) == "datetime64[us, UTC]"


def _reference(text):
    """An independent parser: the stdlib's, after trimming nanoseconds it cannot read."""
    if text is None:
        return pd.NaT
    text = text.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return pd.Timestamp(value).tz_convert("UTC")


def test_every_wire_timestamp_form_lands_as_the_same_utc_instant(make_sandbox):
    sandbox = make_sandbox(rows=600, workflows=1)
    slug = sandbox.workflows[0].slug
    frame = load(sandbox, slug).set_index("execution_id")
    wire = sandbox.rows(slug)
    forms = set()
    for row in wire:
        for column in ("created_at", "started_at", "ended_at", "updated_at", "deleted_at"):
            expected = _reference(row.get(column))
            actual = frame.loc[row["execution_id"], column]
            assert (pd.isna(actual) and pd.isna(expected)) or actual == expected, (
                column,
                row.get(column),
            )
            if row.get(column):
                text = row[column]
                forms.add((" " in text, text.endswith("Z"), "+" in text[10:], len(text)))
    assert len(forms) >= 6  # the sandbox really mixed the forms
    assert frame["created_at"].is_monotonic_decreasing


def test_unknown_fields_and_statuses_are_kept(make_sandbox):
    sandbox = make_sandbox(
        rows=30, workflows=1, extra_fields={"region": "eu-west", "priority": 3, "tags": ["a"]}
    )
    frame = load(sandbox, sandbox.workflows[0].slug)
    assert list(frame.columns) == [*COLUMNS, "region", "priority", "tags"]
    assert set(frame["region"]) == {"eu-west"}
    assert set(frame["priority"]) == {"3"}
    assert set(frame["tags"]) == {'["a"]'}


def test_statuses_outside_the_documented_list_survive(make_sandbox):
    sandbox = make_sandbox(rows=400, workflows=1)
    frame = load(sandbox, sandbox.workflows[0].slug)
    assert set(frame["status"]) == {"completed", "failed", "cancelled", "running", "queued"}
    queued = frame[frame["status"] == "queued"]
    assert queued["started_at"].isna().all()


def test_head_inserts_while_paging_give_every_execution_once(make_sandbox):
    sandbox = make_sandbox(rows=500, workflows=1, inserts_per_request=3)
    slug = sandbox.workflows[0].slug
    before = set(sandbox.expected_ids(slug))
    frame = load(sandbox, slug, page_size=50)
    assert frame["execution_id"].is_unique
    assert before <= set(frame["execution_id"])
    assert set(frame["execution_id"]) <= set(sandbox.expected_ids(slug))


def test_a_server_repeating_its_first_page_ends_in_an_error(sandbox):
    sandbox.add_fault("repeat", times=None)
    with pytest.raises(PaginationError, match="already seen"):
        load_sequentially(sandbox, sandbox.workflows[0].slug, page_size=10)
    assert len(sandbox.requests) == 1 + MAX_STALE_PAGES  # the first page, then the stale ones


def test_environment_supplies_key_and_base_url(sandbox, monkeypatch):
    monkeypatch.setenv("EACHLABS_API_KEY", sandbox.api_key)
    monkeypatch.setenv("EACHLABS_BASE_URL", sandbox.base_url + "/")
    assert len(load_executions(sandbox.workflows[0].slug)) == 250


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"workflow_id": ""}, InvalidRequestError, "workflow_id"),
        ({"workflow_id": ".."}, InvalidRequestError, "workflow_id"),
        ({"bulk_id": "not-a-uuid"}, InvalidRequestError, "bulk_id"),
        ({"page_size": 0}, InvalidRequestError, "page_size"),
        ({"page_size": 101}, InvalidRequestError, "page_size"),
        ({"timeout": 0}, InvalidRequestError, "timeout"),
        ({"max_retries": -1}, InvalidRequestError, "max_retries"),
        ({"concurrency": 0}, InvalidRequestError, "concurrency"),
        ({"concurrency": 65}, InvalidRequestError, "concurrency"),
        ({"output": "foo://bucket/lake"}, InvalidRequestError, "output"),
        ({"progress": "yes"}, InvalidRequestError, "progress"),
        ({"on_error": "ignore"}, InvalidRequestError, "on_error"),
        ({"workflow_id": []}, InvalidRequestError, "workflow_id"),
        ({"workflow_id": ["a", "a"]}, InvalidRequestError, "more than once"),
        ({"workflow_id": ["ok", ".."]}, InvalidRequestError, "workflow_id"),
        ({"api_key": None}, AuthenticationError, "EACHLABS_API_KEY"),
    ],
)
def test_bad_input_fails_before_any_request(sandbox, kwargs, error, match):
    args = {
        "workflow_id": sandbox.workflows[0].slug,
        "base_url": sandbox.base_url,
        "api_key": sandbox.api_key,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        load_executions(**args)
    assert sandbox.requests == []
