"""The front door: ``load_executions`` resolves settings once, pages, normalises, and either
returns a DataFrame or streams into the Parquet lake.

Nothing imports it but the package root and the CLI.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar, overload

import pandas as pd

from .codec import NULL
from .config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_PAGE_SIZE,
    DEFAULT_TIMEOUT_S,
    ListQuery,
    Timeout,
    normalize_bulk_id,
    resolve_settings,
    validate_workflow_id,
)
from .delta import DeltaWriter
from .errors import EachlabsError, InvalidRequestError
from .incremental import (
    DEFAULT_LOOKBACK,
    IncrementalScan,
    StateTracker,
    WorkflowState,
    parse_state,
    read_state,
    validate_lookback,
    write_state,
)
from .output import TableFormat, Writer, check_table_format, open_writer
from .pagination import ColumnBuffer, Page
from .progress import Progress
from .result import LoadResult
from .schema import drop_duplicate_executions, normalize_columns, warn_unparseable
from .storage import FileSystem
from .transport import EachlabsClient
from .workflows import exported_workflow_ids, is_all_workflows

logger = logging.getLogger("eachlabs_loader")

T = TypeVar("T")

CHUNK_ROWS = 5_000
"""Rows normalised at a time when streaming into the lake (memory stays bounded)."""
MAX_FRAME_CHUNK_ROWS = 80_000
"""A DataFrame load's chunks double from ``CHUNK_ROWS`` up to this: the first ones are
normalised while later pages load, and a big load pays each chunk's fixed cost (about 10 ms
of pandas and Arrow calls) a few times only (BENCHMARKS.md, scenario cpu)."""


OnError = Literal["raise", "skip"]
_WRITE_COUNTS = (
    "output",
    "rows_written",
    "rows_inserted",
    "rows_updated",
    "partitions_touched",
    "files_written",
    "table_version",
)


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
            executions arrive; a 429 shrinks the pool for everyone (see README).
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
            not safe (see README).
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

    Example:
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
    plan = _Plan.checked(incremental, full_refresh, lookback, lake=output is not None)
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
            if every_workflow:
                workflow_ids = exported_workflow_ids(client)
            run = _Run(client, bulk_id, on_error=on_error, progress=bar)
            if writer is None:
                return run.to_frame(workflow_ids)
            return run.to_lake(workflow_ids, writer, plan)
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
    return _Run(client, normalize_bulk_id(bulk_id)).to_frame([validate_workflow_id(workflow_id)])


def export_executions(
    client: EachlabsClient,
    workflow_id: str,
    bulk_id: str | None = None,
    *,
    writer: Writer,
) -> LoadResult:
    """Stream a workflow's executions into the lake or table held by ``writer``, then close it."""
    run = _Run(client, normalize_bulk_id(bulk_id))
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


@dataclass(frozen=True)
class _Plan:
    """How a lake load reads: incrementally (from the state files) or in full."""

    incremental: bool = False
    lookback: timedelta = DEFAULT_LOOKBACK

    @classmethod
    def checked(
        cls, incremental: object, full_refresh: object, lookback: object, *, lake: bool
    ) -> _Plan:
        """The plan the caller's options ask for, or ``InvalidRequestError``."""
        if not isinstance(incremental, bool) or not isinstance(full_refresh, bool):
            raise InvalidRequestError("incremental and full_refresh must be True or False")
        if incremental and not lake:
            raise InvalidRequestError(
                "incremental=True needs output=: the state of what was loaded lives in the dataset"
            )
        return cls(incremental and not full_refresh, validate_lookback(lookback))


class _Run:
    """One call: its workflows loaded concurrently, their failures collected, one result."""

    def __init__(
        self,
        client: EachlabsClient,
        bulk_id: str | None,
        *,
        on_error: OnError = "raise",
        progress: Progress | None = None,
    ) -> None:
        self.client, self.bulk_id, self.on_error = client, bulk_id, on_error
        self.page_size = client.settings.page_size
        self.progress = progress or Progress(False)
        self._started = time.monotonic()
        self._requests, self._retries = client.stats.requests, client.stats.retries

    def to_frame(self, workflow_ids: list[str]) -> pd.DataFrame:
        def one(workflow_id: str) -> tuple[pd.DataFrame | None, LoadResult]:
            load = _Load(self.client, self._query(workflow_id), self.progress)
            frames = list(load.frames(CHUNK_ROWS, grow_to=MAX_FRAME_CHUNK_ROWS))
            frame = pd.concat(frames, ignore_index=True) if frames else None
            return frame, load.finish(rows=0 if frame is None else len(frame))

        done, failed = self._each(workflow_ids, one)
        frames = [frame for frame, _ in done.values() if frame is not None]
        frame = drop_duplicate_executions(pd.concat(frames, ignore_index=True)) if frames else None
        if frame is None or frame.empty:
            frame = normalize_columns({"execution_id": []})
        result = self._combine({w: r for w, (_, r) in done.items()}, failed)
        result.rows_returned = len(frame)
        frame.attrs["eachlabs"] = result
        return frame

    def to_lake(
        self, workflow_ids: list[str], writer: Writer, plan: _Plan | None = None
    ) -> LoadResult:
        """Stream into the lake or table; then the data and each workflow's state land."""
        plan = plan or _Plan()
        lock = threading.Lock()
        loads: dict[str, _Load] = {}

        def one(workflow_id: str) -> LoadResult:
            load = _Load(self.client, self._query(workflow_id), self.progress, writer, plan)
            loads[workflow_id] = load
            for frame in load.frames(CHUNK_ROWS):
                with lock:
                    writer.add(frame)
            return load.finish(rows=load.rows_fetched)

        done, failed = self._each_into(writer, lock, workflow_ids, one)
        states = []
        if self.bulk_id is None:  # a bulk's rows say nothing about the rest of the workflow
            states = [s for w, r in done.items() if (s := loads[w].next_state(r)) is not None]
        with lock:
            written = _commit(writer, states, [loads[w] for w in failed if w in loads])
        result = self._combine(done, failed)
        for name in _WRITE_COUNTS:
            setattr(result, name, getattr(written, name))
        return result

    def _each_into(
        self,
        writer: Writer,
        lock: threading.Lock,
        workflow_ids: list[str],
        task: Callable[[str], LoadResult],
    ) -> tuple[dict[str, LoadResult], dict[str, EachlabsError]]:
        """``_each``; if it raises, the hive lake keeps what arrived (unless interrupted),
        a Delta table gets nothing (a failed load commits nothing)."""
        try:
            return self._each(workflow_ids, task)
        except EachlabsError:
            with lock:  # the rows that arrived are exact: kept (after a storage error: none)
                if isinstance(writer, DeltaWriter):
                    writer.abort()
                else:
                    writer.close()
            raise
        except BaseException:
            writer.abort()  # interrupted: every file stays as it was
            raise

    def _query(self, workflow_id: str) -> ListQuery:
        """The list request for a workflow id validated at the edge."""
        return ListQuery(workflow_id, self.bulk_id, self.page_size)

    def _each(
        self, workflow_ids: list[str], task: Callable[[str], T]
    ) -> tuple[dict[str, T], dict[str, EachlabsError]]:
        """Run ``task`` per workflow (concurrently when there are several)."""
        if not workflow_ids:
            return {}, {}
        if len(workflow_ids) == 1:
            return {workflow_ids[0]: task(workflow_ids[0])}, {}
        workers = min(len(workflow_ids), self.client.settings.concurrency)
        outcomes: dict[str, T | EachlabsError] = {}
        with ThreadPoolExecutor(workers, thread_name_prefix="eachlabs-workflow") as pool:
            futures = {pool.submit(task, w): w for w in workflow_ids}
            for future in as_completed(futures):
                try:
                    outcomes[futures[future]] = future.result()
                except EachlabsError as exc:
                    outcomes[futures[future]] = exc
                    logger.error("workflow %r failed: %s", futures[future], exc)
        errors = {w: o for w in workflow_ids if isinstance(o := outcomes[w], EachlabsError)}
        if errors and self.on_error == "raise":
            raise next(iter(errors.values()))
        done = {w: o for w, o in outcomes.items() if not isinstance(o, EachlabsError)}
        return done, errors

    def _combine(
        self, results: dict[str, LoadResult], failed: dict[str, EachlabsError]
    ) -> LoadResult:
        if len(results) == 1 and not failed:
            return next(iter(results.values()))
        each = list(results.values())
        starts = [r.total_count_start for r in each if r.total_count_start is not None]
        ends = [r.total_count_end for r in each if r.total_count_end is not None]
        combined = LoadResult(
            rows_fetched=sum(r.rows_fetched for r in each),
            requests=self.client.stats.requests - self._requests,
            retries=self.client.stats.retries - self._retries,
            pages=sum(r.pages for r in each),
            pages_refetched=sum(r.pages_refetched for r in each),
            gaps_repaired=sum(r.gaps_repaired for r in each),
            total_count_start=sum(starts) if starts else None,
            total_count_end=sum(ends) if ends else None,
            concurrency=max((r.concurrency for r in each), default=1),
            lowest_concurrency=min((r.lowest_concurrency for r in each), default=1),
            overlap=max((r.overlap for r in each), default=0),
            elapsed_s=time.monotonic() - self._started,
            workflows=results,
            failed={w: str(exc) for w, exc in failed.items()},
            errors=dict(failed),
            incremental=bool(each) and all(r.incremental for r in each),
            fallbacks={w: why for r in each for w, why in r.fallbacks.items()},
        )
        logger.info(
            "loaded %d workflows (%d failed): %d rows fetched, %d requests, %d retries, %.2fs",
            len(results),
            len(failed),
            combined.rows_fetched,
            combined.requests,
            combined.retries,
            combined.elapsed_s,
        )
        return combined


class _Load:
    """One workflow's scan: pages in, normalised chunks out, counts and one INFO line."""

    def __init__(
        self,
        client: EachlabsClient,
        query: ListQuery,
        progress: Progress | None = None,
        writer: Writer | None = None,
        plan: _Plan | None = None,
    ) -> None:
        self.client = client
        self.progress = progress or Progress(False)
        self.workflow_id, self.bulk_id = query.workflow_id, query.bulk_id
        self.writer = writer
        self.tracker = StateTracker() if writer is not None else None
        self.scan: Any
        if writer is None or plan is None or not plan.incremental:
            self.scan = client.scan(query)
        else:
            self.scan = IncrementalScan(
                client.scan(query),
                load_state=_state_reader(writer),
                full_scan=lambda: client.scan(query),
                lookback=plan.lookback,
                workflow_id=self.workflow_id,
                concurrency=client.settings.concurrency,
                limit=client.settings.page_size,
            )
        self.rows_fetched = 0
        self.unparseable: dict[str, int] = {}
        self._started = time.monotonic()
        self._requests, self._retries = client.stats.requests, client.stats.retries

    def frames(self, chunk_rows: int, *, grow_to: int | None = None) -> Iterator[pd.DataFrame]:
        """Contract frames of about ``chunk_rows`` rows, normalised while later pages load;
        with ``grow_to``, each chunk twice the last, up to that many rows."""
        chunk = ColumnBuffer(fill=NULL)
        previous: Page | None = None
        for page in self.scan:
            if previous is None and not getattr(self.scan, "incremental", False):
                # An incremental run reads only the head: the list's total would mislead.
                self.progress.announce(page.total_count or len(page))
            columns = _without_repeats(previous, page)
            chunk.extend(columns)
            self.progress.advance(len(columns["execution_id"]))
            self.rows_fetched += len(page)
            previous = page
            if len(chunk) >= chunk_rows:
                yield self._normalize(chunk)
                chunk = ColumnBuffer(fill=NULL)
                chunk_rows = max(chunk_rows, min(2 * chunk_rows, grow_to or 0))
        if len(chunk):
            yield self._normalize(chunk)
        warn_unparseable(self.unparseable)

    def _normalize(self, chunk: ColumnBuffer) -> pd.DataFrame:
        frame = normalize_columns(chunk.columns, bulk_id=self.bulk_id, unparseable=self.unparseable)
        if self.tracker is not None:
            self.tracker.observe(frame)
        return frame

    @property
    def flow_id(self) -> str | None:
        """The workflow's UUID as its rows say (None before the first row)."""
        return None if self.tracker is None else self.tracker.flow_id

    def next_state(self, result: LoadResult) -> Any:
        """The workflow's state once this load's rows are in the lake (None: nothing to save)."""
        if self.tracker is None or self.writer is None:
            return None
        previous = self.scan.state if isinstance(self.scan, IncrementalScan) else None
        return self.tracker.state(
            self.writer.dataset_id,
            previous if result.incremental else None,
            mode="incremental" if result.incremental else "full",
            rows_fetched=result.rows_fetched,
            requests=result.requests,
            total_count=result.total_count_end,
        )

    def finish(self, *, rows: int) -> LoadResult:
        incremental = isinstance(self.scan, IncrementalScan)
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
            overlap=stats.overlap,
            elapsed_s=time.monotonic() - self._started,
            incremental=incremental and self.scan.incremental,
            fallbacks=(
                {self.workflow_id: self.scan.fallback} if incremental and self.scan.fallback else {}
            ),
        )
        logger.info(
            "loaded %d executions of workflow %r (%s): %d pages (%d re-fetched), %d requests, "
            "%d retries, total_count %s->%s, %.2fs",
            rows,
            self.workflow_id,
            "incremental" if result.incremental else "full",
            result.pages,
            result.pages_refetched,
            result.requests,
            result.retries,
            result.total_count_start,
            result.total_count_end,
            result.elapsed_s,
        )
        return result


def _state_reader(writer: Writer) -> Callable[[str], tuple[WorkflowState | None, str | None]]:
    """Where an incremental run finds a workflow's state: a state file, or the table's log."""
    if isinstance(writer, DeltaWriter):
        delta = writer

        def from_the_log(flow_id: str) -> tuple[WorkflowState | None, str | None]:
            text = delta.read_state(flow_id)
            if text is None:
                return None, "no commit of the Delta table holds a state for the workflow"
            return parse_state(text, "state in the Delta log", flow_id, None)

        return from_the_log
    location, dataset_id = writer.location, writer.dataset_id
    return lambda flow_id: read_state(location, flow_id, dataset_id)


def _commit(writer: Writer, states: list[WorkflowState], failed: list[_Load]) -> LoadResult:
    """Make the load visible: the hive lake's files, then its state files; or one Delta
    commit holding the rows and the states, without the workflows that failed."""
    if isinstance(writer, DeltaWriter):
        writer.discard({f for load in failed if (f := load.flow_id) is not None})
        return writer.close({state.flow_id: state.to_json() for state in states})
    written = writer.close()
    for state in states:
        writer.ensure_identity()
        write_state(writer.location, state)
    return written


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
