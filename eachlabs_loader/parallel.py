"""Concurrent paging that stays exact while the list changes under it.

The list is newest first and live: an insert at the head shifts every later row one offset
down, so pages fetched at different moments are cut from differently shifted lists. Fetched
in parallel, a page can come from a list shifted *less* than its predecessor's, and the rows
between them are silently skipped. So pages are planned to overlap their neighbour by
``overlap`` rows, and the chain is checked as it is consumed, in offset order: two
neighbouring pages must share at least one ``execution_id``. A pair that does not is a
possible hole; it is bridged by paging sequentially from the earlier page's offset (inserts
only push rows further down, so nothing after that page can be above it) until a page meets
the later one. A chain whose every link shares a row, ending in the list's last page, holds
every row that existed from start to end, whatever was inserted or deleted meanwhile.

Pure paging logic over ``fetch_page(offset) -> Page``; imports ``pagination`` and ``errors``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn

from .errors import PaginationError, describe_location
from .pagination import MAX_STALE_PAGES, Page, iter_pages

logger = logging.getLogger("eachlabs_loader")

MIN_ROUND_TRIP_S = 0.005
"""A first page faster than this (a local API) is paged sequentially: threads only add
contention once decoding, not waiting, is the bottleneck (BENCHMARKS.md, scenario cpu)."""
PREFETCH_PAGES = 64
"""Pages fetched ahead of the consumer, so normalising a chunk does not stall the pool."""
MAX_BRIDGE_PAGES = 1_000
"""Sequential pages one bridge may take before paging gives up (a list moving too fast)."""


@dataclass
class ScanStats:
    """What a scan saw and what it had to repair."""

    pages: int = 0
    pages_refetched: int = 0
    gaps_repaired: int = 0
    total_count_start: int | None = None
    total_count_end: int | None = None


def default_overlap(limit: int) -> int:
    """Rows shared by neighbouring pages: 10% of a page, at least one."""
    return max(1, limit // 10)


class ConcurrentScan:
    """Pages of one listing, fetched ``concurrency`` at a time, yielded as a verified chain.

    Args:
        fetch_page: one page at an offset (retries included).
        limit: rows requested per page.
        concurrency: pages in flight at once; 1 gives a plain sequential scan.
        overlap: rows shared by planned neighbours (default ``default_overlap``).
        workflow_id: only names the workflow in errors.
        min_round_trip_s: below this first-page round trip the scan stays sequential
            (default ``MIN_ROUND_TRIP_S``).
    """

    def __init__(
        self,
        fetch_page: Callable[[int], Page],
        *,
        limit: int,
        concurrency: int,
        overlap: int | None = None,
        workflow_id: str | None = None,
        min_round_trip_s: float | None = None,
    ) -> None:
        self.fetch_page = fetch_page
        self.limit = limit
        self.concurrency = concurrency
        self.overlap = default_overlap(limit) if overlap is None else overlap
        self.workflow_id = workflow_id
        self.min_round_trip_s = MIN_ROUND_TRIP_S if min_round_trip_s is None else min_round_trip_s
        self.effective_concurrency = concurrency
        self.stats = ScanStats()
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[Page]:
        if self.concurrency == 1:
            yield from self._plain(0)
            return
        started = time.perf_counter()
        first = self._fetch(0)
        round_trip = time.perf_counter() - started
        self.stats.total_count_start = first.total_count
        yield first
        if first.is_last:
            return
        if round_trip < self.min_round_trip_s:
            # The API answers faster than a page can be decoded: the client is the bottleneck
            # and threads would only contend for the interpreter. Page on, sequentially.
            self.effective_concurrency = 1
            yield from self._plain(len(first))
            return
        # The server may page in smaller steps than asked: plan with what it really sends.
        size = min(self.limit, len(first))
        stride = size - self.overlap
        if self.concurrency > 1 and first.total_count is not None and stride >= 1:
            tail = yield from self._planned(first, stride, first.total_count)
        else:
            tail = first
        yield from self._sequential(tail)

    def _plain(self, start_offset: int) -> Iterator[Page]:
        """The plain sequential scan (``pagination.iter_pages``)."""
        pages = iter_pages(
            self._fetch, limit=self.limit, start_offset=start_offset, workflow_id=self.workflow_id
        )
        for page in pages:
            if self.stats.total_count_start is None:
                self.stats.total_count_start = page.total_count
            yield page

    def _fetch(self, offset: int) -> Page:
        page = self.fetch_page(offset)
        with self._lock:
            self.stats.pages += 1
            if page.total_count is not None:
                self.stats.total_count_end = page.total_count
        return page

    def _planned(self, first: Page, stride: int, total: int) -> Iterator[Page]:
        """The pages ``total_count`` announces, in parallel; returns the last page of the chain."""
        offsets = iter(range(stride, total, stride))
        prev = first
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="eachlabs-page") as pool:
            window: deque[Future[Page]] = deque()

            def refill() -> None:
                for offset in offsets:
                    window.append(pool.submit(self._fetch, offset))
                    if len(window) >= max(4 * self.concurrency, PREFETCH_PAGES):
                        return

            refill()
            try:
                while window:
                    page = window.popleft().result()
                    refill()
                    if not _linked(prev, page):
                        if self._position(page) <= self._position(prev):
                            # Fetched after the list grew past it: rows already read or new.
                            yield page
                            continue
                        prev = yield from self._bridge(prev, page)  # a hole: re-read it
                        if prev.is_last:
                            return prev
                        if not _linked(prev, page):
                            yield page
                            continue
                    yield page
                    prev = page
                    if prev.is_last:
                        return prev
            finally:
                for future in window:
                    future.cancel()
        return prev

    def _sequential(self, prev: Page) -> Iterator[Page]:
        """Overlapping pages one at a time until the list's last page."""
        stale = 0
        while not prev.is_last:
            page = self._fetch(self._now_at(prev) + max(1, len(prev) - self.overlap))
            if not _linked(prev, page):
                prev = yield from self._bridge(prev, page)
                if prev.is_last:
                    return
            stale = stale + 1 if set(page.ids) <= set(prev.ids) else 0
            if stale >= MAX_STALE_PAGES:
                self._raise_stalled(page.offset)
            yield page
            prev = page

    def _position(self, page: Page) -> int:
        """Where ``page`` starts in the list as it was when the scan began (inserts undone)."""
        start, total = self.stats.total_count_start, page.total_count
        if start is None or total is None:
            return page.offset
        return page.offset - (total - start)

    def _now_at(self, page: Page) -> int:
        """Where ``page`` starts now: its offset moved by the growth of the list since.

        Inserts only push rows down and ``total_count`` counts each one, so this never
        overshoots; deletions shrink the total and move the estimate up, which is safe too.
        """
        latest = self.stats.total_count_end
        if page.total_count is None or latest is None:
            return page.offset
        return max(0, page.offset + latest - page.total_count)

    def _bridge(self, prev: Page, target: Page) -> Iterator[Page]:
        """Re-fetch sequentially from where ``prev`` is now until a page meets ``target``.

        Returns the last page fetched. Nothing between ``prev`` and ``target`` can be above
        ``prev``'s current position (see ``_now_at``), and paging forward under inserts
        leaves no hole, so the bridge is complete.
        """
        self.stats.gaps_repaired += 1
        logger.debug(
            "%s: pages at offsets %d and %d share no execution (the list moved); re-fetching",
            describe_location(self.workflow_id, None),
            prev.offset,
            target.offset,
        )
        # Start where prev's last rows are now: one page usually spans the hole.
        offset = self._now_at(prev) + max(0, len(prev) - self.overlap)
        last, target_ids = prev, set(target.ids)
        target_end = self._position(target) + len(target)
        for _ in range(MAX_BRIDGE_PAGES):
            page = self._fetch(offset)
            self.stats.pages_refetched += 1
            if last is prev and not _linked(prev, page) and offset > prev.offset:
                offset = prev.offset  # the estimate went past prev: start from its old place
                continue
            yield page
            met = not target_ids.isdisjoint(page.ids)
            if met or page.is_last or self._position(page) >= target_end:
                return page
            offset, last = self._now_at(page) + max(1, len(page) - self.overlap), page
        self._raise_stalled(offset)

    def _raise_stalled(self, offset: int) -> NoReturn:
        raise PaginationError(
            f"{describe_location(self.workflow_id, offset)}: paging makes no progress (the "
            "API keeps returning executions already seen, or the list moves faster than "
            "it can be read); stopping instead of looping",
            workflow_id=self.workflow_id,
            offset=offset,
        )


def _linked(prev: Page, page: Page) -> bool:
    """Neighbouring pages are linked when they share a row (or the earlier one ended the list)."""
    return prev.is_last or not set(prev.ids).isdisjoint(page.ids)
