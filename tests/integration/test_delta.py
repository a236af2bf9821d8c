"""The Delta table (``table_format="delta"``): one commit per load, MERGE by execution_id,
state in the commit, concurrent writers, schema rules, maintenance, and other readers."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable, write_deltalake

import eachlabs_loader.delta as delta_module
from eachlabs_loader import (
    APIError,
    InvalidRequestError,
    SchemaMismatchError,
    StorageError,
    load_executions,
    maintain_table,
    read_executions,
    write_executions,
)
from eachlabs_loader.delta import STATES_KEY, DeltaTarget, DeltaWriter
from eachlabs_loader.schema import conform_frame

WRITER = Path(__file__).with_name("delta_writer.py")


def load(sandbox, workflows, table, **kwargs):
    return load_executions(
        workflows,
        base_url=sandbox.base_url,
        api_key=sandbox.api_key,
        output=str(table),
        table_format="delta",
        progress=False,
        **kwargs,
    )


def rows(table, version=None):
    """The table's rows as pyarrow reads its files (not through our reader)."""
    return DeltaTable(str(table), version=version).to_pyarrow_dataset().to_table()


def ids(table, version=None):
    found = rows(table, version)["execution_id"].to_pylist()
    assert len(found) == len(set(found)), "an execution_id twice"
    return set(found)


def merges(table):
    """The commits of loads, newest first: appends of new workflows and MERGEs."""
    history = DeltaTable(str(table)).history()
    return [c for c in history if c["operation"] in ("MERGE", "WRITE")]


def test_a_load_is_one_commit_with_every_row_typed_and_partitioned(make_sandbox, tmp_path):
    sandbox = make_sandbox(rows=1500, workflows=2)
    slugs = [w.slug for w in sandbox.workflows]
    result = load(sandbox, slugs, tmp_path / "t")

    table = DeltaTable(str(tmp_path / "t"))
    assert result.table_version == table.version() == 1  # 0 creates it, empty; 1 holds the rows
    assert len(merges(tmp_path / "t")) == 1
    assert result.rows_inserted == result.rows_written == 3000
    assert result.files_written == len(table.file_uris()) == result.partitions_touched
    assert ids(tmp_path / "t") == {i for s in slugs for i in sandbox.expected_ids(s)}
    assert table.metadata().partition_columns == ["workflow_id", "date"]
    schema = pa.schema(table.schema().to_arrow())
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("status").type == pa.string()
    assert schema.field("date").type == pa.date32()
    data = rows(tmp_path / "t")
    assert data["workflow_id"].to_pylist() == data["flow_id"].to_pylist()
    created = data["created_at"].to_pandas()
    assert data["date"].to_pandas().astype(str).tolist() == created.dt.strftime("%Y-%m-%d").tolist()
    states = json.loads(merges(tmp_path / "t")[0][STATES_KEY])
    assert set(states) == {w.id for w in sandbox.workflows}


def test_a_rerun_without_changes_commits_nothing(make_sandbox, tmp_path):
    sandbox = make_sandbox(rows=800, workflows=1)
    slug = sandbox.workflows[0].slug
    load(sandbox, slug, tmp_path / "t")
    again = load(sandbox, slug, tmp_path / "t")
    assert (again.rows_written, again.files_written, again.table_version) == (0, 0, 1)
    assert DeltaTable(str(tmp_path / "t")).version() == 1


def test_changes_are_merged_in_the_partitions_they_touch(make_sandbox, tmp_path):
    sandbox = make_sandbox(rows=6000, workflows=2)  # about 8 days per workflow
    slug = sandbox.workflows[0].slug
    load(sandbox, [w.slug for w in sandbox.workflows], tmp_path / "t")
    before = {r["execution_id"]: r for r in rows(tmp_path / "t").to_pylist()}
    finished = sandbox.finish(slug, 5)
    sandbox.insert(slug, 7)

    result = load(sandbox, slug, tmp_path / "t")
    assert (result.rows_inserted, result.rows_updated, result.table_version) == (7, 5, 2)
    after = {r["execution_id"]: r for r in rows(tmp_path / "t").to_pylist()}
    assert set(after) == set(before) | set(sandbox.expected_ids(slug))
    changed = {i for i in before if after[i] != before[i]}
    assert changed == set(finished)
    merge = merges(tmp_path / "t")[0]
    other = sandbox.workflows[1].id
    assert other not in merge["operationParameters"]["predicate"]  # its partitions not read
    metrics = merge["operationMetrics"]
    others = [u for u in DeltaTable(str(tmp_path / "t"), version=1).file_uris() if other in u]
    assert metrics["num_target_files_skipped_during_scan"] == len(others) > 0
    assert metrics["num_target_files_removed"] == result.files_written <= 2  # changed days only


def test_the_newest_updated_at_wins_and_ties_go_to_the_new_row(tmp_path):
    t0 = pd.Timestamp("2025-03-01T10:00:00Z")
    first = pd.DataFrame(
        {
            "execution_id": ["a", "b", "c"],
            "flow_id": ["w"] * 3,
            "status": ["running"] * 3,
            "created_at": [t0] * 3,
            "updated_at": [t0] * 3,
        }
    )
    write_executions(first, tmp_path / "t", table_format="delta")
    later = first.assign(
        status=["completed", "failed", "cancelled"],
        updated_at=[t0 + pd.Timedelta("1s"), t0 - pd.Timedelta("1s"), t0],
    )
    result = write_executions(later, tmp_path / "t", table_format="delta")
    assert (result.rows_inserted, result.rows_updated) == (0, 2)
    stored = dict(zip(*[rows(tmp_path / "t")[c].to_pylist() for c in ("execution_id", "status")]))
    assert stored == {"a": "completed", "b": "running", "c": "cancelled"}
    frame = read_executions(tmp_path / "t")
    assert frame["updated_at"].dtype == "datetime64[us, UTC]"
    assert list(frame.columns[:3]) == ["execution_id", "flow_id", "flow_name"]


def test_a_row_whose_date_becomes_known_moves_out_of_the_undated_partition(tmp_path):
    undated = pd.DataFrame({"execution_id": ["x"], "flow_id": ["w"], "status": ["queued"]})
    write_executions(undated, tmp_path / "t", table_format="delta")
    assert rows(tmp_path / "t")["date"].to_pylist() == [None]
    dated = undated.assign(
        status="completed",
        created_at=pd.Timestamp("2025-02-03T23:59:59Z"),
        updated_at=pd.Timestamp("2025-02-04T00:00:05Z"),
    )
    result = write_executions(dated, tmp_path / "t", table_format="delta")
    assert (result.rows_inserted, result.rows_updated) == (0, 1)
    data = rows(tmp_path / "t")
    assert data["execution_id"].to_pylist() == ["x"]
    assert str(data["date"][0]) == "2025-02-03"


def test_every_version_shows_each_workflow_before_or_after_a_load(make_sandbox, tmp_path):
    sandbox = make_sandbox(rows=1200, workflows=2)
    a, b = (w.slug for w in sandbox.workflows)
    load(sandbox, a, tmp_path / "t")
    first_a = set(sandbox.expected_ids(a))
    sandbox.insert(a, 30)
    sandbox.finish(a, 10)
    result = load(sandbox, [a, b], tmp_path / "t")
    assert ids(tmp_path / "t", version=1) == first_a
    # b is new to the table (appended), a is merged: two commits, each workflow whole in one.
    final_a, final_b = set(sandbox.expected_ids(a)), set(sandbox.expected_ids(b))
    seen = []
    for version in range(1, result.table_version + 1):
        stored = ids(tmp_path / "t", version=version)
        assert stored & final_a in (first_a & final_a, final_a)
        assert not stored - first_a - final_a - final_b
        seen.append((stored >= final_a, stored >= final_b, stored & final_b in (set(), final_b)))
    assert result.table_version == 3 and seen[-1] == (True, True, True)
    assert all(whole for *_, whole in seen)


def test_new_fields_become_columns_and_a_column_never_changes_type(tmp_path):
    base = pd.DataFrame({"execution_id": ["a"], "flow_id": ["w"], "status": ["completed"]})
    write_executions(base, tmp_path / "t", table_format="delta")
    wider = pd.DataFrame({"execution_id": ["b"], "flow_id": ["w"], "region": [{"eu": 1}]})
    write_executions(wider, tmp_path / "t", table_format="delta")
    schema = pa.schema(DeltaTable(str(tmp_path / "t")).schema().to_arrow())
    assert schema.field("region").type == pa.string() and schema.field("region").nullable
    frame = read_executions(tmp_path / "t").set_index("execution_id")
    assert frame.loc["b", "region"] == '{"eu":1}' and pd.isna(frame.loc["a", "region"])

    write_deltalake(
        str(tmp_path / "other"),
        pa.table({"execution_id": ["z"], "status": [3], "workflow_id": ["w"]}).append_column(
            "date", pa.array([None], pa.date32())
        ),
        partition_by=["workflow_id", "date"],
    )
    with pytest.raises(SchemaMismatchError, match="'status'"):
        write_executions(base, tmp_path / "other", table_format="delta")
    assert DeltaTable(str(tmp_path / "other")).version() == 0


def test_bad_input_is_refused_before_any_request(sandbox, tmp_path):
    slug = sandbox.workflows[0].slug
    keys = {"base_url": sandbox.base_url, "api_key": sandbox.api_key}
    with pytest.raises(InvalidRequestError, match="table_format"):
        load_executions(slug, output=str(tmp_path / "t"), table_format="iceberg", **keys)
    with pytest.raises(InvalidRequestError, match="needs output"):
        load_executions(slug, table_format="delta", **keys)
    with pytest.raises(InvalidRequestError, match="filesystem"):
        load(sandbox, slug, tmp_path / "t", filesystem=pafs.LocalFileSystem())
    load_executions(slug, output=str(tmp_path / "hive"), **keys)
    load(sandbox, slug, tmp_path / "t")
    sandbox.clear_requests()
    hive_before, delta_before = listing(tmp_path / "hive"), listing(tmp_path / "t")

    with pytest.raises(StorageError, match="hive Parquet lake"):
        load(sandbox, slug, tmp_path / "hive")
    with pytest.raises(StorageError, match="is a Delta table"):
        load_executions(slug, output=str(tmp_path / "t"), **keys)
    with pytest.raises(StorageError, match="is a Delta table"):
        write_executions(read_executions(tmp_path / "t"), tmp_path / "t")
    assert (listing(tmp_path / "hive"), listing(tmp_path / "t")) == (hive_before, delta_before)
    assert sandbox.requests == []


def listing(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


def test_without_deltalake_the_error_names_the_extra(sandbox, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "deltalake", None)  # import deltalake -> ImportError
    with pytest.raises(InvalidRequestError, match=r"eachlabs-loader\[delta\]"):
        load(sandbox, sandbox.workflows[0].slug, tmp_path / "t")
    assert sandbox.requests == [] and not (tmp_path / "t").exists()


def test_a_failed_load_commits_nothing(make_sandbox, tmp_path):
    sandbox = make_sandbox(rows=2000, workflows=2)
    a, b = (w.slug for w in sandbox.workflows)
    load(sandbox, a, tmp_path / "t")
    sandbox.insert(a, 50)
    sandbox.add_fault("status", status=503, offsets={900}, times=100)
    with pytest.raises(APIError):
        load(sandbox, [a, b], tmp_path / "t", max_retries=1, concurrency=1)
    assert DeltaTable(str(tmp_path / "t")).version() == 1
    with pytest.raises(APIError):
        load(sandbox, b, tmp_path / "new", max_retries=1, concurrency=1)
    assert not DeltaTable.is_deltatable(str(tmp_path / "new"))


def test_with_on_error_skip_only_the_workflows_that_loaded_whole_are_committed(
    make_sandbox, tmp_path
):
    sandbox = make_sandbox(rows=7000, workflows=2)
    good, bad = sandbox.workflows
    # Sequential pages: the first 5,000 rows of the failing workflow reach the writer.
    sandbox.add_fault("status", status=503, workflow=bad.slug, offsets={6000}, times=100)
    result = load(
        sandbox,
        [good.slug, bad.slug],
        tmp_path / "t",
        max_retries=1,
        concurrency=1,
        on_error="skip",
    )
    assert list(result.failed) == [bad.slug]
    assert result.rows_fetched == 7000
    assert ids(tmp_path / "t") == set(sandbox.expected_ids(good.slug))
    states = json.loads(merges(tmp_path / "t")[0][STATES_KEY])
    assert list(states) == [good.id]


def test_incremental_runs_read_the_state_committed_with_the_data(make_sandbox, tmp_path):
    sandbox = make_sandbox(rows=6000, workflows=1, open_window=200)
    slug = sandbox.workflows[0].slug
    full = load(sandbox, slug, tmp_path / "t", incremental=True)
    assert full.fallbacks and "no commit" in full.fallbacks[slug]
    sandbox.finish(slug)
    sandbox.insert(slug, 40)
    shutil.copytree(tmp_path / "t", tmp_path / "copy")  # a copied table keeps its state
    for table in ("t", "copy"):
        run = load(sandbox, slug, tmp_path / table, incremental=True)
        assert run.incremental and not run.fallbacks
        assert run.requests < full.requests / 4
        assert run.rows_inserted == 40
        assert ids(tmp_path / table) == set(sandbox.expected_ids(slug))
    state = json.loads(json.loads(merges(tmp_path / "t")[0][STATES_KEY])[sandbox.workflows[0].id])
    assert state["last_run"]["mode"] == "incremental"


def test_conflicting_commits_are_merged_again_on_the_new_version(tmp_path, caplog, monkeypatch):
    write_executions(
        contract_frame(["seed"], "w", "completed"), tmp_path / "t", table_format="delta"
    )
    target = DeltaTarget.resolve(tmp_path / "t")
    first, second = DeltaWriter(target), DeltaWriter(target)
    first.add(contract_frame(["a", "seed"], "w", "running"))
    second.add(contract_frame(["b"], "w", "queued"))
    merge = DeltaWriter._merge

    def first_commits_meanwhile(self, table, files, states):
        if self is second and table.version() == 1:
            assert first.close().table_version == 2  # while second merges version 1
        return merge(self, table, files, states)

    monkeypatch.setattr(DeltaWriter, "_merge", first_commits_meanwhile)
    with caplog.at_level(logging.INFO, logger="eachlabs_loader"):
        result = second.close()
    assert result.table_version == 3 and result.rows_inserted == 1
    assert any("conflicted with a concurrent writer" in r.getMessage() for r in caplog.records)
    assert ids(tmp_path / "t") == {"seed", "a", "b"}


def run_writers(uri, sandbox, groups, env=None):
    """Start one writer process per group of workflows, together; their JSON results."""
    environment = {
        **os.environ,
        **(env or {}),
        "EACHLABS_API_KEY": sandbox.api_key,
        "START_AT": str(time.time() + 2.0),
    }
    processes = [
        subprocess.Popen(
            [sys.executable, str(WRITER), uri, sandbox.base_url, *group],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for group in groups
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err
    return [json.loads(out.splitlines()[-1]) for out, _ in outputs], [e for _, e in outputs]


@pytest.mark.parametrize("same_workflow", [False, True])
def test_writer_processes_at_the_same_moment_both_land(make_sandbox, tmp_path, same_workflow):
    sandbox = make_sandbox(rows=3000, workflows=2, latency_ms=5)
    a, b = (w.slug for w in sandbox.workflows)
    uri = str(tmp_path / "t")
    load(sandbox, [a, b], uri)
    sandbox.finish(a, 20)
    sandbox.insert(a, 25)
    if same_workflow:
        results, _ = run_writers(uri, sandbox, [[a], [a]])
        # One commits; the other, merged again on that version, finds nothing left to change.
        assert sorted(r["inserted"] + r["updated"] for r in results) == [0, 45]
        assert [r["version"] for r in results] == [2, 2]
    else:
        sandbox.insert(b, 15)
        results, _ = run_writers(uri, sandbox, [[a], [b]])
        assert sorted(r["inserted"] for r in results) == [15, 25]
        assert sorted(r["version"] for r in results) == [2, 3]
    assert ids(uri) == set(sandbox.expected_ids(a)) | set(sandbox.expected_ids(b))


def test_other_readers_see_the_same_rows(make_sandbox, tmp_path, duckdb_delta_extension):
    sandbox = make_sandbox(rows=2500, workflows=2)
    load(sandbox, [w.slug for w in sandbox.workflows], tmp_path / "t")
    expected = ids(tmp_path / "t")
    by_polars = pl.read_delta(str(tmp_path / "t"))
    assert set(by_polars["execution_id"].to_list()) == expected
    assert by_polars.schema["created_at"] == pl.Datetime("us", "UTC")
    con = duckdb.connect()
    con.execute(f"LOAD '{duckdb_delta_extension}'")
    count, distinct, days = con.execute(
        f"select count(*), count(distinct execution_id), count(distinct date) "
        f"from delta_scan('{tmp_path / 't'}')"
    ).fetchone()
    assert (count, distinct) == (len(expected), len(expected)) and days >= 4
    ours = read_executions(tmp_path / "t")
    assert set(ours["execution_id"]) == expected and "workflow_id" not in ours.columns


def test_maintenance_compacts_partitions_and_vacuums_unreferenced_files(tmp_path):
    t0 = pd.Timestamp("2025-03-01T10:00:00Z")
    for k in range(4):  # four commits into the same partition: four small files
        write_executions(
            pd.DataFrame({"execution_id": [f"e{k}"], "flow_id": ["w"], "created_at": [t0]}),
            tmp_path / "t",
            table_format="delta",
        )
    assert len(DeltaTable(str(tmp_path / "t")).file_uris()) == 4
    stray = tmp_path / "t" / "workflow_id=w" / "date=2025-03-01" / "part-aborted.parquet"
    stray.write_bytes(b"left by a killed writer")
    os.utime(stray, (time.time() - 30 * 86400,) * 2)

    done = maintain_table(tmp_path / "t", retention=pd.Timedelta(0).to_pytimedelta())
    assert (done.files_removed, done.files_added) == (4, 1)
    assert done.files_vacuumed == 5 and not stray.exists()
    assert len(DeltaTable(str(tmp_path / "t")).file_uris()) == 1
    assert ids(tmp_path / "t") == {"e0", "e1", "e2", "e3"}
    with pytest.raises(OSError):  # time travel before the vacuum horizon has no files left
        rows(tmp_path / "t", version=1)


def test_maintenance_keeps_seven_days_by_default(tmp_path):
    frame = pd.DataFrame({"execution_id": ["a"], "flow_id": ["w"]})
    write_executions(frame, tmp_path / "t", table_format="delta")
    write_executions(frame.assign(status="done"), tmp_path / "t", table_format="delta")
    done = maintain_table(tmp_path / "t")
    assert done.files_vacuumed == 0  # the replaced file is younger than the retention
    assert ids(tmp_path / "t", version=1) == {"a"}
    with pytest.raises(StorageError, match="no Delta table"):
        maintain_table(tmp_path / "missing")


def test_scratch_space_is_removed_after_every_load(make_sandbox, tmp_path, monkeypatch):
    monkeypatch.setattr(delta_module.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    sandbox = make_sandbox(rows=500, workflows=1)
    load(sandbox, sandbox.workflows[0].slug, tmp_path / "t")
    sandbox.add_fault("status", status=503, offsets={0}, times=100)
    with pytest.raises(APIError):
        load(sandbox, sandbox.workflows[0].slug, tmp_path / "t", max_retries=0)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_backfill_of_many_days_is_one_commit_and_a_reload_of_them_one_merge(
    make_sandbox, tmp_path
):
    sandbox = make_sandbox(rows=4000, workflows=2, open_window=100)  # 6 days each
    slugs = [w.slug for w in sandbox.workflows]
    result = load(sandbox, slugs, tmp_path / "t")
    (commit,) = merges(tmp_path / "t")
    assert commit["operation"] == "WRITE" and result.table_version == 1
    assert sorted(json.loads(commit[STATES_KEY])) == sorted(w.id for w in sandbox.workflows)
    assert (result.rows_inserted, result.files_written, result.partitions_touched) == (8000, 12, 12)
    assert ids(tmp_path / "t") == {i for w in sandbox.workflows for i in sandbox.expected_ids(w.id)}
    sandbox.finish(slugs[0])
    again = load(sandbox, slugs, tmp_path / "t")  # both stored: one MERGE of the 12 days
    assert [c["operation"] for c in merges(tmp_path / "t")] == ["MERGE", "WRITE"]
    assert again.table_version == 2 and again.rows_inserted == 0 and again.rows_updated > 0
    sandbox.insert(slugs[0], 3)
    more = load(sandbox, slugs[0], tmp_path / "t", incremental=True)
    assert more.incremental and more.rows_inserted == 3, more.fallbacks


def test_appended_files_count_their_nulls_so_a_merge_skips_the_days_it_does_not_touch(
    make_sandbox, tmp_path
):
    sandbox = make_sandbox(rows=4000, workflows=1, open_window=20)  # 6 days, appended
    slug = sandbox.workflows[0].slug
    load(sandbox, slug, tmp_path / "t", incremental=True)
    sandbox.insert(slug, 3)
    assert load(sandbox, slug, tmp_path / "t", incremental=True).rows_inserted == 3
    commit = DeltaTable(str(tmp_path / "t")).history(1)[0]
    metrics = commit["operationMetrics"]
    assert commit["operation"] == "MERGE"
    assert (
        metrics["num_target_files_scanned"],
        metrics["num_target_files_skipped_during_scan"],
    ) == (
        1,
        5,
    )


def contract_frame(ids_, flow, status):
    t0 = pd.Timestamp("2025-03-01T10:00:00Z")
    n = len(ids_)
    return conform_frame(
        pd.DataFrame(
            {
                "execution_id": ids_,
                "flow_id": [flow] * n,
                "status": [status] * n,
                "created_at": [t0] * n,
                "updated_at": [t0] * n,
            }
        )
    )


def test_two_writers_appending_the_same_new_workflow_conflict_and_the_second_merges(
    tmp_path, caplog, monkeypatch
):
    seed = contract_frame(["seed"], "other", "done")
    write_executions(seed, tmp_path / "t", table_format="delta")
    target = DeltaTarget.resolve(tmp_path / "t")
    first, second, third = DeltaWriter(target), DeltaWriter(target), DeltaWriter(target)
    first.add(contract_frame(["a", "b"], "w", "running"))
    second.add(contract_frame(["b", "c"], "w", "done"))  # w is new in what both read
    third.add(contract_frame(["z"], "v", "done"))  # another new workflow: no conflict
    append = DeltaWriter._append

    def others_commit_meanwhile(self, table, files, states, copies):
        if self is second and table.version() == 1:  # second found w new at version 1
            assert first.close().table_version == 2
            assert third.close().table_version == 3
        return append(self, table, files, states, copies)

    monkeypatch.setattr(DeltaWriter, "_append", others_commit_meanwhile)
    with caplog.at_level(logging.INFO, logger="eachlabs_loader"):
        result = second.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("conflicted with a concurrent writer" in m for m in messages) == 1
    assert any("Concurrent transaction" in m for m in messages)  # the claims of w met
    assert (result.table_version, result.rows_inserted, result.rows_updated) == (4, 1, 1)
    history = DeltaTable(str(tmp_path / "t")).history()
    assert [c["operation"] for c in history[:3]] == ["MERGE", "WRITE", "WRITE"]
    data = rows(tmp_path / "t")
    assert sorted(data["execution_id"].to_pylist()) == ["a", "b", "c", "seed", "z"]
    status = dict(zip(data["execution_id"].to_pylist(), data["status"].to_pylist(), strict=True))
    assert status["b"] == "done"


def test_an_odd_workflow_id_is_stored_where_every_reader_finds_it(tmp_path):
    odd = "flow 1/é:%?"  # needs percent-encoding in a path: delta-rs names the file
    write_executions(contract_frame(["x"], odd, "done"), tmp_path / "t", table_format="delta")
    assert DeltaTable(str(tmp_path / "t")).history(1)[0]["operation"] == "MERGE"
    assert rows(tmp_path / "t")["workflow_id"].to_pylist() == [odd]
    assert pl.read_delta(str(tmp_path / "t"))["flow_id"].to_list() == [odd]
    later = contract_frame(["x"], odd, "later")
    again = write_executions(later, tmp_path / "t", table_format="delta")
    assert (again.rows_inserted, again.rows_updated) == (0, 1)
    assert read_executions(tmp_path / "t")["status"].tolist() == ["later"]


def test_a_load_that_changes_nothing_still_commits_a_missing_state(make_sandbox, tmp_path):
    sandbox = make_sandbox(rows=900, workflows=1, open_window=100)
    slug = sandbox.workflows[0].slug
    frame = load_executions(slug, base_url=sandbox.base_url, api_key=sandbox.api_key)
    write_executions(frame, tmp_path / "t", table_format="delta")  # rows, but no state
    quiet = load(sandbox, slug, tmp_path / "t")
    assert (quiet.rows_written, quiet.table_version) == (0, 2)
    assert DeltaTable(str(tmp_path / "t")).history(1)[0]["operation"] == "WRITE"
    assert load(sandbox, slug, tmp_path / "t").table_version == 2  # now nothing at all
    assert load(sandbox, slug, tmp_path / "t", incremental=True).incremental


@pytest.mark.parametrize("created_first", [False, True])
def test_a_row_dated_by_started_at_is_found_whichever_way_its_date_changes(tmp_path, created_first):
    started = pd.Timestamp("2025-02-04T00:00:01Z")
    created = pd.Timestamp("2025-02-03T23:59:59Z")
    without = pd.DataFrame(
        {"execution_id": ["x"], "flow_id": ["w"], "started_at": [started], "status": ["a"]}
    )
    with_created = without.assign(created_at=created, status="b")
    first, second = (with_created, without) if created_first else (without, with_created)
    for frame, table in ((first, "delta"), (second, "delta"), (first, "hive"), (second, "hive")):
        fmt = "delta" if table == "delta" else "parquet"
        write_executions(frame, tmp_path / table, table_format=fmt)
    lake = read_executions(tmp_path / "hive")
    assert ids(tmp_path / "delta") == {"x"} and len(lake) == 1
    stored = rows(tmp_path / "delta").to_pylist()[0]
    assert stored["status"] == lake["status"][0] == second["status"][0]
    assert str(stored["date"]) == "2025-02-03"  # moved there, or kept where it was stored


def test_an_empty_flow_id_is_the_null_partition_and_merges_in_place(tmp_path):
    frame = pd.DataFrame({"execution_id": ["x"], "flow_id": [""], "status": ["running"]})
    write_executions(frame, tmp_path / "t", table_format="delta")
    result = write_executions(frame.assign(status="done"), tmp_path / "t", table_format="delta")
    assert (result.rows_inserted, result.rows_updated) == (0, 1)
    data = rows(tmp_path / "t")
    assert data["execution_id"].to_pylist() == ["x"] and data["workflow_id"].to_pylist() == [None]


def test_a_retention_is_whole_hours_rounded_up_and_never_negative(tmp_path):
    frame = pd.DataFrame({"execution_id": ["a"], "flow_id": ["w"]})
    write_executions(frame, tmp_path / "t", table_format="delta")
    write_executions(frame.assign(status="done"), tmp_path / "t", table_format="delta")
    done = maintain_table(tmp_path / "t", compact=False, retention=timedelta(minutes=30))
    assert done.files_vacuumed == 0  # 30 minutes keeps an hour: the replaced file stays
    with pytest.raises(InvalidRequestError, match="retention"):
        maintain_table(tmp_path / "t", retention=timedelta(hours=-1))


def test_the_state_of_commits_undone_by_a_restore_is_not_used(make_sandbox, tmp_path):
    sandbox = make_sandbox(rows=2000, workflows=1, open_window=1500)
    slug = sandbox.workflows[0].slug
    load(sandbox, slug, tmp_path / "t")  # version 1: open executions down to 1,500 deep
    sandbox.finish(slug)
    load(sandbox, slug, tmp_path / "t")  # version 2: all finished, a state with none open
    DeltaTable(str(tmp_path / "t")).restore(1)  # version 3 = version 1: open again
    # Version 2's state would stop after the first page; version 1's reads down to them.
    load(sandbox, slug, tmp_path / "t", incremental=True, lookback=0)
    stored = dict(zip(*[rows(tmp_path / "t")[c].to_pylist() for c in ("execution_id", "status")]))
    assert stored == {r["execution_id"]: r["status"] for r in sandbox.rows(slug)}


def test_a_new_table_that_cannot_be_created_is_refused_before_any_request(sandbox, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StorageError):
        load(sandbox, sandbox.workflows[0].slug, tmp_path / "file" / "t")
    assert sandbox.requests == []


def test_a_failed_merge_after_the_append_says_the_new_workflows_landed(
    make_sandbox, tmp_path, monkeypatch
):
    sandbox = make_sandbox(rows=600, workflows=2, open_window=50)
    stored, new = (w.slug for w in sandbox.workflows)
    load(sandbox, stored, tmp_path / "t")
    sandbox.finish(stored)

    def fails(self, table, files, states):
        raise StorageError("disk full", path="x")

    monkeypatch.setattr(DeltaWriter, "_merge", fails)
    with pytest.raises(StorageError, match=r"new to the table were committed before, at version 2"):
        load(sandbox, [stored, new], tmp_path / "t")
    (appended, first) = merges(tmp_path / "t")
    assert sorted(json.loads(appended[STATES_KEY])) == [sandbox.workflows[1].id]
    expected = set(sandbox.expected_ids(sandbox.workflows[1].id)) | set(
        sandbox.expected_ids(sandbox.workflows[0].id)
    )
    assert ids(tmp_path / "t") == expected
