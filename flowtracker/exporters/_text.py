"""What the Sankey and Mermaid exporters share: a text destination and URL options.

A destination is a text stream (written synchronously, one ``write`` per
batch, like :class:`~flowtracker.ConsoleExporter`), a path (``~`` expanded,
checked when the exporter is made, appended to in a worker thread so the event
loop never waits on the disk, each batch whole or not at all, as the
:class:`~flowtracker.FileExporter` does: see
:mod:`flowtracker.exporters._append`), or ``None`` for whatever
``sys.stdout`` is at write time.

Example:
    >>> url_options("sankey:///tmp/flows.txt?tag=currency&tag=db.system&markers=1")
    ('/tmp/flows.txt', {'tags': ['currency', 'db.system'], 'markers': True})
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qsl, unquote, urlsplit

from .._wire.batch import BatchFailures
from ._append import AppendFile, WriteOnce, checked_path

if TYPE_CHECKING:
    from .._wire.record import Trace

_TRUE = {"1", "true", "yes", "on"}


class TextSink:
    """Appends text to a stream or a file (see the module docstring)."""

    def __init__(self, target: str | os.PathLike[str] | TextIO | None, owner: str = "TextSink") -> None:
        self.stream: TextIO | None = None
        self.path: Path | None = None
        self._file: AppendFile | None = None
        self._writes = WriteOnce()
        if isinstance(target, (str, os.PathLike)):
            self.path = checked_path(target, owner)
            self._file = AppendFile(self.path)
        else:
            self.stream = target

    async def write_traces(self, traces: Sequence[Trace], render: Callable[[Trace], str]) -> None:
        """Writes ``render`` of each trace in one write; a trace that fails to render costs only itself.

        Raises:
            PartialExportError: some traces failed to render (the rest were written).
        """
        traces = self._writes.unwritten(traces)
        failures = BatchFailures(len(traces))
        rendered = failures.each(traces, lambda trace: (trace, render(trace)))
        text = "".join(part for _, part in rendered)
        if text:
            if self._file is None:
                stream = self.stream if self.stream is not None else sys.stdout
                stream.write(text)
                stream.flush()
            else:
                written = [trace for trace, _ in rendered]
                await self._writes.run(written, self._file.append, text.encode("utf-8"))
        failures.raise_if_any()

    async def aclose(self) -> None:
        if self._file is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._file.close)
        else:
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
