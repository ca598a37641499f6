"""Appending whole batches to a file that other processes may append to as well.

What the :class:`~flowtracker.FileExporter` and the Sankey and Mermaid
exporters' file targets share:

* **A path checked when the exporter is made.** ``~`` is expanded; a missing
  folder, a folder that is a file, a path that is a folder, or a folder or file
  this process may not write raise at once, naming the path. Folders are not
  created: a typo in a path should fail, not grow a directory tree somewhere.
* **A batch is appended whole, or not at all.** Under an advisory lock
  (``fcntl.flock``, exclusive) on the open file, the exporter notes the file's
  size, writes the batch (finishing a short write), and, if the disk fills up
  or the write fails, truncates the file back to that size before it releases
  the lock. No partial line is ever left, so once space is back the file is
  still valid JSON Lines. Every flowtracker writer of the file (other trackers,
  other worker processes) takes the same lock, so the truncation never cuts
  another writer's lines.
* **Without flock** (Windows, or a file system that refuses the lock, such as
  some network mounts), the batch is still one ``O_APPEND`` write; after a
  failed write the file is truncated back only if its size shows that nobody
  else appended meanwhile, so another writer's lines are never cut, but a
  partial line may then remain.

A writer that does not take the lock (say, ``echo >> traces.jsonl``) is not
coordinated with: its lines are never cut by a repair only if it does not
write while a batch fails.

:class:`AppendFile`'s methods block: :class:`WriteOnce` runs them in the
loop's default executor (at interpreter exit, the tracker's prestarted pool)
and makes sure a batch is written once even when its export is cancelled
mid-write and retried.

Example:
    >>> import tempfile, pathlib
    >>> folder = tempfile.mkdtemp()
    >>> target = AppendFile(checked_path(pathlib.Path(folder) / "t.jsonl", "FileExporter"))
    >>> target.append(b'{"trace_id": "1"}\\n')
    >>> target.size
    18
    >>> target.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock (see the module docstring)
    fcntl = None  # type: ignore[assignment]

_T = TypeVar("_T")
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def checked_path(path: str | os.PathLike[str], owner: str) -> Path:
    """``path`` with ``~`` expanded, once it is known that a file can be written there.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: the folder is a file.
        IsADirectoryError: ``path`` is a folder.
        PermissionError: the folder (or the existing file) is not writable.

    Example:
        >>> checked_path("/no/such/folder/t.jsonl", "FileExporter")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        FileNotFoundError: FileExporter('/no/such/folder/t.jsonl'): the folder /no/such/folder does ...
    """
    given = os.fspath(path)
    target = Path(given).expanduser()
    folder = target.parent
    where = f"{owner}({given!r})"
    if target.is_dir():
        raise IsADirectoryError(f"{where}: {target} is a folder; name a file in it")
    if not folder.exists():
        raise FileNotFoundError(
            f"{where}: the folder {folder} does not exist; create it first (folders are not created)"
        )
    if not folder.is_dir():
        raise NotADirectoryError(f"{where}: {folder} is not a folder")
    if target.exists():
        if not os.access(target, os.W_OK):
            raise PermissionError(f"{where}: {target} is not writable by this process")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{where}: cannot create files in {folder}")
    return target


class AppendFile:
    """One file opened for appending; each :meth:`append` lands whole or not at all.

    Args:
        path: The file (created on first append).
        mode: Permission bits for a newly created file.
    """

    def __init__(self, path: Path, mode: int = 0o666) -> None:
        self.path = path
        self.mode = mode
        self.size = 0  #: the file's size after our last append
        self.identity: tuple[int, int] | None = None  #: (device, inode) of the open file
        self._fd: int | None = None
        # A cancelled caller may leave its worker thread writing; the next
        # batch waits for it here rather than writing beside it.
        self._busy = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def append(self, data: bytes) -> None:
        """Appends ``data`` whole, opening the file first if needed.

        Raises:
            OSError: nothing of ``data`` was kept (disk full, I/O error, ...);
                the file is closed and reopened by the next call.
        """
        with self._busy:
            if self._fd is None:
                self._open()
            fd = self._fd
            assert fd is not None
            locked = _lock(fd)
            try:
                before = os.fstat(fd).st_size
                written = 0
                view = memoryview(data)
                try:
                    while written < len(data):  # a short write is finished under the lock
                        count = os.write(fd, view[written:])
                        if count <= 0:
                            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                        written += count
                except OSError as error:
                    repaired = _truncate_back(fd, before, written, locked)
                    self._close()
                    left = "nothing of the batch was kept" if repaired else "a partial line may remain"
                    raise OSError(
                        error.errno,
                        f"{error.strerror or error}: appending {len(data)} bytes to {self.path} failed"
                        f" after {written}; {left}",
                    ) from error
                self.size = before + len(data)
            finally:
                if locked:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self) -> None:
        fd = os.open(self.path, _FLAGS, self.mode)
        info = os.fstat(fd)
        self._fd = fd
        self.size = info.st_size
        self.identity = (info.st_dev, info.st_ino)

    def moved(self) -> bool:
        """True when ``path`` no longer names the open file (rotated, deleted, replaced)."""
        try:
            info = os.stat(self.path)
        except OSError:
            return True
        return (info.st_dev, info.st_ino) != self.identity

    def close(self) -> None:
        """Closes the file (the next :meth:`append` opens ``path`` again)."""
        with self._busy:
            self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class WriteOnce:
    """Runs blocking writes in the default executor; a batch cancelled mid-write is not written again.

    A thread cannot be stopped: when the export awaiting it is cancelled (the
    loop shutting down, say), the write goes on. The cancellation then waits
    for it, and if it succeeded, the traces it wrote are left out when the
    tracker retries that batch, so no line is written twice.
    """

    def __init__(self) -> None:
        self._written: set[int] = set()

    def unwritten(self, traces: Sequence[_T]) -> Sequence[_T]:
        """``traces`` minus those a cancelled export already wrote."""
        written = self._written
        if not written:
            return traces
        self._written = set()
        return [trace for trace in traces if id(trace) not in written]

    async def run(self, traces: Sequence[object], write: Callable[[bytes], None], data: bytes) -> None:
        """``write(data)`` in a worker thread, for ``traces``."""
        future = asyncio.get_running_loop().run_in_executor(None, write, data)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            if not future.cancelled() and future.exception() is None:
                # The retry hands the same Trace objects back (still alive, so
                # their ids are theirs).
                self._written = {id(trace) for trace in traces}
            raise


def _lock(fd: int) -> bool:
    """Takes the exclusive advisory lock; False where flock is missing or refused."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # ENOLCK, EOPNOTSUPP: a file system without flock
        return False
    return True


def _truncate_back(fd: int, before: int, written: int, locked: bool) -> bool:
    """Cuts what a failed append left; True when the file is as it was before it."""
    if written == 0:
        return True
    try:
        if not locked and os.fstat(fd).st_size != before + written:
            return False  # someone else appended meanwhile: cutting could lose their lines
        os.ftruncate(fd, before)
    except OSError:
        return False
    return True
