"""Many scans, one normalising stage: how a load of several workflows keeps each one cheap.

A workflow's scan (its requests, decoding and chain checks) runs on a worker thread of
``PageFeed`` and hands each page's columns to one consumer through one bounded queue. The
consumer gathers the rows of whichever workflows arrive (``RowBatch``) and normalises them
together, so a small workflow costs about its requests, not a normalisation and a write
of its own. A load of one workflow runs its scan in the consumer's thread instead (no
queue, no hand-off: at 0 ms latency the interpreter, not the network, is the limit).

Generic over the source of the rows (``run.WorkflowLoad``, one per workflow); knows nothing
of HTTP or files.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pyarrow as pa

from .codec import NULL
from .errors import EachlabsError
from .pagination import ColumnBuffer
from .schema import normalize_table

S = TypeVar("S")
Columns = dict[str, list[Any]]

MAX_QUEUED_PIECES = 256
"""Pages waiting for the consumer before the scans wait too (memory stays bounded)."""


@dataclass(frozen=True)
class Piece(Generic[S]):
    """Rows of one source: a page's columns, in list order."""

    source: S
    columns: Columns


@dataclass(frozen=True)
class Finished(Generic[S]):
    """A source's scan ended: every piece of it came before this; ``error`` if it failed."""

    source: S
    error: EachlabsError | None = None


Event = Piece[S] | Finished[S]


class PageFeed(Generic[S]):
    """The pieces of several sources' scans, run ``workers`` at a time, in arrival order.

    ``sources`` may be lazy (the workflows listing): a dispatcher thread takes them one by
    one and queues their scans, so the first scans start while the rest are still being
    listed. An error while listing ends the feed (``events`` raises it); an error of one
    scan is its ``Finished`` event. ``close`` stops every scan (their next piece raises
    inside them, so their requests are dropped) and waits for the threads.
    """

    def __init__(
        self,
        sources: Iterable[S],
        scan: Callable[[S], Iterator[Columns]],
        *,
        workers: int,
        max_queued: int = MAX_QUEUED_PIECES,
    ) -> None:
        self._scan = scan
        self._queue: deque[Event[S]] = deque()
        self._max_queued = max_queued
        self._cond = threading.Condition()
        self._running = 0
        self._listed = False
        self._closed = False
        self._failure: BaseException | None = None
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="eachlabs-workflow")
        self._dispatcher = threading.Thread(
            target=self._dispatch, args=(iter(sources),), name="eachlabs-listing", daemon=True
        )
        self._dispatcher.start()

    @property
    def idle(self) -> bool:
        """Nothing is waiting for the consumer right now."""
        return not self._queue

    def events(self) -> Iterator[Event[S]]:
        """Every piece and every ``Finished``, as they arrive; ends when all scans have."""
        while True:
            with self._cond:
                while not self._queue and not self._done():
                    self._cond.wait()
                if not self._queue:
                    break
                event = self._queue.popleft()
                self._cond.notify_all()
            yield event
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        """Stop the scans still running and wait for every thread of the feed."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        self._dispatcher.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _done(self) -> bool:
        return self._closed or self._failure is not None or (self._listed and not self._running)

    def _dispatch(self, sources: Iterator[S]) -> None:
        try:
            for source in sources:
                with self._cond:
                    if self._closed:
                        return
                    self._running += 1
                self._pool.submit(self._run, source)
        except BaseException as exc:  # the listing failed: the load cannot be complete
            with self._cond:
                self._failure = exc
        finally:
            with self._cond:
                self._listed = True
                self._cond.notify_all()

    def _run(self, source: S) -> None:
        event: Finished[S] | None = None
        try:
            for columns in self._scan(source):
                self._put(Piece(source, columns))
            event = Finished(source)
        except _ClosedError:
            pass
        except EachlabsError as exc:
            event = Finished(source, exc)
        except BaseException as exc:  # not a failure of the API or the output: ours, fatal
            with self._cond:
                self._failure = self._failure or exc
        finally:
            with self._cond:
                self._running -= 1
                if event is not None and not self._closed:
                    self._queue.append(event)
                self._cond.notify_all()

    def _put(self, event: Event[S]) -> None:
        with self._cond:
            while len(self._queue) >= self._max_queued and not self._closed:
                self._cond.wait()
            if self._closed:
                raise _ClosedError
            self._queue.append(event)
            self._cond.notify_all()


class _ClosedError(Exception):
    """Raised inside a scan whose feed was closed: it unwinds, dropping its requests."""


def inline_events(source: S, scan: Callable[[S], Iterator[Columns]]) -> Iterator[Event[S]]:
    """One source's pieces and ``Finished``, scanned in the caller's thread."""
    try:
        for columns in scan(source):
            yield Piece(source, columns)
    except EachlabsError as exc:
        yield Finished(source, exc)
        return
    yield Finished(source, None)


class RowBatch(Generic[S]):
    """Rows of many sources gathered, then normalised in one go (``normalize_table``).

    Each source's rows stay together and in order, so ``take`` can say which rows are
    whose. ``unparseable`` collects the timestamps that did not parse, per column.
    """

    def __init__(self, *, bulk_id: str | None = None) -> None:
        self.bulk_id = bulk_id
        self.unparseable: dict[str, int] = {}
        self._parts: dict[S, ColumnBuffer] = {}
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def add(self, source: S, columns: Columns) -> None:
        part = self._parts.get(source)
        if part is None:
            part = self._parts[source] = ColumnBuffer(fill=NULL)
        part.extend(columns)
        self._rows += len(columns["execution_id"])

    def take(self) -> tuple[pa.Table, list[tuple[S, int, int]]]:
        """The rows normalised, and each source's ``(source, start, stop)`` in them."""
        parts, self._parts, self._rows = self._parts, {}, 0
        if len(parts) == 1:
            ((source, part),) = parts.items()
            merged, ranges = part, [(source, 0, len(part))]
        else:
            merged, ranges = ColumnBuffer(fill=NULL), []
            for source, part in parts.items():
                ranges.append((source, len(merged), len(merged) + len(part)))
                merged.extend(part.columns)
        table = normalize_table(merged.columns, bulk_id=self.bulk_id, unparseable=self.unparseable)
        return table, ranges
