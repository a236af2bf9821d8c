"""The wire: one GET out, the status, headers and body back. No policy lives here.

Retries, redirects, auth headers and error messages are the transport's (``transport``);
a wire only moves bytes and says when no HTTP answer came (``WireError``). Two wires:

- ``Urllib3Wire``, the default: urllib3's connection pool directly, without requests'
  per-request work (merging settings, cookies, hooks), which costs more than decoding a
  page (BENCHMARKS.md, scenario cpu);
- ``SessionWire``: a ``requests.Session``, for a custom session and for proxies.

Neither follows redirects nor reads ``.netrc`` or the environment. urllib3 and requests
enter the package here only. Imports nothing from the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import requests
import urllib3
from requests import Session
from requests.utils import DEFAULT_CA_BUNDLE_PATH

ACCEPT_ENCODING = urllib3.util.make_headers(accept_encoding=True)["accept-encoding"]
"""gzip and deflate (and br/zstd when their decoders are installed), decoded by the wire."""


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


class Wire(Protocol):
    def get(self, url: str, headers: Mapping[str, str], timeout: tuple[float, float]) -> Reply:
        """GET ``url`` (query included) with exactly these headers; no redirect followed."""
        ...

    def close(self) -> None: ...


class Urllib3Wire:
    """Keep-alive connections straight from urllib3's pool, ``maxsize`` per host.

    Certificates are checked against ``ca_bundle`` or certifi's bundle, as requests does.
    """

    def __init__(self, *, maxsize: int, ca_bundle: str | None = None) -> None:
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max(maxsize, 1),
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_bundle or DEFAULT_CA_BUNDLE_PATH,
        )

    def get(self, url: str, headers: Mapping[str, str], timeout: tuple[float, float]) -> Reply:
        try:
            response = self._pool.request(
                "GET",
                url,
                headers=dict(headers),
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.NewConnectionError as exc:  # a TimeoutError subclass
            raise WireError("connection", f"connection failed: {exc}") from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise WireError("timeout", f"timed out ({exc.__class__.__name__})") from exc
        except (
            urllib3.exceptions.ProtocolError,  # reset, truncated body, bad status line
            urllib3.exceptions.SSLError,
            urllib3.exceptions.DecodeError,
            urllib3.exceptions.ProxyError,
        ) as exc:
            raise WireError("connection", f"connection failed: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise WireError("other", f"request failed: {exc}") from exc
        return Reply(response.status, response.reason or "", response.headers, response.data, url)

    def close(self) -> None:
        self._pool.clear()


class SessionWire:
    """A ``requests.Session`` (its proxies, adapters, CA bundle); closed if ``owned``."""

    def __init__(self, session: Session, *, owned: bool) -> None:
        self.session = session
        self._owned = owned

    def get(self, url: str, headers: Mapping[str, str], timeout: tuple[float, float]) -> Reply:
        try:
            response = self.session.get(
                url, headers=dict(headers), timeout=timeout, allow_redirects=False, auth=_NO_AUTH
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


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """The transport sets the auth headers; this keeps requests from replacing them with
    credentials from ``.netrc`` (it reads it whenever a request carries no ``auth``)."""
    return request


_NO_AUTH = _no_auth


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
    """The wire for a client: the caller's session, a proxied session, or urllib3 directly."""
    if session is not None:
        return SessionWire(session, owned=False)
    if proxies:
        return SessionWire(proxy_session(proxies, maxsize=maxsize, ca_bundle=ca_bundle), owned=True)
    return Urllib3Wire(maxsize=maxsize, ca_bundle=ca_bundle)
