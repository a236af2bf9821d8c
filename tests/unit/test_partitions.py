"""A lake partition's pure parts: keys, splitting a batch, the merge rule and its counts."""

from __future__ import annotations

import pyarrow as pa
import pytest

from eachlabs_loader.pagination import columns_from_rows
from eachlabs_loader.partitions import (
    NULL_PARTITION,
    merge_partition,
    partition_value,
    split_partitions,
)
from eachlabs_loader.schema import normalize_table, sort_executions, unique_executions


def table(*rows):
    return normalize_table(columns_from_rows([dict(r) for r in rows]))


def row(execution_id, flow="wf", created=None, started=None, updated=None, status="completed"):
    return {
        "execution_id": execution_id,
        "flow_id": flow,
        "created_at": created,
        "started_at": started,
        "updated_at": updated,
        "status": status,
    }


def test_rows_split_by_workflow_and_utc_day_keeping_their_order():
    rows = table(
        row("a", "w1", "2025-01-02T23:59:59Z"),
        row("b", "w2", "2025-01-02T10:00:00+02:00"),  # 08:00 UTC: the same day
        row("c", "w1", "2025-01-01T23:00:00-02:00"),  # 01:00 UTC on the 2nd
        row("d", "w1", None, "2024-12-31T00:00:00Z"),  # no created_at: started_at's day
        row("e", "w1"),  # neither
        row("f", None, "2025-01-02T00:00:00Z"),
        row("g", "", "2025-01-02T00:00:00Z"),  # an empty flow id is the null partition too
    )
    parts = {key: part["execution_id"].to_pylist() for key, part in split_partitions(rows)}
    assert parts == {
        ("w1", "2025-01-02"): ["a", "c"],
        ("w2", "2025-01-02"): ["b"],
        ("w1", "2024-12-31"): ["d"],
        ("w1", NULL_PARTITION): ["e"],
        (NULL_PARTITION, "2025-01-02"): ["f", "g"],
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [("../x", "..%2Fx"), ("a b", "a%20b"), ("ünï", "%C3%BCn%C3%AF"), ("", NULL_PARTITION)],
)
def test_partition_values_are_percent_encoded(value, expected):
    assert partition_value(value) == expected


def test_a_merge_keeps_one_row_per_id_the_newest_update_and_counts_what_changed():
    old = sort_executions(
        table(
            row("same", created="2025-01-01T01:00:00Z", updated="2025-01-01T01:00:00Z"),
            row(
                "newer",
                created="2025-01-01T02:00:00Z",
                updated="2025-01-01T02:00:00Z",
                status="running",
            ),
            row("stale", created="2025-01-01T03:00:00Z", updated="2025-01-01T05:00:00Z"),
        )
    )
    new = table(
        row("same", created="2025-01-01T01:00:00Z", updated="2025-01-01T01:00:00Z"),
        row("newer", created="2025-01-01T02:00:00Z", updated="2025-01-01T02:30:00Z"),
        row(
            "stale", created="2025-01-01T03:00:00Z", updated="2025-01-01T04:00:00Z", status="failed"
        ),  # older than what is stored: loses
        row("fresh", created="2025-01-01T04:00:00Z", updated="2025-01-01T04:00:00Z"),
    )
    merged, inserted, updated = merge_partition(old, new)
    assert (inserted, updated) == (1, 1)
    statuses = dict(zip(merged["execution_id"].to_pylist(), merged["status"].to_pylist()))
    assert statuses == {
        "fresh": "completed",
        "stale": "completed",
        "newer": "completed",
        "same": "completed",
    }
    assert merged["execution_id"].to_pylist() == ["fresh", "stale", "newer", "same"]  # newest first


def test_a_tie_goes_to_the_row_just_fetched():
    old = table(
        row("x", created="2025-01-01T00:00:00Z", updated="2025-01-01T00:00:00Z", status="running")
    )
    new = table(
        row("x", created="2025-01-01T00:00:00Z", updated="2025-01-01T00:00:00Z", status="completed")
    )
    merged, inserted, updated = merge_partition(old, new)
    assert merged["status"].to_pylist() == ["completed"] and (inserted, updated) == (0, 1)


def test_new_rows_alone_are_deduplicated_and_sorted_unless_already_so():
    new = table(
        row("b", created="2025-01-01T00:00:00Z", updated="2025-01-01T00:00:00Z"),
        row("a", created="2025-01-01T01:00:00Z", updated="2025-01-01T01:00:00Z"),
        row("b", created="2025-01-01T00:00:00Z", updated="2025-01-01T02:00:00Z", status="failed"),
    )
    merged, inserted, updated = merge_partition(None, new)
    assert merged["execution_id"].to_pylist() == ["a", "b"]
    assert merged["status"].to_pylist() == ["completed", "failed"]
    assert (inserted, updated) == (2, 0)
    ordered = sort_executions(unique_executions(new))
    assert merge_partition(None, ordered, ordered=True)[0].equals(ordered)


def test_nulls_compare_equal_and_a_missing_update_time_is_the_oldest():
    old = table(row("x", created="2025-01-01T00:00:00Z"))  # no updated_at
    same = table(row("x", created="2025-01-01T00:00:00Z"))
    assert merge_partition(old, same)[1:] == (0, 0)
    later = table(row("x", created="2025-01-01T00:00:00Z", updated="2025-01-01T00:00:01Z"))
    merged, inserted, updated = merge_partition(old, later)
    assert (inserted, updated) == (0, 1)
    assert merged["updated_at"].null_count == 0
    assert isinstance(merged, pa.Table)
