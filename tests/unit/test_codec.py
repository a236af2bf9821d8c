"""The fast decode path: typed msgspec decoding gives exactly what the generic path gives."""

from __future__ import annotations

import json

import msgspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eachlabs_loader import InvalidResponseError, codec
from eachlabs_loader.codec import (
    API_FIELDS,
    CANONICAL_JSON,
    PageDecoder,
    fragments_to_arrow,
    text_from_fragments,
    to_json_text,
)
from eachlabs_loader.pagination import columns_from_rows
from eachlabs_loader.schema import COLUMNS, normalize_columns, normalize_executions

ROWS = [
    {
        "execution_id": "e1",
        "flow_id": "f",
        "status": "completed",
        "version_id": 3,
        "cost": 0.25,
        "inputs": {"prompt": "ü", "n": [1, 2]},
        "created_at": "2025-01-01T00:00:00Z",
    },
    {"execution_id": "e2", "cost": {"amount": 1}, "step_results": [{"s": 1}], "ended_at": None},
]


def body(rows, **extra) -> bytes:
    return json.dumps({"executions": rows, **extra}, ensure_ascii=False).encode()


def frame_of(page):
    return normalize_columns(page.columns)


def test_api_fields_are_the_contract_columns():
    assert set(API_FIELDS) == set(COLUMNS)


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_json_text_does_not_depend_on_how_the_server_spells_json(ensure_ascii):
    rows = [
        {
            "execution_id": "e1",
            "cost": {"amount": 1e-07, "ratio": 1.5, "big": 12345678901234567890},
            "inputs": {"prompt": "café ☕", "list": [1.0, 2.25]},
            "step_results": [{"note": "tab\there"}],
        }
    ]
    data = json.dumps({"executions": rows}, ensure_ascii=ensure_ascii, indent=1).encode()
    from_api = frame_of(PageDecoder().decode(data, offset=0, limit=5))
    pd.testing.assert_frame_equal(from_api, normalize_executions(rows))
    # Spelled differently on the wire, the same value:
    respelled = data.replace(b"1e-07", b"1.0E-7").replace(b"1.5", b"1.50")
    again = frame_of(PageDecoder().decode(respelled, offset=0, limit=5))
    pd.testing.assert_frame_equal(again, from_api)


def test_typed_generic_and_dict_paths_give_the_same_frame():
    fast_page = PageDecoder().decode(body(ROWS, total_count=2, limit=5), offset=0, limit=5)
    assert (fast_page.total_count, fast_page.applied_limit) == (2, 5)
    assert fast_page.ids == ["e1", "e2"]
    with_extra = [dict(row, region="eu") for row in ROWS]
    generic_page = PageDecoder().decode(body(with_extra), offset=0, limit=5)
    fast, generic, from_dicts = (
        frame_of(fast_page),
        frame_of(generic_page),
        normalize_executions(ROWS),
    )
    pd.testing.assert_frame_equal(fast, from_dicts)
    pd.testing.assert_frame_equal(generic.drop(columns=["region"]), fast)
    assert fast.loc[0, "inputs"] == '{"prompt":"ü","n":[1,2]}'
    assert fast.loc[0, "version_id"] == "3" and fast.loc[0, "cost"] == "0.25"


OUTPUT = 'line\nbreak "quoted" \u00fc \\ done'


def test_json_text_is_made_compact_and_strings_are_unescaped():
    rows = [
        {
            "execution_id": "e1",
            "output": OUTPUT,
            "inputs": {"a": [1, 2], "b": {"c": None}},
            "output_json": "just a string",
        }
    ]
    data = json.dumps({"executions": rows}, indent=2).encode()  # whitespace everywhere
    frame = frame_of(PageDecoder().decode(data, offset=0, limit=5))
    assert frame.loc[0, "output"] == OUTPUT
    assert frame.loc[0, "inputs"] == '{"a":[1,2],"b":{"c":null}}'
    assert frame.loc[0, "output_json"] == "just a string"


def test_unknown_fields_are_kept_then_learned_for_the_next_pages():
    decoder = PageDecoder()
    rows = [dict(ROWS[0], region="eu", **{"odd-name": 1, "class": True})]
    first = frame_of(decoder.decode(body(rows), offset=0, limit=5))
    assert first.loc[0, "region"] == "eu" and first.loc[0, "odd-name"] == "1"
    assert first.loc[0, "class"] == "true"
    assert {"region", "odd-name", "class"} <= set(decoder.fields)
    second = decoder.decode(body([dict(ROWS[1], region="us")]), offset=1, limit=5)
    assert frame_of(second).loc[0, "region"] == "us"
    assert pd.isna(frame_of(second).loc[0, "class"])


def test_null_executions_is_an_empty_page():
    page = PageDecoder().decode(b'{"executions": null, "total_count": 0}', offset=0, limit=5)
    assert len(page) == 0 and page.is_last


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<html>502</html>",
        b'{"executions": [',
        b"[]",
        b'{"data": []}',
        b'{"executions": {"a": 1}}',
        b'{"executions": [1]}',
        b'{"executions": [{"flow_id": "f"}]}',
        b'{"executions": [{"execution_id": ""}]}',
        b'{"executions": [{"execution_id": 5}]}',
        b'{"executions": [{"execution_id": null}]}',
    ],
)
def test_anything_but_a_page_is_an_invalid_response(data):
    with pytest.raises(InvalidResponseError):
        PageDecoder().decode(data, offset=0, limit=5)


def test_json_text_is_compact_utf8_and_keeps_strings():
    assert to_json_text({"a": "ü<", "b": [1.5, None, True]}) == '{"a":"ü<","b":[1.5,null,true]}'
    assert to_json_text("as is") == "as is"
    assert to_json_text(None) is None


def test_columns_from_rows_fills_missing_fields_with_none():
    assert columns_from_rows([{"execution_id": "a", "x": 1}, {"execution_id": "b", "y": 2}]) == {
        "execution_id": ["a", "b"],
        "x": [1, None],
        "y": [None, 2],
    }


def test_a_string_field_that_turns_out_otherwise_is_decoded_raw_from_then_on():
    from eachlabs_loader.codec import NULL
    from eachlabs_loader.pagination import ColumnBuffer

    decoder = PageDecoder()
    first = decoder.decode(body([{"execution_id": "a", "version_id": "v1"}]), offset=0, limit=5)
    second = decoder.decode(body([{"execution_id": "b", "version_id": 2}]), offset=1, limit=5)
    third = decoder.decode(body([{"execution_id": "c", "version_id": {"n": 3}}]), offset=2, limit=5)
    buffer = ColumnBuffer(fill=NULL)
    for page in (first, second, third):
        buffer.extend(page.columns)
    frame = normalize_columns(buffer.columns)
    assert frame["version_id"].tolist() == ["v1", "2", '{"n":3}']


def test_a_lone_surrogate_escape_does_not_make_a_page_unreadable():
    data = (
        b'{"executions":[{"execution_id":"a","output":"smile \\ud83d",'
        b'"flow_name":"ok \\ud83d\\ude00","api_key":"\\udc00x"}]}'
    )
    frame = frame_of(PageDecoder().decode(data, offset=0, limit=5))
    assert frame.loc[0, "output"] == "smile \ufffd"
    assert frame.loc[0, "flow_name"] == "ok \U0001f600"  # a proper pair stays an emoji
    assert frame.loc[0, "api_key"] == "\ufffdx"


def test_garbage_is_still_not_json():
    with pytest.raises(InvalidResponseError, match="not JSON"):
        PageDecoder().decode(b'{"executions": [\\ud83d', offset=0, limit=5)


# -- JSON text: compact fragments are kept as they are, the rest re-encoded ---------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.1461, 0.0001, 1e-05, 1234567.5, 12345678.5, -0.0, 1.0, 3.0e20])
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_SPELLINGS = {
    "msgspec": lambda v: msgspec.json.encode(v),
    "json-compact": lambda v: json.dumps(v, separators=(",", ":")).encode(),
    "json-compact-utf8": lambda v: json.dumps(
        v, separators=(",", ":"), ensure_ascii=False
    ).encode(),
    "json-default": lambda v: json.dumps(v).encode(),
    "json-indented": lambda v: json.dumps(v, indent=1, ensure_ascii=False).encode(),
}


@settings(max_examples=400, deadline=None)
@given(value=_json_values, spelling=st.sampled_from(sorted(_SPELLINGS)))
def test_json_text_is_the_canonical_encoding_however_the_value_was_spelled(value, spelling):
    fragment = _SPELLINGS[spelling](value)
    text, _ = text_from_fragments(fragments_to_arrow([msgspec.Raw(fragment)]))
    decoded = msgspec.json.decode(fragment)
    expected = (
        None
        if decoded is None
        else (decoded if isinstance(decoded, str) else msgspec.json.encode(decoded).decode())
    )
    assert text.to_pylist() == [expected]


@pytest.mark.parametrize(
    "fragment",
    ["1.50", "1.0E5", "1e5", "-0", "0.00001", "12345678.5", "0.1000000000000000055511151231257827",
     '{"a": 1}', '["\\u00e9"]', '"a\\/b"', "123456789012345678901234", '[1.50,2]'],
)  # fmt: skip
def test_fragments_in_another_spelling_are_not_taken_as_canonical(fragment):
    assert not pc.match_substring_regex(pa.array([fragment]), CANONICAL_JSON)[0].as_py()


def test_compact_pages_skip_the_re_encoding(monkeypatch):
    """The point of ``CANONICAL_JSON``: what the API sends compactly costs no Python per value."""
    rows = [dict(ROWS[0], execution_id=f"e{i}", cost={"amount": 0.1461}) for i in range(50)]
    data = json.dumps({"executions": rows}, separators=(",", ":"), ensure_ascii=False).encode()
    page = PageDecoder().decode(data, offset=0, limit=50)

    def fail(fragment):
        raise AssertionError(f"re-encoded {fragment!r}")

    monkeypatch.setattr(codec, "_canonical", fail)
    frame = frame_of(page)
    assert frame.loc[0, "cost"] == '{"amount":0.1461}'
    assert frame.loc[0, "inputs"] == '{"prompt":"ü","n":[1,2]}'
