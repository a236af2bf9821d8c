"""The DataFrame contract: columns, dtypes, the normalisation of raw rows, the Arrow schema.

Takes plain values, returns pandas/Arrow objects; knows nothing of HTTP.

- One row per ``execution_id`` (the newest ``updated_at`` wins, later arrival breaks ties).
- Columns: ``CORE_COLUMNS``, then the documented optional fields, then any other field the
  API sent, in the order first seen.
- Timestamps are ``datetime64[us, UTC]``; every other column is a pandas string column.
  Strings stay as sent; numbers, booleans, objects and arrays become compact JSON text, so a
  column's type never changes from one run to the next, whatever a field's JSON type is.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .codec import ENCODE_ERRORS, fragments_to_arrow, text_from_fragments
from .errors import InvalidRequestError, UnparseableTimestampWarning
from .pagination import columns_from_rows
from .timestamps import ARROW_TIMESTAMP as ARROW_TIMESTAMP
from .timestamps import micros, parse_timestamp_array

CORE_COLUMNS: tuple[str, ...] = (
    "execution_id",
    "flow_id",
    "flow_name",
    "version_id",
    "status",
    "started_at",
    "ended_at",
    "created_at",
    "updated_at",
    "bulk_id",
)
"""The fields every execution row has: the first columns of every DataFrame, in this order."""
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "deleted_at",
    "api_key",
    "inputs",
    "step_results",
    "output",
    "output_json",
    "cost",
)
"""Documented fields that may be absent from a row: always present as columns."""

COLUMNS: tuple[str, ...] = CORE_COLUMNS + OPTIONAL_COLUMNS
"""The DataFrame contract's columns, in order; fields the API adds later follow them."""
_COLUMN_SET = frozenset(COLUMNS)
TIMESTAMP_COLUMNS: frozenset[str] = frozenset(
    {"started_at", "ended_at", "created_at", "updated_at", "deleted_at"}
)
STRING_DTYPE = pd.StringDtype("pyarrow")
TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
ARROW_STRING = pa.string()


def dtype_for(column: str) -> Any:
    """The pandas dtype of a column: timestamps for ``TIMESTAMP_COLUMNS``, else strings."""
    return TIMESTAMP_DTYPE if column in TIMESTAMP_COLUMNS else STRING_DTYPE


def empty_frame(columns: Sequence[str] = COLUMNS) -> pd.DataFrame:
    """A zero-row frame with the contract's columns and dtypes."""
    result: pd.DataFrame = pd.DataFrame({c: pd.Series([], dtype=dtype_for(c)) for c in columns})
    return result


def normalize_executions(
    rows: Iterable[Mapping[str, Any]], *, bulk_id: str | None = None
) -> pd.DataFrame:
    """Turn raw execution dicts into the typed, de-duplicated DataFrame of the contract.

    Args:
        rows: executions as the API sent them.
        bulk_id: the filter the load used; when given it fills the ``bulk_id`` column.
    """
    return normalize_columns(columns_from_rows([dict(row) for row in rows]), bulk_id=bulk_id)


def normalize_columns(
    columns: Mapping[str, Sequence[Any]],
    *,
    bulk_id: str | None = None,
    unparseable: dict[str, int] | None = None,
) -> pd.DataFrame:
    """The contract's DataFrame from raw values column by column (``normalize_table``, then
    one row per ``execution_id``)."""
    table = normalize_table(columns, bulk_id=bulk_id, unparseable=unparseable)
    return drop_duplicate_executions(arrow_to_frame(table))


def normalize_table(
    columns: Mapping[str, Sequence[Any]],
    *,
    bulk_id: str | None = None,
    unparseable: dict[str, int] | None = None,
) -> pa.Table:
    """The contract's columns as an Arrow table, every row kept (the fast path of a load).

    ``columns`` maps field names to equally long value lists and holds ``execution_id``;
    fields beyond the contract become extra columns, in the given order. Strings are
    ``large_string`` (what pandas holds), timestamps ``timestamp[us, UTC]``. Unparseable
    timestamps are counted into ``unparseable`` when given (a load warns once at its end),
    else warned about at once.
    """
    size = len(columns.get("execution_id", ()))
    names = list(COLUMNS) + [c for c in columns if c not in _COLUMN_SET]
    counts = {} if unparseable is None else unparseable
    arrays = []
    for column in names:
        values = columns.get(column)
        if column == "bulk_id" and bulk_id is not None:
            values = [bulk_id] * size
        if values is None or size == 0:
            arrays.append(pa.nulls(size, _NORMALIZED_TYPES.get(column, pa.large_string())))
        elif column in TIMESTAMP_COLUMNS:
            parsed, lost = parse_timestamp_array(values)
            arrays.append(parsed)
            counts[column] = counts.get(column, 0) + lost
        else:
            arrays.append(_string_array(values))
    if unparseable is None:
        warn_unparseable(counts)
    return pa.Table.from_arrays(arrays, names=names)


_NORMALIZED_TYPES = {c: ARROW_TIMESTAMP for c in TIMESTAMP_COLUMNS}


def _string_array(values: Sequence[Any]) -> pa.Array:
    """Strings as sent, None/null as null, anything else as compact JSON text."""
    try:
        return pa.array(values, type=pa.large_string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        text, _ = text_from_fragments(fragments_to_arrow(values))
        return text


def normalize_strings(values: Sequence[Any]) -> pd.Series:
    """Strings as sent, None/null as NA, anything else as compact JSON text.

    ``values`` are Python values or raw JSON fragments (see ``codec``).
    """
    result: pd.Series = pd.Series(pd.arrays.ArrowStringArray(_string_array(values)))
    return result


def normalize_timestamps(values: Sequence[Any], *, column: str = "timestamp") -> pd.Series:
    """Parse timestamps to ``datetime64[us, UTC]``, vectorised.

    None, missing and empty values become NaT quietly; anything else that does not parse
    becomes NaT too, with one ``UnparseableTimestampWarning`` naming the column and the count.
    """
    parsed, unparseable = parse_timestamps(values)
    warn_unparseable({column: unparseable})
    return parsed


def parse_timestamps(values: Sequence[Any]) -> tuple[pd.Series, int]:
    """``normalize_timestamps`` without the warning: the parsed column and how many were lost."""
    parsed, lost = parse_timestamp_array(values)
    return _timestamp_series(parsed), lost


def _timestamp_series(parsed: pa.Array) -> pd.Series:
    micros = parsed.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
    result: pd.Series = pd.Series(micros.view("datetime64[us]")).dt.tz_localize("UTC")
    return result


def warn_unparseable(counts: Mapping[str, int]) -> None:
    """One ``UnparseableTimestampWarning`` per column that lost values."""
    for column, count in counts.items():
        if count:
            warnings.warn(
                f"column {column!r}: {count} value(s) are not timestamps and became NaT",
                UnparseableTimestampWarning,
                stacklevel=3,
            )


def drop_duplicate_executions(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per ``execution_id``: the newest ``updated_at``, else the later one."""
    keep = latest_rows(pa.array(frame["execution_id"]), pa.array(frame["updated_at"]))
    if keep is None:
        return frame
    result: pd.DataFrame = frame.iloc[keep].reset_index(drop=True)
    return result


def unique_executions(table: pa.Table) -> pa.Table:
    """``drop_duplicate_executions`` for an Arrow table."""
    keep = latest_rows(table["execution_id"], table["updated_at"])
    return table if keep is None else table.take(keep)


def latest_rows(ids: Any, updated: Any) -> np.ndarray | None:
    """Positions of the rows to keep, in their order (None: every id is already unique).

    The rule of the whole package: per id, the newest ``updated_at`` (a missing one is the
    oldest), and among equals the later row (the later observation).
    """
    size = len(ids)
    if pc.count_distinct(ids).as_py() == size:  # the usual case, and cheap to ask
        return None
    keys = pa.table({"id": ids, "updated": micros(updated), "at": np.arange(size)})
    order = pc.sort_indices(
        keys, sort_keys=[("id", "ascending"), ("updated", "ascending"), ("at", "ascending")]
    ).to_numpy()
    grouped = keys["id"].take(order)
    last = np.ones(size, dtype=bool)
    last[:-1] = pc.not_equal(grouped.slice(0, size - 1), grouped.slice(1)).to_numpy()
    result: np.ndarray = np.sort(order[last])
    return result


def sort_executions(table: pa.Table) -> pa.Table:
    """Newest ``created_at`` first (missing ones last), then by id: the order of every file,
    whatever order rows arrived in."""
    keys = pa.table({"created": micros(table["created_at"]), "id": table["execution_id"]})
    order = pc.sort_indices(keys, sort_keys=[("created", "descending"), ("id", "ascending")])
    return table.take(order)


def conform_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Bring any executions DataFrame to the contract: column order, dtypes, one row per id.

    Accepts ``load_executions`` output unchanged, and also hand-made frames: missing contract
    columns are added as nulls, timestamps are parsed or converted to UTC microseconds, and
    other values become strings (objects as JSON text), as in ``normalize_executions``.
    """
    if not isinstance(frame, pd.DataFrame):
        raise InvalidRequestError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    names = {str(c): c for c in frame.columns}
    if len(names) != len(frame.columns):
        raise InvalidRequestError("the DataFrame has two columns of the same name")
    if "execution_id" not in names:
        raise InvalidRequestError("the DataFrame has no 'execution_id' column")
    if frame[names["execution_id"]].isna().any():
        raise InvalidRequestError("the DataFrame has rows without an execution_id")
    data = {}
    for column in list(COLUMNS) + [n for n in names if n not in _COLUMN_SET]:
        if column not in names:
            data[column] = pd.Series([None] * len(frame), dtype=dtype_for(column))
            continue
        try:
            data[column] = _conform_column(frame[names[column]], column)
        except ENCODE_ERRORS as exc:
            raise InvalidRequestError(
                f"column {column!r} holds a value that cannot be stored ({exc})"
            ) from exc
    return drop_duplicate_executions(pd.DataFrame(data).reset_index(drop=True))


def _conform_column(series: pd.Series, column: str) -> pd.Series:
    if column in TIMESTAMP_COLUMNS:
        return _conform_timestamps(series, column)
    return _conform_strings(series)


def _conform_timestamps(series: pd.Series, column: str) -> pd.Series:
    utc: pd.Series
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        utc = series.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(series.dtype):
        utc = series.dt.tz_localize("UTC")
    else:
        return normalize_timestamps(_none_for_missing(series), column=column)
    return utc.astype(TIMESTAMP_DTYPE).reset_index(drop=True)


def _conform_strings(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.StringDtype):
        return series.astype(STRING_DTYPE).reset_index(drop=True)
    return normalize_strings(_none_for_missing(series))


def _none_for_missing(series: pd.Series) -> list[Any]:
    return [None if _is_missing(v) else v for v in series.tolist()]


def _is_missing(value: Any) -> bool:
    return value is None or (not isinstance(value, (list, dict)) and bool(pd.isna(value)))


def arrow_type_for(column: str) -> pa.DataType:
    """The Parquet/Arrow type of a column: UTC microsecond timestamps or UTF-8 strings."""
    return ARROW_TIMESTAMP if column in TIMESTAMP_COLUMNS else ARROW_STRING


def arrow_schema(columns: Sequence[str] = COLUMNS) -> pa.Schema:
    """The Arrow schema of the contract (all fields nullable)."""
    return pa.schema([pa.field(c, arrow_type_for(c)) for c in columns])


def frame_to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """A contract frame as an Arrow table with exactly ``schema`` (absent columns are null)."""
    arrays = []
    for field in schema:
        if field.name in frame.columns:
            arrays.append(pa.array(frame[field.name], type=field.type, from_pandas=True))
        else:
            arrays.append(pa.nulls(len(frame), type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def arrow_to_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table written by this package, back to the contract's pandas dtypes."""
    frame = table.to_pandas(types_mapper=_PANDAS_TYPES.get, ignore_metadata=True)
    for column in frame.columns:
        if column in TIMESTAMP_COLUMNS:
            frame[column] = frame[column].astype(TIMESTAMP_DTYPE)
    result: pd.DataFrame = frame
    return result


_PANDAS_TYPES = {
    pa.string(): STRING_DTYPE,
    pa.large_string(): STRING_DTYPE,
    ARROW_TIMESTAMP: TIMESTAMP_DTYPE,
}
