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
from .lake import LakeWriter, LoadResult
from .schema import normalize_executions
from .storage import resolve_location
from .transport import EachlabsClient

logger = logging.getLogger("eachlabs_loader")

CHUNK_ROWS = 10_000
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
        concurrency: pages fetched at once; only 1 (sequential) is supported so far.
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
    _reject_unsupported(concurrency=settings.concurrency, progress=progress)
    writer = None if output is None else LakeWriter(resolve_location(output, filesystem))
    with EachlabsClient(settings) as client:
        if writer is None:
            return fetch_executions(client, workflow_id, bulk_id)
        return export_executions(client, workflow_id, bulk_id, writer=writer)


def fetch_executions(
    client: EachlabsClient, workflow_id: str, bulk_id: str | None = None
) -> pd.DataFrame:
    """``load_executions`` on a client you hold (shared connections, a custom session or policy).

    Inputs are validated here too, so nothing malformed reaches the network.
    """
    workflow_id = validate_workflow_id(workflow_id)
    bulk_id = normalize_bulk_id(bulk_id)
    with _LoadLog(client, workflow_id) as log:
        rows = [row for page in log.pages(client.iter_pages(workflow_id, bulk_id)) for row in page]
        frame = normalize_executions(rows, bulk_id=bulk_id)
        log.rows = len(frame)
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
    workflow_id = validate_workflow_id(workflow_id)
    bulk_id = normalize_bulk_id(bulk_id)
    fetched = 0
    with _LoadLog(client, workflow_id) as log:
        chunk: list[dict[str, Any]] = []
        for rows in log.pages(client.iter_pages(workflow_id, bulk_id)):
            chunk.extend(rows)
            fetched += len(rows)
            if len(chunk) >= chunk_rows:
                writer.add(normalize_executions(chunk, bulk_id=bulk_id))
                chunk = []
        writer.add(normalize_executions(chunk, bulk_id=bulk_id))
        result = writer.close()
        log.rows = fetched
    result.rows_fetched = fetched
    result.requests, result.retries = log.requests, log.retries
    return result


class _LoadLog:
    """Counts one load's pages, requests and retries, and logs the one INFO line."""

    def __init__(self, client: EachlabsClient, workflow_id: str) -> None:
        self.client, self.workflow_id = client, workflow_id
        self.rows = self.page_count = self.requests = self.retries = 0

    def __enter__(self) -> _LoadLog:
        self._started = time.monotonic()
        self._requests0, self._retries0 = self.client.stats.requests, self.client.stats.retries
        return self

    def pages(self, pages: Iterator[Any]) -> Iterator[list[dict[str, Any]]]:
        for page in pages:
            self.page_count += 1
            yield page.rows

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.requests = self.client.stats.requests - self._requests0
        self.retries = self.client.stats.retries - self._retries0
        if exc_type is None:
            logger.info(
                "loaded %d executions of workflow %r: %d pages, %d requests, %d retries, %.2fs",
                self.rows,
                self.workflow_id,
                self.page_count,
                self.requests,
                self.retries,
                time.monotonic() - self._started,
            )


def _reject_unsupported(*, concurrency: int, progress: Any) -> None:
    """Options reserved for later features fail loudly rather than being ignored."""
    if concurrency != 1:
        raise InvalidRequestError(
            f"concurrency={concurrency} is not supported yet; only 1 (sequential paging)"
        )
    if progress is not False:
        raise InvalidRequestError(f"progress={progress!r} is not supported yet; only False")
