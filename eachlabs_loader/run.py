"""One call's workflows: scanned, their rows normalised together, into a DataFrame or a writer.

``Run`` is what ``load_executions`` does once its inputs are checked: each workflow's scan
(``workflow_load.WorkflowLoad``) yields its pages' columns; ``pipeline`` brings the pieces
of every workflow to this thread, where they are normalised in batches (``RowBatch``),
watched by each workflow's ``StateTracker`` and handed to the sink: kept for one DataFrame
at the end, or added to the lake's or the table's writer as they come (memory stays
bounded). Then the failures are collected, the data and the states land, and one
``LoadResult`` sums it up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import pandas as pd
import pyarrow as pa

from .config import ListQuery
from .errors import EachlabsError
from .output import Landing, Writer
from .pipeline import Columns, Event, Finished, PageFeed, Piece, RowBatch, inline_events
from .progress import Progress
from .result import LoadResult
from .schema import arrow_to_frame, normalize_columns, unique_executions, warn_unparseable
from .state import TrackedRows
from .transport import EachlabsClient
from .workflow_load import Plan, WorkflowLoad

logger = logging.getLogger("eachlabs_loader")

CHUNK_ROWS = 5_000
"""Rows normalised at a time when streaming into the lake (memory stays bounded)."""
MAX_FRAME_CHUNK_ROWS = 80_000
"""A DataFrame load's batches double from ``CHUNK_ROWS`` up to this: the first ones are
normalised while later pages load, and a big load pays each batch's fixed cost (a few ms
of Arrow calls) a few times only (BENCHMARKS.md, scenario cpu)."""
MIN_IDLE_ROWS = 1_000
"""Rows are normalised as soon as this many wait and the next page is not in yet (of any
workflow, or of a concurrent scan): the consumer would otherwise sit idle, the lake can write
the workflows that have finished, and little is left to do after the last answer."""

OnError = Literal["raise", "skip"]
Ranges = list[tuple["WorkflowLoad", int, int]]
"""Which rows of a batch are whose: ``(load, start, stop)``."""
Sink = Callable[[pa.Table, Ranges], None]
"""Where a normalised batch goes (the DataFrame's parts, or the lake's writer)."""
_WRITE_COUNTS = (
    "output",
    "rows_written",
    "rows_inserted",
    "rows_updated",
    "partitions_touched",
    "files_written",
    "table_version",
)


class Run:
    """One call: its workflows scanned concurrently, their rows normalised together, their
    failures collected, one result."""

    def __init__(
        self,
        client: EachlabsClient,
        bulk_id: str | None,
        *,
        on_error: OnError = "raise",
        progress: Progress | None = None,
    ) -> None:
        self.client, self.bulk_id, self.on_error = client, bulk_id, on_error
        self.progress = progress or Progress(False)
        self._started = time.monotonic()
        self._requests, self._retries = client.stats.requests, client.stats.retries

    def to_frame(self, workflow_ids: Iterable[str]) -> pd.DataFrame:
        """Every execution of the workflows, one row each, in one DataFrame (without the
        rows of a workflow that failed, with ``on_error="skip"``)."""
        batches: list[tuple[pa.Table, Ranges]] = []

        def keep(table: pa.Table, ranges: Ranges) -> None:
            batches.append((table, ranges))

        loads = self._stream(workflow_ids, keep, grow_to=MAX_FRAME_CHUNK_ROWS)
        done, failed = self._outcomes(loads)
        tables = [_without(table, ranges, failed.values()) for table, ranges in batches]
        if tables:
            table = pa.concat_tables(tables, promote_options="default")
            frame = arrow_to_frame(unique_executions(table))
        else:
            frame = normalize_columns({"execution_id": []})
        result = self._combine({w: load.result for w, load in done.items()}, failed)
        result.rows_returned = len(frame)
        frame.attrs["eachlabs"] = result
        return frame

    def to_lake(
        self, workflow_ids: Iterable[str], writer: Writer, plan: Plan | None = None
    ) -> LoadResult:
        """Stream into the lake or table; then the data and each workflow's state land."""
        plan = plan or Plan()
        landing = Landing(writer, with_states=self.bulk_id is None)

        def add(table: pa.Table, ranges: Ranges) -> None:
            writer.add(table)

        try:
            loads = self._stream(workflow_ids, add, plan=plan, landing=landing)
        except BaseException:
            # The workflows list, the output or this process failed (or was interrupted):
            # the load cannot be complete, so every file stays as it was.
            landing.abort()
            raise
        try:
            done, failed = self._outcomes(loads)
        except EachlabsError:
            landing.keep_rows()
            raise
        written = landing.commit({f for load in failed.values() if (f := load.flow_id)})
        result = self._combine({w: load.result for w, load in done.items()}, failed)
        for name in _WRITE_COUNTS:
            setattr(result, name, getattr(written, name))
        return result

    def _stream(
        self,
        workflow_ids: Iterable[str],
        sink: Sink,
        *,
        plan: Plan | None = None,
        landing: Landing | None = None,
        grow_to: int = CHUNK_ROWS,
    ) -> list[WorkflowLoad]:
        """Scan every workflow and hand their normalised rows to ``sink``, batch by batch;
        returns the workflows' loads (each ``finished`` or ``failed``)."""
        writer = None if landing is None else landing.writer
        single = isinstance(workflow_ids, list) and len(workflow_ids) == 1
        loads = (
            WorkflowLoad(self.client, self._query(w), self.progress, writer, plan, index=n)
            for n, w in enumerate(workflow_ids)
        )
        feed: PageFeed[WorkflowLoad] | None = None
        idle: Callable[[], bool]
        if single:
            only = next(loads)  # scanned in this thread: nothing to hand over
            events, idle = inline_events(only, _pieces), lambda: only.waiting
        else:
            feed = PageFeed(loads, _pieces, workers=self.client.settings.concurrency)
            events, idle = feed.events(), lambda: feed.idle
        batch: RowBatch[WorkflowLoad] = RowBatch(bulk_id=self.bulk_id)
        stream = _Stream(batch, sink, landing, grow_to)
        try:
            for event in events:
                stream.take(event, idle=idle())
            stream.flush()
        finally:
            if feed is not None:
                feed.close()
        warn_unparseable(batch.unparseable)
        return stream.loads

    def _outcomes(
        self, loads: list[WorkflowLoad]
    ) -> tuple[dict[str, WorkflowLoad], dict[str, WorkflowLoad]]:
        """The loads that succeeded and those that failed, in the order the workflows were
        given; the first failure is raised unless ``on_error="skip"`` (a load of a single
        workflow raises its failure whatever ``on_error`` says)."""
        loads = sorted(loads, key=lambda load: load.index)
        errors = [(load, load.error) for load in loads if load.error is not None]
        for load, error in errors:
            if len(loads) > 1:
                logger.error("workflow %r failed: %s", load.workflow_id, error)
        if errors and (self.on_error == "raise" or len(loads) == 1):
            raise errors[0][1]
        failed = {load.workflow_id: load for load, _ in errors}
        return {load.workflow_id: load for load in loads if load.error is None}, failed

    def _query(self, workflow_id: str) -> ListQuery:
        """The list request for a workflow id validated at the edge."""
        return ListQuery(workflow_id, self.bulk_id, self.client.settings.page_size)

    def _combine(
        self, results: dict[str, LoadResult], failed: dict[str, WorkflowLoad]
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
            failed={w: str(load.error) for w, load in failed.items()},
            errors={w: load.error for w, load in failed.items() if load.error is not None},
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


class _Stream:
    """The consumer's side of a run: pieces into batches, batches to the trackers and the
    sink, finished workflows to the landing (their partitions and states are complete)."""

    def __init__(
        self,
        batch: RowBatch[WorkflowLoad],
        sink: Sink,
        landing: Landing | None,
        grow_to: int,
    ) -> None:
        self.batch, self.sink, self.landing = batch, sink, landing
        self.chunk_rows, self.grow_to = CHUNK_ROWS, grow_to
        self.loads: list[WorkflowLoad] = []
        self._finished: list[WorkflowLoad] = []

    def take(self, event: Event[WorkflowLoad], *, idle: bool) -> None:
        if isinstance(event, Piece):
            self.batch.add(event.source, event.columns)
        else:
            self._end(event)
        waiting = len(self.batch)
        if waiting >= self.chunk_rows or (idle and waiting >= MIN_IDLE_ROWS):
            self.flush()

    def flush(self) -> None:
        if len(self.batch):
            table, ranges = self.batch.take()
            if self.landing is not None:  # the trackers of the workflows' states
                tracked = TrackedRows.of(table)
                for load, start, stop in ranges:
                    load.observe(tracked.slice(start, stop))
            self.sink(table, ranges)
            self.chunk_rows = max(self.chunk_rows, min(2 * self.chunk_rows, self.grow_to))
        finished, self._finished = self._finished, []
        if self.landing is not None and finished:
            flow_ids = {f for load in finished if (f := load.flow_id) is not None}
            states = [s for load in finished if (s := load.next_state()) is not None]
            self.landing.complete(flow_ids, states)

    def _end(self, event: Finished[WorkflowLoad]) -> None:
        load = event.source
        load.error = event.error
        self.loads.append(load)
        if event.error is None:
            self._finished.append(load)


def _pieces(load: WorkflowLoad) -> Iterator[Columns]:
    return load.pieces()


def _without(table: pa.Table, ranges: Ranges, failed: Iterable[WorkflowLoad]) -> pa.Table:
    """A batch without the rows of the workflows that failed."""
    dropped = set(failed)
    if not dropped.intersection(load for load, _, _ in ranges):
        return table
    kept = [table.slice(a, b - a) for load, a, b in ranges if load not in dropped]
    return pa.concat_tables(kept) if kept else table.slice(0, 0)
