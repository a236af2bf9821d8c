"""The organisation's workflows: ``load_workflows()`` and the ``ALL_WORKFLOWS`` marker.

``GET {base}/workflows`` is paged like the executions list (offset + rows received, ends
on a short page).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import pandas as pd

from .config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    Timeout,
    resolve_settings,
    validate_workflow_id,
)
from .errors import InvalidRequestError
from .pagination import ColumnBuffer
from .schema import STRING_DTYPE, normalize_strings, parse_timestamps, warn_unparseable
from .transport import EachlabsClient

logger = logging.getLogger("eachlabs_loader")


class _AllWorkflows(str):
    """The type of ``ALL_WORKFLOWS``: a str, so it passes where a workflow id is typed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ALL_WORKFLOWS"


ALL_WORKFLOWS: Final = _AllWorkflows("*all-workflows*")
"""Pass as ``workflow_id`` to load every workflow of the organisation (see ``load_workflows``)."""

WORKFLOW_COLUMNS: dict[str, Any] = {
    "workflow_id": STRING_DTYPE,
    "slug": STRING_DTYPE,
    "name": STRING_DTYPE,
    "status": STRING_DTYPE,
    "categories": STRING_DTYPE,
    "tags": STRING_DTYPE,
    "trigger_count": "Int64",
    "clone_count": "Int64",
    "is_public": "boolean",
    "production": "boolean",
    "node_based": "boolean",
    "created_at": "timestamp",
    "updated_at": "timestamp",
}
"""Columns of ``load_workflows``; lists (``categories``, ``tags``) are JSON text, like the
nested fields of executions. Other fields the API sends follow as string columns."""

EXPORTED_STATUSES = frozenset({"active", "archived"})
"""``ALL_WORKFLOWS`` exports these; a ``deleted`` workflow has no executions to list."""


def is_all_workflows(value: Any) -> bool:
    return isinstance(value, _AllWorkflows)


def load_workflows(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    page_size: int = 100,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    allow_insecure: bool = False,
) -> pd.DataFrame:
    """Every workflow of the organisation the key belongs to, newest first, one row each.

    Configuration is resolved as for ``load_executions`` (argument > environment >
    default). Columns: ``WORKFLOW_COLUMNS`` (``workflow_id`` is the UUID executions carry
    as ``flow_id``).
    """
    settings = resolve_settings(
        api_key,
        base_url,
        page_size=page_size,
        max_retries=max_retries,
        timeout=timeout,
        allow_insecure=allow_insecure,
    )
    with EachlabsClient(settings) as client:
        return fetch_workflows(client)


def fetch_workflows(client: EachlabsClient) -> pd.DataFrame:
    """``load_workflows`` on a client you hold."""
    buffer = ColumnBuffer(key="workflow_id")
    for page in client.iter_workflow_pages():
        buffer.extend(page.columns)
    return normalize_workflows(buffer.columns)


def iter_exported_workflow_ids(client: EachlabsClient) -> Iterator[str]:
    """The ids ``ALL_WORKFLOWS`` stands for: active and archived workflows, newest first,
    each once, page by page as the list arrives (their loads start before it ends)."""
    seen: set[str] = set()
    for page in client.iter_workflow_pages():
        statuses = page.columns.get("status", [None] * len(page))
        skipped = []
        for workflow_id, status in zip(page.ids, statuses, strict=True):
            if workflow_id in seen:
                continue
            seen.add(workflow_id)
            if status is not None and (
                not isinstance(status, str) or status not in EXPORTED_STATUSES
            ):
                skipped.append(workflow_id)
            elif _is_usable(workflow_id):
                yield workflow_id
        if skipped:
            logger.info("skipping %d deleted workflow(s): %s", len(skipped), skipped)


def _is_usable(workflow_id: str) -> bool:
    """The API's ids go through the same check as a caller's (they become a URL segment)."""
    try:
        validate_workflow_id(workflow_id)
    except InvalidRequestError as exc:
        logger.warning("skipping a workflow the API listed with an unusable id: %s", exc)
        return False
    return True


def normalize_workflows(columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """Typed workflows, one row per ``workflow_id`` (the first seen wins: newest first)."""
    size = len(columns.get("workflow_id", ()))
    names = list(WORKFLOW_COLUMNS) + [c for c in columns if c not in WORKFLOW_COLUMNS]
    data: dict[str, pd.Series] = {}
    lost: dict[str, int] = {}
    for name in names:
        values = columns.get(name, [None] * size)
        kind = WORKFLOW_COLUMNS.get(name, STRING_DTYPE)
        if kind == "timestamp":
            data[name], lost[name] = parse_timestamps(values)
        elif kind == "Int64":
            data[name] = pd.Series(
                [v if isinstance(v, int) and not isinstance(v, bool) else None for v in values],
                dtype="Int64",
            )
        elif kind == "boolean":
            data[name] = pd.Series(
                [v if isinstance(v, bool) else None for v in values], dtype="boolean"
            )
        else:
            data[name] = normalize_strings(values).astype(STRING_DTYPE)
    warn_unparseable(lost)
    frame = pd.DataFrame(data)
    result: pd.DataFrame = frame.drop_duplicates("workflow_id", keep="first").reset_index(drop=True)
    return result
