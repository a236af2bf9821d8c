"""Settings: resolved once at the edge (argument > environment > default) and validated.

``resolve_settings`` is the only reader of the environment: the API key and base URL, the
proxy variables (``HTTPS_PROXY``, ``NO_PROXY``..., read by the standard library's rules) and
the CA bundle (``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``, ``CURL_CA_BUNDLE``). The validators
for request parameters live here too, so every bad input is rejected before a socket is
opened, and ``ListQuery`` carries a validated list request down the layers.
"""

from __future__ import annotations

import ipaddress
import math
import numbers
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

from .errors import AuthenticationError, InvalidRequestError

API_KEY_ENV = "EACHLABS_API_KEY"
BASE_URL_ENV = "EACHLABS_BASE_URL"
CA_BUNDLE_ENVS = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
"""Where a CA bundle (a file, or a directory of hashed certificates) may be named, first wins."""

DEFAULT_BASE_URL = "https://workflows.eachlabs.run/api/v1"
"""The seed's host; ``https://api.eachlabs.ai/v1`` (the vendor's current host) works too."""

DEFAULT_PAGE_SIZE = 100
MIN_PAGE_SIZE = 1
MAX_PAGE_SIZE = 100
DEFAULT_MAX_RETRIES = 5
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 60.0
DEFAULT_TIMEOUT_S = (DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S)
DEFAULT_CONCURRENCY = 8
"""Chosen from the latency benchmark (BENCHMARKS.md)."""
MAX_CONCURRENCY = 64
MAX_WORKFLOW_ID_LENGTH = 256

Timeout = float | int | tuple[float, float]

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


@dataclass(frozen=True)
class Settings:
    """Everything a load needs to know, validated. The repr never shows the key."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    page_size: int = DEFAULT_PAGE_SIZE
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: tuple[float, float] = DEFAULT_TIMEOUT_S
    concurrency: int = DEFAULT_CONCURRENCY
    proxies: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    ca_bundle: str | None = None

    def __repr__(self) -> str:
        return (
            f"Settings(api_key='***', base_url={self.base_url!r}, page_size={self.page_size}, "
            f"max_retries={self.max_retries}, timeout={self.timeout}, "
            f"concurrency={self.concurrency})"
        )


def resolve_settings(
    api_key: str | None = None,
    base_url: str | None = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    concurrency: int = DEFAULT_CONCURRENCY,
    allow_insecure: bool = False,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Merge arguments, environment and defaults into validated ``Settings``.

    Raises:
        AuthenticationError: no key in the argument nor in ``EACHLABS_API_KEY``.
        InvalidRequestError: any other value out of range or malformed.
    """
    env = os.environ if env is None else env
    settings = Settings(
        api_key=_validate_api_key(api_key if api_key is not None else env.get(API_KEY_ENV)),
        base_url=validate_base_url(
            base_url if base_url is not None else env.get(BASE_URL_ENV) or DEFAULT_BASE_URL,
            allow_insecure=allow_insecure,
        ),
        page_size=validate_page_size(page_size),
        max_retries=_validate_int("max_retries", max_retries, low=0, high=100),
        timeout=validate_timeout(timeout),
        concurrency=_validate_int("concurrency", concurrency, low=1, high=MAX_CONCURRENCY),
    )
    return replace(
        settings, proxies=_proxies_for(settings.base_url, env), ca_bundle=_ca_bundle(env)
    )


def _proxy_variables(env: Mapping[str, str]) -> dict[str, str]:
    """``{"https": ..., "all": ..., "no": ...}`` from ``*_proxy`` variables, as the standard
    library's ``getproxies_environment`` reads them (lower case wins) but from ``env``."""
    found: dict[str, str] = {}
    for lower_case_wins in (False, True):
        for name, value in env.items():
            if name.lower().endswith("_proxy") and (name.islower() == lower_case_wins):
                if value:
                    found[name[:-6].lower()] = value
                else:
                    found.pop(name[:-6].lower(), None)
    return found


def _proxies_for(base_url: str, env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The proxy per scheme for the API host, from the usual variables, read once.

    ``NO_PROXY`` is matched by the standard library (names, domain suffixes, ``*``, IP
    literals with or without brackets) and, as curl and requests do, CIDR ranges; loopback
    hosts (the sandbox) never go through a proxy.
    """
    variables = _proxy_variables(env)
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    named = f"[{host}]" if ":" in host else host  # IPv6 as URLs write it
    port = parts.port or (443 if parts.scheme == "https" else 80)
    no_proxy = {"no": variables.get("no", "")}
    forms = {host, named, f"{named}:{port}"}
    if (
        is_loopback_host(host)
        or any(proxy_bypass_environment(form, no_proxy) for form in forms)
        or _in_listed_network(host, no_proxy["no"])
    ):
        return ()
    pairs = []
    for scheme in ("http", "https"):
        proxy = variables.get(scheme) or variables.get("all")
        if proxy:
            pairs.append((scheme, validate_proxy_url(proxy)))
    return tuple(pairs)


def _in_listed_network(host: str, no_proxy: str) -> bool:
    """Is ``host`` an IP address inside one of the CIDR ranges ``NO_PROXY`` lists?"""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in no_proxy.split(","):
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry.strip(), strict=False):
                    return True
            except ValueError:
                continue
    return False


def validate_proxy_url(proxy: str) -> str:
    """An ``http://`` or ``https://`` proxy (a bare ``host:port`` means ``http://``).

    Never echoes the URL: it may hold credentials.
    """
    if "://" not in proxy:
        proxy = "http://" + proxy
    parts = urlsplit(proxy)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidRequestError(
            f"a {parts.scheme}:// proxy URL must be scheme://[user:password@]host[:port]; "
            "percent-encode '/', '?', '#' and '@' in its user and password"
        )
    try:
        valid_port = parts.port is None or parts.port > 0
    except ValueError:
        valid_port = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not valid_port:
        raise InvalidRequestError(
            f"proxy {parts.scheme}://{parts.hostname or ''}: only http:// and https:// "
            "proxies with a host and a valid port are supported (check HTTPS_PROXY, "
            "HTTP_PROXY and ALL_PROXY)"
        )
    credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    if not _is_latin1(credentials) or any(unicodedata.category(c) == "Cc" for c in credentials):
        raise InvalidRequestError(
            f"proxy {parts.scheme}://{parts.hostname}: its user or password has characters "
            "that cannot be sent in a Proxy-Authorization header"
        )
    return proxy


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _ca_bundle(env: Mapping[str, str]) -> str | None:
    """The first CA bundle named in ``CA_BUNDLE_ENVS``: an existing file or directory."""
    for name in CA_BUNDLE_ENVS:
        path = env.get(name)
        if path:
            if not os.path.exists(path):
                raise InvalidRequestError(
                    f"{name}={path!r}: no such file or directory (a CA bundle file, or a "
                    "directory of hashed certificates, is expected)"
                )
            return path
    return None


def _validate_api_key(api_key: object) -> str:
    if api_key is None or (isinstance(api_key, str) and not api_key.strip()):
        raise AuthenticationError(
            f"no API key: pass api_key=... or set the {API_KEY_ENV} environment variable"
        )
    if not isinstance(api_key, str):
        raise InvalidRequestError(f"api_key must be a string, got {type(api_key).__name__}")
    key = api_key.strip()
    if not key.isascii() or any(unicodedata.category(c) == "Cc" for c in key):
        # Never echo the value: it is a secret even when it is malformed.
        raise InvalidRequestError(
            "api_key contains characters that cannot be sent in an HTTP header"
        )
    return key


def validate_base_url(base_url: object, *, allow_insecure: bool = False) -> str:
    """Return the API root without a trailing slash; refuse what could leak the key.

    Plain ``http://`` is accepted only for loopback hosts (the sandbox) unless
    ``allow_insecure`` is set, because the key would travel in clear text.
    """
    if not isinstance(base_url, str) or not base_url.strip():
        raise InvalidRequestError("base_url must be a non-empty string such as " + DEFAULT_BASE_URL)
    bad = [(i, c) for i, c in enumerate(base_url) if c.isspace() or unicodedata.category(c) == "Cc"]
    if bad:
        # URL parsing would silently drop tabs and newlines, and a space would go out as is.
        # Not echoed: the URL may hold credentials.
        position, char = bad[0]
        raise InvalidRequestError(
            f"base_url must not contain spaces or control characters ({char!r} at "
            f"position {position})"
        )
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            f"base_url must be an http(s) URL with a host, such as {DEFAULT_BASE_URL}"
        )
    if parts.username is not None or parts.password is not None:
        # Do not echo it: the URL holds credentials.
        raise InvalidRequestError("base_url must not contain credentials; pass api_key instead")
    shown = f"{parts.scheme}://{parts.hostname}{parts.path}"  # a query may hold secrets
    if parts.query or parts.fragment:
        raise InvalidRequestError(f"base_url must not have a query string or fragment ({shown})")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidRequestError(f"base_url has an invalid port ({shown})") from None
    if parts.scheme == "http" and not allow_insecure and not is_loopback_host(parts.hostname):
        raise InvalidRequestError(
            f"refusing plain http:// to {parts.hostname}: the API key would travel in clear text; "
            "use https:// or pass allow_insecure=True"
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def is_loopback_host(hostname: str) -> bool:
    """True for ``localhost`` and loopback IP literals (where the sandbox runs)."""
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def validate_page_size(page_size: object) -> int:
    """The API's ``limit``: an int in 1..100."""
    return _validate_int("page_size", page_size, low=MIN_PAGE_SIZE, high=MAX_PAGE_SIZE)


def validate_timeout(timeout: object) -> tuple[float, float]:
    """Accept seconds or ``(connect, read)`` seconds; both must be finite and positive."""
    pair = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    if len(pair) != 2 or not all(_is_positive_number(t) for t in pair):
        raise InvalidRequestError(
            "timeout must be a positive number of seconds or a (connect, read) pair, "
            f"got {timeout!r}"
        )
    return (float(pair[0]), float(pair[1]))


@dataclass(frozen=True)
class ListQuery:
    """One workflow's executions list, as the API is asked for it: already validated.

    Built once at the edge (``list_query``) and passed down, so nothing below re-checks it.
    """

    workflow_id: str
    bulk_id: str | None = None
    limit: int = DEFAULT_PAGE_SIZE


def list_query(workflow_id: object, bulk_id: object = None, *, limit: object) -> ListQuery:
    """A ``ListQuery`` from user input, or ``InvalidRequestError`` before any request."""
    return ListQuery(
        validate_workflow_id(workflow_id), normalize_bulk_id(bulk_id), validate_page_size(limit)
    )


def validate_offset(offset: object) -> int:
    """An offset into the list: an int >= 0."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidRequestError(f"offset must be an integer >= 0, got {offset!r}")
    return offset


def validate_workflow_id(workflow_id: object) -> str:
    """A workflow UUID or slug that can travel as exactly one URL path segment."""
    if not isinstance(workflow_id, str):
        raise InvalidRequestError(
            f"workflow_id must be a string (UUID or slug), got {type(workflow_id).__name__}"
        )
    if not workflow_id.strip():
        raise InvalidRequestError("workflow_id must not be empty")
    if workflow_id in (".", ".."):
        raise InvalidRequestError(f"workflow_id {workflow_id!r} is not a workflow id or slug")
    if len(workflow_id) > MAX_WORKFLOW_ID_LENGTH:
        raise InvalidRequestError(
            f"workflow_id is {len(workflow_id)} characters long; at most {MAX_WORKFLOW_ID_LENGTH}"
        )
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in workflow_id):
        raise InvalidRequestError(f"workflow_id contains control characters: {workflow_id!r}")
    return workflow_id


def normalize_bulk_id(bulk_id: object) -> str | None:
    """None, or the bulk id as a canonical lower-case UUID string."""
    if bulk_id is None:
        return None
    if not isinstance(bulk_id, str) or not _UUID_RE.match(bulk_id):
        raise InvalidRequestError(
            f"bulk_id must be a UUID like 123e4567-e89b-12d3-a456-426614174000, got {bulk_id!r}"
        )
    return bulk_id.lower()


def _validate_int(name: str, value: object, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidRequestError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    if not low <= int(value) <= high:
        raise InvalidRequestError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def _is_positive_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
