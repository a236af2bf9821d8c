"""Settings: resolved once at the edge (argument > environment > default) and validated.

``resolve_settings`` is the only reader of the environment. The validators for request
parameters live here too, so every bad input is rejected before a socket is opened.
Imports only ``errors``.
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
from urllib.parse import urlsplit

from .errors import AuthenticationError, InvalidRequestError

API_KEY_ENV = "EACHLABS_API_KEY"
BASE_URL_ENV = "EACHLABS_BASE_URL"

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
        settings,
        proxies=_proxies_for(settings.base_url, env),
        ca_bundle=env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or None,
    )


def _proxies_for(base_url: str, env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The proxy per scheme for the API host, from the usual variables, read once.

    The same variables requests honours (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``...);
    loopback hosts (the sandbox) never go through a proxy.
    """

    def get(name: str) -> str | None:
        return env.get(name) or env.get(name.upper())

    host = (urlsplit(base_url).hostname or "").lower()
    if is_loopback_host(host) or _bypasses_proxy(host, get("no_proxy") or ""):
        return ()
    pairs = []
    for scheme in ("http", "https"):
        proxy = get(f"{scheme}_proxy") or get("all_proxy")
        if proxy:
            pairs.append((scheme, proxy))
    return tuple(pairs)


def _bypasses_proxy(host: str, no_proxy: str) -> bool:
    for entry in no_proxy.replace(" ", ",").split(","):
        entry = entry.strip().lower().split(":")[0].lstrip(".")
        if not entry:
            continue
        if entry == "*" or host == entry or host.endswith("." + entry):
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            pass
    return False


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
    parts = urlsplit(base_url.strip())
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
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not low <= value <= high
    ):
        raise InvalidRequestError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def _is_positive_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
