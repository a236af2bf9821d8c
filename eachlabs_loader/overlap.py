"""How many rows planned neighbouring pages share: what the list's movement requires.

A concurrent scan (``parallel``) plans its pages to overlap their neighbours, so that the
chain check can see that nothing slipped between them while the list moved. Too little
overlap costs repairs (sequential re-reads), too much costs requests; only efficiency rides
on it, never exactness. Imports only ``pagination``.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from .pagination import Page

MOVEMENT_MARGIN = 3
"""Planned neighbours share this many times the rows the list moves between two answers
(plus one): neighbours answered a few requests apart drift that much. Tuned on the
benchmark's inserts scenario, where 2 cost repairs (each a sequential re-read the consumer
waits for) and 4 or more cost requests (BENCHMARKS.md)."""


def default_overlap(limit: int) -> int:
    """Rows shared by neighbouring pages before the list is known to stand still: 10% of a
    page, at least one."""
    return max(1, limit // 10)


class Overlap:
    """How many rows planned neighbours share: what the list's movement requires.

    Neighbouring pages are sent close together, so only rows inserted or deleted between
    their answers can pull them apart: about the change of ``total_count`` from one answer
    to the next (averaged over the last ``2 x concurrency`` answers), with a margin of
    ``MOVEMENT_MARGIN``. A list that stands still needs one shared row, which its pages get
    once ``concurrency`` changes (one answer more) have shown it still; until then, and when
    answers carry no count, the cautious ``default_overlap``. A hole the chain check finds
    (movement the counts did not show, such as a delete for every insert) keeps the overlap
    at least at ``default_overlap`` for the rest of the scan. A ``fixed`` overlap is kept
    whatever the list does. Only efficiency rides on this: the chain check keeps every scan
    exact.
    """

    def __init__(self, size: int, concurrency: int, fixed: int | None = None) -> None:
        self.size = size
        self.concurrency = concurrency
        self.fixed = fixed
        self.widest = 0
        self._floor = 1
        self._last_total: int | None = None
        self._moves: deque[int] = deque(maxlen=2 * concurrency)
        self._uncounted = False
        self._lock = threading.Lock()

    def observe(self, page: Page) -> None:
        """Learn the list's movement from one more answer (in the order answers arrive)."""
        with self._lock:
            if page.total_count is None:
                self._uncounted = True
            elif self._last_total is not None:
                self._moves.append(abs(page.total_count - self._last_total))
            if page.total_count is not None:
                self._last_total = page.total_count

    def widen(self) -> None:
        """A hole was found between planned pages: overlap more from now on."""
        with self._lock:
            self._floor = max(self._floor, default_overlap(self.size))

    @property
    def rows(self) -> int:
        if self.fixed is not None:
            return self.fixed
        with self._lock:
            if self._uncounted or len(self._moves) < self.concurrency:
                rows = max(self._floor, default_overlap(self.size))
            else:
                movement = sum(self._moves) / len(self._moves)
                rows = max(self._floor, 1 + math.ceil(MOVEMENT_MARGIN * movement))
            rows = min(rows, max(1, self.size // 2))
            self.widest = max(self.widest, rows)
        return rows

    @property
    def stride(self) -> int:
        """Offsets between planned pages."""
        return max(1, self.size - self.rows)
