"""Paging over the live, newest-first list: the arithmetic, the stop rule, the page shape.

Pure: works on plain dicts and a ``fetch_page(offset) -> Page`` callable; never imports
``transport`` or ``requests``. Imports only ``errors``.

The rules (see shared/eachlabs-api.md):
- next offset = offset sent + rows received (the response's ``offset``/``limit`` are hints);
- the scan ends on a short or empty page, never because ``total_count`` was reached;
- a server that keeps returning full pages of rows already seen ends in ``PaginationError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import InvalidResponseError, PaginationError, describe_location

MAX_STALE_PAGES = 5
"""Consecutive full pages without a new ``execution_id`` before paging gives up."""


@dataclass(frozen=True)
class Page:
    """One page of the list, with the request that produced it."""

    offset: int
    limit: int
    rows: list[dict[str, Any]]
    total_count: int | None

    @property
    def is_last(self) -> bool:
        """A short or empty page ends the scan."""
        return is_last_page(len(self.rows), self.limit)


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
    if not isinstance(body, dict):
        raise InvalidResponseError(f"expected a JSON object, got {type(body).__name__}")
    rows = body.get("executions")
    if rows is None and "executions" in body:
        rows = []  # some servers send null for an empty list
    if not isinstance(rows, list):
        raise InvalidResponseError("the response has no 'executions' list")
    for position, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidResponseError(f"execution #{position} of the page is not a JSON object")
        execution_id = row.get("execution_id")
        if not isinstance(execution_id, str) or not execution_id:
            raise InvalidResponseError(f"execution #{position} of the page has no execution_id")
    return Page(offset=offset, limit=limit, rows=rows, total_count=_total_count(body))


def _total_count(body: dict[str, Any]) -> int | None:
    """``total_count`` is only a hint: a missing or nonsensical one is dropped, not fatal."""
    total = body.get("total_count")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        return None
    return total


def iter_pages(
    fetch_page: Callable[[int], Page],
    *,
    limit: int,
    start_offset: int = 0,
    workflow_id: str | None = None,
) -> Iterator[Page]:
    """Fetch pages from ``start_offset`` until a short or empty one.

    ``workflow_id`` only names the workflow in the error raised when paging stalls.
    """
    offset = start_offset
    seen: set[str] = set()
    stale_pages = 0
    while True:
        page = fetch_page(offset)
        yield page
        if page.is_last:
            return
        ids = {row["execution_id"] for row in page.rows}
        stale_pages = 0 if ids - seen else stale_pages + 1
        seen |= ids
        if stale_pages >= MAX_STALE_PAGES:
            raise PaginationError(
                f"{describe_location(workflow_id, offset)}: the API returned {stale_pages} full "
                "pages in a row holding only executions already seen; stopping instead of looping",
                workflow_id=workflow_id,
                offset=offset,
            )
        offset = next_offset(offset, len(page.rows))
