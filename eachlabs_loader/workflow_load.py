"""One workflow's part of a load: its scan, its rows' tracker, its counts and INFO line.

``run`` drives many of these at once: each ``WorkflowLoad.pieces`` runs on a scan's thread
(the pages' columns, minus rows repeated from the page before), while ``observe``,
``next_state`` and the counts are used on the consumer's. A lake load's ``Plan`` says
whether the scan reads incrementally (``incremental.IncrementalScan``) or in full.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .config import ListQuery
from .delta import DeltaWriter
from .errors import EachlabsError
from .incremental import DEFAULT_LOOKBACK, IncrementalScan
from .output import Writer
from .pagination import Page, drop_repeated_rows
from .pipeline import Columns
from .progress import Progress
from .result import LoadResult
from .state import StateTracker, TrackedRows, WorkflowState, parse_state, read_state
from .transport import EachlabsClient

logger = logging.getLogger("eachlabs_loader")


@dataclass(frozen=True)
class Plan:
    """How a lake load reads: incrementally (from the stored states) or in full."""

    incremental: bool = False
    lookback: timedelta = DEFAULT_LOOKBACK


class WorkflowLoad:
    """One workflow's scan: its pages' columns out (run on a scan's thread), its rows
    watched by a tracker (on the consumer's), its counts and one INFO line."""

    def __init__(
        self,
        client: EachlabsClient,
        query: ListQuery,
        progress: Progress,
        writer: Writer | None = None,
        plan: Plan | None = None,
        *,
        index: int = 0,
    ) -> None:
        self.client, self.progress, self.writer, self.index = client, progress, writer, index
        self.workflow_id, self.bulk_id = query.workflow_id, query.bulk_id
        self.tracker = StateTracker() if writer is not None else None
        self.scan: Any = client.scan(query)
        if writer is not None and plan is not None and plan.incremental:
            self.scan = IncrementalScan(
                self.scan,
                load_state=_state_reader(writer),
                full_scan=lambda: client.scan(query),
                lookback=plan.lookback,
                workflow_id=self.workflow_id,
                concurrency=client.settings.concurrency,
                limit=client.settings.page_size,
            )
        self.rows_fetched = self.rows_kept = 0
        self.result = LoadResult()
        self.error: EachlabsError | None = None
        self._started = time.monotonic()
        self._requests, self._retries = client.stats.requests, client.stats.retries

    def pieces(self) -> Iterator[Columns]:
        """Each page's columns, minus rows repeated from the page before; ``result`` is
        set once the scan has ended (its counts from the scan's start)."""
        self._started = time.monotonic()
        self._requests, self._retries = self.client.stats.requests, self.client.stats.retries
        previous: Page | None = None
        for page in self.scan:
            if previous is None and not getattr(self.scan, "incremental", False):
                # An incremental run reads only the head: the list's total would mislead.
                self.progress.announce(page.total_count or len(page))
            columns = drop_repeated_rows(previous, page)
            kept = len(columns["execution_id"])
            self.progress.advance(kept)
            self.rows_fetched += len(page)
            self.rows_kept += kept
            previous = page
            yield columns
        self.result = self._finish()

    @property
    def waiting(self) -> bool:
        """Would this workflow's next page keep the consumer waiting?"""
        return bool(getattr(self.scan, "waiting", False))

    def observe(self, rows: TrackedRows) -> None:
        if self.tracker is not None:
            self.tracker.observe(rows)

    @property
    def flow_id(self) -> str | None:
        """The workflow's UUID as its rows say (None before the first row)."""
        return None if self.tracker is None else self.tracker.flow_id

    def next_state(self) -> WorkflowState | None:
        """The workflow's state once this load's rows are in the lake (None: nothing to save)."""
        if self.tracker is None or self.writer is None:
            return None
        result = self.result
        previous = self.scan.state if isinstance(self.scan, IncrementalScan) else None
        return self.tracker.state(
            self.writer.dataset_id,
            previous if result.incremental else None,
            mode="incremental" if result.incremental else "full",
            rows_fetched=result.rows_fetched,
            requests=result.requests,
            total_count=result.total_count_end,
        )

    def _finish(self) -> LoadResult:
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
            self.rows_kept,
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
