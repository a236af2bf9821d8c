"""The front door: ``load_executions`` resolves settings once, pages, normalises, and either
returns a DataFrame or streams into the Parquet lake.

Imports ``config``, ``transport``, ``schema``, ``storage``, ``lake`` and ``errors``; nothing
imports it but the package root and the CLI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, overload

import pandas as pd
import pyarrow.fs as pafs

from .codec import NULL
from .config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_PAGE_SIZE,
    DEFAULT_TIMEOUT_S,
    Timeout,
    normalize_bulk_id,
    resolve_settings,
    validate_workflow_id,
)
from .errors import InvalidRequestError
from .lake import LakeWriter
from .pagination import ColumnBuffer, Page
from .result import LoadResult
from .schema import drop_duplicate_executions, normalize_columns, warn_unparseable
from .storage import resolve_location
from .transport import EachlabsClient

logger = logging.getLogger("eachlabs_loader")

CHUNK_ROWS = 5_000
"""Rows normalised at a time when streaming into the lake (memory stays bounded)."""


@overload
def load_executions(
    workflow_id: str,
    bulk_id: str | None = ...,
    *,
    api_key: str | None = ...,
    base_url: str | None = ...,
    page_size: int = ...,
    max_retries: int = ...,
    timeout: Timeout = ...,
    concurrency: int = ...,
    output: None = ...,
    progress: bool = ...,
    allow_insecure: bool = ...,
    filesystem: pafs.FileSystem | None = ...,
) -> pd.DataFrame: ...


@overload
def load_executions(
    workflow_id: str,
    bulk_id: str | None = ...,
    *,
    api_key: str | None = ...,
    base_url: str | None = ...,
    page_size: int = ...,
    max_retries: int = ...,
    timeout: Timeout = ...,
    concurrency: int = ...,
    output: Any,
    progress: bool = ...,
    allow_insecure: bool = ...,
    filesystem: pafs.FileSystem | None = ...,
) -> LoadResult: ...


def load_executions(
    workflow_id: str,
    bulk_id: str | None = None,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    concurrency: int = DEFAULT_CONCURRENCY,
    output: Any = None,
    progress: bool = False,
    allow_insecure: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> pd.DataFrame | LoadResult:
    """Every execution of a workflow, exactly once: as a typed DataFrame, or into a lake.

    Args:
        workflow_id: the workflow's UUID or slug.
        bulk_id: only executions started by this bulk trigger (a UUID).
        api_key: defaults to the ``EACHLABS_API_KEY`` environment variable.
        base_url: the API root, defaults to ``EACHLABS_BASE_URL`` or
            ``https://workflows.eachlabs.run/api/v1``.
        page_size: rows per request (the API's ``limit``), 1..100.
        max_retries: retries per request for transient failures (429, 5xx, network).
        timeout: seconds, or a ``(connect, read)`` pair.
        concurrency: pages in flight at once (default 8); 1 is a plain sequential scan.
            Pages overlap and are checked for gaps, so the result stays exact while new
            executions arrive; a 429 shrinks the pool for everyone (see README).
        output: a directory or URI (``s3://bucket/lake``...): write the Parquet lake there
            (see ``write_executions``) and return a ``LoadResult`` instead of a DataFrame.
        progress: reserved for a progress bar; only False is supported so far.
        allow_insecure: allow plain ``http://`` to a non-loopback host (sends the key in clear).
        filesystem: an explicit ``pyarrow.fs.FileSystem`` for ``output``.

    Returns:
        One row per execution (columns and dtypes as in ``schema.COLUMNS``), or, with
        ``output``, a ``LoadResult`` with the counts of what was fetched and written.

    Raises:
        InvalidRequestError: bad input, before any request (or an HTTP 400).
        AuthenticationError: no key, or HTTP 401/403.
        WorkflowNotFoundError: HTTP 404.
        APIError: any other failure once retries are spent.
        SchemaMismatchError: the output holds files with incompatible column types.

    Example:
        >>> from eachlabs_loader.sandbox import Sandbox
        >>> with Sandbox(rows=120) as sb:
        ...     df = load_executions(sb.workflows[0].slug, base_url=sb.base_url,
        ...                          api_key=sb.api_key)
        >>> len(df)
        120
    """
    workflow_id = validate_workflow_id(workflow_id)
    bulk_id = normalize_bulk_id(bulk_id)
    settings = resolve_settings(
        api_key,
        base_url,
        page_size=page_size,
        max_retries=max_retries,
        timeout=timeout,
        concurrency=concurrency,
        allow_insecure=allow_insecure,
    )
    _reject_unsupported(progress=progress)
    writer = None if output is None else LakeWriter(resolve_location(output, filesystem))
    with EachlabsClient(settings) as client:
        if writer is None:
            return fetch_executions(client, workflow_id, bulk_id)
        return export_executions(client, workflow_id, bulk_id, writer=writer)


def fetch_executions(
    client: EachlabsClient, workflow_id: str, bulk_id: str | None = None
) -> pd.DataFrame:
    """``load_executions`` on a client you hold (shared connections, a custom session or policy).

    Inputs are validated here too, so nothing malformed reaches the network. The frame's
    ``attrs["eachlabs"]`` holds the ``LoadResult`` (pages, re-fetches, totals).
    """
    load = _Load(client, workflow_id, bulk_id)
    frames = list(load.frames(CHUNK_ROWS))
    frame = drop_duplicate_executions(pd.concat(frames, ignore_index=True)) if frames else None
    if frame is None or frame.empty:
        frame = normalize_columns({"execution_id": []})
    result = load.finish(rows=len(frame))
    result.rows_returned = len(frame)
    frame.attrs["eachlabs"] = result
    return frame


def export_executions(
    client: EachlabsClient,
    workflow_id: str,
    bulk_id: str | None = None,
    *,
    writer: LakeWriter,
    chunk_rows: int = CHUNK_ROWS,
) -> LoadResult:
    """Stream a workflow's executions into the lake, ``chunk_rows`` at a time."""
    load = _Load(client, workflow_id, bulk_id)
    for frame in load.frames(chunk_rows):
        writer.add(frame)
    written = writer.close()
    result = load.finish(rows=load.rows_fetched)
    for name in ("output", "rows_written", "rows_inserted", "rows_updated"):
        setattr(result, name, getattr(written, name))
    result.partitions_touched, result.files_written = (
        written.partitions_touched,
        written.files_written,
    )
    return result


class _Load:
    """One workflow's scan: pages in, normalised chunks out, counts and one INFO line."""

    def __init__(self, client: EachlabsClient, workflow_id: str, bulk_id: str | None) -> None:
        self.client = client
        self.workflow_id = validate_workflow_id(workflow_id)
        self.bulk_id = normalize_bulk_id(bulk_id)
        self.scan = client.scan(self.workflow_id, self.bulk_id)
        self.rows_fetched = 0
        self.unparseable: dict[str, int] = {}
        self._started = time.monotonic()
        self._requests, self._retries = client.stats.requests, client.stats.retries

    def frames(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """Contract frames of about ``chunk_rows`` rows, normalised while later pages load."""
        chunk = ColumnBuffer(fill=NULL)
        previous: Page | None = None
        for page in self.scan:
            chunk.extend(_without_repeats(previous, page))
            self.rows_fetched += len(page)
            previous = page
            if len(chunk) >= chunk_rows:
                yield self._normalize(chunk)
                chunk = ColumnBuffer(fill=NULL)
        if len(chunk):
            yield self._normalize(chunk)
        warn_unparseable(self.unparseable)

    def _normalize(self, chunk: ColumnBuffer) -> pd.DataFrame:
        return normalize_columns(chunk.columns, bulk_id=self.bulk_id, unparseable=self.unparseable)

    def finish(self, *, rows: int) -> LoadResult:
        stats, throttle = self.scan.stats, self.client.throttle
        result = LoadResult(
            rows_fetched=self.rows_fetched,
            requests=self.client.stats.requests - self._requests,
            retries=self.client.stats.retries - self._retries,
            pages=stats.pages,
            pages_refetched=stats.pages_refetched,
            gaps_repaired=stats.gaps_repaired,
            total_count_start=stats.total_count_start,
            total_count_end=stats.total_count_end,
            concurrency=self.scan.effective_concurrency,
            lowest_concurrency=min(self.scan.effective_concurrency, throttle.lowest_limit),
            elapsed_s=time.monotonic() - self._started,
        )
        logger.info(
            "loaded %d executions of workflow %r: %d pages (%d re-fetched), %d requests, "
            "%d retries, total_count %s->%s, %.2fs",
            rows,
            self.workflow_id,
            result.pages,
            result.pages_refetched,
            result.requests,
            result.retries,
            result.total_count_start,
            result.total_count_end,
            result.elapsed_s,
        )
        return result


def _without_repeats(previous: Page | None, page: Page) -> dict[str, list[Any]]:
    """``page``'s columns minus rows identical to the same execution in ``previous``.

    Neighbouring pages overlap on purpose (see ``parallel``); dropping the repeats here
    saves normalising them twice. A repeated execution that changed in between is kept:
    the newest ``updated_at`` wins later, as for any duplicate.
    """
    if previous is None:
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


def _reject_unsupported(*, progress: Any) -> None:
    """Options reserved for later features fail loudly rather than being ignored."""
    if progress is not False:
        raise InvalidRequestError(f"progress={progress!r} is not supported yet; only False")
