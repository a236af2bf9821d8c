"""The front door: ``load_executions`` resolves settings once, pages, and normalises.

Imports ``config``, ``transport``, ``schema`` and ``errors``; nothing imports it but the
package root and the CLI.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

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
from .schema import normalize_executions
from .transport import EachlabsClient

logger = logging.getLogger("eachlabs_loader")


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
) -> pd.DataFrame:
    """Every execution of a workflow, exactly once, as a typed DataFrame.

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
        output: reserved for writing a Parquet dataset; only None is supported so far.
        progress: reserved for a progress bar; only False is supported so far.
        allow_insecure: allow plain ``http://`` to a non-loopback host (sends the key in clear).

    Returns:
        One row per execution; columns and dtypes as in ``schema.COLUMNS`` (see README).

    Raises:
        InvalidRequestError: bad input, before any request (or an HTTP 400).
        AuthenticationError: no key, or HTTP 401/403.
        WorkflowNotFoundError: HTTP 404.
        APIError: any other failure once retries are spent.

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
    _reject_unsupported(concurrency=settings.concurrency, output=output, progress=progress)
    with EachlabsClient(settings) as client:
        return fetch_executions(client, workflow_id, bulk_id)


def fetch_executions(
    client: EachlabsClient, workflow_id: str, bulk_id: str | None = None
) -> pd.DataFrame:
    """``load_executions`` on a client you hold (shared connections, a custom session or policy).

    Inputs are validated here too, so nothing malformed reaches the network.
    """
    workflow_id = validate_workflow_id(workflow_id)
    bulk_id = normalize_bulk_id(bulk_id)
    started = time.monotonic()
    requests_before, retries_before = client.stats.requests, client.stats.retries
    rows: list[dict[str, Any]] = []
    pages = 0
    for page in client.iter_pages(workflow_id, bulk_id):
        rows.extend(page.rows)
        pages += 1
    frame = normalize_executions(rows, bulk_id=bulk_id)
    logger.info(
        "loaded %d executions of workflow %r: %d pages, %d requests, %d retries, %.2fs",
        len(frame),
        workflow_id,
        pages,
        client.stats.requests - requests_before,
        client.stats.retries - retries_before,
        time.monotonic() - started,
    )
    return frame


def _reject_unsupported(*, concurrency: int, output: Any, progress: Any) -> None:
    """Options reserved for later features fail loudly rather than being ignored."""
    if concurrency != 1:
        raise InvalidRequestError(
            f"concurrency={concurrency} is not supported yet; only 1 (sequential paging)"
        )
    if output is not None:
        raise InvalidRequestError(
            "output= is not supported yet; load_executions returns a DataFrame "
            "(write it with DataFrame.to_parquet meanwhile)"
        )
    if progress is not False:
        raise InvalidRequestError(f"progress={progress!r} is not supported yet; only False")
