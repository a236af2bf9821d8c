"""Timestamps as services send them, to Arrow ``timestamp[us, UTC]``: whole columns at a time.

RFC 3339 and the looser forms real services send: a space for "T", 0-9 fractional digits
("." or ","), "Z"/"+hh:mm"/"+hhmm"/"+hh" or no offset at all (taken as UTC), a date alone.
Strict RFC 3339 columns (the usual case) take Arrow's own cast after one regex check; any
other form takes the exact path, plain integer arithmetic on whole columns. Takes plain
values or raw JSON fragments (see ``codec``); returns Arrow arrays (pandas is ``schema``'s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .codec import fragments_to_arrow, text_from_fragments

ARROW_TIMESTAMP = pa.timestamp("us", tz="UTC")
"""Microseconds, UTC: what Spark, Trino, DuckDB and Polars all read as the same instant."""

_TIMESTAMP_RE = (
    r"^(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[T ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<frac>\d{1,9}))?)?"
    r"(?P<tz>Z|(?P<sign>[+-])(?P<oh>\d{2})(?::?(?P<om>\d{2}))?)?)?$"
)
_STRICT_RE = (
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)$"
)
"""The forms Arrow's cast takes as they are (an offset, at most microseconds, a "." point)."""
_NO_TEXT = pa.scalar(None, pa.large_string())
MISSING_MICROS = int(np.iinfo(np.int64).min)
"""A missing timestamp in ``micros``: before every other (sorts first, compares oldest)."""


def micros(timestamps: Any) -> Any:
    """Microseconds since the epoch of an Arrow timestamp column, ``MISSING_MICROS`` where
    a value is missing (for sorting, comparing and grouping without nulls)."""
    return pc.fill_null(timestamps.cast(pa.int64()), MISSING_MICROS)


def parse_timestamp_array(values: Sequence[Any]) -> tuple[pa.Array, int]:
    """The values as ``timestamp[us, UTC]``, and how many given values did not parse.

    None, missing and empty values become null quietly; anything else that does not parse
    (a number, an object, garbage) becomes null and is counted.
    """
    try:
        strings = pa.array(values, type=pa.large_string())
        not_strings = 0
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        text, is_string = text_from_fragments(fragments_to_arrow(values))
        strings = pc.if_else(is_string, text, _NO_TEXT)
        not_strings = int(pc.sum(pc.and_(pc.invert(is_string), text.is_valid())).as_py() or 0)
    if strings.null_count == len(strings):  # an absent field (deleted_at, usually)
        return pa.nulls(len(strings), ARROW_TIMESTAMP), not_strings
    strings = pc.utf8_trim_whitespace(strings)
    strings = pc.if_else(pc.equal(strings, ""), _NO_TEXT, strings)
    parsed = _cast_rfc3339(strings)
    if parsed is None:
        parsed = _parse_iso_strings(strings)
    lost = pc.sum(pc.and_(strings.is_valid(), parsed.is_null())).as_py() or 0
    return parsed, int(lost) + not_strings


def _cast_rfc3339(strings: pa.Array) -> pa.Array | None:
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
        return pc.cast(text, ARROW_TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _parse_iso_strings(strings: pa.Array) -> pa.Array:
    """Regex-split each string into numbers, then compute microseconds since the epoch.

    Exact to the microsecond for every year 0000-9999 (pandas' parsers go through
    nanoseconds, which end in 2262, and pandas 2.2 applies one row's offset to the
    offset-less rows after it).
    """
    parts = pc.extract_regex(pc.utf8_upper(strings), _TIMESTAMP_RE)
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
    return pa.array(micros, type=pa.int64(), mask=~valid).cast(ARROW_TIMESTAMP)


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
