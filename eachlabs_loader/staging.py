"""New files written whole under hidden names, then made visible together: no reader ever
sees a part of a file, and a failed or interrupted load leaves the old files as they were.

The protocol, for every filesystem of ``storage``: write the whole file under a hidden
temporary name beside its target, then make it visible in one step: ``os.replace`` (an
atomic rename) on a local disk, a server-side copy on object stores (an object appears
whole or not at all). ``StagedFiles`` holds a load's new files that way until every one of
them is written, then makes them visible (``commit``) or removes them (``abort``).

The durability work is batched, never skipped: all files are written, then all fsynced
(several at a time, so the disk commits them together), then all renamed, then their
directories fsynced. Each file is on disk before its name points to it. A crash before the
commit leaves only hidden ``.*.tmp-*`` files, which no reader picks up and the next write of
that directory removes; one during the commit leaves some files new and the others old,
each whole.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from .storage import (
    TMP_MARKER,
    Location,
    delete_file,
    fsync_all,
    remove_quietly,
    replace_file,
    write_whole,
)

Write = Callable[[Any], None]
"""Writes a file's whole content to the binary stream it is given."""


class StagedFiles:
    """New versions of files, written whole under hidden names until ``commit``.

    ``current(path)`` is where a reader of this load finds the newest version of ``path``
    (its staged file, None if it is to be deleted, else the file itself). ``commit`` makes
    the files visible one at a time: first those marked ``loses_rows=False``, then those that
    lose rows to another file, then the deletions, so a failure or a crash part way can show
    a moved row twice (until the next load), never lose it.
    """

    def __init__(self, location: Location) -> None:
        self.location = location
        self._staged: dict[str, str] = {}  # path -> its new version, not yet visible
        self._losing: set[str] = set()
        self._deleted: set[str] = set()
        token = uuid.uuid4().hex
        self._names = (f"{token}-{n}" for n in itertools.count())

    def __len__(self) -> int:
        return len(self._staged) + len(self._deleted)

    def current(self, path: str) -> str | None:
        return None if path in self._deleted else self._staged.get(path, path)

    def paths(self) -> list[str]:
        """The paths with a new version staged (deletions apart)."""
        return list(self._staged)

    def temporary(self, name: str) -> str:
        """A hidden name, unique to this load, for a new version of the file ``name``."""
        return f".{name}{TMP_MARKER}{next(self._names)}"

    def write(self, path: str, write: Write, *, loses_rows: bool = False) -> None:
        """Write the new version of ``path`` whole and stage it (see ``adopt``)."""
        directory, name = path.rsplit("/", 1)
        tmp = f"{directory}/{self.temporary(name)}"
        buffer = pa.BufferOutputStream()  # the content first, then one write of it
        write(buffer)
        try:
            write_whole(self.location, tmp, buffer.getvalue().to_pybytes())
        except BaseException:
            remove_quietly(self.location, tmp)
            raise
        self.adopt(path, tmp, loses_rows=loses_rows)

    def adopt(self, path: str, tmp: str, *, loses_rows: bool = False) -> None:
        """Stage ``tmp``, written whole beside ``path`` under a name from ``temporary``, as
        the new version of ``path`` (replacing any version staged before)."""
        old = self._staged.get(path)
        if old is not None and old != tmp:
            remove_quietly(self.location, old)
        self._staged[path] = tmp  # a path staged again keeps its place in the order
        self._deleted.discard(path)
        if loses_rows:
            self._losing.add(path)

    def delete(self, path: str) -> None:
        """Remove ``path`` at commit, after every new version is visible."""
        old = self._staged.pop(path, None)
        if old is not None:
            remove_quietly(self.location, old)
        self._losing.discard(path)
        self._deleted.add(path)

    def commit(self, on_commit: Callable[[str], None] | None = None) -> None:
        """Make every staged file visible (one atomic step each), then the deletions."""
        if self.durable:  # on disk before any name points to them
            fsync_all(self._staged.values())
        order = [p for p in self._staged if p not in self._losing]
        order += [p for p in self._staged if p in self._losing]
        directories = set()
        for path in order:
            replace_file(self.location, self._staged[path], path)
            del self._staged[path]
            directories.add(path.rsplit("/", 1)[0])
            if on_commit is not None:
                on_commit(path)
        for path in sorted(self._deleted):
            delete_file(self.location, path)
            directories.add(path.rsplit("/", 1)[0])
        self._deleted.clear()
        self._losing.clear()
        if self.durable:
            fsync_all(sorted(directories))  # the renames themselves

    @property
    def durable(self) -> bool:
        """Is this a local disk whose files must survive a power loss (not scratch space)?"""
        return self.location.is_local and self.location.durable

    def abort(self) -> None:
        """Remove every staged file not yet visible."""
        for tmp in self._staged.values():
            remove_quietly(self.location, tmp)
        self._staged.clear()
        self._losing.clear()
        self._deleted.clear()


def write_file_atomic(location: Location, path: str, write: Write) -> None:
    """Write ``path`` so that readers see the old file or the new one, never a part."""
    staged = StagedFiles(location)
    try:
        staged.write(path, write)
        staged.commit()
    finally:
        staged.abort()
