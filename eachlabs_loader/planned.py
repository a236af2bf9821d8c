"""The planned pages of a concurrent scan, fetched on its threads, answered in offset order.

``parallel`` decides which offsets to plan and checks the chain the pages form; this module
only keeps ``concurrency`` requests on the wire and hands the answers back in order.
Imports ``overlap`` (each page's offset follows the latest stride) and ``pagination``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from .overlap import Overlap
from .pagination import Page, PageRequest, RequestPage

PREFETCH_PAGES = 64
"""Pages fetched ahead of the consumer, so normalising a batch does not stall the pool. More
does not help: 256 pages gave the long-tail scenario nothing (BENCHMARKS.md, issue 14 point
3), and the further the pool runs ahead, the staler the totals a repair aims by."""

Answer = Page | PageRequest
"""A planned page as its thread leaves it: decoded, or answered and left to be retried."""


class PlannedPages:
    """The planned pages' requests on ``concurrency`` threads, answered in offset order.

    Each page's offset is chosen when it is queued, at most ``2 x concurrency`` requests
    ahead of the answers (each answer queues the next), so the overlap follows the list's
    latest movement. A thread whose answer is in sends the next queued request before it
    decodes that answer: its slot goes straight back on the wire instead of idling while a
    page is decoded under the interpreter's lock. It then decodes without retrying
    (``parsed``), so it never needs a second slot; an answer that must be retried is
    retried where it can be: by the thread itself when the answer failed (before it sends
    anything else), by the consumer, which holds no slot, when a success does not decode.
    Answers wait for the consumer, up to ``PREFETCH_PAGES`` pages in all: a slow answer
    holds the other threads only once that many pages have come in behind it.
    """

    def __init__(
        self,
        request_page: RequestPage,
        count: Callable[[Page], Page],
        overlap: Overlap,
        after: int,
        end: int,
        concurrency: int,
    ) -> None:
        self._request_page, self._count = request_page, count
        self._overlap, self._end = overlap, end
        self._ahead = 2 * concurrency
        self._room = max(4 * concurrency, PREFETCH_PAGES)
        self._window: deque[Future[Answer]] = deque()  # every planned page, in offset order
        self._queue: deque[tuple[int, Future[Answer]]] = deque()  # not sent yet
        self._changed = threading.Condition()
        self._next = after + overlap.stride
        self._queued = 0  # requests queued or in flight
        self._closed = False
        self._refill()
        self._threads = [
            threading.Thread(target=self._work, name=f"eachlabs-page-{n}")
            for n in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def ready(self) -> bool:
        """Is the next page in (or are there none left)?"""
        window = self._window
        return not window or window[0].done()

    def next_page(self) -> Page | None:
        """The next planned page (raising what its request raised); None after the last."""
        with self._changed:
            if not self._window:
                return None
            future = self._window.popleft()
        self._refill()  # room for one more
        answer = future.result()
        return answer if isinstance(answer, Page) else self._count(answer.result())

    def close(self, *, wait: bool) -> None:
        """Send nothing more (requests on the wire are answered); ``wait`` for those."""
        with self._changed:
            self._closed = True
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()
            self._changed.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        current = self._send_next(block=True)
        while current is not None:
            future, request = current
            answered = request.wait()
            following = self._send_next(block=False) if answered else None
            self._settle(future, request, answered)
            current = following or self._send_next(block=True)

    def _send_next(self, *, block: bool) -> tuple[Future[Answer], PageRequest] | None:
        """The next queued page, its request sent; None once closed (or, unless ``block``,
        while nothing is queued)."""
        with self._changed:
            while block and not self._closed and not self._queue:
                self._changed.wait()
            if self._closed or not self._queue:
                return None
            offset, future = self._queue.popleft()
        future.set_running_or_notify_cancel()
        try:
            return future, self._request_page(offset).send()
        except BaseException as exc:  # the consumer raises it, as a pool's future would
            self._settled(future, exc)
            return self._send_next(block=block)

    def _settle(self, future: Future[Answer], request: PageRequest, answered: bool) -> None:
        try:
            if answered:
                page = request.parsed()  # a success that does not decode: the consumer retries
                answer: Answer = request if page is None else self._count(page)
            else:
                answer = self._count(request.result())  # retried here, no other slot held
        except BaseException as exc:
            self._settled(future, exc)
        else:
            self._settled(future, answer)

    def _settled(self, future: Future[Answer], outcome: Answer | BaseException) -> None:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
        with self._changed:
            self._queued -= 1
        self._refill()

    def _refill(self) -> None:
        with self._changed:
            while (
                not self._closed
                and self._next < self._end
                and self._queued < self._ahead
                and len(self._window) < self._room
            ):
                future: Future[Answer] = Future()
                self._window.append(future)
                self._queue.append((self._next, future))
                self._queued += 1
                self._next += self._overlap.stride
            self._changed.notify_all()
