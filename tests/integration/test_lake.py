"""The Parquet lake on local disk: layout, types, read-back, upsert, schema growth, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from eachlabs_loader import (
    COLUMNS,
    InvalidRequestError,
    LoadResult,
    SchemaMismatchError,
    StorageError,
    load_executions,
    read_executions,
    write_executions,
)
from eachlabs_loader.lake import NULL_PARTITION, LakeWriter
from eachlabs_loader.pagination import columns_from_rows
from eachlabs_loader.partitions import split_partitions, write_partitions
from eachlabs_loader.schema import arrow_schema, arrow_to_frame, normalize_table
from eachlabs_loader.storage import resolve_location

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
LAYOUT = re.compile(rf"^workflow_id=({UUID})/date=(\d{{4}}-\d{{2}}-\d{{2}})/executions\.parquet$")


def load(sandbox, workflow_id, **kwargs):
    return load_executions(
        workflow_id, base_url=sandbox.base_url, api_key=sandbox.api_key, **kwargs
    )


def data_files(root: Path) -> dict[str, tuple[int, str]]:
    """Relative path -> (mtime_ns, sha256) of every visible Parquet file."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*.parquet"))
    }


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("execution_id").reset_index(drop=True)


@pytest.fixture
def lake_sandbox(make_sandbox):
    return make_sandbox(rows=3000, workflows=2)


def test_layout_is_hive_by_workflow_uuid_and_utc_date(lake_sandbox, tmp_path):
    workflow = lake_sandbox.workflows[0]
    result = load(lake_sandbox, workflow.slug, output=tmp_path)
    frame = load(lake_sandbox, workflow.slug)
    files = data_files(tmp_path)
    matches = [LAYOUT.match(f) for f in files]
    assert all(matches), files
    assert {m.group(1) for m in matches} == {workflow.id}
    expected_dates = set(frame["created_at"].dt.strftime("%Y-%m-%d"))
    assert {m.group(2) for m in matches} == expected_dates
    assert len(expected_dates) >= 4
    for name in files:
        date = LAYOUT.match(name).group(2)
        table = pq.read_table(tmp_path / name)
        assert set(table["flow_id"].to_pylist()) == {workflow.id}
        created = table["created_at"].to_pandas()
        assert set(created.dt.strftime("%Y-%m-%d")) == {date}
    assert (tmp_path / "_common_metadata").is_file()
    assert result.files_written == result.partitions_touched == len(files)


def test_every_file_has_the_same_engine_friendly_schema(lake_sandbox, tmp_path):
    load(lake_sandbox, lake_sandbox.workflows[0].slug, output=tmp_path)
    load(lake_sandbox, lake_sandbox.workflows[1].slug, output=tmp_path)
    schemas = {name: pq.read_schema(tmp_path / name) for name in data_files(tmp_path)}
    expected = arrow_schema(COLUMNS)
    for name, schema in schemas.items():
        assert schema.remove_metadata().equals(expected), name
    assert expected.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert expected.field("execution_id").type == pa.string()
    # Columns with no value at all keep their type.
    write_executions(
        pd.DataFrame({"execution_id": ["x"], "created_at": ["2025-01-01"]}), tmp_path / "n"
    )
    (sparse,) = data_files(tmp_path / "n")
    assert pq.read_schema(tmp_path / "n" / sparse).remove_metadata().equals(expected)
    parquet_type = pq.ParquetFile(tmp_path / next(iter(schemas))).schema.column(
        COLUMNS.index("created_at")
    )
    logical = json.loads(parquet_type.logical_type.to_json())
    assert (logical["Type"], logical["isAdjustedToUTC"], logical["timeUnit"]) == (
        "Timestamp",
        True,
        "microseconds",
    )


def test_reading_back_gives_the_dataframe_mode_rows_and_values(lake_sandbox, tmp_path):
    slug = lake_sandbox.workflows[0].slug
    load(lake_sandbox, slug, output=tmp_path)
    frame = load(lake_sandbox, slug)
    dataset = pads.dataset(tmp_path, format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == len(frame)
    assert set(table["workflow_id"].to_pylist()) == {lake_sandbox.workflows[0].id}
    from_dataset = arrow_to_frame(table.select(list(COLUMNS)))
    pd.testing.assert_frame_equal(by_id(from_dataset), by_id(frame))
    pd.testing.assert_frame_equal(by_id(read_executions(tmp_path)), by_id(frame))


def test_result_counts_and_repr(lake_sandbox, tmp_path):
    result = load(
        lake_sandbox, lake_sandbox.workflows[0].slug, output=tmp_path, page_size=100, concurrency=1
    )
    assert isinstance(result, LoadResult)
    assert result.rows_fetched == result.rows_written == result.rows_inserted == 3000
    assert result.rows_updated == 0
    assert result.requests == len(lake_sandbox.requests) == 31
    assert result.retries == 0 and result.elapsed_s > 0
    text = repr(result)
    assert "3,000 rows fetched" in text and "31 requests" in text and str(tmp_path) in text


def test_running_the_same_load_twice_writes_nothing_new(lake_sandbox, tmp_path):
    slug = lake_sandbox.workflows[0].slug
    load(lake_sandbox, slug, output=tmp_path)
    before = data_files(tmp_path)
    again = load(lake_sandbox, slug, output=tmp_path)
    assert again.rows_fetched >= 3000  # neighbouring pages overlap a little
    assert (again.rows_written, again.files_written) == (0, 0)
    assert data_files(tmp_path) == before
    ids = pads.dataset(tmp_path, format="parquet", partitioning="hive").to_table()["execution_id"]
    assert len(ids) == len(set(ids.to_pylist())) == 3000


def test_changed_executions_replace_their_old_rows_and_only_their_partitions(
    lake_sandbox, tmp_path
):
    slug = lake_sandbox.workflows[0].slug
    load(lake_sandbox, slug, output=tmp_path)
    before = data_files(tmp_path)
    finished = lake_sandbox.finish(slug, 10)
    result = load(lake_sandbox, slug, output=tmp_path)
    assert (result.rows_updated, result.rows_inserted) == (10, 0)
    lake = read_executions(tmp_path).set_index("execution_id")
    assert len(lake) == 3000
    assert set(lake.loc[finished, "status"]) == {"completed"}
    assert lake.loc[finished, "ended_at"].notna().all()
    after = data_files(tmp_path)
    changed = {name for name in before if before[name] != after[name]}
    dates = {d.strftime("%Y-%m-%d") for d in lake.loc[finished, "created_at"]}
    assert {LAYOUT.match(n).group(2) for n in changed} == dates
    assert result.files_written == len(changed) < len(before)


def test_new_executions_touch_only_the_newest_partition(lake_sandbox, tmp_path):
    slug = lake_sandbox.workflows[0].slug
    load(lake_sandbox, slug, output=tmp_path)
    before = data_files(tmp_path)
    lake_sandbox.insert(slug, 30)
    result = load(lake_sandbox, slug, output=tmp_path)
    assert (result.rows_inserted, result.rows_updated) == (30, 0)
    after = data_files(tmp_path)
    changed = {n for n in after if before.get(n) != after[n]}
    assert len(changed) == result.files_written <= 2
    assert sum(before[n] == after[n] for n in before) >= len(before) - 1
    assert len(read_executions(tmp_path)) == 3030


def test_write_executions_gives_the_same_lake_as_a_load(lake_sandbox, tmp_path):
    slug = lake_sandbox.workflows[1].slug
    load(lake_sandbox, slug, output=tmp_path / "a")
    result = write_executions(load(lake_sandbox, slug), tmp_path / "b")
    assert result.rows_written == 3000 and result.requests == 0
    files_a, files_b = data_files(tmp_path / "a"), data_files(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    for name in files_a:
        assert pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "b" / name))


def test_fields_added_later_become_new_nullable_columns(make_sandbox, tmp_path):
    old = make_sandbox(rows=2000, workflows=1, seed=3)
    load(old, old.workflows[0].slug, output=tmp_path)
    old_files = data_files(tmp_path)
    new = make_sandbox(rows=2300, workflows=1, seed=3, extra_fields={"region": "eu-west"})
    frame = load(new, new.workflows[0].slug)
    known = set(read_executions(tmp_path)["execution_id"])
    result = write_executions(frame[~frame["execution_id"].isin(known)], tmp_path)
    assert result.rows_inserted == 300
    assert pq.read_schema(tmp_path / "_common_metadata").names == [*COLUMNS, "region"]
    untouched = [n for n in old_files if data_files(tmp_path)[n] == old_files[n]]
    assert untouched and "region" not in pq.read_schema(tmp_path / untouched[0]).names
    lake = read_executions(tmp_path)
    assert len(lake) == 2300
    assert isinstance(lake["region"].dtype, pd.StringDtype)
    assert lake["region"].notna().sum() >= 300
    counted = (
        duckdb.connect()
        .execute(
            f"select count(*), count(region) from read_parquet('{tmp_path}/**/*.parquet', "
            "hive_partitioning=true, union_by_name=true)"
        )
        .fetchone()
    )
    assert counted[0] == 2300 and counted[1] == lake["region"].notna().sum()


def frame_of(rows):
    return pd.DataFrame(rows)


def test_executions_without_dates_land_in_the_null_partition(tmp_path):
    rows = [
        {"execution_id": "a", "flow_id": "wf", "created_at": "2025-03-01T23:30:00-02:00"},
        {"execution_id": "b", "flow_id": "wf", "started_at": "2025-03-02T00:10:00Z"},
        {"execution_id": "c", "flow_id": "wf"},
    ]
    write_executions(frame_of(rows), tmp_path)
    assert set(data_files(tmp_path)) == {
        "workflow_id=wf/date=2025-03-02/executions.parquet",
        f"workflow_id=wf/date={NULL_PARTITION}/executions.parquet",
    }
    table = pads.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    dates = dict(zip(table["execution_id"].to_pylist(), table["date"].to_pylist()))
    assert dates == {"a": "2025-03-02", "b": "2025-03-02", "c": None}


@pytest.mark.parametrize("flow_id", ["../../escape", "a/b", "..", "x y%2F", "wf\\evil", "ünï"])
def test_partition_values_cannot_escape_the_root(tmp_path, flow_id):
    root = tmp_path / "lake"
    write_executions(
        frame_of([{"execution_id": "e", "flow_id": flow_id, "created_at": "2025-01-01"}]), root
    )
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(root in p.parents for p in written)
    (name,) = data_files(root)
    assert name.count("/") == 2
    table = pads.dataset(root, format="parquet", partitioning="hive").to_table()
    assert table["workflow_id"].to_pylist() == [flow_id]


def test_duckdb_reads_the_lake(lake_sandbox, tmp_path):
    for workflow in lake_sandbox.workflows:
        load(lake_sandbox, workflow.slug, output=tmp_path)
    con = duckdb.connect()
    con.execute(
        "create view lake as select * from "
        f"read_parquet('{tmp_path}/**/*.parquet', hive_partitioning=true)"
    )
    types = dict(con.execute("select column_name, column_type from (describe lake)").fetchall())
    assert types["created_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["execution_id"] == "VARCHAR"
    rows, ids, mismatched, wrong_dates = con.execute(
        "select count(*), count(distinct execution_id), "
        "count(*) filter (where workflow_id <> flow_id), "
        "count(*) filter (where cast(date as varchar) <> "
        "strftime(created_at at time zone 'UTC', '%Y-%m-%d')) from lake"
    ).fetchone()
    assert rows == ids == 6000
    assert mismatched == 0 and wrong_dates == 0


def test_flushes_complete_partitions_while_streaming(lake_sandbox, tmp_path):
    frame = load(lake_sandbox, lake_sandbox.workflows[0].slug)
    writer = LakeWriter(resolve_location(tmp_path))
    dates = frame["created_at"].dt.strftime("%Y-%m-%d")
    newest, rest = frame[dates == dates.max()], frame[dates != dates.max()]
    writer.add(newest)
    assert len(writer._staged) == 0 and writer._buffered_rows == len(newest)
    writer.add(rest.iloc[:10])  # an older date arrives: the newest partition is complete
    assert len(writer._staged) == 1 and writer._buffered_rows == 10  # staged, out of memory
    assert data_files(tmp_path) == {}  # and not visible before the load is done
    writer.add(rest.iloc[10:])
    result = writer.close()
    assert result.rows_inserted == len(frame)
    assert len(data_files(tmp_path)) == result.files_written == result.partitions_touched


@pytest.mark.parametrize(
    ("output", "error"),
    [
        ("file", StorageError),
        ("under-a-file", StorageError),
        ("unwritable", StorageError),
        ("scheme", InvalidRequestError),
    ],
)
def test_bad_output_fails_before_any_request(sandbox, tmp_path, output, error):
    (tmp_path / "a-file.parquet").write_text("x")
    target = {
        "file": tmp_path / "a-file.parquet",
        "under-a-file": tmp_path / "a-file.parquet" / "lake",
        "unwritable": "/proc/eachlabs-lake",
        "scheme": "nosuchfs://bucket/lake",
    }[output]
    with pytest.raises(error, match="output") as info:
        load(sandbox, sandbox.workflows[0].slug, output=target)
    assert sandbox.requests == []
    if error is StorageError:
        assert info.value.path == str(target)


def test_foreign_incompatible_file_is_named_and_left_alone(sandbox, tmp_path):
    partition = tmp_path / "workflow_id=x" / "date=2025-01-01"
    partition.mkdir(parents=True)
    pq.write_table(
        pa.table({"execution_id": [1, 2], "created_at": ["a", "b"]}), partition / "part-0.parquet"
    )
    before = data_files(tmp_path)
    with pytest.raises(SchemaMismatchError, match=r"part-0\.parquet.*execution_id"):
        load(sandbox, sandbox.workflows[0].slug, output=tmp_path)
    assert sandbox.requests == []
    assert data_files(tmp_path) == before


def test_tampered_partition_file_is_named_and_not_overwritten(lake_sandbox, tmp_path):
    slug = lake_sandbox.workflows[0].slug
    load(lake_sandbox, slug, output=tmp_path)
    newest = max(data_files(tmp_path))
    table = pq.read_table(tmp_path / newest)
    pq.write_table(
        table.set_column(0, "execution_id", pa.array(range(table.num_rows))), tmp_path / newest
    )
    tampered = data_files(tmp_path)[newest]
    lake_sandbox.insert(slug, 5)
    with pytest.raises(SchemaMismatchError, match=re.escape(newest.split("/")[-2])):
        load(lake_sandbox, slug, output=tmp_path)
    assert data_files(tmp_path)[newest] == tampered


def test_tampered_dataset_schema_fails_before_any_request(sandbox, tmp_path):
    pq.write_metadata(pa.schema([("execution_id", pa.int64())]), tmp_path / "_common_metadata")
    with pytest.raises(SchemaMismatchError, match="_common_metadata"):
        load(sandbox, sandbox.workflows[0].slug, output=tmp_path)
    assert sandbox.requests == []


def test_pathlike_relative_and_file_uri_outputs(lake_sandbox, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    slug = lake_sandbox.workflows[0].slug
    load(lake_sandbox, slug, output="relative-lake")
    load(lake_sandbox, slug, output=f"file://{tmp_path}/uri-lake")
    assert data_files(tmp_path / "relative-lake").keys() == data_files(tmp_path / "uri-lake").keys()
    assert os.path.isdir(tmp_path / "relative-lake" / f"workflow_id={lake_sandbox.workflows[0].id}")


def lake_rows(root):
    keys = pads.partitioning(
        pa.schema([("workflow_id", pa.string()), ("date", pa.string())]), flavor="hive"
    )
    table = pads.dataset(root, format="parquet", partitioning=keys).to_table()
    return sorted(
        zip(
            table["execution_id"].to_pylist(),
            table["date"].to_pylist(),
            table["status"].to_pylist(),
        )
    )


def test_an_execution_whose_created_at_appears_later_moves_instead_of_doubling(tmp_path):
    write_executions(
        frame_of([{"execution_id": "e1", "flow_id": "wf", "status": "running"}]), tmp_path
    )
    assert lake_rows(tmp_path) == [("e1", None, "running")]
    later = [
        {
            "execution_id": "e1",
            "flow_id": "wf",
            "status": "completed",
            "created_at": "2025-01-01T10:00:00Z",
            "updated_at": "2025-01-01T10:05:00Z",
        }
    ]
    result = write_executions(frame_of(later), tmp_path)
    assert lake_rows(tmp_path) == [("e1", "2025-01-01", "completed")]
    assert (result.rows_inserted, result.rows_updated) == (0, 1)
    assert not (
        tmp_path / "workflow_id=wf" / f"date={NULL_PARTITION}" / "executions.parquet"
    ).exists()


def test_a_started_at_fallback_across_midnight_is_corrected_when_created_at_arrives(tmp_path):
    first = {
        "execution_id": "e1",
        "flow_id": "wf",
        "status": "running",
        "started_at": "2025-01-02T00:00:05Z",
    }
    other = {
        "execution_id": "e2",
        "flow_id": "wf",
        "status": "completed",
        "created_at": "2025-01-02T08:00:00Z",
    }
    write_executions(frame_of([first, other]), tmp_path)
    assert lake_rows(tmp_path) == [
        ("e1", "2025-01-02", "running"),
        ("e2", "2025-01-02", "completed"),
    ]
    write_executions(
        frame_of(
            [
                dict(
                    first,
                    created_at="2025-01-01T23:59:58Z",
                    status="completed",
                    updated_at="2025-01-02T00:01:00Z",
                )
            ]
        ),
        tmp_path,
    )
    assert lake_rows(tmp_path) == [
        ("e1", "2025-01-01", "completed"),
        ("e2", "2025-01-02", "completed"),
    ]


def test_a_row_that_loses_its_created_at_stays_where_it_was(tmp_path):
    dated = {
        "execution_id": "e1",
        "flow_id": "wf",
        "status": "running",
        "created_at": "2025-01-01T10:00:00Z",
        "updated_at": "2025-01-01T10:00:00Z",
    }
    write_executions(frame_of([dated]), tmp_path)
    glitch = {
        "execution_id": "e1",
        "flow_id": "wf",
        "status": "completed",
        "updated_at": "2025-01-01T11:00:00Z",
    }
    write_executions(frame_of([glitch]), tmp_path)
    assert lake_rows(tmp_path) == [("e1", "2025-01-01", "completed")]


# -- nothing overwritten: a load's files become visible together, or not at all ---------------


def test_an_incompatible_older_partition_leaves_every_file_as_it_was(lake_sandbox, tmp_path):
    slug = lake_sandbox.workflows[0].slug
    load(lake_sandbox, slug, output=tmp_path)
    oldest = min(f for f in data_files(tmp_path) if NULL_PARTITION not in f)
    table = pq.read_table(tmp_path / oldest)
    pq.write_table(
        table.set_column(0, "execution_id", pa.array(range(table.num_rows))), tmp_path / oldest
    )
    before = data_files(tmp_path)
    lake_sandbox.finish(slug)  # every partition has rows to update, newest first
    with pytest.raises(SchemaMismatchError, match=re.escape(oldest.split("/")[-2])):
        load(lake_sandbox, slug, output=tmp_path)
    assert data_files(tmp_path) == before  # the newer partitions were not rewritten either
    assert [p for p in tmp_path.rglob("*") if ".tmp-" in p.name] == []


def test_a_partition_file_that_is_not_parquet_is_a_storage_error_naming_it(lake_sandbox, tmp_path):
    slug = lake_sandbox.workflows[0].slug
    load(lake_sandbox, slug, output=tmp_path)
    newest = max(data_files(tmp_path))
    (tmp_path / newest).write_bytes(b"not parquet at all")
    (tmp_path / "_common_metadata").unlink()  # the files themselves are then read
    before = data_files(tmp_path)
    with pytest.raises(StorageError, match=re.escape(newest)) as info:
        load(lake_sandbox, slug, output=tmp_path)
    assert info.value.path.endswith(newest)
    assert data_files(tmp_path) == before


def test_an_unreadable_common_metadata_is_rebuilt_with_a_warning(lake_sandbox, tmp_path, caplog):
    slug = lake_sandbox.workflows[0].slug
    load(lake_sandbox, slug, output=tmp_path)
    metadata = tmp_path / "_common_metadata"
    metadata.write_bytes(metadata.read_bytes()[:20])  # truncated
    lake_sandbox.insert(slug, 7)
    with caplog.at_level("WARNING", logger="eachlabs_loader"):
        result = load(lake_sandbox, slug, output=tmp_path)
    assert "_common_metadata" in caplog.text and result.rows_inserted == 7
    assert pq.read_schema(metadata).names[: len(COLUMNS)] == list(COLUMNS)  # readable again
    lake = read_executions(tmp_path)
    assert len(lake) == 3007 and lake["execution_id"].is_unique


def test_a_full_disk_is_a_storage_error_and_the_dataset_stays_as_it_was(lake_sandbox, tmp_path):
    slug = lake_sandbox.workflows[0].slug
    load(lake_sandbox, slug, output=tmp_path)
    before = data_files(tmp_path)
    lake_sandbox.finish(slug)
    with pytest.raises(StorageError, match="No space left on device") as info:
        load(lake_sandbox, slug, output=str(tmp_path), filesystem=full_disk(tmp_path))
    assert "executions.parquet" in info.value.path
    assert data_files(tmp_path) == before
    assert [p for p in tmp_path.rglob("*") if ".tmp-" in p.name] == []  # nothing left behind


def test_reading_a_missing_dataset_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError, match="no dataset"):
        read_executions(tmp_path / "nothing-here")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StorageError):
        read_executions(tmp_path / "a-file" / "lake")


class _FullDisk(pafs.FileSystemHandler):
    """The local disk, except that every new file is written to ``/dev/full`` (ENOSPC)."""

    def __init__(self) -> None:
        self.local = pafs.LocalFileSystem()

    def __eq__(self, other):
        return isinstance(other, _FullDisk)

    def __ne__(self, other):
        return not self == other

    def get_type_name(self):
        return "full-disk"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("not here")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return pa.OSFile("/dev/full", "wb")

    def open_append_stream(self, path, metadata):
        return pa.OSFile("/dev/full", "ab")


def full_disk(root):
    return pafs.PyFileSystem(_FullDisk())


def test_an_incompatible_file_stops_a_load_of_many_workflows_even_when_skipping(
    lake_sandbox, tmp_path
):
    first, second = (w.slug for w in lake_sandbox.workflows[:2])
    load(lake_sandbox, [first, second], output=tmp_path)
    mine = [f for f in data_files(tmp_path) if lake_sandbox.workflow(first).id in f]
    table = pq.read_table(tmp_path / max(mine))
    pq.write_table(
        table.set_column(0, "execution_id", pa.array(range(table.num_rows))), tmp_path / max(mine)
    )
    before = data_files(tmp_path)
    lake_sandbox.insert(first, 3)
    lake_sandbox.insert(second, 3)  # the other workflow has rows to write too
    with pytest.raises(SchemaMismatchError):
        load(lake_sandbox, [first, second], output=tmp_path, on_error="skip")
    assert data_files(tmp_path) == before


@pytest.mark.parametrize(
    "frame",
    [
        [{"execution_id": "a"}],
        None,
        pd.DataFrame([["a", "b"]], columns=["execution_id", "execution_id"]),
        pd.DataFrame({"execution_id": ["a"], "inputs": [object()]}),
        pd.DataFrame({"execution_id": ["a"], "created_at": [object()]}),
    ],
    ids=["not-a-frame", "none", "two-id-columns", "unencodable-value", "unencodable-time"],
)
def test_a_frame_that_cannot_be_written_is_a_typed_error_and_writes_nothing(tmp_path, frame):
    with pytest.raises(InvalidRequestError):
        write_executions(frame, tmp_path / "lake")
    assert not (tmp_path / "lake").exists() or data_files(tmp_path / "lake") == {}


def test_a_hand_made_frame_with_non_string_column_names_keeps_those_columns(tmp_path):
    frame = pd.DataFrame({"execution_id": ["a"], 7: ["seven"]})
    write_executions(frame, tmp_path)
    assert read_executions(tmp_path)["7"].tolist() == ["seven"]


def rows_of(rows):
    return normalize_table(columns_from_rows(rows))


def test_partitions_completed_together_are_written_in_one_step_one_file_each(tmp_path):
    rows = rows_of(
        [
            {
                "execution_id": f"e{n}",
                "flow_id": f"w {n % 3}/x",
                "created_at": f"2025-01-0{1 + n % 2}",
            }
            for n in range(12)
        ]
    )
    tables = dict(split_partitions(rows))
    files = write_partitions(resolve_location(tmp_path), tables, ".executions.parquet.tmp-t-{i}")
    assert len(files) == len(tables) == 6
    for final, written in files.items():
        assert final.endswith("/executions.parquet") and "/." in written
        assert os.path.dirname(final) == os.path.dirname(written)
        assert "workflow_id=w%20" in final  # the flow id, percent-encoded as partition_value
    back = {pq.read_table(p)["execution_id"].to_pylist()[0][0] for p in files.values()}
    assert back == {"e"}
    assert sum(pq.read_metadata(p).num_rows for p in files.values()) == 12


def test_a_failed_write_of_many_partitions_leaves_no_file_behind(tmp_path):
    rows = rows_of(
        [
            {"execution_id": f"e{n}", "flow_id": f"w{n}", "created_at": "2025-01-01"}
            for n in range(5)
        ]
    )
    tables = dict(split_partitions(rows))
    with pytest.raises(StorageError, match="No space left on device") as info:
        write_partitions(
            resolve_location(str(tmp_path), full_disk(tmp_path)),
            tables,
            ".executions.parquet.tmp-t-{i}",
        )
    assert "5 partition files" in str(info.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
