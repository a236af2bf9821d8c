"""The fast decode path: typed msgspec decoding gives exactly what the generic path gives."""

from __future__ import annotations

import json

import pytest

from eachlabs_loader import InvalidResponseError
from eachlabs_loader.codec import API_FIELDS, PageDecoder, to_json_text
from eachlabs_loader.pagination import columns_from_rows, parse_executions_page
from eachlabs_loader.schema import COLUMNS

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
    return json.dumps({"executions": rows, **extra}).encode()


def test_api_fields_are_the_contract_columns():
    assert set(API_FIELDS) == set(COLUMNS)


def test_typed_and_generic_paths_give_the_same_columns():
    decoder = PageDecoder()
    fast = decoder.decode(body(ROWS, total_count=2, limit=5), offset=0, limit=5)
    generic = parse_executions_page(json.loads(body(ROWS)), offset=0, limit=5)
    for name, values in fast.columns.items():
        assert values == generic.columns.get(name, [None, None]), name
    assert (fast.total_count, fast.applied_limit) == (2, 5)
    assert fast.ids == ["e1", "e2"]


def test_unknown_fields_are_kept_then_learned_for_the_next_pages():
    decoder = PageDecoder()
    rows = [dict(ROWS[0], region="eu", **{"odd-name": 1, "class": True})]
    first = decoder.decode(body(rows), offset=0, limit=5)
    assert first.columns["region"] == ["eu"] and first.columns["odd-name"] == [1]
    assert {"region", "odd-name", "class"} <= set(decoder.fields)
    second = decoder.decode(body([dict(ROWS[1], region="us")]), offset=1, limit=5)
    assert second.columns["region"] == ["us"] and second.columns["class"] == [None]


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
