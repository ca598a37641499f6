"""``FileExporter``: JSON Lines through aiofiles, each trace written whole.

The file is opened in append mode without buffering, and each batch goes out
in one ``write`` call of complete lines: with ``O_APPEND`` the kernel places
each write at the end of the file atomically, so several trackers (threads or
processes) appending to one file never interleave lines.

If the file is moved or deleted behind its back (logrotate, an operator), the
exporter notices within ``reopen_interval`` seconds and starts a new file at
``path``; if that cannot be created (directory gone or unwritable, disk full),
batches fail and are counted until it can.

New files are created with mode ``0o600`` (owner read/write only): traces may
carry user data. Pass ``mode=`` to widen it.

Example:
    >>> import flowtracker as ft
    >>> exporter = ft.FileExporter("traces.jsonl", max_bytes=50_000_000, backup_count=3)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._wire.record import Trace


class FileExporter:
    """Appends one JSON line per trace to ``path``.

    Args:
        path: The file; its directory must exist.
        max_bytes: Rotate before a write would make the file larger than this;
            0 (default) never rotates. Rotation renames ``path`` to ``path.1``
            (``path.1`` to ``path.2``, ...). Meant for one writer per file.
        backup_count: Rotated files kept. Default 5.
        mode: Permission bits for a newly created file. Default ``0o600``.
        reopen_interval: Seconds between checks that ``path`` is still the
            open file (one ``stat``). Default 1.0; ``None`` never checks.
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
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.mode = mode
        self.reopen_interval = reopen_interval
        self._file: Any = None
        self._size = 0
        self._identity: tuple[int, int] | None = None
        self._checked = 0.0

    async def export(self, traces: Sequence[Trace]) -> None:
        data = b"".join(trace.to_json() + b"\n" for trace in traces)
        interval = self.reopen_interval
        if self._file is not None and interval is not None and time.monotonic() - self._checked >= interval:
            await self._close_if_moved()
        if self.max_bytes and self._file is not None and self._size + len(data) > self.max_bytes:
            await self._rotate()
        if self._file is None:
            await self._open()
        try:
            remaining = data
            written = await self._file.write(remaining)
            while written is not None and written < len(remaining):  # short write: finish it
                remaining = remaining[written:]
                written = await self._file.write(remaining)
        except OSError:
            await self._discard()  # reopen next time (disk full, file system gone, ...)
            raise
        self._size += len(data)

    async def _close_if_moved(self) -> None:
        import aiofiles.os

        self._checked = time.monotonic()
        try:
            info = await aiofiles.os.stat(self.path)
        except OSError:
            moved = True
        else:
            moved = (info.st_dev, info.st_ino) != self._identity
        if moved:
            await self._discard()

    async def _discard(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                await file.close()

    async def _open(self) -> None:
        import aiofiles
        import aiofiles.os

        mode = self.mode

        def opener(path: str, flags: int) -> int:
            return os.open(path, flags, mode)

        self._file = await aiofiles.open(self.path, "ab", buffering=0, opener=opener)
        info = await aiofiles.os.stat(self.path)
        self._size = info.st_size
        self._identity = (info.st_dev, info.st_ino)
        self._checked = time.monotonic()

    async def _rotate(self) -> None:
        import aiofiles.os

        await self._file.close()
        self._file = None
        for index in range(self.backup_count - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if await aiofiles.os.path.exists(older):
                await aiofiles.os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backup_count > 0:
            await aiofiles.os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            await aiofiles.os.remove(self.path)

    async def aclose(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            await file.close()
