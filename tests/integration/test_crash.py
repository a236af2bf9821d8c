"""Crash safety: SIGKILL a writer at several points; the lake stays readable and complete."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta

import duckdb
import pyarrow.dataset as pads
import pytest
from deltalake import DeltaTable

from eachlabs_loader import maintain_table, read_executions
from eachlabs_loader.sandbox import Sandbox

WRITER = pathlib.Path(__file__).with_name("crash_writer.py")
ROWS, SEED = 12_000, 11  # about 17 daily partitions, every one rewritten by the changed run


def run_writer(root, *extra, kill_after_files=None, extra_delay_s=0.0):
    """Run the writer; with ``kill_after_files``, SIGKILL it once that many files were written."""
    process = subprocess.Popen(
        [sys.executable, str(WRITER), str(root), str(ROWS), str(SEED), *extra],
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    written = 0
    for line in process.stdout:
        if line.startswith("wrote "):
            written += 1
            if kill_after_files is not None and written >= kill_after_files:
                time.sleep(extra_delay_s)
                process.send_signal(signal.SIGKILL)
                break
    process.wait(timeout=120)
    process.stdout.close()
    return process.returncode, written


@pytest.fixture(scope="module")
def truth():
    """Statuses by id before (old) and after (new) the change the killed run writes."""
    with Sandbox(rows=ROWS, workflows=1, seed=SEED) as sandbox:
        slug = sandbox.workflows[0].slug
        old = {r["execution_id"]: r["status"] for r in sandbox.rows(slug)}
        sandbox.finish(slug)
        sandbox.insert(slug, 500)
        new = {r["execution_id"]: r["status"] for r in sandbox.rows(slug)}
    return old, new


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The lake after the last successful run."""
    root = tmp_path_factory.mktemp("baseline")
    assert run_writer(root)[0] == 0
    return root


def assert_consistent(root, old, new):
    table = pads.dataset(root, format="parquet", partitioning="hive").to_table()
    ids = table["execution_id"].to_pylist()
    assert len(ids) == len(set(ids)), "duplicates after a crash"
    assert set(old) <= set(ids), "rows of the last successful run were lost"
    assert set(ids) <= set(new)
    statuses = dict(zip(ids, table["status"].to_pylist()))
    assert all(statuses[i] in (old.get(i), new[i]) for i in ids)
    count = (
        duckdb.connect()
        .execute(
            f"select count(*) from read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
        )
        .fetchone()[0]
    )
    assert count == len(ids)
    return statuses


@pytest.mark.parametrize(("kill_after", "delay_s"), [(1, 0.0), (6, 0.002), (12, 0.0), (16, 0.005)])
def test_sigkill_mid_write_leaves_a_readable_complete_lake(
    tmp_path, truth, baseline, kill_after, delay_s
):
    old, new = truth
    root = tmp_path / "lake"
    shutil.copytree(baseline, root)
    code, written = run_writer(
        root, "--changed", kill_after_files=kill_after, extra_delay_s=delay_s
    )
    assert code == -signal.SIGKILL and written >= kill_after
    statuses = assert_consistent(root, old, new)
    assert any(statuses[i] != old.get(i) for i in statuses)  # the killed run did change data


def test_the_next_run_after_a_crash_completes_the_lake(tmp_path, truth, baseline):
    old, new = truth
    root = tmp_path / "lake"
    shutil.copytree(baseline, root)
    run_writer(root, "--changed", kill_after_files=8)
    assert run_writer(root, "--changed")[0] == 0
    lake = read_executions(root)
    assert dict(zip(lake["execution_id"], lake["status"])) == new
    assert [p for p in root.rglob("*") if ".tmp-" in p.name] == []


def run_delta_writer(root, *extra, kill_on=None, delay_s=0.0):
    """The writer into a Delta table; SIGKILL it ``delay_s`` after a line starting ``kill_on``."""
    process = subprocess.Popen(
        [sys.executable, str(WRITER), str(root), str(ROWS), str(SEED), "--delta", *extra],
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    for line in process.stdout:
        if kill_on is not None and line.startswith(kill_on):
            time.sleep(delay_s)
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=120)
    process.stdout.close()
    return process.returncode


@pytest.fixture(scope="module")
def delta_baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("delta") / "table"
    assert run_delta_writer(root) == 0
    return root


@pytest.mark.parametrize(
    ("kill_on", "delay_s"),
    [("ready", 0.3), ("committing", 0.0), ("committing", 0.1), ("committing", 0.4)],
)
def test_sigkill_of_a_delta_writer_leaves_the_last_version_or_the_next(
    tmp_path, truth, delta_baseline, kill_on, delay_s
):
    old, new = truth
    root = tmp_path / "table"
    shutil.copytree(delta_baseline, root)
    code = run_delta_writer(root, "--changed", kill_on=kill_on, delay_s=delay_s)
    assert code in (-signal.SIGKILL, 0)
    table = DeltaTable(str(root))
    data = table.to_pyarrow_dataset().to_table()
    statuses = dict(zip(data["execution_id"].to_pylist(), data["status"].to_pylist()))
    assert len(statuses) == data.num_rows, "duplicates after a crash"
    # One commit per load: the table shows the whole last load, or the whole killed one.
    assert statuses == (old if table.version() == 1 else new)
    if code == 0:
        assert table.version() == 2

    assert run_delta_writer(root, "--changed") == 0  # the next run completes the table
    assert read_executions(root).set_index("execution_id")["status"].to_dict() == new
    maintain_table(root, retention=timedelta(0))  # an aborted commit's files go with vacuum
    referenced = {
        os.path.normpath(u.removeprefix("file://")) for u in DeltaTable(str(root)).file_uris()
    }
    on_disk = {str(p) for p in root.rglob("*.parquet") if "_delta_log" not in p.parts}
    assert on_disk == referenced


@pytest.mark.parametrize(("kill_on", "delay_s"), [("copied", 0.0), ("committing", 0.05)])
def test_sigkill_of_a_first_delta_load_leaves_no_rows_or_all_of_them(
    tmp_path, truth, kill_on, delay_s
):
    old, _ = truth
    root = tmp_path / "table"
    code = run_delta_writer(root, kill_on=kill_on, delay_s=delay_s)
    assert code in (-signal.SIGKILL, 0)
    if (root / "_delta_log").is_dir() and list((root / "_delta_log").glob("*.json")):
        data = DeltaTable(str(root)).to_pyarrow_dataset().to_table()
        statuses = dict(zip(data["execution_id"].to_pylist(), data["status"].to_pylist()))
        assert len(statuses) == data.num_rows, "duplicates after a crash"
        assert statuses in ({}, old)  # the appended files, all of them or none
    assert run_delta_writer(root) == 0
    assert read_executions(root).set_index("execution_id")["status"].to_dict() == old
    maintain_table(root, retention=timedelta(0))
    referenced = {
        os.path.normpath(u.removeprefix("file://")) for u in DeltaTable(str(root)).file_uris()
    }
    on_disk = {str(p) for p in root.rglob("*.parquet") if "_delta_log" not in p.parts}
    assert on_disk == referenced
