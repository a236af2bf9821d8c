"""Paging over the live, newest-first list: the arithmetic, the stop rule, the page shape.

Pure: plain Python values in, decisions out (the scans that use them are ``sequential`` and
``parallel``); ``PageRequest`` is the shape of a page asked for.

The rules (see shared/eachlabs-api.md):
- next offset = offset sent + rows received (the response's ``offset``/``limit`` are hints);
- the scan ends on an empty page, or on a short page that no hint contradicts: if the
  response's ``limit`` (the applied page size) or ``total_count`` says more rows exist, one
  more request settles it. Hints can extend a scan, never end one (``total_count`` can be
  capped and goes stale while the list grows);
- a server that keeps returning full pages of rows already seen ends in ``PaginationError``
  (``StallDetector``, shared by every scan).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
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


def drop_repeated_rows(previous: Page | None, page: Page) -> dict[str, list[Any]]:
    """``page``'s columns minus rows identical to the same execution in ``previous``.

    Neighbouring pages of a checked scan overlap on purpose (see ``parallel``); dropping
    the repeats saves normalising them twice. A repeated execution that changed in between is kept:
    the newest ``updated_at`` wins later, as for any duplicate.
    """
    if previous is None or set(previous.ids).isdisjoint(page.ids):
        return page.columns
    seen = {execution_id: i for i, execution_id in enumerate(previous.ids)}
    names = [n for n in page.columns if n in previous.columns]
    repeats = [
        j
        for j, execution_id in enumerate(page.ids)
        if execution_id in seen
        and len(names) == len(page.columns)
        and all(previous.columns[n][seen[execution_id]] == page.columns[n][j] for n in names)
    ]
    if not repeats:
        return page.columns
    if repeats == list(range(len(repeats))):  # the usual case: the first rows of the page
        return {name: values[len(repeats) :] for name, values in page.columns.items()}
    drop = set(repeats)
    keep = [j for j in range(len(page)) if j not in drop]
    return {name: [values[j] for j in keep] for name, values in page.columns.items()}


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


class PageRequest(Protocol):
    """A page asked for (``transport.Request`` is the one implementation): ``send()`` puts
    it on the wire now (``early``: only if a throttle slot is free), ``wait()`` receives the
    answer (True: a success status), ``parsed()`` decodes a success without ever retrying
    (None when it does not decode: ``result()`` retries then), ``result()`` makes it a
    ``Page`` (decoding, retries) and releases everything, ``cancel()`` drops it."""

    def send(self, *, early: bool = False) -> PageRequest: ...

    def wait(self) -> bool: ...

    def parsed(self) -> Page | None: ...

    def result(self) -> Page: ...

    def cancel(self) -> None: ...


RequestPage = Callable[[int], PageRequest]
"""Where a scan's pages come from: the request for the page at an offset (not yet sent)."""


@dataclass
class ScanStats:
    """What a scan saw and what it had to repair."""

    pages: int = 0
    pages_refetched: int = 0
    gaps_repaired: int = 0
    total_count_start: int | None = None
    total_count_end: int | None = None
    overlap: int = 0
    """The most rows planned neighbouring pages shared (0: no pages were planned)."""

    def count(self, page: Page) -> Page:
        """Note a page that arrived (the totals move while the list grows)."""
        self.pages += 1
        if page.total_count is not None:
            if self.total_count_start is None:
                self.total_count_start = page.total_count
            self.total_count_end = page.total_count
        return page


class StallDetector:
    """The one looping-server check of every scan: a server that keeps answering with rows
    already seen is caught ``MAX_STALE_PAGES`` pages after it starts.

    Only the ids of the last few pages are kept, so memory stays bounded however long the
    list; ``workflow_id`` only names the workflow in the error.
    """

    def __init__(self, workflow_id: str | None = None, limit: int = MAX_STALE_PAGES) -> None:
        self.workflow_id = workflow_id
        self.limit = limit
        self.stale_pages = 0
        self._recent: deque[set[str]] = deque(maxlen=limit + 1)
        self._offset: int | None = None

    def seen(self, execution_id: str) -> bool:
        """Was this row on one of the last pages (shifted down by an insert, say)?"""
        return any(execution_id in ids for ids in self._recent)

    def is_new(self, ids: list[str]) -> bool:
        """Does a page with these ids bring a row the last pages did not?"""
        return bool(ids) and not all(self.seen(i) for i in ids)

    def record(self, ids: list[str], offset: int) -> None:
        """Remember a page; ``PaginationError`` once ``limit`` pages in a row brought
        nothing new (raised after the page is recorded, so callers may yield it first)."""
        self.stale_pages = 0 if self.is_new(ids) else self.stale_pages + 1
        self._recent.append(set(ids))
        self._offset = offset

    @property
    def stalled(self) -> bool:
        return self.stale_pages >= self.limit

    def error(self, offset: int | None = None) -> PaginationError:
        """The error for a scan that makes no progress (at ``offset``, or the last page's)."""
        offset = self._offset if offset is None else offset
        return PaginationError(
            f"{describe_location(self.workflow_id, offset)}: paging makes no progress (the "
            "API keeps returning executions already seen, or the list moves faster than it "
            "can be read); stopping instead of looping",
            workflow_id=self.workflow_id,
            offset=offset,
        )
