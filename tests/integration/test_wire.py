"""Both wires over real sockets: urllib3 (the default), a caller's requests.Session, a proxy."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import requests

from eachlabs_loader import (
    EachlabsClient,
    TransportError,
    fetch_executions,
    resolve_settings,
)
from eachlabs_loader.wire import SessionWire, Urllib3Wire


def settings_for(sandbox, **kwargs):
    return resolve_settings(sandbox.api_key, sandbox.base_url, concurrency=1, **kwargs)


def test_the_default_wire_is_urllib3_and_loads_everything(sandbox):
    with EachlabsClient(settings_for(sandbox, max_retries=0)) as client:
        assert isinstance(client._wire, Urllib3Wire)
        frame = fetch_executions(client, sandbox.workflows[0].slug)
    assert len(frame) == 250 and frame["execution_id"].is_unique
    assert len(sandbox.requests) == 3  # one keep-alive connection, one request per page
    assert {r.headers["Authorization"] for r in sandbox.requests} == {f"Bearer {sandbox.api_key}"}
    assert all("gzip" in r.headers["Accept-Encoding"] for r in sandbox.requests)


def test_a_callers_session_is_used_kept_open_and_cannot_swap_the_credentials(
    sandbox, tmp_path, monkeypatch
):
    # A plain Session trusts the environment: its .netrc would replace our Authorization.
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login someone password other-secret\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    session = requests.Session()
    session.headers["X-Trace"] = "from-the-caller"
    with EachlabsClient(settings_for(sandbox), session=session) as client:
        assert isinstance(client._wire, SessionWire)
        frame = fetch_executions(client, sandbox.workflows[0].slug)
    assert len(frame) == 250
    assert {r.headers["Authorization"] for r in sandbox.requests} == {f"Bearer {sandbox.api_key}"}
    assert {r.headers["X-Trace"] for r in sandbox.requests} == {"from-the-caller"}
    # Still usable: the client does not close a session it was given.
    again = session.get(
        sandbox.base_url + "/workflows", headers={"X-API-Key": sandbox.api_key}, timeout=5
    )
    assert again.status_code == 200


def test_a_refused_connection_is_a_transport_error_on_both_wires(sandbox):
    port = sandbox.port
    sandbox.stop()
    settings = resolve_settings(
        "k" * 8, f"http://127.0.0.1:{port}/api/v1", max_retries=0, concurrency=1
    )
    for session in (None, requests.Session()):
        client = EachlabsClient(settings, session=session)
        with client, pytest.raises(TransportError, match="connection failed"):
            fetch_executions(client, "anything")


class _ForwardProxy(BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: requests arrive with absolute URLs."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            upstream = opener.open(urllib.request.Request(self.path, headers=headers), timeout=5)
        except urllib.error.HTTPError as error:
            upstream = error
        body = upstream.read()
        self.send_response(upstream.status)
        self.send_header("Content-Type", upstream.headers.get("Content-Type", "text/plain"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Proxy", (_ForwardProxy,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_proxied_api_goes_through_the_proxy(sandbox, proxy):
    # Loopback hosts never use a proxy when read from the environment; set it directly.
    url, seen = proxy
    settings = replace(settings_for(sandbox), proxies=(("http", url),))
    with EachlabsClient(settings) as client:
        assert isinstance(client._wire, SessionWire)
        frame = fetch_executions(client, sandbox.workflows[0].slug)
    assert len(frame) == 250
    assert len(seen) == 3 and all(p.startswith(sandbox.base_url) for p in seen)
