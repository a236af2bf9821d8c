"""The pure parts of incremental runs: the state file, the tracker and the stop rule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eachlabs_loader import InvalidRequestError
from eachlabs_loader.incremental import (
    IncrementalScan,
    StateTracker,
    WorkflowState,
    validate_lookback,
)
from eachlabs_loader.pagination import Page
from eachlabs_loader.schema import normalize_executions

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


def state(hwm=T0, open_executions=None):
    return WorkflowState(
        flow_id="flow",
        dataset_id="ds",
        high_water_mark=hwm,
        open_executions=open_executions or {},
        last_run_at=T0,
    )


def test_state_round_trips_through_json():
    original = state(open_executions={"a": T0 - timedelta(minutes=5), "b": None})
    again = WorkflowState.from_json(original.to_json())
    assert again == original


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[]", "not a JSON object"),
        ('{"format": 2}', "state format 2"),
        ('{"format": 1}', "last_run"),
        (
            '{"format": 1, "workflow_id": "f", "dataset_id": "d", "high_water_mark": '
            '"2025-01-01T00:00:00", "open_executions": {}, "last_run": {"at": null}}',
            "without an offset",
        ),
    ],
)
def test_state_rejects_what_it_cannot_trust(text, reason):
    with pytest.raises((ValueError, KeyError), match=reason):
        WorkflowState.from_json(text)


def test_stop_before_is_the_older_of_lookback_and_open_executions():
    assert state().stop_before(timedelta(hours=1)) == T0 - timedelta(hours=1)
    opened = state(open_executions={"x": T0 - timedelta(days=2), "y": None})
    assert opened.stop_before(timedelta(hours=1)) == T0 - timedelta(days=2)
    assert state(hwm=None).stop_before(timedelta(0)) is None


@pytest.mark.parametrize("value", [-1, timedelta(seconds=-1), "1h", None, True, float("nan")])
def test_lookback_must_be_a_non_negative_duration(value):
    with pytest.raises(InvalidRequestError, match="lookback"):
        validate_lookback(value)


def test_lookback_accepts_seconds_and_timedeltas():
    assert validate_lookback(90) == timedelta(seconds=90)
    assert validate_lookback(timedelta(0)) == timedelta(0)


def row(execution_id, status, created, updated, flow="flow"):
    return {
        "execution_id": execution_id,
        "flow_id": flow,
        "status": status,
        "created_at": created.isoformat(),
        "updated_at": updated.isoformat(),
    }


def test_tracker_keeps_open_rows_until_a_newer_finished_copy_arrives():
    tracker = StateTracker()
    t = T0
    tracker.observe(
        normalize_executions(
            [
                row("new", "running", t, t),
                row("old-open", "queued", t - timedelta(hours=3), t - timedelta(hours=3)),
                row("done", "completed", t - timedelta(hours=4), t - timedelta(hours=4)),
            ]
        )
    )
    assert set(tracker.open) == {"new", "old-open"}
    # A finished copy observed *before* the open one (older updated_at) must not close it.
    tracker.observe(normalize_executions([row("new", "completed", t, t - timedelta(minutes=1))]))
    assert "new" in tracker.open
    tracker.observe(normalize_executions([row("new", "completed", t, t + timedelta(minutes=1))]))
    assert set(tracker.open) == {"old-open"}
    saved = tracker.state("ds", None, mode="full", rows_fetched=3, requests=1)
    assert saved.flow_id == "flow" and saved.high_water_mark == t
    assert saved.open_executions == {"old-open": t - timedelta(hours=3)}


def test_tracker_treats_unknown_and_missing_statuses_as_open():
    tracker = StateTracker()
    rows = [row("a", "paused", T0, T0), {**row("b", "x", T0, T0), "status": None}]
    tracker.observe(normalize_executions(rows))
    assert set(tracker.open) == {"a", "b"}


def test_tracker_keeps_the_previous_high_water_mark_when_it_saw_older_rows_only():
    tracker = StateTracker()
    tracker.observe(normalize_executions([row("a", "completed", T0, T0)]))
    later = state(hwm=T0 + timedelta(days=1))
    saved = tracker.state("ds", later, mode="incremental", rows_fetched=1, requests=1)
    assert saved.high_water_mark == T0 + timedelta(days=1)


def pages_of(created: list[datetime], size: int) -> list[Page]:
    rows = [row(f"e{k}", "completed", c, c) for k, c in enumerate(created)]
    return [
        Page.from_rows(offset, size, rows[offset : offset + size], len(rows))
        for offset in range(0, len(rows) + 1, size)
        if rows[offset : offset + size] or offset == 0
    ]


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 600), min_size=0, max_size=120),
    size=st.integers(1, 25),
    bound_minutes=st.integers(-10, 700),
)
def test_the_scan_yields_every_row_at_or_after_the_bound_and_one_page_more_at_most(
    gaps, size, bound_minutes
):
    created, t = [], T0
    for gap in gaps:  # newest first
        created.append(t)
        t -= timedelta(minutes=gap / 60)
    pages = pages_of(created, size)
    fetched = []

    def fetch():
        for page in pages:
            fetched.append(page)
            yield page

    bound = T0 - timedelta(minutes=bound_minutes)
    known = state(hwm=bound)
    scan = IncrementalScan(
        fetch(), lambda flow: (known, None), lambda: iter(()), lookback=timedelta(0)
    )
    seen = [i for page in scan for i in page.ids]
    wanted = {f"e{k}" for k, c in enumerate(created) if c >= bound}
    assert wanted <= set(seen)
    assert scan.fallback is None and scan.incremental  # an empty list: nothing to read
    # It stopped at the first page reaching below the bound.
    last_needed = max((k for k, c in enumerate(created) if c >= bound), default=-1)
    assert len(fetched) <= last_needed // size + 2


def test_the_scan_falls_back_when_rows_are_not_newest_first():
    created = [T0 - timedelta(minutes=k) for k in range(30)]
    created[15], created[16] = created[16], created[15]
    pages = pages_of(created, 10)
    scan = IncrementalScan(
        iter(pages),
        lambda flow: (state(hwm=T0 - timedelta(days=1)), None),
        lambda: iter(()),
        lookback=timedelta(0),
    )
    seen = [i for page in scan for i in page.ids]
    assert "not newest first" in scan.fallback and not scan.incremental
    assert len(seen) == 30  # read on to the end


def test_repeated_rows_shifted_by_inserts_are_not_an_order_violation():
    created = [T0 - timedelta(minutes=k) for k in range(30)]
    pages = pages_of(created, 10)
    shifted = pages[1].columns
    # The second page, fetched after 3 inserts: it starts with the first page's last 3 rows.
    again = Page.from_rows(
        10,
        10,
        [dict(zip(pages[0].columns, v, strict=True)) for v in zip(*pages[0].columns.values())][-3:]
        + [dict(zip(shifted, v, strict=True)) for v in zip(*shifted.values())][:7],
        33,
    )
    scan = IncrementalScan(
        iter([pages[0], again, pages[2]]),
        lambda flow: (state(hwm=T0 - timedelta(hours=2)), None),
        lambda: iter(()),
        lookback=timedelta(0),
    )
    list(scan)
    assert scan.fallback is None and scan.incremental


def test_without_a_state_the_full_scan_runs_instead():
    pages = pages_of([T0 - timedelta(minutes=k) for k in range(25)], 10)
    full = pages_of([T0 - timedelta(minutes=k) for k in range(25)], 10)
    scan = IncrementalScan(
        iter(pages), lambda flow: (None, "no state file"), lambda: iter(full), lookback=timedelta(0)
    )
    assert [p for p in scan] == full
    assert scan.fallback == "no state file" and not scan.incremental
    assert pd.Series([i for p in full for i in p.ids]).is_unique


def test_pages_to_read_counts_new_rows_and_the_depth_of_the_oldest_open_one():
    known = state()
    assert known.pages_to_read(1_000, 100) is None  # a state without depth: cannot tell
    known.total_count, known.open_depth = 1_000, 250
    assert known.pages_to_read(1_120, 100) == 5  # ceil((120 + 250) / 100) + 1
    assert known.pages_to_read(900, 100) == 4  # rows deleted: no new ones
    assert known.pages_to_read(None, 100) is None
