"""The Parquet lake: hive partitions by workflow UUID and UTC date, merged idempotently.

Layout::

    {root}/_common_metadata                                   the dataset's Arrow schema
    {root}/workflow_id=<flow_id>/date=<YYYY-MM-DD>/executions.parquet

One file per partition. Writing a partition merges its old rows with the new ones (one row per
``execution_id``, the newest ``updated_at`` wins, ties go to the new row: ``partitions``).
A load stages every new partition file (``staging.StagedFiles``) and makes them visible only
once every merge has succeeded, so a file that turns out incompatible, a full disk or an
interrupted load leaves every file of the dataset as it was. A partition whose merge
changes nothing is not rewritten.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .dataset import (
    align,
    check_compatible,
    check_not_delta_table,
    read_dataset_schema,
    union_schema,
    write_dataset_schema,
)
from .errors import EachlabsError, SchemaMismatchError, StorageError
from .partitions import (
    DATA_FILE,
    NULL_PARTITION,
    PARTITION_KEYS,
    PartitionKey,
    merge_partition,
    partition_file,
    partition_value,
    split_partitions,
    write_partitions,
)
from .result import LoadResult
from .schema import (
    COLUMNS,
    arrow_schema,
    arrow_to_frame,
    conform_frame,
    frame_to_arrow,
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

MAX_BUFFERED_ROWS = 100_000


class LakeWriter:
    """Streams contract rows into the lake, holding only unfinished partitions in memory.

    Rows arrive newest first, so once a chunk reaches an older date, the newer partitions of
    that workflow are complete: they are merged and their new files staged at once; so are
    all of a workflow's partitions once ``complete`` says its rows have all arrived. Out-of-
    order rows are still correct (their partition is merged again); ``MAX_BUFFERED_ROWS``
    bounds the buffer. The partitions a step completes are written together, by Arrow.
    ``close`` makes the staged files visible, ``abort`` drops them.
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
        self._staged = StagedFiles(location)
        self._merged: dict[PartitionKey, tuple[pa.Table, bool]] = {}  # staged, to be written
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
        self._merged.clear()
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
        """Merge the partitions of ``keys`` with what they hold, then write them at once."""
        for key in keys:
            parts = self._buffer.pop(key)
            self._buffered_rows -= sum(p.num_rows for p in parts)
            self._write_partition(key, self._concat(parts), ordered=len(parts) == 1)
        self._write_merged()

    def _concat(self, parts: list[pa.Table]) -> pa.Table:
        """A partition's buffered rows as one table of the current schema (which may have
        grown since the first of them arrived)."""
        current = [p if p.schema == self.schema else align(p, self.schema, "") for p in parts]
        return current[0] if len(current) == 1 else pa.concat_tables(current)

    def _write_merged(self) -> None:
        """Write the partitions merged since the last call as new files, staged for commit:
        one Arrow call (its C++ writer: other threads run meanwhile); those that lose rows
        to another partition in a call of their own (the commit shows them after the
        others)."""
        for loses_rows in (False, True):
            tables = {
                key: self._aligned(table)
                for key, (table, losing) in self._merged.items()
                if losing == loses_rows
            }
            if not tables:
                continue
            for key in tables:
                directory = partition_file(self.location, key).rsplit("/", 1)[0]
                if directory not in self._cleaned and self._is_stored(key):
                    # Leftovers of crashed writers go before ours (a new directory has none).
                    remove_stale_temporaries(self.location, directory)
                    self._cleaned.add(directory)
            basename = self._staged.temporary(DATA_FILE) + "-{i}"
            for path, tmp in write_partitions(self.location, tables, basename).items():
                self._staged.adopt(path, tmp, loses_rows=loses_rows)
        self._merged.clear()

    def _aligned(self, table: pa.Table) -> pa.Table:
        return table if table.schema == self.schema else align(table, self.schema, "")

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
        merged, inserted, updated = merge_partition(self._current(key), new, ordered=ordered)
        self._note_stored(key, new)
        if inserted == 0 and updated == 0:
            return
        loses_rows = key in self._merged and self._merged[key][1]  # a mark once set stays
        self._merged[key] = (merged, loses_rows)
        logger.debug(
            "staged %s: %d rows (%d new, %d updated)", key, merged.num_rows, inserted, updated
        )
        self.result.rows_inserted += inserted
        self.result.rows_updated += updated
        self.result.rows_written += inserted + updated

    def _remove_from(self, key: PartitionKey, ids: set[str]) -> None:
        """Drop rows that moved to another partition (their partition key became known)."""
        old = self._current(key)
        if old is None:
            return
        kept = old.filter(pc.invert(pc.is_in(old["execution_id"], pa.array(sorted(ids)))))
        removed = old.num_rows - kept.num_rows
        if removed == 0:
            return
        if kept.num_rows == 0:
            self._merged.pop(key, None)
            self._staged.delete(partition_file(self.location, key))
        else:
            self._merged[key] = (kept, True)
        self.result.rows_inserted -= removed  # they were moves, not new rows
        self.result.rows_updated += removed
        logger.debug("moved %d rows out of %s", removed, key)

    def _current(self, key: PartitionKey) -> pa.Table | None:
        """A partition as this load sees it: merged (not written yet), being written,
        staged, or stored."""
        if key in self._merged:
            return self._merged[key][0]
        path = partition_file(self.location, key)
        if not self._is_stored(key) and path not in self._staged.paths():
            return None
        current = self._staged.current(path)
        table = None if current is None else read_table(self.location, current)
        if table is None:
            return None
        check_compatible(table.schema, self.schema, path)
        return align(table, self.schema, path)

    def _stored_ids(self, workflow: str, *, undated_only: bool) -> dict[str, PartitionKey]:
        """Where the workflow's stored rows are: all of them, or only those without created_at.

        Read once per workflow (this load's versions included) and kept up to date by this
        writer. Rows without created_at are rare and row-group statistics let the scan skip
        everything else.
        """
        cache = self._undated if undated_only else self._homes
        if workflow not in cache:
            cache[workflow] = self._scan_ids(workflow, undated_only=undated_only)
        return cache[workflow]

    def _scan_ids(self, workflow: str, *, undated_only: bool) -> dict[str, PartitionKey]:
        found: dict[str, PartitionKey] = {}
        root = self.location.path(f"workflow_id={workflow}")
        stored = f"workflow_id={workflow}" in self._stored_workflows
        paths = set(list_files(self.location, root, DATA_FILE) if stored else ())
        paths.update(p for p in self._staged.paths() if p.startswith(root + "/"))
        where = pc.field("created_at").is_null() if undated_only else None
        for path in sorted(paths):
            current = self._staged.current(path)
            if current is None:
                continue
            table = read_table(self.location, current, columns=["execution_id"], filters=where)
            if table is not None:
                date = path.rsplit("/", 2)[-2].removeprefix("date=")
                found.update(dict.fromkeys(table["execution_id"].to_pylist(), (workflow, date)))
        for key, (table, _) in self._merged.items():  # merged in this step, not written yet
            if key[0] == workflow:
                rows = table.filter(table["created_at"].is_null()) if undated_only else table
                found.update(dict.fromkeys(rows["execution_id"].to_pylist(), key))
        return found

    def _is_stored(self, key: PartitionKey) -> bool:
        """Could the partition hold a file from before this load (its workflow's directory
        existed when the load began)?"""
        return f"workflow_id={key[0]}" in self._stored_workflows

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
    filter_ = None if workflow_id is None else pc.field("flow_id") == workflow_id
    return arrow_to_frame(sort_executions(read_hive(location, schema, PARTITION_KEYS, filter_)))
