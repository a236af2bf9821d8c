"""What a dataset remembers per workflow: its state, the state files, and how a load's rows
become the next state.

A state file per workflow, ``{root}/_state/<flow_id>.json`` (``WorkflowState``), records
the newest row a load saw (the high-water mark) and the rows that were still running or
queued. ``StateTracker`` builds the next state from a load's rows (on Arrow, batch by
batch); ``StateFiles`` stages the files and makes them visible together, after the data
(``staging.StagedFiles``): a crash in between leaves the older state, and the next run
re-reads a little more, never less. Where a run may stop reading is ``incremental``'s.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import StorageError
from .partitions import partition_value
from .staging import StagedFiles
from .storage import Location, read_bytes, remove_stale_temporaries
from .timestamps import MISSING_MICROS, micros

STATE_DIR = "_state"
STATE_FORMAT = 1
"""Bumped when the state file changes meaning; another version falls back to a full load."""
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
"""Statuses that never change again. Anything else (``running``, ``queued``, an unknown or
missing status) is tracked as open and read again by the next incremental run."""


@dataclass
class WorkflowState:
    """What the dataset holds of one workflow, as of its last successful load."""

    flow_id: str
    dataset_id: str
    high_water_mark: datetime | None
    open_executions: dict[str, datetime | None]
    last_run_at: datetime
    last_run_mode: str = "full"
    rows_fetched: int = 0
    requests: int = 0
    total_count: int | None = None
    open_depth: int | None = None
    """Rows from the head down to the oldest open execution, at the last run."""

    def pages_to_read(self, total_count: int | None, limit: int) -> int | None:
        """About how many pages an incremental run reads now (None: cannot tell)."""
        if self.open_depth is None or self.total_count is None or total_count is None:
            return None
        return math.ceil((self.rows_added(total_count) + self.open_depth) / limit) + 1

    def rows_added(self, total_count: int | None) -> int:
        """How many rows the list grew by since the last run (0 if either count is unknown)."""
        if total_count is None or self.total_count is None:
            return 0
        return max(0, total_count - self.total_count)

    def stop_before(self, lookback: timedelta) -> datetime | None:
        """Rows created before this instant were finished at the last run (None: read all).

        An open execution without ``created_at`` could be anywhere in the list: read all.
        """
        opened = [when for when in self.open_executions.values() if when is not None]
        if self.high_water_mark is None or len(opened) < len(self.open_executions):
            return None
        return min([self.high_water_mark - lookback, *opened])

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": STATE_FORMAT,
                "dataset_id": self.dataset_id,
                "workflow_id": self.flow_id,
                "high_water_mark": to_iso(self.high_water_mark),
                "open_executions": {k: to_iso(v) for k, v in sorted(self.open_executions.items())},
                "last_run": {
                    "at": to_iso(self.last_run_at),
                    "mode": self.last_run_mode,
                    "rows_fetched": self.rows_fetched,
                    "requests": self.requests,
                    "total_count": self.total_count,
                    "open_depth": self.open_depth,
                },
            },
            separators=(",", ":"),  # compact: the C encoder (indenting is pure Python)
        )

    @classmethod
    def from_json(cls, text: str) -> WorkflowState:
        """Raises ``ValueError`` (with the reason) for anything but a current-format state."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("format") != STATE_FORMAT:
            raise ValueError(
                f"state format {data.get('format')!r}, this version reads {STATE_FORMAT}"
            )
        last = data["last_run"]
        return cls(
            flow_id=_text(data["workflow_id"]),
            dataset_id=_text(data["dataset_id"]),
            high_water_mark=_instant(data["high_water_mark"]),
            open_executions={
                _text(k): _instant(v) for k, v in dict(data["open_executions"]).items()
            },
            last_run_at=_instant(last["at"]) or datetime.now(timezone.utc),
            last_run_mode=_text(last.get("mode", "full")),
            rows_fetched=int(last.get("rows_fetched", 0)),
            requests=int(last.get("requests", 0)),
            total_count=_count(last.get("total_count")),
            open_depth=_count(last.get("open_depth")),
        )


def state_path(location: Location, flow_id: str) -> str:
    """Escaped as partition directories are: a flow id cannot escape the state directory."""
    return location.path(STATE_DIR, f"{partition_value(flow_id)}.json")


def read_state(
    location: Location, flow_id: str, dataset_id: str
) -> tuple[WorkflowState | None, str | None]:
    """The workflow's state, or None and why it cannot be used (a full load follows)."""
    path = state_path(location, flow_id)
    name = f"{STATE_DIR}/{path.rsplit('/', 1)[-1]}"
    try:
        data = read_bytes(location, path)
        if data is None:
            return None, f"no state file {name} in the dataset"
        text = data.decode("utf-8")
    except (StorageError, UnicodeDecodeError) as exc:
        return None, f"state file {name} is unusable ({exc})"
    return parse_state(text, f"state file {name}", flow_id, dataset_id)


def parse_state(
    text: str, name: str, flow_id: str, dataset_id: str | None
) -> tuple[WorkflowState | None, str | None]:
    """A stored state checked against the workflow and dataset it must describe (or None
    and why not); ``dataset_id=None`` where the state lives inside the dataset itself."""
    try:
        state = WorkflowState.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"{name} is unusable ({exc})"
    if dataset_id is not None and state.dataset_id != dataset_id:
        return None, "the state file belongs to another dataset (copied or recreated lake)"
    if state.flow_id != flow_id:
        return None, f"the {name} describes workflow {state.flow_id!r}"
    return state, None


class StateFiles:
    """A load's state files: each written (hidden) as soon as its workflow's rows are all
    in, then all made visible together, after the data."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self._staged = StagedFiles(location)

    def stage(self, state: WorkflowState) -> None:
        if not len(self._staged):  # leftovers of crashed writers go before ours
            remove_stale_temporaries(self.location, self.location.path(STATE_DIR))
        data = state.to_json().encode("utf-8")
        self._staged.write(state_path(self.location, state.flow_id), lambda sink: sink.write(data))

    def __len__(self) -> int:
        return len(self._staged)

    def commit(self) -> None:
        self._staged.commit()

    def abort(self) -> None:
        self._staged.abort()


@dataclass(frozen=True)
class TrackedRows:
    """What a ``StateTracker`` reads of normalised rows, converted once for a whole batch
    of many workflows' rows and then sliced per workflow (views, no copies)."""

    ids: pa.Array
    flows: pa.Array
    created: np.ndarray  # microseconds, MISSING_MICROS where missing
    updated: np.ndarray
    finished: np.ndarray  # a terminal status

    @classmethod
    def of(cls, table: pa.Table) -> TrackedRows:
        status = table["status"].combine_chunks()
        terminal = pc.is_in(status, pa.array(sorted(TERMINAL_STATUSES), status.type))
        return cls(
            ids=table["execution_id"].combine_chunks(),
            flows=table["flow_id"].combine_chunks(),
            created=micros(table["created_at"]).to_numpy(),
            updated=micros(table["updated_at"]).to_numpy(),
            finished=pc.fill_null(terminal, False).to_numpy(zero_copy_only=False),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, stop: int) -> TrackedRows:
        return TrackedRows(
            self.ids.slice(start, stop - start),
            self.flows.slice(start, stop - start),
            self.created[start:stop],
            self.updated[start:stop],
            self.finished[start:stop],
        )


class StateTracker:
    """Watches a workflow's normalised rows; knows the state to save once they are written.

    Over-tracking is safe (the next run reads a little deeper), under-tracking is not: a
    row seen open stays open unless a finished copy with a later-or-equal ``updated_at``
    arrives. Timestamps are kept as microseconds (``MISSING_MICROS`` for a missing one, which is
    older than any other).
    """

    def __init__(self) -> None:
        self.flow_id: str | None = None
        self.high_water_mark: int | None = None
        self.open: dict[str, tuple[int, int, int]] = {}  # id -> (created, updated, position)
        self.rows_seen = 0

    def observe(self, rows: TrackedRows | pa.Table) -> None:
        """The next rows of the workflow, in list order (contract columns, any number)."""
        if isinstance(rows, pa.Table):
            rows = TrackedRows.of(rows)
        if not len(rows):
            return
        if self.flow_id is None:
            self.flow_id = next((f for f in pc.drop_null(rows.flows).to_pylist() if f), None)
        newest = int(rows.created.max())
        if newest != MISSING_MICROS and (
            self.high_water_mark is None or newest > self.high_water_mark
        ):
            self.high_water_mark = newest
        finished, created, updated = rows.finished, rows.created, rows.updated
        if self.open and finished.any():
            self._close(rows.ids.filter(finished).to_pylist(), updated[finished])
        opened = np.flatnonzero(~finished)
        ids = rows.ids.take(opened).to_pylist()
        for execution_id, k in zip(ids, opened.tolist(), strict=True):
            known = self.open.get(execution_id)
            if known is None or updated[k] >= known[1]:
                self.open[execution_id] = (int(created[k]), int(updated[k]), self.rows_seen + k)
        self.rows_seen += len(rows)

    def _close(self, ids: list[str], updated: np.ndarray) -> None:
        # Looked up in the dict, row by row: a chunk's cost, however many are open.
        for execution_id, when in zip(ids, updated.tolist(), strict=True):
            known = self.open.get(execution_id)
            if known is not None and when >= known[1]:
                del self.open[execution_id]

    def state(
        self,
        dataset_id: str,
        previous: WorkflowState | None,
        *,
        mode: str,
        rows_fetched: int,
        requests: int,
        total_count: int | None = None,
    ) -> WorkflowState | None:
        """The state after this load (None when it saw no row and no state existed)."""
        flow_id = self.flow_id or (previous.flow_id if previous else None)
        if flow_id is None:
            return None
        seen = None if self.high_water_mark is None else _instant_of(self.high_water_mark)
        marks = [m for m in (seen, previous and previous.high_water_mark) if m]
        now = datetime.now(timezone.utc)
        # A created_at in the future (clock skew) must not push the mark past rows not yet
        # created: they would land below it and never be read. Our clock caps it.
        return WorkflowState(
            flow_id=flow_id,
            dataset_id=dataset_id,
            high_water_mark=min(max(marks), now) if marks else None,
            open_executions={
                k: None if c == MISSING_MICROS else _instant_of(c)
                for k, (c, _, _) in self.open.items()
            },
            last_run_at=now,
            last_run_mode=mode,
            rows_fetched=rows_fetched,
            requests=requests,
            total_count=total_count,
            open_depth=max((p + 1 for _, _, p in self.open.values()), default=0),
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FIRST_MICROS = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1)
_LAST_MICROS = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1)


def _instant_of(micros: int) -> datetime:
    """The UTC instant (clamped to what ``datetime`` holds: a year-0 ``created_at`` parses)."""
    return _EPOCH + timedelta(microseconds=min(max(micros, _FIRST_MICROS), _LAST_MICROS))


def to_iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _instant(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO timestamp, got {value!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without an offset: {value!r}")
    return parsed.astimezone(timezone.utc)


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value
