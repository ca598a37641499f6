"""One row of the fault table, and the verdict: nothing lost, nothing miscounted, no hang.

``lost`` is what no counter explains: of the requests answered 2xx (or the
traces made), those whose trace never arrived, minus every trace the
tracker counted as not delivered (dropped or failed). When no counter can be
read through the public API, nothing is explained and every missing trace
is lost: the user could not have known either.

Example:
    >>> from benchmarks.faults._count import Counted, Written
    >>> written = Written()
    >>> for number in range(9):
    ...     written.add_trace({"spans": [{"tags": {"req": number}}]})
    >>> row = judge("demo", sent=10, answered=set(range(10)), written=written,
    ...             counted=Counted(), shutdown_s=0.5)
    >>> row.lost, row.verdict
    (1, 'FAIL: lost 1')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .._harness import format_table
from ._count import Counted, Written

COLUMNS = (
    "scenario", "requests", "2xx", "written", "dropped", "lost", "dup", "corrupt", "shutdown s", "stats",
    "verdict",
)  # fmt: skip


@dataclasses.dataclass
class Row:
    """One scenario's outcome (see the module docstring for ``lost``).

    Attributes:
        scenario: Its name.
        sent: Requests sent, or traces made.
        answered: Of those, answered 2xx (traces made: all of them).
        written: Answered requests whose trace arrived.
        dropped: Traces counted as not delivered (``None``: no counters reachable).
        lost: Answered requests with no trace and no counter for it.
        duplicates: Trace records beyond the first per request.
        corrupt: Lines or bodies that do not parse.
        shutdown_s: Stop signal to exit (``None``: no stop, or it hung).
        stats: Where the counters came from (``exit``, ``shutdown``, ``snapshot``, ``n/a``).
        verdict: ``PASS``, ``FAIL: ...``, ``HUNG: ...`` or ``SKIP: ...``.
        notes: Details behind the verdict.
    """

    scenario: str
    sent: int = 0
    answered: int = 0
    written: int = 0
    dropped: int | None = None
    lost: int = 0
    duplicates: int = 0
    corrupt: int = 0
    shutdown_s: float | None = None
    stats: str = "n/a"
    verdict: str = "PASS"
    notes: list[str] = dataclasses.field(default_factory=list)

    def cells(self) -> list[Any]:
        return [
            self.scenario,
            self.sent,
            self.answered,
            self.written,
            "n/a" if self.dropped is None else self.dropped,
            self.lost,
            self.duplicates,
            self.corrupt,
            "-" if self.shutdown_s is None else f"{self.shutdown_s:.2f}",
            self.stats,
            self.verdict,
        ]

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"


def judge(
    scenario: str,
    *,
    sent: int,
    answered: set[int],
    written: Written,
    counted: Counted,
    shutdown_s: float | None,
    all_answered: bool = True,
    must_deliver: bool = True,
    one_record_each: bool = True,
    hung: str | None = None,
    problems: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> Row:
    """The row for one run, with its verdict.

    Args:
        scenario: Its name.
        sent: Requests sent (traces made).
        answered: Numbers answered 2xx (made).
        written: What arrived at the sink.
        counted: What the processes' side files said.
        shutdown_s: Stop signal to exit; None when none was measured.
        all_answered: Every request should have been answered (no signal under load).
        must_deliver: Every answered request's trace should arrive; when False,
            a trace counted as dropped or failed is allowed (a full disk, overload).
        one_record_each: Each request (made) is one trace record, so the tracker
            must count as many completed; False where the numbered things are
            spans of one long-lived trace, spread over its follow-ups.
        hung: Why the run was cut at its bound, if it was.
        problems: Failures found by the scenario itself.
        notes: Details to print under the table.
    """
    arrived = len(answered & written.numbers)
    missing = len(answered) - arrived
    explained = counted.not_delivered or 0
    row = Row(
        scenario,
        sent=sent,
        answered=len(answered),
        written=arrived,
        dropped=counted.not_delivered,
        lost=max(0, missing - explained),
        duplicates=written.duplicates,
        corrupt=written.corrupt,
        shutdown_s=shutdown_s,
        stats=counted.source,
        notes=list(notes),
    )
    found = list(problems)
    if row.lost:
        found.append(f"lost {row.lost}")
    elif must_deliver and missing:
        found.append(f"{missing} not delivered (counted)")
    if row.duplicates:
        found.append(f"{row.duplicates} duplicates")
    if row.corrupt:
        found.append(f"{row.corrupt} corrupt")
    if all_answered and len(answered) < sent:
        found.append(f"{sent - len(answered)} requests failed")
    found += miscounts(counted, written, one_record_each=one_record_each)
    extra = len(written.numbers - answered)
    if extra:
        row.notes.append(f"{extra} traces of requests in flight at the signal arrived too")
    if written.other:
        row.notes.append(f"{written.other} record(s) of no request (the span at import time)")
    if counted.completed is None:
        row.notes.append("no tracker counters reachable through the public API")
    elif not counted.final:
        row.notes.append("counters from a snapshot (at most 0.2 s old): no shutdown or exit report ran")
    if hung:
        row.verdict = f"HUNG: {hung}"
    elif found:
        row.verdict = "FAIL: " + "; ".join(found[:2])
    row.notes += [problem for problem in found[2:]]
    return row


def miscounts(counted: Counted, written: Written, *, one_record_each: bool = True) -> list[str]:
    """Where the final counters disagree with themselves or with what arrived."""
    if counted.completed is None or not counted.final:
        return []
    found = []
    unaccounted = counted.unaccounted()
    if unaccounted:
        found.append(f"stats off by {unaccounted} (completed vs exported+failed+dropped+queued)")
    if one_record_each and counted.completed != counted.handled:
        found.append(f"stats: completed {counted.completed} of {counted.handled} made")
    delivered = written.records - written.other
    if counted.exported != delivered:
        found.append(f"stats: exported {counted.exported}, arrived {delivered}")
    return found


def combine(scenario: str, rows: Sequence[Row]) -> Row:
    """One row for several boots of one scenario: counts summed, the worst verdict with its share.

    Example:
        >>> row = combine("x", [Row("x", sent=5, answered=5, written=5), Row("x", verdict="HUNG: no exit")])
        >>> row.sent, row.verdict
        (5, 'HUNG: 1 of 2 boots; no exit')
    """
    if len(rows) == 1:
        return rows[0]
    total = Row(scenario)
    for row in rows:
        total.sent += row.sent
        total.answered += row.answered
        total.written += row.written
        total.lost += row.lost
        total.duplicates += row.duplicates
        total.corrupt += row.corrupt
        if row.dropped is not None:
            total.dropped = (total.dropped or 0) + row.dropped
    shutdowns = [row.shutdown_s for row in rows if row.shutdown_s is not None]
    total.shutdown_s = max(shutdowns) if shutdowns else None
    total.stats = "/".join(sorted({row.stats for row in rows}))
    for kind in ("SKIP", "HUNG", "FAIL"):
        bad = [row for row in rows if row.verdict.startswith(kind)]
        if bad:
            total.verdict = f"{kind}: {len(bad)} of {len(rows)} boots; {bad[0].verdict.split(': ', 1)[1]}"
            break
    boots_of: dict[str, list[int]] = {}  # each note once, with the boots it came from
    for number, row in enumerate(rows, 1):
        for note in row.notes:
            boots_of.setdefault(note, []).append(number)
    for note, numbers in boots_of.items():
        which = "every boot" if len(numbers) == len(rows) else "boot " + ", ".join(map(str, numbers))
        total.notes.append(f"{which}: {note}")
    return total


def skipped(scenario: str, why: str) -> Row:
    """A scenario this machine cannot run (no tmpfs, a missing package)."""
    return Row(scenario, verdict=f"SKIP: {why}")


def table(rows: Sequence[Row], title: str) -> str:
    """The Markdown table, then each row's notes."""
    text = format_table(title, COLUMNS, [row.cells() for row in rows])
    notes = [f"* {row.scenario}: {note}" for row in rows for note in row.notes]
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    return text
