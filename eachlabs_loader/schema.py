"""The DataFrame contract: columns, dtypes, and the normalisation of raw execution rows.

Takes plain dicts, returns pandas objects; never imports ``transport`` or ``requests``.
Imports only ``errors`` (and pandas).

- One row per ``execution_id`` (the newest ``updated_at`` wins, later arrival breaks ties).
- Columns: ``CORE_COLUMNS``, then the documented optional fields, then any other field the
  API sent, in the order first seen.
- Timestamps are ``datetime64[us, UTC]``; every other column is a pandas string column.
  Strings stay as sent; numbers, booleans, objects and arrays become compact JSON text, so a
  column's type never changes from one run to the next, whatever a field's JSON type is.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import UnparseableTimestampWarning

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
TIMESTAMP_COLUMNS: frozenset[str] = frozenset(
    {"started_at", "ended_at", "created_at", "updated_at", "deleted_at"}
)
STRING_DTYPE = pd.StringDtype("pyarrow")
TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")

# RFC 3339 and the looser forms real services send: space for "T", 0-9 fractional digits
# ("." or ","), "Z"/"+hh:mm"/"+hhmm"/"+hh" or no offset at all (taken as UTC), date only.
_TIMESTAMP_RE = (
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<hm>\d{2}:\d{2})(?::(?P<s>\d{2})(?:[.,](?P<frac>\d{1,9}))?)?"
    r"(?P<tz>Z|(?P<sign>[+-])(?P<oh>\d{2})(?::?(?P<om>\d{2}))?)?)?$"
)


def dtype_for(column: str) -> Any:
    """The pandas dtype of a column: timestamps for ``TIMESTAMP_COLUMNS``, else strings."""
    return TIMESTAMP_DTYPE if column in TIMESTAMP_COLUMNS else STRING_DTYPE


def empty_frame(columns: Sequence[str] = COLUMNS) -> pd.DataFrame:
    """A zero-row frame with the contract's columns and dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=dtype_for(c)) for c in columns})


def normalize_executions(
    rows: Iterable[Mapping[str, Any]], *, bulk_id: str | None = None
) -> pd.DataFrame:
    """Turn raw execution dicts into the typed, de-duplicated DataFrame of the contract.

    Args:
        rows: executions as the API sent them.
        bulk_id: the filter the load used; when given it fills the ``bulk_id`` column.
    """
    rows = list(rows)
    columns = list(COLUMNS) + _extra_columns(rows)
    if not rows:
        return empty_frame(columns)
    data = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        if column == "bulk_id" and bulk_id is not None:
            values = [bulk_id] * len(rows)
        data[column] = (
            normalize_timestamps(values, column=column)
            if column in TIMESTAMP_COLUMNS
            else normalize_strings(values)
        )
    return drop_duplicate_executions(pd.DataFrame(data))


def _extra_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    known = set(COLUMNS)
    extras: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in known and key not in extras:
                extras[key] = None
    return list(extras)


def normalize_strings(values: Sequence[Any]) -> pd.Series:
    """Strings as sent, None as NA, anything else as compact JSON text."""
    return pd.Series([to_json_text(v) for v in values], dtype=STRING_DTYPE)


def to_json_text(value: Any) -> str | None:
    """``None`` stays missing, a string stays itself, anything else becomes JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def normalize_timestamps(values: Sequence[Any], *, column: str = "timestamp") -> pd.Series:
    """Parse timestamps to ``datetime64[us, UTC]``, vectorised.

    None, missing and empty values become NaT quietly; anything else that does not parse
    becomes NaT too, with one ``UnparseableTimestampWarning`` naming the column and the count.
    """
    strings = pd.Series(
        [v if isinstance(v, str) else None for v in values], dtype=STRING_DTYPE
    ).str.strip()
    strings = strings.mask(strings == "")
    not_strings = sum(1 for v in values if v is not None and not isinstance(v, str))
    parsed = _parse_iso_strings(strings)
    unparseable = int((strings.notna() & parsed.isna()).sum()) + not_strings
    if unparseable:
        warnings.warn(
            f"column {column!r}: {unparseable} value(s) are not timestamps and became NaT",
            UnparseableTimestampWarning,
            stacklevel=2,
        )
    return parsed


def _parse_iso_strings(strings: pd.Series) -> pd.Series:
    """Regex-split each string, then do the offset arithmetic on whole columns.

    pandas' own mixed-offset parsing is not used: pandas 2.2 applies one row's offset to
    the offset-less rows after it.
    """
    parts = strings.str.upper().str.extract(_TIMESTAMP_RE)
    clock = parts["hm"].fillna("00:00") + ":" + parts["s"].fillna("00")
    base = pd.to_datetime(
        (parts["date"] + "T" + clock).astype(object),
        format="%Y-%m-%dT%H:%M:%S",
        errors="coerce",
    )
    frac_ns = parts["frac"].fillna("0").str.pad(9, side="right", fillchar="0").astype("int64")
    offset_h = parts["oh"].fillna("0").astype("int64")
    offset_m = parts["om"].fillna("0").astype("int64")
    valid = (offset_h <= 23) & (offset_m <= 59)
    sign = np.where(parts["sign"].fillna("+") == "-", -1, 1)
    offset = pd.to_timedelta(sign * (offset_h * 60 + offset_m).to_numpy(), unit="m")
    utc = base + pd.to_timedelta(frac_ns.to_numpy(), unit="ns") - offset
    utc = utc.where(valid.to_numpy(dtype=bool))
    return utc.dt.tz_localize("UTC").astype(TIMESTAMP_DTYPE).rename(None)


def drop_duplicate_executions(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per ``execution_id``: the newest ``updated_at``, else the later one."""
    duplicated = frame["execution_id"].duplicated(keep=False)
    if not duplicated.any():
        return frame
    by_recency = frame.sort_values("updated_at", na_position="first", kind="stable")
    keep = by_recency.index[~by_recency["execution_id"].duplicated(keep="last")]
    return frame.loc[keep.sort_values()].reset_index(drop=True)
