"""The API key never leaves the request headers to the API's own origin."""

from __future__ import annotations

import logging
import socket
import traceback

import pytest
import requests

from eachlabs_loader import (
    APIError,
    AuthenticationError,
    EachlabsClient,
    InvalidRequestError,
    LoadResult,
    ServerError,
    TransportError,
    fetch_executions,
    load_executions,
    resolve_settings,
)
from eachlabs_loader.sinks import write_flat

KEY = "sk-live-7f3c2a9e41b8d6c05e17a2b3c4d5e6f7"


@pytest.fixture
def api(make_sandbox):
    return make_sandbox(rows=250, api_key=KEY)


def load(api, **kwargs):
    return load_executions(api.workflows[0].slug, base_url=api.base_url, api_key=KEY, **kwargs)


def all_text(*objects) -> str:
    return "\n".join(repr(o) + "\n" + str(o) for o in objects)


@pytest.mark.parametrize("wire", ["urllib3", "requests.Session"])
def test_no_log_record_at_any_level_carries_the_key(api, caplog, wire):
    api.add_fault("status", status=503, retry_after="0", times=1, body={"error": f"bad {KEY}"})
    api.add_fault(
        "status", status=429, retry_after="0", times=1, body={"details": KEY, "error": KEY}
    )
    api.add_fault("drop", times=1)
    with caplog.at_level(logging.DEBUG):  # the root logger: ours, urllib3's, everyone's
        logging.getLogger("urllib3").setLevel(logging.DEBUG)
        if wire == "urllib3":
            frame = load(api, concurrency=1, progress=False)
        else:
            settings = resolve_settings(KEY, api.base_url, concurrency=1)
            with EachlabsClient(settings, session=requests.Session()) as client:
                frame = fetch_executions(client, api.workflows[0].slug)
    assert len(frame) == 250
    messages = [r.getMessage() for r in caplog.records]
    assert any(r.levelno == logging.DEBUG and "GET " in r.getMessage() for r in caplog.records)
    if wire != "urllib3":
        assert any("urllib3" in r.name for r in caplog.records)  # urllib3 did log, at DEBUG
    assert any("retry" in m for m in messages)
    assert KEY not in "\n".join(messages)
    assert KEY not in all_text(*(r.args for r in caplog.records if r.args))


@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthenticationError), (503, ServerError), (402, APIError)]
)
def test_errors_and_tracebacks_never_carry_the_key(api, status, error):
    api.add_fault(
        "status",
        status=status,
        times=None,
        body={"error": f"key {KEY} refused", "code": KEY, "details": {"key": KEY}},
    )
    with pytest.raises(error) as info:
        load(api, max_retries=0, progress=False)
    text = "".join(traceback.format_exception(info.value))
    assert "***" in str(info.value)
    assert KEY not in text
    assert KEY not in all_text(
        info.value, info.value.api_message, info.value.code, info.value.details
    )


def test_reprs_of_everything_a_user_can_hold(api):
    settings = resolve_settings(KEY, api.base_url, env={})
    client = EachlabsClient(settings)
    frame = fetch_executions(client, api.workflows[0].slug)
    result: LoadResult = frame.attrs["eachlabs"]
    objects = [
        settings,
        client,
        client.retry_policy,
        client.throttle,
        client.stats,
        result,
        client.scan(api.workflows[0].slug),
        frame.attrs,
    ]
    objects += list(vars(client).values())
    assert KEY not in all_text(*objects)
    client.close()


def test_files_written_never_carry_the_key(api, tmp_path):
    load(api, output=tmp_path / "lake", progress=False)
    frame = load(api, progress=False)
    write_flat(frame, str(tmp_path / "x.csv"), "csv")
    write_flat(frame, str(tmp_path / "x.jsonl"), "jsonl")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("where", ["another port", "another host name", "https on the same port"])
def test_redirects_never_take_the_key_elsewhere(make_sandbox, api, where):
    other = make_sandbox(rows=10, api_key=KEY)
    slug = api.workflows[0].slug
    target = {
        "another port": f"{other.base_url}/workflows/{slug}/executions",
        "another host name": f"http://localhost:{api.port}/api/v1/workflows/{slug}/executions",
        "https on the same port": f"https://127.0.0.1:{api.port}/api/v1/workflows/{slug}/executions",
    }[where]
    api.add_fault("redirect", status=301, location=target, times=None)
    with pytest.raises(APIError, match="redirect to another origin"):
        load(api, progress=False)
    assert other.requests == []
    assert [r.fault for r in api.requests] == ["redirect"]


def test_the_key_goes_only_to_the_api_origin_in_the_expected_headers(api):
    load(api, concurrency=1, progress=False)
    for request in api.requests:
        leaked = {k: v for k, v in request.headers.items() if KEY in v}
        assert leaked == {"X-API-Key": KEY, "Authorization": f"Bearer {KEY}"}
        assert KEY not in request.path


def primary_ip() -> str | None:
    """A non-loopback address of this machine, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_plain_http_to_a_remote_host_is_refused_unless_allowed(make_sandbox):
    with pytest.raises(InvalidRequestError, match="allow_insecure"):
        load_executions("wf", base_url="http://api.example.com/v1", api_key=KEY)
    address = primary_ip()
    assert address is not None, "this test needs a non-loopback interface"
    sandbox = make_sandbox(rows=20, api_key=KEY, host=address)
    url = f"http://{address}:{sandbox.port}/api/v1"
    with pytest.raises(InvalidRequestError, match="allow_insecure"):
        load_executions(sandbox.workflows[0].slug, base_url=url, api_key=KEY)
    assert sandbox.requests == []
    frame = load_executions(
        sandbox.workflows[0].slug, base_url=url, api_key=KEY, allow_insecure=True
    )
    assert len(frame) == 20


def test_a_session_cannot_be_tricked_by_netrc_into_other_credentials(api, tmp_path, monkeypatch):
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login someone password other-secret\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    frame = load(api, concurrency=1, progress=False)
    assert len(frame) == 250
    assert {r.headers["Authorization"] for r in api.requests} == {f"Bearer {KEY}"}
    assert requests.utils.get_netrc_auth(api.base_url) is not None  # netrc was really there


def test_a_server_echoing_the_key_into_a_broken_answer_leaves_no_trace_of_it():
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                head = conn.recv(65536)
                lines = head.split(b"\r\n")
                echoed = next(x.split(b": ", 1)[1] for x in lines if x.lower().startswith(b"x-api"))
                conn.sendall(b"BROKEN " + echoed + b"\r\n\r\n")

    import threading

    threading.Thread(target=serve, daemon=True).start()
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}/api/v1"
    try:
        with pytest.raises(TransportError) as info:
            load_executions("wf", api_key=KEY, base_url=base_url, max_retries=1, progress=False)
    finally:
        listener.close()
    chain, seen = [], info.value
    while seen is not None:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    assert KEY not in "".join(traceback.format_exception(info.value))
    assert all(KEY not in str(e) + repr(e.args) for e in chain)
