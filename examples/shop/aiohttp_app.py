"""The shop as an aiohttp service, traced: the same routes as ``fastapi_app.py`` (see README.md).

python aiohttp_app.py --port 8002
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import catalog
from aiohttp import web

import flowtracker as ft
from flowtracker.aiohttp import setup

ft.instrument()  # spans for every httpx, asyncpg, redis and SQLAlchemy call (those installed)

CLIENTS = web.AppKey("clients", catalog.Clients)


async def get_product(request: web.Request) -> web.Response:
    found = await catalog.product(request.app[CLIENTS], int(request.match_info["product_id"]))
    if found is None:
        raise web.HTTPNotFound(text="no such product")
    return web.json_response(found)


async def post_order(request: web.Request) -> web.Response:
    order = await request.json()
    order_id = await catalog.place_order(request.app[CLIENTS], order["product_id"], order.get("quantity", 1))
    return web.json_response({"order_id": order_id}, status=201)


async def get_report(request: web.Request) -> web.Response:
    return web.json_response(await catalog.report(request.app[CLIENTS]))  # blocks the loop on purpose


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def clients(app: web.Application) -> AsyncIterator[None]:
    app[CLIENTS] = await catalog.Clients.open()
    yield
    await app[CLIENTS].close()


def make_app() -> web.Application:
    app = web.Application()
    setup(
        app,
        ft.Tracker(service="shop"),  # exporters from FLOWTRACKER_EXPORTERS (console when unset)
        monitor_loop=True,  # busy time per span, and the spans that block the loop, with their stack
        excluded_paths=["/health"],
    )
    app.cleanup_ctx.append(clients)
    app.router.add_get("/products/{product_id}", get_product)
    app.router.add_post("/orders", post_order)
    app.router.add_get("/report", get_report)
    app.router.add_get("/health", health)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port)
