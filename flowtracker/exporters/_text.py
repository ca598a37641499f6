"""What the Sankey and Mermaid exporters share: a text destination and URL options.

A destination is a text stream (written synchronously, one ``write`` per
batch, like :class:`~flowtracker.ConsoleExporter`), a path (appended to
through aiofiles, so the event loop never waits on the disk; one ``write``
call per batch, so concurrent writers never interleave inside a batch), or
``None`` for whatever ``sys.stdout`` is at write time.

Example:
    >>> url_options("sankey:///tmp/flows.txt?tag=currency&tag=db.system&markers=1")
    ('/tmp/flows.txt', {'tags': ['currency', 'db.system'], 'markers': True})
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, unquote, urlsplit

_TRUE = {"1", "true", "yes", "on"}


class TextSink:
    """Appends text to a stream or a file (see the module docstring)."""

    def __init__(self, target: str | os.PathLike[str] | TextIO | None) -> None:
        self.stream: TextIO | None = None
        self.path: Path | None = None
        if isinstance(target, (str, os.PathLike)):
            self.path = Path(target)
        else:
            self.stream = target
        self._file: Any = None

    async def write(self, text: str) -> None:
        if not text:
            return
        if self.path is None:
            stream = self.stream if self.stream is not None else sys.stdout
            stream.write(text)
            stream.flush()
            return
        if self._file is None:
            import aiofiles

            self._file = await aiofiles.open(self.path, "ab", buffering=0)
        data = text.encode("utf-8")
        written = await self._file.write(data)
        while written is not None and written < len(data):  # a short write: finish it
            data = data[written:]
            written = await self._file.write(data)

    async def aclose(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            await file.close()
        elif self.path is None:
            stream = self.stream if self.stream is not None else sys.stdout
            with contextlib.suppress(ValueError, OSError):  # closed at interpreter exit
                stream.flush()


def url_options(url: str) -> tuple[str | None, dict[str, Any]]:
    """The path (``None``: stdout) and the options of a ``scheme:///path?k=v`` URL.

    ``tag`` (or ``tags``) may repeat and holds keys separated by ``;`` or
    ``,`` (``;`` or a repeated ``tag=`` inside ``FLOWTRACKER_EXPORTERS``, whose
    items are separated by commas); ``markers`` and ``all_tags`` are booleans
    (``1``/``true``/``yes``); other options stay text.
    """
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc and parts.netloc != "localhost":
        path = parts.netloc + path  # scheme://relative/path.txt
    if path in ("", "-", "stdout", "/stdout"):
        path = ""
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("tag", "tags"):
            options.setdefault("tags", []).extend(item for item in re.split(r"[,;]", value) if item)
        elif key in ("markers", "all_tags"):
            options[key] = value.lower() in _TRUE
        else:
            options[key] = value
    return path or None, options
