"""The routes that feed ``flowtracker serve``'s live page, asked directly (the page itself is in
``test_serve_page.py``, in Chromium): a trace as the report's rows, and the aggregates over the
traces that match the API's filters.
"""

from __future__ import annotations

from pathlib import Path

from serve_helpers import get_json, post, protobuf_body, running_server, wire_span
from web_helpers import fetch


class TestPageRoutes:
    """The two routes that feed the page, asked directly."""

    async def test_one_trace_as_the_reports_rows(self, tmp_path: Path) -> None:
        """``GET /page/traces/{id}`` is the trace as the report's data (summary, rows in tree order,
        strings); an unknown id is 404, and so is anything but 32 lowercase hex digits."""
        trace_id = "ab" * 16
        spans = [wire_span("a" * 16, "GET /", ms=10.0), wire_span("b" * 16, "db", "a" * 16, ms=4.0)]
        async with running_server(str(tmp_path / "s.db"), grpc=False) as server:
            await post(server.port, protobuf_body([{"trace_id": trace_id, "service": "web", "spans": spans}]))
            status, data = await get_json(server.port, f"/page/traces/{trace_id}")
            assert status == 200
            [summary] = data["traces"]
            assert summary[0] == trace_id
            assert [data["strings"][index] for index in summary[9]] == ["web"]
            assert [data["strings"][row[2]] for row in data["spans"][0]] == ["GET /", "db"]
            status, answer = await get_json(server.port, "/page/traces/" + "cd" * 16)
            assert (status, answer) == (404, {"error": "no such trace in the store"})
            for malformed in ("AB" * 16, "ab" * 15, "nope"):
                status, _, _ = await fetch(f"http://127.0.0.1:{server.port}/page/traces/{malformed}")
                assert status == 404, malformed

    async def test_aggregates_over_the_traces_that_match(self, tmp_path: Path) -> None:
        """``GET /page/aggregates`` takes ``GET /api/traces``' filters: "where time goes" and the
        statistics over the newest matching traces, with how many traces and spans they cover;
        a bad filter is 400."""
        traces = [
            {"trace_id": f"{number:032x}", "service": "web" if number % 2 else "jobs",
             "spans": [wire_span("a" * 16, f"op {number % 2}", start_us=number, ms=2.0),
                       wire_span("b" * 16, "child", "a" * 16, start_us=number, ms=1.0)]}
            for number in range(1, 11)
        ]  # fmt: skip
        async with running_server(str(tmp_path / "s.db"), grpc=False) as server:
            await post(server.port, protobuf_body(traces))
            status, answer = await get_json(server.port, "/page/aggregates?service=web&limit=3")
            assert status == 200
            assert (answer["traces"], answer["spans"]) == (3, 6)
            assert [row[:2] for row in answer["stats"]] == [["op 1", 3], ["child", 3]]
            assert answer["sankey"]["nodes"][0] == "web"
            status, answer = await get_json(server.port, "/page/aggregates?status=slow")
            assert status == 400
            assert "status" in answer["error"]
