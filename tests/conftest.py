"""Shared fixtures: a real sandbox server on 127.0.0.1 (port 0) per test, and a clean env."""

from __future__ import annotations

import glob
import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eachlabs_loader import EachlabsClient, RetryPolicy, resolve_settings
from eachlabs_loader.sandbox import Sandbox


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not pick up a developer's real key or base URL."""
    monkeypatch.delenv("EACHLABS_API_KEY", raising=False)
    monkeypatch.delenv("EACHLABS_BASE_URL", raising=False)


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes with any knobs; all are stopped after the test."""
    started: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        sandbox = Sandbox(**kwargs).start()
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """A sandbox with three workflows of 250 executions each."""
    return make_sandbox(rows=250)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in its own process (``host:port``): delta-rs calls hold the GIL while
    they wait for the server, so a server thread in this process could never answer them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moto = pathlib.Path(sys.executable).with_name("moto_server")
    server = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="session")
def duckdb_delta_extension() -> str:
    """DuckDB's delta extension from its PyPI wheel (extensions.duckdb.org is out of reach)."""
    package = os.path.dirname(__import__("duckdb_extension_delta").__file__)
    return glob.glob(os.path.join(package, "extensions", "*", "delta.duckdb_extension"))[0]


class RecordedSleep:
    """An injected ``sleep`` that records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> RecordedSleep:
    return RecordedSleep()


@pytest.fixture
def make_client(sleeps: RecordedSleep) -> Iterator[Callable[..., EachlabsClient]]:
    """A client on a sandbox whose retry waits are recorded, not slept (HTTP stays real)."""
    clients: list[EachlabsClient] = []

    def make(
        sandbox: Sandbox, *, max_retries: int = 5, concurrency: int = 1, **settings: Any
    ) -> EachlabsClient:
        """Sequential by default, so tests can count the requests a fault costs."""
        resolved = resolve_settings(
            sandbox.api_key,
            sandbox.base_url,
            max_retries=max_retries,
            concurrency=concurrency,
            **settings,
        )
        client = EachlabsClient(
            resolved, retry_policy=RetryPolicy(max_retries=max_retries, sleep=sleeps)
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def pytest_report_header() -> str:
    import pandas
    import pyarrow

    return f"pandas {pandas.__version__}, pyarrow {pyarrow.__version__}"
