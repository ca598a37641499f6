"""The benchmark harness keeps working: tiny runs of every suite, structure only.

Timings are never asserted (2 shared, noisy cores); what is asserted is that
each suite runs, writes its JSON, prints its tables, and that every tracer
delivered every trace it was given (a benchmark that loses traces measures
nothing).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks._inproc import Responses
from benchmarks._load import parse_wrk
from benchmarks.floor import FloorSpan, FloorTracer

ROOT = Path(__file__).resolve().parent.parent


def run_suite(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """Runs ``python -m benchmarks <args> --smoke`` unpinned; the JSON and the printed output."""
    env = {**os.environ, "FLOWTRACKER_EXPORTERS": "none", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--smoke", "--cpu", "-2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / f"{args[0]}-smoke.json").read_text()), done.stdout


class TestSuites:
    def test_span_suite_reports_every_tracer_and_workload(self, tmp_path: Path) -> None:
        """The span suite measures all workloads, with ratios, and loses no span."""
        result, output = run_suite(tmp_path, "span")
        assert set(result["workloads"]) == {"async", "sync", "traced", "tags5"}
        for workload, entry in result["workloads"].items():
            for tracer in ("floor", "flowtracker"):
                assert entry[tracer]["delivered_share"] == 1.0, (workload, tracer)
                assert entry[tracer]["x_floor"] > 0
        assert result["machine"]["python"]
        assert "| workload" in output
        assert "ft / floor" in output

    def test_sampling_suite_compares_unsampled_with_the_floor(self, tmp_path: Path) -> None:
        """The sampling suite measures recorded, unsampled and tail-dropped spans against the floor."""
        result, output = run_suite(tmp_path, "sampling")
        assert set(result["samples"]) == {"floor", "flowtracker", "unsampled", "tail-dropped"}
        assert result["ratios_vs_floor"]["floor"] == 1.0
        assert "unsampled" in output

    def test_pipeline_suite_measures_rates_and_export_costs(self, tmp_path: Path) -> None:
        """The pipeline suite reports traces/s per pipeline and the export-only costs."""
        result, _ = run_suite(tmp_path, "pipeline")
        assert set(result["sustained"]) == {"floor", "flowtracker -> drop", "flowtracker -> FileExporter"}
        assert all(entry["median"] > 0 and entry["dropped"] == 0 for entry in result["sustained"].values())
        assert set(result["export_only"]) == {"to_dict", "to_json", "FileExporter.export"}

    def test_scale_suite_bounds_memory_under_overload(self, tmp_path: Path) -> None:
        """The scale suite's overload run drops what the queue cannot hold and queues at most the limit."""
        result, output = run_suite(tmp_path, "scale")
        overload = result["overload"]
        assert overload["traces_completed"] == overload["offered"]
        # Queued counts the stream and the batch in export: at most max_queue + one batch.
        assert overload["lane_queued"] <= overload["max_queue"] + 512
        assert overload["traces_dropped"] >= overload["offered"] - overload["max_queue"] - 512
        assert result["bytes_per_open_span"]["flowtracker"] > 0
        assert "spans per trace" in output
        assert "open traces" in output

    def test_profile_suite_names_flowtracker_functions(self, tmp_path: Path) -> None:
        """The profile suite attributes span-path and instrumented-call time to flowtracker's functions."""
        result, _ = run_suite(tmp_path, "profile")
        names = [row[0] for row in result["span_path_flowtracker"]["rows"]]
        assert any("flowtracker/_core/span.py" in name for name in names)
        assert result["primitives_ns"]["ContextVar.set + reset"] > 0
        for kind in ("aiohttp", "asgi"):  # where the integration costs more than the core, in process
            diff = result[f"inproc_{kind}_flowtracker_vs_ft_core"]["rows"]
            assert any(row[0].startswith("flowtracker/") and row[2] == 0 for row in diff), kind
        # An instrumented httpx call in a root: the client span's start and the header injection.
        instrumented = [row[0] for row in result["instrumented_httpx"]["rows"]]
        assert any("flowtracker/propagation.py" in name and "inject" in name for name in instrumented)
        assert any("flowtracker/instrumentation/httpx.py" in name for name in instrumented)

    def test_instrument_suite_compares_with_opentelemetry(self, tmp_path: Path) -> None:
        """The instrument suite times httpx and redis calls in each mode of both tracers; no trace is lost."""
        result, output = run_suite(tmp_path, "instrument")
        assert set(result["workloads"]) == {"httpx", "redis"}
        for workload, entry in result["workloads"].items():
            for tracer, measured in entry["tracers"].items():
                assert measured["error"] is None, (workload, tracer)
                assert measured["delivered_share"] == 1.0, (workload, tracer)
                assert set(measured["ns_per_call"]) == {"bare", "root", "instrumented"}
            assert "flowtracker_over_otel_client_span" in entry  # timings are never asserted
        assert "ft / otel span" in output

    @pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
    def test_request_suite_loads_aiohttp_and_asgi_apps(self, tmp_path: Path) -> None:
        """The request suite serves both apps under wrk without HTTP errors."""
        result, _ = run_suite(tmp_path, "request")
        for kind in ("aiohttp", "asgi"):
            for variant, entry in result["kinds"][kind]["variants"].items():
                assert entry["error"] is None, (kind, variant, entry["error"])
                assert entry["median_rps"] > 0
                assert entry["http_errors"] == 0

    def test_monitor_suite_measures_requests_on_both_loops_spans_and_completion(self, tmp_path: Path) -> None:
        """The monitor suite serves aiohttp and uvicorn on asyncio and on uvloop, monitor off and on,
        measures the per-span cost and the stalled-time hook per trace, and prints its tables."""
        result, output = run_suite(tmp_path, "monitor")
        assert set(result["requests"]) == {"aiohttp/asyncio", "aiohttp/uvloop", "asgi/asyncio", "asgi/uvloop"}
        for entry in result["requests"].values():
            assert entry["on_vs_off"] > 0
        assert set(result["span"]) == {"async", "sync"}
        assert result["completion"]["ns_per_trace"][0] > 0
        assert "monitor / requests" in output
        assert "on / off" in output

    def test_inproc_suite_serves_both_apps_through_their_real_protocols(self, tmp_path: Path) -> None:
        """The inproc suite serves the aiohttp app through aiohttp's ``RequestHandler`` and the ASGI
        app through uvicorn's own protocol class, in process: every request gets a 200, every
        variant delivers one trace per request (a request whose context leaked from the previous
        one would nest its root under it and deliver fewer), and the control row is reported."""
        result, output = run_suite(tmp_path, "inproc")
        assert result["workloads"]["aiohttp"]["protocol"] == "aiohttp.web_protocol.RequestHandler"
        assert result["workloads"]["asgi"]["protocol"].startswith("uvicorn.protocols.http.")
        for workload, entry in result["workloads"].items():
            assert set(entry["variants"]) == {"untraced", "floor", "ft-core", "flowtracker", "control"}
            for variant, measured in entry["variants"].items():
                assert measured["error"] is None, (workload, variant)
                assert set(measured["statuses"]) == {"200"}, (workload, variant)
                if variant != "untraced":
                    assert measured["delivered_share"] == 1.0, (workload, variant)
            assert entry["control_cost_ratio"]["median"] > 0  # timings are never asserted
        assert "control (`ft-core` served twice)" in output

    def test_inproc_suite_runs_over_a_socketpair(self, tmp_path: Path) -> None:
        """The inproc suite's socketpair workloads serve both apps over asyncio's own socket
        transports, with every request answered and every trace delivered."""
        result, _ = run_suite(tmp_path, "inproc", "--workloads", "aiohttp-socketpair,asgi-socketpair")
        for workload in ("aiohttp-socketpair", "asgi-socketpair"):
            entry = result["workloads"][workload]
            assert entry["transport"] == "socketpair"
            for variant, measured in entry["variants"].items():
                assert set(measured["statuses"]) == {"200"}, (workload, variant)
                assert variant == "untraced" or measured["delivered_share"] == 1.0, (workload, variant)

    def test_otel_published_suite_runs_every_case_for_both_tracers(self, tmp_path: Path) -> None:
        """The otel-published suite runs OpenTelemetry's five published span cases with OpenTelemetry
        (its benchmark's set-up, and with a BatchSpanProcessor) and with flowtracker, side by side,
        and every span of the exporting variants reaches its exporter."""
        result, output = run_suite(tmp_path, "otel-published")
        assert set(result["cases"]) == {"start-end", "attr-event", "attrs10", "current", "attrs128"}
        for case, entry in result["cases"].items():
            assert entry["flowtracker"]["delivered_share"] == 1.0, case
            assert entry["otel-batch"]["delivered_share"] == 1.0, case
            assert entry["otel"]["delivered_share"] is None, case  # the published set-up exports nothing
            assert isinstance(entry["ratios"]["otel-batch_over_flowtracker_wall"], float)
        assert "OTel / ft" in output

    def test_sparse_suite_spaces_traces_by_round_trips_and_times_idle_flushes(self, tmp_path: Path) -> None:
        """The sparse suite runs each tracer's traces between loopback round trips and in a tight
        loop, delivers every trace of both, and reports the idle flush's cost."""
        result, output = run_suite(tmp_path, "sparse")
        for tracer in ("floor", "flowtracker"):
            entry = result["tracers"][tracer]
            assert entry["delivered_share"] == {"sparse": 1.0, "dense": 1.0}, tracer
            assert entry["round_trip_us"] > 0
        assert all(value > 0 for value in result["flush"]["idle_cpu_ns"])
        assert "idle `await tracker.flush()`" in output

    def test_instrument_db_suite_compares_flowtracker_with_opentelemetry(self, tmp_path: Path) -> None:
        """The instrument-db suite measures asyncpg and SQLAlchemy calls under every variant, with
        the added-cost ratio (the suite itself fails when a span does not reach its exporter)."""
        result, output = run_suite(tmp_path, "instrument-db")
        for call in ("asyncpg", "sqlalchemy"):
            entry = result["calls"][call]
            assert set(entry["ns_per_call"]) == {"none", "ft-root", "flowtracker", "otel-root", "otel"}
            assert isinstance(entry["ft_added_over_otel_added"], float)  # timings: never asserted
        assert "flowtracker adds" in output


class TestFloor:
    async def test_floor_delivers_one_linked_trace_per_root(self) -> None:
        """The floor tracer hands each finished trace, children linked to the root, to its consumer."""
        async with FloorTracer() as tracer:
            async with tracer.span("root") as root, tracer.span("child", rows=3) as child:
                pass
            await tracer.drain(1)
        assert (tracer.received, tracer.dropped) == (1, 0)
        assert (child.parent_id, child.trace_id) == (root.span_id, root.trace_id)
        assert child.tags == {"rows": 3}
        assert child.end_ns >= child.start_ns

    async def test_floor_leaves_no_reference_cycles_unless_asked(self) -> None:
        """Finished floor traces are freed by reference counting; ``cyclic=True`` leaves cycles."""
        leftovers = {}
        for cyclic in (False, True):
            gc.collect()
            gc.disable()
            try:
                async with FloorTracer(cyclic=cyclic) as tracer:
                    for _ in range(10):
                        async with tracer.span("root"), tracer.span("child"):
                            pass
                    await tracer.drain(10)
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                leftovers[cyclic] = sum(isinstance(obj, FloorSpan) for obj in gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
        assert leftovers == {False: 0, True: 20}

    async def test_floor_flush_waits_for_a_trace_handed_straight_to_the_consumer(self) -> None:
        """``flush()`` returns only once the consumer counted every trace offered, including one
        handed directly to the consumer while it waited (never in the buffer)."""
        async with FloorTracer() as tracer:
            for _ in range(3):  # the consumer gets to wait in receive()
                await asyncio.sleep(0)
            with tracer.span("root"):
                pass
            await tracer.flush()
            assert tracer.received == 1

    async def test_floor_drops_and_counts_when_the_stream_is_full(self) -> None:
        """A full stream drops the trace and counts it; the span still ends normally."""
        async with FloorTracer(max_queue=1) as tracer:
            for _ in range(3):
                with tracer.span("root"):
                    pass
            assert tracer.dropped == 2
            await asyncio.sleep(0)


class TestResponseParser:
    def test_splits_fixed_length_and_chunked_responses_fed_in_pieces(self) -> None:
        """The in-process client finds each response's end, whether its body has a
        ``Content-Length`` or is chunked, however the bytes are split between reads."""
        stream = (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n"
            b"HTTP/1.1 204 No Content\r\n\r\n"
        )
        for cut in range(1, len(stream)):
            reader = Responses()
            assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == [200, 404, 204], cut


class TestWrkParser:
    def test_parses_rate_percentiles_and_errors(self) -> None:
        """wrk's --latency output becomes requests/s, percentiles in ms and an error count."""
        text = (
            "  Latency Distribution\n     50%  812.00us\n     75%    1.10ms\n     90%    1.50ms\n"
            "     99%    2.50s\n  120000 requests in 5.00s, 17.00MB read\n"
            "  Non-2xx or 3xx responses: 7\nRequests/sec:  24000.50\n"
        )
        parsed = parse_wrk(text)
        assert parsed["rps"] == 24000.5
        assert parsed["p50_ms"] == pytest.approx(0.812)
        assert parsed["p99_ms"] == 2500.0
        assert (parsed["requests"], parsed["errors"]) == (120000, 7)
