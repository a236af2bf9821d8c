"""Throttle: one gate shared by every thread of a load, so a 429 slows the whole pool.

AIMD, as TCP does it: requests in flight are capped by a limit that halves when the API says
"too many requests" (at most once per pause, so a burst of 429s from one overload counts
once) and grows back by one slot per ``limit`` successes. While a ``Retry-After`` pause runs,
no new request is sent; a retry goes when its retry policy (``retry``, which honours
``Retry-After`` too) says so. The gate decides how many requests fly, never whether or when
to retry one. Stdlib only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger("eachlabs_loader")

DEFAULT_PAUSE_S = 1.0
"""How long everyone waits after a 429 without ``Retry-After``."""
MAX_PAUSE_S = 60.0
"""The longest pause a ``Retry-After`` can impose (the retry policy caps its waits alike)."""


class Throttle:
    """Caps requests in flight at an adaptive limit between 1 and ``max_concurrency``."""

    def __init__(
        self,
        max_concurrency: int,
        *,
        max_pause_s: float = MAX_PAUSE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.max_pause_s = max_pause_s
        self.limit = float(max_concurrency)
        self.lowest_limit = max_concurrency
        self.decreases = 0
        self.paused_s = 0.0
        self._in_flight = 0
        self._early = 0  # slots taken by requests sent ahead of need (see ``try_acquire_early``)
        self._paused_until = 0.0
        self._clock = clock
        self._cond = threading.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight + self._early

    @contextmanager
    def slot(self, *, retry: bool = False) -> Iterator[None]:
        """Hold one of the ``limit`` slots for the duration of a request."""
        self.acquire(retry=retry)
        try:
            yield
        finally:
            self.release()

    def acquire(self, *, retry: bool = False) -> None:
        """Take a slot (waiting out a full pool, and a pause unless ``retry``); ``release``
        gives it back. A retry is not held by the pause: its policy already waited."""
        with self._cond:
            while True:
                wait = self._paused_until - self._clock()
                if wait > 0 and not retry:
                    self._cond.wait(wait)
                elif self._in_flight < int(self.limit):
                    self._in_flight += 1
                    return
                else:
                    self._cond.wait()

    def try_acquire_early(self) -> bool:
        """A slot for a request sent ahead of need, only if one is free right now.

        Such a slot never makes another request wait (``acquire`` does not count it): its
        answer is read only when its scan resumes, so a request waiting for it could wait
        for its own thread. Release it with ``release(early=True)``.
        """
        with self._cond:
            if self._paused_until > self._clock():
                return False
            if self._in_flight + self._early >= int(self.limit):
                return False
            self._early += 1
            return True

    def release(self, *, early: bool = False) -> None:
        with self._cond:
            if early:
                self._early -= 1
            else:
                self._in_flight -= 1
            self._cond.notify_all()

    def record_success(self) -> None:
        """Additive increase: about one more slot per ``limit`` successful requests."""
        with self._cond:
            if self.limit < self.max_concurrency:
                self.limit = min(float(self.max_concurrency), self.limit + 1 / self.limit)
                self._cond.notify_all()

    def record_rate_limited(self, retry_after: float | None) -> None:
        """Multiplicative decrease, and a pause for everyone (``Retry-After`` or a default)."""
        pause = min(DEFAULT_PAUSE_S if retry_after is None else retry_after, self.max_pause_s)
        with self._cond:
            now = self._clock()
            if now >= self._paused_until:  # one decrease per overload, however many 429s
                before = int(self.limit)
                self.limit = max(1.0, self.limit / 2)
                self.decreases += 1
                self.lowest_limit = min(self.lowest_limit, int(self.limit))
                logger.warning(
                    "rate limited (HTTP 429): concurrency %d -> %d, all requests paused %.2fs",
                    before,
                    int(self.limit),
                    pause,
                ) if before > 1 else logger.warning(
                    "rate limited (HTTP 429): all requests paused %.2fs", pause
                )
            until = now + pause
            if until > self._paused_until:
                self.paused_s += until - max(now, self._paused_until)
                self._paused_until = until
            self._cond.notify_all()
