"""Concurrent paging that stays exact while the list changes under it.

The list is newest first and live: an insert at the head shifts every later row one offset
down, so pages fetched at different moments are cut from differently shifted lists. Fetched
in parallel, a page can come from a list shifted *less* than its predecessor's, and the rows
between them are silently skipped. So pages are planned to overlap their neighbour by
``overlap`` rows (``Overlap``: as many as the list's movement needs), and the chain is
checked as it is consumed, in offset order: two
neighbouring pages must share at least one ``execution_id``. A pair that does not is a
possible hole; it is bridged by paging sequentially from the earlier page's offset (inserts
only push rows further down, so nothing after that page can be above it) until a page meets
the later one. A chain whose every link shares a row, ending in the list's last page, holds
every row that existed from start to end, whatever was inserted or deleted meanwhile.

Paging logic over ``request_page(offset) -> PageRequest`` (see ``pagination``); how much
neighbours overlap is ``overlap``'s, keeping the planned pages on the wire is ``planned``'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator

from .errors import describe_location
from .overlap import Overlap
from .pagination import ListEnd, Page, RequestPage, ScanStats, StallDetector
from .planned import PlannedPages
from .sequential import iter_pages

logger = logging.getLogger("eachlabs_loader")

MIN_ROUND_TRIP_S = 0.005
"""A first page faster than this (a local API) is paged sequentially: threads only add
contention once decoding, not waiting, is the bottleneck (BENCHMARKS.md, scenario cpu)."""
WARM_UP_FACTOR = 4
"""A first round trip this many times ``MIN_ROUND_TRIP_S`` or more is a slow API, whatever the
warm-up (a connection, lazy imports) cost; a faster one is timed again on the second page."""
MIN_CHECKED_PAGE = 10
"""Smaller pages cannot share rows with their neighbours and still advance: paged plainly."""
MAX_BRIDGE_PAGES = 1_000
"""Sequential pages one bridge may take before paging gives up (a list moving too fast)."""


class ConcurrentScan:
    """Pages of one listing, fetched ``concurrency`` at a time, yielded as a verified chain.

    Args:
        request_page: the request for the page at an offset (``pagination.PageRequest``).
        limit: rows requested per page.
        concurrency: pages in flight at once; 1 gives a plain sequential scan.
        overlap: rows shared by planned neighbours, kept whatever the list does (default:
            ``Overlap`` decides, from the list's movement).
        workflow_id: only names the workflow in errors.
        min_round_trip_s: below this first-page round trip the scan stays sequential
            (default ``MIN_ROUND_TRIP_S``).
    """

    def __init__(
        self,
        request_page: RequestPage,
        *,
        limit: int,
        concurrency: int,
        overlap: int | None = None,
        workflow_id: str | None = None,
        min_round_trip_s: float | None = None,
    ) -> None:
        self.request_page = request_page
        self.limit = limit
        self.concurrency = concurrency
        self._overlap = Overlap(limit, concurrency, overlap)
        self._end = ListEnd(limit)
        self._stalls = StallDetector(workflow_id)
        self.workflow_id = workflow_id
        self.min_round_trip_s = MIN_ROUND_TRIP_S if min_round_trip_s is None else min_round_trip_s
        self.effective_concurrency = concurrency
        self.stats = ScanStats()
        self._lock = threading.Lock()
        self._planned_pages: PlannedPages | None = None

    def __iter__(self) -> Iterator[Page]:
        if self.concurrency == 1:
            yield from self._plain(0)
            return
        first, round_trip = self._first_page()
        yield first
        if self._end.ends(first):
            return
        overlaps = self._fit_overlap(first)
        if round_trip < self.min_round_trip_s or not overlaps:
            # An API answering faster than a page decodes (the client is the bottleneck and
            # threads would only contend for the interpreter), or pages too small to overlap
            # and still move on: the plain sequential scan.
            self.effective_concurrency = 1
            yield from self._plain(len(first))
            return
        if round_trip >= WARM_UP_FACTOR * self.min_round_trip_s or not self._end.is_full(first):
            # Clearly slow, or a host paging in smaller steps than asked (a probe step from a
            # short page would not overlap it and cost a repair): plan at once, as before.
            tail = yield from self._pooled(first)
            yield from self._sequential(tail)
            return
        # A first request also pays for the connection and for warming up the client: when
        # it was not clearly slow, time a second one before choosing the pool.
        probe = self._sequential(first)
        started = time.perf_counter()
        second = next(probe, None)
        round_trip = time.perf_counter() - started
        if second is None:
            return
        yield second
        if self._end.ends(second):
            return
        if round_trip < self.min_round_trip_s:
            self.effective_concurrency = 1
            yield from self._plain(second.offset + len(second))
            return
        tail = yield from self._pooled(second)
        yield from self._sequential(tail)

    @property
    def overlap(self) -> int:
        """Rows the next planned page shares with its neighbour."""
        return self._overlap.rows

    @property
    def waiting(self) -> bool:
        """Would the next page keep its consumer waiting (a planned page not in yet)? The
        consumer can use the time (normalise what it holds)."""
        planned = self._planned_pages
        return planned is not None and not planned.ready

    def _pooled(self, prev: Page) -> Generator[Page, None, Page]:
        """The planned pages after ``prev``, if ``total_count`` plans any; returns the last."""
        if prev.total_count is None or self._end.ends(prev):
            return prev
        planned = self._planned_pages = PlannedPages(
            self.request_page,
            self._count,
            self._overlap,
            prev.offset,
            prev.total_count + 1,
            self.concurrency,
        )
        return (yield from self._planned(prev, planned))

    def linked_pages(self) -> Iterator[Page]:
        """Overlapping, checked pages one at a time from offset 0, fetched only as consumed.

        For reads that stop early (incremental runs): no page is requested ahead, and each
        page must share a row with the one before it, or the hole is re-read, so rows that
        move up (deletions) or down (inserts) between requests are never skipped.
        """
        self.effective_concurrency = 1
        first, _ = self._first_page()
        yield first
        if self._end.ends(first):
            return
        if not self._fit_overlap(first):
            yield from self._plain(len(first), lookahead=False)
            return
        yield from self._sequential(first)

    def _first_page(self) -> tuple[Page, float]:
        """Page 0 and its round trip in seconds (until the answer is in, before decoding)."""
        started = time.perf_counter()
        request = self.request_page(0).send(early=True)
        answered = request.wait()
        round_trip = time.perf_counter() - started
        first = self._count(request.result())
        if not answered:  # not sent early (no free slot), or retried: all of it
            round_trip = time.perf_counter() - started
        self.stats.total_count_start = first.total_count
        return first, round_trip

    def _fit_overlap(self, first: Page) -> bool:
        """Size the overlap to the pages the server really sends; False for pages too small
        to overlap and still move on."""
        size = self._overlap.size = min(self.limit, len(first))
        return size >= MIN_CHECKED_PAGE and size - self.overlap >= 1

    def _plain(self, start_offset: int, *, lookahead: bool = True) -> Iterator[Page]:
        """The plain sequential scan (``sequential.iter_pages``), sending early unless not
        ``lookahead``."""
        return iter_pages(
            self.request_page,
            limit=self.limit,
            start_offset=start_offset,
            workflow_id=self.workflow_id,
            stats=self.stats,
            lookahead=lookahead,
        )

    def _fetch(self, offset: int) -> Page:
        return self._count(self.request_page(offset).result())

    def _count(self, page: Page) -> Page:
        with self._lock:
            self.stats.count(page)
        self._overlap.observe(page)
        return page

    def _planned(self, first: Page, planned: PlannedPages) -> Generator[Page, None, Page]:
        """The pages ``planned`` brings, in offset order, checked as a chain after ``first``;
        returns the last page of the chain."""
        prev = first
        failed = True
        try:
            while (page := planned.next_page()) is not None:
                if self._chain_ends(prev, page) or not page.ids:
                    break  # the end, or a list now shorter than planned: the tail goes on
                if not _linked(prev, page):
                    if self._position(page) <= self._position(prev):
                        # Fetched after the list grew past it: rows already read or new.
                        yield page
                        continue
                    prev = yield from self._bridge(prev, page)  # a hole: re-read it
                    if self._end.ends(prev):
                        break
                    if not _linked(prev, page):
                        yield page
                        continue
                yield page
                prev = page
                if self._end.ends(prev):
                    break
            failed = False
        finally:
            planned.close(wait=not failed)
            self._planned_pages = None
            self.stats.overlap = self._overlap.widest
        return prev

    def _chain_ends(self, prev: Page, page: Page) -> bool:
        """Does the list end at ``prev``, now that ``page`` (its successor) is known?"""
        if self._end.ends(prev):
            return True
        if self._end.is_full(prev):
            return False
        brought_new_rows = not set(page.ids) <= set(prev.ids) and self._stalls.is_new(page.ids)
        return self._end.learn(prev, page, brought_new_rows=brought_new_rows)

    def _sequential(self, prev: Page) -> Iterator[Page]:
        """Overlapping pages one at a time until the list's last page."""
        self._stalls.record(prev.ids, prev.offset)
        while not self._end.ends(prev):
            page = self._fetch(self._now_at(prev) + self._step(prev))
            if self._chain_ends(prev, page):
                return
            if not _linked(prev, page):
                prev = yield from self._bridge(prev, page)
                if self._end.ends(prev):
                    return
            self._stalls.record(page.ids, page.offset)
            if self._stalls.stalled:
                raise self._stalls.error()
            yield page
            prev = page

    def _position(self, page: Page) -> int:
        """Where ``page`` starts in the list as it was when the scan began (inserts undone)."""
        start, total = self.stats.total_count_start, page.total_count
        if start is None or total is None:
            return page.offset
        return page.offset - (total - start)

    def _step(self, page: Page) -> int:
        """After a full page, overlap the next one; after a short one only a hint says more
        rows exist, so probe just past it: rows already seen there mean the end."""
        return max(1, len(page) - self.overlap) if self._end.is_full(page) else len(page)

    def _now_at(self, page: Page) -> int:
        """Where ``page`` starts now: its offset moved by the growth of the list since.

        Inserts only push rows down and ``total_count`` counts each one, so this never
        overshoots; deletions shrink the total and move the estimate up, which is safe too.
        """
        latest = self.stats.total_count_end
        if page.total_count is None or latest is None:
            return page.offset
        return max(0, page.offset + latest - page.total_count)

    def _bridge(self, prev: Page, target: Page) -> Generator[Page, None, Page]:
        """Re-fetch sequentially from where ``prev`` is now until a page meets ``target``.

        Returns the last page fetched. Nothing between ``prev`` and ``target`` can be above
        ``prev``'s current position (see ``_now_at``), and paging forward under inserts
        leaves no hole, so the bridge is complete.
        """
        self.stats.gaps_repaired += 1
        self._overlap.widen()
        logger.debug(
            "%s: pages at offsets %d and %d share no execution (the list moved); re-fetching",
            describe_location(self.workflow_id, None),
            prev.offset,
            target.offset,
        )
        # Start where prev's last rows are now, as far as the totals counted so far tell
        # (they can lag the list: see _aim_again); one page usually spans the hole.
        offset = self._now_at(prev) + max(0, len(prev) - self.overlap)
        last, target_ids = prev, set(target.ids)
        target_end = self._position(target) + len(target)
        stepped_back = False
        for _ in range(MAX_BRIDGE_PAGES):
            page = self._fetch(offset)
            self.stats.pages_refetched += 1
            if not self._end.is_full(last):
                if last is not prev and self._chain_ends(last, page):
                    return last  # the list ended before the target: it moved away
            elif not _linked(last, page) and offset > 0:
                offset = self._aim_again(last, page, down=not stepped_back)
                stepped_back = stepped_back or offset < page.offset
                continue
            yield page
            met = not target_ids.isdisjoint(page.ids)
            if met or self._end.ends(page) or self._position(page) >= target_end:
                return page
            offset, last, stepped_back = self._now_at(page) + self._step(page), page, False
        raise self._stalls.error(offset)

    def _aim_again(self, last: Page, missed: Page, *, down: bool) -> int:
        """Where to look next for the rows after ``last``, ``missed`` having shared none.

        A page above ``last`` whose own total is above ``last``'s (the list grew since, by
        more than the totals counted so far showed: answers are counted as they arrive, and
        a pool far ahead of a busy consumer has moved the list meanwhile) is aimed again,
        down, by that growth. Any other page steps back: one below ``last`` (rows moved up:
        deletions, or an estimate too far), an empty one, or one the totals cannot place (a
        capped count). Once a bridge has stepped back from ``last``, it only steps back (not
        ``down``): up to the head at worst, never to and fro. Only efficiency rides on the
        aim: ``_bridge`` takes no page that shares no row with ``last``, except the list's
        head, or the page after a short ``last``, where the end of the list is decided.
        """
        before, now = last.total_count, missed.total_count
        grown = before is not None and now is not None and now > before
        above = self._position(missed) + len(missed) <= self._position(last)
        if down and grown and above and missed.ids:
            wanted = self._position(last) + max(1, len(last) - self.overlap)
            return missed.offset + wanted - self._position(missed)
        return max(0, min(missed.offset, last.offset) - self.limit // 2)


def _linked(prev: Page, page: Page) -> bool:
    """Neighbouring pages are linked when they share a row: nothing can hide between them."""
    return not set(prev.ids).isdisjoint(page.ids)
