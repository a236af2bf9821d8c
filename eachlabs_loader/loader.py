"""The front door: ``load_executions`` checks its inputs and resolves settings once, then
hands the load to a ``run.Run``: a DataFrame back, or a lake or Delta table written.

Nothing imports it but the package root and the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, overload

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
from .incremental import DEFAULT_LOOKBACK, validate_lookback
from .output import TableFormat, Writer, check_table_format, open_writer
from .progress import Progress
from .result import LoadResult
from .run import OnError, Run
from .storage import FileSystem
from .transport import EachlabsClient
from .workflow_load import Plan
from .workflows import is_all_workflows, iter_exported_workflow_ids


@overload
def load_executions(
    workflow_id: str | Sequence[str],
    bulk_id: str | None = ...,
    *,
    api_key: str | None = ...,
    base_url: str | None = ...,
    page_size: int = ...,
    max_retries: int = ...,
    timeout: Timeout = ...,
    concurrency: int = ...,
    output: None = ...,
    progress: bool | None = ...,
    allow_insecure: bool = ...,
    filesystem: FileSystem | None = ...,
    on_error: OnError = ...,
    incremental: bool = ...,
    full_refresh: bool = ...,
    lookback: timedelta | float = ...,
    table_format: TableFormat = ...,
) -> pd.DataFrame: ...


@overload
def load_executions(
    workflow_id: str | Sequence[str],
    bulk_id: str | None = ...,
    *,
    api_key: str | None = ...,
    base_url: str | None = ...,
    page_size: int = ...,
    max_retries: int = ...,
    timeout: Timeout = ...,
    concurrency: int = ...,
    output: Any,
    progress: bool | None = ...,
    allow_insecure: bool = ...,
    filesystem: FileSystem | None = ...,
    on_error: OnError = ...,
    incremental: bool = ...,
    full_refresh: bool = ...,
    lookback: timedelta | float = ...,
    table_format: TableFormat = ...,
) -> LoadResult: ...


def load_executions(
    workflow_id: str | Sequence[str],
    bulk_id: str | None = None,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    concurrency: int = DEFAULT_CONCURRENCY,
    output: Any = None,
    progress: bool | None = None,
    allow_insecure: bool = False,
    filesystem: FileSystem | None = None,
    on_error: OnError = "raise",
    incremental: bool = False,
    full_refresh: bool = False,
    lookback: timedelta | float = DEFAULT_LOOKBACK,
    table_format: TableFormat = "parquet",
) -> pd.DataFrame | LoadResult:
    """Every execution of one or more workflows, exactly once: a typed DataFrame, or a lake.

    Args:
        workflow_id: a workflow's UUID or slug, or a list of them (loaded concurrently under
            the one ``concurrency`` limit, into one DataFrame or one dataset), or
            ``ALL_WORKFLOWS``: every active or archived workflow (see ``load_workflows``).
        bulk_id: only executions started by this bulk trigger (a UUID).
        api_key: defaults to the ``EACHLABS_API_KEY`` environment variable.
        base_url: the API root, defaults to ``EACHLABS_BASE_URL`` or
            ``https://workflows.eachlabs.run/api/v1``.
        page_size: rows per request (the API's ``limit``), 1..100.
        max_retries: retries per request for transient failures (429, 5xx, network).
        timeout: seconds, or a ``(connect, read)`` pair.
        concurrency: requests in flight at most (default 8); 1 is a plain sequential scan.
            Pages overlap and are checked for gaps, so the result stays exact while new
            executions arrive; a 429 shrinks the pool for everyone (docs: Troubleshooting).
        output: a directory or URI (``s3://bucket/lake``...): write the Parquet lake there
            (see ``write_executions``) and return a ``LoadResult`` instead of a DataFrame.
        table_format: with ``output``, ``"parquet"`` (default): the hive lake;
            ``"delta"``: a Delta table, every workflow of the load in one commit (appended
            when the table holds none of its rows, else MERGEd by ``execution_id``; needs
            ``pip install 'eachlabs-loader[delta]'``).
        progress: a progress bar on stderr; None (default) shows it only where someone
            watches (a terminal, a notebook).
        allow_insecure: allow plain ``http://`` to a non-loopback host (sends the key in clear).
        filesystem: an explicit ``pyarrow.fs.FileSystem`` for ``output``.
        on_error: with several workflows, ``"raise"`` (default) raises the first failure
            once the others are done; ``"skip"`` returns what succeeded and lists the
            failures in the result's ``failed``.
        incremental: with ``output``, read only what changed since the dataset's last load
            of each workflow (new executions and those still open then), using the state
            files in ``{output}/_state/`` (a Delta table: its commits); falls back to a full
            load, with a WARNING and the reason in the result's ``fallbacks``, when that is
            not safe (docs: Incremental runs).
        full_refresh: load everything even with ``incremental`` (the state is rewritten).
        lookback: an incremental run re-reads executions created up to this long (a
            ``timedelta`` or seconds, default 1 hour) before the newest one it knew.

    Returns:
        One row per execution (columns and dtypes as in ``schema.COLUMNS``; the
        ``LoadResult`` in ``frame.attrs["eachlabs"]``), or, with ``output``, the
        ``LoadResult`` of what was fetched and written.

    Raises:
        InvalidRequestError: bad input, before any request (``BadRequestError``, a subclass:
            the API answered HTTP 400).
        AuthenticationError: no key, or HTTP 401/403 (or a proxy's 407).
        WorkflowNotFoundError: HTTP 404.
        TLSError: the API's certificate cannot be trusted (raised at once, not retried).
        APIError: any other failure once retries are spent.
        StorageError: the output cannot be read or written (nothing of it was changed).
        SchemaMismatchError: the output holds files with incompatible column types
            (nothing was changed).

    Examples:
        >>> from eachlabs_loader.sandbox import Sandbox
        >>> with Sandbox(rows=120) as sb:
        ...     df = load_executions(sb.workflows[0].slug, base_url=sb.base_url,
        ...                          api_key=sb.api_key)
        >>> len(df)
        120
    """
    every_workflow = is_all_workflows(workflow_id)
    workflow_ids = [] if every_workflow else _workflow_ids(workflow_id)
    bulk_id = normalize_bulk_id(bulk_id)
    plan = _plan(incremental, full_refresh, lookback, lake=output is not None)
    table_format = check_table_format(table_format)
    if output is None and table_format != "parquet":
        raise InvalidRequestError(f"table_format={table_format!r} needs output= (a path or URI)")
    if incremental and bulk_id is not None:
        raise InvalidRequestError(
            "incremental loads follow a whole workflow; leave bulk_id out (a bulk is loaded "
            "in full, cheaply, without it)"
        )
    if on_error not in ("raise", "skip"):
        raise InvalidRequestError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if progress not in (None, True, False):
        raise InvalidRequestError(f"progress must be True, False or None, got {progress!r}")
    settings = resolve_settings(
        api_key,
        base_url,
        page_size=page_size,
        max_retries=max_retries,
        timeout=timeout,
        concurrency=concurrency,
        allow_insecure=allow_insecure,
    )
    writer = None if output is None else open_writer(output, table_format, filesystem)
    try:
        with EachlabsClient(settings) as client, Progress(progress) as bar:
            client.retry_listeners.append(bar.note_retry)
            workflows = iter_exported_workflow_ids(client) if every_workflow else workflow_ids
            run = Run(client, bulk_id, on_error=on_error, progress=bar)
            if writer is None:
                return run.to_frame(workflows)
            return run.to_lake(workflows, writer, plan)
    except BaseException:
        if writer is not None:  # e.g. listing the workflows failed: a Delta load's scratch
            writer.abort()
        raise


def fetch_executions(
    client: EachlabsClient, workflow_id: str, bulk_id: str | None = None
) -> pd.DataFrame:
    """``load_executions`` on a client you hold (shared connections, a custom session or policy).

    Inputs are validated here too, so nothing malformed reaches the network. The frame's
    ``attrs["eachlabs"]`` holds the ``LoadResult`` (pages, re-fetches, totals).
    """
    return Run(client, normalize_bulk_id(bulk_id)).to_frame([validate_workflow_id(workflow_id)])


def export_executions(
    client: EachlabsClient,
    workflow_id: str,
    bulk_id: str | None = None,
    *,
    writer: Writer,
) -> LoadResult:
    """Stream a workflow's executions into the lake or table held by ``writer``, then close it."""
    run = Run(client, normalize_bulk_id(bulk_id))
    return run.to_lake([validate_workflow_id(workflow_id)], writer)


def _workflow_ids(workflow_id: str | Sequence[str]) -> list[str]:
    if isinstance(workflow_id, str):
        return [validate_workflow_id(workflow_id)]
    if not isinstance(workflow_id, Sequence) or not workflow_id:
        raise InvalidRequestError(
            "workflow_id must be a workflow UUID or slug, or a non-empty list of them"
        )
    if any(is_all_workflows(w) for w in workflow_id):
        raise InvalidRequestError("ALL_WORKFLOWS stands alone, not in a list of workflows")
    ids = [validate_workflow_id(w) for w in workflow_id]
    if len(set(ids)) != len(ids):
        raise InvalidRequestError("workflow_id lists a workflow more than once")
    return ids


def _plan(incremental: object, full_refresh: object, lookback: object, *, lake: bool) -> Plan:
    """The plan the caller's options ask for, or ``InvalidRequestError``."""
    if not isinstance(incremental, bool) or not isinstance(full_refresh, bool):
        raise InvalidRequestError("incremental and full_refresh must be True or False")
    if incremental and not lake:
        raise InvalidRequestError(
            "incremental=True needs output=: the state of what was loaded lives in the dataset"
        )
    return Plan(incremental and not full_refresh, validate_lookback(lookback))
