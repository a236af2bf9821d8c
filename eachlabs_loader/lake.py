"""The Parquet lake: hive partitions by workflow UUID and UTC date, merged idempotently.

Layout::

    {root}/_common_metadata                                   the dataset's Arrow schema
    {root}/workflow_id=<flow_id>/date=<YYYY-MM-DD>/executions.parquet

One file per partition. Writing a partition merges its old rows with the new ones (one row per
``execution_id``, the newest ``updated_at`` wins, ties go to the new row). A load stages every
new partition file (``staging.StagedFiles``) and makes them visible only once every merge
has succeeded, so a file that turns out incompatible, a full disk or an interrupted load
leaves every file of the dataset as it was. A partition whose merge changes nothing is not
rewritten.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .dataset import (
    align,
    check_compatible,
    check_not_delta_table,
    read_dataset_schema,
    union_schema,
    write_dataset_schema,
)
from .errors import EachlabsError, SchemaMismatchError, StorageError
from .result import LoadResult
from .schema import (
    ARROW_STRING,
    COLUMNS,
    arrow_schema,
    arrow_to_frame,
    conform_frame,
    frame_to_arrow,
    latest_rows,
    sort_executions,
    unique_executions,
)
from .staging import StagedFiles
from .storage import (
    FileSystem,
    Location,
    check_writable,
    list_directories,
    list_files,
    read_hive,
    read_table,
    remove_stale_temporaries,
    resolve_location,
)

logger = logging.getLogger("eachlabs_loader")

DATA_FILE = "executions.parquet"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
"""Hive's name for a null partition value: executions with no created_at nor started_at."""
MAX_BUFFERED_ROWS = 100_000
_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "snappy",
    "coerce_timestamps": "us",
    "allow_truncated_timestamps": False,
    "use_deprecated_int96_timestamps": False,
    "row_group_size": 64 * 1024,
    # Few distinct values per file: dictionary-encoded. The others (ids, timestamps, JSON)
    # are mostly distinct, and encoding a dictionary for them costs more than it saves.
    "use_dictionary": ["flow_id", "flow_name", "version_id", "status", "bulk_id"],
}

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
    micros = pc.fill_null(when.cast(pa.int64()), _NO_DAY).to_numpy()
    days = np.where(micros == _NO_DAY, _NO_DAY, np.floor_divide(micros, _MICROS_PER_DAY))
    distinct, day_of_row = np.unique(days, return_inverse=True)
    names = [NULL_PARTITION if d == _NO_DAY else _day_name(d) for d in distinct.tolist()]
    return names, day_of_row


def _day_name(day: int) -> str:
    return str(np.datetime64(day, "D"))


_NO_DAY = int(np.iinfo(np.int64).min)
_MICROS_PER_DAY = 86_400_000_000


def partition_dir(location: Location, key: PartitionKey) -> str:
    workflow, date = key
    return location.path(f"workflow_id={workflow}", f"date={date}")


class LakeWriter:
    """Streams contract rows into the lake, holding only unfinished partitions in memory.

    Rows arrive newest first, so once a chunk reaches an older date, the newer partitions of
    that workflow are complete: they are merged and their new files staged at once; so are
    all of a workflow's partitions once ``complete`` says its rows have all arrived. Out-of-
    order rows are still correct (their partition is merged again); ``MAX_BUFFERED_ROWS``
    bounds the buffer. ``close`` makes the staged files visible, ``abort`` drops them.
    """

    def __init__(self, location: Location, *, max_buffered_rows: int = MAX_BUFFERED_ROWS) -> None:
        self.location = location
        self.max_buffered_rows = max_buffered_rows
        self.result = LoadResult(output=location.uri)
        self._buffer: dict[PartitionKey, list[pa.Table]] = defaultdict(list)
        self._buffered_rows = 0
        self._touched: set[PartitionKey] = set()
        self._started = time.monotonic()
        check_writable(location)
        check_not_delta_table(location)
        self._stored_schema, stored_id = read_dataset_schema(location)
        self.dataset_id = stored_id or uuid.uuid4().hex
        self._identity_stored = stored_id is not None
        self._homes: dict[str, dict[str, PartitionKey]] = {}
        self._undated: dict[str, dict[str, PartitionKey]] = {}
        self._staged = StagedFiles(location, background=True)
        # Workflows with a directory before this load; the others have no file to merge
        # with or to clean up (most partitions of a first load or a backfill).
        self._stored_workflows = list_directories(location, location.root)
        self._cleaned: set[str] = set()
        self._failure: EachlabsError | None = None
        self.schema = union_schema(arrow_schema(COLUMNS), self._stored_schema)

    def add(self, rows: pa.Table | pd.DataFrame) -> None:
        """Buffer contract rows (an Arrow table, or a conformed DataFrame) by partition;
        stage the partitions they show complete."""
        if self._failure is not None:
            raise self._failure  # another workflow's rows met it: this load writes nothing
        table = self._conformed(rows)
        if table.num_rows == 0:
            return
        # Once here for the whole batch: each partition's slice comes out unique and sorted.
        table = sort_executions(unique_executions(table))
        oldest: dict[str, str] = {}
        for key, part in split_partitions(table):
            self._buffer[key].append(part)
            self._touched.add(key)
            if key[1] != NULL_PARTITION and key[1] < oldest.get(key[0], "9999"):
                oldest[key[0]] = key[1]
        self._buffered_rows += table.num_rows
        self._guarded(self._flush, [k for k in self._buffer if _newer(k, oldest)])
        if self._buffered_rows > self.max_buffered_rows:
            self._guarded(self._flush, list(self._buffer))

    def complete(self, flow_ids: set[str]) -> None:
        """Every row of these workflows has arrived: stage their partitions now."""
        workflows = {partition_value(f) for f in flow_ids}
        self._guarded(self._flush, [k for k in self._buffer if k[0] in workflows])

    def close(self) -> LoadResult:
        """Stage everything still buffered, then make every staged file visible; returns
        the counts. After a storage or schema failure while staging nothing is made
        visible; one while committing leaves the files made visible so far (each whole)."""
        try:
            if self._failure is not None:
                raise self._failure
            self._flush(list(self._buffer))
            self._commit()
        except BaseException:
            self.abort()
            raise
        self.result.partitions_touched = len(self._touched)
        self.result.elapsed_s = time.monotonic() - self._started
        return self.result

    def abort(self) -> None:
        """Drop what this load staged: every file of the dataset stays as it was."""
        self._buffer.clear()
        self._buffered_rows = 0
        self._staged.abort()

    def ensure_identity(self) -> None:
        """Store the dataset id (in ``_common_metadata``) before anything refers to it."""
        if not self._identity_stored:
            write_dataset_schema(self.location, self.schema, self.dataset_id)
            self._stored_schema = self.schema
            self._identity_stored = True

    def _conformed(self, rows: pa.Table | pd.DataFrame) -> pa.Table:
        """The rows in the dataset's schema (grown by any new column they bring)."""
        names = list(rows.columns) if isinstance(rows, pd.DataFrame) else rows.column_names
        new = [c for c in names if c not in self.schema.names]
        if new:
            self.schema = union_schema(self.schema, arrow_schema(new))
        if isinstance(rows, pd.DataFrame):
            return frame_to_arrow(rows, self.schema)
        return align(rows, self.schema, self.location.uri)

    def _guarded(self, step: Any, *args: Any) -> None:
        """Run a staging step; a storage or schema failure is kept for ``close`` (which
        then writes nothing), whichever workflow's rows met it."""
        try:
            step(*args)
        except (SchemaMismatchError, StorageError) as exc:
            self._failure = self._failure or exc
            self.abort()
            raise

    def _commit(self) -> None:
        if not len(self._staged) and (self._identity_stored or self._stored_schema is None):
            return  # nothing to write, and no dataset file to rebuild (an empty dataset)
        if self.schema != self._stored_schema or not self._identity_stored:
            # The schema file goes first, so it always covers every data file.
            write_dataset_schema(self.location, self.schema, self.dataset_id)
            self._stored_schema = self.schema
            self._identity_stored = True
        self._staged.commit(on_commit=self._committed)

    def _committed(self, path: str) -> None:
        self.result.files_written += 1
        logger.debug("wrote %s", path)

    def _flush(self, keys: list[PartitionKey]) -> None:
        for key in keys:
            parts = self._buffer.pop(key)
            self._buffered_rows -= sum(p.num_rows for p in parts)
            self._write_partition(key, self._concat(parts), ordered=len(parts) == 1)

    def _concat(self, parts: list[pa.Table]) -> pa.Table:
        """A partition's buffered rows as one table of the current schema (which may have
        grown since the first of them arrived)."""
        current = [p if p.schema == self.schema else align(p, self.schema, "") for p in parts]
        return current[0] if len(current) == 1 else pa.concat_tables(current)

    def _write_partition(self, key: PartitionKey, new: pa.Table, *, ordered: bool) -> None:
        # Rows stored before without created_at (in a fallback partition), read before this
        # partition is staged: one that now has a created_at moves here, out of there.
        movable = self._stored_ids(key[0], undated_only=True)
        new = self._merge_away(key, new)
        self._merge_into(key, new, ordered=ordered)
        if not movable:
            return
        dated = pc.filter(new["execution_id"], new["created_at"].is_valid())
        stale: dict[PartitionKey, set[str]] = defaultdict(set)
        for execution_id in dated.to_pylist():
            old_key = movable.get(execution_id)
            if old_key is not None and old_key != key:
                stale[old_key].add(execution_id)
                del movable[execution_id]
        for old_key, ids in stale.items():
            self._remove_from(old_key, ids)

    def _merge_away(self, key: PartitionKey, new: pa.Table) -> pa.Table:
        """Rows without created_at already stored elsewhere (under their real date) stay
        there: merged into that partition instead of stored twice. Returns the others."""
        if new["created_at"].null_count == 0:
            return new
        undated = new["created_at"].is_null().to_numpy(zero_copy_only=False)
        homes = self._stored_ids(key[0], undated_only=False)
        ids = new["execution_id"].to_pylist()
        elsewhere = [homes.get(i) if u else None for i, u in zip(ids, undated, strict=True)]
        away = np.array([home is not None and home != key for home in elsewhere])
        groups: dict[PartitionKey, list[int]] = defaultdict(list)
        for position, home in enumerate(elsewhere):
            if away[position] and home is not None:
                groups[home].append(position)
        for home, positions in groups.items():
            self._merge_into(home, new.take(positions), ordered=False)
        return new.filter(pa.array(~away))

    def _merge_into(self, key: PartitionKey, new: pa.Table, *, ordered: bool) -> None:
        if new.num_rows == 0:
            return
        path = f"{partition_dir(self.location, key)}/{DATA_FILE}"
        old = self._read_partition(path)
        merged, inserted, updated = merge_partition(old, new, ordered=ordered)
        self._note_stored(key, new)
        if inserted == 0 and updated == 0:
            return
        self._stage(path, merged)
        logger.debug(
            "staged %s: %d rows (%d new, %d updated)", path, merged.num_rows, inserted, updated
        )
        self.result.rows_inserted += inserted
        self.result.rows_updated += updated
        self.result.rows_written += inserted + updated

    def _remove_from(self, key: PartitionKey, ids: set[str]) -> None:
        """Drop rows that moved to another partition (their partition key became known)."""
        path = f"{partition_dir(self.location, key)}/{DATA_FILE}"
        old = self._read_partition(path)
        if old is None:
            return
        kept = old.filter(pc.invert(pc.is_in(old["execution_id"], pa.array(sorted(ids)))))
        removed = old.num_rows - kept.num_rows
        if removed == 0:
            return
        if kept.num_rows == 0:
            self._staged.delete(path)
        else:
            self._stage(path, kept, loses_rows=True)
        self.result.rows_inserted -= removed  # they were moves, not new rows
        self.result.rows_updated += removed
        logger.debug("moved %d rows out of %s", removed, path)

    def _read_partition(self, path: str) -> pa.Table | None:
        """A partition as this load sees it: its staged version if there is one."""
        if not self._is_stored(path) and path not in self._staged.paths():
            return None
        current = self._staged.current(path)
        table = None if current is None else read_table(self.location, current)
        if table is None:
            return None
        check_compatible(table.schema, self.schema, path)
        return align(table, self.schema, path)

    def _stage(self, path: str, table: pa.Table, *, loses_rows: bool = False) -> None:
        directory = path.rsplit("/", 1)[0]
        if directory not in self._cleaned and self._is_stored(path):
            # Leftovers of crashed writers go before ours (a new directory has none).
            remove_stale_temporaries(self.location, directory)
            self._cleaned.add(directory)
        self._staged.write(
            path, lambda sink: pq.write_table(table, sink, **_WRITE_OPTIONS), loses_rows=loses_rows
        )

    def _stored_ids(self, workflow: str, *, undated_only: bool) -> dict[str, PartitionKey]:
        """Where the workflow's stored rows are: all of them, or only those without created_at.

        Read once per workflow (staged versions included) and kept up to date by this
        writer. Rows without created_at are rare and row-group statistics let the scan skip
        everything else.
        """
        cache = self._undated if undated_only else self._homes
        if workflow not in cache:
            cache[workflow] = self._scan_ids(workflow, undated_only=undated_only)
        return cache[workflow]

    def _scan_ids(self, workflow: str, *, undated_only: bool) -> dict[str, PartitionKey]:
        root = self.location.path(f"workflow_id={workflow}")
        stored = f"workflow_id={workflow}" in self._stored_workflows
        paths = set(list_files(self.location, root, ".parquet") if stored else ())
        paths.update(p for p in self._staged.paths() if p.startswith(root + "/"))
        where = pc.field("created_at").is_null() if undated_only else None
        found: dict[str, PartitionKey] = {}
        for path in sorted(paths):
            current = self._staged.current(path)
            if current is None:
                continue
            table = read_table(self.location, current, columns=["execution_id"], filters=where)
            if table is None:
                continue
            date = path.rsplit("/", 2)[-2].removeprefix("date=")
            found.update(dict.fromkeys(table["execution_id"].to_pylist(), (workflow, date)))
        return found

    def _is_stored(self, path: str) -> bool:
        """Could ``path`` (in a workflow's directory) exist before this load?"""
        workflow = path[len(self.location.root) :].lstrip("/").split("/", 1)[0]
        return workflow in self._stored_workflows

    def _note_stored(self, key: PartitionKey, rows: pa.Table) -> None:
        if key[0] in self._homes:
            ids = rows["execution_id"].to_pylist()
            self._homes[key[0]].update(dict.fromkeys(ids, key))
        if key[0] in self._undated and rows["created_at"].null_count:
            undated = pc.filter(rows["execution_id"], rows["created_at"].is_null())
            self._undated[key[0]].update(dict.fromkeys(undated.to_pylist(), key))


def _newer(key: PartitionKey, oldest: dict[str, str]) -> bool:
    """Is the partition newer than the oldest date its workflow just reached (complete)?"""
    return key[1] != NULL_PARTITION and key[0] in oldest and key[1] > oldest[key[0]]


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


def write_lake(
    frame: pd.DataFrame, output: Any, *, filesystem: FileSystem | None = None
) -> LoadResult:
    """Write a DataFrame of executions to the hive lake (same layout and upsert rules as a load).

    Args:
        frame: ``load_executions`` output, or any frame with at least ``execution_id``.
        output: a local path or a URI understood by ``pyarrow.fs`` (``s3://``, ``gs://``...).
        filesystem: an explicit ``pyarrow.fs.FileSystem``; ``output`` is then a path on it.

    Raises:
        InvalidRequestError: ``frame`` is not a frame of executions, or ``output`` is no URI.
        StorageError: the output cannot be read or written (nothing was changed).
        SchemaMismatchError: the output holds files with incompatible column types.
    """
    conformed = conform_frame(frame)
    writer = LakeWriter(resolve_location(output, filesystem))
    try:
        writer.add(conformed)
    except BaseException:
        writer.abort()
        raise
    result = writer.close()
    result.rows_fetched = len(frame)
    return result


def read_lake(
    output: Any, *, filesystem: FileSystem | None = None, workflow_id: str | None = None
) -> pd.DataFrame:
    """Read the hive lake back into the DataFrame contract (plus nothing else).

    Uses the dataset schema, so files written before a new field appeared read as nulls.

    Raises:
        StorageError: there is no dataset at ``output``, or a file of it cannot be read.
    """
    location = resolve_location(output, filesystem)
    schema = read_dataset_schema(location)[0] or arrow_schema(COLUMNS)
    partitions = pa.schema([("workflow_id", ARROW_STRING), ("date", ARROW_STRING)])
    filter_ = None if workflow_id is None else pc.field("flow_id") == workflow_id
    return arrow_to_frame(sort_executions(read_hive(location, schema, partitions, filter_)))
