"""The DataFrame contract: columns, dtypes, timestamps, JSON text, de-duplication."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from eachlabs_loader import COLUMNS, CORE_COLUMNS, UnparseableTimestampWarning, normalize_executions
from eachlabs_loader.codec import to_json_text
from eachlabs_loader.schema import normalize_timestamps

UTC_10 = pd.Timestamp("2025-12-20T10:00:00", tz="UTC")


def row(execution_id: str = "e1", **fields) -> dict:
    base = {
        "execution_id": execution_id,
        "flow_id": "wf-uuid",
        "flow_name": "Flow",
        "version_id": "v1",
        "status": "completed",
        "created_at": "2025-12-20T10:00:00Z",
        "updated_at": "2025-12-20T10:05:00Z",
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-12-20T10:00:00Z", UTC_10),
        ("2025-12-20T10:00:00+00:00", UTC_10),
        ("2025-12-20T12:00:00+02:00", UTC_10),
        ("2025-12-20T04:30:00-05:30", UTC_10),
        ("2025-12-20T12:00:00+0200", UTC_10),
        ("2025-12-20T12:00:00+02", UTC_10),
        ("2025-12-20T10:00:00", UTC_10),
        ("2025-12-20 10:00:00Z", UTC_10),
        ("2025-12-20 10:00:00", UTC_10),
        ("2025-12-20t10:00:00z", UTC_10),
        ("2025-12-20T10:00Z", UTC_10),
        (" 2025-12-20T10:00:00Z ", UTC_10),
        ("2025-12-20T10:00:00.5Z", UTC_10 + pd.Timedelta("500ms")),
        ("2025-12-20T10:00:00.123Z", UTC_10 + pd.Timedelta("123ms")),
        ("2025-12-20T10:00:00.123456Z", UTC_10 + pd.Timedelta("123456us")),
        ("2025-12-20T10:00:00.123456789Z", UTC_10 + pd.Timedelta("123456us")),
        ("2025-12-20T10:00:00,25Z", UTC_10 + pd.Timedelta("250ms")),
        ("2025-12-20T12:00:00.000001+02:00", UTC_10 + pd.Timedelta("1us")),
        ("2025-12-20", pd.Timestamp("2025-12-20", tz="UTC")),
    ],
)
def test_every_timestamp_form_parses_to_utc(text, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parsed = normalize_timestamps([text], column="created_at")
    assert parsed.dtype == "datetime64[us, UTC]"
    assert parsed.iloc[0] == expected


def test_a_naive_value_after_an_offset_value_stays_utc():
    # pandas 2.2's mixed-offset parser applies the previous row's offset here.
    parsed = normalize_timestamps(["2025-12-20T12:00:00+02:00", "2025-12-20T10:00:00"])
    assert list(parsed) == [UTC_10, UTC_10]


@pytest.mark.parametrize("missing", [None, "", "   "])
def test_null_and_empty_become_nat_quietly(missing):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parsed = normalize_timestamps([missing, "2025-12-20T10:00:00Z"])
    assert pd.isna(parsed.iloc[0])
    assert parsed.iloc[1] == UTC_10


def test_unparseable_values_become_nat_with_one_warning_naming_column_and_count():
    values = ["yesterday", "2025-13-01T00:00:00Z", 1734688800, "2025-12-20T10:00:00Z", None]
    with pytest.warns(UnparseableTimestampWarning) as record:
        parsed = normalize_timestamps(values, column="ended_at")
    assert len(record) == 1
    message = str(record[0].message)
    assert "'ended_at'" in message and "3 value" in message
    assert parsed.isna().tolist() == [True, True, True, False, True]


def test_frame_has_contract_columns_in_order_then_extras_in_first_seen_order():
    frame = normalize_executions(
        [row("a", zeta=1), row("b", alpha="x", zeta=2), row("c", bulk_id=None)]
    )
    assert list(frame.columns) == [*COLUMNS, "zeta", "alpha"]
    assert list(frame.columns[: len(CORE_COLUMNS)]) == [
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
    ]


def test_dtypes_are_utc_microseconds_and_pandas_strings():
    frame = normalize_executions(
        [row(started_at="2025-12-20T10:00:01Z", deleted_at="2025-12-21T00:00:00Z")]
    )
    for column in ("started_at", "ended_at", "created_at", "updated_at", "deleted_at"):
        assert str(frame[column].dtype) == "datetime64[us, UTC]", column
    for column in ("execution_id", "flow_id", "status", "bulk_id", "inputs", "cost", "api_key"):
        assert isinstance(frame[column].dtype, pd.StringDtype), column
    assert frame.loc[0, "deleted_at"] == pd.Timestamp("2025-12-21", tz="UTC")


def test_empty_result_has_exactly_the_contract_columns_and_dtypes():
    empty = normalize_executions([])
    full = normalize_executions([row()])
    assert len(empty) == 0
    assert list(empty.columns) == list(COLUMNS)
    assert empty.dtypes.to_dict() == full.dtypes.to_dict()


def test_objects_arrays_and_varying_types_become_json_text():
    frame = normalize_executions(
        [
            row("a", cost=0.25, step_results={"s1": {"ok": True}}, inputs={"prompt": "ü"}),
            row("b", cost={"amount": 1, "currency": "USD"}, step_results=[{"step": "s1"}]),
            row("c", cost=None, output_json={"url": "https://x"}, output="https://y"),
        ]
    )
    assert frame["cost"].tolist()[:2] == ["0.25", '{"amount":1,"currency":"USD"}']
    assert pd.isna(frame.loc[2, "cost"])
    assert frame["step_results"].tolist()[:2] == ['{"s1":{"ok":true}}', '[{"step":"s1"}]']
    assert frame.loc[0, "inputs"] == '{"prompt":"ü"}'
    assert frame.loc[2, "output"] == "https://y"
    assert isinstance(frame["cost"].dtype, pd.StringDtype)


def test_json_text_rules():
    assert to_json_text(None) is None
    assert to_json_text("plain") == "plain"
    assert to_json_text(3) == "3"
    assert to_json_text(False) == "false"
    assert to_json_text([1, {"a": None}]) == '[1,{"a":null}]'


def test_unknown_status_values_are_kept():
    frame = normalize_executions([row("a", status="queued"), row("b", status="paused_by_admin")])
    assert frame["status"].tolist() == ["queued", "paused_by_admin"]


def test_bulk_id_column_prefers_the_filter_then_the_api_value():
    rows = [row("a", bulk_id="b-from-api"), row("b")]
    assert normalize_executions(rows)["bulk_id"].tolist()[0] == "b-from-api"
    assert pd.isna(normalize_executions(rows)["bulk_id"].iloc[1])
    assert normalize_executions(rows, bulk_id="f")["bulk_id"].tolist() == ["f", "f"]


def test_duplicates_keep_the_newest_updated_at():
    frame = normalize_executions(
        [
            row("a", status="running", updated_at="2025-12-20T10:01:00Z"),
            row("b"),
            row("a", status="completed", updated_at="2025-12-20T10:09:00Z"),
            row("a", status="stale", updated_at="2025-12-20T10:02:00Z"),
        ]
    )
    assert frame["execution_id"].tolist() == ["b", "a"]
    assert frame.set_index("execution_id").loc["a", "status"] == "completed"


def test_duplicates_with_equal_updated_at_keep_the_later_arrival():
    frame = normalize_executions([row("a", status="first"), row("a", status="second")])
    assert frame["status"].tolist() == ["second"]


def test_duplicates_with_missing_updated_at_lose_to_a_known_one():
    frame = normalize_executions(
        [row("a", status="known"), row("a", status="unknown", updated_at=None)]
    )
    assert frame["status"].tolist() == ["known"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00"),
        ("2300-06-01T12:00:00.5+01:00", "2300-06-01T11:00:00.5"),
        ("1600-02-29T00:00:00Z", "1600-02-29T00:00:00"),
        ("1969-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999"),
        ("1900-01-01T00:00:00.123456789-00:30", "1900-01-01T00:30:00.123456"),
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00"),
        ("2000-02-29T00:00:00Z", "2000-02-29T00:00:00"),
        ("2025-12-31T23:30:00-01:00", "2026-01-01T00:30:00"),
    ],
)
def test_whole_calendar_range_to_the_microsecond(text, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parsed = normalize_timestamps([text])
    assert parsed.iloc[0] == pd.Timestamp(expected).as_unit("us").tz_localize("UTC")


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2025-04-31T00:00:00Z",
        "2025-00-10T00:00:00Z",
        "2025-01-01T24:00:00Z",
        "2025-01-01T10:60:00Z",
        "2025-01-01T10:00:00+24:00",
        "2025-01-01T10:00:00.Z",
        "2025-1-1T10:00:00Z",
    ],
)
def test_impossible_dates_and_times_are_unparseable(text):
    with pytest.warns(UnparseableTimestampWarning, match="1 value"):
        parsed = normalize_timestamps([text, "2025-01-01T00:00:00Z"])
    assert pd.isna(parsed.iloc[0]) and parsed.iloc[1] == pd.Timestamp("2025-01-01", tz="UTC")


def test_parsing_ignores_the_machines_time_zone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        parsed = normalize_timestamps(["2025-12-20T10:00:00", "2025-12-20 10:00:00"])
    finally:
        monkeypatch.undo()
        time.tzset()
    assert list(parsed) == [UTC_10, UTC_10]


@pytest.mark.parametrize("odd", ["2025-01-01T10Z", "2025-01-01T10:00:00.1234567891Z"])
def test_a_value_parses_the_same_whatever_its_neighbours(odd):
    """Arrow's fast cast accepts a few forms the contract does not; they must not leak in."""
    with pytest.warns(UnparseableTimestampWarning):
        alone = normalize_timestamps([odd, "2025-01-01T10:00:00Z"])
    with pytest.warns(UnparseableTimestampWarning):
        mixed = normalize_timestamps([odd, "2025-01-01T10:00:00"])  # forces the exact path
    assert pd.isna(alone.iloc[0]) and pd.isna(mixed.iloc[0])
