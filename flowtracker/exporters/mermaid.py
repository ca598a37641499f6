"""``MermaidExporter``: each trace as a Mermaid flowchart, the Go library's format.

One fenced ```` ```mermaid ```` block per trace, ``graph TD`` (or ``LR``),
one edge per child span labelled with its duration::

    N<parent id>["<parent label>"] -->|<ms>ms| N<child id>["<child label>"]

Labels are quoted and escaped with Mermaid entity codes, so any span name
yields a valid diagram that shows the name as text (see
:func:`flowtracker.viz.mermaid_label`). Markdown files render the blocks on
GitHub and GitLab.

Configured by URL as ``mermaid:///path/flows.md`` (``mermaid://`` alone:
stdout), with options ``?direction=LR``, ``?tag=a&tag=b``, ``?all_tags=1``.

Example:
    >>> import io, flowtracker as ft
    >>> exporter = ft.MermaidExporter(io.StringIO(), direction="LR")
    >>> ft.MermaidExporter.from_url("mermaid:///tmp/flows.md?direction=LR").direction
    'LR'
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Literal, TextIO

from .._graph.mermaid import mermaid_text
from ._text import TextSink, url_options

if TYPE_CHECKING:
    from .._wire.record import Trace


class MermaidExporter:
    """Writes one Mermaid flowchart block per trace to a stream or file.

    Args:
        target: A text stream, a path (appended to), or ``None`` (default)
            for standard output.
        direction: ``"TD"`` (top-down, default) or ``"LR"``.
        include_tags: Tag keys appended to labels.
        all_tags: Append every tag, keys sorted.
    """

    name = "mermaid"

    def __init__(
        self,
        target: str | os.PathLike[str] | TextIO | None = None,
        *,
        direction: Literal["TD", "LR"] = "TD",
        include_tags: Collection[str] = (),
        all_tags: bool = False,
    ) -> None:
        if direction not in ("TD", "LR"):
            raise ValueError(f"direction must be 'TD' or 'LR', not {direction!r}")
        self.direction: Literal["TD", "LR"] = direction
        self.include_tags = tuple(include_tags)
        self.all_tags = all_tags
        self._sink = TextSink(target, type(self).__name__)

    @classmethod
    def from_url(cls, url: str) -> MermaidExporter:
        """The exporter for ``mermaid:///path.md?direction=LR&tag=a&tag=b&all_tags=1``.

        Raises:
            ValueError: for a direction other than ``TD`` or ``LR``.
        """
        path, options = url_options(url)
        direction = str(options.get("direction", "TD")).upper()
        if direction not in ("TD", "LR"):
            raise ValueError(f"mermaid exporter URL {url!r}: direction must be TD or LR")
        return cls(
            path,
            direction="LR" if direction == "LR" else "TD",
            include_tags=options.get("tags", ()),
            all_tags=options.get("all_tags", False),
        )

    async def export(self, traces: Sequence[Trace]) -> None:
        await self._sink.write_traces(traces, self._text)

    def _text(self, trace: Trace) -> str:
        """One trace's text (one trace at a time: an odd one costs only itself)."""
        return mermaid_text(
            [trace.to_dict()],
            direction=self.direction,
            include_tags=self.include_tags,
            all_tags=self.all_tags,
        )

    async def aclose(self) -> None:
        await self._sink.aclose()
