"""The command line end to end, in subprocesses, against a sandbox served by the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pyarrow.dataset as pads
import pytest
import requests

from eachlabs_loader.cli import main

KEY = "sk-cli-test-0123456789abcdef"


@pytest.fixture
def api(make_sandbox):
    return make_sandbox(rows=300, api_key=KEY)


def run(api, *args, env_key=KEY, shell=None, **kwargs):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EACHLABS_")}
    env.update(EACHLABS_BASE_URL=api.base_url)
    if env_key is not None:
        env["EACHLABS_API_KEY"] = env_key
    command = shell or [sys.executable, "-m", "eachlabs_loader", *args]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=env, shell=bool(shell), **kwargs
    )
    assert KEY not in result.stdout and KEY not in result.stderr
    return result


def test_help_documents_commands_and_exit_codes():
    for args in ([], ["executions"]):
        result = subprocess.run(
            [sys.executable, "-m", "eachlabs_loader", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0
        assert "exit codes:" in result.stdout
        for code in ("0 ", "2 ", "3 ", "4 ", "5 "):
            assert f"  {code}" in result.stdout
    assert "--api-key-file" in result.stdout and "--on-error" in result.stdout


def test_parquet_lake_by_default_for_a_directory(api, tmp_path):
    slug = api.workflows[0].slug
    result = run(api, "executions", slug, "--out", str(tmp_path / "lake"))
    assert result.returncode == 0, result.stderr
    assert "300 executions written to" in result.stdout and "(parquet)" in result.stdout
    ids = pads.dataset(tmp_path / "lake", format="parquet", partitioning="hive").to_table()
    assert sorted(ids["execution_id"].to_pylist()) == sorted(api.expected_ids(slug))


def test_csv_file(api, tmp_path):
    slug = api.workflows[1].slug
    result = run(api, "executions", slug, "--out", str(tmp_path / "out.csv"), "--page-size", "50")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(tmp_path / "out.csv")
    assert frame["execution_id"].tolist() == api.expected_ids(slug)
    assert frame["created_at"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$").all()


def test_jsonl_file_with_explicit_format(api, tmp_path):
    slug = api.workflows[0].slug
    target = tmp_path / "out.txt"
    result = run(api, "executions", slug, "--out", str(target), "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["execution_id"] for r in rows] == api.expected_ids(slug)


def test_jsonl_to_stdout_piped_into_another_command(api):
    slug = api.workflows[2].slug
    count = (
        f'{sys.executable} -c "import sys, json; print(sum(1 for l in sys.stdin if json.loads(l)))"'
    )
    result = run(api, shell=f"{sys.executable} -m eachlabs_loader executions {slug} | {count}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "300"
    assert "exported to stdout" in result.stderr  # the summary stays out of the data


def test_stdout_closed_early_is_not_an_error(api):
    result = run(
        api,
        shell=f"{sys.executable} -m eachlabs_loader executions {api.workflows[0].slug} | head -n 2",
    )
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2
    assert "Traceback" not in result.stderr


def test_api_key_file(api, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    result = run(
        api, "executions", api.workflows[0].slug, "--api-key-file", str(key_file), env_key=None
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 300


@pytest.mark.parametrize(
    ("args", "env_key", "code", "message"),
    [
        (["executions", ".."], KEY, 2, "workflow_id"),
        (["executions", "x", "--format", "parquet"], KEY, 2, "--out"),
        (["executions", "x", "--page-size", "500"], KEY, 2, "page_size"),
        (["executions", "x", "--api-key-file", "/nonexistent/key"], KEY, 2, "api-key-file"),
        (["executions", "x"], None, 3, "EACHLABS_API_KEY"),
        (["executions", "x"], "wrong-key", 3, "HTTP 401"),
        (["executions", "no-such-workflow"], KEY, 4, "workflow not found"),
        (["no-such-command"], KEY, 2, "invalid choice"),
        (["executions", "x", "--out", "/proc/no-lake-here"], KEY, 5, "/proc/no-lake-here"),
        (["executions", "x", "--out", "/proc/x/out.csv"], KEY, 5, "/proc/x/out.csv"),
    ],
)
def test_exit_codes(api, args, env_key, code, message):
    result = run(api, *args, env_key=env_key)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    if code in (2, 3) and env_key != "wrong-key":
        assert api.requests == []  # rejected before any request


def test_a_400_from_the_api_is_invalid_input_said_as_the_apis_answer(api):
    api.add_fault("status", status=400, times=None, body={"error": "invalid bulk_id format"})
    result = run(api, "executions", api.workflows[0].slug)
    assert result.returncode == 2
    assert "HTTP 400: invalid bulk_id format" in result.stderr and "request id" in result.stderr
    assert len(api.requests) == 1  # sent once, not retried
    help_text = run(api, "executions", "--help").stdout
    assert "nothing was requested" not in help_text and "refused by the API" in help_text


def test_exit_code_5_after_retries(api):
    api.add_fault("status", status=503, times=None)
    result = run(api, "executions", api.workflows[0].slug, "--max-retries", "1")
    assert result.returncode == 5
    assert "HTTP 503" in result.stderr and "offset 0" in result.stderr
    assert len(api.requests) == 2


def test_several_workflows_and_on_error_skip(api, tmp_path):
    good = [w.slug for w in api.workflows[:2]]
    target = tmp_path / "out.jsonl"
    result = run(
        api,
        "executions",
        good[0],
        "missing-one",
        good[1],
        "--out",
        str(target),
        "--on-error",
        "skip",
    )
    assert result.returncode == 4  # the first failure's code, after the others were written
    assert "FAILED: missing-one" in result.stdout
    ids = {json.loads(line)["execution_id"] for line in target.read_text().splitlines()}
    assert ids == set(api.expected_ids(good[0])) | set(api.expected_ids(good[1]))


def test_several_workflows_fail_fast_by_default(api, tmp_path):
    result = run(
        api, "executions", api.workflows[0].slug, "missing-one", "--out", str(tmp_path / "x.csv")
    )
    assert result.returncode == 4
    assert "'missing-one'" in result.stderr
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    ("flags", "present", "absent"),
    [
        (["-q"], [], ["INFO", "DEBUG", "WARNING"]),
        ([], ["WARNING eachlabs_loader: retry 1/"], ["INFO"]),
        (["-v"], ["INFO eachlabs_loader: loaded 300 executions"], ["DEBUG"]),
        (["-vv"], ["DEBUG", "INFO eachlabs_loader: loaded"], []),
    ],
)
def test_logging_levels_never_show_the_key(api, flags, present, absent):
    api.add_fault(
        "status",
        status=503,
        retry_after="0",
        times=1,
        body={"error": f"upstream rejected {KEY}"},
    )
    result = run(api, "executions", api.workflows[0].slug, "--page-size", "100", *flags)
    assert result.returncode == 0, result.stderr
    for text in present:
        assert text in result.stderr
    for text in absent:
        assert text not in result.stderr
    # `run` already asserted that the key is in neither stdout nor stderr.


def test_no_progress_bar_when_stderr_is_not_a_terminal(api):
    result = run(api, "executions", api.workflows[0].slug)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [result.stderr.strip()]  # the summary, nothing else
    assert result.stderr.startswith("eachlabs-loader: 300 executions exported")
    quiet = run(api, "executions", api.workflows[0].slug, "-q")
    assert quiet.stderr == ""


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


def test_incremental_runs_and_the_whole_organisation(make_sandbox, tmp_path):
    api = make_sandbox(workflows=2, rows=400, api_key=KEY, open_window=50)
    lake = str(tmp_path / "lake")
    first = run(api, "executions", "--all", "--out", lake, "--incremental", "--no-progress")
    assert first.returncode == 0, first.stderr
    assert (
        "800 executions written" in first.stdout
        and "full load instead of incremental" in first.stdout
    )
    assert "falls back to a full load" in first.stderr  # the WARNING, once per workflow
    api.insert(api.workflows[1].slug, 25)
    api.clear_requests()
    second = run(api, "executions", "--all", "--out", lake, "--incremental", "--lookback", "30m")
    assert second.returncode == 0, second.stderr
    assert "25 executions written" in second.stdout and "; incremental" in second.stdout
    assert second.stderr == ""
    assert len(api.requests) <= 1 + 2 * 2  # the workflows list, then the heads


def test_workflows_command_lists_the_organisation(make_sandbox, tmp_path):
    api = make_sandbox(workflows=3, rows=5, api_key=KEY)
    listed = run(api, "workflows")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["workflow_id"] for r in rows] == [w["workflow_id"] for w in api.workflow_rows()]
    out = tmp_path / "workflows.csv"
    assert run(api, "workflows", "--out", str(out)).returncode == 0
    assert len(pd.read_csv(out)) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["executions", "--all", "wf"], "not both"),
        (["executions"], "not both"),
        (["executions", "wf", "--incremental"], "needs a Parquet lake or a Delta table"),
        (["executions", "wf", "--out", "x.csv", "--incremental"], "needs a Parquet lake"),
        (["executions", "wf", "--out", "lake", "--incremental", "--lookback", "soon"], "duration"),
    ],
)
def test_incremental_and_all_usage_errors_exit_2_before_any_request(api, args, message, tmp_path):
    result = run(api, *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert api.requests == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["executions", "wf", "--out", "lake", "--full-refresh"], "only apply with --incremental"),
        (
            ["executions", "wf", "--out", "lake", "--lookback", "2h"],
            "only apply with --incremental",
        ),
        (
            ["executions", "wf", "--out", "lake", "--incremental", "--lookback", "9" * 30],
            "too long",
        ),
        (["workflows", "--out", "workflows.parquet"], ".csv or .jsonl"),
        (["executions", "wf", "--format", "delta"], "--format delta needs --out"),
    ],
)
def test_flags_that_would_be_ignored_are_usage_errors(api, args, message, tmp_path):
    result = run(api, *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert api.requests == []


def test_an_api_key_file_that_is_not_text_is_a_usage_error_without_its_bytes(api, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_bytes(b"sk-\xffTOPSECRET")
    result = run(api, "executions", "x", "--api-key-file", str(key_file), env_key=None)
    assert result.returncode == 2 and "not UTF-8" in result.stderr
    assert "TOPSECRET" not in result.stderr and "Traceback" not in result.stderr


def test_a_delta_table_from_the_command_line_exits_0_and_is_maintained(api, tmp_path):
    slug = api.workflows[0].slug
    table = str(tmp_path / "table")
    first = run(api, "executions", slug, "--out", table, "--format", "delta")
    assert first.returncode == 0, first.stderr  # delta-rs must not abort the process at exit
    assert "300 executions written to" in first.stdout and "(delta)" in first.stdout
    assert "version 1" in first.stdout
    api.insert(slug, 4)
    again = run(api, "executions", slug, "--out", table, "--format", "delta", "--incremental")
    assert again.returncode == 0, again.stderr
    assert "4 new" in again.stdout and "version 2" in again.stdout and "incremental" in again.stdout
    maintained = run(api, "maintain", "--out", table, "--retention", "0")
    assert maintained.returncode == 0, maintained.stderr
    assert "2 files compacted into 1" in maintained.stdout
    assert "2 unreferenced files removed" in maintained.stdout
    lake = run(api, "executions", slug, "--out", table)  # the hive lake refuses a Delta table
    assert lake.returncode == 5 and "is a Delta table" in lake.stderr
    missing = run(api, "maintain", "--out", str(tmp_path / "nothing"))
    assert missing.returncode == 5 and "no Delta table" in missing.stderr
