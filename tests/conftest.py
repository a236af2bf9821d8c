"""Shared fixtures: a real sandbox server on 127.0.0.1 (port 0) per test, and a clean env."""

from __future__ import annotations

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
