"""The shop as a FastAPI service, traced: run it with uvicorn (see README.md).

    uvicorn fastapi_app:app --port 8000

``GET /products/{product_id}`` (Redis, then SQLAlchemy on asyncpg, then the
inventory service over httpx), ``POST /orders`` (plain asyncpg),
``GET /report`` (blocks the event loop on purpose) and ``GET /health`` (not
traced).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import catalog
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

import flowtracker as ft
from flowtracker.asgi import FlowTrackerMiddleware

ft.instrument()  # spans for every httpx, asyncpg, redis and SQLAlchemy call (those installed)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.clients = await catalog.Clients.open()
    yield
    await app.state.clients.close()


app = FastAPI(lifespan=lifespan)
app.add_middleware(
    FlowTrackerMiddleware,
    tracker=ft.Tracker(service="shop"),  # exporters from FLOWTRACKER_EXPORTERS (console when unset)
    monitor_loop=True,  # busy time per span, and the spans that block the loop, with their stack
    excluded_paths=["/health"],
)


class Order(BaseModel):
    product_id: int
    quantity: int = 1


@app.get("/products/{product_id}")
async def get_product(product_id: int, request: Request) -> dict[str, Any]:
    found = await catalog.product(request.app.state.clients, product_id)
    if found is None:
        raise HTTPException(status_code=404, detail="no such product")
    return found


@app.post("/orders", status_code=201)
async def post_order(order: Order, request: Request) -> dict[str, int]:
    order_id = await catalog.place_order(request.app.state.clients, order.product_id, order.quantity)
    return {"order_id": order_id}


@app.get("/report")
async def get_report(request: Request) -> dict[str, Any]:
    return await catalog.report(request.app.state.clients)  # blocks the loop: see catalog.build_report


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
