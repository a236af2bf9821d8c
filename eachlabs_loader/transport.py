"""EachlabsClient: the one place that speaks HTTP.

It owns the wire (``wire``: urllib3 directly, or a ``requests.Session``), the auth headers,
timeouts and redirects, and turns one exchange into decoded JSON or one of our exceptions.
Every call goes through the retry policy. Imports ``config``, ``wire``, ``retry``, ``codec``,
``pagination`` (for the page shape), ``parallel`` and ``errors``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode, urljoin, urlsplit

from .codec import PageDecoder
from .config import Settings, normalize_bulk_id, validate_page_size, validate_workflow_id
from .errors import (
    APIError,
    AuthenticationError,
    EachlabsError,
    InvalidRequestError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
    TransportError,
    WorkflowNotFoundError,
    describe_location,
)
from .pagination import Page, iter_pages, parse_workflows_page
from .parallel import ConcurrentScan
from .retry import RetryPolicy, parse_retry_after
from .throttle import Throttle
from .wire import ACCEPT_ENCODING, Exchange, Reply, Session, Wire, WireError, open_wire

logger = logging.getLogger("eachlabs_loader")

T = TypeVar("T")

USER_AGENT = "eachlabs-loader"
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
_MAX_MESSAGE_CHARS = 300
MIN_REDACTED_KEY = 4
"""Shorter 'keys' (tests, typos) are not blanked out of messages: they would blank out words."""


@dataclass
class ClientStats:
    """Counters a load reports: HTTP requests sent and retries made."""

    requests: int = 0
    retries: int = 0


class EachlabsClient:
    """A connection-reusing client for the list-executions endpoint.

    Args:
        settings: resolved ``Settings`` (see ``resolve_settings``).
        session: a ``requests.Session`` to send through (proxies, adapters) instead of
            urllib3's pool; the client does not close it.
        retry_policy: overrides the policy built from ``settings.max_retries``.
        throttle: the gate shared by all requests (default: AIMD up to ``settings.concurrency``).

    Example:
        >>> with EachlabsClient(settings) as client:          # doctest: +SKIP
        ...     for page in client.iter_pages("my-workflow"):
        ...         print(page.offset, len(page.rows))
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session: Session | None = None,
        retry_policy: RetryPolicy | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.settings = settings
        self.retry_policy = retry_policy or RetryPolicy(max_retries=settings.max_retries)
        self.throttle = throttle or Throttle(
            settings.concurrency, max_pause_s=self.retry_policy.max_wait_s
        )
        self.stats = ClientStats()
        self.retry_listeners: list[Callable[[BaseException, float], None]] = []
        self._wire: Wire = open_wire(
            session=session,
            proxies=dict(settings.proxies),
            maxsize=settings.concurrency,
            ca_bundle=settings.ca_bundle,
        )
        self._origin = _origin(settings.base_url)

        self._lock = threading.Lock()
        self._page_decoder = PageDecoder()

    def __repr__(self) -> str:
        return f"EachlabsClient(base_url={self.settings.base_url!r})"

    def __enter__(self) -> EachlabsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (a session given to the client stays open)."""
        self._wire.close()

    def executions_url(self, workflow_id: str) -> str:
        """The list URL; the (validated) id travels as exactly one path segment."""
        segment = quote(validate_workflow_id(workflow_id), safe="")
        return f"{self.settings.base_url}/workflows/{segment}/executions"

    def fetch_executions_page(
        self, workflow_id: str, *, offset: int, limit: int, bulk_id: str | None = None
    ) -> Page:
        """One page of executions, retried per the policy; arguments are checked first."""
        return self.start_executions_page(
            workflow_id, offset=offset, limit=limit, bulk_id=bulk_id
        ).result()

    def start_executions_page(
        self,
        workflow_id: str,
        *,
        offset: int,
        limit: int,
        bulk_id: str | None = None,
        early: bool = False,
    ) -> Pending[Page]:
        """``fetch_executions_page`` in two steps: the request goes out now (``early``: if
        a throttle slot is free, see ``start_parsed``), and ``result()`` reads the page
        (retrying as needed) when the caller is ready for it."""
        url = self.executions_url(workflow_id)
        limit = validate_page_size(limit)
        bulk_id = normalize_bulk_id(bulk_id)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidRequestError(f"offset must be an integer >= 0, got {offset!r}")
        params: dict[str, str | int] = {"offset": offset, "limit": limit}
        if bulk_id is not None:
            params["bulk_id"] = bulk_id
        return self.start_parsed(
            url,
            params,
            parse=lambda data: self._page_decoder.decode(data, offset=offset, limit=limit),
            workflow_id=workflow_id,
            offset=offset,
            early=early,
        )

    def iter_pages(
        self,
        workflow_id: str,
        bulk_id: str | None = None,
        *,
        page_size: int | None = None,
        start_offset: int = 0,
    ) -> Iterator[Page]:
        """Pages lazily, from ``start_offset`` to the end of the list."""
        limit = self.settings.page_size if page_size is None else validate_page_size(page_size)
        validate_workflow_id(workflow_id)
        bulk_id = normalize_bulk_id(bulk_id)
        yield from iter_pages(
            lambda offset: self.fetch_executions_page(
                workflow_id, offset=offset, limit=limit, bulk_id=bulk_id
            ),
            limit=limit,
            start_offset=start_offset,
            workflow_id=workflow_id,
            start_page=lambda offset: self.start_executions_page(
                workflow_id, offset=offset, limit=limit, bulk_id=bulk_id, early=True
            ),
        )

    def iter_workflow_pages(self, *, page_size: int | None = None) -> Iterator[Page]:
        """The organisation's workflows (``GET {base}/workflows``), page by page.

        Same rules as executions: next offset = offset sent + rows received, the list ends
        on a short page; the response's ``offset`` (the vendor's next start) is a hint.
        """
        limit = self.settings.page_size if page_size is None else validate_page_size(page_size)
        url = f"{self.settings.base_url}/workflows"

        def fetch(offset: int) -> Page:
            return self.get_parsed(
                url,
                {"offset": offset, "limit": limit},
                parse=lambda data: parse_workflows_page(
                    _decode_json(data), offset=offset, limit=limit
                ),
                offset=offset,
            )

        yield from iter_pages(fetch, limit=limit)

    def scan(
        self,
        workflow_id: str,
        bulk_id: str | None = None,
        *,
        page_size: int | None = None,
        concurrency: int | None = None,
    ) -> ConcurrentScan:
        """Every page of a listing, ``concurrency`` at a time, as a verified chain.

        Iterate it for the pages; its ``stats`` say what was re-fetched. ``concurrency=1``
        (or ``settings.concurrency`` of 1) is the plain sequential scan of ``iter_pages``.
        """
        limit = self.settings.page_size if page_size is None else validate_page_size(page_size)
        validate_workflow_id(workflow_id)
        bulk_id = normalize_bulk_id(bulk_id)
        return ConcurrentScan(
            lambda offset: self.fetch_executions_page(
                workflow_id, offset=offset, limit=limit, bulk_id=bulk_id
            ),
            limit=limit,
            concurrency=self.settings.concurrency if concurrency is None else concurrency,
            workflow_id=workflow_id,
            start_page=lambda offset: self.start_executions_page(
                workflow_id, offset=offset, limit=limit, bulk_id=bulk_id, early=True
            ),
        )

    def get_parsed(
        self,
        url: str,
        params: dict[str, str | int],
        *,
        parse: Callable[[bytes], T],
        workflow_id: str | None = None,
        offset: int | None = None,
    ) -> T:
        """GET ``url`` and ``parse`` its body, retrying what is transient (bad bodies included).

        ``parse`` raises ``InvalidResponseError`` for a body that is not what it expects.
        """
        return self.start_parsed(
            url, params, parse=parse, workflow_id=workflow_id, offset=offset
        ).result()

    def start_parsed(
        self,
        url: str,
        params: dict[str, str | int],
        *,
        parse: Callable[[bytes], T],
        workflow_id: str | None = None,
        offset: int | None = None,
        early: bool = False,
    ) -> Pending[T]:
        """``get_parsed`` in steps: the first attempt is sent now (the server works while
        the caller does), ``wait()`` receives its answer, ``result()`` parses it and makes
        any retries. ``early``: sent now only if a throttle slot is free (else when the
        answer is asked for), on a slot that never makes another request wait."""
        first: _Sent | Reply | EachlabsError | None
        try:
            first = self._start(url, params, workflow_id=workflow_id, offset=offset, early=early)
        except EachlabsError as exc:  # not even sent: the first attempt's outcome
            first = exc

        def wait() -> bool:
            nonlocal first
            if isinstance(first, _Sent):
                try:
                    first = first.reply()
                except EachlabsError as exc:  # the first attempt's outcome, for result()
                    first = exc
            return isinstance(first, Reply) and first.status < 300

        retried = False  # the first attempt may be sent only when asked for (not early)

        def attempt() -> T:
            nonlocal first, retried
            outcome, first = first, None
            retried, is_retry = True, retried
            if isinstance(outcome, EachlabsError):
                raise outcome
            if outcome is None:
                outcome = self._start(
                    url, params, workflow_id=workflow_id, offset=offset, retry=is_retry
                )
                assert outcome is not None  # not early: sent, or raised
            reply = outcome if isinstance(outcome, Reply) else outcome.reply()
            if reply.status >= 300:
                raise self._status_error(reply, workflow_id, offset)
            try:
                return parse(reply.body)
            except InvalidResponseError as exc:
                snippet = _snippet(self._redacted_body(reply))
                text = f"HTTP {reply.status}: {exc.message} ({snippet})"
                raise self._error(
                    InvalidResponseError, text, workflow_id, offset, status_code=reply.status
                ) from None

        def cancel() -> None:
            if isinstance(first, _Sent):
                first.cancel()

        def result(before_retry: Callable[[], None] | None) -> T:
            def on_retry(exc: BaseException, wait_s: float) -> None:
                self._count_retry(exc, wait_s)
                if before_retry is not None:
                    before_retry()

            return self.retry_policy.call(attempt, on_retry=on_retry)

        return Pending(result, cancel, wait)

    def _headers(self) -> dict[str, str]:
        """Built per request, so no attribute of the client holds the key in clear."""
        key = self.settings.api_key
        return {  # both documented hosts accept the key, each its own way
            "X-API-Key": key,
            "Authorization": f"Bearer {key}",
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            "User-Agent": USER_AGENT,
        }

    def _count_retry(self, exc: BaseException, wait_s: float) -> None:
        with self._lock:
            self.stats.retries += 1
        for listener in self.retry_listeners:
            listener(exc, wait_s)

    def _start(
        self,
        url: str,
        params: dict[str, str | int] | None,
        *,
        workflow_id: str | None,
        offset: int | None,
        redirects: int = 0,
        retry: bool = False,
        early: bool = False,
    ) -> _Sent | None:
        """Send one request now, holding a throttle slot until its answer is read; with
        ``early``, only if a slot is free (None if not: nothing was sent)."""
        if params:
            url = f"{url}?{urlencode(params)}"
        if early:
            if not self.throttle.try_acquire_early():
                return None
        else:
            self.throttle.acquire(retry=retry)
        with self._lock:
            self.stats.requests += 1
        try:
            exchange = self._wire.start(url, self._headers(), self.settings.timeout)
        except WireError as exc:
            self.throttle.release(early=early)
            raise self._wire_error(exc, workflow_id, offset) from exc
        except BaseException:
            self.throttle.release(early=early)
            raise
        return _Sent(self, exchange, workflow_id, offset, redirects, early=early)

    def _wire_error(
        self, exc: WireError, workflow_id: str | None, offset: int | None
    ) -> EachlabsError:
        cls = APIError if exc.kind == "other" else TransportError
        return self._error(cls, str(exc), workflow_id, offset)

    def _redirect_target(self, reply: Reply, workflow_id: str | None, offset: int | None) -> str:
        """Follow a redirect only within the API's origin: the key must not go anywhere else."""
        target = urljoin(reply.url, reply.headers["location"])
        if _origin(target) != self._origin:
            raise self._error(
                APIError,
                f"HTTP {reply.status} redirect to another origin "
                f"({_origin_text(target)}) refused: the API key would be sent there; "
                "if that host is trusted, set base_url to it",
                workflow_id,
                offset,
                status_code=reply.status,
            )
        return target

    def _status_error(
        self, reply: Reply, workflow_id: str | None, offset: int | None
    ) -> EachlabsError:
        status = reply.status
        api_message, code, details = _error_fields(self._redacted_body(reply), reply.reason)
        text = f"HTTP {status}: {api_message}"
        if code:
            text += f" (code {code})"
        if details not in (None, "", {}, []):
            text += f"; details: {_compact(details)}"
        kwargs: dict[str, Any] = {
            "status_code": status,
            "api_message": api_message,
            "code": code,
            "details": details,
        }
        retry_after = parse_retry_after(reply.headers.get("Retry-After"))
        if status == 400:
            return self._error(InvalidRequestError, text, workflow_id, offset, **kwargs)
        if status in (401, 403):
            return self._error(AuthenticationError, text, workflow_id, offset, **kwargs)
        if status == 404:
            return self._error(WorkflowNotFoundError, text, workflow_id, offset, **kwargs)
        if status == 429:
            return self._error(
                RateLimitError, text, workflow_id, offset, retry_after=retry_after, **kwargs
            )
        if status in _RETRYABLE_STATUSES:
            return self._error(
                ServerError, text, workflow_id, offset, retry_after=retry_after, **kwargs
            )
        return self._error(APIError, text, workflow_id, offset, **kwargs)

    def _error(
        self,
        cls: type[EachlabsError],
        text: str,
        workflow_id: str | None,
        offset: int | None,
        **kwargs: Any,
    ) -> EachlabsError:
        message = self._redact(f"{describe_location(workflow_id, offset)}: {text}")
        return cls(message, workflow_id=workflow_id, offset=offset, **kwargs)

    def _redact(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if len(key) >= MIN_REDACTED_KEY else text

    def _redacted_body(self, reply: Reply) -> bytes:
        """The whole body with the key blanked out, before anything is cut or parsed."""
        key = self.settings.api_key.encode()
        body = reply.body
        return body.replace(key, b"***") if len(key) >= MIN_REDACTED_KEY else body


class Pending(Generic[T]):
    """A request on its way: ``wait()`` receives its answer, ``result()`` makes it a value
    (retries included), ``cancel()`` drops it (its connection closed, its slot freed)."""

    def __init__(
        self,
        result: Callable[[Callable[[], None] | None], T],
        cancel: Callable[[], None],
        wait: Callable[[], bool],
    ) -> None:
        self._result, self._cancel, self._wait = result, cancel, wait

    def wait(self) -> bool:
        """Receive the first attempt's answer; True if it is a success (not yet parsed)."""
        return self._wait()

    def result(self, before_retry: Callable[[], None] | None = None) -> T:
        """The value; ``before_retry`` runs before each retry (to free what the caller holds:
        a retry needs a throttle slot)."""
        return self._result(before_retry)

    def cancel(self) -> None:
        self._cancel()


class _Sent:
    """One sent request: its answer, read once; redirects within the origin followed."""

    def __init__(
        self,
        client: EachlabsClient,
        exchange: Exchange,
        workflow_id: str | None,
        offset: int | None,
        redirects: int,
        *,
        early: bool = False,
    ) -> None:
        self._client, self._exchange = client, exchange
        self._where, self._redirects = (workflow_id, offset), redirects
        self._early = early
        self._open = True

    def __del__(self) -> None:  # dropped unread (an abandoned Pending): free the slot
        with contextlib.suppress(Exception):
            self.cancel()

    def reply(self) -> Reply:
        client, (workflow_id, offset) = self._client, self._where
        try:
            reply = self._exchange.reply()
        except WireError as exc:
            raise client._wire_error(exc, workflow_id, offset) from exc
        finally:
            self._close()
        logger.debug("GET %s -> HTTP %d, %d bytes", reply.url, reply.status, len(reply.body))
        if reply.status == 429:
            client.throttle.record_rate_limited(parse_retry_after(reply.headers.get("Retry-After")))
        elif reply.status < 400:
            client.throttle.record_success()
        if reply.status not in _REDIRECT_STATUSES or "location" not in reply.headers:
            return reply
        if self._redirects >= MAX_REDIRECTS:
            raise client._error(
                APIError, f"more than {MAX_REDIRECTS} redirects", workflow_id, offset
            )
        target = client._redirect_target(reply, workflow_id, offset)
        sent = client._start(
            target, None, workflow_id=workflow_id, offset=offset, redirects=self._redirects + 1
        )
        assert sent is not None  # not early: sent, or raised
        return sent.reply()

    def cancel(self) -> None:
        if self._open:
            self._exchange.cancel()
            self._close()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._client.throttle.release(early=self._early)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port or default_port)


def _origin_text(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _error_fields(body: bytes, reason: str | None) -> tuple[str, str | None, Any]:
    """The API's ``error``, ``code`` and ``details``, or a cleaned snippet of a non-JSON body."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and ("error" in parsed or "message" in parsed):
        message = parsed.get("error") or parsed.get("message")
        code = parsed.get("code")
        return (
            _compact(message),
            _compact(code) if isinstance(code, str) else None,
            parsed.get("details"),
        )
    snippet = _snippet(body)
    return (snippet if snippet != "empty body" else reason or snippet, None, None)


def _decode_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidResponseError(f"the body is not JSON ({exc.__class__.__name__})") from None


def _snippet(body: bytes) -> str:
    """A short, single-line view of a body for error messages (HTML tags dropped)."""
    text = body[:4000].decode("utf-8", errors="replace")
    text = re.sub(r"<[^>]*>", " ", text)
    text = " ".join(text.split())
    if not text:
        return "empty body"
    return text[:_MAX_MESSAGE_CHARS] + ("..." if len(text) > _MAX_MESSAGE_CHARS else "")


def _compact(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text[:_MAX_MESSAGE_CHARS] + ("..." if len(text) > _MAX_MESSAGE_CHARS else "")
