"""Traces as Chrome Trace Event JSON, for Perfetto (ui.perfetto.dev) and ``chrome://tracing``.

Each trace becomes one process (named after its root span and trace id);
each span a complete event (``"ph": "X"``) with its tags, status and ids in
``args``; each span event an instant event (``"ph": "i"``). Times are unix
microseconds.

Event-loop monitor data: a span's ``busy_ms`` is in its ``args``, and each
``event_loop.blocked`` event is an instant event at the time the block began,
in category ``event_loop``, with ``duration_ms`` and the ``stack`` in ``args``
(Perfetto lists it under the span's track; select it to read the stack).

Tracks: those viewers draw one track per thread and expect the slices on a
track to nest. Where a span says which thread or task it ran on (a tag
``thread.name``, ``thread.id``, ``task.name`` or ``asyncio.task``) it goes on
that track; otherwise a child stays on its parent's track unless it overlaps
a sibling there (concurrent tasks, ``gather``), in which case it gets a
track of its own, so concurrent work is drawn side by side, never misnested.

Example:
    >>> trace = {"trace_id": "t1", "spans": [{"span_id": "a", "name": "GET /",
    ...     "start_time": "2026-11-20T10:00:00Z", "duration_ms": 2.0}]}
    >>> event = chrome_trace([trace])["traceEvents"][-1]
    >>> event["ph"], event["name"], event["ts"], event["dur"]
    ('X', 'GET /', 1795168800000000, 2000.0)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

from .._graph.model import TraceDict, TraceTree, span_status, tags_of, time_us, trace_id_of
from ._loop import BLOCKED_EVENT, busy_ms

#: Tags that name the thread or task a span ran on, first match wins.
TRACK_TAGS = ("thread.name", "thread.id", "task.name", "asyncio.task")


def chrome_trace(traces: Iterable[TraceDict]) -> dict[str, Any]:
    """The Trace Event JSON object (``{"traceEvents": [...], ...}``) for ``traces``."""
    events: list[dict[str, Any]] = []
    for pid, trace in enumerate(traces, 1):
        events.extend(_trace_events(trace, pid))
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"generator": "flowtracker"}}


def _trace_events(trace: TraceDict, pid: int) -> list[dict[str, Any]]:
    tree = TraceTree(trace)
    spans = tree.spans
    trace_id = trace_id_of(trace)
    root = tree.name(tree.roots[0]) if tree.roots else "trace"
    service = trace.get("service")
    title = f"{root} · {trace_id[:8]}" + (f" · {service}" if isinstance(service, str) else "")
    out: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": title}},
        {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}},
    ]
    tracks = _tracks(tree)
    names: dict[int, str] = {}
    for track, label in tracks.values():
        names.setdefault(track, label)
    for track, label in sorted(names.items()):
        out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": track, "args": {"name": label}})
    depth_of = dict(tree.preorder())
    for index in sorted(range(len(spans)), key=lambda i: (tree.starts[i], depth_of[i])):
        span = spans[index]
        tid = tracks[index][0]
        args: dict[str, Any] = {"span_id": span.get("span_id"), "status": span_status(span)}
        if span.get("parent_id") is not None:
            args["parent_id"] = span.get("parent_id")
        for key in ("kind", "error"):
            if span.get(key) is not None:
                args[key] = span[key]
        busy = busy_ms(span)
        if busy is not None:
            args["busy_ms"] = busy
        args.update(tags_of(span))
        out.append(
            {
                "ph": "X",
                "name": tree.name(index),
                "cat": str(span.get("kind") or "span"),
                "ts": tree.starts[index],
                "dur": round(tree.duration(index) * 1000.0, 3),
                "pid": pid,
                "tid": tid,
                "args": args,
            }
        )
        for event in span.get("events") or ():
            if isinstance(event, Mapping):
                out.append(_instant(event, pid, tid, tree.starts[index]))
    return out


def _instant(event: Mapping[str, Any], pid: int, tid: int, fallback: int) -> dict[str, Any]:
    at = time_us(event.get("time"))
    name = event.get("name")
    attributes = event.get("attributes")
    instant: dict[str, Any] = {
        "ph": "i",
        "s": "t",
        "name": name if isinstance(name, str) else str(name),
        "ts": fallback if at is None else at,
        "pid": pid,
        "tid": tid,
        "args": dict(attributes) if isinstance(attributes, Mapping) else {},
    }
    if name == BLOCKED_EVENT:
        instant["cat"] = "event_loop"  # so a viewer can filter or colour the blocks
    return instant


def _tracks(tree: TraceTree) -> dict[int, tuple[int, str]]:
    """Track id and track name per span position (see the module docstring)."""
    spans = tree.spans
    parents = tree.parent_of()
    starts = tree.starts
    ends = [start + round(tree.duration(i) * 1000.0) for i, start in enumerate(starts)]
    # Parents are placed before their children: order by start, but never before the
    # parent's (malformed input can have a child start first).
    order_key: dict[int, tuple[int, int]] = {}
    for index, depth in tree.preorder():
        parent = parents[index]
        earliest = starts[index] if parent < 0 else max(starts[index], order_key[parent][0])
        order_key[index] = (earliest, depth)
    named: dict[str, int] = {}
    open_on: dict[int, list[int]] = {}  # track -> spans still open on it, outermost first
    free: list[tuple[int, int]] = []  # heap of (time the track's outermost span ends, track)
    out: dict[int, tuple[int, str]] = {}
    next_track = 1
    for index in sorted(range(len(spans)), key=order_key.__getitem__):
        start = starts[index]
        known = _track_tag(spans[index])
        if known is not None:
            if known not in named:
                named[known] = next_track
                open_on[next_track] = []
                next_track += 1
            out[index] = (named[known], known)
            open_on[named[known]].append(index)
            continue
        parent = parents[index]
        if parent >= 0:
            track = out[parent][0]
            stack = open_on[track]
            while stack and ends[stack[-1]] <= start and stack[-1] != parent:
                stack.pop()
            if stack and stack[-1] == parent and starts[parent] <= start and ends[index] <= ends[parent]:
                out[index] = (track, out[parent][1])
                stack.append(index)
                continue
        if free and free[0][0] <= start:
            track = heapq.heappop(free)[1]
        else:
            track = next_track
            next_track += 1
        open_on[track] = [index]
        heapq.heappush(free, (ends[index], track))
        out[index] = (track, "main" if track == 1 else f"task {track}")
    return out


def _track_tag(span: Mapping[str, Any]) -> str | None:
    tags = tags_of(span)
    for key in TRACK_TAGS:
        value = tags.get(key)
        if value is not None and value != "":
            return f"{key.split('.')[0]} {value}"
    return None
