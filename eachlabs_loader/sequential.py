"""The sequential scan: one page after another, each request sent as early as it can be.

Each request goes out as soon as the answer before it has arrived, so the server works while
this side decodes and the caller consumes: the next page's request before this page is
handed over, the one after it (guessing it starts where a page as full as this one would
end, within ``total_count``) before that page is even decoded. Still one request in flight
at a time, each sent after the previous answer, as in a plain sequential scan, so the scan
is exact while the list grows (inserts give duplicates, never holes); a wrong guess is
dropped unread. The paging rules are ``pagination``'s.
"""

from __future__ import annotations

from collections.abc import Iterator

from .pagination import (
    ListEnd,
    Page,
    PageRequest,
    RequestPage,
    ScanStats,
    StallDetector,
    next_offset,
)


def iter_pages(
    request_page: RequestPage,
    *,
    limit: int,
    start_offset: int = 0,
    workflow_id: str | None = None,
    stats: ScanStats | None = None,
    lookahead: bool = True,
) -> Iterator[Page]:
    """Pages from ``start_offset`` to the end of the list (see ``pagination.ListEnd``).

    ``stats`` counts the pages that arrive; ``lookahead=False`` sends each request only
    when its page is asked for.
    """
    offset, end, short = start_offset, ListEnd(limit), None
    stalls = StallDetector(workflow_id)
    ahead = _Lookahead(request_page, enabled=lookahead)
    try:
        while True:
            page = ahead.take(offset)
            if stats is not None:
                stats.count(page)
            new = stalls.is_new(page.ids)
            if short is not None and end.learn(short, page, brought_new_rows=new):
                if page.ids:
                    yield page  # rows already seen: harmless, and de-duplicated downstream
                return
            if end.ends(page):
                yield page
                return
            short = None if end.is_full(page) else page
            stalls.record(page.ids, offset)
            if stalls.stalled:
                yield page
                raise stalls.error()
            offset = next_offset(offset, len(page))
            ahead.prepare(offset, _guess(page, offset, short, stalls))
            yield page
    finally:
        ahead.drop()  # the caller stopped early, or failed: drop what is on its way


def _guess(page: Page, offset: int, short: Page | None, stalls: StallDetector) -> int | None:
    """Where the page after ``offset`` should start; only while pages come full, new and
    within the list's count."""
    guess = offset + len(page)
    if short is not None or stalls.stale_pages:
        return None
    if page.total_count is not None and guess >= page.total_count:
        return None
    return guess


class _Lookahead:
    """The one request a sequential scan may have on its way, and the guess after it."""

    def __init__(self, request_page: RequestPage, *, enabled: bool) -> None:
        self._request_page = request_page
        self._enabled = enabled
        self._offset: int | None = None
        self._request: PageRequest | None = None
        self._guess: int | None = None

    def take(self, offset: int) -> Page:
        """The page at ``offset``: the request on its way if it is that one, else a new one.

        As soon as its answer is in (a success), the guessed next request goes out, before
        this page is decoded.
        """
        if self._request is None or self._offset != offset:
            self.drop()
            return self._request_page(offset).result()
        request, self._request = self._request, None
        if request.wait() and self._guess is not None:
            self._send(self._guess)  # a failed answer is retried first, with no guess out
        return request.result()

    def prepare(self, offset: int, guess: int | None) -> None:
        """Send the request for ``offset`` now, unless the guess already did."""
        if self._enabled and (self._request is None or self._offset != offset):
            self.drop()  # the guess was wrong
            self._send(offset)
        self._guess = guess

    def drop(self) -> None:
        if self._request is not None:
            self._request.cancel()
            self._request = None

    def _send(self, offset: int) -> None:
        self._offset, self._request = offset, self._request_page(offset).send(early=True)
