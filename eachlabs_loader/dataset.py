"""What a Parquet lake says about itself: its Arrow schema and its identity, in
``{root}/_common_metadata``, and whether files found there fit the contract's types.

An unreadable ``_common_metadata`` (truncated, not Parquet) is treated like an unreadable
state file: a WARNING, the schema read from the data files themselves, and a new file
written with the next load (with a new dataset id, so incremental runs re-read in full).
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import SchemaMismatchError, StorageError
from .schema import ARROW_STRING, ARROW_TIMESTAMP, COLUMNS, arrow_schema, arrow_type_for
from .staging import write_file_atomic
from .storage import Location, is_directory, list_files, read_schema

logger = logging.getLogger("eachlabs_loader")

DATASET_ID_KEY = b"eachlabs.dataset_id"
"""Key of the dataset's identity in ``_common_metadata`` (state files must match it)."""
METADATA_FILE = "_common_metadata"
PARTITION_COLUMNS = ("workflow_id", "date")
DELTA_LOG = "_delta_log"
"""A Delta table's transaction log: its root is a Delta table, not a hive lake."""


def is_delta_table(location: Location) -> bool:
    return is_directory(location, location.path(DELTA_LOG))


def check_not_delta_table(location: Location) -> None:
    """Refuse to write hive files into a Delta table (before anything is written)."""
    if is_delta_table(location):
        raise StorageError(
            f"output {location.uri!r} is a Delta table, not a hive Parquet lake: write it with "
            "table_format='delta', or give the lake another path",
            path=location.uri,
        )


def read_dataset_schema(location: Location) -> tuple[pa.Schema | None, str | None]:
    """The stored schema and dataset id; for a dataset without a usable ``_common_metadata``,
    the union of its data files' schemas (each checked) and no id."""
    path = location.path(METADATA_FILE)
    try:
        stored = read_schema(location, path)
    except StorageError as exc:
        if not exc.corrupt:
            raise  # the file system failed: not a reason to give the dataset a new identity
        logger.warning(
            "%s; the schema is read from the data files and the file rebuilt by this load "
            "(with a new dataset id: incremental runs read everything once)",
            exc,
        )
        stored = None
    if stored is not None:
        check_compatible(stored, arrow_schema([c for c in stored.names if c in COLUMNS]), path)
        value = (stored.metadata or {}).get(DATASET_ID_KEY)
        return stored, value.decode() if value else None
    found = None
    for data_file in list_files(location, location.root, ".parquet"):
        file_schema = read_schema(location, data_file)
        assert file_schema is not None
        check_compatible(file_schema, arrow_schema([]), data_file)
        found = union_schema(found or arrow_schema(COLUMNS), file_schema)
    return found, None


def write_dataset_schema(location: Location, schema: pa.Schema, dataset_id: str) -> None:
    schema = schema.with_metadata({DATASET_ID_KEY: dataset_id.encode()})
    write_file_atomic(
        location, location.path(METADATA_FILE), lambda sink: pq.write_metadata(schema, sink)
    )


def union_schema(base: pa.Schema | None, more: pa.Schema | None) -> pa.Schema:
    """``base`` then the columns of ``more`` it lacks, typed by the contract."""
    if base is None:
        base = arrow_schema(COLUMNS)
    if more is None:
        return base
    extra = [c for c in more.names if c not in base.names and c not in PARTITION_COLUMNS]
    return pa.schema(list(base) + [pa.field(c, arrow_type_for(c)) for c in extra])


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


def align(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """``table`` in ``schema``'s column order and types, nulls for the columns it lacks.

    A value the dataset's type cannot hold exactly (a nanosecond another tool wrote) is a
    ``SchemaMismatchError`` naming ``where``: nothing is truncated silently.
    """
    columns = []
    for field_ in schema:
        if field_.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, type=field_.type))
            continue
        try:
            columns.append(table[field_.name].cast(field_.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaMismatchError(
                f"{where}: column {field_.name!r} holds values that {field_.type} cannot hold "
                f"exactly ({exc}); refusing to write (nothing was overwritten)"
            ) from None
    return pa.Table.from_arrays(columns, schema=schema)


def _same_kind(found: pa.DataType, wanted: pa.DataType) -> bool:
    if wanted == ARROW_TIMESTAMP:
        return bool(pa.types.is_timestamp(found) and found.tz in ("UTC", "+00:00", "Etc/UTC"))
    if wanted == ARROW_STRING:
        return bool(
            pa.types.is_string(found) or pa.types.is_large_string(found) or pa.types.is_null(found)
        )
    return bool(found == wanted)
