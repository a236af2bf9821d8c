"""The pure parts of incremental runs: the state file, the tracker and the stop rule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from fakes import requests_from
from hypothesis import given, settings
from hypothesis import strategies as st

from eachlabs_loader import InvalidRequestError
from eachlabs_loader.incremental import ORDER_TOLERANCE, IncrementalScan, validate_lookback
from eachlabs_loader.pagination import Page, columns_from_rows
from eachlabs_loader.parallel import MIN_CHECKED_PAGE, ConcurrentScan
from eachlabs_loader.schema import normalize_table
from eachlabs_loader.state import StateTracker, WorkflowState

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
    opened = state(open_executions={"x": T0 - timedelta(days=2)})
    assert opened.stop_before(timedelta(hours=1)) == T0 - timedelta(days=2)
    assert state(hwm=None).stop_before(timedelta(0)) is None


@pytest.mark.parametrize(
    "value",
    [
        -1,
        timedelta(seconds=-1),
        "1h",
        None,
        True,
        float("nan"),
        float("inf"),
        1e300,
        timedelta(days=4000),
    ],
)
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


def rows_of(rows):
    """The tracker's input: normalised rows, as a load hands them over."""
    return normalize_table(columns_from_rows(rows))


def test_tracker_keeps_open_rows_until_a_newer_finished_copy_arrives():
    tracker = StateTracker()
    t = T0
    tracker.observe(
        rows_of(
            [
                row("new", "running", t, t),
                row("old-open", "queued", t - timedelta(hours=3), t - timedelta(hours=3)),
                row("done", "completed", t - timedelta(hours=4), t - timedelta(hours=4)),
            ]
        )
    )
    assert set(tracker.open) == {"new", "old-open"}
    # A finished copy observed *before* the open one (older updated_at) must not close it.
    tracker.observe(rows_of([row("new", "completed", t, t - timedelta(minutes=1))]))
    assert "new" in tracker.open
    tracker.observe(rows_of([row("new", "completed", t, t + timedelta(minutes=1))]))
    assert set(tracker.open) == {"old-open"}
    saved = tracker.state("ds", None, mode="full", rows_fetched=3, requests=1)
    assert saved.flow_id == "flow" and saved.high_water_mark == t
    assert saved.open_executions == {"old-open": t - timedelta(hours=3)}


def test_tracker_treats_unknown_and_missing_statuses_as_open():
    tracker = StateTracker()
    rows = [row("a", "paused", T0, T0), {**row("b", "x", T0, T0), "status": None}]
    tracker.observe(rows_of(rows))
    assert set(tracker.open) == {"a", "b"}


def test_tracker_keeps_the_previous_high_water_mark_when_it_saw_older_rows_only():
    tracker = StateTracker()
    tracker.observe(rows_of([row("a", "completed", T0, T0)]))
    later = state(hwm=T0 + timedelta(days=1))
    saved = tracker.state("ds", later, mode="incremental", rows_fetched=1, requests=1)
    assert saved.high_water_mark == T0 + timedelta(days=1)


class ListAPI:
    """A newest-first list behind ``fetch(offset)``; ``before_fetch`` may change it."""

    def __init__(self, created: list[datetime], size: int) -> None:
        self.rows = [row(f"e{k}", "completed", c, c) for k, c in enumerate(created)]
        self.size = size
        self.offsets: list[int] = []
        self.before_fetch = lambda api: None

    def fetch(self, offset: int) -> Page:
        self.before_fetch(self)
        self.offsets.append(offset)
        rows = self.rows[offset : offset + self.size]
        return Page.from_rows(offset, self.size, rows, len(self.rows))

    def scan(self) -> ConcurrentScan:
        return ConcurrentScan(requests_from(self.fetch), limit=self.size, concurrency=1)


def incremental(api: ListAPI, known: WorkflowState | None, full=lambda: iter(())):
    return IncrementalScan(
        api.scan(), lambda flow: (known, None if known else "no state file"), full, timedelta(0)
    )


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 600), min_size=0, max_size=120),
    size=st.integers(1, 25),
    bound_minutes=st.integers(0, 700),
)
def test_the_scan_yields_every_row_at_or_after_the_bound_and_one_page_more_at_most(
    gaps, size, bound_minutes
):
    created, t = [], T0
    for gap in gaps:  # newest first
        created.append(t)
        t -= timedelta(minutes=gap / 60)
    api = ListAPI(created, size)
    bound = T0 - timedelta(minutes=bound_minutes)
    scan = incremental(api, state(hwm=bound))
    seen = [i for page in scan for i in page.ids]
    wanted = {f"e{k}" for k, c in enumerate(created) if c >= bound - ORDER_TOLERANCE}
    assert wanted <= set(seen)
    assert scan.fallback is None and scan.incremental  # (an empty list: nothing to read)
    # It stopped at the first page reaching below the bound.
    stride = size - max(1, size // 10) if size >= MIN_CHECKED_PAGE else size
    last_needed = max((k for k, c in enumerate(created) if c >= bound - ORDER_TOLERANCE), default=0)
    assert len(api.offsets) <= last_needed // stride + 2


def test_the_scan_falls_back_when_rows_are_not_newest_first():
    created = [T0 - timedelta(minutes=k) for k in range(30)]
    created[15], created[16] = created[16], created[15]
    api = ListAPI(created, 10)
    scan = incremental(api, state(hwm=T0 - timedelta(days=1)))
    seen = {i for page in scan for i in page.ids}
    assert "not newest first" in scan.fallback and not scan.incremental
    assert len(seen) == 30  # read on to the end


def test_an_oldest_first_list_is_caught_on_its_first_page():
    # One row per page: no page has two rows to compare, but the first is far too old.
    api = ListAPI([T0 - timedelta(minutes=k) for k in range(5)][::-1], 1)
    scan = incremental(api, state(hwm=T0))
    assert len({i for page in scan for i in page.ids}) == 5
    assert "older than the newest one the last run saw" in scan.fallback


def test_timestamps_of_mixed_precision_are_not_an_order_violation():
    created = [T0, T0 + timedelta(milliseconds=300), T0 - timedelta(minutes=1)]
    scan = incremental(ListAPI(created, 10), state(hwm=T0 - timedelta(hours=1)))
    list(scan)
    assert scan.fallback is None and scan.incremental


def test_rows_shifted_by_inserts_or_deletions_between_pages_are_neither_a_fault_nor_lost():
    api = ListAPI([T0 - timedelta(minutes=k) for k in range(60)], 10)

    def churn(api):
        if len(api.offsets) == 1:  # after the first page: 3 new rows at the head
            for n in range(3):
                new = T0 + timedelta(minutes=n + 1)
                api.rows.insert(0, row(f"new{n}", "completed", new, new))
        elif len(api.offsets) == 2:  # after the second: 5 rows above the next page deleted
            del api.rows[8:13]

    api.before_fetch = churn
    scan = incremental(api, state(hwm=T0 - timedelta(minutes=45)))
    seen = {i for page in scan for i in page.ids}
    assert scan.fallback is None and scan.incremental
    bound = T0 - timedelta(minutes=45)
    wanted = {
        r["execution_id"] for r in api.rows if datetime.fromisoformat(r["created_at"]) >= bound
    }
    # Every row that existed when the run began, down to the bound (the new ones are the
    # next run's: they sit above the first page, which was read before they came).
    assert {w for w in wanted if not w.startswith("new")} <= seen


def test_without_a_state_the_full_scan_runs_instead():
    created = [T0 - timedelta(minutes=k) for k in range(25)]
    full = list(ListAPI(created, 10).scan())
    scan = incremental(ListAPI(created, 10), None, full=lambda: iter(full))
    assert list(scan) == full
    assert scan.fallback == "no state file" and not scan.incremental
    assert pd.Series([i for p in full for i in p.ids]).nunique() == 25


def test_an_open_execution_without_created_at_means_reading_everything():
    known = state(open_executions={"a": T0 - timedelta(hours=1), "b": None})
    assert known.stop_before(timedelta(0)) is None


def test_pages_to_read_counts_new_rows_and_the_depth_of_the_oldest_open_one():
    known = state()
    assert known.pages_to_read(1_000, 100) is None  # a state without depth: cannot tell
    known.total_count, known.open_depth = 1_000, 250
    assert known.pages_to_read(1_120, 100) == 5  # ceil((120 + 250) / 100) + 1
    assert known.pages_to_read(900, 100) == 4  # rows deleted: no new ones
    assert known.pages_to_read(None, 100) is None


def test_tracker_survives_timestamps_at_the_edges_of_what_parses():
    tracker = StateTracker()
    tracker.observe(
        rows_of(
            [
                {
                    "execution_id": "old",
                    "flow_id": "flow",
                    "status": "running",
                    "created_at": "0000-01-01T00:00:00Z",
                    "updated_at": "0000-01-01T00:00:00Z",
                },
                {
                    "execution_id": "far",
                    "flow_id": "flow",
                    "status": "completed",
                    "created_at": "9999-12-31T23:59:59Z",
                    "updated_at": "9999-12-31T23:59:59Z",
                },
            ]
        )
    )
    saved = tracker.state("ds", None, mode="full", rows_fetched=2, requests=1)
    assert saved.high_water_mark <= datetime.now(timezone.utc)  # capped at our clock
    assert saved.open_executions["old"].year == 1
