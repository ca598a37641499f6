"""``SankeyExporter``: each trace as SankeyMATIC flows, the Go library's format.

One line per non-root span, ``<parent label> [<duration_ms>] <child label>``,
where a label is the span name, optionally followed by `` (k:v, k2:v2)`` for
selected tags; a parent that is not in the trace is ``Unknown``. Paste the
output into https://sankeymatic.com/build/ (spans with the same label merge
into one node, as intended). Labels are escaped so any span name parses as
itself (see :func:`flowtracker.viz.sankeymatic_label`). With ``markers``,
each trace is framed by ``START SANKEY DATA`` / ``END SANKEY DATA`` lines,
written as SankeyMATIC comments.

Configured by URL as ``sankey:///path/flows.txt`` (``sankey://`` alone:
stdout), with options ``?tag=currency&tag=db.system`` (or
``?tags=currency;db.system``), ``?all_tags=1``, ``?markers=1``.

Example:
    >>> import io, flowtracker as ft
    >>> exporter = ft.SankeyExporter(io.StringIO(), include_tags=["currency"])
    >>> ft.SankeyExporter.from_url("sankey:///tmp/flows.txt?markers=1").markers
    True
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, TextIO

from .._graph.sankey import sankeymatic_text
from ._text import TextSink, url_options

if TYPE_CHECKING:
    from .._wire.record import Trace


class SankeyExporter:
    """Writes SankeyMATIC flow lines per trace to a stream or file.

    Args:
        target: A text stream, a path (appended to), or ``None`` (default)
            for standard output.
        include_tags: Tag keys appended to labels (Go's ``IncludeTags``).
        all_tags: Append every tag, keys sorted (Go's ``IncludeAllTags``).
        markers: Frame each trace with START/END comment lines. Default off.
    """

    name = "sankey"

    def __init__(
        self,
        target: str | os.PathLike[str] | TextIO | None = None,
        *,
        include_tags: Collection[str] = (),
        all_tags: bool = False,
        markers: bool = False,
    ) -> None:
        self.include_tags = tuple(include_tags)
        self.all_tags = all_tags
        self.markers = markers
        self._sink = TextSink(target, type(self).__name__)

    @classmethod
    def from_url(cls, url: str) -> SankeyExporter:
        """The exporter for ``sankey:///path.txt?tag=a&tag=b&all_tags=1&markers=1``.

        Example:
            >>> SankeyExporter.from_url("sankey:///tmp/flows.txt?tags=currency").include_tags
            ('currency',)
        """
        path, options = url_options(url)
        return cls(
            path,
            include_tags=options.get("tags", ()),
            all_tags=options.get("all_tags", False),
            markers=options.get("markers", False),
        )

    async def export(self, traces: Sequence[Trace]) -> None:
        await self._sink.write_traces(traces, self._text)

    def _text(self, trace: Trace) -> str:
        """One trace's text (one trace at a time: an odd one costs only itself)."""
        return sankeymatic_text(
            [trace.to_dict()],
            aggregate=False,
            include_tags=self.include_tags,
            all_tags=self.all_tags,
            markers=self.markers,
        )

    async def aclose(self) -> None:
        await self._sink.aclose()
