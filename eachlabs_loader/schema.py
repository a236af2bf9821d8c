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
_COLUMN_SET = frozenset(COLUMNS)
TIMESTAMP_COLUMNS: frozenset[str] = frozenset(
    {"started_at", "ended_at", "created_at", "updated_at", "deleted_at"}
)
STRING_DTYPE = pd.StringDtype("pyarrow")
TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
ARROW_STRING = pa.string()
ARROW_TIMESTAMP = pa.timestamp("us", tz="UTC")
"""Microseconds, UTC: what Spark, Trino, DuckDB and Polars all read as the same instant."""

# RFC 3339 and the looser forms real services send: space for "T", 0-9 fractional digits
# ("." or ","), "Z"/"+hh:mm"/"+hhmm"/"+hh" or no offset at all (taken as UTC), date only.
_TIMESTAMP_RE = (
    r"^(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[T ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<frac>\d{1,9}))?)?"
    r"(?P<tz>Z|(?P<sign>[+-])(?P<oh>\d{2})(?::?(?P<om>\d{2}))?)?)?$"
)


_STRICT_RE = (
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)$"
)
"""The forms Arrow's cast takes as they are (an offset, at most microseconds, a "." point)."""


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
    """The contract's DataFrame from raw values column by column (the fast path of a load).

    ``columns`` maps field names to equally long value lists and holds ``execution_id``;
    fields beyond the contract become extra columns, in the given order. Unparseable
    timestamps are counted into ``unparseable`` when given (a load warns once at its end),
    else warned about at once.
    """
    size = len(columns.get("execution_id", ()))
    names = list(COLUMNS) + [c for c in columns if c not in _COLUMN_SET]
    if size == 0:
        return empty_frame(names)
    counts = {} if unparseable is None else unparseable
    data = {}
    for column in names:
        values = columns.get(column)
        if column == "bulk_id" and bulk_id is not None:
            values = [bulk_id] * size
        if values is None:
            data[column] = pd.Series([None] * size, dtype=dtype_for(column))
        elif column in TIMESTAMP_COLUMNS:
            data[column], lost = parse_timestamps(values)
            counts[column] = counts.get(column, 0) + lost
        else:
            data[column] = normalize_strings(values)
    if unparseable is None:
        warn_unparseable(counts)
    return drop_duplicate_executions(pd.DataFrame(data))


def normalize_strings(values: Sequence[Any]) -> pd.Series:
    """Strings as sent, None/null as NA, anything else as compact JSON text.

    ``values`` are Python values or raw JSON fragments (see ``codec``).
    """
    try:
        text = pa.array(values, type=pa.large_string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        text, _ = text_from_fragments(fragments_to_arrow(values))
    result: pd.Series = pd.Series(pd.arrays.ArrowStringArray(text))
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
    try:
        strings = pa.array(values, type=pa.large_string())
        not_strings = 0
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        text, is_string = text_from_fragments(fragments_to_arrow(values))
        strings = pc.if_else(is_string, text, pa.scalar(None, pa.large_string()))
        not_strings = int(pc.sum(pc.and_(pc.invert(is_string), text.is_valid())).as_py() or 0)
    strings = pc.utf8_trim_whitespace(strings)
    strings = pc.if_else(pc.equal(strings, ""), pa.scalar(None, pa.large_string()), strings)
    parsed = _cast_rfc3339(strings)
    if parsed is None:
        parsed = _parse_iso_strings(strings)
    given = strings.is_valid().to_numpy(zero_copy_only=False)
    return parsed, int((given & parsed.isna().to_numpy()).sum()) + not_strings


def _cast_rfc3339(strings: pa.Array) -> pd.Series | None:
    """Arrow's own ISO 8601 cast: fast, and enough when every value is strict RFC 3339.

    It needs an offset on every value; a comma for the decimal point and nanosecond digits
    are rewritten first (cheap), lower-case ``t``/``z`` upper-cased. Anything else (no
    offset, a leap second, garbage) makes it fail, and the caller takes the exact path.
    """
    text = pc.ascii_upper(strings)
    if not pc.all(pc.match_substring_regex(text, _STRICT_RE)).as_py():  # the usual case
        if not pc.all(pc.match_substring_regex(text, _TIMESTAMP_RE)).as_py():
            return None  # a form the exact parser does not accept either: let it decide (NaT)
        if pc.any(pc.match_substring(text, ",")).as_py():
            text = pc.replace_substring(text, ",", ".")
        if pc.any(pc.match_substring_regex(text, r"\.\d{7}")).as_py():
            text = pc.replace_substring_regex(text, r"(\.\d{6})\d+", r"\1")
    try:
        cast = pc.cast(text, ARROW_TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    micros = cast.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
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


def _parse_iso_strings(strings: pa.Array) -> pd.Series:
    """Regex-split each string into numbers, then compute microseconds since the epoch.

    Plain integer arithmetic on whole columns: the same on pandas 2.2 and 3, exact to the
    microsecond for every year 0000-9999 (pandas' parsers go through nanoseconds, which end
    in 2262, and pandas 2.2 applies one row's offset to the offset-less rows after it).
    """
    upper = pc.utf8_upper(strings)
    parts = pc.extract_regex(upper, _TIMESTAMP_RE)
    matched = parts.is_valid().to_numpy(zero_copy_only=False)

    def field(name: str) -> pa.Array:
        return pc.fill_null(parts.field(name), "")  # an optional group that did not match is ""

    def number(name: str, default: str = "0") -> np.ndarray:
        text = field(name)
        text = pc.if_else(pc.equal(text, ""), default, text)
        result: np.ndarray = pc.cast(text, pa.int64()).to_numpy(zero_copy_only=False)
        return result

    year, month, day = number("y", "1970"), number("mo", "1"), number("d", "1")
    hour, minute, second = number("h"), number("mi"), number("s")
    frac = pc.utf8_rpad(pc.utf8_slice_codeunits(field("frac"), 0, 6), 6, "0")
    frac_us = pc.cast(frac, pa.int64()).to_numpy(zero_copy_only=False)
    offset_h, offset_m = number("oh"), number("om")
    sign = np.where(pc.equal(field("sign"), "-").to_numpy(zero_copy_only=False), -1, 1)
    valid = (
        matched
        & (month >= 1)
        & (month <= 12)
        & (day >= 1)
        & (day <= _days_in_month(year, month))
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 60)  # :60 is a leap second
        & (offset_h <= 23)
        & (offset_m <= 59)
    )
    seconds = (
        _days_from_civil(year, month, day) * 86_400
        + hour * 3_600
        + minute * 60
        + second
        - sign * (offset_h * 3_600 + offset_m * 60)
    )
    micros = seconds * 1_000_000 + frac_us
    values = np.where(valid, micros, np.iinfo(np.int64).min).view("datetime64[us]")
    result: pd.Series = pd.Series(values).dt.tz_localize("UTC").astype(TIMESTAMP_DTYPE)
    return result


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    year_of_era = y - era * 400
    day_of_year = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    result: np.ndarray = era * 146_097 + day_of_era - 719_468
    return result


def _days_in_month(year: np.ndarray, month: np.ndarray) -> np.ndarray:
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    days = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 0, 12)]
    result: np.ndarray = days + ((month == 2) & leap)
    return result


def drop_duplicate_executions(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per ``execution_id``: the newest ``updated_at``, else the later one."""
    if frame["execution_id"].is_unique:  # the usual case, and cheaper to ask than to mark
        return frame
    by_recency = frame.sort_values("updated_at", na_position="first", kind="stable")
    keep = by_recency.index[~by_recency["execution_id"].duplicated(keep="last")]
    result: pd.DataFrame = frame.loc[keep.sort_values()].reset_index(drop=True)
    return result


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
