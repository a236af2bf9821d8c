"""New files written whole under hidden names, then made visible together: no reader ever
sees a part of a file, and a failed or interrupted load leaves the old files as they were.

The protocol, for every filesystem of ``storage``: write the whole file under a hidden
temporary name beside its target, then make it visible in one step: ``os.replace`` (an
atomic rename) on a local disk, a server-side copy on object stores (an object appears
whole or not at all). ``StagedFiles`` holds a load's new files that way until every one of
them is written, then makes them visible (``commit``) or removes them (``abort``).

The durability work is batched, never skipped: every file is written and fsynced (with
``background``, on worker threads while the load goes on; else all together at the
commit, several at a time, so the disk commits them together), then all are renamed, then
their directories are fsynced. Each file is on disk before its name points to it. A crash
before the commit leaves only hidden ``.*.tmp-*`` files, which no reader picks up and the
next write of that directory removes; one during the commit leaves some files new and the
others old, each whole.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from .errors import StorageError
from .storage import TMP_MARKER, Location, remove_quietly, storage_errors

WRITE_THREADS = 2
"""Files written at once with ``background`` (encoding Parquet mostly releases the GIL)."""
MAX_PENDING_WRITES = 64
"""Files handed to the writers and not yet written: what they hold in memory is bounded."""
SYNC_THREADS = 8
"""fsyncs in flight at once: a journaling file system commits concurrent ones together."""

Write = Callable[[Any], None]
"""Writes a file's whole content to the binary stream it is given."""


class StagedFiles:
    """New versions of files, written whole under hidden names until ``commit``.

    ``current(path)`` is where a reader of this load finds the newest version of ``path``
    (its staged file, None if it is to be deleted, else the file itself). ``commit`` makes
    the files visible one at a time: first those marked ``loses_rows=False``, then those that
    lose rows to another file, then the deletions, so a failure or a crash part way can show
    a moved row twice (until the next load), never lose it. With ``background``, files are
    written (and fsynced) on worker threads; a failure is raised by the next call.
    """

    def __init__(self, location: Location, *, background: bool = False) -> None:
        self.location = location
        self._staged: dict[str, str] = {}  # path -> its new version, not yet visible
        self._losing: set[str] = set()
        self._deleted: set[str] = set()
        self._pending: dict[str, Future[None]] = {}
        self._pool = ThreadPoolExecutor(WRITE_THREADS, "eachlabs-write") if background else None

        self._room = threading.Semaphore(MAX_PENDING_WRITES)
        self._failures: list[Future[None]] = []
        token = uuid.uuid4().hex
        self._names = (f"{token}-{n}" for n in itertools.count())

    def __len__(self) -> int:
        return len(self._staged) + len(self._deleted)

    @property
    def durable(self) -> bool:
        return self.location.is_local and self.location.durable

    def current(self, path: str) -> str | None:
        if path in self._deleted:
            return None
        self._settle(path)
        return self._staged.get(path, path)

    def paths(self) -> list[str]:
        """The paths with a new version staged (deletions apart)."""
        return list(self._staged)

    def write(self, path: str, write: Write, *, loses_rows: bool = False) -> None:
        """Stage the new version of ``path``, written whole (now, or on a worker thread)."""
        self._raise_failures()
        self._settle(path)  # an earlier version of this path is finished before it goes
        directory, name = path.rsplit("/", 1)
        tmp = f"{directory}/.{name}{TMP_MARKER}{next(self._names)}"
        if self._pool is None:
            self._write(path, tmp, write)
        else:
            self._room.acquire()
            future = self._pool.submit(self._write, path, tmp, write)
            future.add_done_callback(self._written)
            self._pending[path] = future
        old = self._staged.get(path)
        if old is not None:
            remove_quietly(self.location, old)
        self._staged[path] = tmp  # a path staged again keeps its place in the order
        self._deleted.discard(path)
        if loses_rows:
            self._losing.add(path)

    def delete(self, path: str) -> None:
        """Remove ``path`` at commit, after every new version is visible."""
        self._settle(path)
        old = self._staged.pop(path, None)
        if old is not None:
            remove_quietly(self.location, old)
        self._losing.discard(path)
        self._deleted.add(path)

    def commit(self, on_commit: Callable[[str], None] | None = None) -> None:
        """Make every staged file visible (one atomic step each), then the deletions."""
        self._settle_all()
        if self.durable:  # on disk before any name points to them
            fsync_all(self._staged.values())
        order = [p for p in self._staged if p not in self._losing]
        order += [p for p in self._staged if p in self._losing]
        directories = set()
        for path in order:
            self._publish(path, self._staged[path])
            del self._staged[path]
            directories.add(path.rsplit("/", 1)[0])
            if on_commit is not None:
                on_commit(path)
        for path in sorted(self._deleted):
            with storage_errors(path, "delete"):
                self.location.filesystem.delete_file(path)
            directories.add(path.rsplit("/", 1)[0])
        self._deleted.clear()
        self._losing.clear()
        if self.durable:
            fsync_all(sorted(directories))  # the renames themselves
        self._close_pool()

    def abort(self) -> None:
        """Remove every staged file not yet visible."""
        with contextlib.suppress(StorageError):
            self._settle_all()
        for tmp in self._staged.values():
            remove_quietly(self.location, tmp)
        self._staged.clear()
        self._losing.clear()
        self._deleted.clear()
        self._close_pool()

    def _publish(self, path: str, tmp: str) -> None:
        with storage_errors(path, "replace"):
            if self.location.is_local:
                os.replace(tmp, path)
            else:
                self.location.filesystem.copy_file(tmp, path)
                self.location.filesystem.delete_file(tmp)

    def _write(self, path: str, tmp: str, write: Write) -> None:
        """Write ``tmp`` whole, in one go (``tmp`` is removed if that fails).

        The content is produced in memory first: a Parquet writer makes many small writes,
        and each one into a Python file would take the interpreter's lock again.
        """
        buffer = pa.BufferOutputStream()
        write(buffer)
        data = buffer.getvalue()
        try:
            with storage_errors(path, "write"):
                if self.location.is_local:
                    os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                    with open(tmp, "wb") as handle:
                        handle.write(data)
                else:
                    with self.location.filesystem.open_output_stream(tmp) as stream:
                        stream.write(data)
        except BaseException:
            remove_quietly(self.location, tmp)
            raise

    def _settle(self, path: str) -> None:
        """Wait for the write of ``path`` in progress, if any (raising its failure)."""
        future = self._pending.pop(path, None)
        if future is not None:
            future.result()

    def _settle_all(self) -> None:
        """Wait for every write in progress; the first failure is raised once all ended."""
        failure: BaseException | None = None
        for path in list(self._pending):
            try:
                self._settle(path)
            except BaseException as exc:  # kept, raised once the others have ended
                failure = failure or exc
        if failure is not None:
            raise failure

    def _written(self, future: Future[None]) -> None:
        """A write ended (on its worker thread): room for the next; a failure is noted."""
        if future.exception() is not None:
            self._failures.append(future)
        self._room.release()

    def _raise_failures(self) -> None:
        """A write that failed on a worker thread fails the next call at once."""
        if self._failures:
            self._failures[0].result()

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def write_file_atomic(location: Location, path: str, write: Write) -> None:
    """Write ``path`` so that readers see the old file or the new one, never a part."""
    staged = StagedFiles(location)
    try:
        staged.write(path, write)
        staged.commit()
    finally:
        staged.abort()


def fsync_all(paths: Iterable[str]) -> None:
    """fsync files and directories, several at a time (a failure names its path)."""
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
