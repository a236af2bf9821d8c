"""The wire: one GET out, the status, headers and body back, on urllib3. No policy lives here.

Retries, redirects, auth headers and error messages are the transport's (``transport``);
the wire moves bytes and says when no HTTP answer came (``WireError``).

- ``Wire``: urllib3's ``HTTPConnection``/``HTTPSConnection`` in a small idle pool of our
  own. urllib3's pools send a request and read its answer in one call; the scans send a
  request now and read its answer later, so the server works while this side decodes:
  ``send`` returns the connection the request went out on, ``receive`` reads the answer.
  Framing, chunked and content decoding (gzip, every member; deflate), TLS (against the CA
  bundle, a file or a directory, or certifi's), IRIs (IDNA 2008 and percent-encoding, by
  ``parse_url``) and proxies (absolute URLs for plain HTTP, ``CONNECT`` tunnels for HTTPS,
  credentials) are urllib3's. An idle connection the server closed, or one with bytes past
  its answer, is never reused (urllib3's ``is_connected``).
- ``session_get``: a caller's ``requests.Session``, which cannot split an exchange.

What this module adds is bounds: a body over ``max_body_bytes`` (decoded size included) is
refused, and the bytes read for one answer are budgeted, so a broken framing (a negative
chunk size, which http.client reads as "to the end of the connection") ends in an error in
bounded memory. ``ssl`` is imported only to tell certificate failures apart.
requests and urllib3 enter the package here only.
"""

from __future__ import annotations

import http.client
import os
import re
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal
from urllib.parse import unquote
from weakref import WeakKeyDictionary

import certifi
import requests
import urllib3.exceptions as u3
from requests import Session as Session
from urllib3.connection import HTTPConnection, HTTPSConnection, ProxyConfig
from urllib3.response import HTTPResponse
from urllib3.util import Url, make_headers, parse_url

ACCEPT_ENCODING = make_headers(accept_encoding=True)["accept-encoding"]
"""What urllib3 can decode here (gzip and deflate; br and zstd where installed)."""
MAX_BODY_BYTES = 256 * 1024 * 1024
"""A page of executions is well under 1 MB; anything near this is not an answer (a garbled
length, a decompression bomb) and is refused before it is read whole."""
HEADER_ALLOWANCE_BYTES = 8 * 1024 * 1024
"""Raw bytes an answer may spend beyond its body (http.client caps headers at 100 lines)."""
READ_CHUNK_BYTES = 256 * 1024

Connection = HTTPConnection
"""The handle of a request on its way: the urllib3 connection it went out on."""
Kind = Literal["timeout", "connection", "tls", "proxy", "proxy_auth", "refused", "other"]
"""``proxy``: the proxy failed (transient); ``proxy_auth``/``refused``: it said no (a 407, or
another 4xx to ``CONNECT``); ``other``: the request cannot be sent at all."""
Origin = tuple[str, str, int]
Timeout = tuple[float, float]


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

    def __init__(self, kind: Kind, text: str) -> None:
        super().__init__(text)
        self.kind = kind


class Wire:
    """Connections per origin, up to ``maxsize`` idle ones, optionally through ``proxy``.

    Args:
        maxsize: idle connections kept (the client's concurrency).
        ca_bundle: a CA file or a directory of hashed certificates (default: certifi's).
        proxy: ``http://`` or ``https://`` proxy URL, credentials included, or None.
        max_body_bytes: the largest answer body accepted, decoded size included.
    """

    def __init__(
        self,
        *,
        maxsize: int,
        ca_bundle: str | None = None,
        proxy: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.maxsize = max(maxsize, 1)
        self.max_body_bytes = max_body_bytes
        self._tls = _tls_options(ca_bundle)
        proxy_url = _proxy_url(proxy) if proxy else None
        self._proxy_headers = _proxy_headers(proxy_url)  # the credentials live here only
        self._proxy = proxy_url._replace(auth=None) if proxy_url else None
        self._idle: list[tuple[Origin, HTTPConnection]] = []
        self._origins: WeakKeyDictionary[HTTPConnection, Origin] = WeakKeyDictionary()
        self._lock = threading.Lock()
        self._closed = False
        self._response_class = partial(
            _BudgetedResponse, budget=max_body_bytes + HEADER_ALLOWANCE_BYTES
        )

    def __repr__(self) -> str:
        through = f", proxy={_shown(self._proxy)!r}" if self._proxy else ""
        return f"Wire(maxsize={self.maxsize}{through})"

    def send(self, url: str, headers: Mapping[str, str], timeout: Timeout) -> HTTPConnection:
        """Send a GET for ``url`` (query included) with exactly these headers, now.

        Returns the connection to ``receive`` the answer from (or ``discard``). Raises
        ``WireError`` if it cannot be sent. No redirect is followed.
        """
        _check_headers(headers)
        with self._wire_errors():
            target = parse_url(url)  # IRIs: the host in IDNA, the rest percent-encoded
            origin = _origin(target)
            connection = self._checkout(origin) or self._connect(origin, timeout)
            forwarded = self._proxy is not None and target.scheme == "http"
            if forwarded:  # the proxy reads this request: its credentials go with it
                headers = {**headers, **self._proxy_headers}
            try:
                connection.timeout = timeout[1]
                connection.request(
                    "GET",
                    target.url if forwarded else target.request_uri,
                    headers=headers,
                    preload_content=False,
                )
            except BaseException:
                connection.close()
                raise
            return connection

    def receive(self, connection: HTTPConnection, url: str) -> Reply:
        """The answer to the request ``send`` put on ``connection`` (for ``url``); the
        connection goes back to the idle pool if the server keeps it open and nothing else
        is on it."""
        try:
            with self._wire_errors():
                response = connection.getresponse()
                body = self._read_body(response)
        except BaseException:
            connection.close()
            raise
        self._checkin(connection)
        return Reply(response.status, response.reason or "", response.headers, body, url)

    def discard(self, connection: HTTPConnection) -> None:
        """Drop a request on its way: its answer, if any, is never read."""
        connection.close()

    def close(self) -> None:
        """Close the idle connections; those still in use are closed when they come back."""
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for _, connection in idle:
            connection.close()

    def _read_body(self, response: HTTPResponse) -> bytes:
        """The decoded body, read in bounded steps and refused past ``max_body_bytes``."""
        cap = self.max_body_bytes
        length = response.headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > cap:
            raise WireError("connection", f"a body of {int(length)} bytes is not an answer")
        if length is not None and "content-encoding" not in response.headers:
            return response.read()  # bounded by Content-Length, checked above
        parts, total = [], 0
        while chunk := response.read(READ_CHUNK_BYTES):
            total += len(chunk)
            if total > cap:
                raise WireError("connection", "the decoded body is too large to be an answer")
            parts.append(chunk)
        return b"".join(parts)

    def _checkout(self, origin: Origin) -> HTTPConnection | None:
        """The most recently used idle connection to ``origin`` the server kept open."""
        while True:
            with self._lock:
                found = [i for i, (o, _) in enumerate(self._idle) if o == origin]
                if not found:
                    return None
                _, connection = self._idle.pop(found[-1])
            if connection.is_connected:
                return connection
            connection.close()

    def _checkin(self, connection: HTTPConnection) -> None:
        origin = self._origins.get(connection)
        if origin is not None and connection.is_connected:  # not closed, nothing unread
            with self._lock:
                if not self._closed and len(self._idle) < self.maxsize:
                    self._idle.append((origin, connection))
                    return
        connection.close()

    def _connect(self, origin: Origin, timeout: Timeout) -> HTTPConnection:
        scheme, host, port = origin
        proxy = self._proxy
        tls = self._tls if scheme == "https" or (proxy and proxy.scheme == "https") else {}
        common: dict[str, Any] = {"timeout": timeout[0], **tls}
        if proxy is None:
            cls = HTTPSConnection if scheme == "https" else HTTPConnection
            connection = cls(host, port, **common)
        else:
            cls = HTTPSConnection if "https" in (scheme, proxy.scheme) else HTTPConnection
            config = ProxyConfig(None, False, None, None)
            connection = cls(
                proxy.host or "", proxy.port, proxy=proxy, proxy_config=config, **common
            )
            if scheme == "https":  # a CONNECT tunnel, TLS with the API inside it
                connection.set_tunnel(
                    host, port, headers=self._proxy_headers, scheme=proxy.scheme or "http"
                )
        connection.response_class = self._response_class  # type: ignore[assignment]
        connection.connect()
        self._origins[connection] = origin
        return connection

    @contextmanager
    def _wire_errors(self) -> Iterator[None]:
        try:
            yield
        except WireError:
            raise
        except Exception as exc:
            raise _wire_error(exc, self._proxy) from exc


class _BudgetedResponse(http.client.HTTPResponse):
    """http.client's response, reading its socket through a byte budget."""

    def __init__(self, sock: Any, *args: Any, budget: int, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = _ByteBudget(self.fp, budget)  # type: ignore[assignment]


class _ByteBudget:
    """A reader that raises once more than ``budget`` bytes went through it; a read "to
    the end" goes in bounded steps, so it is refused before it fills memory."""

    def __init__(self, raw: Any, budget: int) -> None:
        self._raw = raw
        self._left = budget

    def _spend(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            raise WireError("connection", "the answer is too large (broken framing?)")
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self._raw.read1(READ_CHUNK_BYTES):
                parts.append(self._spend(chunk))
            return b"".join(parts)
        return self._spend(self._raw.read(min(size, self._left + 1)))

    def read1(self, size: int = -1) -> bytes:
        limit = self._left + 1 if size < 0 else min(size, self._left + 1)
        return self._spend(self._raw.read1(limit))

    def readinto(self, buffer: Any) -> int:
        count: int = self._raw.readinto(memoryview(buffer).cast("B")[: self._left + 1])
        self._left -= count
        if self._left < 0:
            raise WireError("connection", "the answer is too large (broken framing?)")
        return count

    def readline(self, limit: int = -1) -> bytes:
        cap = self._left + 1 if limit < 0 else min(limit, self._left + 1)
        return self._spend(self._raw.readline(cap))

    def peek(self, size: int = 0) -> bytes:
        data: bytes = self._raw.peek(size)
        return data

    def close(self) -> None:
        self._raw.close()

    def flush(self) -> None:
        self._raw.flush()

    def fileno(self) -> int:
        number: int = self._raw.fileno()
        return number

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)


def _check_headers(headers: Mapping[str, str]) -> None:
    """Refuse a header value that cannot go out as is, before http.client or requests
    would put it (the key, maybe) in an exception's text."""
    for name, value in headers.items():
        if not value.isascii() or any(c in value for c in "\r\n\0"):
            raise WireError("other", f"request failed: the {name} header cannot be sent")


def _origin(target: Url) -> Origin:
    scheme = target.scheme or ""
    if scheme not in ("http", "https") or not target.host:
        raise WireError("other", f"request failed: cannot send to {scheme}://{target.host or ''}")
    host = target.host.strip("[]")
    return (scheme, host, target.port or (443 if scheme == "https" else 80))


def _tls_options(ca_bundle: str | None) -> dict[str, Any]:
    """Certificates checked against a CA file or directory (default: certifi's bundle)."""
    if ca_bundle and os.path.isdir(ca_bundle):
        return {"cert_reqs": "CERT_REQUIRED", "ca_cert_dir": ca_bundle}
    return {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_bundle or certifi.where()}


def _proxy_url(proxy: str) -> Url:
    url = parse_url(proxy)
    return url._replace(port=url.port or (443 if url.scheme == "https" else 80))


def _proxy_headers(proxy: Url | None) -> dict[str, str]:
    """``Proxy-Authorization`` from the proxy URL's credentials (percent-decoded)."""
    if proxy is None or not proxy.auth:
        return {}
    user, _, password = proxy.auth.partition(":")
    return make_headers(proxy_basic_auth=f"{unquote(user)}:{unquote(password)}")


def _shown(proxy: Url | None) -> str:
    """A proxy as messages show it: never its credentials."""
    return "" if proxy is None else f"{proxy.scheme}://{proxy.host}:{proxy.port}"


def _wire_error(exc: BaseException, proxy: Url | None) -> WireError:
    """urllib3's, http.client's, socket and TLS errors as one ``WireError`` (no header echoed)."""
    via = f" (through proxy {_shown(proxy)})" if proxy else ""
    tunnel = re.match(r"Tunnel connection failed: (\d{3})(.*)", str(exc))
    if tunnel:  # http.client's words for the proxy's answer to CONNECT
        status = int(tunnel.group(1))
        kind: Kind = "proxy_auth" if status == 407 else "refused" if status < 500 else "proxy"
        answer = f"HTTP {status}{tunnel.group(2).rstrip()}"
        return WireError(kind, f"proxy {_shown(proxy)} refused the tunnel: {answer}")
    if isinstance(exc, u3.NewConnectionError) and proxy is not None:
        return WireError("proxy", f"cannot connect to proxy {_shown(proxy)}: {_reason(exc)}")
    tls = _tls_problem(exc)
    if tls is not None:
        return WireError("tls", f"TLS failed{via}: {tls}")
    if isinstance(exc, u3.NewConnectionError):
        return WireError("connection", f"connection failed: {_reason(exc)}")
    if isinstance(exc, (TimeoutError, u3.TimeoutError)):
        return WireError("timeout", f"timed out{via} ({exc.__class__.__name__})")
    if isinstance(exc, (OSError, http.client.HTTPException, u3.HTTPError)):
        return WireError("connection", f"connection failed{via}: {_reason(exc)}")
    # ValueError and the like: a request that cannot be put on the wire. Its text may hold
    # a header value (the key): never echoed.
    return WireError("other", f"request failed: cannot be sent ({exc.__class__.__name__})")


def _tls_problem(exc: BaseException) -> str | None:
    """What is wrong with the certificate or the TLS handshake, if that is the failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            detail = getattr(seen, "verify_message", None) or seen.strerror or str(seen)
            return f"certificate verify failed: {detail}"
        if isinstance(seen, u3.SSLError) or type(seen).__name__ == "CertificateError":
            return str(seen) or seen.__class__.__name__
        if isinstance(seen, ssl.SSLError) and not isinstance(
            seen, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
        ):
            return getattr(seen, "reason", None) or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: BaseException) -> str:
    """The innermost useful text, without urllib3's object reprs."""
    if isinstance(exc, u3.NewConnectionError):
        text = str(exc).split(": ", 1)[-1]
        return text or exc.__class__.__name__
    if isinstance(exc, u3.ProtocolError) and len(exc.args) > 1:
        return f"{exc.args[0]} ({exc.args[1]!r})"
    return str(exc) or exc.__class__.__name__


def session_get(session: Session, url: str, headers: Mapping[str, str], timeout: Timeout) -> Reply:
    """One GET through a caller's ``requests.Session`` (its proxies, adapters, CA bundle)."""
    _check_headers(headers)
    try:
        response = session.get(
            url, headers=dict(headers), timeout=timeout, allow_redirects=False, auth=_no_auth
        )
    except requests.exceptions.SSLError as exc:
        raise WireError("tls", f"TLS failed: {_tls_problem(exc) or exc}") from exc
    except requests.exceptions.ProxyError as exc:
        raise WireError("proxy", f"the session's proxy failed: {_innermost(exc)}") from exc
    except requests.exceptions.Timeout as exc:
        raise WireError("timeout", f"timed out ({exc.__class__.__name__})") from exc
    except (
        requests.exceptions.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
    ) as exc:
        raise WireError("connection", f"connection failed: {_innermost(exc)}") from exc
    except requests.exceptions.RequestException as exc:
        raise WireError("other", f"request failed: {exc.__class__.__name__}") from exc
    return Reply(
        response.status_code, response.reason or "", response.headers, response.content, url
    )


def _innermost(exc: BaseException) -> str:
    """requests' "Max retries exceeded with url: ..." without the noise: the root reason."""
    reason: Any = exc.args[0] if exc.args else exc
    if isinstance(reason, u3.MaxRetryError) and reason.reason is not None:
        reason = reason.reason
    if isinstance(reason, u3.ProxyError) and len(reason.args) > 1:
        reason = reason.args[1]
    return _reason(reason) if isinstance(reason, BaseException) else str(reason)


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """The transport sets the auth headers; this keeps requests from replacing them with
    credentials from ``.netrc`` (it reads it whenever a request carries no ``auth``)."""
    return request
