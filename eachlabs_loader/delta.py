"""The Delta table: the lake's rows as a Delta Lake table, each workflow of a load in one
atomic commit.

Layout (delta-rs names the data files)::

    {root}/_delta_log/00000000000000000000.json ...          the transaction log
    {root}/workflow_id=<flow_id>/date=<YYYY-MM-DD>/part-*.parquet

delta-rs (the optional ``deltalake`` package) owns the protocol; this module decides what to
commit. A load stages its rows in a local scratch hive lake (``lake.LakeWriter`` on a
temporary directory: one row per ``execution_id``, the lake's merge rules, bounded memory),
then commits them. The workflows the table holds no row of yet need no merge: their
staged files are copied into the table and appended in one commit (flat memory, however
many days a backfill covers). The others are MERGEd in one commit: an upsert by
``execution_id`` where the newest ``updated_at`` wins (ties go to the new row, identical rows
are left alone), limited by a predicate to the workflows and dates the load touched, so its
cost follows what changed. Every commit claims the workflows it writes as application
transactions, so two writers committing the same workflow at once conflict. Each
workflow's incremental state travels in the commit of its rows' metadata (``STATES_KEY``):
data and state cannot diverge, and a copied table keeps both.

Before the commit nothing is visible. A commit that conflicts with a concurrent one (the
same workflow, or another MERGE of the same partitions) is retried on the newer version:
the workflows now stored are merged instead of appended. A writer killed at any moment
leaves the table at its last version; the files of an aborted commit belong to no
version and ``maintain_table`` (vacuum) removes them.

``deltalake`` enters the package here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .dataset import METADATA_FILE, check_compatible, is_delta_table, union_schema
from .errors import InvalidRequestError, SchemaMismatchError, StorageError
from .lake import LakeWriter
from .partitions import DATA_FILE, NULL_PARTITION, partition_value
from .result import LoadResult
from .retry import RetryPolicy
from .schema import ARROW_STRING, arrow_schema, arrow_to_frame
from .storage import (
    Location,
    check_writable,
    copy_file,
    is_directory,
    is_file,
    list_files,
    may_hold_nulls,
    resolve_location,
    scratch_location,
    storage_errors,
    stream_files,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable

logger = logging.getLogger("eachlabs_loader")

COPY_THREADS = 8
"""Staged files copied into the table at once (file I/O: the interpreter's lock is free)."""

STATES_KEY = "eachlabs.states"
"""Commit metadata key: ``{flow_id: state JSON}`` for the workflows the commit loaded."""
PARTITIONS = pa.schema([("workflow_id", ARROW_STRING), ("date", pa.date32())])
"""The table's partition columns: the workflow UUID (``flow_id``) and the UTC date."""
CLAIM_PREFIX = "eachlabs-loader:"
"""Application transaction ids (``txn`` actions) of the workflows a commit writes."""
MAX_COMMIT_ATTEMPTS = 30
"""A conflicting commit is merged again up to this many times (concurrent writers)."""
HISTORY_PAGE = 200
HIVE_STATE_DIR = "_state"
INSTALL_HINT = (
    "table_format='delta' needs the deltalake package: pip install 'eachlabs-loader[delta]'"
)


def deltalake() -> ModuleType:
    """The ``deltalake`` module, or an ``InvalidRequestError`` that says what to install."""
    try:
        import deltalake as module
    except ImportError:
        raise InvalidRequestError(INSTALL_HINT) from None
    return module


def storage_options(uri: str) -> dict[str, str]:
    """What delta-rs needs beyond its own reading of the ``AWS_*`` variables.

    An ``http://`` endpoint (MinIO, moto, a local gateway) is refused by delta-rs unless
    ``AWS_ALLOW_HTTP`` is set; a user who points ``AWS_ENDPOINT_URL`` at one has said so.
    """
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    options: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://") and "AWS_ALLOW_HTTP" not in os.environ:
            options["AWS_ALLOW_HTTP"] = "true"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["AWS_REGION"] = region
    return options


@contextmanager
def delta_errors(uri: str, doing: str) -> Iterator[None]:
    """delta-rs's errors as ours, naming the table."""
    module = deltalake()
    errors = module.exceptions
    try:
        yield
    except errors.SchemaMismatchError as exc:
        raise SchemaMismatchError(
            f"{uri}: {exc}; refusing to write (nothing was committed)"
        ) from None
    except (errors.DeltaError, errors.DeltaProtocolError, OSError) as exc:
        raise StorageError(f"cannot {doing} Delta table {uri}: {exc}", path=uri) from exc


class CommitConflictError(StorageError):
    """A concurrent writer committed first: merged again on the new version."""

    retryable = True


@dataclass(frozen=True)
class DeltaTarget:
    """A Delta table's URI and how to reach it (a local path is made absolute)."""

    uri: str
    options: dict[str, str]

    @classmethod
    def resolve(cls, output: Any, filesystem: Any = None) -> DeltaTarget:
        if filesystem is not None:
            raise InvalidRequestError(
                "table_format='delta' takes a path or URI, not a filesystem= object: delta-rs "
                "reads credentials, region and endpoint from the AWS_*/AZURE_*/GOOGLE_* "
                "environment variables"
            )
        if isinstance(output, os.PathLike):
            output = os.fspath(output)
        if not isinstance(output, str) or not output.strip():
            raise InvalidRequestError(f"output must be a path or URI, got {output!r}")
        uri = output if "://" in output else os.path.abspath(output)
        return cls(uri.rstrip("/") or uri, storage_options(uri))

    def is_remote_only(self) -> bool:
        """A URI only delta-rs can reach (pyarrow has no filesystem for it)."""
        try:
            resolve_location(self.uri)
        except InvalidRequestError:
            return True
        return False

    def exists(self) -> bool:
        with delta_errors(self.uri, "open"):
            return bool(deltalake().DeltaTable.is_deltatable(self.uri, self.options))

    def open(self, version: int | None = None) -> DeltaTable:
        with delta_errors(self.uri, "open"):
            table: DeltaTable = deltalake().DeltaTable(
                self.uri, version=version, storage_options=self.options
            )
        return table


def check_not_hive_lake(target: DeltaTarget) -> None:
    """A hive lake's directory is not a Delta table: refuse before anything is written."""
    try:
        location = resolve_location(target.uri)
    except InvalidRequestError:
        return  # a store pyarrow cannot list (delta-rs may still reach it): nothing to check
    if is_delta_table(location):
        return
    if (
        is_file(location, location.path(METADATA_FILE))
        or is_directory(location, location.path(HIVE_STATE_DIR))
        or list_files(location, location.root, DATA_FILE)
    ):
        raise StorageError(
            f"output {target.uri!r} is a hive Parquet lake, not a Delta table: write it with "
            "table_format='parquet', or give the Delta table another path",
            path=target.uri,
        )


class DeltaWriter:
    """Collects a load's rows in a scratch lake, then commits them to the table at once.

    The same calls as ``LakeWriter`` (``add``, ``close``, ``abort``), plus ``discard`` to
    leave out a workflow that failed and the states to commit with the data.
    """

    def __init__(self, target: DeltaTarget) -> None:
        deltalake()
        self.target = target
        self._started = time.monotonic()
        check_not_hive_lake(target)
        self._table = target.open() if target.exists() else None
        if self._table is not None:
            self._check_table(self._table)
        elif not target.is_remote_only():
            check_writable(resolve_location(target.uri))  # a new table: can it be created?
        # The states name it; they live in the table itself, so nothing needs to match it.
        self.dataset_id = str(self._table.metadata().id) if self._table else uuid.uuid4().hex
        with storage_errors(tempfile.gettempdir(), "create a scratch directory in"):
            self._scratch = tempfile.mkdtemp(prefix="eachlabs-delta-")
        try:
            self._staging = LakeWriter(scratch_location(self._scratch))
        except BaseException:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        self._discarded: set[str] = set()
        self._history: list[dict[str, Any]] | None = None
        self._history_complete = False
        self._history_lock = threading.Lock()  # workflows' loads ask from their threads

    def add(self, rows: pa.Table | pd.DataFrame) -> None:
        self._staging.add(rows)

    def complete(self, flow_ids: set[str]) -> None:
        self._staging.complete(flow_ids)

    def discard(self, flow_ids: set[str]) -> None:
        """Commit nothing of these workflows (their load failed part way)."""
        self._discarded.update(flow_ids)

    def abort(self) -> None:
        """Commit nothing; remove the scratch lake."""
        self._staging.abort()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def close(self, states: dict[str, str] | None = None) -> LoadResult:
        """Commit every staged row to the table, with ``states`` (flow id -> state JSON) in
        the commit metadata; returns the counts and the version committed.

        One commit for the workflows the table holds no row of yet (their files, appended),
        one MERGE for the others: each workflow lands whole in one commit.
        """
        uncommitted = {f: s for f, s in (states or {}).items() if f not in self._discarded}
        try:
            self._staging.close()
            files = self._staged_files()
            result = LoadResult(output=self.target.uri, partitions_touched=len(files))
            logger.debug("committing %d staged partitions to %s", len(files), self.target.uri)
            remaining = self._append_retried(files, uncommitted, result) if files else []
            try:
                if remaining and self._merge_retried(remaining, dict(uncommitted), result):
                    uncommitted.clear()
            except StorageError as exc:
                raise _partly_committed(exc, len(remaining) < len(files), result) from exc
            if self._table is not None:
                self._commit_new_states(uncommitted)
                result.table_version = int(self._table.version())
        finally:
            self.abort()
        result.elapsed_s = time.monotonic() - self._started
        return result

    def _commit_new_states(self, states: dict[str, str]) -> None:
        """A load that changed no row leaves the table as it is: the states already there
        still describe it. Only a workflow without any committed state gets one (else every
        incremental run of it would load in full), in a commit without data."""
        new = {flow: state for flow, state in states.items() if self.read_state(flow) is None}
        if not new or self._table is None:
            return
        properties = deltalake().CommitProperties(
            custom_metadata={STATES_KEY: json.dumps(new, sort_keys=True)}
        )
        with delta_errors(self.target.uri, "commit the state to"):
            self._table.create_write_transaction(
                [],
                mode="append",
                schema=self._table.schema(),
                partition_by=list(PARTITIONS.names),
                commit_properties=properties,
            )
            self._table.update_incremental()

    def read_state(self, flow_id: str) -> str | None:
        """The state JSON committed most recently for ``flow_id`` (None: no commit has one).

        Walks the history newest first; a RESTORE undoes the commits after the version it
        restored, so their states no longer describe the table and are skipped.
        """
        with self._history_lock:
            if self._table is None:
                return None
            seen, restored = 0, None
            while True:
                history = self._read_history(seen + HISTORY_PAGE)
                for commit in history[seen:]:
                    version = int(commit.get("version", -1))
                    if restored is not None and version > restored:
                        continue
                    if commit.get("operation") == "RESTORE":
                        target = commit.get("operationParameters", {}).get("version")
                        restored = int(target) if target is not None else -1
                        continue
                    states = _states_of(commit)
                    if flow_id in states:
                        return states[flow_id]
                if self._history_complete or len(history) < seen + HISTORY_PAGE:
                    return None
                seen = len(history)

    def _read_history(self, limit: int) -> list[dict[str, Any]]:
        if self._history is None or (len(self._history) < limit and not self._history_complete):
            assert self._table is not None
            with delta_errors(self.target.uri, "read the history of"):
                self._history = self._table.history(limit)
            self._history_complete = len(self._history) < limit
        return self._history

    def _undated_workflows(self, files: list[str]) -> set[str]:
        """The workflow directories with a staged row that has no created_at."""
        scratch = self._staging.location
        return {
            path[len(scratch.root) + 1 :].split("/", 1)[0]
            for path in files
            if may_hold_nulls(scratch, path, "created_at")
        }

    def _staged_files(self) -> list[str]:
        scratch = self._staging.location
        skip = {f"workflow_id={partition_value(f)}" for f in self._discarded}
        return [
            path
            for path in list_files(scratch, scratch.root, DATA_FILE)
            if path[len(scratch.root) + 1 :].split("/", 1)[0] not in skip
        ]

    def _append_retried(
        self, files: list[str], states: dict[str, str], result: LoadResult
    ) -> list[str]:
        """Append, in one commit, the files of the workflows the table holds no row of (their
        rows need no merge); retried on conflicts. Returns the files left to MERGE.

        delta-rs's writer keeps a Parquet writer open per partition until it commits (about
        1 MB each: 1.7 GB for a backfill of 1,390 days), so these files are the scratch
        lake's, copied as they are: memory stays flat however many days a backfill covers.
        Committed states are removed from ``states``.
        """
        if self.target.is_remote_only():
            return files  # pyarrow cannot write there: delta-rs's MERGE does it all
        policy = RetryPolicy(MAX_COMMIT_ATTEMPTS - 1, initial_wait_s=0.05, max_wait_s=2.0)
        copies: dict[str, _StagedCopy] = {}
        attempts = 0

        def attempt() -> list[str]:
            nonlocal attempts
            attempts += 1
            if attempts > 1 or self._table is None:
                self._table = self._create_or_open()
                self._check_table(self._table)
            else:  # opened before paging: which workflows are stored is asked of the latest
                with delta_errors(self.target.uri, "read"):
                    self._table.update_incremental()
            fresh, stored = self._split_new(self._table, files)
            if fresh:
                workflows = {_workflow_dir(self._staging.location.root, f) for f in fresh}
                with_states = _states_in(states, workflows, everything=not stored)
                self._append(self._table, fresh, with_states, copies)
                for flow in with_states:
                    states.pop(flow)
            return stored

        stored = policy.call(attempt)
        if len(stored) < len(files):
            added = [copies[f] for f in files if f not in stored]
            result.rows_inserted += sum(a.stats_rows for a in added)
            result.rows_written = result.rows_inserted + result.rows_updated
            result.files_written += len(added)
            assert self._table is not None
            result.table_version = int(self._table.version())
            self._history, self._history_complete = None, False
        return stored

    def _split_new(self, table: DeltaTable, files: list[str]) -> tuple[list[str], list[str]]:
        """The staged files of workflows absent from the table, and the others; all others
        when the staged rows bring a column the table lacks (MERGE evolves the schema)."""
        found = _arrow_schema(table)
        if any(name not in found.names for name in self._staging.schema.names):
            return [], files
        check_compatible(self._staging.schema, found, self.target.uri)
        with delta_errors(self.target.uri, "read the files of"):
            actions = table.get_add_actions(flatten=True)
        stored = {
            f"workflow_id={partition_value(flow)}"
            for flow in actions.column("partition.workflow_id").to_pylist()
        }
        root = self._staging.location.root
        # A flow id that needs percent-encoding in a path goes by MERGE: delta-rs names
        # its files (the transaction log names paths as URIs, readers decode them).
        appended = [
            "%" not in _workflow_dir(root, f) and _workflow_dir(root, f) not in stored
            for f in files
        ]
        fresh = [f for f, new in zip(files, appended, strict=True) if new]
        return fresh, [f for f, new in zip(files, appended, strict=True) if not new]

    def _append(
        self,
        table: DeltaTable,
        files: list[str],
        states: dict[str, str],
        copies: dict[str, _StagedCopy],
    ) -> None:
        """Copy the staged files into the table (once, whatever the attempts) and commit
        them. Each workflow the commit brings is claimed as an application transaction, so
        a concurrent commit of the same workflow conflicts (Delta's protocol checks it)."""
        module = deltalake()
        scratch, location = self._staging.location, resolve_location(self.target.uri)
        missing = [path for path in files if path not in copies]
        with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="eachlabs-copy") as pool:
            copied = pool.map(lambda path: _copied(scratch, path, location), missing)
            copies.update(zip(missing, copied, strict=True))
        logger.debug("copied %d staged files into %s", len(missing), self.target.uri)
        workflows = {_workflow_dir(scratch.root, f) for f in files}
        properties = module.CommitProperties(
            custom_metadata={STATES_KEY: json.dumps(states, sort_keys=True)},
            app_transactions=_claims(workflows),
        )
        with delta_errors(self.target.uri, "append to"), _conflicts(self.target.uri):
            table.create_write_transaction(
                [copies[path].action(module) for path in files],
                mode="append",
                schema=table.schema(),
                partition_by=list(PARTITIONS.names),
                commit_properties=properties,
            )
            table.update_incremental()

    def _merge_retried(self, files: list[str], states: dict[str, str], result: LoadResult) -> bool:
        """One MERGE, retried on conflicts; whether it committed (a no-op commits nothing)."""
        policy = RetryPolicy(MAX_COMMIT_ATTEMPTS - 1, initial_wait_s=0.05, max_wait_s=2.0)
        attempts = 0

        def attempt() -> dict[str, Any]:
            nonlocal attempts
            attempts += 1
            if attempts > 1 or self._table is None:
                self._table = self._create_or_open()
                self._check_table(self._table)
            return self._merge(self._table, files, states)

        metrics = policy.call(attempt)
        assert self._table is not None
        self._history, self._history_complete = None, False  # it has a new commit now
        result.rows_inserted += int(metrics["num_target_rows_inserted"])
        result.rows_updated += int(metrics["num_target_rows_updated"])
        result.rows_written = result.rows_inserted + result.rows_updated
        result.files_written += int(metrics["num_target_files_added"])
        result.table_version = int(self._table.version())
        logger.debug(
            "merged into %s at version %d (%d attempts): %s",
            self.target.uri,
            result.table_version,
            attempts,
            metrics,
        )
        return int(metrics["num_target_files_added"]) + int(metrics["num_target_files_removed"]) > 0

    def _create_or_open(self) -> DeltaTable:
        """The table, created (empty, partitioned, the contract's schema) if it is not there.

        Creating is not exclusive in delta-rs: two writers that both create it both succeed,
        one as a later version. No rows travel in the creation, so that is harmless: rows
        only ever arrive by MERGE, whose conflicts delta-rs detects.
        """
        if self.target.exists():
            return self.target.open()
        schema = pa.unify_schemas([self._staging.schema, PARTITIONS])
        with delta_errors(self.target.uri, "create"):
            table: DeltaTable = deltalake().DeltaTable.create(
                self.target.uri,
                schema,
                mode="ignore",
                partition_by=list(PARTITIONS.names),
                storage_options=self.target.options,
            )
        return table

    def _check_table(self, table: DeltaTable) -> None:
        """The table must be partitioned as this package writes it and hold compatible types."""
        found = _arrow_schema(table)
        partitions = list(table.metadata().partition_columns)
        if partitions != list(PARTITIONS.names):
            raise SchemaMismatchError(
                f"{self.target.uri}: the Delta table is partitioned by {partitions}, this "
                f"package writes {list(PARTITIONS.names)}; refusing to write (nothing was "
                "committed)"
            )
        for field_ in PARTITIONS:
            if found.field(field_.name).type != field_.type:
                raise SchemaMismatchError(
                    f"{self.target.uri}: column {field_.name!r} is "
                    f"{found.field(field_.name).type}, but this package writes {field_.type}; "
                    "refusing to write (nothing was committed)"
                )
        check_compatible(found, arrow_schema([]), self.target.uri)

    def _merge(self, table: DeltaTable, files: list[str], states: dict[str, str]) -> dict[str, Any]:
        found = _arrow_schema(table)
        data = pa.schema([f for f in found if f.name not in PARTITIONS.names])
        schema = union_schema(data, self._staging.schema)
        check_compatible(self._staging.schema, schema, self.target.uri)
        columns = schema.names
        known = set(found.names)
        workflows = {_workflow_dir(self._staging.location.root, f) for f in files}
        properties = deltalake().CommitProperties(
            custom_metadata={STATES_KEY: json.dumps(states, sort_keys=True)},
            app_transactions=_claims(workflows),
        )
        with delta_errors(self.target.uri, "merge into"), _conflicts(self.target.uri):
            merger = table.merge(
                _source(self._staging.location, files, schema),
                predicate=_match_predicate(
                    self._staging.location.root, files, self._undated_workflows(files)
                ),
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                streamed_exec=True,
                commit_properties=properties,
            )
            updates = {_quote(c): f"s.{_quote(c)}" for c in columns}
            # A row without created_at stays where it is stored (the hive lake's rule).
            updates["date"] = "CASE WHEN s.created_at IS NULL THEN t.date ELSE s.date END"
            return dict(
                merger.when_matched_update(updates, predicate=_newer_and_changed(columns, known))
                .when_not_matched_insert_all()
                .execute()
            )


@dataclass(frozen=True)
class _StagedCopy:
    """A scratch lake file copied into the table: what its add action says about it."""

    path: str  # relative to the table's root, as the transaction log names it
    size: int
    stats_rows: int
    null_counts: dict[str, int]
    partition_values: dict[str, str | None]

    def action(self, module: ModuleType) -> Any:
        # Row and null counts from the footer, exact; no min/max (optional in Delta). The
        # null counts let a MERGE skip the files without rows lacking created_at.
        stats = json.dumps({"numRecords": self.stats_rows, "nullCount": self.null_counts})
        return module.transaction.AddAction(
            self.path,  # URI-safe: the workflow's directory name needs no encoding
            self.size,
            self.partition_values,
            int(time.time() * 1000),
            True,
            stats,
        )


def _copied(scratch: Location, path: str, table: Location) -> _StagedCopy:
    workflow, date = path[len(scratch.root) + 1 :].split("/")[:2]
    relative = f"{workflow}/{date}/part-{uuid.uuid4()}.snappy.parquet"
    copied = copy_file(scratch, path, table, table.path(*relative.split("/")))
    values = {
        name: None if value == NULL_PARTITION else unquote(value)
        for name, value in (workflow.split("=", 1), date.split("=", 1))
    }
    return _StagedCopy(relative, copied.size, copied.rows, copied.null_counts, values)


def _workflow_dir(root: str, path: str) -> str:
    """``workflow_id=<encoded flow id>``: the staged file's workflow directory."""
    return path[len(root) + 1 :].split("/", 1)[0]


def _states_in(states: dict[str, str], workflows: set[str], *, everything: bool) -> dict[str, str]:
    """The states of these workflows' flows; ``everything``: all of them (the commit is the
    load's last, so the workflows without staged rows ride with it)."""
    if everything:
        return dict(states)
    return {f: s for f, s in states.items() if f"workflow_id={partition_value(f)}" in workflows}


def _claims(workflows: set[str]) -> list[Any]:
    """One application transaction per workflow a commit writes: two commits claiming the
    same one conflict, commits of other workflows do not."""
    version = time.time_ns() // 1000
    transaction = deltalake().transaction.Transaction
    return [transaction(f"{CLAIM_PREFIX}{w}", version) for w in sorted(workflows)]


def _partly_committed(exc: StorageError, appended: bool, result: LoadResult) -> StorageError:
    """A failed MERGE after the load's append committed: say that the new workflows are in."""
    if not appended:
        return exc
    return StorageError(
        f"{exc} (the workflows new to the table were committed before, at version "
        f"{result.table_version}: their rows and states are in, the merged ones' are not)",
        path=exc.path,
    )


@contextmanager
def _conflicts(uri: str) -> Iterator[None]:
    errors = deltalake().exceptions
    try:
        yield
    except errors.CommitFailedError as exc:
        logger.info("commit to %s conflicted with a concurrent writer; merging again", uri)
        raise CommitConflictError(
            f"commit to Delta table {uri} conflicted: {exc}", path=uri
        ) from None


def _source(scratch: Location, files: list[str], schema: pa.Schema) -> pa.RecordBatchReader:
    """The staged rows, streamed, with the table's partition columns computed (as the hive
    lake does: an empty flow_id is the null partition, like a missing one)."""
    when = pc.coalesce(pc.field("created_at"), pc.field("started_at"))
    flow = pc.field("flow_id")
    projection = {name: pc.field(name) for name in schema.names}
    projection["workflow_id"] = pc.if_else(flow == "", pa.scalar(None, pa.string()), flow)
    projection["date"] = when.cast(pa.date32())
    return stream_files(scratch, files, schema, projection)


def _match_predicate(root: str, files: list[str], searched_whole: set[str]) -> str:
    """Match by execution_id, among the partitions the staged rows can be in.

    Per workflow: the dates staged, plus the rows stored without created_at (undated, or
    dated by started_at: a row whose created_at became known moves out of there). A workflow
    in ``searched_whole`` (it has staged rows without created_at) is searched whole, as the
    hive lake does: such a row may be stored under any date already.
    """
    dates: dict[str, set[str]] = defaultdict(set)
    for path in files:
        workflow, date = path[len(root) + 1 :].split("/")[:2]
        dates[workflow].add(date.removeprefix("date="))
    where = []
    for workflow, days in sorted(dates.items()):
        encoded = workflow.removeprefix("workflow_id=")
        flow = (
            "t.workflow_id IS NULL"
            if encoded == NULL_PARTITION
            else f"t.workflow_id = {_literal(unquote(encoded))}"
        )
        if workflow in searched_whole or NULL_PARTITION in days:
            where.append(f"({flow})")
            continue
        listed = ", ".join(f"DATE '{day}'" for day in sorted(days))
        where.append(f"({flow} AND (t.created_at IS NULL OR t.date IN ({listed})))")
    return f"t.execution_id = s.execution_id AND ({' OR '.join(where)})"


def _newer_and_changed(columns: list[str], known: set[str]) -> str:
    """The new row wins on a later-or-equal ``updated_at`` (a stored row without one always
    loses), and only if it differs: an unchanged row is neither rewritten nor counted."""
    newer = "(t.updated_at IS NULL OR s.updated_at >= t.updated_at)"
    changed = [
        f"(s.{_quote(c)} IS DISTINCT FROM t.{_quote(c)})"
        if c in known
        else f"(s.{_quote(c)} IS NOT NULL)"
        for c in columns
    ]
    return f"{newer} AND ({' OR '.join(changed)})"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _arrow_schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def _states_of(commit: dict[str, Any]) -> dict[str, str]:
    text = commit.get(STATES_KEY)
    if not isinstance(text, str):
        return {}
    try:
        states = json.loads(text)
    except ValueError:
        return {}
    return (
        {str(k): v for k, v in states.items() if isinstance(v, str)}
        if isinstance(states, dict)
        else {}
    )


def _retention_hours(retention: timedelta | None) -> int | None:
    """Whole hours, rounded up (delta-rs counts hours): 30 minutes keeps an hour."""
    if retention is None:
        return None
    if not isinstance(retention, timedelta) or retention < timedelta(0):
        raise InvalidRequestError(f"retention must be a timedelta of 0 or more, got {retention!r}")
    return math.ceil(retention.total_seconds() / 3600)


def write_table(frame: pd.DataFrame, output: Any, *, filesystem: Any = None) -> LoadResult:
    """``write_executions(..., table_format="delta")``: a conformed frame in one commit."""
    writer = DeltaWriter(DeltaTarget.resolve(output, filesystem))
    try:
        writer.add(frame)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def read_table(
    output: Any, *, workflow_id: str | None = None, version: int | None = None
) -> pd.DataFrame:
    """The table (at ``version``, default the latest) in the DataFrame contract."""
    target = DeltaTarget.resolve(output)
    if not target.exists():
        raise StorageError(f"no Delta table at {target.uri!r}", path=target.uri)
    table = target.open(version)
    with delta_errors(target.uri, "read"):
        found = _arrow_schema(table)
        names = [f.name for f in found if f.name not in PARTITIONS.names]
        filter_ = None if workflow_id is None else pc.field("flow_id") == workflow_id
        data = table.to_pyarrow_dataset().to_table(columns=names, filter=filter_)
    return arrow_to_frame(data.cast(union_schema(pa.schema([found.field(n) for n in names]), None)))


@dataclass
class MaintenanceResult:
    """What ``maintain_table`` did: files compacted and removed, the version it left."""

    uri: str
    files_added: int = 0
    files_removed: int = 0
    files_vacuumed: int = 0
    version: int = 0


def maintain_table(
    output: Any,
    *,
    compact: bool = True,
    vacuum: bool = True,
    retention: timedelta | None = None,
) -> MaintenanceResult:
    """Compact each partition's small files into few, then delete unreferenced files.

    ``retention`` (default: the table's ``delta.deletedFileRetentionDuration``, 7 days)
    is how long replaced files are kept: time travel to a version older than that fails.
    Files of an aborted commit are unreferenced and go with the same rule.
    """
    target = DeltaTarget.resolve(output)
    if not target.exists():
        raise StorageError(f"no Delta table at {target.uri!r}", path=target.uri)
    table = target.open()
    result = MaintenanceResult(target.uri)
    with delta_errors(target.uri, "maintain"):
        if compact:
            metrics = table.optimize.compact()
            result.files_added = int(metrics.get("numFilesAdded", 0))
            result.files_removed = int(metrics.get("numFilesRemoved", 0))
        if vacuum:
            hours = _retention_hours(retention)
            removed = table.vacuum(  # an explicit retention is the caller's choice to make
                retention_hours=hours,
                dry_run=False,
                enforce_retention_duration=hours is None,
                full=True,  # also the files no commit ever referenced (a killed writer's)
            )
            result.files_vacuumed = len(removed)
        result.version = int(table.version())
    return result
