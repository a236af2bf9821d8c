"""Named failure scenarios the sandbox can inject into its responses.

A ``Fault`` matches requests (by workflow and offset), fires a number of times (or forever)
and says what to send instead of the normal page. Imports only the standard library.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

KINDS = frozenset(
    {
        "status",  # an HTTP error status with a JSON error body (Retry-After optional)
        "html",  # an HTML error page, with ``status`` (200 by default)
        "truncated",  # a 200 whose JSON body is cut in half (Content-Length matches the cut)
        "short_read",  # Content-Length promises more than is sent, then the connection closes
        "empty",  # a 200 with an empty body
        "drop",  # the connection is closed without any response
        "slow",  # the normal response, after ``delay_s``
        "redirect",  # ``status`` (302 by default) to ``location``
        "wrong_shape",  # a 200 with ``body`` (any JSON) instead of the page
        "repeat",  # the first page's rows, whatever the offset
        "extra_rows",  # more rows than ``limit``: the ``extra`` rows that follow, too
        "total",  # the normal page with ``total_count`` replaced by ``body`` (any JSON)
        "missing_id",  # the page with its first row's execution_id removed
        "reversed",  # the page's rows oldest first (a list that is not newest first)
        "null_created_at",  # rows whose execution_id is in ``body`` come with created_at null
    }
)

DEFAULT_MESSAGES = {
    400: "invalid request",
    401: "Invalid or missing API key",
    402: "insufficient balance",
    403: "forbidden",
    404: "workflow not found",
    429: "too many requests",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


@dataclass
class Fault:
    """One injected misbehaviour.

    Args:
        kind: one of ``KINDS``.
        times: how many matching requests it spoils; None means every one, forever.
        offsets: only requests at these offsets match (None: any offset).
        workflow: only this workflow (id or slug) matches (None: any).
        status: the HTTP status for ``status``, ``html`` and ``redirect``.
        retry_after: the ``Retry-After`` header value to send, verbatim.
        body: a JSON body for ``status``/``wrong_shape``, or text for ``html``.
        delay_s: how long ``slow`` waits before answering.
        location: where ``redirect`` points.
        extra: how many rows beyond ``limit`` ``extra_rows`` adds.
        skip: let this many matching requests through before the fault starts.
    """

    kind: str
    times: int | None = 1
    offsets: frozenset[int] | None = None
    workflow: str | None = None
    status: int | None = None
    retry_after: str | None = None
    body: Any = None
    delay_s: float = 0.0
    location: str | None = None
    extra: int = 5
    skip: int = 0
    fired: int = field(default=0, init=False)
    matched: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(KINDS)}")
        if self.offsets is not None:
            self.offsets = frozenset(self.offsets)


class FaultPlan:
    """The active faults, consumed in the order they were added; thread-safe."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, workflow_keys: tuple[str, ...], offset: int) -> Fault | None:
        """The first live fault matching this request, marked as fired once more."""
        with self._lock:
            for fault in self._faults:
                if fault.times is not None and fault.fired >= fault.times:
                    continue
                if fault.workflow is not None and fault.workflow not in workflow_keys:
                    continue
                if fault.offsets is not None and offset not in fault.offsets:
                    continue
                fault.matched += 1
                if fault.matched <= fault.skip:
                    continue
                fault.fired += 1
                return fault
        return None
