"""A real HTTP server on loopback that imitates the Eachlabs list-executions API.

Stdlib only (``ThreadingHTTPServer``); it pages with its own code and never imports the
loader's, so the two can disagree and the tests will notice. Serves
``GET {/api/v1|/v1}/workflows/{id-or-slug}/executions`` with either auth header, the API's
400/401/404 bodies, both response variants, live head inserts, latency and injected faults,
and keeps a log of every request for assertions. Also serves the organisation's workflows,
``GET {prefix}/workflows`` (newest first, ``offset`` = next start while pages come back full).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .data import (
    TERMINAL_STATUSES,
    Workflow,
    bulk_indices,
    make_execution,
    make_workflow,
    workflow_row,
)
from .faults import DEFAULT_MESSAGES, Fault, FaultPlan

DEMO_API_KEY = "sandbox-demo-key"
ROW_CACHE_SIZE = 200_000
BYTES_CACHE_SIZE = 256 * 1024 * 1024
RANDOM_FAULTS = (
    ("status", 500),
    ("status", 502),
    ("status", 503),
    ("status", 504),
    ("status", 429),
    ("drop", None),
    ("truncated", None),
    ("html", 502),
    ("empty", None),
)
VARIANTS = ("offset", "limit", "next_offset")
PREFIXES = ("/api/v1", "/v1")
_UUID_SHAPE = (8, 4, 4, 4, 12)


@dataclass
class RequestRecord:
    """What the sandbox saw of one request (and what it answered)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    workflow: str | None = None
    offset: int | None = None
    limit: int | None = None
    status: int | None = None
    fault: str | None = None
    request_id: str | None = None
    """The ``X-Request-Id`` of an error answer (the vendor sends one with every error)."""
    time: float = field(default_factory=time.monotonic)
    finished: float | None = None
    latency_s: float = 0.0
    """The delay the sandbox added before answering (``latency_ms``, or the tail's)."""


class Sandbox:
    """The fake API. Use as a context manager; ``base_url`` is ready inside the block.

    Args:
        workflows: how many workflows exist (each with a UUID, a slug and a name).
        rows: executions per workflow: one number for all, or ``{id or slug: number}``.
        seed: makes every id, status and timestamp reproducible.
        latency_ms: added to every request.
        tail_share: the share of requests that take ``tail_latency_ms`` instead (a long-tailed
            service: a few answers far slower than the median), drawn from ``seed``.
        tail_latency_ms: the latency of those requests.
        cache_bytes: encoded pages kept for re-serving (a benchmark of a million rows needs
            them all, or the sandbox, not the client, is what gets measured).
        api_key: the only key accepted (as ``X-API-Key`` or ``Authorization: Bearer``).
        variant: ``offset`` (the seed's page, ``offset`` = next start), ``limit`` (the vendor's
            schema) or ``next_offset`` (``offset`` only when the page came back full).
        total_count_cap: report at most this ``total_count`` (the vendor's capped counts).
        inserts_per_request: new executions added at the head before each list request.
        timestamp_variety: mix the timestamp forms a real service sends (else only ``...Z``).
        extra_fields: fields added to every row (to exercise unknown-field handling).
        max_page_size: serve at most this many rows per page, whatever ``limit`` asks (a
            host with a smaller page size; the ``limit`` variant reports the applied size).
        lying_hints: send nonsense ``offset``, ``limit`` and ``total_count`` hints (0, twice
            the limit, 1000 more than the truth): a client must not trust them.
        random_faults: the share of requests answered with a random transient fault
            (5xx, 429, a dropped connection, a garbled body), seeded by ``seed``.
        open_window: only the newest ``open_window`` executions of the initial history may
            still be ``running`` or ``queued``; older ones have finished, as on a real service
            where runs end within minutes (None: open runs anywhere in the history).
            Executions inserted later may be open until ``finish`` is called.
        workflow_status: ``{id or slug: "active" | "archived" | "deleted"}`` for the
            workflows list (default active); a deleted workflow's executions answer 404.

    Examples:
        >>> with Sandbox(rows=120) as sandbox:
        ...     url, key = sandbox.base_url, sandbox.api_key
    """

    def __init__(
        self,
        *,
        workflows: int = 3,
        rows: int | Mapping[str, int] = 250,
        seed: int = 0,
        latency_ms: float = 0.0,
        tail_share: float = 0.0,
        tail_latency_ms: float = 0.0,
        cache_bytes: int = BYTES_CACHE_SIZE,
        api_key: str = DEMO_API_KEY,
        variant: str = "offset",
        total_count_cap: int | None = None,
        inserts_per_request: int = 0,
        timestamp_variety: bool = True,
        extra_fields: Mapping[str, Any] | None = None,
        max_page_size: int | None = None,
        lying_hints: bool = False,
        random_faults: float = 0.0,
        open_window: int | None = None,
        workflow_status: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}")
        self.seed = seed
        self.latency_ms = latency_ms
        self.tail_share = tail_share
        self.tail_latency_ms = tail_latency_ms
        self.cache_bytes = cache_bytes
        self._latency_rng = random.Random(f"latency:{seed}")
        self.api_key = api_key
        self.variant = variant
        self.total_count_cap = total_count_cap
        self.inserts_per_request = inserts_per_request
        self.timestamp_variety = timestamp_variety
        self.extra_fields = dict(extra_fields or {})
        self.max_page_size = max_page_size
        self.lying_hints = lying_hints
        self.random_faults = random_faults
        self._rng = random.Random(seed)
        self.faults = FaultPlan()
        self.workflows = [make_workflow(seed, n) for n in range(workflows)]
        self._by_key = {k: w for w in self.workflows for k in (w.id, w.slug)}
        self._counts = {w.number: self._initial_rows(w, rows) for w in self.workflows}
        self._initial_counts = dict(self._counts)
        self.open_window = open_window
        self._workflow_status = {
            self._by_key[k].number: v for k, v in (workflow_status or {}).items()
        }
        self._statuses: dict[tuple[int, int], str] = {}
        self._cache: dict[tuple[int, int, str | None], dict[str, Any]] = {}
        self._bytes_cache: dict[tuple[Any, ...], bytes] = {}
        self._bytes_cached = 0
        self._version = 0  # bumped by every change of the data
        self._log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._host, self._port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind and serve in a daemon thread (idempotent)."""
        if self._server is None:
            self._server = _Server((self._host, self._port), _make_handler(self))
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="eachlabs-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() or use `with`")
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API root under the seed's prefix, ``/api/v1``."""
        return self.origin + "/api/v1"

    # -- data ------------------------------------------------------------------------------

    def workflow(self, key: str) -> Workflow:
        """A workflow by UUID or slug."""
        return self._by_key[key]

    def count(self, key: str) -> int:
        with self._lock:
            return self._counts[self.workflow(key).number]

    def insert(self, key: str, n: int) -> None:
        """Add ``n`` new executions at the head of the list, as new triggers would."""
        with self._lock:
            self._counts[self.workflow(key).number] += n
            self._version += 1

    def finish(self, key: str, n: int | None = None, status: str = "completed") -> list[str]:
        """Finish up to ``n`` (default all) running or queued executions; returns their ids.

        Their ``status``, ``ended_at`` and ``updated_at`` change, as on the real service.
        """
        workflow = self.workflow(key)
        finished: list[str] = []
        for index in range(self.count(key) - 1, -1, -1):
            if n is not None and len(finished) >= n:
                break
            row = self._row(workflow, index)
            if row["status"] in ("running", "queued"):
                with self._lock:
                    self._statuses[(workflow.number, index)] = status
                    self._version += 1
                finished.append(row["execution_id"])
        return finished

    def rows(self, key: str, bulk_id: str | None = None) -> list[dict[str, Any]]:
        """Every execution the list would serve now, newest first."""
        workflow = self.workflow(key)
        indices = self._indices(workflow, bulk_id, self.count(key))
        return [self._row(workflow, k) for k in indices]

    def expected_ids(self, key: str, bulk_id: str | None = None) -> list[str]:
        return [row["execution_id"] for row in self.rows(key, bulk_id)]

    def page_json(self, key: str, offset: int, limit: int, bulk_id: str | None = None) -> bytes:
        """The body this sandbox serves for a page (so other servers can serve the same data;
        head inserts apply as for a request)."""
        return self._page_bytes(self.workflow(key), offset, limit, bulk_id)

    # -- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def add_fault(self, kind: str, **kwargs: Any) -> Fault:
        """Inject a fault (see ``faults.Fault`` for the arguments)."""
        return self.faults.add(Fault(kind, **kwargs))

    # -- internals -------------------------------------------------------------------------

    def _latency_s(self) -> float:
        """This request's added delay: ``latency_ms``, or the tail's for ``tail_share``."""
        latency = self.latency_ms
        if self.tail_share:
            with self._lock:
                if self._latency_rng.random() < self.tail_share:
                    latency = self.tail_latency_ms
        return latency / 1000

    def _random_fault(self) -> Fault | None:
        """With ``random_faults`` set, one of the transient faults, at that rate."""
        if not self.random_faults:
            return None
        with self._lock:
            if self._rng.random() >= self.random_faults:
                return None
            kind, status = self._rng.choice(RANDOM_FAULTS)
        return Fault(kind, status=status, retry_after="0" if status == 429 else None)

    def _initial_rows(self, workflow: Workflow, rows: int | Mapping[str, int]) -> int:
        if isinstance(rows, int):
            return rows
        return int(rows.get(workflow.id, rows.get(workflow.slug, 0)))

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    def _indices(self, workflow: Workflow, bulk_id: str | None, count: int) -> list[int]:
        if bulk_id is None:
            return list(range(count - 1, -1, -1))
        return bulk_indices(workflow, bulk_id, count)[::-1]

    def workflow_rows(self) -> list[dict[str, Any]]:
        """The list-workflows rows, newest first."""
        return [
            workflow_row(
                self.seed,
                w,
                executions=self.count(w.id),
                status=self._workflow_status.get(w.number, "active"),
            )
            for w in reversed(self.workflows)
        ]

    def _row(self, workflow: Workflow, index: int) -> dict[str, Any]:
        status = self._statuses.get((workflow.number, index))
        if (
            status is None
            and self.open_window is not None
            and index < self._initial_counts[workflow.number] - self.open_window
        ):
            status = "finished-early"  # resolved below, once the drawn status is known
        key = (workflow.number, index, status)
        row = self._cache.get(key)
        if row is None:
            row = make_execution(
                self.seed,
                workflow,
                index,
                timestamp_variety=self.timestamp_variety,
                status=None if status == "finished-early" else status,
            )
            if status == "finished-early" and row["status"] not in TERMINAL_STATUSES:
                row = make_execution(
                    self.seed,
                    workflow,
                    index,
                    timestamp_variety=self.timestamp_variety,
                    status="completed",
                )
            if len(self._cache) >= ROW_CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = row
        return {**row, **self.extra_fields}

    def _page(
        self, workflow: Workflow, offset: int, limit: int, bulk_id: str | None, grow: bool = True
    ) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            if grow:
                self._counts[workflow.number] += self.inserts_per_request
            count = self._counts[workflow.number]
        limit = min(limit, self.max_page_size or limit)
        if bulk_id is None:
            total = count
            top = count - 1 - offset
            indices: Sequence[int] = range(top, max(top - limit, -1), -1)
        else:
            matching = self._indices(workflow, bulk_id, count)
            total, indices = len(matching), matching[offset : offset + limit]
        return [self._row(workflow, k) for k in indices], total

    def _page_bytes(
        self, workflow: Workflow, offset: int, limit: int, bulk_id: str | None
    ) -> bytes:
        """The encoded page, cached: a fake API must not be the bottleneck of a benchmark."""
        with self._lock:
            self._counts[workflow.number] += self.inserts_per_request
            count = self._counts[workflow.number]
            key = (workflow.number, offset, limit, bulk_id, count, self._version, self._knobs())
            cached = self._bytes_cache.get(key)
        if cached is not None:
            return cached
        rows, total = self._page(workflow, offset, limit, bulk_id, grow=False)
        data = json.dumps(
            self._page_body(rows, total, offset, limit), separators=(",", ":")
        ).encode()
        with self._lock:
            if self._bytes_cached + len(data) > self.cache_bytes:
                self._bytes_cache.clear()
                self._bytes_cached = 0
            self._bytes_cache[key] = data
            self._bytes_cached += len(data)
        return data

    def _knobs(self) -> tuple[Any, ...]:
        return (
            self.variant,
            self.total_count_cap,
            self.lying_hints,
            self.max_page_size,
            self.timestamp_variety,
            repr(self.extra_fields),
        )

    def _page_body(
        self, rows: list[dict[str, Any]], total: int, offset: int, limit: int
    ) -> dict[str, Any]:
        if self.total_count_cap is not None:
            total = min(total, self.total_count_cap)
        limit = min(limit, self.max_page_size or limit)
        body: dict[str, Any] = {"executions": rows}
        if self.lying_hints:
            return {**body, "offset": 0, "limit": limit * 2, "total_count": total + 1000}
        if self.variant == "offset":
            body["offset"] = offset + len(rows)
        elif self.variant == "limit":
            body["limit"] = limit
        elif len(rows) == limit:
            body["offset"] = offset + limit
        body["total_count"] = total
        return body


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timeout test, a dropped connection) is not an error."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def _is_uuid(value: str) -> bool:
    groups = value.split("-")
    return [len(g) for g in groups] == list(_UUID_SHAPE) and all(
        c in "0123456789abcdefABCDEF" for g in groups for c in g
    )


def _make_handler(sandbox: Sandbox) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.sandbox = sandbox
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "eachlabs-sandbox"
    wbufsize = 1 << 16  # one send per response: no Nagle/delayed-ACK stall on keep-alive
    disable_nagle_algorithm = True
    sandbox: Sandbox

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log replaces stderr noise

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        record = RequestRecord("GET", self.path, query, dict(self.headers.items()))
        self.sandbox._record(record)
        record.latency_s = self.sandbox._latency_s()
        if record.latency_s:
            time.sleep(record.latency_s)
        self._serve(parts.path, query, record)

    def _serve(self, path: str, query: dict[str, str], record: RequestRecord) -> None:
        sandbox = self.sandbox
        if not self._authorized():
            return self._json(record, 401, {"error": "Invalid or missing API key"})
        if path in {prefix + "/workflows" for prefix in PREFIXES}:
            return self._serve_workflows(query, record)
        segments = self._route(path)
        if segments is None:
            return self._json(record, 404, {"error": "not found", "code": "NOT_FOUND"})
        record.workflow = workflow_key = unquote(segments)
        workflow = sandbox._by_key.get(workflow_key)
        try:
            record.offset = offset = int(query.get("offset", "0"))
            record.limit = limit = int(query.get("limit", "50"))
        except ValueError:
            return self._json(record, 400, {"error": "offset and limit must be integers"})
        keys = (workflow.id, workflow.slug) if workflow else (workflow_key,)
        fault = sandbox.faults.take(keys, offset) or sandbox._random_fault()
        if fault is not None:
            record.fault = fault.kind
            if self._replace(fault, record):
                return
        if workflow is None or sandbox._workflow_status.get(workflow.number) == "deleted":
            return self._json(record, 404, {"error": "workflow not found", "code": "NOT_FOUND"})
        if offset < 0 or not 1 <= limit <= 100:
            return self._json(record, 400, {"error": "limit must be 1-100 and offset >= 0"})
        bulk_id = query.get("bulk_id")
        if bulk_id is not None and not _is_uuid(bulk_id):
            return self._json(record, 400, {"error": "invalid bulk_id format"})
        if fault is None:
            data = sandbox._page_bytes(workflow, offset, limit, bulk_id)
            return self._send(record, 200, data, "application/json")
        rows, total = sandbox._page(workflow, offset, limit, bulk_id)
        rows = self._mutate(fault, rows, workflow, offset, limit, bulk_id)
        body = sandbox._page_body(rows, total, offset, limit)
        if fault.kind == "total":
            body["total_count"] = fault.body
        self._json(record, 200, body)

    def _serve_workflows(self, query: dict[str, str], record: RequestRecord) -> None:
        """The organisation's workflows: ``offset`` in the body is the next start, sent
        only while pages come back full (the vendor's definition)."""
        try:
            record.offset = offset = int(query.get("offset", "0"))
            record.limit = limit = int(query.get("limit", "50"))
        except ValueError:
            return self._json(record, 400, {"error": "offset and limit must be integers"})
        fault = self.sandbox.faults.take(("workflows",), offset) or self.sandbox._random_fault()
        if fault is not None:
            record.fault = fault.kind
            if self._replace(fault, record):
                return
        if offset < 0 or not 1 <= limit <= 100:
            return self._json(record, 400, {"error": "limit must be 1-100 and offset >= 0"})
        rows = self.sandbox.workflow_rows()
        page = rows[offset : offset + limit]
        body: dict[str, Any] = {"workflows": page, "total_count": len(rows)}
        if len(page) == limit:
            body["offset"] = offset + limit
        self._json(record, 200, body)

    def _authorized(self) -> bool:
        key = self.sandbox.api_key
        return (
            self.headers.get("X-API-Key") == key
            or self.headers.get("Authorization") == f"Bearer {key}"
        )

    def _route(self, path: str) -> str | None:
        """The raw workflow segment of a list-executions path, or None."""
        for prefix in PREFIXES:
            if path.startswith(prefix + "/"):
                segments = path[len(prefix) + 1 :].split("/")
                if (
                    len(segments) == 3
                    and segments[0] == "workflows"
                    and segments[2] == "executions"
                ):
                    return segments[1] or None
        return None

    def _replace(self, fault: Fault, record: RequestRecord) -> bool:
        """Answer instead of the page; False for faults that alter the page instead."""
        kind = fault.kind
        if kind == "status":
            status = fault.status or 503
            body = (
                fault.body
                if fault.body is not None
                else {"error": DEFAULT_MESSAGES.get(status, "error")}
            )
            self._json(record, status, body, retry_after=fault.retry_after)
        elif kind == "html":
            page = fault.body or "<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"
            self._send(record, fault.status or 200, page.encode(), "text/html", fault.retry_after)
        elif kind == "truncated":
            data = json.dumps(self._sample_body()).encode()
            self._send(record, 200, data[: len(data) // 2], "application/json")
        elif kind == "short_read":
            data = json.dumps(self._sample_body()).encode()
            record.status = 200
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data) + 1000))
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
        elif kind == "empty":
            self._send(record, 200, b"", "application/json")
        elif kind == "drop":
            self.close_connection = True
        elif kind == "redirect":
            record.status = fault.status or 302
            self.send_response(record.status)
            self.send_header("Location", fault.location or "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind == "wrong_shape":
            self._json(record, 200, fault.body if fault.body is not None else {"data": []})
        elif kind == "slow":
            time.sleep(fault.delay_s)
            return False
        else:
            return False
        return True

    def _mutate(
        self,
        fault: Fault,
        rows: list[dict[str, Any]],
        workflow: Workflow,
        offset: int,
        limit: int,
        bulk_id: str | None,
    ) -> list[dict[str, Any]]:
        if fault.kind == "repeat":
            first, _ = self.sandbox._page(workflow, 0, limit, bulk_id, grow=False)
            return first
        if fault.kind == "extra_rows":  # the next real rows too, beyond ``limit``
            more, _ = self.sandbox._page(
                workflow, offset + len(rows), fault.extra, bulk_id, grow=False
            )
            return rows + more
        if fault.kind == "reversed":
            return rows[::-1]
        if fault.kind == "null_created_at":
            return [
                {**r, "created_at": None} if r["execution_id"] in fault.body else r for r in rows
            ]
        if fault.kind == "missing_id" and rows:
            rows[0] = {k: v for k, v in rows[0].items() if k != "execution_id"}
        return rows

    def _sample_body(self) -> dict[str, Any]:
        workflow = self.sandbox.workflows[0]
        return {"executions": [self.sandbox._row(workflow, 0)], "total_count": 1}

    def _json(
        self, record: RequestRecord, status: int, body: Any, retry_after: str | None = None
    ) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self._send(record, status, data, "application/json", retry_after)

    def _send(
        self,
        record: RequestRecord,
        status: int,
        data: bytes,
        content_type: str,
        retry_after: str | None = None,
    ) -> None:
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            record.request_id = f"req_{uuid.uuid4().hex[:20]}"
            self.send_header("X-Request-Id", record.request_id)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(data)
        record.finished = time.monotonic()
