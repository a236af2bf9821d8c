"""What a failure at any step of a lake write leaves behind: never a lost row, never a raw
pyarrow or OS error, and a dataset identity that survives a file system's hiccup."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import eachlabs_loader.storage as storage
from eachlabs_loader import (
    SchemaMismatchError,
    StorageError,
    read_executions,
    write_executions,
)
from eachlabs_loader.dataset import read_dataset_schema
from eachlabs_loader.lake import LakeWriter
from eachlabs_loader.schema import conform_frame
from eachlabs_loader.staging import StagedFiles
from eachlabs_loader.storage import resolve_location

FLOW = "11111111-1111-1111-1111-111111111111"


def rows(*items: tuple[str, str | None, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"execution_id": i, "flow_id": FLOW, "status": "completed", "created_at": c,
             "updated_at": u}
            for i, c, u in items
        ]
    )  # fmt: skip


def test_files_that_lose_rows_become_visible_after_those_that_gain_them(tmp_path):
    staged = StagedFiles(resolve_location(tmp_path))
    gains, loses = str(tmp_path / "a" / "f"), str(tmp_path / "b" / "f")
    staged.write(loses, lambda sink: sink.write(b"1"), loses_rows=True)
    staged.write(gains, lambda sink: sink.write(b"2"))
    staged.write(loses, lambda sink: sink.write(b"3"))  # staged again: still last
    order: list[str] = []
    staged.commit(on_commit=order.append)
    assert order == [gains, loses]
    assert (tmp_path / "b" / "f").read_bytes() == b"3"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "f", "f"]  # no leftovers


def test_a_failure_while_committing_shows_a_moved_row_twice_at_worst_never_loses_it(
    tmp_path, monkeypatch
):
    undated = ("r", None, "2025-01-01T00:00:00Z"), ("u2", None, "2025-01-01T00:00:00Z")
    write_executions(rows(*undated), tmp_path)
    writer = LakeWriter(resolve_location(tmp_path))
    # r gets its created_at; its new day's partition is staged twice (rows out of order).
    day2, day1 = "2025-01-02T10:00:00Z", "2025-01-01T10:00:00Z"
    writer.add(conform_frame(rows(("r", day2, "2025-01-02T11:00:00Z"), ("x", day1, day1))))
    writer.add(conform_frame(rows(("y", day2, day2), ("z", day1, day1))))
    real = os.replace

    def replace(src: str, dst: str) -> None:
        if "date=2025-01-02" in dst:  # the partition r moves into fails to appear
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(storage.os, "replace", replace)
    with pytest.raises(StorageError, match="No space left on device"):
        writer.close()
    monkeypatch.undo()
    assert "r" in set(read_executions(tmp_path)["execution_id"])
    assert [p for p in tmp_path.rglob("*") if ".tmp-" in p.name] == []


def test_a_partition_staged_early_that_later_loses_a_row_is_made_visible_last(
    tmp_path, monkeypatch
):
    write_executions(rows(("r", None, "2025-01-01T00:00:00Z")), tmp_path)
    writer = LakeWriter(resolve_location(tmp_path), max_buffered_rows=0)  # stage at once
    writer.add(conform_frame(rows(("n", None, "2025-01-01T00:00:00Z"))))  # undated gains n
    writer.add(conform_frame(rows(("r", "2025-01-02T10:00:00Z", "2025-01-02T11:00:00Z"))))
    real = os.replace

    def replace(src: str, dst: str) -> None:
        if "date=2025-01-02" in dst:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(storage.os, "replace", replace)
    with pytest.raises(StorageError):
        writer.close()
    monkeypatch.undo()
    assert "r" in set(read_executions(tmp_path)["execution_id"])


def test_a_partition_holding_nanoseconds_is_a_schema_mismatch_naming_it(tmp_path):
    write_executions(rows(("a", "2025-01-02T10:00:00Z", "2025-01-02T10:00:00Z")), tmp_path)
    [path] = [p for p in tmp_path.rglob("*.parquet")]
    table = pq.read_table(path)
    at = pa.array([1735812000000000001], pa.timestamp("ns", tz="UTC"))
    pq.write_table(table.set_column(table.schema.get_field_index("created_at"), "created_at", at),
                   path)  # fmt: skip
    before = path.read_bytes()
    with pytest.raises(SchemaMismatchError, match=r"created_at.*cannot hold exactly") as info:
        write_executions(rows(("b", "2025-01-02T11:00:00Z", "2025-01-02T11:00:00Z")), tmp_path)
    assert str(path) in str(info.value) and path.read_bytes() == before


def test_an_unreadable_common_metadata_is_rebuilt_by_any_write(tmp_path):
    write_executions(rows(("a", "2025-01-02T10:00:00Z", "2025-01-02T10:00:00Z")), tmp_path)
    (tmp_path / "_common_metadata").write_bytes(b"garbage")
    write_executions(rows(("a", "2025-01-02T10:00:00Z", "2025-01-02T10:00:00Z")), tmp_path)
    schema, dataset_id = read_dataset_schema(resolve_location(tmp_path))
    assert dataset_id and "execution_id" in schema.names  # readable again, with an identity


def test_a_file_system_that_fails_reading_the_metadata_does_not_reset_the_identity(
    tmp_path, monkeypatch
):
    write_executions(rows(("a", "2025-01-02T10:00:00Z", "2025-01-02T10:00:00Z")), tmp_path)
    _, dataset_id = read_dataset_schema(resolve_location(tmp_path))

    def timed_out(location, path):
        raise StorageError(f"cannot read the schema of {path}: Connection timed out", path=path)

    monkeypatch.setattr("eachlabs_loader.dataset.read_schema", timed_out)
    with pytest.raises(StorageError, match="timed out"):
        write_executions(rows(("b", "2025-01-02T11:00:00Z", "2025-01-02T11:00:00Z")), tmp_path)
    monkeypatch.undo()
    assert read_dataset_schema(resolve_location(tmp_path))[1] == dataset_id
