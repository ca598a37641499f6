"""The inventory service the shops call over httpx: a second traced FastAPI service.

    uvicorn inventory:app --port 8001

Its traces continue the shop's (the ``traceparent`` header httpx sends):
same ``trace_id``, its root a child of the shop's ``HTTP GET`` span.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

import flowtracker as ft
from flowtracker.asgi import FlowTrackerMiddleware

app = FastAPI()
app.add_middleware(FlowTrackerMiddleware, tracker=ft.Tracker(service="inventory"), excluded_paths=["/health"])

STOCK = {1: 12, 2: 40, 3: 0}


@app.get("/stock/{product_id}")
async def stock(product_id: int) -> dict[str, int]:
    async with ft.span("count stock", product_id=product_id):
        await asyncio.sleep(0.005)  # a warehouse system would answer here
    return {"product_id": product_id, "stock": STOCK.get(product_id, 0)}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
