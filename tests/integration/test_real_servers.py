"""The same load against servers and a proxy nobody here wrote, started on loopback.

gunicorn (sync worker: ``Connection: close`` on every answer; gthread: keep-alive), uvicorn
(h11: chunked, gzipped bodies; TLS with a trustme authority), and proxy.py as a forward proxy
with credentials (plain HTTP, and HTTPS through ``CONNECT``). Each serves the sandbox's data
(``tests/servers/api_app.py``); every load must be exact, every failure the documented error
in bounded time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
import uvicorn

from eachlabs_loader import (
    AuthenticationError,
    EachlabsClient,
    ServerError,
    TLSError,
    TransportError,
    WorkflowNotFoundError,
    fetch_executions,
    load_executions,
    resolve_settings,
)
from eachlabs_loader.sandbox import Sandbox

SERVERS = Path(__file__).parents[1] / "servers"
sys.path.insert(0, str(SERVERS))
import api_app  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def truth() -> tuple[str, list[str]]:
    data = Sandbox(rows=api_app.ROWS, seed=api_app.SEED, workflows=2, api_key=api_app.KEY)
    slug = data.workflows[0].slug
    return slug, data.expected_ids(slug)


def _gunicorn(worker: str) -> Iterator[str]:
    command = [sys.executable, "-m", "gunicorn", "--pythonpath", str(SERVERS)]
    command += ["-b", "127.0.0.1:0", "-w", "1", "-k", worker, "--log-level", "info"]
    command += ["--threads", "4"] if worker == "gthread" else []
    process = subprocess.Popen(
        [*command, "api_app:wsgi"], stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    assert process.stderr is not None
    port = None
    deadline = time.monotonic() + 30
    while port is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
        port = found.group(1) if found else None
    assert port, "gunicorn did not start"
    threading.Thread(target=process.stderr.read, daemon=True).start()  # keep it drained
    try:
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def gunicorn_sync() -> Iterator[str]:
    yield from _gunicorn("sync")


@pytest.fixture(scope="module")
def gunicorn_gthread() -> Iterator[str]:
    yield from _gunicorn("gthread")


def _uvicorn(**tls: str) -> Iterator[int]:
    config = uvicorn.Config(
        api_app.asgi, host="127.0.0.1", port=0, http="h11", lifespan="off",
        log_level="warning", **tls,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def uvicorn_h11() -> Iterator[str]:
    for port in _uvicorn():
        yield f"http://127.0.0.1:{port}/api/v1"


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def uvicorn_tls(authority, tmp_path_factory) -> Iterator[tuple[int, int]]:
    """Two TLS servers: one with a certificate for 127.0.0.1, one for another name."""
    folder = tmp_path_factory.mktemp("tls")
    files = {}
    for name in ("127.0.0.1", "api.example.com"):
        cert, key = folder / f"{name}.pem", folder / f"{name}.key"
        issued = authority.issue_cert(name)
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        files[name] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    right, wrong = _uvicorn(**files["127.0.0.1"]), _uvicorn(**files["api.example.com"])
    yield next(right), next(wrong)
    for server in (right, wrong):
        next(server, None)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """proxy.py with basic auth; yields its URL with credentials and its access log."""
    folder = tmp_path_factory.mktemp("proxy")
    port_file, log = folder / "port", folder / "access.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0",
         "--port-file", str(port_file), "--num-workers", "1", "--num-acceptors", "1",
         "--basic-auth", "loader:s3cret-pass", "--log-level", "INFO", "--log-file", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        assert time.monotonic() < deadline and process.poll() is None, "proxy.py did not start"
        time.sleep(0.05)
    port = port_file.read_text().split()[0]
    try:
        yield f"http://loader:s3cret-pass@127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(timeout=10)


def settings(base_url: str, **kwargs):
    return resolve_settings(api_app.KEY, base_url, **kwargs)


@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.parametrize("server", ["gunicorn_sync", "gunicorn_gthread", "uvicorn_h11"])
def test_the_same_load_is_exact_on_every_real_server(request, truth, server, concurrency):
    base_url = request.getfixturevalue(server)
    slug, expected = truth
    with EachlabsClient(settings(base_url, concurrency=concurrency)) as client:
        frame = fetch_executions(client, slug)
        idle = len(client.wire._idle)
    assert frame["execution_id"].tolist() == expected
    result = frame.attrs["eachlabs"]
    assert result.retries == 0 and result.requests >= len(expected) // 100
    if server == "gunicorn_sync":
        assert idle == 0  # every answer said Connection: close: nothing kept
    else:
        assert idle >= 1  # keep-alive: connections reused


@pytest.mark.parametrize("server", ["gunicorn_sync", "uvicorn_h11"])
def test_errors_from_a_real_server_are_the_documented_ones_in_bounded_time(request, server):
    base_url = request.getfixturevalue(server)
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match="HTTP 401"):
        load_executions("anything", api_key="wrong-key-0000", base_url=base_url)
    with pytest.raises(WorkflowNotFoundError, match=r"HTTP 404.*request id req_") as info:
        load_executions("no-such-flow", api_key=api_app.KEY, base_url=base_url)
    assert info.value.request_id.startswith("req_")
    with pytest.raises(ServerError, match="HTTP 503"):
        load_executions("always-503", api_key=api_app.KEY, base_url=base_url, max_retries=1)
    assert time.monotonic() - started < 5


# -- TLS: trustme's authority, by file and by directory; untrusted and wrong names fail fast --


def hashed_ca_directory(authority: trustme.CA, folder: Path) -> Path:
    """A CA directory as OpenSSL looks certificates up: ``<subject hash>.0``."""
    pem = folder / "ca.pem"
    authority.cert_pem.write_to_path(str(pem))
    subject_hash = subprocess.run(
        [shutil.which("openssl") or "openssl", "x509", "-hash", "-noout", "-in", str(pem)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    directory = folder / "certs"
    directory.mkdir()
    shutil.copy(pem, directory / f"{subject_hash}.0")
    return directory


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"])
@pytest.mark.parametrize("form", ["file", "directory"])
def test_https_trusts_the_ca_bundle_named_in_the_environment(
    truth, uvicorn_tls, authority, tmp_path, monkeypatch, variable, form
):
    right, _ = uvicorn_tls
    directory = hashed_ca_directory(authority, tmp_path)
    bundle = tmp_path / "ca.pem" if form == "file" else directory
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(bundle))
    slug, expected = truth
    frame = load_executions(
        slug, api_key=api_app.KEY, base_url=f"https://127.0.0.1:{right}/api/v1", progress=False
    )
    assert frame["execution_id"].tolist() == expected


def test_an_untrusted_or_misnamed_certificate_fails_at_once(
    uvicorn_tls, authority, tmp_path, monkeypatch
):
    right, wrong = uvicorn_tls
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    with pytest.raises(TLSError, match="certificate verify failed") as info:
        load_executions("wf", api_key=api_app.KEY, base_url=f"https://127.0.0.1:{right}/api/v1")
    assert info.value.workflow_id == "wf" and info.value.offset == 0
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    with pytest.raises(TLSError, match=r"[Hh]ostname|match"):
        load_executions("wf", api_key=api_app.KEY, base_url=f"https://127.0.0.1:{wrong}/api/v1")
    assert time.monotonic() - started < 1.0  # default retries: none are spent on TLS


# -- a forward proxy with credentials: plain HTTP forwarded, HTTPS through CONNECT ------------


def proxied(base_url: str, proxy_url: str, **kwargs):
    """Settings through ``proxy_url`` (loopback APIs never take one from the environment)."""
    scheme = base_url.split(":", 1)[0]
    return replace(settings(base_url, **kwargs), proxies=((scheme, proxy_url),))


def logged(log: Path, pattern: str) -> bool:
    """proxy.py writes an access line when a connection ends: wait a little for it."""
    deadline = time.monotonic() + 5
    while not re.search(pattern, log.read_text()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_plain_http_goes_through_the_proxy_with_its_credentials(truth, gunicorn_gthread, proxy):
    proxy_url, log = proxy
    slug, expected = truth
    with EachlabsClient(proxied(gunicorn_gthread, proxy_url, concurrency=4)) as client:
        frame = fetch_executions(client, slug)
    assert frame["execution_id"].tolist() == expected
    port = gunicorn_gthread.split(":")[2].split("/")[0]
    assert logged(log, rf"GET 127\.0\.0\.1:{port}/api/v1/workflows/{slug}/executions")


def test_https_goes_through_a_connect_tunnel_with_credentials(
    truth, uvicorn_tls, authority, tmp_path, proxy, monkeypatch
):
    right, _ = uvicorn_tls
    proxy_url, log = proxy
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    slug, expected = truth
    with EachlabsClient(proxied(f"https://127.0.0.1:{right}/api/v1", proxy_url)) as client:
        frame = fetch_executions(client, slug)
    assert frame["execution_id"].tolist() == expected
    assert logged(log, rf"CONNECT 127\.0\.0\.1:{right}")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_wrong_proxy_credentials_fail_at_once_naming_the_proxy(
    uvicorn_tls, gunicorn_gthread, proxy, scheme
):
    proxy_url, _ = proxy
    wrong = proxy_url.replace("s3cret-pass", "wrong")
    base_url = gunicorn_gthread if scheme == "http" else f"https://127.0.0.1:{uvicorn_tls[0]}/v1"
    started = time.monotonic()
    client = EachlabsClient(proxied(base_url, wrong))
    with client, pytest.raises(AuthenticationError, match=r"407|[Pp]roxy") as info:
        fetch_executions(client, "wf")
    assert time.monotonic() - started < 1.0 and client.stats.requests == 1
    assert "wrong" not in str(info.value) and "loader:" not in str(info.value)


def test_a_proxy_that_is_down_is_a_transport_error_naming_it(gunicorn_gthread):
    base_url = gunicorn_gthread
    client = EachlabsClient(proxied(base_url, "http://u:pw@127.0.0.1:9", max_retries=1))
    with client, pytest.raises(TransportError, match=r"proxy http://127\.0\.0\.1:9") as info:
        fetch_executions(client, "wf")
    assert "pw" not in str(info.value) and "Max retries" not in str(info.value)
