"""flowtracker.viz: the views as pure functions over wire-format trace dicts.

Golden files live in tests/golden/ and are made from tests/golden/traces.jsonl
(the Go demo flow, an error with concurrency, a remote parent with recursion
and hostile names, a follow-up record), and the loop-monitor ones (``loop_*``)
from tests/golden/loop_traces.jsonl (an aiohttp service whose report handler
calls a sync PDF renderer among concurrent requests, and a sync HTTP client
that blocks twice deep in socket.py). After a deliberate format change,
regenerate them with ``FLOWTRACKER_UPDATE_GOLDEN=1 pytest tests/test_viz.py``
and review the diff.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowtracker import viz
from flowtracker.testing import FakeClock, capture_traces, sequential_ids

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FLOWTRACKER_UPDATE_GOLDEN") == "1"


def load_golden_traces() -> list[dict[str, Any]]:
    """The golden input, follow-up records merged (as the CLI does)."""
    return viz.merge_traces(viz.read_traces([GOLDEN / "traces.jsonl"]).traces)


def load_loop_traces() -> list[dict[str, Any]]:
    """The golden traces with loop-monitor fields (``busy_ms``, ``event_loop.blocked`` events)."""
    return viz.merge_traces(viz.read_traces([GOLDEN / "loop_traces.jsonl"]).traces)


def loop_span(name: str, **fields: Any) -> dict[str, Any]:
    """A one-span trace's span with loop-monitor ``fields``."""
    return {"span_id": "a" * 16, "name": name, "start_time": "2026-11-20T10:00:00.000000Z", **fields}


def blocked_event(duration_ms: Any, stack: Any, time: Any = "2026-11-20T10:00:00.002000Z") -> dict[str, Any]:
    """An ``event_loop.blocked`` event as the loop monitor writes it."""
    return {
        "name": "event_loop.blocked",
        "time": time,
        "attributes": {"duration_ms": duration_ms, "stack": stack},
    }


def check_golden(name: str, text: str) -> None:
    """Compares ``text`` with tests/golden/<name> (or rewrites it when updating)."""
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; see the module docstring"


def deep_trace(depth: int) -> dict[str, Any]:
    """One trace whose spans nest ``depth`` deep (each the child of the previous)."""
    spans = []
    for index in range(depth):
        span: dict[str, Any] = {
            "span_id": f"{index + 1:016x}",
            "name": "fib" if index % 2 else f"level {index % 5}",
            "start_time": f"2026-11-20T10:00:{index // 1_000_000:02d}.{index % 1_000_000:06d}Z",
            "duration_ms": (depth - index) / 1000,
            "status": "ok",
        }
        if index:
            span["parent_id"] = f"{index:016x}"
        spans.append(span)
    return {"trace_id": "d" * 32, "spans": spans}


class TestGolden:
    """Every text format, byte for byte, against the golden files."""

    def test_tree(self) -> None:
        """The execution tree: indentation, durations, shares, statuses, tags, escaping."""
        text = "\n\n".join(viz.tree_text(trace) for trace in load_golden_traces()) + "\n"
        check_golden("tree.txt", text)

    def test_tree_in_colour(self) -> None:
        """Colour marks errors red, cancellations yellow, unfinished spans magenta."""
        text = "\n\n".join(viz.tree_text(trace, color=True) for trace in load_golden_traces()) + "\n"
        check_golden("tree_color.txt", text)
        assert "\x1b[31m✗ error" in text
        assert "\x1b[33m⊘ cancelled" in text
        assert "\x1b[35m◌ unfinished" in text

    def test_sankeymatic_aggregated(self) -> None:
        """SankeyMATIC flows summed per (parent, child) name, as ``convert --to sankey`` writes."""
        check_golden("sankey.txt", viz.sankeymatic_text(load_golden_traces()))

    def test_sankeymatic_per_span_with_markers_and_tags(self) -> None:
        """The Go exporter's form: a line per span, tag labels, START/END lines as comments."""
        raw = viz.read_traces([GOLDEN / "traces.jsonl"]).traces
        text = viz.sankeymatic_text(raw, aggregate=False, include_tags=["currency", "n"], markers=True)
        check_golden("sankey_per_span.txt", text)

    def test_mermaid(self) -> None:
        """One ```mermaid block per trace, Go's node and edge syntax, labels escaped."""
        check_golden("mermaid.md", viz.mermaid_text(load_golden_traces()))

    def test_mermaid_left_to_right(self) -> None:
        """``direction="LR"`` changes only the graph line."""
        text = viz.mermaid_text(load_golden_traces()[:1], direction="LR")
        assert text.splitlines()[1] == "graph LR"

    def test_chrome_trace(self) -> None:
        """Chrome Trace Event JSON: processes per trace, tracks, complete and instant events."""
        text = (
            orjson.dumps(viz.chrome_trace(load_golden_traces()), option=orjson.OPT_INDENT_2).decode() + "\n"
        )
        check_golden("chrome.json", text)

    def test_stats_table(self) -> None:
        """The stats table: count, p50/p95/p99/max, error rate and share per name."""
        check_golden("stats.txt", viz.stats_table(viz.span_stats(load_golden_traces())) + "\n")


class TestGoldenLoop:
    """Traces with loop-monitor data, byte for byte, against the loop_* golden files."""

    def test_tree(self) -> None:
        """Busy time on every span that has it; a ⚠ marker with the offending frame where a span blocked."""
        text = "\n\n".join(viz.tree_text(trace) for trace in load_loop_traces()) + "\n"
        check_golden("loop_tree.txt", text)
        assert "busy 301.9 ms  ⚠ blocked the loop 300.4 ms at shop/reports.py:41 in render_pdf" in text

    def test_tree_in_colour(self) -> None:
        """Busy time and the block marker have their own colours."""
        text = "\n\n".join(viz.tree_text(trace, color=True) for trace in load_loop_traces()) + "\n"
        check_golden("loop_tree_color.txt", text)
        assert "\x1b[1;93m⚠ blocked the loop 300.4 ms" in text
        assert "\x1b[34mbusy 301.9 ms\x1b[0m" in text

    def test_stats_table(self) -> None:
        """The table gains busy p50/p95, blocks and blocked columns."""
        check_golden("loop_stats.txt", viz.stats_table(viz.span_stats(load_loop_traces())) + "\n")

    def test_chrome_trace(self) -> None:
        """Blocks are instant events in category event_loop; busy_ms is in each span's args."""
        text = orjson.dumps(viz.chrome_trace(load_loop_traces()), option=orjson.OPT_INDENT_2).decode() + "\n"
        check_golden("loop_chrome.json", text)

    def test_views_without_monitor_data_are_unchanged(self) -> None:
        """Stats rows of traces without loop data have no loop keys (the old goldens pin the text)."""
        rows = viz.span_stats(load_golden_traces())
        assert [key for row in rows for key in row if "busy" in key or "block" in key] == []
        assert "busy" not in viz.tree_text(load_golden_traces()[0])


class TestLoopMonitorData:
    """How the views read busy_ms and event_loop.blocked events, odd values included."""

    def test_library_frames_lead_to_the_users_line(self) -> None:
        """A block deep in socket.py names the innermost frame and the user's own line after it."""
        trace = load_loop_traces()[3]
        line = viz.tree_text(trace, header=False).splitlines()[1]
        assert "⚠ blocked the loop 256.1 ms (2 blocks) at python3.12/socket.py:720 in readinto" in line
        assert line.endswith("← shop/rates.py:18 in fetch_rates")

    def test_header_counts_blocks(self) -> None:
        """The trace header says that a monitor watched the trace and how many times the loop was
        blocked, so "no blocks" reads apart from "not watched"; without loop_monitor, only blocks."""
        headers = [viz.tree_text(trace).splitlines()[0] for trace in load_loop_traces()]
        assert [header.rpartition("  ")[2] for header in headers] == [
            "loop monitor: full, 1 block",
            "loop monitor: full, no blocks",
            "loop monitor: full, no blocks",
            "loop monitor: full, 2 blocks",
        ]
        unwatched = [
            {key: value for key, value in trace.items() if key != "loop_monitor"}
            for trace in load_loop_traces()
        ]
        assert [viz.tree_text(trace).splitlines()[0].endswith(" loop block") for trace in unwatched[:2]] == [
            True,
            False,
        ]

    def test_malformed_fields_are_ignored(self) -> None:
        """A non-numeric busy_ms, a block without attributes or stack: nothing invented, nothing fails."""
        spans = [
            loop_span("a", busy_ms="fast", events=[{"name": "event_loop.blocked"}, "not an event"]),
            loop_span("b", busy_ms=float("nan"), events=[blocked_event(None, 42, time=7)]),
            loop_span("c", busy_ms=True, events=[blocked_event(-5.0, "")]),
        ]
        for span in spans:
            line = viz.tree_text({"trace_id": "t", "spans": [span]}, header=False)
            assert "busy" not in line
            assert line.endswith("⚠ blocked the loop 0.000 ms")
        rows = viz.span_stats([{"trace_id": "t", "spans": spans}])
        assert {row["name"]: (row["blocks"], "busy_p50_ms" in row) for row in rows} == {
            "a": (1, False),
            "b": (1, False),
            "c": (1, False),
        }
        events = viz.chrome_trace([{"trace_id": "t", "spans": spans}])["traceEvents"]
        instants = [event.get("cat") for event in events if event["ph"] == "i"]
        assert instants == ["event_loop"] * 3  # "not an event" is no event

    def test_control_characters_in_a_stack_stay_escaped(self) -> None:
        """A frame naming a hostile file cannot move the terminal's cursor."""
        stack = "/srv/\x1b[2Japp.py:3 in f\nmain.py:1 in <module>"
        line = viz.tree_text(
            {"trace_id": "t", "spans": [loop_span("x", events=[blocked_event(150.0, stack)])]}
        )
        assert "\x1b" not in line
        assert "\\x1b[2Japp.py:3 in f" in line


class TestLoopStats:
    """Busy percentiles and block counts per span name."""

    def test_busy_percentiles_and_blocks(self) -> None:
        """busy p50/p95 over the name's spans that have busy_ms; blocks and blocked_ms summed over them."""
        spans = [loop_span("h", busy_ms=float(ms), duration_ms=200.0) for ms in range(1, 101)]
        spans[0]["events"] = [blocked_event(120.0, "app.py:1 in h"), blocked_event(130.5, "app.py:1 in h")]
        spans.append(loop_span("worker", duration_ms=5.0, tags={"thread.name": "w"}))
        rows = {row["name"]: row for row in viz.span_stats([{"trace_id": "t", "spans": spans}])}
        h = rows["h"]
        assert (h["busy_p50_ms"], h["busy_p95_ms"], h["blocks"], h["blocked_ms"]) == (50.5, 95.05, 2, 250.5)
        assert "busy_p50_ms" not in rows["worker"]
        assert rows["worker"]["blocks"] == 0
        table = viz.stats_table(list(rows.values())).splitlines()
        assert table[0].split()[-7:] == ["busy", "p50", "busy", "p95", "blocks", "blocked", "stalled"]
        assert table[2].split()[-5:] == ["–", "–", "0", "–", "–"]


class TestTree:
    """tree_text details beyond the golden file."""

    def test_selected_tags_only(self) -> None:
        """``tags=[...]`` shows only those keys; ``tags=()`` none."""
        trace = load_golden_traces()[0]
        assert "currency=USD" in viz.tree_text(trace, tags=["currency"])
        assert "db.query" not in viz.tree_text(trace, tags=["currency"])
        assert "=" not in viz.tree_text(trace, tags=(), header=False)

    def test_control_characters_cannot_reach_the_terminal(self) -> None:
        """Escape sequences and newlines in names and tags are shown escaped, one line per span."""
        trace = {
            "trace_id": "t",
            "spans": [{"span_id": "a", "name": "evil\x1b[2J\nname", "tags": {"k\n": "v\x07"}}],
        }
        text = viz.tree_text(trace, header=False)
        assert "\x1b" not in text
        assert "\x07" not in text
        assert len(text.splitlines()) == 1

    def test_deep_nesting_stops_indenting(self) -> None:
        """Past ``max_indent`` levels the line carries its depth instead of more indentation."""
        lines = viz.tree_text(deep_trace(200), header=False, max_indent=8).splitlines()
        assert len(lines) == 200
        assert "[150]" in lines[150]
        assert len(lines[150]) < 80

    def test_remote_parent_is_named(self) -> None:
        """A root whose parent is elsewhere says so."""
        trace = load_golden_traces()[2]
        assert "↖ parent 0000000000000063 not in this trace" in viz.tree_text(trace)

    def test_parent_cycle_still_prints_every_span(self) -> None:
        """Malformed input with a parent cycle (a → b → a) prints each span once, no hang."""
        trace = {
            "trace_id": "t",
            "spans": [
                {"span_id": "a", "parent_id": "b", "name": "A"},
                {"span_id": "b", "parent_id": "a", "name": "B"},
                {"span_id": "c", "parent_id": "c", "name": "self"},
            ],
        }
        lines = viz.tree_text(trace, header=False).splitlines()
        assert sorted(re.sub(r"^[│├└─ ]*", "", line).split("  ")[0] for line in lines) == ["A", "B", "self"]


class TestRead:
    """Reading traces from JSON Lines, logs, gzip, and merging records."""

    def test_flow_log_anywhere_in_a_line_and_noise_counted(self) -> None:
        """FLOW_LOG: after any prefix is a trace; other lines are skipped; broken ones are invalid."""
        log = (
            b"starting up\n"
            b'2026-11-20 INFO app FLOW_LOG: {"trace_id": "ab", "spans": []}\n'
            b'{"trace_id": "cd", "spans": [{"span_id": "1", "name": "x"}]}\n'
            b"FLOW_LOG: {not json\n"
            b'{"level": "info"}\n'
            b"\n"
        )
        result = viz.read_traces([io.BytesIO(log)])
        assert [trace["trace_id"] for trace in result.traces] == ["ab", "cd"]
        assert (result.lines, result.skipped, result.invalid) == (6, 3, 1)

    def test_gzip_detected_by_content(self, tmp_path: Path) -> None:
        """A gzip file is read whatever its name."""
        path = tmp_path / "traces.log"
        path.write_bytes(gzip.compress((GOLDEN / "traces.jsonl").read_bytes()))
        assert len(viz.read_traces([path]).traces) == 4

    def test_json_array_line_is_a_batch(self) -> None:
        """A line holding a JSON array of traces (a webhook body) yields each trace."""
        line = b'[{"trace_id": "a", "spans": []}, {"trace_id": "b", "spans": []}]\n'
        assert len(viz.read_traces([io.BytesIO(line)]).traces) == 2

    def test_missing_file_is_an_input_error(self, tmp_path: Path) -> None:
        """An unreadable input raises InputError naming it."""
        with pytest.raises(viz.InputError, match=r"nope\.jsonl"):
            viz.read_traces([tmp_path / "nope.jsonl"])

    def test_truncated_gzip_is_an_input_error(self, tmp_path: Path) -> None:
        """A cut-off gzip file is reported, not silently half-read."""
        path = tmp_path / "cut.jsonl.gz"
        path.write_bytes(gzip.compress((GOLDEN / "traces.jsonl").read_bytes())[:-20])
        with pytest.raises(viz.InputError, match="ends early"):
            viz.read_traces([path])

    def test_progress_reports_bytes(self, tmp_path: Path) -> None:
        """The progress callback ends at (total, total)."""
        seen: list[tuple[int, int]] = []
        viz.read_traces([GOLDEN / "traces.jsonl"], progress=lambda done, total: seen.append((done, total)))
        size = (GOLDEN / "traces.jsonl").stat().st_size
        assert seen[-1] == (size, size)

    def test_merge_joins_follow_ups_and_drops_repeats(self) -> None:
        """Records with one trace id become one trace; a span read twice is kept once."""
        records = viz.read_traces([GOLDEN / "traces.jsonl", GOLDEN / "traces.jsonl"]).traces
        merged = viz.merge_traces(records)
        assert len(merged) == 3
        assert [span["name"] for span in merged[0]["spans"]][-1] == "send receipt email"
        assert len(merged[0]["spans"]) == 6
        assert "follow_up" not in merged[0]

    def test_merge_across_services_keeps_each_spans_service(self) -> None:
        """Records of one trace from two services (the callee's usually written first, as it ends
        first) merge into a trace of the root's service, each span marked with its own; records of one
        service merge as before, spans unmarked."""
        shipping = {
            "trace_id": "ab",
            "service": "shipping",
            "spans": [{"span_id": "3", "parent_id": "2", "name": "POST /ship"}],
        }
        orders = {
            "trace_id": "ab",
            "service": "orders",
            "spans": [
                {"span_id": "1", "name": "GET /"},
                {"span_id": "2", "parent_id": "1", "name": "HTTP POST shipping/ship"},
            ],
        }
        (merged,) = viz.merge_traces([shipping, orders])
        assert merged["service"] == "orders"
        assert [(span["name"], span["service"]) for span in merged["spans"]] == [
            ("POST /ship", "shipping"),
            ("GET /", "orders"),
            ("HTTP POST shipping/ship", "orders"),
        ]
        assert "service" not in shipping["spans"][0]  # the input is left as it was
        (alone,) = viz.merge_traces([orders, {**orders, "spans": [{"span_id": "4", "name": "late"}]}])
        assert alone["service"] == "orders"
        assert all("service" not in span for span in alone["spans"])


class TestSankey:
    """Sankey links and SankeyMATIC escaping."""

    def test_links_use_the_go_weighting(self) -> None:
        """Each child adds its own duration to its (parent name, child name) link."""
        links = viz.sankey_links(load_golden_traces())
        by_pair = {(link["source"], link["target"]): link for link in links}
        assert by_pair[("GET /", "DB: Select User")]["value"] == 120.0
        assert by_pair[("fib", "fib")] == {"source": "fib", "target": "fib", "value": 5.0, "count": 2}
        assert by_pair[("Unknown", "POST /ship")]["count"] == 1

    def test_tag_labels_follow_go(self) -> None:
        """Selected tags are appended as `` (k:v, k2:v2)``."""
        links = viz.sankey_links(load_golden_traces()[:1], include_tags=["currency"])
        assert {
            "source": "GET /",
            "target": "Process Payment (currency:USD)",
            "value": 50.25,
            "count": 1,
        } in links

    @given(st.text(min_size=0, max_size=40))
    def test_any_name_parses_back_as_one_flow(self, name: str) -> None:
        """Whatever a span is called, its SankeyMATIC line parses into the same two labels."""
        trace = {
            "trace_id": "t",
            "spans": [
                {"span_id": "a", "name": name, "duration_ms": 1.0},
                {"span_id": "b", "parent_id": "a", "name": name + " child", "duration_ms": 2.5},
            ],
        }
        line = viz.sankeymatic_text([trace]).rstrip("\n")
        assert "\n" not in line
        assert not re.match(r"^(?:'|//|:)", line)  # not a comment or node line
        match = re.fullmatch(r"(.+)\[([\d\s.+-]+)\](.+)", line)  # SankeyMATIC's flow-line pattern
        assert match is not None
        source, amount, target = match.group(1).strip(), match.group(2), match.group(3).strip()
        assert amount == "2.5"
        assert source == viz.sankeymatic_label(name or "<unnamed>")
        assert not re.search(r"\s#\S+$", " " + target)  # no trailing colour suffix
        assert not re.fullmatch(r"move (.+) (-?\d(?:.\d+)?), (-?\d(?:.\d+)?)", line)

    def test_recursion_is_split_by_depth_for_drawing(self) -> None:
        """sankey_graph has no cycle even when names recurse; recursive names carry their depth."""
        graph = viz.sankey_graph(load_golden_traces())
        assert "fib · 1" in graph["nodes"]
        assert "fib · 2" in graph["nodes"]
        assert_acyclic(graph["links"])

    def test_heaviest_links_kept(self) -> None:
        """``max_links`` keeps the heaviest links and counts the rest."""
        graph = viz.sankey_graph(load_golden_traces(), max_links=2)
        assert len(graph["links"]) == 2
        assert graph["omitted"] > 0
        assert graph["nodes"][graph["links"][0][1]] == "HTTP: Shipping Service"

    def test_roots_flow_from_their_source(self) -> None:
        """With ``root_source``, every root without a remote parent flows from the node it names,
        worth its whole duration, so a childless root counts; a remote-parented root keeps "Unknown"."""
        health = {"span_id": "a", "name": "GET /health", "duration_ms": 1.5}
        single = {"trace_id": "s", "service": "shop", "spans": [health]}
        graph = viz.sankey_graph(
            [*load_golden_traces(), single], root_source=lambda trace, root: trace["service"]
        )
        nodes = graph["nodes"]
        links = {(nodes[source], nodes[target]): ms for source, target, ms, _ in graph["links"]}
        assert links[("shop", "GET /health")] == 1.5
        assert ("orders", "GET /") in links
        assert ("Unknown", "POST /ship") in links
        assert not any(target == "POST /ship" for source, target in links if source != "Unknown")
        assert viz.sankey_graph([single])["links"] == []  # without it, as before: parent → child only
        assert_acyclic(graph["links"])


def assert_acyclic(links: list[tuple[int, int, float, int]]) -> None:
    """Fails when the links contain a cycle (Kahn's algorithm)."""
    nodes = {node for link in links for node in link[:2]}
    incoming = {node: 0 for node in nodes}
    outgoing: dict[int, list[int]] = {node: [] for node in nodes}
    for source, target, _, _ in links:
        incoming[target] += 1
        outgoing[source].append(target)
    ready = [node for node, count in incoming.items() if count == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for target in outgoing[node]:
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    assert seen == len(nodes), "the Sankey graph has a cycle"


_NODE = r'(?:N[0-9A-Za-z_]+|S\d+)\["[^"\n<>`]*"\]'
MERMAID_LINE = re.compile(rf"    {_NODE}(?: -->\|[0-9.]+ms\| {_NODE})?")


class TestMermaid:
    """Mermaid output is valid for any names and ids."""

    @given(st.text(max_size=40), st.text(max_size=20))
    def test_any_name_and_id_yield_valid_lines(self, name: str, span_id: str) -> None:
        """Every node and edge line matches the flowchart grammar; labels hold no raw quote or tag."""
        trace = {
            "trace_id": "t",
            "spans": [
                {"span_id": span_id, "name": name, "duration_ms": 1.0},
                {"span_id": span_id + "x", "parent_id": span_id, "name": name, "duration_ms": 0.5},
            ],
        }
        lines = viz.mermaid_text([trace]).splitlines()
        assert lines[0] == "```mermaid"
        assert lines[1] == "graph TD"
        assert lines[-1] == "```"
        for line in lines[2:-1]:
            assert MERMAID_LINE.fullmatch(line), line

    def test_entities_round_trip(self) -> None:
        """Entity codes stand for the characters Mermaid would misread."""
        assert viz.mermaid_label('a"b<c>#d&`e') == "a#quot;b#lt;c#gt;#35;d#amp;#96;e"

    def test_lone_span_still_drawn(self) -> None:
        """A one-span trace gets its node, so the block is not empty."""
        text = viz.mermaid_text([{"trace_id": "t", "spans": [{"span_id": "a1", "name": "solo"}]}])
        assert '    Na1["solo"]' in text.splitlines()

    def test_duplicate_span_ids_get_positional_ids(self) -> None:
        """Two spans sharing an id do not merge into one node."""
        trace = {
            "trace_id": "t",
            "spans": [{"span_id": "a", "name": "x"}, {"span_id": "a", "name": "y", "parent_id": "zz"}],
        }
        assert {'    S0["x"]', '    S1["y"]'} <= set(viz.mermaid_text([trace]).splitlines())


class TestChrome:
    """Chrome Trace Event JSON keeps every track properly nested."""

    def test_concurrent_children_get_their_own_tracks(self) -> None:
        """Overlapping siblings (gather) are put on different tracks; sequential ones share."""
        events = viz.chrome_trace(load_golden_traces()[1:2])["traceEvents"]
        tids = {event["name"]: event["tid"] for event in events if event["ph"] == "X"}
        assert tids["POST /checkout"] == tids["fetch prices"] == 1
        assert len({tids["fetch prices"], tids["fetch stock"], tids["fetch rates"]}) == 3
        assert_nested(events)

    def test_thread_tag_names_the_track(self) -> None:
        """A ``thread.name`` tag puts the span on that thread's track."""
        trace = {
            "trace_id": "t",
            "spans": [
                {"span_id": "a", "name": "root", "start_time": "2026-11-20T10:00:00Z", "duration_ms": 5.0},
                {
                    "span_id": "b",
                    "parent_id": "a",
                    "name": "work",
                    "start_time": "2026-11-20T10:00:00.001Z",
                    "duration_ms": 1.0,
                    "tags": {"thread.name": "worker-1"},
                },
            ],
        }
        events = viz.chrome_trace([trace])["traceEvents"]
        names = {event["args"]["name"] for event in events if event["name"] == "thread_name"}
        assert names == {"main", "thread worker-1"}


def assert_nested(events: list[dict[str, Any]]) -> None:
    """Fails when complete events on one (pid, tid) overlap without nesting."""
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for event in events:
        if event["ph"] == "X":
            tracks.setdefault((event["pid"], event["tid"]), []).append(
                (event["ts"], event["ts"] + event["dur"])
            )
    for slices in tracks.values():
        open_ends: list[float] = []
        for start, end in sorted(slices, key=lambda item: (item[0], -item[1])):
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1] + 1e-6, "misnested slices on one track"
            open_ends.append(end)


class TestChromeLoop:
    """Event-loop blocks in Chrome Trace Event JSON."""

    def test_block_is_an_instant_event_at_its_time_with_the_stack(self) -> None:
        """The instant event sits on the span's track at the block's start and carries the stack in args."""
        events = viz.chrome_trace(load_loop_traces()[:1])["traceEvents"]
        (span,) = [event for event in events if event["ph"] == "X" and event["name"] == "render_pdf"]
        (block,) = [event for event in events if event["ph"] == "i"]
        assert (block["name"], block["cat"], block["s"]) == ("event_loop.blocked", "event_loop", "t")
        assert block["tid"] == span["tid"]
        assert block["ts"] == span["ts"] + 600
        assert block["args"]["duration_ms"] == 300.412
        assert block["args"]["stack"].splitlines()[0] == "/srv/shop/shop/reports.py:41 in render_pdf"
        assert span["args"]["busy_ms"] == 301.874


class TestStats:
    """span_stats numbers."""

    def test_percentiles_interpolate(self) -> None:
        """p50/p95/p99 interpolate linearly over sorted durations."""
        spans = [{"span_id": str(i), "name": "x", "duration_ms": float(i)} for i in range(1, 101)]
        (row,) = viz.span_stats([{"trace_id": "t", "spans": spans}])
        assert (row["p50_ms"], row["p95_ms"], row["p99_ms"], row["max_ms"]) == (50.5, 95.05, 99.01, 100.0)

    def test_error_rate_and_share(self) -> None:
        """Error rate counts error spans; share divides by the summed root durations."""
        rows = {row["name"]: row for row in viz.span_stats(load_golden_traces())}
        assert rows["charge card"]["error_rate"] == 1.0
        assert rows["fetch rates"]["error_rate"] == 0.0
        assert rows["GET /"]["share"] == pytest.approx(392.5 / (392.5 + 80.0 + 12.0))


class TestReport:
    """render_report / report_data (the browser test draws the page for real)."""

    def test_data_is_compact_and_in_tree_order(self) -> None:
        """Spans are stored in tree order with depth and subtree size; names are interned."""
        data = viz.report_data(load_golden_traces())
        rows = data["spans"][0]
        names = [data["strings"][row[2]] for row in rows]
        assert names == [
            "GET /",
            "Process Payment",
            "DB: Select User",
            "HTTP: Shipping Service",
            "Calculate Weight",
            "send receipt email",
        ]
        assert [row[6] for row in rows] == [0, 1, 1, 1, 2, 1]
        assert [row[7] for row in rows] == [6, 1, 1, 2, 1, 1]
        assert data["traces"][0][:2] == ["4bf92f3577b34da6a3ce929d0e0e4736", data["strings"].index("orders")]

    def test_plain_page_cannot_be_broken_out_of(self) -> None:
        """A name with ``</script>`` or a template marker stays inert data in the plain page."""
        trace = {
            "trace_id": "t",
            "spans": [
                {"span_id": "a", "name": "</script><script>alert(1)</script>@@SCRIPT@@", "duration_ms": 1.0}
            ],
        }
        page = viz.render_report([trace], compress=False, title="<b>x</b>")
        assert "</script><script>alert(1)" not in page
        assert page.count("@@SCRIPT@@") == 0 or "\\u003c/script\\u003e" in page
        assert "<title>&lt;b&gt;x&lt;/b&gt;</title>" in page
        assert page.count("<script") == 3  # data, library, report code

    def test_loop_data(self) -> None:
        """busy_ms and blocks (offset, duration, frames, the user's frames) per span, stalls (offset,
        duration, the guilty span, its line) in place of their events; the trace notes and the header's
        monitor mode and block count; loop stats columns."""
        data = viz.report_data(load_loop_traces())
        rows = data["spans"][0]
        assert [data["strings"][row[2]] for row in rows] == [
            "GET /reports/{id}",
            "SELECT orders",
            "render_pdf",
        ]
        assert [row[8]["busy_ms"] for row in rows] == [2.113, 0.352, 301.874]
        (block,) = rows[2][8]["blocks"]
        assert block[:2] == [14.1, 300.412]
        assert block[2][0] == "/srv/shop/shop/reports.py:41 in render_pdf"
        # reports.py, views.py and __main__.py are the user's; the other frames are libraries
        assert block[3] == [0, 2, 12]
        assert "events" not in rows[2][8]  # the blocks replace their events, the stack is sent once
        assert data["traces"][0][8] == {"blocks": 1, "blocked_ms": 300.412, "loop_monitor": "full"}
        assert data["traces"][1][8] == {"stalled_ms": 300.412, "loop_monitor": "full"}
        (stall,) = data["spans"][1][1][8]["stalls"]
        guilty = [data["traces"][0][0], "00000000000000a3", "GET /reports/{id} › render_pdf"]
        assert stall == [9.1, 300.412, *guilty, "/srv/shop/shop/reports.py:41 in render_pdf"]
        assert data["meta"]["loop"] == {"modes": ["full"], "blocks": 3}
        assert all(len(row) == 14 for row in data["stats"])
        rates = data["spans"][3]
        assert [event["name"] for event in rates[0][8]["events"]] == ["cache miss"]
        assert all(len(row) == 9 for row in viz.report_data(load_golden_traces())["stats"])

    def test_single_span_traces_count_in_where_time_goes(self) -> None:
        """The report's "where time goes" has each root flow from its service (``traces`` when the
        trace names none), so a trace of one childless span is in it, with its duration."""
        spans = [{"span_id": "a", "name": "GET /health", "duration_ms": 2.0}]
        data = viz.report_data(
            [{"trace_id": "a", "service": "shop", "spans": spans}, {"trace_id": "b", "spans": spans}]
        )
        nodes = data["sankey"]["nodes"]
        links = [(nodes[source], nodes[target], *rest) for source, target, *rest in data["sankey"]["links"]]
        assert links == [("shop", "GET /health", 2.0, 1), ("traces", "GET /health", 2.0, 1)]

    def test_span_service_when_it_differs_from_the_trace(self) -> None:
        """A span that names another service than its trace's (a trace joined from several services)
        carries it to the page; one that repeats the trace's does not."""
        trace = {
            "trace_id": "t",
            "service": "shop",
            "spans": [
                {"span_id": "a", "name": "GET /", "duration_ms": 5.0, "service": "shop"},
                {
                    "span_id": "b",
                    "parent_id": "a",
                    "name": "GET /items",
                    "duration_ms": 2.0,
                    "service": "inventory",
                },
            ],
        }
        rows = viz.report_data([trace])["spans"][0]
        assert rows[0][8] == 0
        assert rows[1][8] == {"service": "inventory", "parent_id": "a"}

    def test_joined_trace_takes_its_roots_service_and_lists_every_service(self) -> None:
        """A trace with no service of its own (as ``flowtracker serve`` stores them, ``service`` on
        every span) is its root's service; its summary lists every service with a span in it, its
        own first; only the spans of another service carry theirs. ``report_aggregates`` is the
        report's "where time goes" and statistics alone."""
        trace = {
            "trace_id": "t",
            "spans": [
                {"span_id": "a", "name": "GET /cart", "duration_ms": 5.0, "service": "web"},
                {"span_id": "b", "parent_id": "a", "name": "reserve", "duration_ms": 2.0, "service": "db"},
                {"span_id": "c", "parent_id": "a", "name": "render", "duration_ms": 1.0, "service": "web"},
            ],
        }
        data = viz.report_data([trace])
        strings = data["strings"]
        summary = data["traces"][0]
        assert strings[summary[1]] == "web"
        assert [strings[index] for index in summary[9]] == ["web", "db"]
        assert [row[8] for row in data["spans"][0]] == [
            0,
            {"service": "db", "parent_id": "a"},
            {"parent_id": "a"},
        ]
        aggregates = viz.report_aggregates([trace])
        assert aggregates == {key: data[key] for key in ("sankey", "stats", "stats_omitted")}
        assert aggregates["sankey"]["nodes"][0] == "web"

    def test_page_without_data_waits_for_render(self) -> None:
        """``report_page(None)`` is the report's page with no data in it (a live page feeds it through
        ``flowtrackerReport.render``); its script comes after the report's own, and its CSP lets it
        connect only where it is told."""
        page = viz.report_page(None, script="window.live = 1;", connect_src="'self'")
        assert 'id="ft-data"' not in page
        assert page.index("flowtrackerReport") < page.index("window.live = 1;")
        assert "connect-src 'self';" in page
        assert "connect-src 'none';" in viz.render_report(load_golden_traces())

    def test_page_script_cannot_end_its_element(self) -> None:
        """A ``script`` holding ``</script`` is refused: it would end the page's script early."""
        with pytest.raises(ValueError, match="</script"):
            viz.report_page(None, script="x = '</SCRIPT>'")

    def test_compressed_page_is_smaller(self) -> None:
        """The default page embeds gzip+base64 blobs and is much smaller than the plain one."""
        traces = load_golden_traces()
        packed, plain = viz.render_report(traces), viz.render_report(traces, compress=False)
        assert 'data-encoding="gzip"' in packed
        assert len(packed) < len(plain) / 2


def trace_sets() -> st.SearchStrategy[list[dict[str, Any]]]:
    """Valid but arbitrary trace sets: random parent links (missing, self, cycles), names, statuses, tags."""
    names = st.text(max_size=12)
    tag_values = st.one_of(
        st.text(max_size=8), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none()
    )
    loop_events = st.builds(
        blocked_event,
        st.one_of(st.floats(allow_nan=False), st.text(max_size=3), st.none()),
        st.one_of(st.text(max_size=40), st.integers(), st.none()),
        st.sampled_from(["2026-11-20T10:00:00.002000Z", "later", None]),
    )

    @st.composite
    def trace(draw: st.DrawFn) -> dict[str, Any]:
        count = draw(st.integers(min_value=0, max_value=12))
        ids = [draw(st.sampled_from(["a", "b", "c", "d", "e"])) + str(i % 4) for i in range(count)]
        spans = []
        for index in range(count):
            span: dict[str, Any] = {
                "span_id": ids[index],
                "name": draw(names),
                "duration_ms": draw(st.floats(min_value=0, max_value=1e6, allow_nan=False)),
                "status": draw(st.sampled_from(["ok", "error", "cancelled", "unfinished", "weird"])),
            }
            if draw(st.booleans()):
                span["start_time"] = draw(
                    st.sampled_from(["2026-11-20T10:00:00.000000Z", "2026-11-20T10:00:00.5Z", "not a time"])
                )
            if count and draw(st.booleans()):
                span["parent_id"] = draw(st.sampled_from([*ids, "missing"]))
            if draw(st.booleans()):
                span["tags"] = draw(st.dictionaries(st.text(max_size=5), tag_values, max_size=3))
            if draw(st.booleans()):
                span["busy_ms"] = draw(st.one_of(st.floats(), st.integers(), st.text(max_size=3), st.none()))
            if draw(st.booleans()):
                span["events"] = draw(st.lists(loop_events, max_size=3))
            spans.append(span)
        return {"trace_id": draw(st.text(max_size=8)), "spans": spans}

    return st.lists(trace(), max_size=4)


class TestProperties:
    """Any valid trace set converts without error, deep nesting included."""

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(trace_sets())
    def test_every_view_accepts_any_trace_set(self, traces: list[dict[str, Any]]) -> None:
        """Tree, Sankey, Mermaid, Chrome, stats and the report data all succeed, and trees show every span."""
        for trace in traces:
            text = viz.tree_text(trace, header=False)
            assert len(text.splitlines()) == len(trace["spans"])
        viz.sankeymatic_text(traces)
        viz.sankeymatic_text(traces, aggregate=False, all_tags=True, markers=True)
        viz.mermaid_text(traces, all_tags=True)
        assert_nested(viz.chrome_trace(traces)["traceEvents"])
        viz.span_stats(traces)
        assert_acyclic(viz.sankey_graph(traces)["links"])
        data = viz.report_data(traces)
        assert sum(len(rows) for rows in data["spans"]) == sum(len(trace["spans"]) for trace in traces)
        assert viz.render_report(traces, compress=False).endswith("</html>\n")

    def test_ten_thousand_deep(self) -> None:
        """A trace nested 10,000 spans deep goes through every view without RecursionError."""
        trace = deep_trace(10_000)
        assert len(viz.tree_text(trace).splitlines()) == 10_001
        assert viz.sankeymatic_text([trace], aggregate=False).count("\n") == 9_999
        assert viz.sankeymatic_text([trace]).count("\n") == 10  # level n <-> fib pairs, summed
        assert viz.mermaid_text([trace]).count("-->") == 9_999
        assert_nested(viz.chrome_trace([trace])["traceEvents"])
        assert viz.span_stats([trace])[0]["count"] == 5_000
        assert_acyclic(viz.sankey_graph([trace], max_links=-1)["links"])
        data = viz.report_data([trace])
        assert data["spans"][0][-1][6] == 9_999
        assert data["spans"][0][0][7] == 10_000
        assert viz.render_report([trace]).startswith("<!doctype html>")

    def test_real_traces_from_the_library(self) -> None:
        """Traces recorded by flowtracker itself render as expected (deterministic ids and clock)."""
        import flowtracker as ft

        with (
            capture_traces(ids=sequential_ids(), clock=FakeClock(step_ms=1)) as traces,
            ft.span("root", route="/"),
        ):
            for index in range(3):
                with ft.span(f"step {index}"):
                    pass
        assert viz.tree_text(traces[0], header=False).splitlines() == [
            "root  7.0 ms  route=/",
            "├─ step 0  1.0 ms  14%",
            "├─ step 1  1.0 ms  14%",
            "└─ step 2  1.0 ms  14%",
        ]
