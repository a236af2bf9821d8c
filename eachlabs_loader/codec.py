"""Response bodies to columns: the fast decode path, and JSON text for nested values.

``PageDecoder`` decodes a list-executions body with msgspec straight into typed structs (no
intermediate dicts), then pulls the fields out column by column. A body the typed decoder
rejects (an unknown field, a wrong shape) takes the generic path: decoded to plain Python
values and checked by ``pagination.parse_executions_page``. New fields found that way are
learned, so the following pages are fast again. Both paths give the same columns.
msgspec enters the package here only. Imports ``pagination`` and ``errors``.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence
from typing import Any

import msgspec

from .errors import InvalidResponseError
from .pagination import Page, parse_executions_page, read_hint

API_FIELDS: tuple[str, ...] = (
    "execution_id", "flow_id", "flow_name", "version_id", "status", "started_at", "ended_at",
    "created_at", "updated_at", "bulk_id", "deleted_at", "api_key", "inputs", "step_results",
    "output", "output_json", "cost",
)  # fmt: skip
"""The row fields the API documents: the typed decoder expects these before it learns more."""

_encoder = msgspec.json.Encoder()


def to_json_text(value: Any) -> str | None:
    """``None`` stays missing, a string stays itself, anything else becomes compact JSON text."""
    if value is None or isinstance(value, str):
        return value
    return _encoder.encode(value).decode()


def decode_json(data: bytes) -> Any:
    """Generic JSON decoding, with our error for anything that is not JSON."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise InvalidResponseError("the body is not JSON") from None


class PageDecoder:
    """Decodes list-executions bodies to ``Page`` columns; thread-safe.

    Args:
        fields: the row fields expected up front (the contract's columns).
    """

    def __init__(self, fields: Sequence[str] = API_FIELDS) -> None:
        self._lock = threading.Lock()
        self._fields: tuple[str, ...] = (
            "execution_id",
            *(f for f in fields if f != "execution_id"),
        )
        self._decoder, self._getter = self._build(self._fields)

    @property
    def fields(self) -> tuple[str, ...]:
        return self._fields

    def decode(self, data: bytes, *, offset: int, limit: int) -> Page:
        """The page in ``data``, or ``InvalidResponseError`` (retryable) if it is not one."""
        decoder, getter, fields = self._decoder, self._getter, self._fields
        try:
            body = decoder.decode(data)
        except msgspec.ValidationError:
            return self._decode_generic(data, offset=offset, limit=limit)
        except msgspec.DecodeError:
            raise InvalidResponseError("the body is not JSON") from None
        rows = body.executions or []
        values = zip(*map(getter, rows), strict=True) if rows else ([] for _ in fields)
        columns = dict(zip(fields, map(list, values), strict=True))
        for position, execution_id in enumerate(columns["execution_id"]):
            if not isinstance(execution_id, str) or not execution_id:
                raise InvalidResponseError(f"execution #{position} of the page has no execution_id")
        return Page(
            offset,
            limit,
            columns,
            total_count=read_hint(body.total_count, minimum=0),
            applied_limit=read_hint(body.limit, minimum=1),
        )

    def _decode_generic(self, data: bytes, *, offset: int, limit: int) -> Page:
        page = parse_executions_page(decode_json(data), offset=offset, limit=limit)
        new = [name for name in page.columns if name not in self._fields]
        if new:
            with self._lock:
                fields = self._fields + tuple(n for n in new if n not in self._fields)
                self._decoder, self._getter = self._build(fields)
                self._fields = fields
        return page

    @staticmethod
    def _build(fields: tuple[str, ...]) -> tuple[msgspec.json.Decoder[Any], Any]:
        # Struct attributes get safe names (f0, f1...): API field names need not be identifiers.
        names = [f"f{i}" for i in range(len(fields))]
        row = msgspec.defstruct(
            "Row",
            [(names[0], Any), *((name, Any, None) for name in names[1:])],
            rename=dict(zip(names, fields, strict=True)),
            forbid_unknown_fields=True,
            gc=False,
        )
        body = msgspec.defstruct(
            "Body",
            [("executions", list[row] | None), ("total_count", Any, None), ("limit", Any, None)],
        )
        getter = operator.attrgetter(*names)
        return msgspec.json.Decoder(body), (getter if len(names) > 1 else lambda r: (getter(r),))
