"""The list-executions API as a WSGI and an ASGI app, for servers nobody here wrote.

The data is the sandbox's (``Sandbox.page_json``, same seed, same rows); the HTTP is the
server's: gunicorn (sync: ``Connection: close`` on every answer; gthread: keep-alive) and
uvicorn (h11; the ASGI body goes out in several pieces, so chunked, and gzipped when asked).
Configured by environment variables, so a server started in a subprocess serves the same
data as a ``Sandbox`` the test builds: ``API_ROWS``, ``API_SEED``, ``API_KEY``.

    gunicorn --pythonpath tests/servers api_app:wsgi
    uvicorn.Server(uvicorn.Config(api_app.asgi, http="h11", lifespan="off"))
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, unquote

from eachlabs_loader.sandbox import Sandbox

ROWS = int(os.environ.get("API_ROWS", "1234"))
SEED = int(os.environ.get("API_SEED", "5"))
KEY = os.environ.get("API_KEY", "real-server-key-0123456789")
PREFIX = "/api/v1/workflows/"

_data = Sandbox(rows=ROWS, seed=SEED, workflows=2, api_key=KEY)


def answer(path: str, query: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Status and JSON body for a request (the sandbox's rules for auth, 404 and 400)."""
    if headers.get("x-api-key") != KEY and headers.get("authorization") != f"Bearer {KEY}":
        return 401, b'{"error":"Invalid or missing API key"}'
    parts = path[len(PREFIX) :].split("/") if path.startswith(PREFIX) else []
    if len(parts) != 2 or parts[1] != "executions":
        return 404, b'{"error":"not found","code":"NOT_FOUND"}'
    if unquote(parts[0]) == "always-503":
        return 503, b'{"error":"service unavailable"}'
    params = {k: v[0] for k, v in parse_qs(query).items()}
    try:
        _data.workflow(unquote(parts[0]))
    except KeyError:
        return 404, b'{"error":"workflow not found","code":"NOT_FOUND"}'
    offset, limit = int(params.get("offset", "0")), int(params.get("limit", "50"))
    if offset < 0 or not 1 <= limit <= 100:
        return 400, json.dumps({"error": "limit must be 1-100 and offset >= 0"}).encode()
    return 200, _data.page_json(unquote(parts[0]), offset, limit)


def _head(status: int, body: bytes, *, gzipped: bool) -> list[tuple[str, str]]:
    headers = [("Content-Type", "application/json")]
    if gzipped:
        headers.append(("Content-Encoding", "gzip"))
    if status >= 400:
        headers.append(("X-Request-Id", f"req_{uuid.uuid4().hex[:16]}"))
    return headers


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    headers = {
        k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
    }
    status, body = answer(environ["PATH_INFO"], environ.get("QUERY_STRING", ""), headers)
    head = [*_head(status, body, gzipped=False), ("Content-Length", str(len(body)))]
    start_response(f"{status} {'OK' if status == 200 else 'Error'}", head)
    return [body]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    status, body = answer(scope["path"], scope["query_string"].decode(), headers)
    gzipped = "gzip" in headers.get("accept-encoding", "")
    if gzipped:
        body = gzip.compress(body)
    head = [(k.encode(), v.encode()) for k, v in _head(status, body, gzipped=gzipped)]
    await send({"type": "http.response.start", "status": status, "headers": head})
    third = max(1, len(body) // 3)
    pieces = [body[:third], body[third : 2 * third], body[2 * third :]]
    for i, piece in enumerate(pieces):  # no Content-Length: h11 sends it chunked
        await send({"type": "http.response.body", "body": piece, "more_body": i < 2})
