"""Where a dataset lives: resolving paths and URIs to a ``pyarrow.fs`` filesystem, checking
that it can be written before any API request, and replacing files atomically.

Imports only ``errors`` (and pyarrow). The commit protocol, for every filesystem: write the
whole file under a hidden temporary name beside its target, then make it visible in one step:
``os.replace`` (atomic rename, after fsync) on a local disk, a server-side copy on object
stores (an object appears whole or not at all). Readers never see a half-written file; a
crash leaves at most a hidden ``.*.tmp-*`` file, which no reader picks up and the next write
of that partition removes.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import InvalidRequestError

TMP_MARKER = ".tmp-"


@dataclass(frozen=True)
class Location:
    """A dataset root on a filesystem; ``uri`` is what the user gave (for messages)."""

    filesystem: pafs.FileSystem
    root: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])


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
    try:
        info = fs.get_file_info(root)
    except OSError as exc:
        raise InvalidRequestError(f"output {location.uri!r} is not accessible: {exc}") from exc
    if info.type == pafs.FileType.File:
        raise InvalidRequestError(f"output {location.uri!r} is a file, not a dataset directory")
    if location.is_local:
        _probe_local(location)
    else:
        bucket = root.split("/", 1)[0]
        try:
            bucket_info = fs.get_file_info(bucket)
        except OSError as exc:
            raise InvalidRequestError(f"output {location.uri!r}: {exc}") from exc
        if bucket_info.type == pafs.FileType.NotFound:
            raise InvalidRequestError(f"output {location.uri!r}: bucket {bucket!r} does not exist")


def _probe_local(location: Location) -> None:
    """Create the root and a probe file: the only check that also holds for root and ACLs."""
    probe = os.path.join(location.root, f".eachlabs-write-probe{TMP_MARKER}{uuid.uuid4().hex}")
    try:
        os.makedirs(location.root, exist_ok=True)
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise InvalidRequestError(
            f"output {location.uri!r} is not writable: {exc.strerror or exc}"
        ) from exc


def write_file_atomic(location: Location, path: str, write: Callable[[Any], None]) -> None:
    """Write ``path`` so that readers see the old file or the new one, never a part."""
    directory, name = path.rsplit("/", 1)
    tmp = f"{directory}/.{name}{TMP_MARKER}{uuid.uuid4().hex}"
    fs = location.filesystem
    if location.is_local:
        os.makedirs(directory, exist_ok=True)
        try:
            with open(tmp, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            _remove_quietly(location, tmp)
            raise
        _fsync_directory(directory)
        return
    try:
        with fs.open_output_stream(tmp) as stream:
            write(stream)
        fs.copy_file(tmp, path)
    finally:
        _remove_quietly(location, tmp)


def remove_stale_temporaries(location: Location, directory: str) -> None:
    """Delete ``.*.tmp-*`` leftovers of crashed writers in one partition directory."""
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
            _remove_quietly(location, info.path)


def _remove_quietly(location: Location, path: str) -> None:
    with contextlib.suppress(OSError):
        location.filesystem.delete_file(path)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
