"""Stalled time: how long each span of a finished trace waited while another span's code held the loop.

While one request's ``time.sleep(0.3)`` holds the loop, every concurrent
request's open spans grow by 300 ms. When a trace completes (its record is
built, see ``flowtracker._wire.completion``), :func:`stall` works out, from
the recent blocks of the watched loops (:attr:`BlockRecord.recent
<flowtracker.loop_monitor._blocks.BlockRecord.recent>`), which of its spans
waited through which block, and writes on each such span ``stalled_ns``
(``stalled_ms`` on the wire) and one ``event_loop.stalled`` event per block
naming the culprit, at most :data:`MAX_STALLED_EVENTS` (the longest; the
others are counted in ``stalled_dropped``). Nothing of it runs on the span
hot path: it is all done at completion, once per trace, and a trace that
overlaps no block costs a few comparisons.

A span waited through a block for the time the block overlaps its *own
waiting stretch*: its interval less its children's (so nothing is counted
twice up the tree: wall ≈ busy + children + other waiting + stalled). Not
stalled by a block:

* the guilty span and its ancestors (the block is their own subtree's time);
* a span that started or ended inside the block (it ran in it, not waited);
* a span of a trace that had no task on the blocked loop (another loop's, a
  worker thread's), and a span that ended in a worker thread (``off_loop``).

Where the block's times are the heartbeat's estimates (uvloop), a trace's
own spans on the loop narrow them for that trace: one that started after the
last heartbeat but before the watchdog first saw the blocker ran before it,
and one that ended after the watchdog last saw it ran after it.

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.loop_monitor._blocks import Block, BlockRecord
    >>> from flowtracker.testing import capture_traces
    >>> record = BlockRecord()
    >>> keep(record)
    >>> with capture_traces() as traces:
    ...     with ft.span("GET /report") as guilty:
    ...         pass
    ...     with ft.span("GET /users") as innocent:
    ...         start = innocent.start_ns
    ...         record.add(Block(start + 1_000_000, 300_000_000, guilty, "/srv/app.py:107 in render",
    ...                          frozenset({id(innocent)})), pinned=True)
    ...         innocent.end(end_ns=start + 400_000_000)
    >>> waited = traces[1]["spans"][0]
    >>> waited["stalled_ms"], waited["events"][0]["attributes"]["by_name"]
    (300.0, 'GET /report')
    >>> forget(record)
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from .._core import clock as _clock
from .._wire.completion import add_completion_hook
from .._wire.names import STALLED_EVENT
from ._blocks import BlockRecord, PastBlock, past_block

if TYPE_CHECKING:
    from .._core import Span

__all__ = ("MAX_STALLED_EVENTS", "MIN_STALL_NS", "forget", "keep", "stall")

#: ``event_loop.stalled`` events kept on one span: the longest stalls.
MAX_STALLED_EVENTS = 5
#: A span's overlap with a block shorter than this is not a stall (the edges of its children).
MIN_STALL_NS = 1_000_000
#: Block records kept for traces completing after their monitor stopped: the newest monitors'.
MAX_RECORDS = 16

# The block records of the monitors started, newest last. Appended under _lock,
# read (copied) from the threads that complete traces.
_records: deque[BlockRecord] = deque(maxlen=MAX_RECORDS)
_lock = threading.Lock()


def keep(record: BlockRecord) -> None:
    """Uses ``record``'s blocks for every trace that completes from now on (after its monitor stops too)."""
    with _lock:
        if record not in _records:
            _records.append(record)
    add_completion_hook(stall)


def forget(record: BlockRecord) -> None:
    """Stops using ``record`` (for tests and examples; monitors' records age out on their own)."""
    with _lock:
        if record in _records:
            _records.remove(record)


def stall(spans: list[Span]) -> None:
    """The completion hook: writes the stalled time of a finished trace's spans (see the module docstring).

    The one writer of ``SpanExtras.stalled_ns`` and ``SpanExtras.stalled_dropped``.
    """
    if not spans:
        return
    head = spans[0]
    first = head.start_ns  # spans are in start order
    if not first:
        return
    trace = id(head.root or head)  # a trace is known by its root (see _tasks.loop_traces)
    blocks = _blocks_during(trace, first)
    if not blocks:
        return
    now = _clock.now_ns()
    for span, stalls in _stalls_of(spans, trace, blocks, now):
        stalls.sort(key=lambda found: -found[0])
        extras = span.extras or span.ensure_extras()
        extras.stalled_ns = (extras.stalled_ns or 0) + sum(waited for waited, _, _ in stalls)
        if len(stalls) > MAX_STALLED_EVENTS:
            extras.stalled_dropped += len(stalls) - MAX_STALLED_EVENTS
        for waited, at, block in sorted(stalls[:MAX_STALLED_EVENTS], key=lambda found: found[1]):
            attributes = {"duration_ms": waited / 1e6, **block.culprit}
            span.record_event(STALLED_EVENT, attributes, at, after_end=True)


def _blocks_during(trace: int, first: int) -> list[PastBlock]:
    """The recent blocks that ended after ``first`` and that ``trace`` had a task waiting through."""
    found: dict[int, PastBlock] = {}
    for record in tuple(_records):
        pending = record.pending() if record.pending is not None else None  # before recent: see StallWatch
        if pending is not None:
            block = past_block(pending)
            if block.end_ns > first and trace in block.traces:
                found[block.start_ns] = block
        recent = record.recent
        if not recent or recent[-1].end_ns <= first:  # the common case: no block since the trace began
            continue
        for block in reversed(list(recent)):
            if block.end_ns <= first:
                break
            if trace in block.traces:
                found[block.start_ns] = block
    return list(found.values())


def _stalls_of(
    spans: list[Span], trace: int, blocks: list[PastBlock], now: int
) -> list[tuple[Span, list[tuple[int, int, PastBlock]]]]:
    """For each span that waited through some of ``blocks``: ``(waited ns, since, block)`` per block."""
    children: dict[Span, list[tuple[int, int]]] = {}
    loop_times: list[int] = []  # start and end of this trace's spans that ran on the loop
    for span in spans:
        end = span.end_ns if span.end_ns is not None else now
        parent = span.parent
        if parent is not None:
            children.setdefault(parent, []).append((span.start_ns, end))
        extras = span.extras
        if span.end_ns is not None and not (extras is not None and extras.off_loop):
            loop_times += (span.start_ns, span.end_ns)
    windows = [_window(block, trace, loop_times) for block in blocks]
    out: list[tuple[Span, list[tuple[int, int, PastBlock]]]] = []
    for span in spans:
        begin, ended = span.start_ns, span.end_ns
        extras = span.extras
        if ended is None or not span.recording or (extras is not None and extras.off_loop):
            continue
        stalls: list[tuple[int, int, PastBlock]] = []
        for block, (low, high) in zip(blocks, windows, strict=True):
            if block.guilty_trace == trace and span.span_id in block.guilty:
                continue  # the guilty span or an ancestor: the block is its subtree's own time
            if low < begin < high or low < ended < high:
                continue  # started or ended inside the block: it ran in it
            since, until = max(begin, low), min(ended, high)
            if until - since < MIN_STALL_NS:
                continue
            waited = until - since - _covered(children.get(span, ()), since, until)
            if waited >= MIN_STALL_NS:
                stalls.append((waited, since, block))
        if stalls:
            out.append((span, stalls))
    return out


def _window(block: PastBlock, trace: int, loop_times: list[int]) -> tuple[int, int]:
    """The block's start and end as far as ``trace`` can tell.

    Exact times (an asyncio loop's callback) are kept. Heartbeat estimates
    (uvloop) are narrowed by this trace's own times on the loop: nothing of
    another trace runs during the blocker, so a time after the estimated
    start but before the watchdog first saw the blocker is before it, and
    one after the watchdog last saw it but before the estimated end is after it.
    """
    low, high = block.start_ns, block.end_ns
    if block.seen is None or block.guilty_trace == trace:
        return low, high
    first_seen, last_seen = block.seen
    for time in loop_times:
        if low < time < first_seen:
            low = time
        elif last_seen < time < high:
            high = time
    return low, high


def _covered(intervals: list[tuple[int, int]] | tuple[()], since: int, until: int) -> int:
    """How much of ``[since, until]`` the union of ``intervals`` covers."""
    clipped = sorted((max(a, since), min(b, until)) for a, b in intervals if b > since and a < until)
    covered = 0
    reach = since
    for a, b in clipped:
        if b <= reach:
            continue
        covered += b - max(a, reach)
        reach = b
    return covered
