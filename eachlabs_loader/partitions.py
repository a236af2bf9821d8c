"""A partition of the lake: its key (workflow UUID, UTC date), how rows fall into it, how
new rows merge with the ones it holds, and how many new partition files are written at once.

Pure Arrow on whole tables; files are ``storage``'s (Arrow's dataset writer writes them, in
its own threads, without the interpreter's lock).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import StorageError
from .schema import ARROW_STRING, latest_rows, sort_executions, unique_executions
from .storage import MAX_FILES_PER_WRITE, Location, remove_quietly, write_partitioned
from .timestamps import MISSING_MICROS, micros

DATA_FILE = "executions.parquet"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
"""Hive's name for a null partition value: executions with no created_at nor started_at."""
PARTITION_KEYS = pa.schema([("workflow_id", ARROW_STRING), ("date", ARROW_STRING)])
WRITE_OPTIONS: dict[str, Any] = {
    "compression": "snappy",
    "coerce_timestamps": "us",
    "allow_truncated_timestamps": False,
    "use_deprecated_int96_timestamps": False,
    # Few distinct values per file: dictionary-encoded. The others (ids, timestamps, JSON)
    # are mostly distinct, and encoding a dictionary for them costs more than it saves.
    "use_dictionary": ["flow_id", "flow_name", "version_id", "status", "bulk_id"],
}
ROWS_PER_GROUP = 64 * 1024

PartitionKey = tuple[str, str]


def partition_value(value: Any) -> str:
    """A hive partition value that cannot escape the root: percent-encoded, never empty."""
    if value is None or (not isinstance(value, str) and pd.isna(value)) or value == "":
        return NULL_PARTITION
    return quote(str(value), safe="-_.")


def split_partitions(table: pa.Table) -> Iterator[tuple[PartitionKey, pa.Table]]:
    """The rows of each ``(workflow_id, date)`` partition, in their order: the UTC date of
    ``created_at``, else ``started_at``. Vectorised: one sort of the table, then slices."""
    workflows, flow_of_row = _partition_workflows(table["flow_id"])
    days, day_of_row = _partition_days(pc.coalesce(table["created_at"], table["started_at"]))
    group_of_row = flow_of_row * len(days) + day_of_row
    groups, group_of_row = np.unique(group_of_row, return_inverse=True)
    order = np.argsort(group_of_row, kind="stable")
    grouped = table.take(order)
    stops = np.cumsum(np.bincount(group_of_row, minlength=len(groups)))
    start = 0
    for group, stop in zip(groups.tolist(), stops.tolist(), strict=True):
        key = (workflows[group // len(days)], days[group % len(days)])
        yield key, grouped.slice(start, stop - start)
        start = stop


def _partition_workflows(flow_ids: Any) -> tuple[list[str], np.ndarray]:
    """The partition names of the distinct flow ids, and each row's index into them."""
    if isinstance(flow_ids, pa.ChunkedArray):
        flow_ids = flow_ids.combine_chunks()
    encoded = pc.dictionary_encode(flow_ids)
    names = [partition_value(v) for v in encoded.dictionary.to_pylist()] + [NULL_PARTITION]
    distinct = list(dict.fromkeys(names))  # "" and null both name the null partition
    position = np.array([distinct.index(n) for n in names], dtype=np.int64)
    codes = pc.fill_null(encoded.indices, len(names) - 1).to_numpy()
    return distinct, position[codes]


def _partition_days(when: Any) -> tuple[list[str], np.ndarray]:
    """The ``YYYY-MM-DD`` of the distinct UTC days, and each row's index into them."""
    instants = micros(when).to_numpy()
    days = np.where(instants == _NO_DAY, _NO_DAY, np.floor_divide(instants, _MICROS_PER_DAY))
    distinct, day_of_row = np.unique(days, return_inverse=True)
    names = [NULL_PARTITION if d == _NO_DAY else _day_name(d) for d in distinct.tolist()]
    return names, day_of_row


def _day_name(day: int) -> str:
    return str(np.datetime64(day, "D"))


_NO_DAY = MISSING_MICROS
_MICROS_PER_DAY = 86_400_000_000


def partition_dir(location: Location, key: PartitionKey) -> str:
    workflow, date = key
    return location.path(f"workflow_id={workflow}", f"date={date}")


def partition_file(location: Location, key: PartitionKey) -> str:
    return f"{partition_dir(location, key)}/{DATA_FILE}"


def write_partitions(
    location: Location, tables: dict[PartitionKey, pa.Table], basename: str
) -> dict[str, str]:
    """Write each partition's rows as one new file named ``basename`` (``{i}`` in it is
    numbered) in its directory; returns each partition's file path -> the path written. If
    anything fails, the files written so far are removed."""
    files: dict[str, str] = {}
    keys = list(tables)
    try:
        for start in range(0, len(keys), MAX_FILES_PER_WRITE):
            chunk = {key: tables[key] for key in keys[start : start + MAX_FILES_PER_WRITE]}
            files.update(_write_chunk(location, chunk, basename))
    except BaseException:  # Arrow numbers the files of each directory from 0
        for key in keys:
            directory = partition_dir(location, key)
            remove_quietly(location, f"{directory}/{basename.format(i=0)}")
        raise
    return files


def _write_chunk(
    location: Location, tables: dict[PartitionKey, pa.Table], basename: str
) -> dict[str, str]:
    rows = pa.concat_tables(tables.values())
    sizes = [t.num_rows for t in tables.values()]
    for name, names in zip(PARTITION_KEYS.names, zip(*tables, strict=True), strict=True):
        # Arrow escapes partition values as ``partition_value`` does: it gets them unescaped.
        values = [None if n == NULL_PARTITION else unquote(n) for n in names]
        column = [
            pa.repeat(pa.scalar(v, ARROW_STRING), n) for v, n in zip(values, sizes, strict=True)
        ]
        rows = rows.append_column(pa.field(name, ARROW_STRING), pa.concat_arrays(column))
    paths = [partition_file(location, key) for key in tables]
    what = paths[0] if len(paths) == 1 else f"{len(paths)} partition files ({paths[0]}, ...)"
    written = write_partitioned(
        location, rows, PARTITION_KEYS, basename, WRITE_OPTIONS, ROWS_PER_GROUP, what=what
    )
    files = {f"{path.rsplit('/', 1)[0]}/{DATA_FILE}": path for path in written}
    if set(files) != set(paths) or len(written) != len(paths):
        for path in written:  # not one file in each partition's directory: none staged
            remove_quietly(location, path)
        raise StorageError(
            f"{location.uri}: the files written ({sorted(written)}) are not one per partition",
            path=location.uri,
        )
    return files


def merge_partition(
    old: pa.Table | None, new: pa.Table, *, ordered: bool = False
) -> tuple[pa.Table, int, int]:
    """Upsert ``new`` into ``old`` (both of one schema): returns (merged rows, inserted,
    updated), the merged rows sorted (``sort_executions``; ``ordered``: ``new`` already is,
    and holds each id once).

    A new row replaces an old one with the same id when its ``updated_at`` is newer or equal
    (the later observation wins); identical rows count as neither inserted nor updated.
    """
    if not ordered:
        new = sort_executions(unique_executions(new))
    if old is None or old.num_rows == 0:
        return new, new.num_rows, 0
    combined = pa.concat_tables([old, new])
    kept = latest_rows(combined["execution_id"], combined["updated_at"])
    if kept is None:
        kept = np.arange(combined.num_rows)
    from_new = kept >= old.num_rows
    ids = combined["execution_id"].take(kept)
    is_old_id = pc.is_in(ids, old["execution_id"]).to_numpy(zero_copy_only=False)
    inserted = int((from_new & ~is_old_id).sum())
    replacing = kept[from_new & is_old_id]
    updated = _count_changed(old, combined.take(replacing))
    return sort_executions(combined.take(kept)), inserted, updated


def _count_changed(old: pa.Table, replacing: pa.Table) -> int:
    """How many of ``replacing`` (rows whose id ``old`` holds) differ from the old row."""
    if replacing.num_rows == 0:
        return 0
    before = old.take(pc.index_in(replacing["execution_id"], old["execution_id"]))
    changed = np.zeros(replacing.num_rows, dtype=bool)
    for name in replacing.column_names:
        a, b = replacing[name], before[name]
        same = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(a.is_null(), b.is_null()))
        changed |= ~same.to_numpy(zero_copy_only=False)
    return int(changed.sum())
