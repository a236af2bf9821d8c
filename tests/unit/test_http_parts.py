"""The pure parts of the HTTP layer, without sockets: budgets, error classification, headers,
and the mapping of answers to our errors."""

from __future__ import annotations

import io
import ssl

import pytest
import urllib3.exceptions as u3
from urllib3 import HTTPHeaderDict
from urllib3.util import parse_url

from eachlabs_loader import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InvalidRequestError,
    RateLimitError,
    ServerError,
    TLSError,
    TransportError,
    WorkflowNotFoundError,
)
from eachlabs_loader.failures import redirect_target, status_error, wire_error
from eachlabs_loader.wire import (
    Reply,
    WireError,
    _ByteBudget,
    _check_headers,
    _proxy_headers,
    _wire_error,
)

KEY = "sk-unit-secret-0123"


def budget(data: bytes, limit: int) -> _ByteBudget:
    return _ByteBudget(io.BufferedReader(io.BytesIO(data)), limit)  # type: ignore[arg-type]


def test_a_read_to_the_end_stops_at_the_budget_in_bounded_steps():
    assert budget(b"x" * 1000, 1000).read(-1) == b"x" * 1000
    with pytest.raises(WireError, match="too large") as info:
        budget(b"x" * 1001, 1000).read(-1)
    assert info.value.kind == "connection"


@pytest.mark.parametrize("how", ["read", "read1", "readinto", "readline"])
def test_every_way_of_reading_spends_the_budget(how):
    reader = budget(b"a" * 60 + b"\n" + b"b" * 60, 100)

    def take() -> int:
        if how == "readinto":
            return reader.readinto(bytearray(50))
        return len(getattr(reader, how)(50))

    with pytest.raises(WireError):
        while take():
            continue  # until the budget is spent: 121 bytes through a budget of 100


def test_peeking_costs_nothing_and_closing_closes():
    reader = budget(b"hello", 5)
    assert reader.peek(5)[:5] == b"hello" and reader.read(5) == b"hello"
    reader.close()
    assert reader.closed


def test_header_values_that_cannot_go_out_are_refused_without_echo():
    _check_headers({"X-API-Key": "fine-key", "Accept": "application/json"})
    for value in ("clé", "a\r\nX: y", "a\nb", "nul\0"):
        with pytest.raises(WireError, match="X-API-Key header cannot be sent") as info:
            _check_headers({"X-API-Key": value})
        assert value not in str(info.value)


def test_proxy_credentials_are_percent_decoded_into_basic_auth():
    headers = _proxy_headers(parse_url("http://us%40er:p%3Ass@proxy:3128"))
    assert headers == {"proxy-authorization": "Basic dXNAZXI6cDpzcw=="}  # us@er:p:ss
    assert _proxy_headers(parse_url("http://proxy:3128")) == {}
    assert _proxy_headers(None) == {}


PROXY = parse_url("http://user:secret@proxy.internal:3128")


@pytest.mark.parametrize(
    ("exc", "proxy", "kind", "text"),
    [
        (OSError("Tunnel connection failed: 407 Proxy Authentication Required"), PROXY,
         "proxy_auth", "proxy http://proxy.internal:3128 refused the tunnel: HTTP 407"),
        (OSError("Tunnel connection failed: 403 Forbidden"), PROXY, "refused", "HTTP 403"),
        (OSError("Tunnel connection failed: 502 Bad Gateway"), PROXY, "proxy", "HTTP 502"),
        (u3.NewConnectionError(None, "Failed to establish a new connection: refused"), PROXY,
         "proxy", "cannot connect to proxy http://proxy.internal:3128"),
        (u3.NewConnectionError(None, "Failed to establish a new connection: refused"), None,
         "connection", "connection failed"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), None, "tls",
         "certificate"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), None, "tls", "TLS"),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), None, "connection", ""),
        (TimeoutError("timed out"), PROXY, "timeout", "through proxy http://proxy.internal"),
        (u3.ReadTimeoutError(None, "/", "Read timed out."), None, "timeout", "timed out"),
        (ConnectionResetError(104, "reset"), None, "connection", "connection failed"),
        (ValueError("Invalid header value b'sk-unit-secret-0123\\r\\n'"), None, "other",
         "cannot be sent"),
    ],
)  # fmt: skip
def test_failures_below_http_are_classified_and_never_show_secrets(exc, proxy, kind, text):
    error = _wire_error(exc, proxy)
    assert error.kind == kind and text in str(error)
    assert "secret" not in str(error) and "user:" not in str(error)


def reply(status: int, body: bytes = b"", **headers: str) -> Reply:
    url = "https://api.example.com/v1/workflows/w/executions?offset=0"
    fields = HTTPHeaderDict({k.replace("_", "-"): v for k, v in headers.items()})
    return Reply(status, "Reason", fields, body, url)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (402, APIError),
        (403, AuthenticationError),
        (404, WorkflowNotFoundError),
        (407, AuthenticationError),
        (418, APIError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
    ],
)
def test_each_status_is_its_documented_error(status, error):
    found = status_error(reply(status, b'{"error": "nope"}'), KEY, ("w", 0))
    assert type(found) is error and found.status_code == status
    assert str(found).startswith("workflow 'w' at offset 0: HTTP ")


def test_a_bad_request_is_also_an_invalid_request_and_a_value_error_and_an_api_error():
    found = status_error(reply(400, b'{"error": "invalid bulk_id format"}'), KEY, ("w", 0))
    assert isinstance(found, InvalidRequestError) and isinstance(found, ValueError)
    assert isinstance(found, APIError) and not found.retryable


def test_the_request_id_is_kept_and_the_key_blanked_everywhere():
    body = f'{{"error": "bad key {KEY}", "details": {{"key": "{KEY}"}}}}'.encode()
    found = status_error(reply(401, body, X_Request_Id=f"req_1 {KEY}"), KEY, ("w", 0))
    assert found.request_id == "req_1 ***" and "[request id req_1 ***]" in str(found)
    assert KEY not in str(found) and KEY not in repr(found.details) + str(found.api_message)


def test_retry_after_is_read_for_rate_limits_and_server_errors():
    assert status_error(reply(429, Retry_After="3"), KEY, ("w", 0)).retry_after == 3
    assert status_error(reply(503, Retry_After="7"), KEY, ("w", 0)).retry_after == 7


@pytest.mark.parametrize(
    ("kind", "error", "retryable"),
    [
        ("timeout", TransportError, True),
        ("connection", TransportError, True),
        ("proxy", TransportError, True),
        ("tls", TLSError, False),
        ("proxy_auth", AuthenticationError, False),
        ("refused", APIError, False),
        ("other", APIError, False),
    ],
)
def test_each_wire_failure_is_retried_or_not_by_its_class(kind, error, retryable):
    found = wire_error(WireError(kind, "text"), KEY, ("w", 100))
    assert type(found) is error and found.retryable is retryable
    assert str(found) == "workflow 'w' at offset 100: text"


def test_redirects_are_followed_only_within_the_origin():
    same = reply(302, Location="/v1/workflows/w/executions?offset=0&x=1")
    assert redirect_target(same, KEY, ("w", 0)) == (
        "https://api.example.com/v1/workflows/w/executions?offset=0&x=1"
    )
    assert redirect_target(reply(200), KEY, ("w", 0)) is None
    for elsewhere in ("https://evil.example/v1", "http://api.example.com/v1"):
        with pytest.raises(APIError, match="another origin"):
            redirect_target(reply(301, Location=elsewhere), KEY, ("w", 0))


def test_a_key_the_api_spells_with_json_escapes_is_blanked_in_every_field():
    key = "sk/live/0123456789"
    spelled = b"sk\\/live\\/0123456789"  # as a PHP back end escapes slashes
    body = b'{"error": "invalid key %s", "details": {"key": "%s"}}' % (spelled, spelled)
    found = status_error(reply(401, body), key, ("w", 0))
    assert key not in str(found) + str(found.api_message) + repr(found.details)
    assert found.api_message == "invalid key ***" and found.details == {"key": "***"}


def test_a_body_that_is_not_a_page_keeps_the_request_id():
    from eachlabs_loader import InvalidResponseError
    from eachlabs_loader.failures import body_error

    found = body_error(
        reply(200, b"<html>proxy</html>", X_Request_Id="req-42"),
        InvalidResponseError("the body is not JSON"),
        KEY,
        ("w", 0),
    )
    assert found.request_id == "req-42" and "[request id req-42]" in str(found)
