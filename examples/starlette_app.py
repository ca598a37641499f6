"""A Starlette app traced by ``FlowTrackerMiddleware``, served by uvicorn.

    python examples/starlette_app.py               # http://127.0.0.1:8000/
    PORT=9000 python examples/starlette_app.py

Routes: ``/`` , ``/orders/{order_id}`` (a templated route with a child span),
``/stream`` (a streaming response: the trace ends with its last chunk),
``/fail`` (raises: status ``error``, HTTP 500), ``/ws`` (a websocket echo) and
``/health`` (excluded: no trace). With ``FLOWTRACKER_EXPORTERS`` unset, every
trace is printed as a ``FLOW_LOG:`` line; log lines carry the trace id.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import flowtracker as ft
from flowtracker.asgi import FlowTrackerMiddleware
from flowtracker.log_correlation import TraceContextFilter

logger = logging.getLogger("shop")


async def index(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Welcome to the shop")


async def order(request: Request) -> JSONResponse:
    order_id = request.path_params["order_id"]
    async with ft.span("DB: Select Order", order_id=order_id) as select:
        select.set_tag("db.query", "SELECT * FROM orders WHERE id = $1")
        await asyncio.sleep(0.02)
    logger.info("loaded order %s", order_id)
    return JSONResponse({"order": order_id, "status": "shipped"})


async def stream(request: Request) -> StreamingResponse:
    async def lines() -> AsyncIterator[bytes]:
        for number in range(3):
            async with ft.span("Render Line", line=number):
                await asyncio.sleep(0.01)
            yield f"line {number}\n".encode()

    return StreamingResponse(lines(), media_type="text/plain")


async def fail(request: Request) -> PlainTextResponse:
    async with ft.span("Charge Card", provider="acme"):
        raise RuntimeError("payment provider down")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        async with ft.span("Echo", size=len(text)):
            await websocket.send_text(text)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/", index),
        Route("/orders/{order_id}", order),
        Route("/stream", stream),
        Route("/fail", fail),
        Route("/health", health),
        WebSocketRoute("/ws", echo),
    ]
)
app.add_middleware(FlowTrackerMiddleware, excluded_paths=["/health"], trace_id_header="X-Trace-Id")


def main() -> None:
    handler = logging.StreamHandler()
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s [trace=%(trace_id)s span=%(span_id)s] %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
