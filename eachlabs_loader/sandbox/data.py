"""Seeded synthetic workflows and executions, generated on demand from (seed, workflow, index).

Nothing is stored per row: row ``k`` of a workflow (0 = oldest) is a pure function of the
seed, the workflow and ``k``, so a sandbox can serve a million rows without holding them.
Imports only the standard library.

The history has the rhythm of a real service, so that what a user draws from it (volume per
day and hour, the failure rate per day, duration percentiles) has the shapes production data
has, and loads that partition by day meet days of uneven size:

- Daily and weekly cycles: arrivals follow ``HOURLY_WEIGHTS`` (by UTC hour), times
  ``WEEKEND_FACTOR`` on Saturdays and Sundays. The average stays one execution per
  ``MEAN_GAP_S`` (720 a day, ``ROWS_PER_WEEK`` a week), so N rows still span about N / 720
  days from ``EPOCH`` plus the workflow's number in days.
- Bursts: the rows of a bulk trigger (``bulk_id_for``) arrive together, a few seconds apart,
  on top of the profile, so the hours they land in stand out.
- Incidents: one UTC day in every ``INCIDENT_PERIOD_DAYS`` of a workflow's history (seeded;
  the first on day 1 to 5, so a week's load shows it) draws its statuses from
  ``INCIDENT_STATUS_WEIGHTS`` and runs ``INCIDENT_SLOWDOWN`` times slower.
- Long-tailed durations, shaped per status (``_duration_s``).

Row ``k`` finds its time in O(log 168): the history is a sequence of arrivals, one per
ordinary row and one per bulk trigger. Inverting the weekly profile's cumulative count (a
169-entry table) by bisection places arrival ``a``; it owns the whole seconds up to the next
one (at least ``BULK_SIZE`` of them, as the profile's peak is bounded), and its rows take
distinct seconds in there, so ``created_at`` increases strictly even at one-second resolution.
"""

from __future__ import annotations

import math
import random
import uuid
from bisect import bisect_right
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)
MEAN_GAP_S = 120
WEEK_S = 7 * 86_400
ROWS_PER_WEEK = WEEK_S // MEAN_GAP_S
BULK_BLOCK = 50
BULK_SIZE = 20
BULK_EVERY = 4
BULK_MAX_SPACING_S = 6
_BULK_PREFIX = "b0000000-0000-4000-8000-"

HOURLY_WEIGHTS = (
    0.30, 0.24, 0.20, 0.20, 0.24, 0.34, 0.55, 0.85, 1.25, 1.60, 1.75, 1.80,
    1.65, 1.75, 1.85, 1.80, 1.60, 1.35, 1.10, 0.90, 0.75, 0.60, 0.48, 0.38,
)  # fmt: skip
"""Relative arrivals per UTC hour of day: quiet nights, a working-hours plateau."""
WEEKEND_FACTOR = 0.45
INCIDENT_PERIOD_DAYS = 28
INCIDENT_FIRST_DAYS = (1, 5)
"""The first incident's day range: a whole day (not the first, partial one) in the first week."""
INCIDENT_SLOWDOWN = 3.0
TIMEOUT_S = 3600
"""Where failed runs that hang are cut off, and the most a completed one can take."""

STATUS_WEIGHTS = (
    ("completed", 72),
    ("failed", 12),
    ("cancelled", 5),
    ("running", 8),
    ("queued", 3),
)
INCIDENT_STATUS_WEIGHTS = (
    ("completed", 38),
    ("failed", 45),
    ("cancelled", 6),
    ("running", 8),
    ("queued", 3),
)
"""An incident day's mix: the same total as ``STATUS_WEIGHTS``, so a row draws the same
randomness either way and keeps its id, inputs and cost whether or not its day is an incident."""
WORKFLOW_NAMES = (
    "Text to Image Generator",
    "Video Upscaler",
    "Product Photo Studio",
    "Voice Over Pipeline",
    "Avatar Animator",
    "Caption Writer",
)


@dataclass(frozen=True)
class Workflow:
    """A sandbox workflow: a UUID (``flow_id``), a slug and a display name."""

    number: int
    id: str
    slug: str
    name: str
    step_results_as_list: bool


def make_workflow(seed: int, number: int) -> Workflow:
    rng = random.Random(f"workflow:{seed}:{number}")
    name = WORKFLOW_NAMES[number % len(WORKFLOW_NAMES)]
    if number >= len(WORKFLOW_NAMES):
        name = f"{name} {number // len(WORKFLOW_NAMES) + 1}"
    slug = name.lower().replace(" ", "-")
    return Workflow(
        number=number,
        id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        slug=slug,
        name=name,
        step_results_as_list=number % 2 == 1,
    )


WORKFLOW_CATEGORIES = ("image", "video", "audio", "text")
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


def workflow_row(seed: int, workflow: Workflow, *, executions: int, status: str) -> dict[str, Any]:
    """The list-workflows row of ``workflow`` (its UUID is ``workflow_id`` there)."""
    rng = random.Random(f"workflow-row:{seed}:{workflow.number}")
    created = EPOCH + timedelta(days=workflow.number) - timedelta(hours=1)
    category = WORKFLOW_CATEGORIES[workflow.number % len(WORKFLOW_CATEGORIES)]
    return {
        "workflow_id": workflow.id,
        "slug": workflow.slug,
        "name": workflow.name,
        "categories": [category],
        "tags": [category, f"team-{rng.randrange(1, 4)}"],
        "status": status,
        "trigger_count": executions,
        "clone_count": rng.randrange(0, 20),
        "is_public": rng.random() < 0.3,
        "production": rng.random() < 0.5,
        "node_based": workflow.number % 2 == 0,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated_at": (created + timedelta(minutes=rng.randrange(1, 600))).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
    }


def bulk_id_for(workflow: Workflow, index: int) -> str | None:
    """The bulk trigger row ``index`` belongs to, if any (fixed blocks of the history)."""
    block, position = divmod(index, BULK_BLOCK)
    if block % BULK_EVERY != 1 or position >= BULK_SIZE:
        return None
    return f"{_BULK_PREFIX}{(workflow.number << 32) | block:012x}"


def bulk_indices(workflow: Workflow, bulk_id: str, count: int) -> list[int]:
    """Indices (oldest first) of the rows of ``workflow`` started by ``bulk_id``."""
    bulk_id = bulk_id.lower()
    if not bulk_id.startswith(_BULK_PREFIX):
        return []
    packed = int(bulk_id[len(_BULK_PREFIX) :], 16)
    if packed >> 32 != workflow.number:
        return []
    start = (packed & 0xFFFFFFFF) * BULK_BLOCK
    return [k for k in range(start, start + BULK_SIZE) if k < count]


def _row_seed(seed: int, workflow: Workflow, index: int) -> int:
    """A well-mixed 64-bit seed per row (cheaper than seeding from a string)."""
    return _splitmix64(_workflow_seed(seed, workflow.number) ^ index)


@lru_cache(maxsize=1024)
def _workflow_seed(seed: int, number: int) -> int:
    """The part of a row's seed its workflow's rows share: mixed once, not once per row."""
    return _splitmix64(_splitmix64(seed) ^ number)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


# -- time: the weekly profile, arrivals and bursts ----------------------------------------

_CYCLE = BULK_BLOCK * BULK_EVERY
"""Rows in one repeat of the bulk pattern: block 1 of every ``BULK_EVERY`` (``bulk_id_for``)."""
_BULK_START = BULK_BLOCK
_ARRIVALS_PER_CYCLE = _CYCLE - BULK_SIZE + 1
_BULK_SALT = 0xB0C5
_INCIDENT_SALT = 0x1DC1
_US = 1_000_000
_DAY_US = 86_400 * _US


def _weekly_profile() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Arrivals per hour of the week (Monday 00:00 UTC first) and their running sums.

    Scaled so that a week's arrivals carry ``ROWS_PER_WEEK`` rows on average: a bulk
    trigger is one arrival of ``BULK_SIZE`` rows, so there are fewer arrivals than rows.
    """
    weights = [
        weight * (WEEKEND_FACTOR if day >= 5 else 1.0)
        for day in range(7)
        for weight in HOURLY_WEIGHTS
    ]
    scale = ROWS_PER_WEEK * _ARRIVALS_PER_CYCLE / _CYCLE / sum(weights)
    rates = tuple(weight * scale for weight in weights)
    cumulative = [0.0]
    for rate in rates:
        cumulative.append(cumulative[-1] + rate)
    return rates, tuple(cumulative)


_RATES, _CUMULATIVE = _weekly_profile()
_WEEK_ARRIVALS = _CUMULATIVE[-1]
# The busiest hour must leave every arrival room for a whole burst, one second per row.
assert 3600 / max(_RATES) >= BULK_SIZE + 1, "HOURLY_WEIGHTS peak too high"


def _arrivals_before(seconds: float) -> float:
    """Arrivals the profile expects from a Monday 00:00 UTC to ``seconds`` (< a week) later."""
    hour = min(int(seconds // 3600), 167)
    return _CUMULATIVE[hour] + (seconds - hour * 3600) * _RATES[hour] / 3600


def _seconds_at(arrivals: float) -> float:
    """The inverse: seconds after a Monday 00:00 UTC at which that many arrivals are in."""
    weeks, within = divmod(arrivals, _WEEK_ARRIVALS)
    hour = min(bisect_right(_CUMULATIVE, within) - 1, 167)
    return weeks * WEEK_S + hour * 3600 + (within - _CUMULATIVE[hour]) * 3600 / _RATES[hour]


@dataclass(frozen=True)
class _Start:
    """Where a workflow's history starts, against the week and the day."""

    at: datetime
    """The first whole second at or after ``EPOCH`` plus the workflow's number in days."""
    arrivals: float
    """Arrivals the profile puts between that week's Monday 00:00 UTC and ``at``."""
    week_s: float
    """Seconds from that Monday 00:00 UTC to ``at``."""
    midnight_us: int
    """Microseconds from ``at``'s UTC midnight to ``at`` (to number the row's day)."""


_STARTS: dict[int, tuple[datetime, _Start]] = {}


def _history_start(number: int) -> _Start:
    """Workflow ``number``'s start, cached while ``EPOCH`` stays (benchmarks move it)."""
    cached = _STARTS.get(number)
    if cached is not None and cached[0] is EPOCH:
        return cached[1]
    start = _start(EPOCH + timedelta(days=number))
    _STARTS[number] = (EPOCH, start)
    return start


def _start(first: datetime) -> _Start:
    """Rounded up to a whole second, so that every row keeps whole seconds of its own."""
    at = first.astimezone(timezone.utc)
    if at.microsecond:
        at = at.replace(microsecond=0) + timedelta(seconds=1)
    midnight = at.replace(hour=0, minute=0, second=0, microsecond=0)
    monday = midnight - timedelta(days=at.weekday())
    week_s = (at - monday).total_seconds()
    return _Start(
        at=at,
        arrivals=_arrivals_before(week_s),
        week_s=week_s,
        midnight_us=(at - midnight) // timedelta(microseconds=1),
    )


def _arrival(index: int) -> tuple[int, int]:
    """Row ``index``'s arrival, and its place in a bulk trigger's burst (-1: not in one)."""
    cycle, position = divmod(index, _CYCLE)
    first = cycle * _ARRIVALS_PER_CYCLE
    burst = position - _BULK_START
    if burst < 0:
        return first + position, -1
    if burst < BULK_SIZE:
        return first + _BULK_START, burst
    return first + position - BULK_SIZE + 1, -1


def _placement(seed: int, workflow: Workflow, index: int, row_seed: int) -> tuple[_Start, int]:
    """The history's start, and microseconds from there to row ``index``'s ``created_at``.

    An arrival owns the whole seconds from its own time up to the next arrival's; an
    ordinary row lies anywhere in there, the rows of a burst 1 to ``BULK_MAX_SPACING_S``
    seconds apart (drawn per trigger) from its beginning. Integer microseconds keep every
    row inside its own seconds, so no two rows share a second, however they are formatted.
    """
    start = _history_start(workflow.number)
    arrival, burst = _arrival(index)
    at = start.arrivals + arrival
    begin = math.floor(_seconds_at(at) - start.week_s + 1e-6)
    width = math.floor(_seconds_at(at + 1) - start.week_s + 1e-6) - begin
    jitter = row_seed * 2_654_435_761 % 2**32
    if burst < 0:
        return start, begin * _US + (jitter * width * _US >> 32)
    trigger = _splitmix64(_row_seed(seed, workflow, index // _CYCLE) ^ _BULK_SALT)
    spacing = min(1 + trigger % BULK_MAX_SPACING_S, width // BULK_SIZE)
    return start, (begin + burst * spacing) * _US + (jitter * spacing * _US >> 32)


def created_at(seed: int, workflow: Workflow, index: int) -> datetime:
    """Strictly increasing with ``index``: newest first means highest index first."""
    start, offset_us = _placement(seed, workflow, index, _row_seed(seed, workflow, index))
    return start.at + timedelta(microseconds=offset_us)


# -- incidents -----------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _incident_day(seed: int, number: int, period: int) -> int:
    """The day (0 = the history's first UTC date) of the incident in ``period``."""
    mixed = _splitmix64(_workflow_seed(seed, number) ^ period ^ _INCIDENT_SALT)
    if period == 0:
        first, last = INCIDENT_FIRST_DAYS
        return first + mixed % (last - first + 1)
    return period * INCIDENT_PERIOD_DAYS + mixed % INCIDENT_PERIOD_DAYS


def incident_dates(seed: int, workflow: Workflow, periods: int = 1) -> list[date]:
    """The UTC dates of ``workflow``'s first ``periods`` incidents (one per period of
    ``INCIDENT_PERIOD_DAYS`` from the history's first date), to check a chart against."""
    first = _history_start(workflow.number).at.date()
    return [
        first + timedelta(days=_incident_day(seed, workflow.number, period))
        for period in range(periods)
    ]


def _is_incident(seed: int, workflow: Workflow, start: _Start, offset_us: int) -> bool:
    """By UTC calendar day, not 24 hours from the start: the day a chart's bar shows."""
    day = (start.midnight_us + offset_us) // _DAY_US
    return day == _incident_day(seed, workflow.number, day // INCIDENT_PERIOD_DAYS)


def make_execution(
    seed: int,
    workflow: Workflow,
    index: int,
    *,
    timestamp_variety: bool = True,
    status: str | None = None,
) -> dict[str, Any]:
    """Row ``index`` of ``workflow``: the same dict for the same arguments, always."""
    row_seed = _row_seed(seed, workflow, index)
    start, offset_us = _placement(seed, workflow, index, row_seed)
    created = start.at + timedelta(microseconds=offset_us)
    incident = _is_incident(seed, workflow, start, offset_us)
    rng = random.Random(row_seed)
    # Drawn even when overridden, so the rest of the row is stable.
    picked = _pick_status(rng, INCIDENT_STATUS_WEIGHTS if incident else STATUS_WEIGHTS)
    status = status or picked
    fmt = _timestamp_formatter(rng, timestamp_variety)
    row: dict[str, Any] = {
        "execution_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "flow_id": workflow.id,
        "flow_name": workflow.name,
        "version_id": f"v{1 + index * 3 // 1000 % 4}",
        "status": status,
        "created_at": fmt(created),
    }
    updated = created
    if status != "queued":
        wait = rng.uniform(0.1, 5) * (INCIDENT_SLOWDOWN if incident else 1)
        started = created + timedelta(seconds=wait)
        row["started_at"] = fmt(started)
        updated = started
        if status in TERMINAL_STATUSES:
            ended = started + timedelta(seconds=_duration_s(rng, status, incident))
            row["ended_at"] = fmt(ended)
            updated = ended
        elif rng.random() < 0.5:
            row["ended_at"] = None
    row["updated_at"] = fmt(updated)
    row["api_key"] = f"user-{rng.randrange(100, 1000)}"
    row["inputs"] = {"prompt": f"a picture of thing {index}", "seed": rng.randrange(10**6)}
    row["step_results"] = _step_results(rng, workflow, status)
    if status == "completed":
        row["output"] = f"https://cdn.eachlabs.example/{row['execution_id']}.png"
        if rng.random() < 0.5:
            row["output_json"] = {"width": 1024, "height": 1024, "nsfw": False}
    row["cost"] = (
        round(rng.uniform(0.001, 0.5), 4)
        if rng.random() < 0.5
        else {"amount": round(rng.uniform(0.001, 0.5), 4), "currency": "USD"}
    )
    if rng.random() < 0.01:
        row["deleted_at"] = fmt(updated + timedelta(days=1))
    bulk = bulk_id_for(workflow, index)
    if bulk is not None:
        row["bulk_id"] = bulk
    return row


def _pick_status(rng: random.Random, weights: tuple[tuple[str, int], ...]) -> str:
    roll = rng.randrange(sum(w for _, w in weights))
    for status, weight in weights:
        if roll < weight:
            return status
        roll -= weight
    raise AssertionError("unreachable")


def _duration_s(rng: random.Random, status: str, incident: bool) -> float:
    """How long a finished run took: a mixture per status, as a real service's tail has.

    A single lognormal makes p99 a small multiple of the median; real runs are a mix of
    populations. Most completed runs take tens of seconds, a few percent minutes (big inputs,
    cold workers), 2 % a quarter of an hour. Failures mostly come fast (bad input, an early
    step erroring), some midway, and some hang until ``TIMEOUT_S``. Cancellations come at
    any time (log-uniform from seconds to half an hour). An incident slows every population
    and turns more failures into timeouts.
    """
    roll = rng.random()
    if status == "completed":
        if roll < 0.90:
            seconds = rng.lognormvariate(_LOG_30S, 0.5)
        elif roll < 0.98:
            seconds = rng.lognormvariate(_LOG_4MIN, 0.6)
        else:
            seconds = rng.lognormvariate(_LOG_15MIN, 0.5)
    elif status == "failed":
        fast, midway = (0.45, 0.85) if incident else (0.6, 0.95)
        if roll < fast:
            seconds = rng.lognormvariate(_LOG_4S, 0.8)
        elif roll < midway:
            seconds = rng.lognormvariate(_LOG_40S, 0.7)
        else:
            return TIMEOUT_S + rng.uniform(0, 2)
    else:
        seconds = math.exp(rng.uniform(_LOG_2S, _LOG_30MIN))
    if incident:
        seconds *= INCIDENT_SLOWDOWN
    return min(seconds, TIMEOUT_S)


_LOG_2S, _LOG_4S, _LOG_30S, _LOG_40S = (math.log(s) for s in (2, 4, 30, 40))
_LOG_4MIN, _LOG_15MIN, _LOG_30MIN = (math.log(s) for s in (240, 900, 1800))


def _step_results(rng: random.Random, workflow: Workflow, status: str) -> Any:
    steps = [{"step": f"step-{i + 1}", "status": "completed"} for i in range(rng.randrange(1, 4))]
    if status == "failed":
        steps[-1]["status"] = "failed"
    if workflow.step_results_as_list:
        return steps
    return {s["step"]: {"status": s["status"]} for s in steps}


def _timestamp_formatter(rng: random.Random, variety: bool) -> Any:
    """One wire format per row: the forms a real service mixes (see eachlabs-api.md)."""
    choice = rng.randrange(100) if variety else 0
    if choice < 55:
        return lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
    if choice < 65:
        return lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    if choice < 73:
        return lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if choice < 78:
        return lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "789Z"
    if choice < 84:
        return lambda t: t.astimezone(timezone(timedelta(hours=2))).isoformat()
    if choice < 89:
        return lambda t: t.astimezone(timezone(-timedelta(hours=5, minutes=30))).strftime(
            "%Y-%m-%dT%H:%M:%S.%f%z"
        )
    if choice < 94:
        return lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return lambda t: t.strftime("%Y-%m-%d %H:%M:%SZ")
