"""What a failed exchange means: the one place HTTP answers and wire errors become our errors.

Every message names the workflow and offset, says what the API said (its ``error``,
``code``, ``details`` and ``X-Request-Id``), and has the API key blanked out, before
anything is cut or parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urljoin, urlsplit

from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    EachlabsError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
    TLSError,
    TransportError,
    WorkflowNotFoundError,
    describe_location,
)
from .retry import parse_retry_after
from .wire import Reply, WireError

MAX_MESSAGE_CHARS = 300
MIN_REDACTED_KEY = 4
"""Shorter 'keys' (tests, typos) are not blanked out of messages: they would blank out words."""
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
_STATUS_ERRORS: dict[int, type[EachlabsError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: WorkflowNotFoundError,
    407: AuthenticationError,
    429: RateLimitError,
    **dict.fromkeys(RETRYABLE_STATUSES, ServerError),
}
_WIRE_ERRORS: dict[str, type[EachlabsError]] = {
    "timeout": TransportError,
    "connection": TransportError,
    "proxy": TransportError,
    "tls": TLSError,
    "proxy_auth": AuthenticationError,
}

Where = tuple[str | None, int | None]
"""The workflow and offset a request was for (either may be unknown)."""


def located(
    cls: type[EachlabsError], text: str, key: str, where: Where, **kwargs: Any
) -> EachlabsError:
    """``cls`` with a message that starts with the workflow and offset, the key blanked out."""
    workflow_id, offset = where
    message = redact(f"{describe_location(workflow_id, offset)}: {text}", key)
    return cls(message, workflow_id=workflow_id, offset=offset, **kwargs)


def status_error(reply: Reply, key: str, where: Where) -> EachlabsError:
    """The error an HTTP error status stands for (see ``errors`` for the tree)."""
    body = redacted_body(reply.body, key)
    api_message, code, details = _error_fields(body, reply.reason, key)
    request_id = _request_id(reply, key)
    text = f"HTTP {reply.status}: {api_message}"
    if reply.status == 407:
        text += " (the proxy refused its credentials: check the proxy URL's user and password)"
    if code:
        text += f" (code {code})"
    if details not in (None, "", {}, []):
        text += f"; details: {_compact(details)}"
    if request_id:
        text += f" [request id {request_id}]"
    kwargs: dict[str, Any] = {
        "status_code": reply.status,
        "api_message": api_message,
        "code": code,
        "details": details,
        "request_id": request_id,
    }
    cls = _STATUS_ERRORS.get(reply.status, APIError)
    if cls in (RateLimitError, ServerError):
        kwargs["retry_after"] = parse_retry_after(reply.headers.get("Retry-After"))
    return located(cls, text, key, where, **kwargs)


def wire_error(exc: WireError, key: str, where: Where) -> EachlabsError:
    """No HTTP answer: transient (timeouts, connections, a failing proxy) or permanent
    (certificates and TLS, a proxy that refuses the tunnel or its credentials)."""
    return located(_WIRE_ERRORS.get(exc.kind, APIError), str(exc), key, where)


def body_error(reply: Reply, exc: InvalidResponseError, key: str, where: Where) -> EachlabsError:
    """A success status whose body is not what was expected (retryable)."""
    snippet = _snippet(redacted_body(reply.body, key))
    text = f"HTTP {reply.status}: {exc.message} ({snippet})"
    request_id = _request_id(reply, key)
    if request_id:
        text += f" [request id {request_id}]"
    return located(
        InvalidResponseError, text, key, where, status_code=reply.status, request_id=request_id
    )


def redirect_target(reply: Reply, key: str, where: Where) -> str | None:
    """Where a redirect points, if it is one; only within the API's origin, because the
    key would go along. Raises ``APIError`` for any other origin."""
    if reply.status not in (301, 302, 303, 307, 308) or "location" not in reply.headers:
        return None
    request_id = _request_id(reply, key)
    try:
        target = urljoin(reply.url, reply.headers["location"])
        elsewhere = origin(target) != origin(reply.url)
    except ValueError:  # a port out of range, a broken IPv6 literal...
        target, elsewhere = "", True
    if not target or elsewhere:
        shown = origin_text(target) if target else "an unusable Location"
        raise located(
            APIError,
            f"HTTP {reply.status} redirect to another origin ({shown}) refused: the API key "
            "would be sent there; if that host is trusted, set base_url to it",
            key,
            where,
            status_code=reply.status,
            request_id=request_id,
        )
    return target


def redact(text: str, key: str) -> str:
    return text.replace(key, "***") if len(key) >= MIN_REDACTED_KEY else text


def redacted_body(body: bytes, key: str) -> bytes:
    """The whole body with the key blanked out, before anything is cut or parsed."""
    raw = key.encode()
    return body.replace(raw, b"***") if len(raw) >= MIN_REDACTED_KEY else body


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port or default_port)


def origin_text(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _request_id(reply: Reply, key: str) -> str | None:
    """The vendor's ``X-Request-Id`` (sent with every error answer), key blanked out."""
    value = reply.headers.get("X-Request-Id")
    return _compact(redact(value, key)) if value else None


def _error_fields(body: bytes, reason: str | None, key: str) -> tuple[str, str | None, Any]:
    """The API's ``error``, ``code`` and ``details``, or a cleaned snippet of a non-JSON body.

    The key is blanked out again after parsing: JSON may spell it with escapes (``\\/``)
    that the raw body did not show.
    """
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and ("error" in parsed or "message" in parsed):
        parsed = _redacted(parsed, key)
        message = parsed.get("error") or parsed.get("message")
        code = parsed.get("code")
        return (
            _compact(message),
            _compact(code) if isinstance(code, str) else None,
            parsed.get("details"),
        )
    snippet = _snippet(body)
    return (snippet if snippet != "empty body" else reason or snippet, None, None)


def _redacted(value: Any, key: str) -> Any:
    """``value`` (parsed JSON) with the key blanked out of every string in it."""
    if isinstance(value, str):
        return redact(value, key)
    if isinstance(value, list):
        return [_redacted(v, key) for v in value]
    if isinstance(value, dict):
        return {redact(str(k), key): _redacted(v, key) for k, v in value.items()}
    return value


def _snippet(body: bytes) -> str:
    """A short, single-line view of a body for error messages (HTML tags dropped)."""
    text = body[:4000].decode("utf-8", errors="replace")
    text = re.sub(r"<[^>]*>", " ", text)
    text = " ".join(text.split())
    if not text:
        return "empty body"
    return text[:MAX_MESSAGE_CHARS] + ("..." if len(text) > MAX_MESSAGE_CHARS else "")


def _compact(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text[:MAX_MESSAGE_CHARS] + ("..." if len(text) > MAX_MESSAGE_CHARS else "")
