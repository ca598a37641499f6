"""Counting what arrived: JSON Lines files, webhook and OTLP/JSON bodies, side files.

Every trace the suite causes carries its number as the tag ``req`` on its
root span, so arrivals are matched to requests one by one; a record without
one (the span made at import time) is counted apart. Where the numbered
things are the children of one long-lived root (``Written(by_span=True)``),
every span tagged ``req`` counts, follow-up records included.

Example:
    >>> written = Written()
    >>> written.add_trace({"trace_id": "a", "spans": [{"tags": {"req": 3}}]})
    >>> written.add_trace({"trace_id": "b", "spans": [{"tags": {"req": 3}}]})
    >>> written.numbers, written.duplicates
    ({3}, 1)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: A side file is final when written after the tracker closed (see ``_report``).
FINAL = ("shutdown", "exit")


@dataclasses.dataclass
class Written:
    """What a sink received.

    Attributes:
        by_span: Count every span tagged ``req`` (the children of one root), in
            every record; else one number per record, follow-ups excluded.
        records: Valid trace records (duplicates included).
        corrupt: Lines or bodies that are not valid trace JSON.
        by_number: Request number to the records (``by_span``: spans) carrying it.
        other: Records with no request number (say, the import-time span).
        follow_ups: Records marked ``follow_up``.
        unfinished: Records with spans exported ``unfinished``.
    """

    by_span: bool = False
    records: int = 0
    corrupt: int = 0
    by_number: Counter[int] = dataclasses.field(default_factory=Counter)
    other: int = 0
    follow_ups: int = 0
    unfinished: int = 0

    @property
    def numbers(self) -> set[int]:
        """The request numbers that arrived at least once."""
        return set(self.by_number)

    @property
    def duplicates(self) -> int:
        """Records beyond the first for one request."""
        return sum(count - 1 for count in self.by_number.values())

    def add_trace(self, trace: Any) -> None:
        """Counts one flowtracker trace record (the wire format)."""
        if not isinstance(trace, dict) or not isinstance(trace.get("spans"), list):
            self.corrupt += 1
            return
        self.records += 1
        if trace.get("unfinished_spans"):
            self.unfinished += 1
        if trace.get("follow_up"):
            self.follow_ups += 1
            if not self.by_span:
                return  # late spans of a trace already counted
        if self.by_span:
            for span in trace["spans"]:
                tags = span.get("tags") if isinstance(span, dict) else None
                if isinstance(tags, dict) and isinstance(tags.get("req"), int):
                    self.by_number[tags["req"]] += 1
            return
        for span in trace["spans"]:
            tags = span.get("tags") if isinstance(span, dict) else None
            if isinstance(tags, dict) and isinstance(tags.get("req"), int):
                self.by_number[tags["req"]] += 1
                return
        self.other += 1

    def add_json_lines(self, data: bytes) -> None:
        """Counts a JSON Lines file's content; a line that does not parse is corrupt."""
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                self.add_trace(json.loads(line))
            except ValueError:
                self.corrupt += 1

    def add_webhook_body(self, body: bytes) -> None:
        """Counts one webhook POST: a JSON array of traces."""
        try:
            traces = json.loads(body)
        except ValueError:
            self.corrupt += 1
            return
        for trace in traces if isinstance(traces, list) else [traces]:
            self.add_trace(trace)

    def add_otlp_json_body(self, body: bytes) -> None:
        """Counts one OTLP/JSON ``ExportTraceServiceRequest``: each root span is a trace."""
        try:
            request = json.loads(body)
            spans = [
                span
                for resource in request["resourceSpans"]
                for scope in resource["scopeSpans"]
                for span in scope["spans"]
            ]
        except (ValueError, KeyError, TypeError):
            self.corrupt += 1
            return
        for span in spans:
            if span.get("parentSpanId"):
                continue
            self.records += 1
            number = _otlp_int_attribute(span, "req")
            if number is None:
                self.other += 1
            else:
                self.by_number[number] += 1


def _otlp_int_attribute(span: dict[str, Any], key: str) -> int | None:
    for attribute in span.get("attributes", ()):
        if attribute.get("key") == key:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                return int(attribute["value"]["intValue"])  # OTLP/JSON writes int64 as a string
    return None


def read_json_lines(path: Path, *, by_span: bool = False) -> Written:
    """The traces in a JSON Lines file (none when it does not exist)."""
    written = Written(by_span=by_span)
    if path.exists():
        written.add_json_lines(path.read_bytes())
    return written


@dataclasses.dataclass
class Counted:
    """What the processes under test said, summed over their side files.

    Attributes:
        processes: Side files found.
        handled: Requests handled (or traces made).
        when: How each side file was last written: ``shutdown``, ``exit`` or ``snapshot``.
        completed: ``traces_completed``; ``None`` when no process reported a tracker.
        exported, failed, dropped, queued: Summed over every exporter lane.
        follow_ups: ``traces_follow_up``.
        peak_rss_mb: The largest peak RSS of one process.
    """

    processes: int = 0
    handled: int = 0
    when: list[str] = dataclasses.field(default_factory=list)
    completed: int | None = None
    exported: int = 0
    failed: int = 0
    dropped: int = 0
    queued: int = 0
    follow_ups: int = 0
    peak_rss_mb: float = 0.0

    @property
    def final(self) -> bool:
        """Every process reported after its tracker closed."""
        return bool(self.when) and all(when in FINAL for when in self.when)

    @property
    def not_delivered(self) -> int | None:
        """Traces the tracker counted as not delivered (dropped or failed); None: no counters."""
        return None if self.completed is None else self.dropped + self.failed

    @property
    def source(self) -> str:
        """How the counters were obtained, for the table: ``exit``, ``snapshot``, ``n/a``..."""
        if self.completed is None:
            return "n/a"
        return "+".join(sorted(set(self.when)))

    def unaccounted(self) -> int | None:
        """``completed - (exported + failed + dropped + queued)``: 0 when the stats add up."""
        if self.completed is None:
            return None
        return self.completed - (self.exported + self.failed + self.dropped + self.queued)

    def add(self, report: dict[str, Any]) -> None:
        """Adds one side file's content."""
        self.processes += 1
        self.handled += int(report.get("handled", 0))
        self.when.append(str(report.get("when")))
        self.peak_rss_mb = max(self.peak_rss_mb, float(report.get("peak_rss_mb") or 0.0))
        stats = report.get("stats")
        if not stats:
            return
        self.completed = (self.completed or 0) + int(stats["completed"])
        self.follow_ups += int(stats.get("follow_up", 0))
        for lane in stats["lanes"].values():
            self.exported += lane["exported"]
            self.failed += lane["failed"]
            self.dropped += lane["dropped"]
            self.queued += lane["queued"]


def read_side_files(folder: Path) -> Counted:
    """Sums every ``stats-<pid>.json`` in ``folder``."""
    counted = Counted()
    for path in sorted(folder.glob("stats-*.json")):
        with contextlib.suppress(OSError, ValueError):
            counted.add(json.loads(path.read_text()))
    return counted


def matched(answered: Iterable[int], written: Written) -> int:
    """How many of the ``answered`` requests have their trace in ``written``."""
    return len(set(answered) & written.numbers)
