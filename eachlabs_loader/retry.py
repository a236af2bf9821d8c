"""The retry policy: which failures to retry, how long to wait, when to give up.

Built on tenacity. An error is retried if and only if its class says ``retryable``; the
wait is exponential with jitter, at least the server's ``Retry-After``, capped per wait and
in total. ``sleep`` is injectable so tests run retries without waiting.
tenacity enters the package here and nowhere else.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timezone
from typing import TypeVar

import tenacity

from .errors import EachlabsError

logger = logging.getLogger("eachlabs_loader")

T = TypeVar("T")

DEFAULT_INITIAL_WAIT_S = 0.5
DEFAULT_MAX_WAIT_S = 60.0
DEFAULT_MAX_TOTAL_WAIT_S = 300.0


def is_retryable(exc: BaseException) -> bool:
    """Retry exactly the errors whose class is marked ``retryable``."""
    return isinstance(exc, EachlabsError) and exc.retryable


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # asctime form: HTTP dates are GMT by definition
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter that honours ``Retry-After``, bounded twice.

    ``max_retries`` bounds the attempts (``max_retries + 1`` in all); ``max_total_wait_s``
    bounds the time spent sleeping for one call, whatever the server asks.
    """

    max_retries: int
    initial_wait_s: float = DEFAULT_INITIAL_WAIT_S
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    max_total_wait_s: float = DEFAULT_MAX_TOTAL_WAIT_S
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def compute_wait(self, attempt: int, exc: BaseException | None) -> float:
        """Wait before retry number ``attempt`` (1-based) after ``exc``."""
        backoff = min(self.max_wait_s, self.initial_wait_s * 2.0 ** (attempt - 1))
        wait = backoff * self.rng.uniform(0.5, 1.0)
        retry_after: float | None = getattr(exc, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.max_wait_s)

    def call(
        self,
        fn: Callable[[], T],
        *,
        on_retry: Callable[[BaseException, float], None] | None = None,
    ) -> T:
        """Run ``fn`` until it succeeds, fails for good, or the retry budget is spent.

        The last error is re-raised as is (never a tenacity ``RetryError``).
        """

        def wait(state: tenacity.RetryCallState) -> float:
            return self.compute_wait(state.attempt_number, _exception(state))

        def stop(state: tenacity.RetryCallState) -> bool:
            return (
                state.attempt_number > self.max_retries
                or state.idle_for + state.upcoming_sleep > self.max_total_wait_s
            )

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = _exception(state)
            assert exc is not None
            logger.warning(
                "retry %d/%d in %.2fs after: %s",
                state.attempt_number,
                self.max_retries,
                state.upcoming_sleep,
                exc,
            )
            if on_retry is not None:
                on_retry(exc, state.upcoming_sleep)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_retryable),
            wait=wait,
            stop=stop,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)


def _exception(state: tenacity.RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None
