"""The Parquet lake: hive partitions by workflow UUID and UTC date, merged idempotently.

Layout::

    {root}/_common_metadata                                   the dataset's Arrow schema
    {root}/workflow_id=<flow_id>/date=<YYYY-MM-DD>/executions.parquet

One file per partition. Writing a partition merges its old rows with the new ones (one row per
``execution_id``, the newest ``updated_at`` wins, ties go to the new row). A load stages every
new partition file (``storage.StagedFiles``) and makes them visible only once every merge
has succeeded, so a file that turns out incompatible, a full disk or an interrupted load
leaves every file of the dataset as it was. A partition whose merge changes nothing is not
rewritten.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import quote

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
    drop_duplicate_executions,
    frame_to_arrow,
)
from .storage import (
    FileSystem,
    Location,
    StagedFiles,
    check_writable,
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
}

PartitionKey = tuple[str, str]


def partition_value(value: Any) -> str:
    """A hive partition value that cannot escape the root: percent-encoded, never empty."""
    if value is None or (not isinstance(value, str) and pd.isna(value)) or value == "":
        return NULL_PARTITION
    return quote(str(value), safe="-_.")


def partition_keys(frame: pd.DataFrame) -> pd.Series:
    """``(workflow_id, date)`` per row: the UTC date of ``created_at``, else ``started_at``."""
    when = frame["created_at"].fillna(frame["started_at"])
    dates = when.dt.strftime("%Y-%m-%d").astype(object).where(when.notna(), NULL_PARTITION)
    workflows = [partition_value(v) for v in frame["flow_id"].astype(object).tolist()]
    return pd.Series(
        list(zip(workflows, dates.tolist(), strict=True)), index=frame.index, dtype=object
    )


def partition_dir(location: Location, key: PartitionKey) -> str:
    workflow, date = key
    return location.path(f"workflow_id={workflow}", f"date={date}")


class LakeWriter:
    """Streams contract frames into the lake, holding only unfinished partitions in memory.

    Rows arrive newest first, so once a chunk reaches an older date, the newer partitions of
    that workflow are complete: they are merged and their new files staged at once. Out-of-
    order rows are still correct (their partition is merged again); ``MAX_BUFFERED_ROWS``
    bounds the buffer. ``close`` makes the staged files visible, ``abort`` drops them.
    """

    def __init__(self, location: Location, *, max_buffered_rows: int = MAX_BUFFERED_ROWS) -> None:
        self.location = location
        self.max_buffered_rows = max_buffered_rows
        self.result = LoadResult(output=location.uri)
        self._buffer: dict[PartitionKey, list[pd.DataFrame]] = defaultdict(list)
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
        self._cleaned: set[str] = set()
        self._failure: EachlabsError | None = None
        self.schema = union_schema(arrow_schema(COLUMNS), self._stored_schema)

    def add(self, frame: pd.DataFrame) -> None:
        """Buffer a contract frame by partition; stage the partitions it shows complete."""
        if self._failure is not None:
            raise self._failure  # another workflow's rows met it: this load writes nothing
        if frame.empty:
            return
        self._grow_schema(frame)
        keys = partition_keys(frame)
        for key, part in frame.groupby(keys, sort=False):
            self._buffer[key].append(part)
            self._touched.add(key)
        self._buffered_rows += len(frame)
        self._guarded(self._flush_complete, keys)
        if self._buffered_rows > self.max_buffered_rows:
            self._guarded(self._flush, list(self._buffer))

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

    def _grow_schema(self, frame: pd.DataFrame) -> None:
        new = [c for c in frame.columns if c not in self.schema.names]
        if new:
            self.schema = union_schema(self.schema, arrow_schema(new))

    def _flush_complete(self, keys: pd.Series) -> None:
        oldest: dict[str, str] = {}
        for workflow, date in keys.tolist():
            if date != NULL_PARTITION and date < oldest.get(workflow, "9999"):
                oldest[workflow] = date
        done = [
            key
            for key in self._buffer
            if key[1] != NULL_PARTITION and key[0] in oldest and key[1] > oldest[key[0]]
        ]
        self._flush(done)

    def _flush(self, keys: list[PartitionKey]) -> None:
        for key in keys:
            parts = self._buffer.pop(key)
            self._buffered_rows -= sum(len(p) for p in parts)
            self._write_partition(key, pd.concat(parts, ignore_index=True))

    def _write_partition(self, key: PartitionKey, new: pd.DataFrame) -> None:
        new = self._merge_away(key, new)
        self._merge_into(key, new)
        # A row stored before without created_at (in a fallback partition) that now has one
        # moves here: remove it from where it was.
        movable = self._stored_ids(key[0], undated_only=True)
        moved = new.loc[new["created_at"].notna(), "execution_id"]
        stale: dict[PartitionKey, set[str]] = defaultdict(set)
        for execution_id in moved.tolist():
            old_key = movable.get(execution_id)
            if old_key is not None and old_key != key:
                stale[old_key].add(execution_id)
                del movable[execution_id]
        for old_key, ids in stale.items():
            self._remove_from(old_key, ids)

    def _merge_away(self, key: PartitionKey, new: pd.DataFrame) -> pd.DataFrame:
        """Rows without created_at already stored elsewhere (under their real date) stay
        there: merged into that partition instead of stored twice. Returns the others."""
        undated = new["created_at"].isna().to_numpy()
        if not undated.any():
            return new
        homes = self._stored_ids(key[0], undated_only=False)
        ids = new["execution_id"].tolist()
        elsewhere = [homes.get(i) if u else None for i, u in zip(ids, undated, strict=True)]
        away = [home is not None and home != key for home in elsewhere]
        groups: dict[PartitionKey, list[int]] = defaultdict(list)
        for position, home in enumerate(elsewhere):
            if away[position] and home is not None:
                groups[home].append(position)
        for home, positions in groups.items():
            self._merge_into(home, new.iloc[positions])
        result: pd.DataFrame = new[[not a for a in away]]
        return result

    def _merge_into(self, key: PartitionKey, new: pd.DataFrame) -> None:
        if new.empty:
            return
        path = f"{partition_dir(self.location, key)}/{DATA_FILE}"
        old = self._read_partition(path)
        merged, inserted, updated = merge_partition(old, new)
        self._note_stored(key, new)
        if inserted == 0 and updated == 0:
            return
        self._stage(path, merged)
        logger.debug(
            "staged %s: %d rows (%d new, %d updated)", path, len(merged), inserted, updated
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
        kept = old[~old["execution_id"].isin(ids)].reset_index(drop=True)
        if len(kept) == len(old):
            return
        if kept.empty:
            self._staged.delete(path)
        else:
            self._stage(path, kept, loses_rows=True)
        self.result.rows_inserted -= len(old) - len(kept)  # they were moves, not new rows
        self.result.rows_updated += len(old) - len(kept)
        logger.debug("moved %d rows out of %s", len(old) - len(kept), path)

    def _read_partition(self, path: str) -> pd.DataFrame | None:
        """A partition as this load sees it: its staged version if there is one."""
        current = self._staged.current(path)
        table = None if current is None else read_table(self.location, current)
        if table is None:
            return None
        check_compatible(table.schema, self.schema, path)
        return arrow_to_frame(align(table, self.schema, path))

    def _stage(self, path: str, frame: pd.DataFrame, *, loses_rows: bool = False) -> None:
        directory = path.rsplit("/", 1)[0]
        if directory not in self._cleaned:  # leftovers of crashed writers, before ours
            remove_stale_temporaries(self.location, directory)
            self._cleaned.add(directory)
        table = frame_to_arrow(frame, self.schema)
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
        paths = set(list_files(self.location, root, ".parquet"))
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

    def _note_stored(self, key: PartitionKey, rows: pd.DataFrame) -> None:
        ids = rows["execution_id"].tolist()
        if key[0] in self._homes:
            self._homes[key[0]].update(dict.fromkeys(ids, key))
        if key[0] in self._undated:
            undated = rows.loc[rows["created_at"].isna(), "execution_id"].tolist()
            self._undated[key[0]].update(dict.fromkeys(undated, key))


def merge_partition(old: pd.DataFrame | None, new: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Upsert ``new`` into ``old``: returns (merged rows, inserted, updated).

    A new row replaces an old one with the same id when its ``updated_at`` is newer or equal
    (the later observation wins); identical rows count as neither inserted nor updated.
    """
    new = drop_duplicate_executions(new.reset_index(drop=True))
    if old is None or old.empty:
        return _sorted(new), len(new), 0
    old_ids = set(old["execution_id"].tolist())
    combined = pd.concat([old, new], ignore_index=True)
    combined[_SOURCE] = [False] * len(old) + [True] * len(new)
    merged = drop_duplicate_executions(combined).reset_index(drop=True)
    from_new = merged.pop(_SOURCE).to_numpy(dtype=bool)
    is_old_id = merged["execution_id"].isin(old_ids).to_numpy(dtype=bool)
    inserted = int((from_new & ~is_old_id).sum())
    candidates = merged[from_new & is_old_id]
    updated = _count_changed(old.set_index("execution_id"), candidates.set_index("execution_id"))
    return _sorted(merged), inserted, updated


_SOURCE = "__eachlabs_from_new__"


def _count_changed(old: pd.DataFrame, new: pd.DataFrame) -> int:
    if new.empty:
        return 0
    before = old.loc[new.index]
    changed = pd.Series(False, index=new.index)
    for column in new.columns:
        a = new[column]
        b = before[column] if column in before.columns else pd.Series(pd.NA, index=new.index)
        same = (a == b).fillna(False).astype(bool) | (a.isna() & b.isna())
        changed |= ~same
    return int(changed.sum())


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Newest first, then by id: deterministic files whatever order rows arrived in."""
    ordered: pd.DataFrame = frame.sort_values(
        ["created_at", "execution_id"], ascending=[False, True], na_position="last", kind="stable"
    ).reset_index(drop=True)
    return ordered


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
    return _sorted(arrow_to_frame(read_hive(location, schema, partitions, filter_)))
