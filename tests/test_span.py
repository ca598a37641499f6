"""The span API: span(), start_span(), Span, add_tag/add_event, status."""

from __future__ import annotations

import ast
import asyncio
import gc
from pathlib import Path

import anyio
import pytest
from doubles import ReportingSink

import flowtracker as ft
from flowtracker._core import (
    STATUS_ERROR,
    SpanExtras,
    activate,
    clock,
    deactivate,
    start_child,
    start_root_span,
    suppressed,
)
from flowtracker.testing import FakeClock, capture_traces, sequential_ids

PACKAGE = Path(ft.__file__).resolve().parent


def spans_by_name(trace: dict) -> dict:
    return {s["name"]: s for s in trace["spans"]}


class TestSpanContextManagers:
    async def test_async_with_yields_span_and_nests(self, tracker, memory):
        """`async with span()` yields the Span, which is current inside and a parent to spans within."""
        async with ft.span("root", region="eu") as root:
            assert ft.current_span() is root
            async with ft.span("child") as child:
                assert ft.current_span() is child
            assert ft.current_span() is root
        assert ft.current_span() is None
        await tracker.flush()
        (trace,) = memory.traces
        by_name = spans_by_name(trace)
        assert by_name["child"]["parent_id"] == by_name["root"]["span_id"]
        assert "parent_id" not in by_name["root"]
        assert by_name["root"]["tags"] == {"region": "eu"}
        assert trace["service"] == "test"

    async def test_plain_with_works_in_async_code(self, tracker, memory):
        """Plain `with span()` works too and links the same way."""
        with ft.span("root"), ft.span("child"):
            pass
        await tracker.flush()
        by_name = spans_by_name(memory.traces[0])
        assert by_name["child"]["parent_id"] == by_name["root"]["span_id"]

    def test_sync_program_without_loop(self):
        """A sync program with no event loop at all gets its trace exported."""
        with capture_traces() as traces, ft.span("sync-root"), ft.span("sync-child"):
            pass
        assert [s["name"] for s in traces[0]["spans"]] == ["sync-root", "sync-child"]

    async def test_every_keyword_is_a_tag_even_kind(self, tracker, memory):
        """No option shadows a tag: `kind`, `name`-like keywords are tags."""
        async with ft.span("x", kind="db", status="weird", tracker="t"):
            pass
        await tracker.flush()
        assert memory.traces[0]["spans"][0]["tags"] == {"kind": "db", "status": "weird", "tracker": "t"}
        assert memory.traces[0]["spans"][0]["status"] == "ok"


class TestStartSpan:
    async def test_start_span_is_child_but_not_current(self, tracker, memory):
        """start_span() links to the current span without becoming current; finish() ends it."""
        async with ft.span("root") as root:
            manual = ft.start_span("manual", step=1)
            assert ft.current_span() is root
            manual.set_tag("rows", 3)
            manual.finish()
            manual.finish()  # idempotent
        await tracker.flush()
        by_name = spans_by_name(memory.traces[0])
        assert by_name["manual"]["parent_id"] == by_name["root"]["span_id"]
        assert by_name["manual"]["tags"] == {"step": 1, "rows": 3}

    async def test_started_span_as_context_manager(self, tracker, memory):
        """A started span entered with `with` becomes current and is not started twice."""
        manual = ft.start_span("manual")
        start = manual.start_ns
        with manual:
            assert ft.current_span() is manual
            with ft.span("inner"):
                pass
        assert manual.start_ns == start
        await tracker.flush()
        by_name = spans_by_name(memory.traces[0])
        assert by_name["inner"]["parent_id"] == by_name["manual"]["span_id"]


class TestTagsAndEvents:
    async def test_add_tag_and_event_on_current_span(self, tracker, memory):
        """add_tag/add_event tag the current span; events carry time and attributes."""
        async with ft.span("root"):
            ft.add_tag("db.query", "SELECT 1")
            ft.add_event("cache miss", key="u:1")
        await tracker.flush()
        root = memory.traces[0]["spans"][0]
        assert root["tags"] == {"db.query": "SELECT 1"}
        (event,) = root["events"]
        assert event["name"] == "cache miss"
        assert event["attributes"] == {"key": "u:1"}
        assert root["start_time"] <= event["time"] <= root["end_time"]

    def test_helpers_are_noops_without_span(self):
        """Outside any span add_tag/add_event do nothing and current_* return None."""
        ft.add_tag("k", "v")
        ft.add_event("e")
        assert ft.current_span() is None
        assert ft.current_trace_id() is None

    async def test_tags_after_finish_are_ignored(self, tracker, memory):
        """A tag set on an ended span is ignored: the exported trace is what ended."""
        async with ft.span("root") as root:
            pass
        root.set_tag("late", True)
        root.add_event("late")
        await tracker.flush()
        assert "tags" not in memory.traces[0]["spans"][0]
        assert "events" not in memory.traces[0]["spans"][0]

    async def test_current_trace_id_matches_export(self, tracker, memory):
        """current_trace_id() is the 32-hex id the trace is exported under."""
        async with ft.span("root") as root:
            trace_id = ft.current_trace_id()
            assert root.trace_id == trace_id
        await tracker.flush()
        assert memory.traces[0]["trace_id"] == trace_id
        assert len(trace_id) == 32
        assert int(trace_id, 16) != 0


class TestStatus:
    async def test_error_status_and_exception_propagates_unchanged(self, tracker, memory):
        """An exception marks the span error with type and message and propagates as is."""
        error = ValueError("bad input")
        with pytest.raises(ValueError, match="bad input") as caught:
            async with ft.span("root"):
                raise error
        assert caught.value is error
        await tracker.flush()
        root = memory.traces[0]["spans"][0]
        assert root["status"] == "error"
        assert root["error"] == {"type": "ValueError", "message": "bad input"}

    async def test_asyncio_cancellation_is_cancelled_not_error(self, tracker, memory):
        """Task cancellation gives status cancelled, without an error object."""
        started = asyncio.Event()

        async def work():
            async with ft.span("work"):
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(work())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await tracker.flush()
        span = memory.traces[0]["spans"][0]
        assert span["status"] == "cancelled"
        assert "error" not in span

    async def test_anyio_cancellation_is_cancelled(self, tracker, memory):
        """anyio cancel scopes (move_on_after) also give status cancelled."""
        with anyio.move_on_after(0.01):
            async with ft.span("slow"):
                await anyio.sleep(10)
        await tracker.flush()
        assert memory.traces[0]["spans"][0]["status"] == "cancelled"


class TestDeterministicTraces:
    def test_whole_trace_literally(self):
        """With sequential ids and a fake clock a whole trace can be asserted literally."""
        clock = FakeClock("2026-11-20T10:00:00Z", step_ms=0)
        with capture_traces(ids=sequential_ids(), clock=clock, service="orders") as traces:
            with ft.span("GET /api/data") as root:
                clock.advance(500)
                with ft.span("FetchFromDB") as child:
                    ft.add_tag("db.query", "SELECT...")
                    clock.advance(500)
            assert root.span_id == 2
            assert child.span_id == 3
        assert traces == [
            {
                "trace_id": "00000000000000000000000000000001",
                "service": "orders",
                "spans": [
                    {
                        "span_id": "0000000000000002",
                        "name": "GET /api/data",
                        "start_time": "2026-11-20T10:00:00.000000Z",
                        "end_time": "2026-11-20T10:00:01.000000Z",
                        "duration_ms": 1000.0,
                        "status": "ok",
                    },
                    {
                        "span_id": "0000000000000003",
                        "parent_id": "0000000000000002",
                        "name": "FetchFromDB",
                        "start_time": "2026-11-20T10:00:00.500000Z",
                        "end_time": "2026-11-20T10:00:01.000000Z",
                        "duration_ms": 500.0,
                        "status": "ok",
                        "tags": {"db.query": "SELECT..."},
                    },
                ],
            }
        ]

    async def test_random_ids_are_w3c_sized_and_unique(self, tracker, memory):
        """Ids are lowercase hex (32/16 chars), never zero, unique over 5,000 spans."""
        async with ft.span("root"):
            for _ in range(5000):
                with ft.span("child"):
                    pass
        await tracker.flush()
        spans = memory.traces[0]["spans"]
        ids = {s["span_id"] for s in spans}
        assert len(ids) == len(spans) == 5001
        for span_id in ids:
            assert len(span_id) == 16
            assert span_id == span_id.lower()
            assert int(span_id, 16) != 0


class TestExplicitTimes:
    def test_times_are_in_place_when_the_sink_is_told(self):
        """start_ns= and end_ns= of the internal API set the times before the trace is reported:
        the sink sees the given start and end of each span, never a clock reading replaced later."""
        sink = ReportingSink()
        t0 = clock.now_ns() - 10_000_000
        root = start_root_span("root", tracker=sink, start_ns=t0)
        token = activate(root)
        child = start_child("child", start_ns=t0 + 1_000)
        deactivate(root, token)
        root.end(end_ns=t0 + 9_000)
        child.end(end_ns=t0 + 5_000)  # the trace's last span: the sink is told now
        assert sink.reported == [[("root", t0, t0 + 9_000), ("child", t0 + 1_000, t0 + 5_000)]]

    def test_an_end_before_the_start_is_the_start(self):
        """An explicit end earlier than the span's start ends it at its start: a zero duration."""
        with capture_traces() as traces:
            span = start_root_span("backwards")
            span.end(end_ns=span.start_ns - 1_000_000)
        assert span.duration_ms == 0.0
        assert traces[0]["spans"][0]["duration_ms"] == 0.0

    def test_unrecorded_spans_keep_their_zero_times(self):
        """A root head sampling said no to reads no clock: explicit times leave it at zero."""
        sink = ReportingSink()
        root = start_root_span("unsampled", tracker=sink, sampled=False, start_ns=123)
        root.end(end_ns=456)
        assert (root.start_ns, root.end_ns, sink.reported) == (0, 0, [])

    def test_event_time_is_kept(self):
        """record_event(at_ns=) writes the event at the given time, on the wire too."""
        clock_ = FakeClock("2026-11-20T10:00:00Z", step_ms=0)
        with capture_traces(clock=clock_) as traces, ft.span("job") as job:
            clock_.advance(500)
            assert job.record_event("queued", {"depth": 3}, at_ns=job.start_ns + 250_000_000)
        [event] = traces[0]["spans"][0]["events"]
        assert event == {"name": "queued", "time": "2026-11-20T10:00:00.250000Z", "attributes": {"depth": 3}}


class TestOneEventPath:
    async def test_one_limit_for_every_event(self, memory):
        """add_event, record_event and events recorded after the end share max_events_per_span,
        and each event over it is counted once."""
        async with ft.Tracker(exporters=[memory], max_events_per_span=2) as tracker:
            with ft.span("job") as job:
                job.add_event("first")
                assert job.record_event("second", {})
                assert not job.record_event("third", {})
            assert not job.record_event("late", {}, after_end=True)
        assert [e["name"] for e in memory.traces[0]["spans"][0]["events"]] == ["first", "second"]
        assert tracker.stats.events_dropped == 2

    def test_after_end_only_when_asked(self):
        """An ended span takes no event, unless the caller says it is learnt at the span's end."""
        with capture_traces() as traces:
            with ft.span("root"), ft.span("child") as child:
                pass
            assert not child.record_event("late", {})
            assert child.record_event("learnt at the end", {"n": 1}, after_end=True)
        child_out = spans_by_name(traces[0])["child"]
        assert [e["name"] for e in child_out["events"]] == ["learnt at the end"]

    def test_unrecorded_span_takes_no_event(self):
        """A span that is not recorded (suppressed work) takes no event, even after its end."""
        with suppressed(), ft.span("quiet") as quiet:
            assert not quiet.record_event("e", {}, after_end=True)
        assert quiet.events == []


class TestTraceRoot:
    def test_the_root_span_carries_the_trace(self):
        """A trace has no object of its own: the root span holds the trace's span list, id and
        end count, every other span points to the root, and the root points to nothing of its
        own (so a finished trace is acyclic and reference counting frees it)."""
        with capture_traces() as traces, ft.span("root") as root, ft.span("child") as child:
            grandchild = ft.start_span("grandchild")
            assert (child.root, grandchild.root, root.root) == (root, root, None)
            assert root.spans == [root, child, grandchild]
            assert f"{root.trace_id_int:032x}" == child.trace_id == grandchild.trace_id
            grandchild.finish()
        assert [s["name"] for s in traces[0]["spans"]] == ["root", "child", "grandchild"]
        # Emitted: the root no longer holds its spans, and never held itself.
        assert not root.spans
        assert not any(r is root for r in gc.get_referents(root))

    def test_an_open_trace_is_its_spans_their_list_and_the_end_count(self):
        """Each open trace keeps exactly four garbage-collected objects alive: its two spans,
        the list of them and the end count. No trace-state object (one fewer per in-flight request)."""
        tracker = ft.Tracker(exporters=[])  # never started: the traces only open
        opened = []
        gc.disable()
        try:
            gc.collect()
            # Held, every object that was there stays: one freed meanwhile (another test's
            # leftovers, freed by another thread) cannot hide one of these from the count.
            before = gc.get_objects()
            for _ in range(200):
                root = start_root_span("GET /", tracker=tracker)
                token = activate(root)
                opened.append(ft.start_span("query"))
                deactivate(root, token)
            new = len(gc.get_objects()) - len(before)
        finally:
            gc.enable()
        assert len(opened) == 200
        assert round(new / 200, 1) == 4.0  # (the list ``before`` is the 0.005 left over)

    def test_a_span_not_started_has_id_zero_and_keeps_what_it_is_given(self):
        """Before it starts, a span has span id 0, no trace id and no context; its tags and
        events are kept, and ending it does nothing."""
        span = ft.span("later", step=1)
        span.set_tag("rows", 3)
        assert span.record_event("queued", {})
        span.finish()
        assert (span.span_id, span.trace_id, span.span_context(), span.sampled) == (0, None, None, False)
        assert span.end_ns is None
        assert span.tags == {"step": 1, "rows": 3}


class TestExtras:
    def test_a_plain_span_has_none(self):
        """A span with nothing optional (ok, internal, no events, no monitor) never makes its extras."""
        with capture_traces(), ft.span("plain") as plain, ft.span("tagged", rows=3) as tagged:
            pass
        assert plain.extras is None
        assert tagged.extras is None

    def test_fields_are_read_by_name(self):
        """What the core attaches is read back from the typed fields: status, error, kind, events."""
        with capture_traces(), ft.span("handler"):
            call = start_child("GET shipping", kind="client")
            assert call is not None
            call.add_event("retry")
            error = RuntimeError("HTTP 503")
            call.end(STATUS_ERROR, error)
        extras = call.extras
        assert isinstance(extras, SpanExtras)
        assert (extras.status, extras.error, extras.kind) == ("error", error, "client")
        assert [name for name, _, _ in extras.events or ()] == ["retry"]
        assert (extras.busy_ns, extras.stalled_ns, extras.dropped_tags) == (None, None, 0)

    def test_fields_for_stalled_time_reach_the_wire(self):
        """stalled_ns and the trace's loop_monitor mode, once written, are the wire's optional
        stalled_ms and loop_monitor fields; unwritten, they are absent."""
        with capture_traces() as traces:
            with ft.span("waited") as waited:
                waited.ensure_extras().stalled_ns = 2_500_000
                waited.ensure_extras().loop_monitor = "blocks"  # the root carries its trace's fields
            with ft.span("plain"):
                pass
        assert (traces[0]["spans"][0]["stalled_ms"], traces[0]["loop_monitor"]) == (2.5, "blocks")
        assert "stalled_ms" not in traces[1]["spans"][0]
        assert "loop_monitor" not in traces[1]

    def test_each_field_is_written_in_one_place(self):
        """Every SpanExtras field has one writer in the package (the one its declaration names);
        a second place that writes one fails here."""
        fields = {name for name in vars(SpanExtras) if not name.startswith("_")}
        writers: dict[str, set[tuple[str, str]]] = {}
        for path in sorted(PACKAGE.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for function in ast.walk(tree):
                if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(function):
                    targets = (
                        node.targets
                        if isinstance(node, ast.Assign)
                        else [node.target]
                        if isinstance(node, (ast.AugAssign, ast.AnnAssign))
                        else []
                    )
                    for target in targets:
                        if (
                            isinstance(target, ast.Attribute)
                            and target.attr in fields
                            and "extras" in ast.unparse(target.value)
                        ):
                            where = (path.relative_to(PACKAGE).as_posix(), function.name)
                            writers.setdefault(target.attr, set()).add(where)
        assert writers == {
            "status": {("_core/span.py", "end")},
            "error": {("_core/span.py", "end")},
            "kind": {("_core/span.py", "kind")},
            "events": {("_core/span.py", "record_event")},
            "dropped_tags": {("_core/span.py", "set_tag")},
            "remote_parent_id": {("_core/span.py", "start_root_span")},
            "tracestate": {("_core/span.py", "start_root_span")},
            "random_flag": {("_core/span.py", "start_root_span")},
            "follow_up": {("_core/trace.py", "reopen")},
            "dropped_spans": {("_core/span.py", "__enter__"), ("_core/trace.py", "reopen")},
            "loop_monitor": {("loop_monitor/_observers.py", "mark_watched")},
            "busy_ns": {("loop_monitor/_callbacks.py", "add_busy")},
            "stalled_ns": {("loop_monitor/_stalled.py", "stall")},
            "stalled_dropped": {("loop_monitor/_stalled.py", "stall")},
            "off_loop": {("loop_monitor/_observers.py", "mark_off_loop")},
        }
