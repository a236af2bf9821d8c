"""Where a dataset lives: paths and URIs resolved to a ``pyarrow.fs`` filesystem, checked
before any API request, read, and written so that readers never see a part of a file.

The only module that touches files: every ``OSError`` and pyarrow error of reading or
writing becomes a ``StorageError`` naming the path, here (pyarrow's filesystems and
datasets enter the package here).

Writing a file so that readers never see a part of it is ``staging``'s protocol, on the
paths resolved here.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import InvalidRequestError, StorageError

TMP_MARKER = ".tmp-"
"""In the name of a file not yet visible (``staging``): hidden, and removed if left over."""
SYNC_THREADS = 8
"""fsyncs in flight at once: a journaling file system commits concurrent ones together."""
FileSystem = pafs.FileSystem


@dataclass(frozen=True)
class Location:
    """A dataset root on a filesystem; ``uri`` is what the user gave (for messages).

    ``durable=False`` skips the fsyncs of a local disk: for scratch space that a crash may
    lose (a Delta load's staging area), never for a dataset.
    """

    filesystem: pafs.FileSystem
    root: str
    uri: str
    durable: bool = True

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])


@contextlib.contextmanager
def storage_errors(path: str, doing: str) -> Iterator[None]:
    """``OSError`` and pyarrow's errors as a ``StorageError`` naming ``path``."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
        corrupt = isinstance(exc, pa.ArrowInvalid)  # read, but not a valid file
        raise StorageError(f"cannot {doing} {path}: {reason}", path=path, corrupt=corrupt) from exc


def resolve_location(output: Any, filesystem: pafs.FileSystem | None = None) -> Location:
    """A local path, a ``file://``/``s3://``/``gs://``... URI, or a path on ``filesystem``.

    Credentials and endpoints come from the usual environment variables (``AWS_*``,
    ``GOOGLE_APPLICATION_CREDENTIALS``...) or from the explicit ``filesystem``.
    """
    if isinstance(output, os.PathLike):
        output = os.fspath(output)
    if not isinstance(output, str) or not output.strip():
        raise InvalidRequestError(f"output must be a path or URI, got {output!r}")
    if filesystem is not None:
        path = output.split("://", 1)[1] if "://" in output else output
        return Location(filesystem, path.rstrip("/") or path, output)
    if "://" not in output:
        return Location(pafs.LocalFileSystem(), os.path.abspath(output), output)
    try:
        fs, path = pafs.FileSystem.from_uri(output)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise InvalidRequestError(f"output {output!r}: unsupported URI ({exc})") from exc
    return Location(fs, path.rstrip("/") or path, output)


def check_writable(location: Location) -> None:
    """Fail early (before any API request) when the output cannot hold a dataset."""
    fs, root = location.filesystem, location.root
    with storage_errors(location.uri, "use output"):
        info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise StorageError(
            f"output {location.uri!r} is a file, not a dataset directory", path=location.uri
        )
    if location.is_local:
        _probe_local(location)
        return
    bucket = root.split("/", 1)[0]
    if not bucket:  # a path on some other filesystem (not an object store's bucket)
        with storage_errors(location.uri, "write to output"):
            fs.create_dir(root, recursive=True)
        return
    with storage_errors(location.uri, "use output"):
        bucket_info = fs.get_file_info(bucket)
    if bucket_info.type == pafs.FileType.NotFound:
        raise StorageError(
            f"output {location.uri!r}: bucket {bucket!r} does not exist", path=location.uri
        )


def _probe_local(location: Location) -> None:
    """Create the root and a probe file: the only check that also holds for root and ACLs."""
    probe = os.path.join(location.root, f".eachlabs-write-probe{TMP_MARKER}{uuid.uuid4().hex}")
    with storage_errors(location.uri, "write to output"):
        os.makedirs(location.root, exist_ok=True)
        with open(probe, "wb"):
            pass
        os.remove(probe)


def is_file(location: Location, path: str) -> bool:
    with storage_errors(path, "look at"):
        return bool(location.filesystem.get_file_info(path).type == pafs.FileType.File)


def is_directory(location: Location, path: str) -> bool:
    with storage_errors(path, "look at"):
        return bool(location.filesystem.get_file_info(path).type == pafs.FileType.Directory)


def read_bytes(location: Location, path: str) -> bytes | None:
    """A whole small file (None if there is none)."""
    if not is_file(location, path):
        return None
    with storage_errors(path, "read"), location.filesystem.open_input_stream(path) as handle:
        data: bytes = handle.read()
    return data


def read_table(
    location: Location,
    path: str,
    *,
    columns: list[str] | None = None,
    filters: Any = None,
) -> pa.Table | None:
    """A Parquet file (None if there is none); not Parquet is a ``StorageError``."""
    if not is_file(location, path):
        return None
    with storage_errors(path, "read Parquet file"), location.filesystem.open_input_file(path) as f:
        return pq.read_table(f, columns=columns, filters=filters)


def read_schema(location: Location, path: str) -> pa.Schema | None:
    """The Arrow schema of a Parquet (or ``_common_metadata``) file, None if there is none."""
    if not is_file(location, path):
        return None
    with storage_errors(path, "read the schema of"), location.filesystem.open_input_file(path) as f:
        return pq.read_schema(f)


def list_files(location: Location, directory: str, suffix: str) -> list[str]:
    """Visible files under ``directory`` (recursively) whose names end with ``suffix``."""
    selector = pafs.FileSelector(directory, recursive=True, allow_not_found=True)
    with storage_errors(directory, "list"):
        infos = location.filesystem.get_file_info(selector)
    return sorted(
        info.path
        for info in infos
        if info.type == pafs.FileType.File
        and info.base_name.endswith(suffix)
        and not info.base_name.startswith(".")
    )


def list_directories(location: Location, directory: str) -> set[str]:
    """The names of the directories directly in ``directory`` (none if it does not exist)."""
    selector = pafs.FileSelector(directory, recursive=False, allow_not_found=True)
    with storage_errors(directory, "list"):
        infos = location.filesystem.get_file_info(selector)
    return {info.base_name for info in infos if info.type == pafs.FileType.Directory}


MAX_FILES_PER_WRITE = 512
"""Partitions one ``write_partitioned`` call may write (callers split bigger sets): Arrow
keeps a file open for each, and beyond its limit it would close one and start a second
file in that partition."""


def write_partitioned(
    location: Location,
    table: pa.Table,
    keys: pa.Schema,
    basename: str,
    options: dict[str, Any],
    rows_per_group: int,
    *,
    what: str,
) -> list[str]:
    """Write ``table`` as one Parquet file per distinct value of its ``keys`` columns, in
    hive directories (``key=value/...`` under the root, values percent-encoded, a null one
    named ``__HIVE_DEFAULT_PARTITION__``), each named ``basename`` (``{i}``: a number),
    without the ``keys`` columns. Returns the paths written; ``what`` names them in errors.

    Arrow's dataset writer writes them in its own code, without the interpreter's lock, one
    file at a time and each in the table's row order.
    """
    written: list[str] = []
    file_format = pads.ParquetFileFormat()
    with storage_errors(what, "write"):
        pads.write_dataset(
            table,
            location.root,
            format=file_format,
            file_options=file_format.make_write_options(**options),
            partitioning=pads.HivePartitioning(keys),
            basename_template=basename,
            filesystem=location.filesystem,
            existing_data_behavior="overwrite_or_ignore",
            use_threads=False,  # keeps each file in the table's order
            max_partitions=MAX_FILES_PER_WRITE,
            max_open_files=MAX_FILES_PER_WRITE,
            max_rows_per_group=rows_per_group,
            file_visitor=lambda file: written.append(file.path),
        )
    return written


def read_hive(
    location: Location, schema: pa.Schema, partitions: pa.Schema, filter_: Any = None
) -> pa.Table:
    """A hive-partitioned Parquet dataset read whole (the columns of ``schema``)."""
    if not is_directory(location, location.root):
        raise StorageError(f"no dataset at {location.uri!r}", path=location.uri)
    with storage_errors(location.uri, "read the dataset"):
        dataset = pads.dataset(
            location.root,
            filesystem=location.filesystem,
            format="parquet",
            partitioning=pads.partitioning(partitions, flavor="hive"),
            schema=pa.unify_schemas([schema, partitions]),
        )
        return dataset.to_table(columns=schema.names, filter=filter_)


def scratch_location(root: str) -> Location:
    """A local directory for staging that no reader sees and a crash may lose (no fsync)."""
    return Location(pafs.LocalFileSystem(), root, root, durable=False)


def may_hold_nulls(location: Location, path: str, column: str) -> bool:
    """Whether a Parquet file's ``column`` may hold a null, from its footer's statistics
    (True when they do not say, or the column is absent)."""
    with storage_errors(path, "read the footer of"), location.filesystem.open_input_file(path) as f:
        footer = pq.read_metadata(f)
    index = footer.schema.to_arrow_schema().get_field_index(column)
    if index < 0:
        return True
    for group in range(footer.num_row_groups):
        stats = footer.row_group(group).column(index).statistics
        if stats is None or not stats.has_null_count or stats.null_count > 0:
            return True
    return False


@dataclass(frozen=True)
class CopiedFile:
    """A Parquet file copied as it is, and what its footer says."""

    size: int
    rows: int
    null_counts: dict[str, int]  # the columns whose every row group counts its nulls


def copy_file(source: Location, path: str, target: Location, destination: str) -> CopiedFile:
    """Copy a Parquet file as it is (no reader sees ``destination`` until a commit names
    it, so no temporary name): a hard link where both are on one local disk."""
    with storage_errors(destination, "write"):
        parent = destination.rsplit("/", 1)[0]
        target.filesystem.create_dir(parent, recursive=True)
        if not (source.is_local and target.is_local and _hard_link(path, destination)):
            pafs.copy_files(
                path,
                destination,
                source_filesystem=source.filesystem,
                destination_filesystem=target.filesystem,
            )
        size = target.filesystem.get_file_info(destination).size
    with storage_errors(path, "read the footer of"), source.filesystem.open_input_file(path) as f:
        footer = pq.read_metadata(f)
    return CopiedFile(int(size), int(footer.num_rows), _null_counts(footer))


def _hard_link(path: str, destination: str) -> bool:
    """Link ``destination`` to ``path``'s data; False where that cannot be (two disks)."""
    try:
        os.link(path, destination)
    except OSError:
        return False
    return True


def _null_counts(footer: pq.FileMetaData) -> dict[str, int]:
    counts: dict[str, int] = {}
    for index in range(footer.num_columns):
        name = footer.schema.column(index).path
        total = 0
        for group in range(footer.num_row_groups):
            stats = footer.row_group(group).column(index).statistics
            if stats is None or not stats.has_null_count:
                break
            total += stats.null_count
        else:
            counts[name] = total
    return counts


def stream_files(
    location: Location, paths: list[str], schema: pa.Schema, columns: dict[str, Any]
) -> pa.RecordBatchReader:
    """Parquet files read as one stream of ``schema`` (absent columns null), projected to
    ``columns`` (name -> expression): memory follows one batch, not the files."""
    with storage_errors(location.uri, "read the staged files of"):
        dataset = pads.dataset(
            paths, filesystem=location.filesystem, format="parquet", schema=schema
        )
        return dataset.scanner(columns=columns, batch_size=64 * 1024).to_reader()


def remove_stale_temporaries(location: Location, directory: str) -> None:
    """Delete ``.*.tmp-*`` leftovers of crashed writers in one directory."""
    try:
        infos = location.filesystem.get_file_info(
            pafs.FileSelector(directory, allow_not_found=True)
        )
    except OSError:
        return
    for info in infos:
        if (
            info.type == pafs.FileType.File
            and info.base_name.startswith(".")
            and TMP_MARKER in info.base_name
        ):
            remove_quietly(location, info.path)


def write_whole(location: Location, path: str, data: bytes) -> None:
    """Write ``path`` with ``data`` in one go (its directory created as needed)."""
    with storage_errors(path, "write"):
        if location.is_local:
            os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)
        else:
            with location.filesystem.open_output_stream(path) as stream:
                stream.write(data)


def replace_file(location: Location, source: str, path: str) -> None:
    """Make ``source`` the file ``path`` in one step: an atomic rename on a local disk, a
    server-side copy on object stores (an object appears whole or not at all)."""
    with storage_errors(path, "replace"):
        if location.is_local:
            os.replace(source, path)
        else:
            location.filesystem.copy_file(source, path)
            location.filesystem.delete_file(source)


def delete_file(location: Location, path: str) -> None:
    with storage_errors(path, "delete"):
        location.filesystem.delete_file(path)


def fsync_all(paths: Iterable[str]) -> None:
    """fsync local files and directories, several at a time (a failure names its path)."""
    paths = list(paths)
    if len(paths) <= 1:
        for path in paths:
            _fsync(path)
        return
    with ThreadPoolExecutor(min(SYNC_THREADS, len(paths))) as pool:
        for _ in pool.map(_fsync, paths):
            pass


def _fsync(path: str) -> None:
    """Make a file's data, or a directory's entries (POSIX), durable; a directory that
    cannot be opened or synced (some platforms) is skipped."""
    if os.path.isdir(path):
        with contextlib.suppress(OSError):
            _sync(path)
        return
    with storage_errors(path, "sync"):
        _sync(path)


def _sync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(location: Location, path: str) -> None:
    """Delete a file if it is there (a leftover: nothing depends on it)."""
    with contextlib.suppress(OSError):
        location.filesystem.delete_file(path)
