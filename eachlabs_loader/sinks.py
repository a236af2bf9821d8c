"""Flat files: a DataFrame of executions as CSV or JSON Lines, to a file or a stream.

Timestamps are written as ISO 8601 UTC with microseconds (``2025-01-01T10:00:00.123456Z``),
missing values as empty CSV fields or JSON ``null``. A file is written whole under a
temporary name and then renamed, so a reader never sees half of it. (The Parquet lake is
``lake``.) A failure is a ``StorageError`` naming the path (``storage.storage_errors``).
"""

from __future__ import annotations

import os
import tempfile
from typing import IO, Literal

import pandas as pd

from .storage import storage_errors

FlatFormat = Literal["csv", "jsonl"]
_ISO = "%Y-%m-%dT%H:%M:%S.%fZ"


def check_writable_file(target: str) -> None:
    """Fail early (before any API request) when ``target``'s directory cannot take it."""
    with storage_errors(target, "write"):
        directory = os.path.dirname(os.path.abspath(target))
        os.makedirs(directory, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".eachlabs-probe-", suffix=".tmp", dir=directory)
        os.close(handle)
        os.remove(probe)
        if os.path.isdir(target):
            raise IsADirectoryError(21, "Is a directory")


def write_flat(frame: pd.DataFrame, target: str | IO[str], fmt: FlatFormat) -> None:
    """Write ``frame`` as ``fmt`` to a path (atomically) or to an open text stream."""
    if not isinstance(target, str):
        _write(frame, target, fmt)
        return
    with storage_errors(target, "write"):
        directory = os.path.dirname(os.path.abspath(target))
        os.makedirs(directory, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=".eachlabs-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
                _write(frame, stream, fmt)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


def _write(frame: pd.DataFrame, stream: IO[str], fmt: FlatFormat) -> None:
    if frame.empty and fmt == "jsonl":
        return  # pandas writes "\n" for an empty frame; JSON Lines of nothing is nothing
    if fmt == "csv":
        frame.to_csv(stream, index=False, date_format=_ISO)
    else:
        text = frame.to_json(orient="records", lines=True, date_format="iso", date_unit="us")
        stream.write(text if text.endswith("\n") else text + "\n")
