"""The Parquet lake: hive partitions by workflow UUID and UTC date, merged idempotently.

Layout::

    {root}/_common_metadata                                   the dataset's Arrow schema
    {root}/workflow_id=<flow_id>/date=<YYYY-MM-DD>/executions.parquet

One file per partition. Writing a partition merges its old rows with the new ones (one row per
``execution_id``, the newest ``updated_at`` wins, ties go to the new row) and replaces the file
atomically (see ``storage``). A partition whose merge changes nothing is not rewritten.
Imports ``schema``, ``storage`` and ``errors``.
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
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import SchemaMismatchError
from .result import LoadResult
from .schema import (
    ARROW_STRING,
    ARROW_TIMESTAMP,
    COLUMNS,
    arrow_schema,
    arrow_to_frame,
    arrow_type_for,
    conform_frame,
    drop_duplicate_executions,
    frame_to_arrow,
)
from .storage import Location, check_writable, remove_stale_temporaries, write_file_atomic

logger = logging.getLogger("eachlabs_loader")

DATASET_ID_KEY = b"eachlabs.dataset_id"
"""Key of the dataset's identity in ``_common_metadata`` (state files must match it)."""
DATA_FILE = "executions.parquet"
METADATA_FILE = "_common_metadata"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
"""Hive's name for a null partition value: executions with no created_at nor started_at."""
PARTITION_COLUMNS = ("workflow_id", "date")
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
    that workflow are complete and are merged and written at once. Out-of-order rows are
    still correct (their partition is merged again); ``MAX_BUFFERED_ROWS`` bounds the buffer.
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
        self._stored_schema = _read_dataset_schema(location)
        stored_id = _dataset_id(location) if self._stored_schema is not None else None
        self.dataset_id = stored_id or uuid.uuid4().hex
        self._identity_stored = stored_id is not None
        self._homes: dict[str, dict[str, PartitionKey]] = {}
        self._undated: dict[str, dict[str, PartitionKey]] = {}
        self.schema = _union(arrow_schema(COLUMNS), self._stored_schema, location)

    def add(self, frame: pd.DataFrame) -> None:
        """Buffer a contract frame by partition; write the partitions it shows complete."""
        if frame.empty:
            return
        self._grow_schema(frame)
        keys = partition_keys(frame)
        for key, part in frame.groupby(keys, sort=False):
            self._buffer[key].append(part)
            self._touched.add(key)
        self._buffered_rows += len(frame)
        self._flush_complete(keys)
        if self._buffered_rows > self.max_buffered_rows:
            self._flush(list(self._buffer))

    def close(self) -> LoadResult:
        """Write everything still buffered; returns the counts."""
        self._flush(list(self._buffer))
        self.result.partitions_touched = len(self._touched)
        self.result.elapsed_s = time.monotonic() - self._started
        return self.result

    def ensure_identity(self) -> None:
        """Store the dataset id (in ``_common_metadata``) before anything refers to it."""
        if not self._identity_stored:
            _write_dataset_schema(self.location, self.schema, self.dataset_id)
            self._stored_schema = self.schema
            self._identity_stored = True

    def _grow_schema(self, frame: pd.DataFrame) -> None:
        new = [c for c in frame.columns if c not in self.schema.names]
        if new:
            self.schema = _union(self.schema, arrow_schema(new), self.location)

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
        if keys and self.schema != self._stored_schema:
            # The schema file goes first, so it always covers every data file.
            _write_dataset_schema(self.location, self.schema, self.dataset_id)
            self._stored_schema = self.schema
            self._identity_stored = True
        for key in keys:
            parts = self._buffer.pop(key)
            self._buffered_rows -= sum(len(p) for p in parts)
            self._write_partition(key, pd.concat(parts, ignore_index=True))

    def _write_partition(self, key: PartitionKey, new: pd.DataFrame) -> None:
        undated = new["created_at"].isna().to_numpy()
        if undated.any():
            # A row without created_at already stored elsewhere (under its real date) stays
            # there: merge it into that partition instead of storing it twice.
            homes = self._stored_ids(key[0], undated_only=False)
            elsewhere = [
                homes.get(execution_id) if is_undated else None
                for execution_id, is_undated in zip(
                    new["execution_id"].tolist(), undated, strict=True
                )
            ]
            away = [home is not None and home != key for home in elsewhere]
            if any(away):
                groups: dict[PartitionKey, list[int]] = defaultdict(list)
                for position, (home, is_away) in enumerate(zip(elsewhere, away, strict=True)):
                    if is_away and home is not None:
                        groups[home].append(position)
                for home, positions in groups.items():
                    self._merge_into(home, new.iloc[positions])
                new = new[[not a for a in away]]
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

    def _merge_into(self, key: PartitionKey, new: pd.DataFrame) -> None:
        if new.empty:
            return
        directory = partition_dir(self.location, key)
        path = f"{directory}/{DATA_FILE}"
        old = _read_partition(self.location, path, self.schema)
        merged, inserted, updated = merge_partition(old, new)
        self._note_stored(key, new)
        if inserted == 0 and updated == 0:
            return
        self._replace(directory, path, merged)
        logger.debug("wrote %s: %d rows (%d new, %d updated)", path, len(merged), inserted, updated)
        self.result.rows_inserted += inserted
        self.result.rows_updated += updated
        self.result.rows_written += inserted + updated

    def _remove_from(self, key: PartitionKey, ids: set[str]) -> None:
        """Drop rows that moved to another partition (their partition key became known)."""
        directory = partition_dir(self.location, key)
        path = f"{directory}/{DATA_FILE}"
        old = _read_partition(self.location, path, self.schema)
        if old is None:
            return
        kept = old[~old["execution_id"].isin(ids)].reset_index(drop=True)
        if len(kept) == len(old):
            return
        if kept.empty:
            self.location.filesystem.delete_file(path)
        else:
            self._replace(directory, path, kept)
        self.result.rows_inserted -= len(old) - len(kept)  # they were moves, not new rows
        self.result.rows_updated += len(old) - len(kept)
        logger.debug("moved %d rows out of %s", len(old) - len(kept), path)

    def _replace(self, directory: str, path: str, frame: pd.DataFrame) -> None:
        table = frame_to_arrow(frame, self.schema)
        remove_stale_temporaries(self.location, directory)
        write_file_atomic(
            self.location, path, lambda sink: pq.write_table(table, sink, **_WRITE_OPTIONS)
        )
        self.result.files_written += 1

    def _stored_ids(self, workflow: str, *, undated_only: bool) -> dict[str, PartitionKey]:
        """Where the workflow's stored rows are: all of them, or only those without created_at.

        Read once per workflow and kept up to date by this writer. Rows without created_at
        are rare and row-group statistics let the scan skip everything else.
        """
        cache = self._undated if undated_only else self._homes
        if workflow not in cache:
            cache[workflow] = _scan_ids(self.location, workflow, undated_only=undated_only)
        return cache[workflow]

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
    return frame.sort_values(
        ["created_at", "execution_id"], ascending=[False, True], na_position="last", kind="stable"
    ).reset_index(drop=True)


def write_executions(
    frame: pd.DataFrame, output: Any, *, filesystem: pafs.FileSystem | None = None
) -> LoadResult:
    """Write a DataFrame of executions to the lake (same layout and upsert rules as a load).

    Args:
        frame: ``load_executions`` output, or any frame with at least ``execution_id``.
        output: a local path or a URI understood by ``pyarrow.fs`` (``s3://``, ``gs://``...).
        filesystem: an explicit ``pyarrow.fs.FileSystem``; ``output`` is then a path on it.
    """
    from .storage import resolve_location

    conformed = conform_frame(frame)
    writer = LakeWriter(resolve_location(output, filesystem))
    writer.add(conformed)
    result = writer.close()
    result.rows_fetched = len(frame)
    return result


def read_executions(
    output: Any, *, filesystem: pafs.FileSystem | None = None, workflow_id: str | None = None
) -> pd.DataFrame:
    """Read the lake back into the DataFrame contract (plus nothing else).

    Uses the dataset schema, so files written before a new field appeared read as nulls.
    """
    from .storage import resolve_location

    location = resolve_location(output, filesystem)
    schema = _read_dataset_schema(location) or arrow_schema(COLUMNS)
    dataset = pads.dataset(
        location.root,
        filesystem=location.filesystem,
        format="parquet",
        partitioning=pads.partitioning(
            pa.schema([("workflow_id", ARROW_STRING), ("date", ARROW_STRING)]), flavor="hive"
        ),
        schema=pa.unify_schemas(
            [schema, pa.schema([("workflow_id", ARROW_STRING), ("date", ARROW_STRING)])]
        ),
    )
    filter_ = None if workflow_id is None else pads.field("flow_id") == workflow_id
    table = dataset.to_table(columns=schema.names, filter=filter_)
    return _sorted(arrow_to_frame(table))


def _scan_ids(location: Location, workflow: str, *, undated_only: bool) -> dict[str, PartitionKey]:
    """execution_id -> partition of the rows stored for one workflow (optionally undated only)."""
    root = location.path(f"workflow_id={workflow}")
    fs = location.filesystem
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return {}
    dataset = pads.dataset(root, filesystem=fs, format="parquet")
    where = pads.field("created_at").is_null() if undated_only else None
    found: dict[str, PartitionKey] = {}
    for fragment in dataset.get_fragments():
        date = fragment.path.rsplit("/", 2)[-2].removeprefix("date=")
        ids = fragment.to_table(columns=["execution_id"], filter=where)["execution_id"]
        found.update(dict.fromkeys(ids.to_pylist(), (workflow, date)))
    return found


def _read_partition(location: Location, path: str, schema: pa.Schema) -> pd.DataFrame | None:
    fs = location.filesystem
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_file(path) as handle:
        table = pq.read_table(handle)
    check_compatible(table.schema, schema, path)
    return arrow_to_frame(_align(table, schema))


def _align(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for field_ in schema:
        if field_.name in table.column_names:
            columns.append(table[field_.name].cast(field_.type))
        else:
            columns.append(pa.nulls(table.num_rows, type=field_.type))
    return pa.Table.from_arrays(columns, schema=schema)


def check_compatible(found: pa.Schema, expected: pa.Schema, where: str) -> None:
    """Every column present in both must have a type this package writes for it."""
    for field_ in found:
        if field_.name in PARTITION_COLUMNS:
            continue
        wanted = (
            expected.field(field_.name).type
            if field_.name in expected.names
            else arrow_type_for(field_.name)
        )
        if not _same_kind(field_.type, wanted):
            raise SchemaMismatchError(
                f"{where}: column {field_.name!r} is {field_.type}, but this dataset stores "
                f"{wanted}; refusing to write (nothing was overwritten)"
            )


def _same_kind(found: pa.DataType, wanted: pa.DataType) -> bool:
    if wanted == ARROW_TIMESTAMP:
        return pa.types.is_timestamp(found) and found.tz in ("UTC", "+00:00", "Etc/UTC")
    if wanted == ARROW_STRING:
        return (
            pa.types.is_string(found) or pa.types.is_large_string(found) or pa.types.is_null(found)
        )
    return found == wanted


def _read_dataset_schema(location: Location) -> pa.Schema | None:
    """The stored dataset schema; for a dataset without one, check every data file found."""
    fs = location.filesystem
    path = location.path(METADATA_FILE)
    if fs.get_file_info(path).type == pafs.FileType.File:
        with fs.open_input_file(path) as handle:
            stored = pq.read_schema(handle)
        check_compatible(stored, arrow_schema([c for c in stored.names if c in COLUMNS]), path)
        return stored
    selector = pafs.FileSelector(location.root, recursive=True, allow_not_found=True)
    found = None
    for info in fs.get_file_info(selector):
        if (
            info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith(".")
        ):
            with fs.open_input_file(info.path) as handle:
                file_schema = pq.read_schema(handle)
            check_compatible(file_schema, arrow_schema([]), info.path)
            found = _union(found or arrow_schema(COLUMNS), file_schema, location)
    return found


def _union(base: pa.Schema | None, more: pa.Schema | None, location: Location) -> pa.Schema:
    """``base`` then the columns of ``more`` it lacks, typed by the contract."""
    if base is None:
        base = arrow_schema(COLUMNS)
    if more is None:
        return base
    extra = [c for c in more.names if c not in base.names and c not in PARTITION_COLUMNS]
    return pa.schema(list(base) + [pa.field(c, arrow_type_for(c)) for c in extra])


def _write_dataset_schema(location: Location, schema: pa.Schema, dataset_id: str) -> None:
    schema = schema.with_metadata({DATASET_ID_KEY: dataset_id.encode()})
    write_file_atomic(
        location, location.path(METADATA_FILE), lambda sink: pq.write_metadata(schema, sink)
    )


def _dataset_id(location: Location) -> str | None:
    path = location.path(METADATA_FILE)
    if location.filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with location.filesystem.open_input_file(path) as handle:
        metadata = pq.read_schema(handle).metadata or {}
    value = metadata.get(DATASET_ID_KEY)
    return value.decode() if value else None
