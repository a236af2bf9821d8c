"""EachlabsClient and Request: the one place that speaks HTTP semantics.

The client owns the wire (``wire``: urllib3's connections, or a caller's
``requests.Session``), the auth headers, timeouts and redirects. ``Request`` is a GET in
flight, the only such type: it is sent (now, or early if a throttle slot is free),
answered, parsed and retried by the retry policy, or cancelled; ``result()`` and
``cancel()`` release what it holds. Failures become our errors in ``failures``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Literal, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from .codec import PageDecoder, decode_json
from .config import ListQuery, Settings, list_query, validate_offset, validate_page_size
from .errors import APIError, EachlabsError, InvalidResponseError
from .failures import Where, body_error, located, redirect_target, status_error, wire_error
from .pagination import Page, parse_workflows_page
from .parallel import ConcurrentScan
from .retry import RetryPolicy, parse_retry_after
from .sequential import iter_pages
from .throttle import Throttle
from .wire import ACCEPT_ENCODING, Connection, Reply, Session, Wire, WireError, session_get

logger = logging.getLogger("eachlabs_loader")

T = TypeVar("T")

USER_AGENT = "eachlabs-loader"
MAX_REDIRECTS = 5


@dataclass
class ClientStats:
    """Counters a load reports: HTTP requests sent and retries made."""

    requests: int = 0
    retries: int = 0


class EachlabsClient:
    """A connection-reusing client for the list-executions endpoint.

    Args:
        settings: resolved ``Settings`` (see ``resolve_settings``).
        session: a ``requests.Session`` to send through (its adapters, proxies, CA bundle)
            instead of urllib3's connections; the client does not close it.
        retry_policy: overrides the policy built from ``settings.max_retries``.
        throttle: the gate shared by all requests (default: AIMD up to ``settings.concurrency``).

    Examples:
        >>> from eachlabs_loader import resolve_settings
        >>> from eachlabs_loader.sandbox import Sandbox
        >>> with Sandbox(rows=120) as sb, EachlabsClient(
        ...         resolve_settings(sb.api_key, sb.base_url)) as client:
        ...     [len(page) for page in client.iter_pages(sb.workflows[0].slug)]
        [100, 20]
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
        self.session = session
        scheme = urlsplit(settings.base_url).scheme
        self.wire = Wire(
            maxsize=settings.concurrency,
            ca_bundle=settings.ca_bundle,
            proxy=dict(settings.proxies).get(scheme),
        )
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
        self.wire.close()

    def query(
        self, workflow_id: str, bulk_id: str | None = None, *, page_size: int | None = None
    ) -> ListQuery:
        """A validated ``ListQuery`` (the client's page size unless given)."""
        limit = self.settings.page_size if page_size is None else page_size
        return list_query(workflow_id, bulk_id, limit=limit)

    def executions_url(self, query: ListQuery) -> str:
        """The list URL; the workflow id travels as exactly one path segment."""
        return f"{self.settings.base_url}/workflows/{quote(query.workflow_id, safe='')}/executions"

    def request_page(self, query: ListQuery, offset: int) -> Request[Page]:
        """The request for one page of executions (not sent yet: see ``Request``)."""
        params: dict[str, str | int] = {"offset": offset, "limit": query.limit}
        if query.bulk_id is not None:
            params["bulk_id"] = query.bulk_id
        limit = query.limit
        return self.request(
            self.executions_url(query),
            params,
            parse=lambda data: self._page_decoder.decode(data, offset=offset, limit=limit),
            where=(query.workflow_id, offset),
        )

    def fetch_executions_page(
        self, workflow_id: str, *, offset: int, limit: int, bulk_id: str | None = None
    ) -> Page:
        """One page of executions, retried per the policy; arguments are checked first."""
        query = list_query(workflow_id, bulk_id, limit=limit)
        return self.request_page(query, validate_offset(offset)).result()

    def iter_pages(
        self,
        workflow_id: str,
        bulk_id: str | None = None,
        *,
        page_size: int | None = None,
        start_offset: int = 0,
    ) -> Iterator[Page]:
        """Pages lazily, from ``start_offset`` to the end of the list (see ``sequential``)."""
        query = self.query(workflow_id, bulk_id, page_size=page_size)
        return iter_pages(
            lambda offset: self.request_page(query, offset),
            limit=query.limit,
            start_offset=validate_offset(start_offset),
            workflow_id=query.workflow_id,
        )

    def iter_workflow_pages(self, *, page_size: int | None = None) -> Iterator[Page]:
        """The organisation's workflows (``GET {base}/workflows``), page by page.

        Same rules as executions: next offset = offset sent + rows received, the list ends
        on a short page; the response's ``offset`` (the vendor's next start) is a hint.
        """
        limit = self.settings.page_size if page_size is None else validate_page_size(page_size)
        url = f"{self.settings.base_url}/workflows"

        def request_page(offset: int) -> Request[Page]:
            return self.request(
                url,
                {"offset": offset, "limit": limit},
                parse=lambda data: parse_workflows_page(
                    decode_json(data), offset=offset, limit=limit
                ),
                where=(None, offset),
            )

        return iter_pages(request_page, limit=limit)

    def scan(
        self,
        workflow: str | ListQuery,
        bulk_id: str | None = None,
        *,
        page_size: int | None = None,
        concurrency: int | None = None,
    ) -> ConcurrentScan:
        """Every page of a listing, ``concurrency`` at a time, as a verified chain.

        ``workflow`` is an id or slug (checked here) or a ``ListQuery`` (checked already).
        Iterate the scan for the pages; its ``stats`` say what was re-fetched.
        ``concurrency=1`` (or ``settings.concurrency`` of 1) is the sequential scan.
        """
        query = (
            workflow
            if isinstance(workflow, ListQuery)
            else self.query(workflow, bulk_id, page_size=page_size)
        )
        return ConcurrentScan(
            lambda offset: self.request_page(query, offset),
            limit=query.limit,
            concurrency=self.settings.concurrency if concurrency is None else concurrency,
            workflow_id=query.workflow_id,
        )

    def request(
        self,
        url: str,
        params: dict[str, str | int] | None,
        *,
        parse: Callable[[bytes], T],
        where: Where = (None, None),
    ) -> Request[T]:
        """A GET for ``url`` whose body ``parse`` turns into a value (see ``Request``).

        ``parse`` raises ``InvalidResponseError`` for a body that is not what it expects;
        ``where`` (workflow, offset) names the request in errors.
        """
        target = f"{url}?{urlencode(params)}" if params else url
        return Request(self, target, parse, where)

    def headers(self) -> dict[str, str]:
        """Built per request, so no attribute of the client holds the key in clear."""
        key = self.settings.api_key
        return {  # both documented hosts accept the key, each its own way
            "X-API-Key": key,
            "Authorization": f"Bearer {key}",
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            "User-Agent": USER_AGENT,
        }

    def note_request(self) -> None:
        with self._lock:
            self.stats.requests += 1

    def note_retry(self, exc: BaseException, wait_s: float) -> None:
        with self._lock:
            self.stats.retries += 1
        for listener in self.retry_listeners:
            listener(exc, wait_s)

    def note_reply(self, reply: Reply) -> None:
        """Log an answer and tell the throttle how the API is coping."""
        logger.debug("GET %s -> HTTP %d, %d bytes", reply.url, reply.status, len(reply.body))
        if reply.status == 429:
            self.throttle.record_rate_limited(parse_retry_after(reply.headers.get("Retry-After")))
        elif reply.status < 400:
            self.throttle.record_success()


Slot = Literal["early", "normal"]


class Request(Generic[T]):
    """One GET in flight, from its first send to its parsed value, retries included.

    ``send()`` puts the first attempt on the wire now (``early``: only if a throttle slot is
    free, on a slot that never makes another request wait; else it goes when its answer is
    asked for). ``wait()`` receives that answer (True: a success status), so the caller can
    send the next request before decoding. ``result()`` parses it, retrying what is
    transient as the client's retry policy decides, and releases everything; so does
    ``cancel()``, which drops the request unread. A request holds a throttle slot from the
    moment it is sent until its answer is in. Use it in ``with`` where it may be dropped.
    """

    def __init__(
        self, client: EachlabsClient, url: str, parse: Callable[[bytes], T], where: Where
    ) -> None:
        self._client, self._url, self._parse, self._where = client, url, parse, where
        self._slot: Slot | None = None
        self._connection: Connection | None = None
        self._due = False  # sent (through a session: to be sent) and not answered yet
        self._outcome: Reply | EachlabsError | None = None
        self._value: T | None = None
        self._attempts = 0

    def __enter__(self) -> Request[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    def send(self, *, early: bool = False) -> Request[T]:
        """Send the first attempt now (see the class); a request is sent once."""
        if self._attempts == 0 and not self._due and self._outcome is None:
            self._outcome = self._start(self._url, early=early)
        return self

    def wait(self) -> bool:
        """Receive the answer on its way, if any; True if it is a success (not yet parsed)."""
        if self._due:
            self._outcome = self._finish()
        return isinstance(self._outcome, Reply) and self._outcome.status < 300

    def parsed(self) -> T | None:
        """The answer parsed now, if it is a success that parses, else None (``result()``
        then retries as usual). Never sends anything: a caller holding another request in
        flight can decode this one without needing a second slot."""
        if self._value is None and self.wait():
            assert isinstance(self._outcome, Reply)
            try:
                self._value = self._parse(self._outcome.body)
            except InvalidResponseError:
                return None
        return self._value

    def result(self) -> T:
        """The parsed value, once the retry policy is done; everything held is released."""
        if self._value is not None:
            value, self._value = self._value, None
            self.cancel()
            return value
        try:
            return self._client.retry_policy.call(self._attempt, on_retry=self._client.note_retry)
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Drop the request: an answer on its way is not read, the slot is freed."""
        if self._connection is not None:
            self._client.wire.discard(self._connection)
            self._connection = None
        self._due, self._outcome = False, None
        self._release()

    def _attempt(self) -> T:
        self._attempts += 1
        if not self._due and self._outcome is None:
            self._outcome = self._start(self._url, retry=self._attempts > 1)
        self.wait()
        outcome, self._outcome = self._outcome, None
        if isinstance(outcome, EachlabsError):
            raise outcome
        assert outcome is not None
        key = self._client.settings.api_key
        if outcome.status >= 300:
            raise status_error(outcome, key, self._where)
        try:
            return self._parse(outcome.body)
        except InvalidResponseError as exc:
            failure = body_error(outcome, exc, key, self._where)
        raise failure  # outside the handler: no chain back to the body's text

    def _start(self, url: str, *, early: bool = False, retry: bool = False) -> EachlabsError | None:
        """Take a slot and send; returns the error if it could not be sent (slot freed)."""
        client = self._client
        if early and not client.throttle.try_acquire_early():
            return None  # sent when its answer is asked for
        if not early:
            client.throttle.acquire(retry=retry)
        self._slot = "early" if early else "normal"
        client.note_request()
        self._due = True
        if client.session is not None:
            return None  # a session sends when its answer is asked for
        failure: WireError | None = None
        try:
            self._connection = client.wire.send(url, client.headers(), client.settings.timeout)
        except WireError as exc:
            failure = exc
        if failure is None:
            return None
        self._due = False
        self._release()
        return wire_error(failure, client.settings.api_key, self._where)

    def _finish(self) -> Reply | EachlabsError:
        """The answer to what is due, redirects within the API's origin followed."""
        url, key = self._url, self._client.settings.api_key
        for hop in range(MAX_REDIRECTS + 1):
            reply = self._receive(url)
            if isinstance(reply, EachlabsError):
                return reply
            try:
                target = redirect_target(reply, key, self._where)
            except EachlabsError as exc:
                return exc
            if target is None:
                return reply
            if hop == MAX_REDIRECTS:
                break
            url = target
            error = self._start(url)
            if error is not None:
                return error
        return located(APIError, f"more than {MAX_REDIRECTS} redirects", key, self._where)

    def _receive(self, url: str) -> Reply | EachlabsError:
        """Read the answer (through a session: send and read), then free the slot.

        A failure is returned, made outside the handler: its chain cannot carry the text of
        the error below it (a server may echo the key into a broken status line).
        """
        client = self._client
        connection, self._connection, self._due = self._connection, None, False
        failure: WireError | None = None
        try:
            if connection is not None:
                reply = client.wire.receive(connection, url)
            else:
                assert client.session is not None
                reply = session_get(client.session, url, client.headers(), client.settings.timeout)
        except WireError as exc:
            failure = exc
        finally:
            self._release()
        if failure is not None:
            return wire_error(failure, client.settings.api_key, self._where)
        client.note_reply(reply)
        return reply

    def _release(self) -> None:
        if self._slot is not None:
            self._client.throttle.release(early=self._slot == "early")
            self._slot = None
