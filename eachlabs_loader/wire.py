"""The wire: one GET out, the status, headers and body back. No policy lives here.

Retries, redirects, auth headers and error messages are the transport's (``transport``);
a wire only moves bytes and says when no HTTP answer came (``WireError``). Two wires:

- ``SocketWire``, the default: HTTP/1.1 GETs on keep-alive sockets (TLS by ``ssl``,
  verified against certifi's bundle, as requests does), parsed with bytes methods. It does
  per request a fraction of what ``requests``/``http.client`` do (their header parsing alone
  costs more than decoding the page: BENCHMARKS.md, scenario cpu), and it can send a
  request now and read its answer later, so the server works while the caller decodes;
- ``SessionWire``: a ``requests.Session``, for a caller's session and for proxies.

Neither follows redirects nor reads ``.netrc`` or the environment. requests enters the
package here only. Imports nothing from the package.
"""

from __future__ import annotations

import io
import select
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import quote, urlsplit

import requests
from requests import Session
from requests.utils import DEFAULT_CA_BUNDLE_PATH

ACCEPT_ENCODING = "gzip, deflate"
"""What the wires ask for and decode (pages of JSON shrink about tenfold)."""
MAX_LINE_BYTES = 65_536
MAX_HEADERS = 100
MAX_BODY_BYTES = 256 * 1024 * 1024
"""A page of executions is well under 1 MB; anything near this is not an answer (a garbled
length, a decompression bomb) and is refused before it is read."""


class Headers(dict[str, str]):
    """Response headers, looked up case-insensitively (stored lower-case)."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, whatever its status. ``headers`` look up case-insensitively."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    url: str


class WireError(Exception):
    """No HTTP answer: ``kind`` says why (the transport decides what is retried)."""

    def __init__(self, kind: Literal["timeout", "connection", "other"], text: str) -> None:
        super().__init__(text)
        self.kind = kind


class Exchange(Protocol):
    """A request on its way: ``reply()`` waits for the answer, ``cancel()`` drops it."""

    def reply(self) -> Reply: ...

    def cancel(self) -> None: ...


class Wire(Protocol):
    def start(self, url: str, headers: Mapping[str, str], timeout: tuple[float, float]) -> Exchange:
        """Send a GET for ``url`` (query included) with exactly these headers, now.

        Raises ``WireError`` if it cannot be sent; ``reply()`` raises it for the answer.
        No redirect is followed.
        """
        ...

    def close(self) -> None: ...


@dataclass(eq=False)
class _Connection:
    origin: tuple[str, str, int]
    sock: socket.socket
    reader: io.BufferedReader
    read_timeout: float

    def is_dropped(self) -> bool:
        """An idle connection with something to read has been closed (or is confused)."""
        if self.has_unread():
            return True
        try:
            if not hasattr(select, "poll"):  # Windows: select() has no descriptor limit there
                return bool(select.select([self.sock], [], [], 0)[0])
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def has_unread(self) -> bool:
        """Bytes past the answer already in our buffer: the connection is out of step."""
        try:
            self.sock.setblocking(False)
            try:
                return bool(self.reader.peek(1))  # reads the socket only if nothing is buffered
            except (BlockingIOError, ssl.SSLWantReadError):
                return False
            finally:
                self.sock.settimeout(self.read_timeout)
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        with suppress(OSError):  # the file first: the socket's fd lives while it is open
            self.reader.close()
            self.sock.close()


class SocketWire:
    """HTTP/1.1 on keep-alive sockets, up to ``maxsize`` idle connections per host.

    Certificates are checked against ``ca_bundle`` or certifi's bundle (hostname included).
    """

    def __init__(self, *, maxsize: int, ca_bundle: str | None = None) -> None:
        self.maxsize = max(maxsize, 1)
        self._ca_bundle = ca_bundle or DEFAULT_CA_BUNDLE_PATH
        self._tls: ssl.SSLContext | None = None
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(
        self, url: str, headers: Mapping[str, str], timeout: tuple[float, float]
    ) -> _SocketExchange:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        if scheme not in ("http", "https") or not host:
            raise WireError("other", f"request failed: cannot send to {scheme}://{host}")
        authority = parts.netloc.rpartition("@")[2]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not (authority + target).isascii():  # an IRI: the host in IDNA, the rest %-encoded
            try:
                authority = host.encode("idna").decode("ascii")
            except UnicodeError:
                raise WireError("other", "request failed: not a valid host name") from None
            authority += f":{parts.port}" if parts.port else ""
            target = quote(target, safe="/?&=%:@!$'()*+,;~-._")
        lines = [f"GET {target} HTTP/1.1", f"Host: {authority}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        try:
            request = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        except UnicodeEncodeError:  # its text holds the whole request, keys included
            raise WireError("other", "request failed: a header is not ASCII") from None
        exchange = _SocketExchange(self, (scheme, host, port), request, url, timeout)
        exchange.send()
        return exchange

    def get(self, url: str, headers: Mapping[str, str], timeout: tuple[float, float]) -> Reply:
        return self.start(url, headers, timeout).reply()

    def close(self) -> None:
        """Close the idle connections; those still in use are closed when they come back."""
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for connection in idle:
            connection.close()

    def _checkout(self, origin: tuple[str, str, int]) -> _Connection | None:
        """The most recently used idle connection to ``origin`` that the server kept open."""
        while True:
            with self._lock:
                found = [i for i, c in enumerate(self._idle) if c.origin == origin]
                if not found:
                    return None
                connection = self._idle.pop(found[-1])
            if not connection.is_dropped():
                return connection
            connection.close()

    def _checkin(self, connection: _Connection) -> None:
        if not connection.has_unread():
            with self._lock:
                if not self._closed and len(self._idle) < self.maxsize:
                    self._idle.append(connection)
                    return
        connection.close()

    def _connect(self, origin: tuple[str, str, int], timeout: tuple[float, float]) -> _Connection:
        scheme, host, port = origin
        sock = socket.create_connection((host, port), timeout=timeout[0])
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._tls_context().wrap_socket(sock, server_hostname=host)
            sock.settimeout(timeout[1])
        except BaseException:
            sock.close()
            raise
        return _Connection(origin, sock, sock.makefile("rb"), timeout[1])

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self._ca_bundle)
        return self._tls


class _SocketExchange:
    def __init__(
        self,
        wire: SocketWire,
        origin: tuple[str, str, int],
        request: bytes,
        url: str,
        timeout: tuple[float, float],
    ) -> None:
        self._wire, self._origin, self._request = wire, origin, request
        self._url, self._timeout = url, timeout
        self._connection: _Connection | None = None

    def send(self) -> None:
        """On an idle connection if one is left, else on a new one."""
        with _as_wire_errors():
            connection = self._wire._checkout(self._origin)
            if connection is None:
                connection = self._wire._connect(self._origin, self._timeout)
            self._connection = connection
            try:
                connection.sock.sendall(self._request)
            except BaseException:
                self.cancel()
                raise

    def reply(self) -> Reply:
        connection = self._connection
        if connection is None:
            raise WireError("other", "request failed: the exchange is over")
        try:
            with _as_wire_errors():
                status, reason, headers, body, reusable = _read_response(connection.reader)
        except BaseException:
            self.cancel()
            raise
        self._connection = None
        if reusable:
            self._wire._checkin(connection)
        else:
            connection.close()
        return Reply(status, reason, headers, body, self._url)

    def cancel(self) -> None:
        """Close the connection: the answer, if any, is not read."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@contextmanager
def _as_wire_errors() -> Iterator[None]:
    """Socket, TLS and protocol errors as ``WireError`` (timeouts apart)."""
    try:
        yield
    except WireError:
        raise
    except TimeoutError as exc:
        raise WireError("timeout", f"timed out ({exc.__class__.__name__})") from exc
    except ssl.SSLCertVerificationError as exc:
        raise WireError("connection", f"connection failed: {exc.verify_message}") from exc
    except (OSError, ValueError, zlib.error) as exc:
        raise WireError("connection", f"connection failed: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__


def _read_response(reader: io.BufferedReader) -> tuple[int, str, Headers, bytes, bool]:
    """One response from ``reader``: status, reason, headers, decoded body, reusable?"""
    readline, read = reader.readline, reader.read
    while True:
        line = readline(MAX_LINE_BYTES + 1)
        if not line:
            raise ConnectionAbortedError("the server closed the connection without answering")
        if len(line) > MAX_LINE_BYTES:
            raise ValueError("the status line is too long")
        version, _, rest = line.rstrip(b"\r\n").partition(b" ")
        code, _, reason_bytes = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ValueError(f"not an HTTP/1.x status line: {line[:80]!r}")
        status = int(code)
        headers = _read_headers(readline)
        if not 100 <= status < 200:
            break  # 1xx are interim answers: the real one follows
    reason = reason_bytes.decode("latin-1").strip()
    keep_alive = version != b"HTTP/1.0" and "close" not in headers.get("connection", "").lower()
    if status in (204, 304):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(readline, read)
        keep_alive = keep_alive and "content-length" not in headers  # both: out of step
    elif "content-length" in headers:
        lengths = {v.strip() for v in headers["content-length"].split(",")}
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise ValueError(f"bad Content-Length: {headers['content-length']!r}")
        size = int(lengths.pop())
        if size > MAX_BODY_BYTES:
            raise ValueError(f"a body of {size} bytes is not an answer to this request")
        body = read(size)
        if len(body) < size:
            raise ValueError(f"the body ended after {len(body)} of {size} bytes")
    else:  # delimited by the end of the connection
        body, keep_alive = read(MAX_BODY_BYTES + 1), False
        if len(body) > MAX_BODY_BYTES:
            raise ValueError("the body is too large to be an answer to this request")
    return status, reason, headers, _decoded(body, headers.get("content-encoding")), keep_alive


def _read_headers(readline: Callable[[int], bytes]) -> Headers:
    headers = Headers()
    name = ""
    for _ in range(MAX_HEADERS + 1):
        line = readline(MAX_LINE_BYTES + 1)
        if len(line) > MAX_LINE_BYTES:
            raise ValueError("a header line is too long")
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise ValueError("the connection closed inside the headers")
        text = line.decode("latin-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and name:  # an obsolete folded line continues the last
            dict.__setitem__(headers, name, headers[name] + " " + text.strip())
            continue
        raw_name, colon, value = text.partition(":")
        if not colon:
            raise ValueError(f"not a header line: {text[:80]!r}")
        name, value = raw_name.strip().lower(), value.strip()
        previous = dict.get(headers, name)
        dict.__setitem__(headers, name, value if previous is None else f"{previous}, {value}")
    raise ValueError(f"more than {MAX_HEADERS} headers")


def _read_chunked(readline: Callable[[int], bytes], read: Callable[[int], bytes]) -> bytes:
    parts, total = [], 0
    while True:
        line = readline(MAX_LINE_BYTES + 1)
        size_text = line.split(b";", 1)[0].strip()
        if not line or not size_text:
            raise ValueError("the chunked body ended early")
        size = int(size_text, 16)
        total += size
        if total > MAX_BODY_BYTES:
            raise ValueError("the chunked body is too large to be an answer to this request")
        if size == 0:
            _read_headers(readline)  # trailers, up to the blank line
            return b"".join(parts)
        chunk = read(size)
        if len(chunk) < size or readline(MAX_LINE_BYTES + 1) not in (b"\r\n", b"\n"):
            raise ValueError("the chunked body ended early")
        parts.append(chunk)


def _decoded(body: bytes, encoding: str | None) -> bytes:
    for coding in reversed([c.strip().lower() for c in (encoding or "").split(",") if c.strip()]):
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            try:
                body = _inflate(body, zlib.MAX_WBITS)
            except zlib.error:  # some servers send raw deflate without the zlib wrapper
                body = _inflate(body, -zlib.MAX_WBITS)
        elif coding != "identity":
            break  # not asked for: left as is (the body check will say what it is)
    return body


def _inflate(data: bytes, wbits: int) -> bytes:
    """Every member of a gzip/zlib stream (zlib.decompress stops after the first), capped."""
    parts, total = [], 0
    while data:
        inflater = zlib.decompressobj(wbits)
        part = inflater.decompress(data, MAX_BODY_BYTES + 1 - total)
        total += len(part)
        if total > MAX_BODY_BYTES or inflater.unconsumed_tail:
            raise ValueError("the decoded body is too large to be an answer to this request")
        if not inflater.eof:
            raise zlib.error("the compressed body ended early")
        parts.append(part)
        data = inflater.unused_data
    return b"".join(parts)


class SessionWire:
    """A ``requests.Session`` (its proxies, adapters, CA bundle); closed if ``owned``."""

    def __init__(self, session: Session, *, owned: bool) -> None:
        self.session = session
        self._owned = owned

    def start(
        self, url: str, headers: Mapping[str, str], timeout: tuple[float, float]
    ) -> _LaterExchange:
        """requests cannot split an exchange: the request goes out when the reply is asked."""
        return _LaterExchange(lambda: self.get(url, headers, timeout))

    def get(self, url: str, headers: Mapping[str, str], timeout: tuple[float, float]) -> Reply:
        try:
            response = self.session.get(
                url, headers=dict(headers), timeout=timeout, allow_redirects=False, auth=_no_auth
            )
        except requests.exceptions.Timeout as exc:
            raise WireError("timeout", f"timed out ({exc.__class__.__name__})") from exc
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            raise WireError("connection", f"connection failed: {exc}") from exc
        except requests.exceptions.RequestException as exc:
            raise WireError("other", f"request failed: {exc}") from exc
        return Reply(
            response.status_code, response.reason or "", response.headers, response.content, url
        )

    def close(self) -> None:
        if self._owned:
            self.session.close()


class _LaterExchange:
    def __init__(self, send_and_read: Callable[[], Reply]) -> None:
        self._send_and_read = send_and_read

    def reply(self) -> Reply:
        return self._send_and_read()

    def cancel(self) -> None:
        pass


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """The transport sets the auth headers; this keeps requests from replacing them with
    credentials from ``.netrc`` (it reads it whenever a request carries no ``auth``)."""
    return request


def proxy_session(proxies: Mapping[str, str], *, maxsize: int, ca_bundle: str | None) -> Session:
    """A session for a proxied API: the environment was read once by ``resolve_settings``."""
    session = Session()
    session.trust_env = False
    session.proxies.update(dict(proxies))
    if ca_bundle:
        session.verify = ca_bundle
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(maxsize, 1))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def open_wire(
    *,
    session: Session | None,
    proxies: Mapping[str, str],
    maxsize: int,
    ca_bundle: str | None,
) -> Wire:
    """The wire for a client: the caller's session, a proxied session, or sockets directly."""
    if session is not None:
        return SessionWire(session, owned=False)
    if proxies:
        return SessionWire(proxy_session(proxies, maxsize=maxsize, ca_bundle=ca_bundle), owned=True)
    return SocketWire(maxsize=maxsize, ca_bundle=ca_bundle)
