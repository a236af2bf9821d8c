"""The sandbox's seeded history has a real service's rhythm (and stays a pure function of k).

Weekly cycles, bulk bursts, an incident day and long-tailed durations, checked on the
generator itself (no server): a flat, burst-free or incident-free generator fails here.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from itertools import pairwise

import pytest

from eachlabs_loader.sandbox import data
from eachlabs_loader.sandbox.data import (
    BULK_SIZE,
    EPOCH,
    INCIDENT_STATUS_WEIGHTS,
    ROWS_PER_WEEK,
    STATUS_WEIGHTS,
    bulk_id_for,
    bulk_indices,
    created_at,
    incident_dates,
    make_execution,
    make_workflow,
)

WEEKS = 4
ROWS = WEEKS * ROWS_PER_WEEK
FINISHED = ("completed", "failed", "cancelled")


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def history() -> tuple[list[datetime], list[dict]]:
    """Four weeks of workflow 0 (it starts on a Wednesday, 2025-01-01, at midnight UTC)."""
    workflow = make_workflow(0, 0)
    rows = [make_execution(0, workflow, k, timestamp_variety=False) for k in range(ROWS)]
    return [when(r["created_at"]) for r in rows], rows


def test_created_at_increases_strictly_even_at_one_second_resolution(history):
    times, _ = history
    assert times[0] >= EPOCH
    seconds = [int(t.timestamp()) for t in times]
    assert all(a < b for a, b in pairwise(seconds))


@pytest.mark.parametrize("number", [1, 5])
def test_every_workflow_starts_on_its_own_day_and_increases_strictly(number):
    workflow = make_workflow(3, number)
    times = [created_at(3, workflow, k) for k in range(3 * ROWS_PER_WEEK)]
    start = EPOCH + timedelta(days=number)
    assert start <= times[0] < start + timedelta(hours=1)
    assert all(a < b for a, b in pairwise(times))
    weekly = Counter((t - start) // timedelta(weeks=1) for t in times)
    assert all(abs(weekly[w] - ROWS_PER_WEEK) <= 2 * BULK_SIZE for w in range(2))


def test_an_epoch_off_midnight_still_starts_there_and_increases_strictly(monkeypatch):
    # benchmarks/delta.py moves EPOCH to "now minus the history's span".
    moved = datetime(2025, 3, 7, 13, 5, 7, 123_456, tzinfo=timezone.utc)
    monkeypatch.setattr(data, "EPOCH", moved)
    workflow = make_workflow(0, 2)
    times = [created_at(0, workflow, k) for k in range(2 * ROWS_PER_WEEK)]
    assert moved + timedelta(days=2) <= times[0]
    seconds = [int(t.timestamp()) for t in times]
    assert all(a < b for a, b in pairwise(seconds))


def test_rows_are_a_pure_function_of_the_index():
    workflow = make_workflow(9, 1)
    indices = [0, 49, 50, 69, 70, 199, 200, 4_999, 123_456, 999_999]
    forward = [make_execution(9, workflow, k) for k in indices]
    backward = [make_execution(9, workflow, k) for k in reversed(indices)]
    assert forward == backward[::-1]


def test_the_mean_rate_is_720_a_day_over_whole_weeks(history):
    times, _ = history
    per_week = Counter((t - EPOCH) // timedelta(weeks=1) for t in times)
    # A bulk trigger's rows land in one week: a week may carry one burst more or less.
    assert all(abs(per_week[w] - ROWS_PER_WEEK) <= BULK_SIZE for w in range(WEEKS))
    in_whole_weeks = sum(per_week[w] for w in range(WEEKS))
    assert abs(in_whole_weeks / (WEEKS * 7) - 720) <= 720 * 0.005


def test_working_hours_are_busier_than_nights_and_weekends(history):
    times, _ = history
    per_hour = Counter((t.weekday(), t.hour) for t in times)  # over four weeks

    def mean(days, hours):
        return statistics.mean(per_hour[(d, h)] for d in days for h in hours)

    working = mean(range(5), range(9, 18))
    assert working > 4 * mean(range(7), range(6))  # nights (UTC)
    assert working > 1.8 * mean((5, 6), range(9, 18))  # weekends
    days = Counter(t.date() for t in times)
    weekdays = [n for d, n in days.items() if d.weekday() < 5]
    weekends = [n for d, n in days.items() if d.weekday() >= 5]
    assert min(weekdays) > 1.5 * max(weekends)


def test_a_bulk_triggers_rows_arrive_within_two_minutes(history):
    times, rows = history
    workflow = make_workflow(0, 0)
    bursts = defaultdict(list)
    for k, row in enumerate(rows):
        if "bulk_id" in row:
            bursts[row["bulk_id"]].append(times[k])
    assert len(bursts) >= ROWS // 200
    for bulk_id, arrived in bursts.items():
        assert len(arrived) == BULK_SIZE
        assert [times[k] for k in bulk_indices(workflow, bulk_id, ROWS)] == arrived
        assert max(arrived) - min(arrived) <= timedelta(minutes=2)
    # Elsewhere the busiest two minutes hold far fewer rows than a burst.
    ordinary = sorted(t for k, t in enumerate(times) if bulk_id_for(workflow, k) is None)
    window = timedelta(minutes=2)
    most, first = 0, 0
    for last, t in enumerate(ordinary):
        while t - ordinary[first] > window:
            first += 1
        most = max(most, last - first + 1)
    assert most <= BULK_SIZE // 4


def test_bursts_are_spikes_in_the_hours_they_land_in(history):
    times, rows = history

    def hour(t):
        return t.replace(minute=0, second=0, microsecond=0)

    per_hour = Counter(hour(t) for t in times)
    hours_of_burst = defaultdict(set)
    for t, row in zip(times, rows):
        if "bulk_id" in row:
            hours_of_burst[row["bulk_id"]].add(hour(t))
    whole = {next(iter(h)) for h in hours_of_burst.values() if len(h) == 1}
    touched = set().union(*hours_of_burst.values())
    # Night hours (UTC, on weekdays) holding a whole burst, against those without any.
    nights = [h for h in per_hour if h.weekday() < 5 and 1 <= h.hour < 5]
    with_burst = [per_hour[h] for h in nights if h in whole]
    without = [per_hour[h] for h in nights if h not in touched]
    assert with_burst and without
    assert min(with_burst) >= 2 * max(without)


def test_the_incident_day_fails_far_more_and_falls_in_the_first_week(history):
    times, rows = history
    finished: dict[date, Counter] = defaultdict(Counter)
    for t, row in zip(times, rows):
        if row["status"] in FINISHED:
            finished[t.date()][row["status"]] += 1
    share = {d: c["failed"] / sum(c.values()) for d, c in finished.items()}
    worst = max(share, key=share.__getitem__)
    assert worst == incident_dates(0, make_workflow(0, 0))[0]
    assert 1 <= (worst - EPOCH.date()).days <= 5  # a whole day within the first week
    assert share[worst] >= 0.35
    assert all(s <= 0.22 for d, s in share.items() if d != worst)


def test_incidents_recur_and_the_first_is_in_the_first_week_for_every_workflow():
    for seed in range(5):
        for number in range(8):
            workflow = make_workflow(seed, number)
            dates = incident_dates(seed, workflow, periods=6)
            start = (EPOCH + timedelta(days=number)).date()
            assert 1 <= (dates[0] - start).days <= 5
            periods = [(d - start).days // data.INCIDENT_PERIOD_DAYS for d in dates]
            assert periods == list(range(6))
    # Seeded: not the same day for every workflow.
    firsts = {incident_dates(0, make_workflow(0, n))[0] - timedelta(days=n) for n in range(8)}
    assert len(firsts) > 1


def test_incident_runs_are_slower(history):
    times, rows = history
    incident = incident_dates(0, make_workflow(0, 0))[0]
    durations: dict[bool, list[float]] = {True: [], False: []}
    for t, row in zip(times, rows):
        if row["status"] == "completed":
            seconds = (when(row["ended_at"]) - when(row["started_at"])).total_seconds()
            durations[t.date() == incident].append(seconds)
    assert statistics.median(durations[True]) > 2 * statistics.median(durations[False])


def test_an_incident_keeps_the_rows_ids_inputs_and_costs():
    # The same total means the status roll draws the same randomness on any day.
    assert sum(w for _, w in INCIDENT_STATUS_WEIGHTS) == sum(w for _, w in STATUS_WEIGHTS)
    assert [s for s, _ in INCIDENT_STATUS_WEIGHTS] == [s for s, _ in STATUS_WEIGHTS]


def test_the_status_mix_outside_incident_days_is_the_documented_one(history):
    times, rows = history
    incident = incident_dates(0, make_workflow(0, 0))[0]
    counts = Counter(r["status"] for t, r in zip(times, rows) if t.date() != incident)
    total = sum(counts.values())
    for status, weight in STATUS_WEIGHTS:
        assert abs(counts[status] / total - weight / 100) < 0.015, status
    queued = [r for r in rows if r["status"] == "queued"]
    assert queued and all("started_at" not in r for r in queued)


def test_durations_have_a_long_tail_shaped_by_status(history):
    times, rows = history
    incident = incident_dates(0, make_workflow(0, 0))[0]
    durations = defaultdict(list)
    for t, row in zip(times, rows):
        if row["status"] in FINISHED and t.date() != incident:
            seconds = (when(row["ended_at"]) - when(row["started_at"])).total_seconds()
            durations[row["status"]].append(seconds)

    def quantile(values, q):
        return statistics.quantiles(values, n=100)[q - 1]

    completed = durations["completed"]
    assert 10 <= quantile(completed, 50) <= 90  # tens of seconds
    assert quantile(completed, 99) > 10 * quantile(completed, 50)
    assert sum(s > 300 for s in completed) / len(completed) >= 0.02  # minutes: a few %
    failed = durations["failed"]
    assert quantile(failed, 50) < quantile(completed, 50) / 2  # failures mostly fail fast
    assert quantile(failed, 99) > 30 * quantile(failed, 50)  # and some hang
    cancelled = durations["cancelled"]
    assert quantile(cancelled, 90) > 20 * quantile(cancelled, 10)  # cancelled at any time
