"""The progress bar: on where someone watches, off elsewhere, never the key."""

from __future__ import annotations

import re

from eachlabs_loader import load_executions
from eachlabs_loader.progress import Progress


def test_progress_true_draws_a_bar_counting_rows_and_retries(make_sandbox, capsys):
    sandbox = make_sandbox(rows=250, api_key="sk-progress-secret-42")
    sandbox.add_fault("status", status=503, retry_after="0", times=1)
    load_executions(
        sandbox.workflows[0].slug,
        base_url=sandbox.base_url,
        api_key=sandbox.api_key,
        progress=True,
        concurrency=1,
    )
    err = capsys.readouterr().err
    assert re.search(r"250/250", err)
    assert "sk-progress-secret-42" not in err and sandbox.base_url not in err


def test_retries_show_in_the_bar(capsys):
    from eachlabs_loader import ServerError

    bar = Progress(True)
    bar.announce(10)
    bar.note_retry(ServerError("x", status_code=503), 1.5)
    bar.advance(10)
    bar.close()
    err = capsys.readouterr().err
    assert "retries=1, waiting 1.5s after HTTP 503" in err


def test_no_bar_by_default_when_stderr_is_not_a_terminal(sandbox, capsys):
    load_executions(sandbox.workflows[0].slug, base_url=sandbox.base_url, api_key=sandbox.api_key)
    assert capsys.readouterr().err == ""


def test_progress_false_is_silent_even_in_a_terminal(sandbox, capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with Progress(None) as bar:
        assert bar.enabled  # a terminal: on by default
    capsys.readouterr()
    load_executions(
        sandbox.workflows[0].slug,
        base_url=sandbox.base_url,
        api_key=sandbox.api_key,
        progress=False,
    )
    assert capsys.readouterr().err == ""
