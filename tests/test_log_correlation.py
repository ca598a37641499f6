"""TraceContextFilter: trace and span ids on log records, inside a real aiohttp request too."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

import flowtracker as ft
from flowtracker.aiohttp import middleware
from flowtracker.log_correlation import TraceContextFilter

FORMAT = "%(levelname)s [trace=%(trace_id)s span=%(span_id)s] %(message)s"


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose handler has the filter and the documented formatter, writing to a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("test.log_correlation")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, buffer
    logger.removeHandler(handler)


def record() -> logging.LogRecord:
    return logging.LogRecord("app", logging.INFO, __file__, 1, "message", None, None)


class TestFilter:
    def test_outside_a_span_the_ids_are_dashes(self, log):
        """No span: both attributes are '-' and the record is never filtered out."""
        logger, buffer = log
        logger.info("starting")
        assert buffer.getvalue() == "INFO [trace=- span=-] starting\n"

    def test_missing_value_is_configurable(self):
        """missing='' puts empty strings outside spans."""
        item = record()
        assert TraceContextFilter(missing="").filter(item) is True
        assert (item.trace_id, item.span_id) == ("", "")

    async def test_inside_spans_the_ids_are_the_current_spans(self, tracker, log):
        """The trace id and the innermost span's id, as exported (lowercase hex)."""
        logger, buffer = log
        async with ft.span("outer") as outer:
            logger.info("in outer")
            async with ft.span("inner") as inner:
                logger.info("in inner")
        assert buffer.getvalue().splitlines() == [
            f"INFO [trace={outer.trace_id} span={outer.span_id_hex}] in outer",
            f"INFO [trace={inner.trace_id} span={inner.span_id_hex}] in inner",
        ]

    async def test_ids_given_with_extra_are_kept_unless_overwrite(self, tracker):
        """Attributes already on the record win by default; overwrite=True replaces them."""
        async with ft.span("work") as work:
            kept, replaced = record(), record()
            kept.trace_id = replaced.trace_id = "given"
            TraceContextFilter().filter(kept)
            TraceContextFilter(overwrite=True).filter(replaced)
        assert kept.trace_id == "given"
        assert replaced.trace_id == work.trace_id

    async def test_threads_see_the_bound_span(self, tracker):
        """In a worker thread (to_thread copies the context) records carry the caller's span."""
        async with ft.span("caller") as caller:
            item = record()
            await asyncio.to_thread(TraceContextFilter().filter, item)
        assert item.span_id == caller.span_id_hex


class TestInAWebRequest:
    async def test_handler_logs_carry_the_requests_trace_id(self, tracker, memory, log):
        """A log line written by a handler names the trace the middleware exported for that request."""
        logger, buffer = log

        async def handler(request: web.Request) -> web.Response:
            logger.info("handling %s", request.path)
            return web.Response(text="ok")

        async def health(request: web.Request) -> web.Response:
            logger.info("health")
            return web.Response(text="ok")

        app = web.Application(middlewares=[middleware(tracker, excluded_paths=["/health"])])
        app.router.add_get("/orders", handler)
        app.router.add_get("/health", health)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with aiohttp.ClientSession() as client:
                for path in ("/orders", "/health"):
                    async with client.get(base + path) as response:
                        assert response.status == 200
        finally:
            await runner.cleanup()
        await tracker.flush()
        (trace,) = memory.traces
        root = trace["spans"][0]
        assert buffer.getvalue().splitlines() == [
            f"INFO [trace={trace['trace_id']} span={root['span_id']}] handling /orders",
            "INFO [trace=- span=-] health",
        ]
