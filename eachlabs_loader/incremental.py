"""Incremental runs: where a run may stop reading.

The list is newest first and finished executions do not change, so after a load only two
kinds of rows can differ from what the lake holds: rows created since (above the
high-water mark) and rows that were still running or queued. The workflow's state
(``state.WorkflowState``) records both; the next run pages from offset 0 and stops after
the first page that reaches below ``stop_before``: the high-water mark minus a look-back
(late writes) or the oldest open execution, whichever is older.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from .errors import InvalidRequestError
from .pagination import Page, ScanStats, StallDetector
from .parallel import MIN_ROUND_TRIP_S
from .schema import parse_timestamps
from .state import WorkflowState, to_iso

logger = logging.getLogger("eachlabs_loader")

DEEP_FACTOR = 2
"""An incremental run pages sequentially; deeper than this many rounds of a concurrent full
scan, the full scan wins (BENCHMARKS.md, incremental runs)."""
DEFAULT_LOOKBACK = timedelta(hours=1)
"""Rows created up to this long before the newest row seen are read again (late writes)."""
MAX_LOOKBACK = timedelta(days=3650)
ORDER_TOLERANCE = timedelta(seconds=1)
"""Timestamps of one list may come at different precisions (``...:05Z`` beside ``...:05.7Z``):
rows this close are not an order violation, and the scan stops only this far past its bound."""


def validate_lookback(lookback: object) -> timedelta:
    """A ``timedelta`` or seconds, zero or more."""
    if isinstance(lookback, timedelta):
        value = lookback
    elif isinstance(lookback, (int, float)) and not isinstance(lookback, bool):
        if not -1 < lookback / 86_400 <= MAX_LOOKBACK.days:  # NaN and inf fail too
            raise InvalidRequestError(
                f"lookback must be between 0 and {MAX_LOOKBACK.days} days, got {lookback!r}"
            )
        value = timedelta(seconds=lookback)
    else:
        raise InvalidRequestError(
            f"lookback must be a timedelta or seconds, got {type(lookback).__name__}"
        )
    if not timedelta(0) <= value <= MAX_LOOKBACK:
        raise InvalidRequestError(
            f"lookback must be between 0 and {MAX_LOOKBACK.days} days, got {lookback!r}"
        )
    return value


@dataclass
class IncrementalScan:
    """Pages from offset 0 until the run has passed its state's ``stop_before``.

    Args:
        head: the workflow's scan; its ``linked_pages`` (overlapping, checked, fetched one
            at a time) are read, so rows moving between requests are not skipped.
        load_state: flow_id -> (state, None) or (None, why it cannot be used).
        full_scan: a fresh full scan (concurrent), used when there is no usable state, or
            when the state says the run would page so deep that the concurrent full scan
            is faster (more than ``DEEP_FACTOR`` times its rounds of ``concurrency`` pages).
        lookback: see ``DEFAULT_LOOKBACK``.

    After iteration, ``incremental`` says whether the run stopped early (or could have),
    ``fallback`` why it read everything instead, ``state`` the state it started from.
    Rows arrive newest first; if they turn out not to (a created_at newer than an older
    row's, or a first page older than what the last run saw), the bound means nothing, and
    the scan reads on to the end of the list.
    """

    head: Any
    load_state: Callable[[str], tuple[WorkflowState | None, str | None]]
    full_scan: Callable[[], Iterable[Page]]
    lookback: timedelta
    workflow_id: str | None = None
    concurrency: int = 1
    limit: int = 100
    incremental: bool = False
    fallback: str | None = None
    state: WorkflowState | None = None
    _scan: Any = None

    def __post_init__(self) -> None:
        self._scan = self.head

    @property
    def stats(self) -> ScanStats:
        return self._scan.stats  # type: ignore[no-any-return]

    @property
    def effective_concurrency(self) -> int:
        return self._scan.effective_concurrency  # type: ignore[no-any-return]

    @property
    def waiting(self) -> bool:
        """Would the next page keep the consumer waiting (see ``ConcurrentScan``)?"""
        return bool(getattr(self._scan, "waiting", False))

    def __iter__(self) -> Iterator[Page]:
        pages = self.head.linked_pages()
        started = time.perf_counter()
        first = next(pages, None)
        round_trip = time.perf_counter() - started
        if first is None:
            return
        flows = [f for f in first.columns.get("flow_id", []) if isinstance(f, str) and f]
        if not flows:
            self.incremental = not len(first)  # an empty workflow: nothing more to read
            yield first
            if len(first):
                self._fall_back("the first page names no flow_id")
                yield from pages
            return
        self.state, why = self.load_state(flows[0])
        why = why or self._too_deep(first, round_trip)
        if self.state is None or why is not None:
            self._fall_back(why or "no state", level=_level(self.state))
            self._scan = self.full_scan()
            yield from self._scan
            return
        self.incremental = True
        yield from self._head(first, pages)

    def _head(self, first: Page, pages: Iterator[Page]) -> Iterator[Page]:
        """Pages until one reaches below the bound; all of them if the order is broken."""
        assert self.state is not None
        bound = self.state.stop_before(self.lookback)
        # However the timestamps look, the run reads at least as many rows as the list grew
        # by since the last run: new rows sit at the head, even if a stray created_at (a
        # clock far ahead) made the mark overshoot them.
        grown = self.state.rows_added(first.total_count)
        order = _NewestFirst()
        page: Page | None = first
        while page is not None:
            created, _ = parse_timestamps(page.columns.get("created_at", [None] * len(page)))
            why = order.violation(page, created)
            if why is None and page is first:
                why = self._not_at_the_head(created)
            if why is not None:
                self._fall_back(why)
                yield page
                yield from pages
                return
            yield page
            oldest = order.oldest
            below = bound is not None and oldest is not None and oldest < bound - ORDER_TOLERANCE
            if below and page.offset + len(page) > grown:
                return
            page = next(pages, None)

    def _not_at_the_head(self, created: pd.Series) -> str | None:
        """Why the first page cannot be the list's head: its newest row is older than the
        newest one seen last time."""
        assert self.state is not None
        newest, mark = created.max(), self.state.high_water_mark
        if mark is None or pd.isna(newest) or newest >= mark - self.lookback - ORDER_TOLERANCE:
            return None
        return (
            f"the first page's newest execution ({newest.isoformat()}) is older than the "
            f"newest one the last run saw ({to_iso(mark)}): the list is not newest first "
            "(or its head was deleted)"
        )

    def _too_deep(self, first: Page, round_trip: float) -> str | None:
        """Why a sequential read down to the oldest open execution would be the slower way."""
        if self.state is None or self.concurrency <= 1 or first.total_count is None:
            return None
        if round_trip < MIN_ROUND_TRIP_S:
            return None  # the full scan would page sequentially too: nothing to gain
        depth = self.state.pages_to_read(first.total_count, self.limit)
        rounds = math.ceil(first.total_count / self.limit / self.concurrency)
        if depth is None or depth <= DEEP_FACTOR * rounds:
            return None
        return (
            f"the oldest open execution is about {depth} pages deep; a full load of "
            f"{first.total_count} rows, {self.concurrency} pages at a time, is faster"
        )

    def _fall_back(self, why: str, level: int = logging.WARNING) -> None:
        self.incremental = False
        self.fallback = why
        logger.log(
            level,
            "workflow %r: incremental run falls back to a full load: %s",
            self.workflow_id,
            why,
        )


class _NewestFirst:
    """Watches that rows come newest first, and knows the oldest ``created_at`` read."""

    def __init__(self) -> None:
        self.oldest: datetime | None = None
        self._recent = StallDetector()  # what the last pages held

    def violation(self, page: Page, created: pd.Series) -> str | None:
        """Why ``page`` shows the list is not newest first (None: it does not)."""
        for execution_id, when in zip(page.ids, created.tolist(), strict=True):
            if pd.isna(when) or self._recent.seen(execution_id):
                continue  # a row shifted down by an insert at the head, seen already
            if self.oldest is not None and when > self.oldest + ORDER_TOLERANCE:
                return (
                    f"the list is not newest first (execution {execution_id!r} at offset "
                    f"{page.offset} is newer than rows before it)"
                )
            self.oldest = when if self.oldest is None else min(self.oldest, when)
        self._recent.record(page.ids, page.offset)
        return None


def _level(state: WorkflowState | None) -> int:
    """A missing or unusable state is worth a WARNING; choosing the faster way, INFO."""
    return logging.WARNING if state is None else logging.INFO
