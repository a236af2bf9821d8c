"""Where a load writes: the hive Parquet lake (the default) or a Delta table.

``table_format`` picks one; both hold the same rows under the same rules (one row per
``execution_id``, the newest ``updated_at`` wins, partitions by workflow and UTC date) and
return the same ``LoadResult``. Each refuses the other's directory, before any request.
``Landing`` is how a load's rows and its workflows' states land in either.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd

from .dataset import is_delta_table
from .delta import DeltaTarget, DeltaWriter, read_table, write_table
from .errors import InvalidRequestError
from .lake import LakeWriter, read_lake, write_lake
from .result import LoadResult
from .schema import conform_frame
from .state import StateFiles, WorkflowState
from .storage import FileSystem, resolve_location

TableFormat = Literal["parquet", "delta"]
TABLE_FORMATS: tuple[TableFormat, ...] = ("parquet", "delta")
Writer = LakeWriter | DeltaWriter


def check_table_format(table_format: object) -> TableFormat:
    if table_format == "parquet":
        return "parquet"
    if table_format == "delta":
        return "delta"
    raise InvalidRequestError(
        f"table_format must be 'parquet' (the hive lake) or 'delta', got {table_format!r}"
    )


def open_writer(
    output: Any, table_format: TableFormat, filesystem: FileSystem | None = None
) -> Writer:
    """The writer of ``output``, checked (and the table opened) before any API request."""
    if check_table_format(table_format) == "delta":
        return DeltaWriter(DeltaTarget.resolve(output, filesystem))
    return LakeWriter(resolve_location(output, filesystem))


def write_executions(
    frame: pd.DataFrame,
    output: Any,
    *,
    filesystem: FileSystem | None = None,
    table_format: TableFormat = "parquet",
) -> LoadResult:
    """Write a DataFrame of executions to the lake or a Delta table (a load's rules).

    Args:
        frame: ``load_executions`` output, or any frame with at least ``execution_id``.
        output: a local path or a URI (``s3://``, ``gs://``...).
        filesystem: an explicit ``pyarrow.fs.FileSystem`` for the hive lake; ``output`` is
            then a path on it (a Delta table takes a URI and the environment's credentials).
        table_format: ``"parquet"`` (default): the hive lake; ``"delta"``: a Delta table,
            each workflow in one commit (needs the ``delta`` extra).

    Raises:
        InvalidRequestError: ``frame`` is not a frame of executions, ``output`` is no URI,
            or ``table_format`` is unknown (or ``deltalake`` is not installed).
        StorageError: the output cannot be read or written, or is of the other format
            (nothing was changed).
        SchemaMismatchError: the output holds files with incompatible column types.
    """
    fmt = check_table_format(table_format)
    if fmt == "parquet":
        return write_lake(frame, output, filesystem=filesystem)
    conformed = conform_frame(frame)
    result = write_table(conformed, output, filesystem=filesystem)
    result.rows_fetched = len(frame)
    return result


def read_executions(
    output: Any,
    *,
    filesystem: FileSystem | None = None,
    workflow_id: str | None = None,
    version: int | None = None,
) -> pd.DataFrame:
    """Read the lake or the Delta table at ``output`` back into the DataFrame contract.

    The format is found from the directory (a ``_delta_log`` makes it a Delta table).
    ``version``: a Delta table's version to read (time travel); the latest by default.

    Raises:
        StorageError: there is no dataset at ``output``, or a file of it cannot be read.
    """
    try:
        location = resolve_location(output, filesystem)
    except InvalidRequestError:
        if filesystem is not None:
            raise
        location = None  # a URI pyarrow cannot open (az://...): only a Delta table can be there
    if location is None or is_delta_table(location):
        return read_table(output, workflow_id=workflow_id, version=version)
    if version is not None:
        raise InvalidRequestError("version= reads a Delta table; this is a hive lake")
    return read_lake(output, filesystem=filesystem, workflow_id=workflow_id)


class Landing:
    """Where a lake load lands: the writer of its rows, and the states of its workflows
    (the hive lake's state files, staged as each workflow completes and made visible after
    the data; a Delta table's, in the commit of the data). ``with_states=False`` (a bulk's
    rows say nothing of the rest of a workflow) saves none."""

    def __init__(self, writer: Writer, *, with_states: bool) -> None:
        self.writer, self.with_states = writer, with_states
        hive = writer if not isinstance(writer, DeltaWriter) else None
        self._files = StateFiles(hive.location) if hive is not None and with_states else None
        self._states: dict[str, str] = {}  # a Delta table's, for its commit

    def complete(self, flow_ids: set[str], states: list[WorkflowState]) -> None:
        """Every row of these workflows is in: their partitions and states can be staged."""
        self.writer.complete(flow_ids)
        if not self.with_states:
            return
        for state in states:
            if self._files is not None:
                self._files.stage(state)
            else:
                self._states[state.flow_id] = state.to_json()

    def commit(self, failed: set[str]) -> LoadResult:
        """Make the load visible: the hive lake's files, then its state files; or one Delta
        commit holding the rows and the states, without the workflows that failed."""
        try:
            if isinstance(self.writer, DeltaWriter):
                self.writer.discard(failed)
                return self.writer.close(self._states)
            written = self.writer.close()
            if self._files is not None and len(self._files):
                self.writer.ensure_identity()
                self._files.commit()
            return written
        finally:
            self._abort_states()

    def keep_rows(self) -> None:
        """A workflow failed: the hive lake keeps the rows that arrived (they are exact,
        and none after a storage error), a Delta table gets nothing; no state is saved."""
        self._abort_states()
        if isinstance(self.writer, DeltaWriter):
            self.writer.abort()
        else:
            self.writer.close()

    def abort(self) -> None:
        """Nothing lands: every file stays as it was."""
        self._abort_states()
        self.writer.abort()

    def _abort_states(self) -> None:
        if self._files is not None:
            self._files.abort()
