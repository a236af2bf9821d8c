"""The wire over real sockets: urllib3's connections (the default) and a caller's session.

A scripted server sends exact bytes, so every framing, broken answer and TLS case is seen
as urllib3 reads it, with this package's bounds on top.
"""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import time
import zlib
from itertools import pairwise

import pytest
import requests

from eachlabs_loader import (
    EachlabsClient,
    TLSError,
    TransportError,
    fetch_executions,
    resolve_settings,
)
from eachlabs_loader.wire import Wire, WireError


def get(wire: Wire, url: str, headers: dict, timeout: tuple[float, float]):
    return wire.receive(wire.send(url, headers, timeout), url)


def settings_for(sandbox, **kwargs):
    return resolve_settings(sandbox.api_key, sandbox.base_url, concurrency=1, **kwargs)


def test_the_default_wire_is_urllib3_and_loads_everything(sandbox):
    with EachlabsClient(settings_for(sandbox, max_retries=0)) as client:
        assert client.session is None
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


# -- urllib3's HTTP/1.1 and our bounds, against a server that answers from a script ------------


class ScriptedServer:
    """Answers each request on a connection with the next scripted raw response.

    A script entry is bytes (sent as is), None (close the connection without answering) or
    ``(bytes, "close")`` (answer, then close the connection; ``(bytes, seconds)``: that
    much later).
    """

    def __init__(self, script: list, tls: ssl.SSLContext | None = None) -> None:
        self.script = list(script)
        self.requests: list[bytes] = []
        self.connections = 0
        self._tls = tls
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            reader = conn.makefile("rb")
            while self.script:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                self.requests.append(head)
                answer = self.script.pop(0)
                if answer is None:
                    return
                if isinstance(answer, tuple):
                    conn.sendall(answer[0])
                    if isinstance(answer[1], float):
                        time.sleep(answer[1])
                    return
                conn.sendall(answer)
        except (OSError, ssl.SSLError):
            return  # the client hung up, or failed its TLS handshake: the test says which
        finally:
            conn.close()

    def close(self) -> None:
        self._sock.close()


def response(body: bytes, *headers: str, status: str = "200 OK", length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [f"{len(body[i:i + size]):x}\r\n".encode() + body[i : i + size] + b"\r\n"
             for i in range(0, len(body), size)]  # fmt: skip
    return b"".join(parts) + b"0\r\nX-Trailer: yes\r\n\r\n"


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def make(script, tls=None):
        server = ScriptedServer(script, tls)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


TIMEOUT = (5.0, 5.0)
BODY = b'{"executions": [], "note": "' + b"x" * 300 + b'"}'


def url_of(server, path: str = "/") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


@pytest.mark.parametrize(
    "raw",
    [
        response(BODY),
        response(chunked(BODY), "Transfer-Encoding: chunked", length=False),
        response(gzip.compress(BODY), "Content-Encoding: gzip"),
        response(zlib.compress(BODY), "Content-Encoding: deflate"),
        response(zlib.compress(BODY)[2:-4], "Content-Encoding: deflate"),  # raw deflate
        response(chunked(gzip.compress(BODY)), "Transfer-Encoding: chunked",
                 "content-encoding: GZIP", length=False),
        b"HTTP/1.1 100 Continue\r\n\r\n" + response(BODY),
        response(BODY, "X-Folded: one", "  two"),
        response(gzip.compress(BODY[:50]) + gzip.compress(BODY[50:]), "Content-Encoding: gzip"),
        response(b"+5\r\n" + BODY[:5] + b"\r\n" + b"%x\r\n" % (len(BODY) - 5) + BODY[5:]
                 + b"\r\n0\r\n\r\n", "Transfer-Encoding: chunked", length=False),
    ],
    ids=["length", "chunked", "gzip", "deflate", "raw-deflate", "chunked-gzip", "1xx", "folded",
         "gzip-members", "chunk-size-with-plus"],
)  # fmt: skip
def test_bodies_are_read_and_decoded_whatever_the_framing(scripted, raw):
    server = scripted([raw, response(b"{}")])
    wire = Wire(maxsize=2)
    reply = get(wire, url_of(server, "/p?q=1"), {"X-Test": "1"}, TIMEOUT)
    assert (reply.status, reply.body) == (200, BODY)
    # The connection was left clean: the next request reuses it.
    assert get(wire, url_of(server, "/p"), {}, TIMEOUT).body == b"{}"
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-Test: 1\r\n" in server.requests[0]


def test_headers_are_case_insensitive_and_repeated_ones_joined(scripted):
    server = scripted(
        [response(b"", "Retry-After: 3", "X-Many: a", "x-many: b", status="429 Slow")]
    )
    reply = get(Wire(maxsize=1), url_of(server), {}, TIMEOUT)
    assert (reply.status, reply.reason) == (429, "Slow")
    assert reply.headers.get("retry-after") == "3" and reply.headers["RETRY-AFTER"] == "3"
    assert reply.headers["X-Many"] == "a, b" and "x-MANY" in reply.headers


@pytest.mark.parametrize(
    "raw",
    [
        response(BODY, "Connection: close"),
        (b"HTTP/1.0 200 OK\r\n\r\n" + BODY, "close"),  # delimited by closing the connection
    ],
    ids=["connection-close", "http/1.0"],
)
def test_a_connection_the_server_closes_is_not_reused(scripted, raw):
    server = scripted([raw])
    second = scripted([response(b"{}")])
    wire = Wire(maxsize=2)
    assert get(wire, url_of(server), {}, TIMEOUT).body == BODY
    assert wire._idle == []
    assert get(wire, url_of(second), {}, TIMEOUT).body == b"{}"


def test_an_idle_connection_the_server_dropped_is_replaced_before_sending(scripted):
    server = scripted([(response(b"1"), 0.1), response(b"2")])
    wire = Wire(maxsize=1)
    assert get(wire, url_of(server), {}, TIMEOUT).body == b"1"
    assert len(wire._idle) == 1  # kept: the server did not say it would close
    time.sleep(0.2)  # the server closes it meanwhile
    assert get(wire, url_of(server), {}, TIMEOUT).body == b"2"
    assert server.connections == 2 and len(server.requests) == 2  # nothing sent in vain


@pytest.mark.parametrize(
    "raw",
    [
        None,
        (response(BODY)[:-10], "close"),
        (response(chunked(BODY), "Transfer-Encoding: chunked", length=False)[:-40], "close"),
        b"SMTP ready\r\n\r\n",
        response(b"garbage", "Content-Encoding: gzip"),
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000 + b"\r\n\r\n",
        response(b"{}", "Content-Length: 2, 3", length=False),
        response(b"{}", "Content-Length: 99999999999999999999", length=False),
        (response(b"ffffffffffff\r\n", "Transfer-Encoding: chunked", length=False), "close"),
        (response(b"-1\r\n" + b"x" * 3_000_000, "Transfer-Encoding: chunked", length=False),
         "close"),
        response(b"zz\r\n", "Transfer-Encoding: chunked", length=False),
        response(gzip.compress(b"0" * 20_000_000), "Content-Encoding: gzip"),
        response(zlib.compress(b"0" * 20_000_000), "Content-Encoding: deflate"),
    ],
    ids=["dropped", "truncated", "chunked-truncated", "not-http", "bad-gzip", "many-headers",
         "long-header", "two-lengths", "huge-length", "huge-chunk", "negative-chunk",
         "bad-chunk-size", "gzip-bomb", "deflate-bomb"],
)  # fmt: skip
def test_a_broken_answer_is_a_connection_error_and_the_connection_is_closed(scripted, raw):
    server = scripted([raw])
    wire = Wire(maxsize=1, max_body_bytes=1_000_000)
    started = time.monotonic()
    with pytest.raises(WireError) as info:
        get(wire, url_of(server), {}, TIMEOUT)
    assert info.value.kind == "connection"
    assert time.monotonic() - started < 3  # not waiting out a timeout
    assert wire._idle == []


def test_a_body_that_never_ends_is_refused_in_bounded_memory(scripted):
    # A negative chunk size makes http.client read "to the end of the connection": a server
    # that keeps sending is stopped by the byte budget, not by running out of memory.
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(response(b"-1\r\n", "Transfer-Encoding: chunked", length=False))
        try:
            while True:
                conn.sendall(b"x" * 65536)
        except OSError:
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(WireError, match="too large"):
            get(
                Wire(maxsize=1, max_body_bytes=2_000_000),
                f"http://127.0.0.1:{listener.getsockname()[1]}/",
                {},
                TIMEOUT,
            )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        listener.close()
    assert peak < 40_000_000  # the 2 MB cap plus the 8 MB header allowance, and change


@pytest.mark.parametrize(
    "raw",
    [
        response(b"{}", "Content-Length: 5000", length=False),  # and then nothing more
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n",  # headers never finished
    ],
    ids=["length-beyond-the-body", "unfinished-headers"],
)
def test_an_answer_that_stops_short_on_an_open_connection_is_a_timeout(scripted, raw):
    server = scripted([raw, response(b"never sent")])  # the connection stays open
    started = time.monotonic()
    with pytest.raises(WireError) as info:
        get(Wire(maxsize=1), url_of(server), {}, (1.0, 0.5))
    assert info.value.kind == "timeout"
    assert time.monotonic() - started < 2


def test_a_silent_server_is_a_timeout():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    try:
        with pytest.raises(WireError) as info:
            get(Wire(maxsize=1), f"http://127.0.0.1:{listener.getsockname()[1]}/", {}, (1.0, 0.3))
        assert info.value.kind == "timeout"
    finally:
        listener.close()


@pytest.fixture(scope="module")
def authority():
    import trustme

    return trustme.CA()


def tls_server(scripted, authority, hostname="127.0.0.1"):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(hostname).configure_cert(context)
    return scripted([response(BODY)], tls=context)


def test_https_verifies_the_certificate_against_the_given_bundle(scripted, authority, tmp_path):
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    server = tls_server(scripted, authority)
    wire = Wire(maxsize=1, ca_bundle=str(bundle))
    assert get(wire, f"https://127.0.0.1:{server.port}/", {}, TIMEOUT).body == BODY


def test_https_refuses_an_unknown_authority_and_a_wrong_hostname(scripted, authority, tmp_path):
    server = tls_server(scripted, authority)
    with pytest.raises(WireError, match="certificate") as info:
        get(Wire(maxsize=1), f"https://127.0.0.1:{server.port}/", {}, TIMEOUT)
    assert info.value.kind == "tls"
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    elsewhere = tls_server(scripted, authority, hostname="api.example.com")
    with pytest.raises(WireError, match=r"[Hh]ostname|match") as info:
        get(
            Wire(maxsize=1, ca_bundle=str(bundle)),
            f"https://127.0.0.1:{elsewhere.port}/",
            {},
            TIMEOUT,
        )
    assert info.value.kind == "tls"


def test_https_to_a_plain_http_server_is_a_tls_error():
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:  # answers the TLS hello with plain HTTP
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(response(b"plain", "Connection: close"))

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(WireError) as info:
            get(Wire(maxsize=1), f"https://127.0.0.1:{listener.getsockname()[1]}/", {}, TIMEOUT)
    finally:
        listener.close()
    assert info.value.kind == "tls"


def test_an_untrusted_certificate_fails_at_once_without_retries(scripted, authority, make_sandbox):
    server = tls_server(scripted, authority)
    settings = resolve_settings("k" * 8, f"https://127.0.0.1:{server.port}/v1", concurrency=1)
    started = time.monotonic()
    with EachlabsClient(settings) as client, pytest.raises(TLSError, match="certificate") as info:
        fetch_executions(client, "anything")
    assert time.monotonic() - started < 1.0
    assert client.stats.retries == 0 and info.value.workflow_id == "anything"


# -- sending early: the next page is asked for before the caller works on this one ------------


def test_a_sequential_scan_asks_for_the_next_page_before_the_caller_is_done(sandbox):
    with EachlabsClient(settings_for(sandbox)) as client:
        pages = client.scan(sandbox.workflows[0].slug, concurrency=1).__iter__()
        first = next(pages)
        assert len(first) == 100
        # The first page is in our hands; the second request is already out.
        deadline = time.monotonic() + 5
        while len(sandbox.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r.query["offset"] for r in sandbox.requests] == ["0", "100"]
        assert client.throttle.in_flight == 1  # one request at a time, all the same
        pages.close()  # the caller stops: the request in flight is dropped
        assert client.throttle.in_flight == 0
        frame = fetch_executions(client, sandbox.workflows[0].slug)
    assert len(frame) == 250 and frame["execution_id"].is_unique


def test_sending_early_still_never_has_two_requests_at_the_server_at_once(make_sandbox):
    # 1 ms per request makes overlaps visible: each request must reach the server after the
    # previous answer left it (what keeps a sequential scan exact while the list grows).
    sandbox = make_sandbox(rows=1_050, workflows=1, latency_ms=1)
    with EachlabsClient(settings_for(sandbox)) as client:
        frame = fetch_executions(client, sandbox.workflows[0].slug)
    assert len(frame) == 1_050 and len(sandbox.requests) == 11
    log = sorted(sandbox.requests, key=lambda r: r.time)
    assert all(b.time >= a.finished for a, b in pairwise(log))


def test_bytes_past_the_answer_are_never_read_as_the_next_answer(scripted):
    server = scripted([response(b"1") + b"HTTP/1.1 200 OK\r\n", response(b"2")])
    wire = Wire(maxsize=1)
    assert get(wire, url_of(server), {}, TIMEOUT).body == b"1"
    assert get(wire, url_of(server), {}, TIMEOUT).body == b"2"


def test_bytes_that_arrive_after_the_answer_keep_the_connection_from_being_reused(scripted):
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(response(b"1"))
            time.sleep(0.1)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")  # unasked
            time.sleep(2)

    threading.Thread(target=serve, daemon=True).start()
    wire = Wire(maxsize=1)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    try:
        assert get(wire, url, {}, TIMEOUT).body == b"1"
        assert len(wire._idle) == 1
        time.sleep(0.3)
        assert wire._checkout(("http", "127.0.0.1", listener.getsockname()[1])) is None
    finally:
        listener.close()


def test_a_closed_wire_closes_connections_that_come_back_later(scripted):
    server = scripted([response(b"1")])
    wire = Wire(maxsize=1)
    connection = wire.send(url_of(server), {}, TIMEOUT)
    wire.close()  # e.g. a load that failed while this request was still running
    assert wire.receive(connection, url_of(server)).body == b"1"
    assert wire._idle == []


def test_a_non_ascii_url_is_sent_encoded_and_a_non_ascii_header_never_echoed(scripted):
    server = scripted([response(b"{}")])
    wire = Wire(maxsize=1)
    assert get(wire, url_of(server, "/päth?q=é"), {}, TIMEOUT).body == b"{}"
    assert server.requests[0].startswith(b"GET /p%C3%A4th?q=%C3%A9 HTTP/1.1\r\n")
    with pytest.raises(WireError) as info:
        get(wire, url_of(server), {"X-API-Key": "clé-secrète\r\nX: y"}, TIMEOUT)
    assert info.value.kind == "other"
    assert "secr" not in repr(info.value) + repr(info.value.args) + str(info.value.__context__)


@pytest.mark.timeout(30)
def test_pages_held_by_a_paused_scan_never_make_another_request_wait(sandbox):
    # With one slot, a scan paused at a page holds the request it sent early; requests made
    # meanwhile (another scan, a single page) must not wait for it.
    with EachlabsClient(settings_for(sandbox)) as client:
        a, b = sandbox.workflows[0].slug, sandbox.workflows[1].slug
        pairs = list(zip(client.iter_pages(a), client.iter_pages(b), strict=True))
        assert len(pairs) == 3
        for page in client.iter_pages(a):
            client.fetch_executions_page(b, offset=page.offset, limit=10)
        assert client.throttle.in_flight == 0


def test_a_request_is_released_explicitly_by_result_cancel_or_with(sandbox):
    with EachlabsClient(settings_for(sandbox)) as client:
        query = client.query(sandbox.workflows[0].slug, page_size=5)
        request = client.request_page(query, 0).send()
        assert client.throttle.in_flight == 1
        request.cancel()
        assert client.throttle.in_flight == 0
        with client.request_page(query, 5).send(early=True):
            assert client.throttle.in_flight == 1
        assert client.throttle.in_flight == 0
        assert len(client.request_page(query, 0).send().result()) == 5
        assert client.throttle.in_flight == 0
