"""Response bodies to columns without per-value Python work, and JSON text for nested values.

``PageDecoder`` decodes a list-executions body with msgspec into typed structs whose fields
are raw JSON fragments (``msgspec.Raw``): nothing below a row is turned into Python objects.
A column of fragments then becomes one Arrow string array in a single pass over contiguous
bytes (``fragments_to_arrow``), and ``schema`` finishes the job with Arrow compute. A body
the typed decoder rejects (an unknown field) takes the generic path: rows decoded as
``dict[str, Raw]``, which yields the very same fragments; new fields are learned so the next
pages are fast again. A body that is not a page at all is checked by
``pagination.parse_executions_page`` for a precise error.

msgspec enters the package here only.
"""

from __future__ import annotations

import operator
import re
import threading
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InvalidResponseError
from .pagination import Page, parse_executions_page, read_hint

API_FIELDS: tuple[str, ...] = (
    "execution_id", "flow_id", "flow_name", "version_id", "status", "started_at", "ended_at",
    "created_at", "updated_at", "bulk_id", "deleted_at", "api_key", "inputs", "step_results",
    "output", "output_json", "cost",
)  # fmt: skip
"""The row fields the API documents: the typed decoder expects these before it learns more."""

STRING_FIELDS = frozenset(API_FIELDS) - {"inputs", "step_results", "output_json", "cost"}
"""Fields documented as strings: decoded straight to ``str`` (others stay raw JSON)."""

NULL = msgspec.Raw(b"null")
"""The fragment of a missing value (absent fields decode to it too)."""

_encoder = msgspec.json.Encoder()
ENCODE_ERRORS: tuple[type[Exception], ...] = (
    TypeError,
    ValueError,
    OverflowError,
    msgspec.MsgspecError,
)
"""What encoding a Python value as JSON text can raise (a value no JSON can hold)."""


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


_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def replace_lone_surrogates(data: bytes) -> bytes:
    """``\\ud83d`` without its pair (a truncated emoji) becomes U+FFFD.

    Python's ``json`` accepts such escapes, JavaScript back ends emit them, and they cannot be
    stored as UTF-8; one of them must not make a whole page unreadable.
    """
    return _LONE_SURROGATE.sub(rb"\\ufffd", data)


def fragments_to_arrow(values: Sequence[Any]) -> pa.LargeStringArray:
    """One Arrow string per value: its JSON text (``null`` for None).

    Values are JSON fragments (``msgspec.Raw``, as decoded) or plain Python values (encoded
    here, the slow path). The fast path copies the fragments' bytes once, end to end, and
    hands Arrow the offsets: no Python object per value.
    """
    try:
        data = b"".join(values)
        lengths = np.fromiter(map(len, values), np.int64, len(values))
    except TypeError:  # plain Python values
        encoded = [NULL if v is None else v if type(v) is msgspec.Raw else _encoder.encode(v)
                   for v in values]  # fmt: skip
        data = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(data))


_NUMBER_END = r"(?:[,\]}]|$)"  # a number token ends where valid JSON lets it: no re-splitting
_CANONICAL_TOKENS = (
    r"[\[\]{},:]|true|false|null",
    r'"(?:[^"\\\x00-\x1f]|\\["\\bfnrt])*"',  # strings: raw UTF-8, only short escapes
    r"(?:0|-?[1-9][0-9]{0,17})" + _NUMBER_END,  # integers within 64 bits
    # decimals of at most 15 significant digits, between 1e-4 and 1e7, no trailing zero:
    r"-?0\.(?:0|0{0,3}[1-9](?:[0-9]{0,13}[1-9])?)" + _NUMBER_END,
    r"-?[1-9][0-9]{0,6}\.(?:0|[0-9]{0,7}[1-9])" + _NUMBER_END,
)
CANONICAL_JSON = "^(?:" + "|".join(_CANONICAL_TOKENS) + ")*$"
"""Fragments already as ``msgspec`` would re-encode them (a token grammar, no whitespace).

Sound, not complete: a fragment it accepts is its own canonical text (checked against the
re-encoding by a property test); anything else takes the exact path. One difference: an
object with a repeated key keeps both here, where re-encoding keeps the last.
"""


def text_from_fragments(fragments: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Strings as themselves, anything else as compact JSON text, ``null`` as null.

    Returns the text and a mask of the values that were JSON strings.
    """
    is_null = pc.equal(fragments, "null")
    is_string = pc.starts_with(fragments, '"')
    any_string = pc.any(is_string).as_py()
    unquoted = pc.utf8_slice_codeunits(fragments, 1, -1) if any_string else fragments
    escaped = pc.and_(is_string, pc.match_substring(fragments, "\\")) if any_string else None
    if escaped is not None and pc.any(escaped).as_py():
        unquoted = _replace(unquoted, escaped, fragments, lambda f: msgspec.json.decode(f))
    # Numbers, objects and arrays: re-encoded, so the text is the same whichever way the
    # value arrived (the API's own spacing, escapes and number spelling, or a Python value).
    # Most already are in that form (compact, plain numbers): those are left as they are.
    other = pc.invert(pc.or_(is_string, is_null))
    if pc.any(other).as_py():
        other = pc.and_(other, pc.invert(pc.match_substring_regex(fragments, CANONICAL_JSON)))
    if pc.any(other).as_py():
        fragments = _replace(fragments, other, fragments, _canonical)
    text = pc.if_else(is_string, unquoted, fragments) if any_string else fragments
    return pc.if_else(is_null, pa.scalar(None, pa.large_string()), text), is_string


def _canonical(fragment: str) -> str:
    return _encoder.encode(msgspec.json.decode(fragment)).decode()


def _replace(target: pa.Array, mask: pa.Array, source: pa.Array, convert: Any) -> pa.Array:
    """``target`` with ``convert(source[i])`` where ``mask``: the rare values Arrow can't do."""
    positions = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    replacements = [convert(value) for value in source.take(positions).to_pylist()]
    return pc.replace_with_mask(target, mask, pa.array(replacements, pa.large_string()))


class PageDecoder:
    """Decodes list-executions bodies to ``Page`` columns of JSON fragments; thread-safe.

    Args:
        fields: the row fields expected up front (the API's documented ones).
    """

    def __init__(self, fields: Sequence[str] = API_FIELDS) -> None:
        self._lock = threading.Lock()
        rest = (f for f in fields if f != "execution_id")
        known: tuple[str, ...] = ("execution_id", *rest)
        self._strings = STRING_FIELDS & set(known)
        # One tuple, swapped in one assignment: a thread decoding while another learns a new
        # field sees the old decoder with its fields or the new one with its, never a mix.
        self._typed: tuple[Any, Any, tuple[str, ...]] = (
            *_typed_decoder(known, self._strings),
            known,
        )

    @property
    def fields(self) -> tuple[str, ...]:
        return self._typed[2]

    def decode(self, data: bytes, *, offset: int, limit: int) -> Page:
        """The page in ``data``, or ``InvalidResponseError`` (retryable) if it is not one."""
        decoder, getter, fields = self._typed
        try:
            body = decoder.decode(data)
        except msgspec.ValidationError as exc:
            self._unlearn_string(str(exc))
            return self._decode_generic(data, offset=offset, limit=limit)
        except msgspec.DecodeError:
            repaired = replace_lone_surrogates(data)
            if repaired == data:
                raise InvalidResponseError("the body is not JSON") from None
            return self.decode(repaired, offset=offset, limit=limit)
        rows = body.executions or []
        values = zip(*map(getter, rows), strict=True) if rows else ([] for _ in fields)
        columns = dict(zip(fields, map(list, values), strict=True))
        ids = columns["execution_id"]
        if not all(ids):
            raise InvalidResponseError(
                f"execution #{ids.index('')} of the page has no execution_id"
            )
        return Page(
            offset,
            limit,
            columns,
            total_count=read_hint(body.total_count, minimum=0),
            applied_limit=read_hint(body.limit, minimum=1),
        )

    def _decode_generic(self, data: bytes, *, offset: int, limit: int) -> Page:
        try:
            body = _LOOSE_DECODER.decode(data)
        except msgspec.DecodeError:
            # Not even a list of objects: let the plain checks say precisely what is wrong.
            parse_executions_page(decode_json(data), offset=offset, limit=limit)
            raise InvalidResponseError("the response is not a page of executions") from None
        rows: list[dict[str, msgspec.Raw]] = body.executions or []
        known = self.fields
        names: dict[str, None] = dict.fromkeys(known)
        for row in rows:
            names.update(dict.fromkeys(row))
        ids = [_execution_id(row, position) for position, row in enumerate(rows)]
        columns: dict[str, list[Any]] = {"execution_id": ids}
        for name in list(names)[1:]:
            columns[name] = [row.get(name, NULL) for row in rows]
        self._learn([n for n in names if n not in known])
        return Page(
            offset,
            limit,
            columns,
            total_count=read_hint(body.total_count, minimum=0),
            applied_limit=read_hint(body.limit, minimum=1),
        )

    def _learn(self, new: list[str]) -> None:
        if new:
            with self._lock:
                known = self.fields
                fields = known + tuple(n for n in new if n not in known)
                self._typed = (*_typed_decoder(fields, self._strings), fields)

    def _unlearn_string(self, message: str) -> None:
        """A documented string field came as something else: decode it raw from now on."""
        match = re.search(r"\$\.executions\[\d+\]\.(.+)`$", message)
        name = match.group(1) if match else None
        if name in self._strings and name != "execution_id":
            with self._lock:
                self._strings = self._strings - {name}
                self._typed = (*_typed_decoder(self.fields, self._strings), self.fields)


def _execution_id(row: dict[str, msgspec.Raw], position: int) -> str:
    raw = row.get("execution_id")
    value = msgspec.json.decode(raw) if raw is not None else None
    if not isinstance(value, str) or not value:
        raise InvalidResponseError(f"execution #{position} of the page has no execution_id")
    return value


class _LooseBody(msgspec.Struct):
    executions: list[dict[str, msgspec.Raw]] | None
    total_count: Any = None
    limit: Any = None


_LOOSE_DECODER = msgspec.json.Decoder(_LooseBody)


def _typed_decoder(
    fields: tuple[str, ...], strings: frozenset[str] | set[str]
) -> tuple[msgspec.json.Decoder[Any], Any]:
    """A decoder for rows with exactly ``fields`` (others rejected) and a column getter.

    ``strings`` are decoded to ``str | None``; every other field stays a raw JSON fragment.
    """
    # Struct attributes get safe names (f0, f1...): API field names need not be identifiers.
    names = [f"f{i}" for i in range(len(fields))]
    kinds = [
        (name, str | None, None) if field in strings else (name, msgspec.Raw, NULL)
        for name, field in zip(names[1:], fields[1:], strict=True)
    ]
    row: Any = msgspec.defstruct(
        "Row",
        [(names[0], str), *kinds],
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
