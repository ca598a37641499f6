"""Immutable snapshots of a tracker's counters (``Tracker.stats``).

Modelled on anyio's ``MemoryObjectStreamStatistics``: a documented
``NamedTuple`` taken at one moment, safe to keep, compare and log.

Every completed trace is accounted for, per exporter::

    traces_completed == exported + failed + dropped + queued

where ``queued`` is what is still waiting in that exporter's lane (zero after
``flush()`` or ``aclose()``).

Example:
    >>> import flowtracker as ft
    >>> stats = ft.Tracker(exporters=[ft.MemoryExporter()]).stats
    >>> stats.traces_completed, dict(stats.exporters)["memory"].exported
    (0, 0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple


class ExporterStats(NamedTuple):
    """Counters of one exporter lane.

    Attributes:
        exported: Traces the exporter accepted (``export()`` returned).
        failed: Traces in batches whose ``export()`` raised or timed out, or
            the ones it reported failed with ``PartialExportError``.
        dropped: Traces never handed to the exporter: its lane was full, or
            the tracker was closed or not running when they completed.
        queued: Traces waiting in the lane right now.
    """

    exported: int
    failed: int
    dropped: int
    queued: int


class TrackerStats(NamedTuple):
    """A snapshot of a tracker's counters.

    Attributes:
        traces_completed: Trace records emitted (follow-up records included),
            after tail sampling.
        traces_dropped: Records that at least one exporter lane could not take
            (lane full, tracker closed).
        spans_dropped: Spans not recorded because their trace reached
            ``max_spans_per_trace``.
        tags_dropped: Tags not kept (``max_tags_per_span``).
        events_dropped: Events not kept (``max_events_per_span``).
        traces_sampled_out: Finished traces that the tail sampler discarded.
        traces_unfinished: Records emitted with spans still open (trace-age
            limit reached, or open at shutdown).
        traces_follow_up: Follow-up records among ``traces_completed``: spans
            that started after their trace was emitted (a fire-and-forget
            child, children of a long-lived root past ``max_trace_age``).
        tags_redacted: Tag values replaced by ``[REDACTED]`` at export.
        values_truncated: Strings cut at ``max_value_length`` at export.
        exporters: Exporter name to :class:`ExporterStats`.
        config_error: ``None``, or why the tracker ignored its exporter
            configuration and fell back to the console exporter
            (``Tracker(on_config_error="fallback")``, as the default tracker
            and the middlewares' own trackers do).
    """

    traces_completed: int
    traces_dropped: int
    spans_dropped: int
    tags_dropped: int
    events_dropped: int
    traces_sampled_out: int
    traces_unfinished: int
    tags_redacted: int
    values_truncated: int
    exporters: Mapping[str, ExporterStats]
    config_error: str | None = None
    traces_follow_up: int = 0
