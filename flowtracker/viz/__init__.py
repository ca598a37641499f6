"""Views of traces as pure functions over wire-format trace dicts.

The same views the ``flowtracker`` command draws, for scripts and notebooks:
the execution tree as text, Sankey flows (and SankeyMATIC text), Mermaid
flowcharts, Chrome Trace Event JSON (Perfetto), per-name statistics, and the
offline HTML report. Input helpers read JSON Lines files and raw logs with
``FLOW_LOG:`` lines (gzip too). Nothing here recurses: a trace nested 10,000
spans deep works everywhere.

Traces recorded while an event-loop monitor ran (``busy_ms`` on spans,
``event_loop.blocked`` events) show each span's own time on the loop and mark
the spans that blocked it, with the offending frame, in every view; traces
without them look exactly as before.

Example:
    >>> from flowtracker import viz
    >>> trace = {"trace_id": "4bf9", "spans": [
    ...     {"span_id": "a", "name": "GET /", "duration_ms": 200.0},
    ...     {"span_id": "b", "parent_id": "a", "name": "db", "duration_ms": 50.0}]}
    >>> print(viz.tree_text(trace, header=False))
    GET /  200.0 ms
    └─ db  50.0 ms  25%
    >>> viz.sankey_links([trace])
    [{'source': 'GET /', 'target': 'db', 'value': 50.0, 'count': 1}]
"""

from __future__ import annotations

from .._graph.mermaid import mermaid_label as mermaid_label
from .._graph.mermaid import mermaid_text as mermaid_text
from .._graph.model import TraceTree as TraceTree
from .._graph.model import format_ms as format_ms
from .._graph.sankey import SankeyLink as SankeyLink
from .._graph.sankey import sankey_graph as sankey_graph
from .._graph.sankey import sankey_links as sankey_links
from .._graph.sankey import sankeymatic_label as sankeymatic_label
from .._graph.sankey import sankeymatic_text as sankeymatic_text
from .._graph.sankey import span_label as span_label
from ._chrome import chrome_trace as chrome_trace
from ._read import InputError as InputError
from ._read import ReadResult as ReadResult
from ._read import is_trace as is_trace
from ._read import merge_traces as merge_traces
from ._read import parse_line as parse_line
from ._read import read_traces as read_traces
from ._report import render_report as render_report
from ._report import report_data as report_data
from ._report import report_page as report_page
from ._stats import SpanStats as SpanStats
from ._stats import span_stats as span_stats
from ._stats import stats_table as stats_table
from ._tree import tree_text as tree_text

__all__ = (
    "InputError",
    "ReadResult",
    "SankeyLink",
    "SpanStats",
    "TraceTree",
    "chrome_trace",
    "format_ms",
    "is_trace",
    "merge_traces",
    "mermaid_label",
    "mermaid_text",
    "parse_line",
    "read_traces",
    "render_report",
    "report_data",
    "report_page",
    "sankey_graph",
    "sankey_links",
    "sankeymatic_label",
    "sankeymatic_text",
    "span_label",
    "span_stats",
    "stats_table",
    "tree_text",
)
