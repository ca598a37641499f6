"""Suite ``instrument-db``: what automatic database spans add to one call.

Two calls, each made again and again on one open connection:

* ``asyncpg``: ``await con.fetchval("SELECT 1")`` against a real PostgreSQL
  (a throwaway cluster, ``tests/postgres_server.py``);
* ``sqlalchemy``: ``await conn.execute(select(1))`` on an async engine on aiosqlite.

Each call runs inside a root span of its tracer (an instrumentation records
nothing outside a trace), so five variants per call:

* ``none``: no tracer, the bare call;
* ``ft-root`` / ``otel-root``: the tracer's root span around the call, library not instrumented;
* ``flowtracker``: flowtracker's root span, library instrumented (``flowtracker.instrumentation``);
* ``otel``: OpenTelemetry's root span, library instrumented by
  ``opentelemetry-instrumentation-asyncpg`` / ``-sqlalchemy`` on the SDK, with a
  ``BatchSpanProcessor`` into an exporter that drops.

The added cost of an instrumentation is ``flowtracker - ft-root`` (resp.
``otel - otel-root``), per call, computed within each repetition; the goal is
flowtracker's added cost at most 1/5 of OpenTelemetry's. The clock is the
process's CPU time by default (``--clock``): PostgreSQL's own work, in other
processes, is not counted; aiosqlite's thread is. Every span must reach the
exporter, or the run fails.

Example:
    python -m benchmarks instrument-db --quick
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import _harness
from ._harness import Settings, format_table, interleaved, median
from ._sinks import DropExporter, otel_provider

VARIANTS = ("none", "ft-root", "flowtracker", "otel-root", "otel")
CALLS = ("asyncpg", "sqlalchemy")


class _Run:
    """Shared state: the PostgreSQL server, the SQLite file, one OpenTelemetry provider."""

    def __init__(self, sqlite_path: str) -> None:
        from tests.postgres_server import PostgresServer

        self.server = PostgresServer()
        self.server.start()
        self.sqlite_url = f"sqlite+aiosqlite:///{sqlite_path}"
        self.provider, self.otel_exporter = otel_provider()

    def close(self) -> None:
        self.provider.shutdown()
        self.server.close()


@contextlib.asynccontextmanager
async def _connection(run: _Run, call: str) -> Any:
    """Yields ``once()``, one call on a connection opened for this measurement."""
    if call == "asyncpg":
        import asyncpg

        con = await asyncpg.connect(run.server.dsn)

        async def once_asyncpg() -> None:
            await con.fetchval("SELECT 1")

        try:
            yield once_asyncpg
        finally:
            await con.close()
        return
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(run.sqlite_url)
    statement = sa.select(1)
    try:
        async with engine.connect() as conn:

            async def once_sqlalchemy() -> None:
                await conn.execute(statement)

            yield once_sqlalchemy
    finally:
        await engine.dispose()


@contextlib.contextmanager
def _instrumented(variant: str, call: str, run: _Run) -> Any:
    if variant == "flowtracker":
        from flowtracker.instrumentation import asyncpg as ft_asyncpg
        from flowtracker.instrumentation import sqlalchemy as ft_sqlalchemy

        module = ft_asyncpg if call == "asyncpg" else ft_sqlalchemy
        module.install()
        try:
            yield
        finally:
            module.uninstall()
    elif variant == "otel":
        if call == "asyncpg":
            from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

            instrumentor: Any = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
        else:
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

            instrumentor = SQLAlchemyInstrumentor()
        # skip_dep_check: the SQLAlchemy instrumentation declares < 2.1; it works on 2.1 for
        # these calls (the run fails below if its spans do not all arrive).
        instrumentor.instrument(tracer_provider=run.provider, skip_dep_check=True)
        try:
            yield
        finally:
            instrumentor.uninstrument()
    else:
        yield


class _SpanCounter(DropExporter):
    """Drops traces, counting their spans too (so a lost child span fails the run)."""

    def __init__(self) -> None:
        super().__init__()
        self.spans = 0

    async def export(self, traces: Sequence[Any]) -> None:
        self.traces += len(traces)
        self.spans += sum(len(trace.spans) for trace in traces)


async def _timed_loop(once: Callable[[], Awaitable[None]], root: Callable[[], Any] | None, n: int) -> int:
    """Runs ``n`` calls, each inside ``root()`` (an async or sync context manager) when given;
    returns the elapsed nanoseconds on the suite's clock."""
    started = _harness.clock()
    if root is None:
        for _ in range(n):
            await once()
    else:
        for _ in range(n):
            with root():
                await once()
    return _harness.clock() - started


async def _measure(run: _Run, call: str, variant: str, n: int, warmup: int) -> float:
    """Nanoseconds per call for one variant; fails if a span did not reach its exporter."""
    import flowtracker as ft

    spans_per_call = 2 if variant in ("flowtracker", "otel") else 1
    with _instrumented(variant, call, run):
        async with _connection(run, call) as once:
            if variant.startswith("otel"):
                start_span = run.provider.get_tracer("bench").start_as_current_span
                await _timed_loop(once, lambda: start_span("root"), warmup)
                run.provider.force_flush()
                before = run.otel_exporter.spans
                started = _harness.clock()
                await _timed_loop(once, lambda: start_span("root"), n)
                run.provider.force_flush()  # the export of every span is part of the cost
                elapsed = _harness.clock() - started
                delivered = run.otel_exporter.spans - before
            elif variant in ("flowtracker", "ft-root"):
                sink = _SpanCounter()
                async with ft.Tracker(exporters=[sink], service="bench") as tracker:
                    await _timed_loop(once, lambda: ft.span("root"), warmup)
                    await tracker.flush()
                    before = sink.spans
                    started = _harness.clock()
                    await _timed_loop(once, lambda: ft.span("root"), n)
                    await tracker.flush()  # the export of every trace is part of the cost
                    elapsed = _harness.clock() - started
                    delivered = sink.spans - before
            else:
                await _timed_loop(once, None, warmup)
                elapsed = await _timed_loop(once, None, n)
                delivered = n
    if delivered != n * spans_per_call:
        raise RuntimeError(f"{call}/{variant}: {delivered} of {n * spans_per_call} spans arrived")
    return elapsed / n


def run(settings: Settings) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result."""
    import tempfile

    n = settings.scaled(3_000, 1_000, 20)
    warmup = settings.scaled(300, 100, 5)
    # An added cost of a few microseconds on calls of 50-300 us: more repetitions than the
    # other suites' default 5, so the median of the per-repetition differences holds still.
    reps = settings.reps if settings.reps is not None else settings.scaled(9, 3, 1)
    with tempfile.TemporaryDirectory() as folder:
        state = _Run(f"{folder}/bench.db")
        try:
            results: dict[str, Any] = {}
            tables = []
            for call in CALLS:

                def measure(variant: str, rep: int, call: str = call) -> float:
                    return asyncio.run(_measure(state, call, variant, n, warmup))

                samples = interleaved(list(VARIANTS), reps, measure)
                results[call] = _summary(samples)
                tables.append(_table(call, results[call], reps))
        finally:
            state.close()
    return {"calls": results, "n": n, "reps": reps, "tables": tables}


def _summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    """Per-repetition added costs and their ratios, then medians."""
    reps = range(len(samples["none"]))
    ft_added = [samples["flowtracker"][i] - samples["ft-root"][i] for i in reps]
    otel_added = [samples["otel"][i] - samples["otel-root"][i] for i in reps]
    bare = samples["none"]
    return {
        "ns_per_call": {name: median(values) for name, values in samples.items()},
        "samples": samples,
        "added_ns": {"flowtracker": median(ft_added), "otel": median(otel_added)},
        "added_vs_call": {
            "flowtracker": median([ft_added[i] / bare[i] for i in reps]),
            "otel": median([otel_added[i] / bare[i] for i in reps]),
        },
        "ft_added_over_otel_added": median([ft_added[i] / otel_added[i] for i in reps if otel_added[i] > 0]),
    }


def _table(call: str, summary: dict[str, Any], reps: int) -> str:
    per_call = summary["ns_per_call"]
    added = summary["added_ns"]
    vs_call = summary["added_vs_call"]
    rows = [
        ("none (bare call)", per_call["none"], "", ""),
        ("flowtracker root only", per_call["ft-root"], "", ""),
        ("flowtracker instrumented", per_call["flowtracker"], added["flowtracker"],
         _harness.percent(vs_call["flowtracker"])),
        ("OTel root only", per_call["otel-root"], "", ""),
        ("OTel instrumented", per_call["otel"], added["otel"], _harness.percent(vs_call["otel"])),
    ]  # fmt: skip
    ratio = summary["ft_added_over_otel_added"]
    return format_table(
        f"instrument-db, {call}: ns per call on the {_harness.clock_name} clock "
        f"(median of {reps}); flowtracker adds {ratio:.2f}x what OpenTelemetry adds",
        ("variant", "ns/call", "added ns", "added / bare call"),
        rows,
    )
