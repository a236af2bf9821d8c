"""The command line, in subprocesses: demo and sandbox."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from eachlabs_loader.cli import main


def test_demo_loads_the_sandbox_writes_parquet_and_prints_a_summary(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "eachlabs_loader", "demo", "--rows", "1234"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "loaded     1,234 executions" in result.stdout
    assert "lake       demo-lake: 1,234 rows written" in result.stdout
    assert len(list((tmp_path / "demo-lake").rglob("*.parquet"))) >= 1
    assert "status     completed" in result.stdout
    assert "created    2025-01-01" in result.stdout


def test_sandbox_command_serves_until_stopped():
    process = subprocess.Popen(
        [sys.executable, "-m", "eachlabs_loader", "sandbox", "--port", "0", "--rows", "42"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        key = process.stdout.readline().split(": ", 1)[1].strip()
        slug = process.stdout.readline().split()[1]
        base_url = first.split()[3]
        response = requests.get(
            f"{base_url}/workflows/{slug}/executions", headers={"X-API-Key": key}, timeout=5
        )
        assert response.json()["total_count"] == 42
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_usage_error_exit_code(capsys):
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
