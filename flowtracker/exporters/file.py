"""``FileExporter``: JSON Lines, each batch appended whole or not at all.

Each batch is appended as one block of complete lines in a worker thread
(the loop's default executor, so the event loop never waits on the disk),
under an advisory lock shared by every flowtracker writer of the file: several
trackers, threads or worker processes appending to one file never interleave
lines. When the disk fills up mid-write, what the batch had written is cut
back before the lock is released, so no partial line is left and the file is
valid JSON Lines again once there is space; the batch counts as failed. See
:mod:`flowtracker.exporters._append` for the details, and for systems without
``flock``.

The path is checked when the exporter is made: ``~`` is expanded, and a
missing folder (folders are not created), a folder in place of the file, or
a path this process may not write raises at once, naming the path.

If the file is moved or deleted behind its back (logrotate, an operator), the
exporter notices within ``reopen_interval`` seconds and starts a new file at
``path``; if that cannot be created (folder gone or unwritable, disk full),
batches fail and are counted until it can.

New files are created with mode ``0o600`` (owner read/write only): traces may
carry user data. Pass ``mode=`` to widen it.

Example:
    >>> import flowtracker as ft
    >>> exporter = ft.FileExporter("traces.jsonl", max_bytes=50_000_000, backup_count=3)
    >>> ft.FileExporter("~/traces.jsonl").path.is_absolute()
    True
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._wire.batch import BatchFailures
from ._append import AppendFile, WriteOnce, checked_path

if TYPE_CHECKING:
    from .._wire.record import Trace


class FileExporter:
    """Appends one JSON line per trace to ``path``.

    Args:
        path: The file; ``~`` is expanded; its folder must exist (checked here).
        max_bytes: Rotate before a write would make the file larger than this;
            0 (default) never rotates. Rotation renames ``path`` to ``path.1``
            (``path.1`` to ``path.2``, ...). Meant for one writer per file.
        backup_count: Rotated files kept. Default 5.
        mode: Permission bits for a newly created file. Default ``0o600``.
        reopen_interval: Seconds between checks that ``path`` is still the
            open file (one ``stat``). Default 1.0; ``None`` never checks.

    Raises:
        OSError: ``path`` cannot be written (see the module docstring); the
            message names it.
    """

    name = "file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 0,
        backup_count: int = 5,
        mode: int = 0o600,
        reopen_interval: float | None = 1.0,
    ) -> None:
        self.path = checked_path(path, type(self).__name__)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.mode = mode
        self.reopen_interval = reopen_interval
        self._file = AppendFile(self.path, mode)
        self._writes = WriteOnce()
        self._checked = 0.0

    async def export(self, traces: Sequence[Trace]) -> None:
        traces = self._writes.unwritten(traces)
        failures = BatchFailures(len(traces))
        lines = failures.each(traces, _line)
        if lines:
            data = b"".join(line for _, line in lines)
            await self._writes.run([trace for trace, _ in lines], self._append, data)
        failures.raise_if_any()

    def _append(self, data: bytes) -> None:
        """Rotates or reopens as needed, then appends (in a worker thread)."""
        file = self._file
        interval = self.reopen_interval
        if file.is_open and interval is not None and time.monotonic() - self._checked >= interval:
            self._checked = time.monotonic()
            if file.moved():
                file.close()
        if self.max_bytes and file.is_open and file.size + len(data) > self.max_bytes:
            file.close()
            self._rotate()
        if not file.is_open:
            self._checked = time.monotonic()
        file.append(data)

    def _rotate(self) -> None:
        path = self.path
        for index in range(self.backup_count - 1, 0, -1):
            older = path.with_name(f"{path.name}.{index}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
        if self.backup_count > 0:
            os.replace(path, path.with_name(f"{path.name}.1"))
        else:
            os.remove(path)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._file.close)


def _line(trace: Trace) -> tuple[Trace, bytes]:
    return trace, trace.to_json() + b"\n"
