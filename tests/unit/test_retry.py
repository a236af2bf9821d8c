"""The retry policy with an injected sleep: what is retried, how long it waits, when it stops."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import tenacity

from eachlabs_loader import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    RateLimitError,
    ServerError,
    TransportError,
    WorkflowNotFoundError,
)
from eachlabs_loader.retry import RetryPolicy, is_retryable, parse_retry_after


class Flaky:
    """Raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def policy(waits: list[float], **kwargs) -> RetryPolicy:
    return RetryPolicy(sleep=waits.append, rng=random.Random(1), **{"max_retries": 5, **kwargs})


@pytest.mark.parametrize(
    "error",
    [ServerError("503"), RateLimitError("429"), TransportError("reset")],
)
def test_transient_errors_are_retried_until_success(error):
    waits: list[float] = []
    fn = Flaky(error, error)
    assert policy(waits).call(fn) == "ok"
    assert fn.calls == 3
    assert len(waits) == 2


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequestError("400"),
        AuthenticationError("401"),
        APIError("402", status_code=402),
        AuthenticationError("403"),
        WorkflowNotFoundError("404"),
        ValueError("a bug"),
    ],
)
def test_permanent_errors_are_raised_at_once(error):
    waits: list[float] = []
    fn = Flaky(error)
    with pytest.raises(type(error)):
        policy(waits).call(fn)
    assert fn.calls == 1
    assert waits == []


def test_gives_up_after_max_retries_with_the_last_error_not_a_retry_error():
    waits: list[float] = []
    errors = [ServerError(f"attempt {i}") for i in range(10)]
    fn = Flaky(*errors)
    with pytest.raises(ServerError, match="attempt 2") as info:
        policy(waits, max_retries=2).call(fn)
    assert not isinstance(info.value, tenacity.RetryError)
    assert fn.calls == 3
    assert len(waits) == 2


def test_zero_retries_means_one_attempt():
    waits: list[float] = []
    fn = Flaky(ServerError("x"))
    with pytest.raises(ServerError):
        policy(waits, max_retries=0).call(fn)
    assert fn.calls == 1


def test_backoff_is_exponential_with_jitter_and_capped():
    waits: list[float] = []
    fn = Flaky(*[ServerError("x")] * 8)
    policy(waits, max_retries=8, initial_wait_s=1.0, max_wait_s=10.0, max_total_wait_s=1e9).call(fn)
    for attempt, wait in enumerate(waits, start=1):
        ceiling = min(10.0, 2 ** (attempt - 1))
        assert ceiling / 2 <= wait <= ceiling
    assert len(set(waits)) == len(waits)  # jittered, not a fixed ladder
    assert max(waits) <= 10.0


def test_retry_after_is_a_floor_for_the_wait():
    waits: list[float] = []
    fn = Flaky(RateLimitError("429", retry_after=7.0), ServerError("503", retry_after=3.0))
    policy(waits, initial_wait_s=0.1).call(fn)
    assert waits[0] >= 7.0
    assert waits[1] >= 3.0


def test_retry_after_is_capped_per_wait():
    waits: list[float] = []
    fn = Flaky(RateLimitError("429", retry_after=3600.0))
    policy(waits, max_wait_s=60.0).call(fn)
    assert waits == [60.0]


def test_total_wait_budget_stops_early():
    waits: list[float] = []
    fn = Flaky(*[RateLimitError("429", retry_after=40.0)] * 10)
    with pytest.raises(RateLimitError):
        policy(waits, max_retries=10, max_total_wait_s=100.0).call(fn)
    assert waits == [40.0, 40.0]  # a third 40 s wait would pass the 100 s budget
    assert fn.calls == 3


def test_on_retry_sees_each_error_and_wait():
    waits: list[float] = []
    seen: list[tuple[str, float]] = []
    fn = Flaky(ServerError("one"), TransportError("two"))
    policy(waits).call(fn, on_retry=lambda exc, wait: seen.append((str(exc), wait)))
    assert [s for s, _ in seen] == ["one", "two"]
    assert [w for _, w in seen] == waits


def test_retries_are_logged_at_warning(caplog):
    waits: list[float] = []
    with caplog.at_level("WARNING", logger="eachlabs_loader"):
        policy(waits).call(Flaky(ServerError("HTTP 503: busy")))
    assert any(
        "HTTP 503: busy" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records
    )


def test_is_retryable_reads_the_class_attribute():
    assert is_retryable(ServerError("x"))
    assert not is_retryable(APIError("x"))
    assert not is_retryable(RuntimeError("x"))


@pytest.mark.parametrize(
    ("header", "expected"),
    [("5", 5.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0), (None, None), ("", None), ("soon", None)],
)
def test_parse_retry_after_seconds(header, expected):
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(30.0)
    asctime = (now + timedelta(seconds=90)).strftime("%a %b %d %H:%M:%S %Y")
    assert parse_retry_after(asctime, now=now.timestamp()) == pytest.approx(90.0)
    rfc850 = (now + timedelta(seconds=60)).strftime("%A, %d-%b-%y %H:%M:%S GMT")
    assert parse_retry_after(rfc850, now=now.timestamp()) == pytest.approx(60.0)
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now.timestamp()) == 0.0
