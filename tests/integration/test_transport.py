"""The client over real HTTP against the sandbox: auth, errors, retries, redirects, encoding."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from eachlabs_loader import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InvalidRequestError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
    TransportError,
    WorkflowNotFoundError,
    fetch_executions,
    load_executions,
)


def list_requests(sandbox):
    return [
        r for r in sandbox.requests if r.path.endswith("/executions") or "/executions?" in r.path
    ]


def test_key_is_sent_as_both_documented_headers(sandbox, make_client):
    client = make_client(sandbox)
    client.fetch_executions_page(sandbox.workflows[0].slug, offset=0, limit=5)
    headers = sandbox.requests[0].headers
    assert headers["X-API-Key"] == sandbox.api_key
    assert headers["Authorization"] == f"Bearer {sandbox.api_key}"


@pytest.mark.parametrize("prefix", ["/api/v1", "/v1"])
def test_both_hosts_paths_work(sandbox, prefix):
    frame = load_executions(
        sandbox.workflows[1].id, base_url=sandbox.origin + prefix, api_key=sandbox.api_key
    )
    assert len(frame) == 250


def test_query_carries_offset_limit_and_bulk_id(sandbox, make_client):
    bulk = "b0000000-0000-4000-8000-000000000001"
    client = make_client(sandbox)
    client.fetch_executions_page(sandbox.workflows[0].slug, offset=40, limit=20, bulk_id=bulk)
    assert sandbox.requests[0].query == {"offset": "40", "limit": "20", "bulk_id": bulk}


def test_wrong_key_is_authentication_error_without_retry(sandbox):
    with pytest.raises(AuthenticationError) as info:
        load_executions(sandbox.workflows[0].slug, base_url=sandbox.base_url, api_key="wrong-key")
    assert info.value.status_code == 401
    assert "Invalid or missing API key" in str(info.value)
    assert "wrong-key" not in str(info.value)
    assert len(sandbox.requests) == 1


def test_unknown_workflow_is_not_found_naming_workflow_offset_and_message(sandbox):
    with pytest.raises(WorkflowNotFoundError) as info:
        load_executions("no-such-flow", base_url=sandbox.base_url, api_key=sandbox.api_key)
    message = str(info.value)
    assert "'no-such-flow'" in message and "offset 0" in message
    assert "HTTP 404" in message and "workflow not found" in message and "NOT_FOUND" in message
    assert info.value.status_code == 404
    assert len(sandbox.requests) == 1
    # The vendor's X-Request-Id, to quote to its support: an attribute and in the message.
    assert info.value.request_id == sandbox.requests[0].request_id
    assert f"[request id {info.value.request_id}]" in message


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (402, APIError),
        (403, AuthenticationError),
        (404, WorkflowNotFoundError),
        (418, APIError),
    ],
)
def test_permanent_statuses_are_raised_after_one_request(
    sandbox, make_client, sleeps, status, error
):
    sandbox.add_fault(
        "status",
        status=status,
        offsets={100},
        times=None,
        body={"error": f"refused {status}", "details": {"why": "test"}},
    )
    with pytest.raises(error) as info:
        fetch_executions(make_client(sandbox), sandbox.workflows[0].slug)
    assert type(info.value) is error
    assert info.value.status_code == status
    assert info.value.offset == 100
    assert f"refused {status}" in str(info.value) and "offset 100" in str(info.value)
    assert info.value.details == {"why": "test"}
    assert len(sandbox.requests) == 2  # page 0, then the failing page once
    assert sleeps.waits == []


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_transient_statuses_are_retried_then_succeed(sandbox, make_client, sleeps, status):
    sandbox.add_fault("status", status=status, offsets={100}, times=2)
    frame = fetch_executions(make_client(sandbox), sandbox.workflows[0].slug)
    assert frame["execution_id"].tolist() == sandbox.expected_ids(sandbox.workflows[0].slug)
    assert [r.status for r in sandbox.requests] == [200, status, status, 200, 200]
    assert len(sleeps.waits) == 2


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("drop", {}),
        ("truncated", {}),
        ("short_read", {}),
        ("empty", {}),
        ("html", {}),
        ("html", {"status": 502}),
        ("wrong_shape", {"body": {"data": []}}),
        ("wrong_shape", {"body": {"executions": "nope"}}),
        ("missing_id", {}),
    ],
)
def test_garbled_responses_are_retried_then_succeed(sandbox, make_client, sleeps, kind, extra):
    slug = sandbox.workflows[2].slug
    sandbox.add_fault(kind, offsets={200}, times=1, **extra)
    client = make_client(sandbox)
    frame = fetch_executions(client, slug)
    assert frame["execution_id"].tolist() == sandbox.expected_ids(slug)
    assert len(sandbox.requests) == 4
    assert client.stats.retries == 1 and len(sleeps.waits) == 1


def test_persistent_failure_gives_up_with_status_workflow_and_offset(sandbox, make_client, sleeps):
    sandbox.add_fault("status", status=503, offsets={100}, times=None)
    with pytest.raises(ServerError) as info:
        fetch_executions(make_client(sandbox, max_retries=3), sandbox.workflows[0].slug)
    assert isinstance(info.value, APIError) and info.value.status_code == 503
    assert "offset 100" in str(info.value) and sandbox.workflows[0].slug in str(info.value)
    assert len(sandbox.requests) == 1 + 4
    assert len(sleeps.waits) == 3


def test_persistent_garbage_gives_up_as_invalid_response(sandbox, make_client):
    sandbox.add_fault("html", times=None)
    with pytest.raises(InvalidResponseError, match="not JSON"):
        fetch_executions(make_client(sandbox, max_retries=2), sandbox.workflows[0].slug)
    assert len(sandbox.requests) == 3


def test_read_timeout_is_retried_and_bounded(sandbox, make_client):
    sandbox.add_fault("slow", delay_s=1.0, times=None)
    client = make_client(sandbox, max_retries=1, timeout=(1.0, 0.2))
    started = time.monotonic()
    with pytest.raises(TransportError, match="timed out"):
        fetch_executions(client, sandbox.workflows[0].slug)
    assert time.monotonic() - started < 3
    assert len(sandbox.requests) == 2


def test_one_slow_response_then_success(sandbox, make_client):
    sandbox.add_fault("slow", delay_s=1.0, offsets={0}, times=1)
    frame = fetch_executions(make_client(sandbox, timeout=(1.0, 0.3)), sandbox.workflows[0].slug)
    assert len(frame) == 250


def test_retry_after_seconds_is_honoured_for_real(sandbox):
    sandbox.add_fault("status", status=429, retry_after="1", offsets={0}, times=1)
    load_executions(sandbox.workflows[0].slug, base_url=sandbox.base_url, api_key=sandbox.api_key)
    first, second = sandbox.requests[:2]
    assert first.status == 429 and second.status == 200
    assert second.time - first.time >= 0.95


def test_retry_after_http_date_is_honoured(sandbox, make_client, sleeps):
    when = datetime.now(timezone.utc) + timedelta(seconds=20)
    sandbox.add_fault("status", status=503, retry_after=format_datetime(when, usegmt=True), times=1)
    fetch_executions(make_client(sandbox), sandbox.workflows[0].slug)
    assert 17 <= sleeps.waits[0] <= 20.5


def test_rate_limit_error_carries_retry_after(sandbox, make_client):
    sandbox.add_fault(
        "status",
        status=429,
        retry_after="7",
        times=None,
        body={"error": "concurrency cap", "details": "2 of 2 slots in use"},
    )
    with pytest.raises(RateLimitError) as info:
        fetch_executions(make_client(sandbox, max_retries=1), sandbox.workflows[0].slug)
    assert info.value.retry_after == 7.0
    assert "2 of 2 slots in use" in str(info.value)


def test_cross_origin_redirect_is_refused_and_the_key_goes_nowhere(make_sandbox, make_client):
    api, elsewhere = make_sandbox(rows=10), make_sandbox(rows=10)
    target = f"{elsewhere.base_url}/workflows/{api.workflows[0].slug}/executions"
    api.add_fault("redirect", status=302, location=target, times=None)
    with pytest.raises(APIError, match="redirect to another origin") as info:
        fetch_executions(make_client(api), api.workflows[0].slug)
    assert api.api_key not in str(info.value)
    assert elsewhere.requests == []
    assert len(api.requests) == 1


def test_same_origin_redirect_is_followed(sandbox, make_client):
    slug = sandbox.workflows[0].slug
    sandbox.add_fault(
        "redirect",
        status=307,
        offsets={0},
        times=1,
        location=f"/v1/workflows/{slug}/executions?offset=0&limit=100",
    )
    frame = fetch_executions(make_client(sandbox), slug)
    assert len(frame) == 250
    assert sandbox.requests[1].path.startswith("/v1/")
    assert sandbox.requests[1].headers["X-API-Key"] == sandbox.api_key


def test_key_echoed_by_the_server_is_redacted(sandbox, make_client):
    sandbox.add_fault(
        "status",
        status=401,
        times=1,
        body={"error": f"key {sandbox.api_key} is revoked", "details": {"key": sandbox.api_key}},
    )
    with pytest.raises(AuthenticationError) as info:
        fetch_executions(make_client(sandbox), sandbox.workflows[0].slug)
    assert sandbox.api_key not in str(info.value)
    assert sandbox.api_key not in repr(info.value.details)
    assert "***" in str(info.value)


@pytest.mark.parametrize(
    "workflow_id", ["a/b", "../../executions", "%2Fetc", "with space", "ünïcode"]
)
def test_workflow_id_travels_as_one_encoded_path_segment(sandbox, workflow_id):
    with pytest.raises(WorkflowNotFoundError):
        load_executions(workflow_id, base_url=sandbox.base_url, api_key=sandbox.api_key)
    (request,) = sandbox.requests
    assert request.workflow == workflow_id
    assert request.path.startswith("/api/v1/workflows/") and request.path.count("/") == 5


def test_connection_refused_is_a_transport_error(make_client, make_sandbox):
    sandbox = make_sandbox(rows=1)
    client = make_client(sandbox, max_retries=1)
    sandbox.stop()
    with pytest.raises(TransportError, match="connection failed"):
        fetch_executions(client, "anything")


def test_client_and_wire_reprs_hide_the_key(sandbox, make_client):
    client = make_client(sandbox)
    fetch_executions(client, sandbox.workflows[0].slug)  # connections open, pools filled
    assert sandbox.api_key not in repr(client)
    assert sandbox.api_key not in repr(vars(client))
    assert sandbox.api_key not in repr(vars(client.wire))


def test_redirect_to_another_scheme_on_the_same_host_is_refused(sandbox, make_client):
    slug = sandbox.workflows[0].slug
    sandbox.add_fault(
        "redirect", location=f"https://127.0.0.1:{sandbox.port}/api/v1/workflows/{slug}/executions"
    )
    with pytest.raises(APIError, match="another origin"):
        fetch_executions(make_client(sandbox), slug)
    assert len(sandbox.requests) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda c: list(c.iter_pages("..")),
        lambda c: list(c.iter_pages(".")),
        lambda c: list(c.iter_pages("ok", "not-a-uuid")),
        lambda c: list(c.iter_pages("ok", page_size=0)),
        lambda c: list(c.iter_pages("ok", page_size=500)),
        lambda c: c.fetch_executions_page("..", offset=0, limit=10),
        lambda c: c.fetch_executions_page("ok", offset=-1, limit=10),
        lambda c: c.fetch_executions_page("ok", offset=0, limit=101),
    ],
)
def test_the_client_checks_its_inputs_before_sending(sandbox, make_client, call):
    with pytest.raises(InvalidRequestError):
        call(make_client(sandbox))
    assert sandbox.requests == []


@pytest.mark.parametrize(
    ("kind", "body_for"),
    [
        # Each puts the key right where a message is cut to 300 characters.
        ("status", lambda key: {"error": "x" * 281 + f" bad key {key}"}),
        ("status", lambda key: {"error": "nope", "code": key, "details": "y" * 290 + key}),
        ("html", lambda key: "<html><body>" + "z" * 290 + f" {key}</body></html>"),
    ],
)
def test_the_key_is_redacted_before_messages_are_cut(sandbox, make_client, caplog, kind, body_for):
    key = sandbox.api_key
    sandbox.add_fault(kind, status=503, body=body_for(key), times=1)
    sandbox.add_fault(kind, status=403, body=body_for(key), times=1)
    with (
        caplog.at_level("DEBUG", logger="eachlabs_loader"),
        pytest.raises(AuthenticationError) as info,
    ):
        fetch_executions(make_client(sandbox), sandbox.workflows[0].slug)
    error = info.value
    texts = [str(error), repr(error), str(error.api_message), str(error.code), str(error.details)]
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        assert key[:8] not in text, text
    assert any("retry" in r.getMessage() for r in caplog.records)  # the 503 was logged


@pytest.mark.parametrize(
    "location", ["http://127.0.0.1:99999/x", "http://127.0.0.1:abc/x", "http://[::1/x"]
)
def test_a_redirect_to_an_unusable_location_is_an_api_error(sandbox, make_client, location):
    sandbox.add_fault("redirect", status=302, location=location, times=None)
    with pytest.raises(APIError, match="unusable Location") as info:
        fetch_executions(make_client(sandbox), sandbox.workflows[0].slug)
    assert info.value.status_code == 302 and len(sandbox.requests) == 1


def test_a_redirect_loop_stops_after_the_limit_with_nothing_left_on_its_way(sandbox, make_client):
    slug = sandbox.workflows[0].slug
    here = f"/api/v1/workflows/{slug}/executions?offset=0&limit=100"
    sandbox.add_fault("redirect", status=302, location=here, times=None)
    client = make_client(sandbox)
    with pytest.raises(APIError, match="more than 5 redirects"):
        fetch_executions(client, slug)
    assert len(sandbox.requests) == client.stats.requests == 6  # the first and five redirects
    assert client.throttle.in_flight == 0


def test_parsed_decodes_a_success_at_once_and_leaves_a_bad_body_to_result(
    sandbox, make_client, sleeps
):
    """``parsed`` never sends: a thread holding another request can decode with it."""
    slug = sandbox.workflows[0].slug
    client = make_client(sandbox)
    query = client.query(slug)
    request = client.request_page(query, 0).send()
    page = request.parsed()
    assert page is not None and page.ids == sandbox.expected_ids(slug)[:100]
    assert request.result() is page and len(sandbox.requests) == 1

    sandbox.add_fault("truncated", offsets={100}, times=1)
    broken = client.request_page(query, 100).send()
    assert broken.parsed() is None and len(sandbox.requests) == 2  # nothing re-sent
    assert broken.result().ids == sandbox.expected_ids(slug)[100:200]  # result() retries
    assert len(sandbox.requests) == 3 and client.stats.retries == 1 and len(sleeps.waits) == 1

    sandbox.add_fault("status", status=503, offsets={200}, times=1)
    failed = client.request_page(query, 200).send()
    assert failed.parsed() is None
    assert len(failed.result()) == 50 and client.stats.retries == 2
