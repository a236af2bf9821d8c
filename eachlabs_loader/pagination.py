"""Paging over the live, newest-first list: the arithmetic, the stop rule, the page shape.

Pure: works on plain Python values and a ``fetch_page(offset) -> Page`` callable; never
imports ``transport`` or ``requests``. Imports only ``errors``.

The rules (see shared/eachlabs-api.md):
- next offset = offset sent + rows received (the response's ``offset``/``limit`` are hints);
- the scan ends on an empty page, or on a short page that no hint contradicts: if the
  response's ``limit`` (the applied page size) or ``total_count`` says more rows exist, one
  more request settles it. Hints can extend a scan, never end one (``total_count`` can be
  capped and goes stale while the list grows);
- a server that keeps returning full pages of rows already seen ends in ``PaginationError``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import InvalidResponseError, PaginationError, describe_location

MAX_STALE_PAGES = 5
"""Consecutive pages without a new ``execution_id`` before paging gives up."""


@dataclass(frozen=True)
class Page:
    """One page of the list, column by column, with the request that produced it.

    ``columns`` maps each field to its values (all lists of the same length, the ``key``
    field, ``execution_id`` by default, always present); a field a row lacks is None there.
    """

    offset: int
    limit: int
    columns: dict[str, list[Any]]
    total_count: int | None
    applied_limit: int | None = None
    key: str = "execution_id"

    @classmethod
    def from_rows(
        cls,
        offset: int,
        limit: int,
        rows: list[dict[str, Any]],
        total_count: int | None = None,
        applied_limit: int | None = None,
    ) -> Page:
        return cls(offset, limit, columns_from_rows(rows), total_count, applied_limit)

    @property
    def ids(self) -> list[str]:
        return self.columns[self.key]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The page as row dicts (for inspection; loads work on the columns)."""
        names = list(self.columns)
        return [
            dict(zip(names, values, strict=True))
            for values in zip(*self.columns.values(), strict=True)
        ]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_last(self) -> bool:
        """By this page alone: empty, or short with no hint that more rows exist.

        Scans use ``ListEnd``, which also knows what earlier pages taught.
        """
        received = len(self)
        if received == 0 or not is_last_page(received, self.limit):
            return received == 0
        if self.applied_limit is not None and received >= self.applied_limit:
            return False  # the server pages in smaller steps than we asked for
        return self.total_count is None or self.offset + received >= self.total_count


def columns_from_rows(
    rows: list[dict[str, Any]], key: str = "execution_id"
) -> dict[str, list[Any]]:
    """Row dicts to columns: every key seen, in first-seen order, None where a row lacks it."""
    names: dict[str, None] = {key: None}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in rows] for name in names}


class ColumnBuffer:
    """Pages' columns appended end to end; a field a page lacks is ``fill`` there."""

    def __init__(self, fill: Any = None, key: str = "execution_id") -> None:
        self.columns: dict[str, list[Any]] = {key: []}
        self.size = 0
        self._fill = fill
        self._key = key

    def extend(self, columns: dict[str, list[Any]]) -> None:
        added = len(columns[self._key])
        for name, values in columns.items():
            column = self.columns.get(name)
            if column is None:
                column = self.columns[name] = [self._fill] * self.size
            column.extend(values)
        self.size += added
        for column in self.columns.values():
            if len(column) < self.size:
                column.extend([self._fill] * (self.size - len(column)))

    def __len__(self) -> int:
        return self.size


def next_offset(offset_sent: int, rows_received: int) -> int:
    """Where the next page starts: trust what arrived, not what the response claims."""
    return offset_sent + rows_received


def is_last_page(rows_received: int, limit: int) -> bool:
    """True when the page came back short (or empty): the list has no more rows."""
    return rows_received < limit


def parse_executions_page(body: Any, *, offset: int, limit: int) -> Page:
    """Check the decoded JSON of a list-executions response and wrap it in a ``Page``.

    Raises:
        InvalidResponseError: the body is not ``{"executions": [{...}, ...], ...}`` or a row
            has no ``execution_id`` (retryable: proxies garble bodies).
    """
    rows = _checked_rows(body, "executions", "execution", "execution_id")
    return Page.from_rows(
        offset,
        limit,
        rows,
        total_count=read_hint(body.get("total_count"), minimum=0),
        applied_limit=read_hint(body.get("limit"), minimum=1),
    )


def parse_workflows_page(body: Any, *, offset: int, limit: int) -> Page:
    """Check a list-workflows response (``{"workflows": [{...}], "offset": next, ...}``).

    The response's ``offset`` is the vendor's next start: a hint like any other, unused.
    """
    rows = _checked_rows(body, "workflows", "workflow", "workflow_id")
    columns = columns_from_rows(rows, key="workflow_id")
    total = read_hint(body.get("total_count"), minimum=0)
    return Page(offset, limit, columns, total, key="workflow_id")


def _checked_rows(body: Any, field: str, noun: str, key: str) -> list[dict[str, Any]]:
    """``body[field]``: a list of objects, each with a non-empty string ``key``."""
    if not isinstance(body, dict):
        raise InvalidResponseError(f"expected a JSON object, got {type(body).__name__}")
    rows = body.get(field)
    if rows is None and field in body:
        rows = []  # some servers send null for an empty list
    if not isinstance(rows, list):
        raise InvalidResponseError(f"the response has no {field!r} list")
    for position, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidResponseError(f"{noun} #{position} of the page is not a JSON object")
        value = row.get(key)
        if not isinstance(value, str) or not value:
            raise InvalidResponseError(f"{noun} #{position} of the page has no {key}")
    return rows


def read_hint(value: Any, *, minimum: int) -> int | None:
    """A count from the response; a missing or nonsensical one is dropped, not fatal."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return None
    return value


class ListEnd:
    """Decides, page by page, whether the list has ended; learns the host's real page size.

    A page with ``limit`` rows is full. A shorter one ends the list unless a hint says more
    rows exist (``Page.is_last``); then one more page settles it: if it brings rows, the
    short page was simply the host's page size (pages of that size count as full from then
    on, whatever a capped ``total_count`` says); if it brings nothing new, the list ended and
    the hint was wrong.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.host_size: int | None = None

    def is_full(self, page: Page) -> bool:
        received = len(page)
        return received >= self.limit or (self.host_size is not None and received >= self.host_size)

    def ends(self, page: Page) -> bool:
        """True when nothing can follow ``page`` (no more requests are needed)."""
        if len(page) == 0:
            return True
        return not self.is_full(page) and page.is_last

    def learn(self, short: Page, following: Page, *, brought_new_rows: bool) -> bool:
        """After a hint-extended short page: True if the scan must stop (nothing new came)."""
        if not brought_new_rows:
            return True
        if len(short) < self.limit and len(following) >= len(short):
            self.host_size = len(short)
        return False


class PendingPage(Protocol):
    """A page requested but not read yet: ``wait()`` receives the answer (True: a success),
    ``result()`` makes it a ``Page`` (decoding, retries), ``cancel()`` drops it."""

    def wait(self) -> bool: ...

    def result(self, before_retry: Callable[[], None] | None = None) -> Page: ...

    def cancel(self) -> None: ...


def iter_pages(
    fetch_page: Callable[[int], Page],
    *,
    limit: int,
    start_offset: int = 0,
    workflow_id: str | None = None,
    start_page: Callable[[int], PendingPage] | None = None,
) -> Iterator[Page]:
    """Fetch pages from ``start_offset`` to the end of the list (see ``ListEnd``).

    Stalls are detected against the ids of the last few pages only, so memory stays bounded
    however long the list: a server that keeps answering with the same rows is caught,
    ``MAX_STALE_PAGES`` pages after it starts. ``workflow_id`` only names the workflow in
    the error.

    With ``start_page``, each request goes out as soon as the answer before it has arrived,
    so the server works while this side decodes and the caller consumes: the next page's
    request before this page is handed over, the one after it (guessing it starts where a
    page as full as this one would end, within ``total_count``) before that page is even
    decoded. Still one request in flight at a time, each sent after the previous answer,
    as in a plain sequential scan; a wrong guess is dropped unread.
    """
    offset = start_offset
    end = ListEnd(limit)
    recent: deque[set[str]] = deque(maxlen=MAX_STALE_PAGES + 1)
    stale_pages = 0
    short: Page | None = None  # the previous page, if it was short and a hint made us go on
    pending: tuple[int, PendingPage] | None = None
    guess: int | None = None  # where the page after the pending one should start
    try:
        while True:
            if pending is not None and pending[0] == offset:
                waiting, pending = pending[1], None
                if waiting.wait() and start_page is not None and guess is not None:
                    pending = (guess, start_page(guess))  # a failed answer is retried first

                def drop_guess() -> None:  # a retry needs the slot the guess holds
                    nonlocal pending
                    _cancel(pending)
                    pending = None

                page = waiting.result(before_retry=drop_guess)
            else:
                _cancel(pending)
                pending = None
                page = fetch_page(offset)
            ids = set(page.ids)
            new = bool(ids) and not all(any(i in s for s in recent) for i in ids)
            if short is not None and end.learn(short, page, brought_new_rows=new):
                if ids:
                    yield page  # rows already seen: harmless, and de-duplicated downstream
                return
            if end.ends(page):
                yield page
                return
            short = None if end.is_full(page) else page
            stale_pages = 0 if new else stale_pages + 1
            recent.append(ids)
            if stale_pages >= MAX_STALE_PAGES:
                yield page
                raise PaginationError(
                    f"{describe_location(workflow_id, offset)}: the API returned {stale_pages} "
                    "pages in a row holding only executions already seen; stopping instead of "
                    "looping",
                    workflow_id=workflow_id,
                    offset=offset,
                )
            offset = next_offset(offset, len(page))
            if start_page is not None:
                if pending is not None and pending[0] != offset:
                    _cancel(pending)  # the guess was wrong
                    pending = None
                if pending is None:
                    pending = (offset, start_page(offset))
                # Guess only while pages come full, new and within the list's count.
                guess = offset + len(page)
                if (
                    short is not None
                    or stale_pages
                    or (page.total_count is not None and guess >= page.total_count)
                ):
                    guess = None
            yield page
    finally:
        _cancel(pending)  # the caller stopped early, or failed: drop what is on its way


def _cancel(pending: tuple[int, PendingPage] | None) -> None:
    if pending is not None:
        pending[1].cancel()
