"""``FileExporter``: JSON Lines through aiofiles, each trace written whole.

The file is opened in append mode without buffering, and each batch goes out
in one ``write`` call of complete lines: with ``O_APPEND`` the kernel places
each write at the end of the file atomically, so several trackers (threads or
processes) appending to one file never interleave lines.

New files are created with mode ``0o600`` (owner read/write only): traces may
carry user data. Pass ``mode=`` to widen it.

Example:
    >>> import flowtracker as ft
    >>> exporter = ft.FileExporter("traces.jsonl", max_bytes=50_000_000, backup_count=3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._trace import Trace


class FileExporter:
    """Appends one JSON line per trace to ``path``.

    Args:
        path: The file; its directory must exist.
        max_bytes: Rotate before a write would make the file larger than this;
            0 (default) never rotates. Rotation renames ``path`` to ``path.1``
            (``path.1`` to ``path.2``, ...). Meant for one writer per file.
        backup_count: Rotated files kept. Default 5.
        mode: Permission bits for a newly created file. Default ``0o600``.
    """

    name = "file"

    def __init__(
        self, path: str | os.PathLike[str], *, max_bytes: int = 0, backup_count: int = 5, mode: int = 0o600
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.mode = mode
        self._file: Any = None
        self._size = 0

    async def export(self, traces: Sequence[Trace]) -> None:
        data = b"".join(trace.to_json() + b"\n" for trace in traces)
        if self.max_bytes and self._file is not None and self._size + len(data) > self.max_bytes:
            await self._rotate()
        if self._file is None:
            await self._open()
        written = await self._file.write(data)
        while written is not None and written < len(data):  # short write: finish it
            data = data[written:]
            written = await self._file.write(data)
        self._size += len(data)

    async def _open(self) -> None:
        import aiofiles
        import aiofiles.os

        mode = self.mode

        def opener(path: str, flags: int) -> int:
            return os.open(path, flags, mode)

        self._file = await aiofiles.open(self.path, "ab", buffering=0, opener=opener)
        self._size = (await aiofiles.os.stat(self.path)).st_size

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
